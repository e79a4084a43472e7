"""benchmarks/text_finetune.py: its goal decisions on given results.

The benchmark itself trains MiniLM for minutes; here only `check_goals`
and the table run, on made-up curves.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

pytestmark = pytest.mark.once

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "text_finetune.py"
    spec = importlib.util.spec_from_file_location("bench_text_finetune", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(bench, e, c=None, b=None, seconds=600.0):
    widths = np.array(bench.WIDTHS, dtype=float)
    curve = lambda top: list(top - 30.0 * np.exp(-widths / 40.0))  # noqa
    e = curve(60.0) if e is None else list(e)
    results = {
        "(b) MNRL": {"ndcg@10": curve(60.0) if b is None else list(b)},
        "(c) PCA of (b)": {"ndcg@10": curve(58.0) if c is None else c},
        "(e) MRL+PCA": {"ndcg@10": e},
    }
    for value in results.values():
        value["recall@10"] = value["ndcg@10"]
    return {"results": results, "total_seconds": seconds}


class _Goals(dict):
    """Goal -> passed, looked up by a unique part of the goal's text."""

    def __getitem__(self, part):
        (key,) = [goal for goal in self if part in goal]
        return dict.__getitem__(self, key)


def _passed(bench, run):
    return _Goals({goal: ok for goal, ok, _ in bench.check_goals(run)})


def test_a_run_meeting_every_goal_passes(bench):
    widths = np.array(bench.WIDTHS, dtype=float)
    e = 60.0 - 1.0 * np.exp(-widths / 40.0)
    passed = _passed(bench, _results(bench, e))
    assert all(passed.values()), passed


def test_each_goal_fails_on_its_own(bench):
    widths = np.array(bench.WIDTHS, dtype=float)
    good = 60.0 - 1.0 * np.exp(-widths / 40.0)
    c_close = list(good - 0.5)  # (e) only 0.5 pt above PCA
    passed = _passed(bench, _results(bench, good, c=c_close))
    assert not passed["(c) + 1 pt"]
    assert passed["95%"]

    steep = 60.0 - 20.0 * np.exp(-widths / 60.0)
    passed = _passed(bench, _results(bench, steep, c=list(steep - 5.0)))
    assert not passed["95%"]

    passed = _passed(bench, _results(bench, good, b=list(good + 1.0)))
    assert not passed["(b) at 384"]

    dip = good.copy()
    dip[bench.WIDTHS.index(48)] -= 3.0
    passed = _passed(bench, _results(bench, dip))
    assert not passed["untrained widths"]

    passed = _passed(bench, _results(bench, good, seconds=21 * 60.0))
    assert not passed["20 minutes"]


def test_table_has_a_row_per_width(bench):
    run = _results(bench, None)
    table = bench.format_table(run)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == len(bench.WIDTHS) + 1


def test_saving_embeddings_needs_model_e(bench):
    with pytest.raises(SystemExit):
        bench._parse_args(["--models", "ab", "--save-embeddings", "out"])
    args = bench._parse_args(["--models", "e", "--save-embeddings", "out"])
    assert args.save_embeddings == "out"


def test_quantization_aware_trains_e_with_the_quantized_term(bench):
    from keras_mrl.losses import MatryoshkaLoss
    from keras_mrl.losses import QuantizationAwareLoss

    args = bench._parse_args(
        [
            "--models",
            "e",
            "--quantization-aware",
            "binary",
            "--qa-dims",
            "128,256",
        ]
    )
    assert args.plot == ""  # the docs' figure is plain (e)'s
    loss = bench._loss(bench.TRAINED, [1.0] * 6, bench._quantization(args))
    assert isinstance(loss, QuantizationAwareLoss)
    assert (loss.precision, loss.nesting_dims, loss.weight) == (
        "binary",
        [128, 256],
        1.0,
    )
    assert isinstance(loss.loss, MatryoshkaLoss)
    assert loss.loss.nesting_dims == bench.TRAINED
    plain = bench._parse_args(["--models", "e"])
    assert bench._quantization(plain) is None and plain.plot == bench.PLOT
    with pytest.raises(SystemExit):
        bench._parse_args(["--models", "ab", "--quantization-aware", "int8"])


def test_goals_read_e_trained_quantization_aware(bench):
    run = _results(bench, None)
    results = run["results"]
    results["(e) MRL+PCA, binary-aware"] = results.pop("(e) MRL+PCA")
    assert len(bench.check_goals(run)) == 5
