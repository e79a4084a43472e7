"""benchmarks/depth.py: its goal decisions and table on given results.

The benchmark itself fine-tunes MiniLM three times; here only
`check_goals` and the table run, on made-up grids.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

pytestmark = pytest.mark.once

ROOT = pathlib.Path(__file__).resolve().parents[1]
E, TWO, ST = "(e) cut", "(2D)", "(ST) Matryoshka2dLoss"


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "depth.py"
    spec = importlib.util.spec_from_file_location("bench_depth", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grid(bench, shift=0.0):
    """nDCG rising with depth and width, plus `shift`."""
    depths = np.array(bench.DEPTHS, float)[:, None]
    widths = np.array(bench.WIDTHS, float)[None, :]
    return 20.0 + 5.0 * depths + 2.0 * np.log2(widths) + shift


def _run(bench, grids):
    return {
        "results": {
            label: {str(k): list(row) for k, row in zip(bench.DEPTHS, grid)}
            for label, grid in grids.items()
        }
    }


def _verdicts(bench, grids):
    return [ok for _, ok, _ in bench.check_goals(_run(bench, grids))]


def test_a_run_meeting_every_goal_passes(bench):
    e = _grid(bench)
    two = _grid(bench, 3.0)
    two[-1] = e[-1] - 0.5  # the full depth may lose up to 1 pt
    verdicts = _verdicts(bench, {E: e, TWO: two, ST: _grid(bench, 1.0)})
    assert verdicts == [True, True, True]


def test_each_goal_fails_on_its_own(bench):
    e, st = _grid(bench), _grid(bench, 1.0)
    shallow_loss = _grid(bench, 3.0)
    shallow_loss[0, 0] = e[0, 0] - 0.1
    assert _verdicts(bench, {E: e, TWO: shallow_loss, ST: st}) == [
        False,
        True,
        True,
    ]
    full_loss = _grid(bench, 3.0)
    full_loss[-1, 2] = e[-1, 2] - 1.5
    assert _verdicts(bench, {E: e, TWO: full_loss, ST: st}) == [
        True,
        False,
        True,
    ]
    below_st = _grid(bench, 3.0)
    assert _verdicts(bench, {E: e, TWO: below_st, ST: _grid(bench, 4.0)}) == [
        True,
        True,
        False,
    ]


def test_only_the_goals_of_the_runs_made_are_checked(bench):
    assert bench.check_goals(_run(bench, {E: _grid(bench)})) == []
    goals = bench.check_goals(
        _run(bench, {TWO: _grid(bench), ST: _grid(bench)})
    )
    assert [goal for goal, _, _ in goals] == [
        "(2D) >= (ST) on average over the layers x widths grid"
    ]


def test_table_has_a_row_per_depth_and_a_column_per_run_and_width(bench):
    table = bench.format_table(
        _run(bench, {E: _grid(bench), TWO: _grid(bench, 1.0)})
    )
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(bench.DEPTHS)
    assert rows[0].count("@") == 2 * len(bench.WIDTHS)
    assert rows[1].startswith("| 1 | ")
