"""The `keras-mrl` command line: help, and bad options end in one line.

The option checks run in-process through `keras_mrl.cli.main` (the same code
the commands run); two subprocess runs check the real entry points
`python -m keras_mrl` and the `keras-mrl` console script end to end.
None of these tests trains a model: every bad option is refused first, and
the exit status of a run is checked on a stand-in `demo.run` that returns
constructed results.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from keras_mrl import cli
from keras_mrl import demo

# The command line: its Keras parts are checked under every backend elsewhere.
pytestmark = pytest.mark.once

FF = np.array([0.80, 0.90, 0.95, 0.96, 0.97, 0.97])


def _error_lines(stderr):
    # Importing TensorFlow may log to stderr; our errors name the program.
    lines = stderr.splitlines()
    return [line for line in lines if line.startswith("keras-mrl")]


def _run_main(argv, capsys):
    """Runs `cli.main(argv)` and returns `(exit status, stdout, stderr)`."""
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def _run_module(*args, executable=None):
    if executable is None:
        command = [sys.executable, "-m", "keras_mrl"]
    else:
        command = [executable]
    return subprocess.run(
        command + list(args),
        capture_output=True,
        text=True,
        timeout=120,
        # The entry points parse options before any backend computes:
        # numpy's backend imports fastest.
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="numpy"),
    )


def test_module_help_lists_the_demo():
    result = _run_module("--help")
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout
    assert "Traceback" not in result.stderr


def test_module_bad_seeds_is_one_line():
    result = _run_module("demo", "--seeds", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert _error_lines(result.stderr) == [
        "keras-mrl demo: error: argument --seeds: must be a positive int, "
        "got '0' (see --help)"
    ]


def test_console_script_refuses_unknown_option():
    script = pathlib.Path(sys.executable).with_name("keras-mrl")
    if not script.exists():
        pytest.skip("keras-mrl is not installed in this environment")
    result = _run_module("demo", "--bogus", executable=str(script))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert _error_lines(result.stderr) == [
        "keras-mrl: error: unrecognized arguments: --bogus (see --help)"
    ]


def test_demo_help(capsys):
    status, out, _ = _run_main(["demo", "--help"], capsys)
    assert status == 0
    for option in ("--out", "--seeds", "--quick"):
        assert option in out


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["train"], "invalid choice: 'train'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["demo", "--seeds", "0"], "must be a positive int, got '0'"),
        (["demo", "--seeds", "-3"], "must be a positive int, got '-3'"),
        (["demo", "--seeds", "two"], "must be a positive int, got 'two'"),
    ],
)
def test_bad_options_give_one_line(argv, message, capsys):
    status, out, err = _run_main(argv, capsys)
    assert status == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]


def test_unwritable_out_gives_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    # A path under a regular file cannot be created, even by root.
    status, out, err = _run_main(
        ["demo", "--out", str(blocker / "results")], capsys
    )
    assert status == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "is not a writable directory" in lines[0]
    assert str(blocker / "results") in lines[0]


def test_out_that_is_a_file_gives_one_line(tmp_path, capsys):
    target = tmp_path / "results.json"
    target.write_text("{}")
    status, _, err = _run_main(["demo", "--out", str(target)], capsys)
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert "is not a writable directory" in err


def _results(mrl, truncated, seconds):
    """Constructed demo results: FF fixed, MRL and truncated as given."""
    return {
        "dims": list(demo.DIMS),
        "seeds": 1,
        "accuracy": {
            "mrl": list(mrl),
            "mrl_e": list(FF),
            "ff": list(FF),
            "truncated": list(truncated),
        },
        "seconds": seconds,
        "cpu_seconds": seconds,
    }


PASSING = _results(FF - 0.01, FF - [0.2, 0, 0, 0, 0, 0], 10.0)
# MRL 2 pt under FF at width 8: a figure the demo shows, not judges.
WORSE = _results(FF - [0, 0, 0.02, 0, 0, 0], FF - [0.2, 0, 0, 0, 0, 0], 10.0)


@pytest.fixture
def fake_run(monkeypatch):
    """Replaces `demo.run`; returns the list of its calls' keyword args."""
    calls = []

    def use(results):
        def run(out_dir, **kwargs):
            calls.append(kwargs)
            return results

        monkeypatch.setattr(demo, "run", run)
        return calls

    return use


@pytest.mark.parametrize("results", [PASSING, WORSE])
def test_demo_prints_its_tables_and_exits_0(
    results, fake_run, tmp_path, capsys
):
    fake_run(results)
    status, out, err = _run_main(["demo", "--out", str(tmp_path)], capsys)
    assert status == 0
    assert demo.format_table(results) in out
    assert not [
        line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))
    ]
    assert err == ""


@pytest.mark.parametrize(
    "argv, seeds, quick",
    [([], 2, False), (["--seeds", "3"], 3, False), (["--quick"], 1, True)],
)
def test_demo_passes_seeds_and_quick(
    argv, seeds, quick, fake_run, tmp_path, capsys
):
    calls = fake_run(PASSING)
    status, _, _ = _run_main(["demo", "--out", str(tmp_path)] + argv, capsys)
    assert status == 0
    assert len(calls) == 1
    assert (calls[0]["seeds"], calls[0]["quick"]) == (seeds, quick)


@pytest.mark.parametrize("seeds", ["1", "3"])
def test_quick_refuses_seeds_in_one_line(seeds, fake_run, tmp_path, capsys):
    calls = fake_run(PASSING)
    status, out, err = _run_main(
        ["demo", "--quick", "--seeds", seeds, "--out", str(tmp_path)], capsys
    )
    assert status == 2
    assert out == "" and calls == []
    assert err.splitlines() == [
        f"keras-mrl demo: error: --quick runs one seed; drop --seeds {seeds} "
        "or --quick (see --help)"
    ]
