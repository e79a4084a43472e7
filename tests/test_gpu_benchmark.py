"""benchmarks/gpu.py runs at a tiny size on CPU and reports what it should.

The GPU numbers themselves come from a run on a GPU; see docs/scaling.md.
"""

import importlib.util
import os

import keras
import pytest

# Scripts: their Keras parts are checked under every backend elsewhere.
pytestmark = pytest.mark.once

PATH = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "benchmarks", "gpu.py"
)


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("benchmark_gpu", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_are_the_gpu_setup_and_tiny_is_small(gpu):
    full = gpu.parse_args([])
    assert (full.image_size, full.batch, full.steps) == (224, 256, 50)
    assert full.backbone == "resnet50"
    assert full.precisions == ["float32", "mixed_bfloat16"]
    tiny = gpu.parse_args(["--tiny", "--batch", "2"])
    assert (tiny.image_size, tiny.batch, tiny.steps, tiny.backbone) == (
        32,
        2,
        2,
        "small",
    )


def test_report_overheads_against_the_plain_head(gpu):
    table = gpu.report(
        {
            "batch": 10,
            "images_per_second": {
                "float32": {"plain": 100.0, "untied": 96.0, "tied": 97.5}
            },
        }
    )
    rows = {line.split()[1]: line for line in table.splitlines()[1:]}
    # Overhead is the step-time ratio: 100 / 96 - 1 = 4.2%, 100 / 97.5 - 1
    # = 2.6%; a step of 10 images at 100 images/s takes 100 ms.
    assert "+4.2%" in rows["untied"] and "(met)" in rows["untied"]
    assert "+2.6%" in rows["tied"] and "(met)" in rows["tied"]
    assert "100.0" in rows["plain"].split()[3]
    speeds = {"plain": 100.0, "untied": 90.0, "tied": 96.0}
    slow = gpu.report({"batch": 1, "images_per_second": {"f": speeds}})
    assert slow.count("(missed)") == 2


def test_missed_goals_name_the_head_and_the_margin(gpu):
    met = {"plain": 100.0, "untied": 96.0, "tied": 97.5}
    assert gpu.missed_goals({"images_per_second": {"float32": met}}) == []
    # 100 / 90 - 1 = 11.1% (6.1 pt over 5%), 100 / 96 - 1 = 4.2% (over 3%).
    slow = {"plain": 100.0, "untied": 90.0, "tied": 96.0}
    missed = gpu.missed_goals(
        {"images_per_second": {"float32": met, "mixed_bfloat16": slow}}
    )
    assert missed == [
        "mixed_bfloat16 untied: overhead +11.1%, goal <= 5%, missed by 6.1 pt",
        "mixed_bfloat16 tied: overhead +4.2%, goal <= 3%, missed by 1.2 pt",
    ]


@pytest.mark.parametrize("check", [False, True])
def test_check_exits_1_when_a_goal_is_missed(gpu, check, monkeypatch, capsys):
    speeds = {"plain": 100.0, "untied": 90.0, "tied": 99.0}
    monkeypatch.setattr(
        gpu, "measure", lambda head, precision, args: speeds[head]
    )
    argv = ["--tiny", "--precisions", "float32"] + (["--check"] * check)
    if not check:
        gpu.main(argv)
        assert capsys.readouterr().err == ""
        return
    with pytest.raises(SystemExit) as exit_:
        gpu.main(argv)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpu.py: goal missed: float32 untied: overhead +11.1%, goal <= 5%, "
        "missed by 6.1 pt"
    ]


def test_tiny_run_trains_all_three_heads(gpu, capsys):
    results = gpu.main(
        ["--tiny", "--steps", "1", "--precisions", "mixed_bfloat16"]
    )
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [row[:2] for row in rows] == [
        ["mixed_bfloat16", "plain"],
        ["mixed_bfloat16", "untied"],
        ["mixed_bfloat16", "tied"],
    ]
    speeds = results["images_per_second"]["mixed_bfloat16"]
    assert all(speed > 0 for speed in speeds.values())
    assert f"backend {keras.backend.backend()}" in out
    # The benchmark restores the global policy it changed.
    assert keras.config.dtype_policy().name == "float32"
