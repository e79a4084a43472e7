"""benchmarks/text_finetune.py: its goal decisions on given results.

The benchmark itself trains MiniLM for minutes; here only `check_goals`
and the table run, on made-up curves.
"""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.once

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    # Its helpers import their neighbours, as the scripts in one folder do.
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
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
    assert bench._quantization(plain) is None and plain.plot == ""
    with pytest.raises(SystemExit):
        bench._parse_args(["--models", "ab", "--quantization-aware", "int8"])


def test_goals_read_e_trained_quantization_aware(bench):
    run = _results(bench, None)
    results = run["results"]
    results["(e) MRL+PCA, binary-aware"] = results.pop("(e) MRL+PCA")
    assert len(bench.check_goals(run)) == 5


def test_only_the_default_run_plots_to_the_docs_figure(bench):
    assert bench._parse_args([]).plot == bench.PLOT
    assert bench._parse_args(["--models", "de"]).plot == ""
    assert bench._parse_args(["--models", "de", "--plot", "x.png"]).plot == (
        "x.png"
    )


def test_f_needs_one_length_for_queries_and_documents(bench, capsys):
    with pytest.raises(SystemExit):
        bench._parse_args(["--models", "def"])
    assert "--query-length equal to --document-length" in (
        capsys.readouterr().err
    )
    args = bench._parse_args(
        ["--models", "def", "--query-length", "64", "--document-length", "64"]
    )
    assert args.models == "def"
    with pytest.raises(SystemExit):
        bench._parse_args(["--models", "dx"])


def _with_f(bench, e, f, seed=0):
    """(e) and (f) with per-query scores: each query scores its model's
    mean plus the same noise in both, so paired differences are exact."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 20.0, size=200)
    results = {}
    for label, curve in (("(e) MRL+PCA", e), (bench.F_LABEL, f)):
        results[label] = {
            "ndcg@10": list(curve),
            "recall@10": list(curve),
            "per_query_ndcg@10": {
                str(w): list(curve[bench.WIDTHS.index(w)] + noise)
                for w in bench.PAIRED
            },
        }
    return {"results": results, "total_seconds": 60.0}


def test_goals_against_f_use_paired_differences(bench):
    widths = np.array(bench.WIDTHS, dtype=float)
    f = 58.0 - 20.0 * np.exp(-widths / 40.0)
    ahead = f + 1.5
    ahead[-1] = f[-1] - 0.2
    passed = _passed(bench, _with_f(bench, ahead, f))
    assert passed["(e) >= (f) + 1 pt"] and passed["(e) at 384 >= (f)"]
    # Only the (f) goals and (e)'s own: no (b) or (c) ran.
    assert not any("(c)" in goal or "(b)" in goal for goal in passed)

    close = ahead.copy()
    close[bench.WIDTHS.index(48)] = f[bench.WIDTHS.index(48)] + 0.9
    passed = _passed(bench, _with_f(bench, close, f))
    assert not passed["(e) >= (f) + 1 pt"] and passed["(e) at 384 >= (f)"]

    behind = ahead.copy()
    behind[-1] = f[-1] - 0.6
    passed = _passed(bench, _with_f(bench, behind, f))
    assert passed["(e) >= (f) + 1 pt"] and not passed["(e) at 384 >= (f)"]


def test_paired_differences_give_bootstrap_intervals(bench):
    widths = np.array(bench.WIDTHS, dtype=float)
    f = 58.0 - 20.0 * np.exp(-widths / 40.0)
    run = _with_f(bench, f + 2.0, f)
    rows = bench.paired_differences(
        run["results"], "(e) MRL+PCA", bench.F_LABEL
    )
    assert [r[0] for r in rows] == bench.PAIRED
    for _, mean, low, high in rows:
        # The same noise in both: every resampling differs by exactly 2.
        np.testing.assert_allclose([mean, low, high], 2.0, atol=1e-9)
    # Independent noise widens the interval around the difference.
    results = run["results"]
    rng = np.random.default_rng(1)
    for w in bench.PAIRED:
        scores = results[bench.F_LABEL]["per_query_ndcg@10"][str(w)]
        results[bench.F_LABEL]["per_query_ndcg@10"][str(w)] = list(
            np.asarray(scores) + rng.normal(0.0, 20.0, size=len(scores))
        )
    _, mean, low, high = bench.paired_differences(
        results, "(e) MRL+PCA", bench.F_LABEL
    )[0]
    assert low < mean < high and high - low > 1.0


def test_per_query_ndcg_averages_to_the_library_figure(bench):
    import per_query

    from keras_mrl.evaluation import retrieval_metrics_from_relevance

    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(60, 32)).astype("float32")
    queries = corpus + rng.normal(size=corpus.shape).astype("float32")
    expected = retrieval_metrics_from_relevance(
        queries,
        corpus_embeddings=corpus,
        relevant_ids=[[i] for i in range(60)],
        nesting_dims=[8, 32],
        k=10,
    )
    for width in (8, 32):
        ids = per_query.prefix_top_k(queries, corpus, width, 10)
        scores = per_query.per_query_ndcg(ids, np.arange(60))
        assert 0 < scores.mean() < 100
        np.testing.assert_allclose(
            scores.mean(), 100 * expected[width]["ndcg@10"], rtol=1e-6
        )


def test_f_trains_on_the_batches_of_the_keras_pipeline(bench):
    import keras

    args = bench._parse_args(["--steps", "5", "--batch", "8"])
    rows = bench._batch_rows(30, args)
    # What `_train` feeds `fit`: (queries, documents) of token ids, here
    # numbered by row.
    keras.utils.set_random_seed(bench.SEED)
    queries = {"token_ids": np.arange(30)[:, None] * np.ones((1, 4), int)}
    documents = {"token_ids": 100 + queries["token_ids"]}
    fed = bench._batches((queries, documents), 30, 8, bench.SEED).take(5)
    fed = [batch[0][0]["token_ids"].numpy()[:, 0] for batch in fed]
    assert len(rows) == 5
    for a, b in zip(rows, fed):
        np.testing.assert_array_equal(a, b)
    # Shuffled; 5 batches of 8 cross the epoch boundary at 30 rows.
    assert not np.array_equal(np.concatenate(rows[:3]), np.arange(24))
    assert sorted(np.concatenate(rows[:3])) != list(range(24))


def test_per_query_command_compares_two_json_runs(bench, tmp_path, capsys):
    import json

    import per_query

    widths = np.array(bench.WIDTHS, dtype=float)
    f = 58.0 - 20.0 * np.exp(-widths / 40.0)
    run = _with_f(bench, f + 2.0, f)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    argv = ["--before", str(path), bench.F_LABEL]
    assert per_query.main(argv + ["--after", str(path), "(e) MRL+PCA"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(bench.PAIRED)
    assert lines[1] == "  16: +2.0 pt (95% interval +2.0 to +2.0)"
    with pytest.raises(SystemExit):
        per_query.main(argv + ["--after", str(path), "(x) missing"])
    assert "has no model '(x) missing'" in capsys.readouterr().err


def test_report_goals_fails_only_a_check_with_a_missed_goal(bench, capsys):
    goals = [("met goal", True, "+1.0 pt"), ("missed goal", False, "-2.0 pt")]
    assert bench.report_goals(goals, check=True) == 1
    assert bench.report_goals(goals, check=False) == 0
    assert bench.report_goals(goals[:1], check=True) == 0
    out = capsys.readouterr().out
    assert "PASS  met goal  (+1.0 pt)" in out
    assert "FAIL  missed goal  (-2.0 pt)" in out
