"""The main job (`keras_mrl.demo`): one `--quick` run end to end, plus its
pieces (split, table, plot) on constructed results. `benchmarks/figure2.py`
judges the figures (tests/test_benchmarks.py).

The quick run trains eight small models; it runs on every backend, since
the demo is what a new user runs first, whatever backend they have.
"""

import contextlib
import io
import json

import keras
import matplotlib.image
import numpy as np
import pytest

from keras_mrl import cli
from keras_mrl import demo

# Scripts: their Keras parts are checked under every backend elsewhere.
pytestmark = pytest.mark.once

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Runs `keras-mrl demo --quick` once.

    Returns:
        `(out dir, exit status, stdout, stderr)`.
    """
    out = tmp_path_factory.mktemp("demo")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(["demo", "--quick", "--out", str(out)])
    return out, status, stdout.getvalue(), stderr.getvalue()


def _results(accuracy, seconds=10.0, dims=demo.DIMS):
    return {
        "dims": list(dims),
        "seeds": 1,
        "accuracy": {k: list(v) for k, v in accuracy.items()},
        "seconds": seconds,
        "cpu_seconds": seconds,
    }


def test_quick_run_writes_valid_results(quick_run):
    out = quick_run[0]
    results = json.loads((out / "results.json").read_text())
    assert results["dims"] == [2, 4, 8, 16, 32, 64]
    assert results["seeds"] == 1
    assert set(results["accuracy"]) == {"mrl", "mrl_e", "ff", "truncated"}
    for name, values in results["accuracy"].items():
        assert len(values) == 6, name
        assert all(0.0 <= v <= 1.0 for v in values), (name, values)
    # Ten classes give 10% by chance; even a quick run is far above it.
    for name in ("mrl", "mrl_e", "ff"):
        assert results["accuracy"][name][-1] > 0.8, results["accuracy"]
    assert "digits" in results["dataset"]
    assert 0 < results["seconds"] < 600
    assert results["versions"]["backend"] == keras.backend.backend()
    assert results["versions"]["keras"] == keras.__version__
    assert set(results["versions"]) == {"python", "keras", "backend", "numpy"}
    assert "goals" not in results


def test_quick_run_exits_0_and_judges_nothing(quick_run):
    # The demo shows a comparison; whether its figures meet targets is
    # benchmarks/figure2.py's to say, so a quick run's weaker models still
    # exit 0 with nothing on stderr from the command.
    _, status, stdout, stderr = quick_run
    assert status == 0
    assert not [
        line for line in stderr.splitlines() if line.startswith("keras-mrl")
    ]
    assert not [
        line
        for line in stdout.splitlines()
        if line.startswith(("PASS", "FAIL"))
    ]


def test_quick_run_retrieval(quick_run):
    results = json.loads((quick_run[0] / "results.json").read_text())
    for method in ("mrl", "ff"):
        for key in ("top1", "map@10"):
            values = results["retrieval"][method][key]
            assert len(values) == 6
            assert all(0.0 <= v <= 1.0 for v in values), (method, key)
        # A 1-NN on a full-width trained embedding of digits is accurate.
        assert results["retrieval"][method]["top1"][-1] > 0.8


def test_quick_run_writes_png(quick_run):
    path = quick_run[0] / "accuracy.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (480, 720)  # 6 x 4 inches at 120 dpi


def test_quick_run_prints_progress_and_table(quick_run):
    out, _, stdout, _ = quick_run
    lines = stdout.splitlines()
    # One progress line per trained model and one for the probes.
    assert sum(line.startswith("seed 1/1") for line in lines) == 2 + 6 + 1
    results = json.loads((out / "results.json").read_text())
    assert demo.format_table(results) in stdout


def test_split_is_fixed_stratified_and_standardised():
    x_train, y_train, x_test, y_test = demo.load_data()
    assert x_train.shape == (1257, 64) and x_test.shape == (540, 64)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    # Stratified: every class keeps its share of the data within one item.
    train_counts = np.bincount(y_train, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    share = test_counts / (train_counts + test_counts)
    np.testing.assert_allclose(share, 0.3, atol=1 / 170)
    # The scaler saw the training part only.
    np.testing.assert_allclose(x_train.mean(0), 0.0, atol=1e-5)
    assert not np.allclose(x_test.mean(0), 0.0, atol=1e-3)
    again = demo.load_data()
    np.testing.assert_array_equal(again[3], y_test)


def test_table_rows_and_columns():
    accuracy = {
        name: np.linspace(0.5, 1.0, 6) - 0.1 * i
        for i, name in enumerate(demo.METHODS)
    }
    lines = demo.format_table(_results(accuracy)).splitlines()
    assert len(lines) == 1 + len(demo.METHODS)
    assert lines[0].split()[-6:] == ["2", "4", "8", "16", "32", "64"]
    assert lines[1].split()[-6:] == [
        "50.0",
        "60.0",
        "70.0",
        "80.0",
        "90.0",
        "100.0",
    ]
    assert lines[4].startswith("FF-64 truncated")
    assert lines[4].split()[-1] == "70.0"


def test_plot_writes_png(tmp_path):
    accuracy = {name: np.linspace(0.5, 1.0, 6) for name in demo.METHODS}
    demo.plot(_results(accuracy), tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "seeds, error, message",
    [
        (0, ValueError, "`seeds` must be a positive int, got seeds=0"),
        (-1, ValueError, "`seeds` must be a positive int, got seeds=-1"),
        (1.5, TypeError, "`seeds` must be an int, got 1.5"),
        (True, TypeError, "`seeds` must be an int, got True"),
    ],
)
def test_run_refuses_bad_seeds_before_training(seeds, error, message, tmp_path):
    with pytest.raises(error, match=message):
        demo.run(str(tmp_path), seeds=seeds)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quick", [1, "no", None])
def test_run_refuses_a_quick_that_is_not_a_bool(quick, tmp_path):
    with pytest.raises(TypeError, match="`quick` must be True or False"):
        demo.run(str(tmp_path), seeds=1, quick=quick)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seeds", [2, 3])
def test_quick_run_refuses_more_than_one_seed(seeds, tmp_path):
    # Quick never drops seeds silently.
    with pytest.raises(ValueError, match=f"runs one seed, got seeds={seeds}"):
        demo.run(str(tmp_path), quick=True, seeds=seeds)
    assert list(tmp_path.iterdir()) == []


def test_run_takes_its_options_by_keyword_only(tmp_path):
    with pytest.raises(TypeError, match="positional argument"):
        demo.run(str(tmp_path), 1)
    assert list(tmp_path.iterdir()) == []
