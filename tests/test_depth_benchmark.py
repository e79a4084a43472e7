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
    """A result in which each of 3 queries scores the grid's cell."""
    return {
        "results": {
            label: {str(k): list(row) for k, row in zip(bench.DEPTHS, grid)}
            for label, grid in grids.items()
        },
        "per_query_ndcg@10": {
            label: {
                str(k): {str(m): [v] * 3 for m, v in zip(bench.WIDTHS, row)}
                for k, row in zip(bench.DEPTHS, grid)
            }
            for label, grid in grids.items()
        },
    }


def _verdicts(bench, grids):
    return [ok for _, ok, _ in bench.check_goals(_run(bench, grids))]


# (3 layers, 128 dims) and (6 layers, 384 dims) in a grid.
SHALLOW, FULL = (2, 2), (-1, -1)


def _meeting_every_goal(bench):
    """(e), (2D) and (ST) grids: (2D) keeps exactly 90% at 3 layers x 128,
    is 1 pt above (e) at full depth and width, and level with (ST)."""
    e, two = _grid(bench), _grid(bench, 1.0)
    two[SHALLOW] = 0.9 * two[FULL]
    return e, two, two.copy()


def test_a_run_meeting_every_goal_passes(bench):
    e, two, st = _meeting_every_goal(bench)
    assert _verdicts(bench, {E: e, TWO: two, ST: st}) == [True] * 4


def test_each_goal_fails_on_its_own(bench):
    e, two, st = _meeting_every_goal(bench)
    shallow = two.copy()
    shallow[SHALLOW] -= 0.1
    shallow_st = st.copy()
    shallow_st[SHALLOW] -= 0.1
    assert _verdicts(bench, {E: e, TWO: shallow, ST: shallow_st}) == [
        False,
        True,
        True,
        True,
    ]
    full = two.copy()
    full[FULL] = e[FULL] - 0.6
    full[SHALLOW] = 0.9 * full[FULL]
    assert _verdicts(bench, {E: e, TWO: full, ST: full.copy()}) == [
        True,
        False,
        True,
        True,
    ]
    # 0.6 pt behind (ST) in every cell: the mean fails, no cell by 2.
    assert _verdicts(bench, {E: e, TWO: two, ST: st + 0.6}) == [
        True,
        True,
        False,
        True,
    ]
    # 2.1 pt behind in one cell of 24: the mean holds, the cell fails.
    one_cell = st.copy()
    one_cell[0, 0] += 2.1
    assert _verdicts(bench, {E: e, TWO: two, ST: one_cell}) == [
        True,
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
        "(2D) at 3 layers x 128 >= 90% of its 6 layers x 384",
        "(2D) - (ST) averaged over the layers x widths grid >= -0.5 pt",
        "(2D) - (ST) >= -2 pt in every cell",
    ]


def test_goals_name_the_baseline_and_the_intervals(bench):
    e, two, st = _meeting_every_goal(bench)
    goals = bench.check_goals(_run(bench, {E: e, TWO: two, ST: st}))
    details = [detail for _, _, detail in goals]
    assert "(e) cut to 3 layers: " in details[0]
    assert "95% interval +1.0 to +1.0" in details[1]


def test_table_has_a_row_per_depth_and_a_column_per_run_and_width(bench):
    table = bench.format_table(
        _run(bench, {E: _grid(bench), TWO: _grid(bench, 1.0)})
    )
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(bench.DEPTHS)
    assert rows[0].count("@") == 2 * len(bench.WIDTHS)
    assert rows[1].startswith("| 1 | ")
