import math

import keras
import numpy as np
import pytest

from keras_mrl._numpy_search import top_k
from keras_mrl.evaluation import retrieval_metrics
from keras_mrl.evaluation import retrieval_metrics_from_relevance

pytestmark = pytest.mark.once


def _metrics(q, ql, c, cl, dims, **kwargs):
    """`retrieval_metrics` with the arguments in their documented order."""
    return retrieval_metrics(
        q,
        query_labels=ql,
        corpus_embeddings=c,
        corpus_labels=cl,
        nesting_dims=dims,
        **kwargs,
    )


def _from_relevance(q, c, ids, dims, **kwargs):
    return retrieval_metrics_from_relevance(
        q, corpus_embeddings=c, relevant_ids=ids, nesting_dims=dims, **kwargs
    )


def _reference(queries, corpus, relevant_sets, dims, k, exclude_self=False):
    """Brute force from the definitions, one query at a time, in float64."""
    queries = np.asarray(queries, np.float64)
    corpus = np.asarray(corpus, np.float64)
    results = {}
    for m in dims:
        q = queries[:, :m] / np.linalg.norm(queries[:, :m], axis=1)[:, None]
        c = corpus[:, :m] / np.linalg.norm(corpus[:, :m], axis=1)[:, None]
        sums = {"top1": 0.0, "recall": 0.0, "map": 0.0, "ndcg": 0.0}
        without = 0
        for i in range(len(q)):
            candidates = [
                j for j in range(len(c)) if not (exclude_self and j == i)
            ]
            ranking = sorted(candidates, key=lambda j: -(c[j] @ q[i]))
            relevant = [j in relevant_sets[i] for j in ranking]
            num_relevant = sum(relevant)
            if num_relevant == 0:
                without += 1
                continue
            hits, precision_sum, dcg = 0, 0.0, 0.0
            for rank, rel in enumerate(relevant[:k], start=1):
                if rel:
                    hits += 1
                    precision_sum += hits / rank
                    dcg += 1 / math.log2(rank + 1)
            ideal = min(k, num_relevant)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, ideal + 1))
            sums["top1"] += relevant[0]
            sums["recall"] += hits / num_relevant
            sums["map"] += precision_sum / ideal
            sums["ndcg"] += dcg / idcg
        results[m] = {
            "top1": sums["top1"] / len(q),
            f"recall@{k}": sums["recall"] / len(q),
            f"map@{k}": sums["map"] / len(q),
            f"ndcg@{k}": sums["ndcg"] / len(q),
            "queries_without_relevant": without,
        }
    return results


def _label_sets(query_labels, corpus_labels):
    return [set(np.flatnonzero(corpus_labels == q)) for q in query_labels]


def _assert_results_close(actual, expected):
    assert list(actual) == list(expected)
    for dim in expected:
        assert actual[dim].keys() == expected[dim].keys()
        for name, value in expected[dim].items():
            np.testing.assert_allclose(
                actual[dim][name],
                value,
                rtol=1e-6,
                atol=1e-9,
                err_msg=f"{name} at width {dim}",
            )


def _random(num_queries=37, num_items=83, width=24, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(num_queries, width)).astype("float32"),
        rng.integers(0, classes, num_queries),
        rng.normal(size=(num_items, width)).astype("float32"),
        rng.integers(0, classes, num_items),
    )


def _on_circle(degrees):
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_matches_brute_force_reference(k):
    q, ql, c, cl = _random()
    dims = [3, 8, 24]
    actual = _metrics(q, ql, c, cl, dims, k=k, chunk_size=10)
    _assert_results_close(
        actual, _reference(q, c, _label_sets(ql, cl), dims, k)
    )


def test_exclude_self_matches_brute_force_reference():
    _, _, c, cl = _random(num_items=60, seed=1)
    dims = [4, 12, 24]
    actual = _metrics(c, cl, c, cl, dims, k=7, exclude_self=True, chunk_size=16)
    expected = _reference(c, c, _label_sets(cl, cl), dims, 7, exclude_self=True)
    _assert_results_close(actual, expected)
    # Keeping itself in the ranking, every query would find itself first.
    with_self = _metrics(c, cl, c, cl, dims, k=7)
    assert with_self[24]["top1"] == 1.0
    assert actual[24]["top1"] < 1.0


def test_hand_checked_metrics():
    # The corpus lies at 0, 10, ..., 50 degrees, so the query at 0 degrees
    # ranks it in that order; relevance by rank is [1, 0, 1, 0, 1, 1], R=4.
    corpus = _on_circle([0, 10, 20, 30, 40, 50])
    corpus_labels = np.array([1, 0, 1, 0, 1, 1])
    query = _on_circle([0])
    at3 = _metrics(query, [1], corpus, corpus_labels, [2], k=3)[2]
    idcg3 = 1 + 1 / math.log2(3) + 1 / 2
    assert at3["top1"] == 1.0
    assert at3["recall@3"] == pytest.approx(2 / 4)
    assert at3["map@3"] == pytest.approx((1 + 2 / 3) / 3)
    assert at3["ndcg@3"] == pytest.approx((1 + 1 / 2) / idcg3)
    # With k=5 > R, AP divides by R = 4 and the ideal DCG has 4 gains.
    at5 = _metrics(query, [1], corpus, corpus_labels, [2], k=5)[2]
    idcg4 = idcg3 + 1 / math.log2(5)
    assert at5["recall@5"] == pytest.approx(3 / 4)
    assert at5["map@5"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    assert at5["ndcg@5"] == pytest.approx(
        (1 + 1 / 2 + 1 / math.log2(6)) / idcg4
    )
    # Label 0's nearest item has label 1.
    miss = _metrics(query, [0], corpus, corpus_labels, [2], k=3)[2]
    assert miss["top1"] == 0.0
    assert miss["map@3"] == pytest.approx((1 / 2) / 2)


def test_widths_cut_the_prefix_before_ranking():
    # Width 1 sees only the first feature, where item 1 is nearest;
    # width 2 sees the second feature too, where item 0 is.
    corpus = np.array([[0.5, 0.9], [1.0, -0.5]])
    query = np.array([[1.0, 1.0]])
    results = _metrics(query, ["a"], corpus, ["a", "b"], [1, 2], k=1)
    assert results[1]["top1"] == 0.0
    assert results[2]["top1"] == 1.0


def test_query_norm_and_corpus_norm_do_not_matter():
    q, ql, c, cl = _random(seed=2)
    scale = np.random.default_rng(3).uniform(0.1, 10.0, size=(len(c), 1))
    base = _metrics(q, ql, c, cl, [6, 24], k=5)
    scaled = _metrics(q * 7.0, ql, c * scale, cl, [6, 24], k=5)
    _assert_results_close(scaled, base)


def test_queries_without_relevant_score_zero_without_nan():
    corpus = _on_circle([0, 30, 60])
    queries = _on_circle([5, 55])
    with np.errstate(all="raise"):
        results = _metrics(queries, [7, 1], corpus, [1, 1, 2], [2], k=2)[2]
    assert results["queries_without_relevant"] == 1
    # Query 1 alone counts (its nearest, 60 degrees, is irrelevant), halved
    # by query 0's zeros.
    assert results["top1"] == 0.0
    assert results["recall@2"] == pytest.approx(0.5 * 1 / 2)
    assert results["map@2"] == pytest.approx(0.5 * (1 / 2) / 2)
    # A class of one item has no relevant item once the query is excluded.
    only = _metrics(
        corpus, [1, 1, 2], corpus, [1, 1, 2], [2], k=2, exclude_self=True
    )[2]
    assert only["queries_without_relevant"] == 1
    assert only["top1"] == pytest.approx(2 / 3)


def test_chunked_equals_unchunked():
    q, ql, c, cl = _random(seed=4)
    whole = _metrics(q, ql, c, cl, [4, 24], k=6, chunk_size=1000)
    for chunk_size in (1, 7, None):
        _assert_results_close(
            _metrics(q, ql, c, cl, [4, 24], k=6, chunk_size=chunk_size),
            whole,
        )


def test_k_larger_than_corpus_ranks_everything():
    q, ql, c, cl = _random(num_items=6, seed=5)
    actual = _metrics(q, ql, c, cl, [24], k=10)
    assert actual[24]["recall@10"] == pytest.approx(
        1.0 - actual[24]["queries_without_relevant"] / len(q)
    )
    _assert_results_close(
        actual, _reference(q, c, _label_sets(ql, cl), [24], 10)
    )


def test_accepts_backend_tensors_and_column_labels():
    q, ql, c, cl = _random(seed=6)
    expected = _metrics(q, ql, c, cl, [8], k=4)
    actual = _metrics(
        keras.ops.convert_to_tensor(q),
        keras.ops.convert_to_tensor(ql[:, None]),
        keras.ops.convert_to_tensor(c),
        list(cl),
        [8],
        k=4,
    )
    _assert_results_close(actual, expected)


def test_half_precision_inputs_are_scored_in_float32():
    q, ql, c, cl = _random(seed=7)
    half = _metrics(q.astype("float16"), ql, c.astype("float16"), cl, [24], k=5)
    _assert_results_close(
        half,
        _reference(
            q.astype("float16"),
            c.astype("float16"),
            _label_sets(ql, cl),
            [24],
            5,
        ),
    )


def test_explicit_relevance_matches_brute_force_reference():
    rng = np.random.default_rng(8)
    q = rng.normal(size=(20, 16))
    c = rng.normal(size=(50, 16))
    relevant = [
        set(rng.choice(50, size=rng.integers(0, 6), replace=False))
        for _ in range(20)
    ]
    relevant[0] = set()
    actual = _from_relevance(
        q,
        c,
        [list(ids) + list(ids) for ids in relevant],
        [4, 16],
        k=5,
        chunk_size=3,
    )
    _assert_results_close(actual, _reference(q, c, relevant, [4, 16], 5))
    assert actual[16]["queries_without_relevant"] >= 1


def test_explicit_relevance_agrees_with_labels():
    q, ql, c, cl = _random(seed=9)
    _assert_results_close(
        _from_relevance(q, c, _label_sets(ql, cl), [8, 24], k=5),
        _metrics(q, ql, c, cl, [8, 24], k=5),
    )


def test_explicit_relevance_hand_checked():
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    corpus = np.array([[1.0, 0.1], [0.1, 1.0], [0.7, 0.7]])
    results = _from_relevance(queries, corpus, [[2], [1, 2]], [2], k=2)[2]
    # Query 0 ranks [0, 2]: relevant at rank 2. Query 1 ranks [1, 2]: both.
    assert results["top1"] == 0.5
    assert results["recall@2"] == 1.0
    assert results["map@2"] == pytest.approx(((1 / 2) / 1 + 1.0) / 2)


def _good():
    return _random(num_queries=4, num_items=6, width=8, seed=10)


def test_mismatched_widths_raise():
    q, ql, c, cl = _good()
    with pytest.raises(ValueError, match=r"\(4, 7\).*\(6, 8\)"):
        _metrics(q[:, :7], ql, c, cl, [4])


def test_empty_corpus_raises():
    q, ql, _, _ = _good()
    with pytest.raises(ValueError, match=r"empty.*\(0, 8\)"):
        _metrics(q, ql, np.zeros((0, 8)), [], [4])


def test_label_length_mismatch_raises():
    q, ql, c, cl = _good()
    with pytest.raises(ValueError, match=r"query_labels.*\(4,\).*\(3,\)"):
        _metrics(q, ql[:3], c, cl, [4])
    with pytest.raises(ValueError, match=r"corpus_labels.*\(6,\).*\(7,\)"):
        _metrics(q, ql, c, np.arange(7), [4])


@pytest.mark.parametrize("k", [0, -2])
def test_bad_k_raises(k):
    q, ql, c, cl = _good()
    with pytest.raises(ValueError, match=rf"positive int, got k={k}"):
        _metrics(q, ql, c, cl, [4], k=k)


@pytest.mark.parametrize("k", [2.0, True, "3"])
def test_non_int_k_raises(k):
    q, ql, c, cl = _good()
    with pytest.raises(TypeError, match="`k` must be an int"):
        _metrics(q, ql, c, cl, [4], k=k)
    with pytest.raises(TypeError, match="`chunk_size` must be an int"):
        _from_relevance(q, c, [[0]] * 4, [4], chunk_size=k)


def test_widths_wider_than_embeddings_raise():
    q, ql, c, cl = _good()
    with pytest.raises(ValueError, match=r"16.*8"):
        _metrics(q, ql, c, cl, [4, 16])


def test_one_dimensional_embeddings_raise():
    q, ql, c, cl = _good()
    with pytest.raises(ValueError, match=r"2-D.*\(8,\)"):
        _metrics(q[0], ql[:1], c, cl, [4])


def test_bad_chunk_size_raises():
    q, ql, c, cl = _good()
    with pytest.raises(ValueError, match="chunk_size=0"):
        _metrics(q, ql, c, cl, [4], chunk_size=0)


def test_exclude_self_needs_the_same_arrays():
    q, ql, c, cl = _good()
    with pytest.raises(ValueError, match=r"exclude_self.*\(4, 8\).*\(6, 8\)"):
        _metrics(q, ql, c, cl, [4], exclude_self=True)
    with pytest.raises(ValueError, match="different labels"):
        _metrics(c, cl, c, cl[::-1], [4], exclude_self=True)
    # Same shape and labels, other vectors: not the corpus either.
    with pytest.raises(ValueError, match=r"\(6, 8\) but different values"):
        _metrics(c[::-1], cl, c, cl, [4], exclude_self=True)
    # An equal copy (another dtype, too) is the corpus.
    results = _metrics(c.astype("float64"), cl, c, cl, [4], exclude_self=True)
    assert results == _metrics(c, cl, c, cl, [4], exclude_self=True)


def test_bad_relevant_ids_raise():
    q, _, c, _ = _good()
    with pytest.raises(ValueError, match=r"4 for .*\(4, 8\), got 3"):
        _from_relevance(q, c, [[0]] * 3, [4])
    with pytest.raises(ValueError, match=r"relevant_ids\[1\].*\[0, 6\)"):
        _from_relevance(q, c, [[0], [6], [], []], [4])
    with pytest.raises(ValueError, match="integer"):
        _from_relevance(q, c, [[0.5], [], [], []], [4])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["query_embeddings", "corpus_embeddings"])
def test_non_finite_embeddings_raise(bad, side):
    # A diverged model's NaN embeddings would score at chance level.
    q, ql, c, cl = _good()
    q, c = q.copy(), c.copy()
    (q if side == "query_embeddings" else c)[1, 3] = bad
    match = rf"`{side}` holds 1 NaN or infinite"
    with pytest.raises(ValueError, match=match):
        _metrics(q, ql, c, cl, [4])
    with pytest.raises(ValueError, match=match):
        _from_relevance(q, c, [[0]] * 4, [4])


def test_non_finite_embeddings_raise_in_every_precision():
    q, ql, c, cl = _good()
    for dtype in ("float16", "float64"):
        bad = q.astype(dtype)
        bad[0, 0] = np.nan
        with pytest.raises(ValueError, match="query_embeddings"):
            _metrics(bad, ql, c, cl, [4])
    # numpy does not count bfloat16 among its floats.
    tensor = keras.ops.convert_to_tensor(
        np.full((6, 8), np.nan, "float32"), dtype="bfloat16"
    )
    with pytest.raises(ValueError, match=r"holds 48 NaN.*\(6, 8\)"):
        _metrics(q, ql, tensor, cl, [4])


def test_positional_arguments_raise():
    q, ql, c, cl = _good()
    with pytest.raises(TypeError, match="positional argument"):
        retrieval_metrics(q, ql, c, cl, [4])
    with pytest.raises(TypeError, match="positional argument"):
        retrieval_metrics_from_relevance(q, c, [[0]] * 4, [4])


@pytest.mark.parametrize("exclude_self", ["no", 1, None])
def test_non_bool_exclude_self_raises(exclude_self):
    _, _, c, cl = _good()
    with pytest.raises(TypeError, match="`exclude_self` must be True or"):
        _metrics(c, cl, c, cl, [4], exclude_self=exclude_self)


# `top_k` is the private ranking kernel of this module and of
# `keras_mrl.retrieval`; it is tested here, once.
@pytest.mark.parametrize(
    "n, k",
    [
        (1000, 5),
        (2000, 20),
        (1000, 20),
        (64 * 11, 10),
        (300, 300),
        (50, 7),
        (64 * 40 + 17, 3),
    ],
)
def test_top_k_matches_a_full_sort(n, k):
    scores = np.random.default_rng(n + k).normal(size=(6, n))
    # Crowd the best scores into one block, where pruning is most at risk.
    scores[:, 128 : 128 + k] += 10.0
    # The best score in the ragged tail past the last whole block.
    scores[2, -1] = 20.0
    # Or spread them over k blocks, one each, so that every kept block counts.
    scores[3, np.arange(min(k, n // 64)) * 64] += 30.0
    scores[4, :] = -np.inf
    scores[4, n // 2] = 1.0
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best, cols = top_k(scores, k)
    assert cols.dtype == np.int64
    # Row 4's ties at -inf may come in any order; the rest have none.
    np.testing.assert_array_equal(
        cols[[0, 1, 2, 3, 5]], expected[[0, 1, 2, 3, 5]]
    )
    np.testing.assert_array_equal(
        best, np.take_along_axis(scores, expected, axis=1)
    )


def test_top_k_is_exact_with_ties():
    rng = np.random.default_rng(0)
    # Integer scores: many ties, and a tail past the last whole block.
    scores = rng.integers(0, 50, size=(5, 64 * 40 + 17)).astype("float32")
    best, cols = top_k(scores, 30)
    np.testing.assert_array_equal(best, -np.sort(-scores, axis=1)[:, :30])
    np.testing.assert_array_equal(
        np.take_along_axis(scores, cols, axis=1), best
    )
    assert all(len(set(row)) == 30 for row in cols)


@pytest.mark.parametrize("k", [7, 8, 100])
def test_top_k_of_at_least_the_row_sorts_it(k):
    scores = np.random.default_rng(k).normal(size=(3, 7)).astype("float32")
    best, cols = top_k(scores, k)
    assert best.shape == cols.shape == (3, 7)
    np.testing.assert_array_equal(cols, np.argsort(-scores, axis=1))
    np.testing.assert_array_equal(best, -np.sort(-scores, axis=1))
