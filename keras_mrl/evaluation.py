"""Retrieval quality of an embedding at each of its nested widths.

Numpy only: this measures, it does not train. For every width `m` the
queries and the corpus are cut to their first `m` features and ranked by
cosine similarity, and the top `k` of each ranking is scored against the
relevant corpus items.

The queries are processed in chunks, so memory holds `(chunk_size, N)`
score matrices, never a full `(Q, N)` one: with the default chunk size a
chunk needs about 128 MiB beyond the embeddings whatever the corpus size
(167 queries at a time for a 100k corpus). One chunk's scores for all widths
come from a single pass over the full width: the dot products of prefix `m`
are the running sum of those of the disjoint blocks between consecutive
widths.
"""

import numpy as np

from keras_mrl._blocks import block_bounds
from keras_mrl._norms import inverse_norm
from keras_mrl._numpy_search import top_k
from keras_mrl._validation import check_bool
from keras_mrl._validation import check_finite
from keras_mrl._validation import check_positive_int
from keras_mrl._validation import label_vector
from keras_mrl._validation import to_matrix
from keras_mrl._validation import validate_nesting_dims

__all__ = ["retrieval_metrics", "retrieval_metrics_from_relevance"]

# With chunk_size=None, a chunk holds this many scores. A score costs about
# 8 bytes at the peak (the running dot products and the scaled scores, both
# float32), so a chunk peaks near 128 MiB.
_SCORES_PER_CHUNK = 2**24


def _check_inputs(queries, corpus, nesting_dims, k, chunk_size):
    queries = to_matrix(queries, "query_embeddings")
    corpus = to_matrix(corpus, "corpus_embeddings")
    if corpus.shape[0] == 0:
        raise ValueError(
            "The corpus is empty: `corpus_embeddings` has shape "
            f"{corpus.shape}. Pass at least one corpus item."
        )
    if queries.shape[0] == 0:
        raise ValueError(
            "There are no queries: `query_embeddings` has shape "
            f"{queries.shape}. Pass at least one query."
        )
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(
            "Queries and corpus must have the same width, got "
            f"`query_embeddings` of shape {queries.shape} and "
            f"`corpus_embeddings` of shape {corpus.shape}."
        )
    # Half precision (incl. bfloat16) is scored in float32; float64 inputs
    # keep float64.
    wide = np.float64 in (queries.dtype, corpus.dtype)
    dtype = np.float64 if wide else np.float32
    # Checked once cast, so that half-precision types numpy does not know
    # as floats (bfloat16) are checked too.
    queries = check_finite(
        queries.astype(dtype, copy=False), "query_embeddings"
    )
    corpus = check_finite(corpus.astype(dtype, copy=False), "corpus_embeddings")
    dims = validate_nesting_dims(nesting_dims, max_dim=corpus.shape[1])
    k = check_positive_int(k, "k")
    if chunk_size is None:
        chunk_size = max(1, _SCORES_PER_CHUNK // corpus.shape[0])
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    return queries, corpus, dims, k, chunk_size


def _corpus_inverse_norms(corpus, dims):
    """Returns `(G, N)`: 1 / the norm of each corpus item's prefixes."""
    squared = np.stack(
        [
            np.einsum("ij,ij->i", corpus[:, s:e], corpus[:, s:e])
            for s, e in block_bounds(dims)
        ]
    )
    return inverse_norm(np.cumsum(squared, axis=0), np)


def _prefix_scores(queries, corpus, dims, inverse_norms, raw, scores):
    """Yields `(dim, scores)`: each query's ranking scores at each width.

    A query's own norm does not change its ranking, so the scores are the
    dot products divided by the corpus norms only. `raw` and `scores` are
    `(Q, N)` buffers reused for every width and chunk: the yielded array is
    overwritten by the next one.
    """
    raw[...] = 0.0
    for (start, end), scale in zip(block_bounds(dims), inverse_norms):
        np.matmul(queries[:, start:end], corpus[:, start:end].T, out=scores)
        raw += scores
        np.multiply(raw, scale, out=scores)
        yield end, scores


def _scores_from_ranks(relevant, num_relevant, k):
    """Per-query metrics from the top-k relevance `(q, k_eff)` and R `(q,)`."""
    k_eff = relevant.shape[1]
    ranks = np.arange(1, k_eff + 1)
    hits = np.cumsum(relevant, axis=1)
    has_relevant = num_relevant > 0
    safe_r = np.maximum(num_relevant, 1)
    ideal = np.minimum(k, safe_r)
    precision_sum = np.sum(hits / ranks * relevant, axis=1)
    discounts = 1.0 / np.log2(ranks + 1)
    dcg = relevant @ discounts
    # ideal <= k_eff always: R never exceeds the number of rankable items.
    idcg = np.cumsum(discounts)[ideal - 1]
    return {
        "top1": np.where(has_relevant, relevant[:, 0], 0.0),
        "recall": np.where(has_relevant, hits[:, -1] / safe_r, 0.0),
        "map": np.where(has_relevant, precision_sum / ideal, 0.0),
        "ndcg": np.where(has_relevant, dcg / idcg, 0.0),
    }


def _evaluate(
    queries,
    corpus,
    dims,
    k,
    chunk_size,
    num_relevant,
    chunk_relevance,
    exclude_self=False,
):
    """Averages the metrics over all queries, chunk by chunk.

    Args:
        num_relevant: `(Q,)` ints, R of each query.
        chunk_relevance: function `(start, stop)` -> `is_relevant`, called
            once per chunk of queries `start:stop`; `is_relevant(top)`
            returns the bool `(stop - start, k_eff)` relevance of their
            ranked corpus ids `top` at one width.
        exclude_self: whether query `i` is corpus item `i`, to be left out.
    """
    num_queries, num_items = queries.shape[0], corpus.shape[0]
    k_eff = min(k, num_items - 1 if exclude_self else num_items)
    names = ("top1", f"recall@{k}", f"map@{k}", f"ndcg@{k}")
    totals = {m: dict.fromkeys(names, 0.0) for m in dims}
    inverse_norms = _corpus_inverse_norms(corpus, dims).astype(corpus.dtype)
    buffer_shape = (min(chunk_size, num_queries), num_items)
    raw = np.empty(buffer_shape, corpus.dtype)
    buffer = np.empty(buffer_shape, corpus.dtype)
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        rows = np.arange(stop - start)
        is_relevant = chunk_relevance(start, stop)
        for m, scores in _prefix_scores(
            queries[start:stop],
            corpus,
            dims,
            inverse_norms,
            raw[: len(rows)],
            buffer[: len(rows)],
        ):
            if exclude_self:
                scores[rows, start + rows] = -np.inf
            _, top = top_k(scores, k_eff)
            relevant = is_relevant(top).astype(np.float64)
            per_query = _scores_from_ranks(
                relevant, num_relevant[start:stop], k
            )
            for name, key in zip(names, ("top1", "recall", "map", "ndcg")):
                totals[m][name] += float(np.sum(per_query[key]))
    without = int(np.sum(num_relevant == 0))
    results = {}
    for m in dims:
        results[m] = {
            name: total / num_queries for name, total in totals[m].items()
        }
        results[m]["queries_without_relevant"] = without
    return results


def _check_same(queries, corpus, query_labels, corpus_labels):
    """Checks that the queries are the corpus, as `exclude_self` means."""
    if queries.shape != corpus.shape:
        difference = ""
    elif queries is not corpus and not np.array_equal(queries, corpus):
        difference = " but different values"
    elif not np.array_equal(query_labels, corpus_labels):
        difference = " but different labels"
    else:
        difference = None
    if difference is not None:
        raise ValueError(
            "`exclude_self=True` means query i is corpus item i, so the "
            "queries and the corpus must be the same arrays; got "
            f"`query_embeddings` of shape {queries.shape} and "
            f"`corpus_embeddings` of shape {corpus.shape}{difference}. "
            "Pass exclude_self=False for a separate corpus."
        )
    if corpus.shape[0] < 2:
        raise ValueError(
            "With `exclude_self=True` the corpus needs at least 2 items, "
            f"got `corpus_embeddings` of shape {corpus.shape}."
        )


def retrieval_metrics(
    query_embeddings,
    *,
    query_labels,
    corpus_embeddings,
    corpus_labels,
    nesting_dims,
    k=10,
    exclude_self=False,
    chunk_size=None,
):
    """Label-based retrieval metrics of an embedding at each nested width.

    A corpus item is relevant to a query when their labels are equal, the
    retrieval protocol of the MRL paper on ImageNet. At each width `m` both
    sides are cut to their first `m` features and the corpus is ranked by
    cosine similarity to the query. With `R` the number of relevant corpus
    items and `rel_i` the relevance (0/1) of rank `i`:

    - `top1`: `rel_1`, whether the nearest item has the query's label;
    - `recall@k`: hits in the top `k` over `R`;
    - `map@k`: `sum_{i<=k} P@i * rel_i / min(k, R)`, `P@i` the precision
      of the first `i` ranks;
    - `ndcg@k`: `sum_{i<=k} rel_i / log2(i + 1)` over the same sum for an
      ideal ranking, which has `min(k, R)` relevant items first.

    Each is averaged over all queries. A query with `R = 0` scores 0 on every
    metric and is counted in `queries_without_relevant`. Tied scores are
    ranked in an unspecified order. When the corpus has fewer than `k`
    rankable items, all of them are ranked.

    Args:
        query_embeddings: array or tensor `(Q, D)`.
        query_labels: `(Q,)` labels (ints, strings, ...).
        corpus_embeddings: array or tensor `(N, D)`.
        corpus_labels: `(N,)` labels.
        nesting_dims: the widths to evaluate, strictly increasing, `<= D`.
        k: int, the ranking depth of recall, mAP and nDCG.
        exclude_self: bool; True when the queries are the corpus (same
            arrays): query `i` is then removed from its own ranking and from
            its `R`.
        chunk_size: int, how many queries are ranked at once. A chunk needs
            about `8 * chunk_size * N` bytes (two float32 score matrices).
            None picks `max(1, 2**24 // N)`, about 128 MiB per chunk.

    Returns:
        A dict `{dim: {"top1": float, "recall@{k}": float, "map@{k}": float,
        "ndcg@{k}": float, "queries_without_relevant": int}}`.

    Raises:
        TypeError: for a `k` or `chunk_size` that is not an int, or an
            `exclude_self` that is not a bool.
        ValueError: for arrays of the wrong rank, NaN or infinite
            embeddings (those of a diverged model), queries and corpus of
            different widths, an empty corpus, labels of the wrong length,
            `k < 1`, widths wider than the embeddings, or `exclude_self`
            with queries or labels that are not those of the corpus.

    Example:

    >>> corpus = np.array([[1.0, 0.0], [0.9, 0.3], [-1.0, 0.2]])
    >>> labels = np.array([0, 0, 1])
    >>> results = keras_mrl.evaluation.retrieval_metrics(
    ...     corpus, query_labels=labels, corpus_embeddings=corpus,
    ...     corpus_labels=labels, nesting_dims=[1, 2], k=1,
    ...     exclude_self=True,
    ... )
    >>> sorted(results[2])
    ['map@1', 'ndcg@1', 'queries_without_relevant', 'recall@1', 'top1']
    >>> round(results[2]["top1"], 3), results[2]["queries_without_relevant"]
    (0.667, 1)
    """
    exclude_self = check_bool(exclude_self, "exclude_self")
    queries, corpus, dims, k, chunk_size = _check_inputs(
        query_embeddings, corpus_embeddings, nesting_dims, k, chunk_size
    )
    query_labels = label_vector(
        query_labels, queries.shape[0], "query_labels", "query_embeddings"
    )
    corpus_labels = label_vector(
        corpus_labels, corpus.shape[0], "corpus_labels", "corpus_embeddings"
    )
    if exclude_self:
        _check_same(queries, corpus, query_labels, corpus_labels)
    classes, counts = np.unique(corpus_labels, return_counts=True)
    position = np.clip(
        np.searchsorted(classes, query_labels), 0, len(classes) - 1
    )
    num_relevant = np.where(
        classes[position] == query_labels, counts[position], 0
    )
    if exclude_self:
        num_relevant = num_relevant - 1

    def chunk_relevance(start, stop):
        labels = query_labels[start:stop, None]
        return lambda top: corpus_labels[top] == labels

    return _evaluate(
        queries,
        corpus,
        dims,
        k,
        chunk_size,
        num_relevant,
        chunk_relevance,
        exclude_self=exclude_self,
    )


def retrieval_metrics_from_relevance(
    query_embeddings,
    *,
    corpus_embeddings,
    relevant_ids,
    nesting_dims,
    k=10,
    chunk_size=None,
):
    """Retrieval metrics at each nested width, from explicit relevance.

    The same metrics, ranking and chunking as
    `keras_mrl.evaluation.retrieval_metrics`, but query `i`'s relevant
    corpus items are listed in `relevant_ids[i]` instead of being implied by
    labels (e.g. a query and the passages that answer it). Repeated ids
    count once. A query with no relevant id scores 0 and is counted in
    `queries_without_relevant`.

    Args:
        query_embeddings: array or tensor `(Q, D)`.
        corpus_embeddings: array or tensor `(N, D)`.
        relevant_ids: a sequence of `Q` collections of corpus row indices in
            `[0, N)`.
        nesting_dims: the widths to evaluate, strictly increasing, `<= D`.
        k: int, the ranking depth of recall, mAP and nDCG.
        chunk_size: int, how many queries are ranked at once; None picks
            `max(1, 2**24 // N)`. A chunk also holds a `(chunk_size, N)` bool
            relevance mask.

    Returns:
        A dict `{dim: {"top1": float, "recall@{k}": float, "map@{k}": float,
        "ndcg@{k}": float, "queries_without_relevant": int}}`.

    Raises:
        TypeError: for a `k` or `chunk_size` that is not an int.
        ValueError: for the bad inputs of `retrieval_metrics` (NaN or
            infinite embeddings included), a
            `relevant_ids` of the wrong length, or an id outside `[0, N)`.

    Example:

    >>> queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> corpus = np.array([[1.0, 0.1], [0.1, 1.0], [0.7, 0.7]])
    >>> results = keras_mrl.evaluation.retrieval_metrics_from_relevance(
    ...     queries, corpus_embeddings=corpus, relevant_ids=[[0], [1, 2]],
    ...     nesting_dims=[2], k=2,
    ... )
    >>> results[2]["recall@2"]
    1.0
    """
    queries, corpus, dims, k, chunk_size = _check_inputs(
        query_embeddings, corpus_embeddings, nesting_dims, k, chunk_size
    )
    num_queries, num_items = queries.shape[0], corpus.shape[0]
    if len(relevant_ids) != num_queries:
        raise ValueError(
            "`relevant_ids` must hold one collection of corpus ids per query, "
            f"i.e. {num_queries} for `query_embeddings` of shape "
            f"{queries.shape}, got {len(relevant_ids)}."
        )
    id_sets = []
    for i, ids in enumerate(relevant_ids):
        ids = np.unique(np.asarray(list(ids)))
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(
                f"`relevant_ids[{i}]` must hold integer corpus ids, got "
                f"{ids.tolist()}."
            )
        if ids.size and (ids[0] < 0 or ids[-1] >= num_items):
            raise ValueError(
                f"`relevant_ids[{i}]` holds ids outside [0, {num_items}) for "
                f"`corpus_embeddings` of shape {corpus.shape}: {ids.tolist()}."
            )
        id_sets.append(ids.astype(np.int64))
    num_relevant = np.array([ids.size for ids in id_sets], dtype=np.int64)

    def chunk_relevance(start, stop):
        # One mask per chunk serves every width.
        mask = np.zeros((stop - start, num_items), dtype=bool)
        for row, ids in enumerate(id_sets[start:stop]):
            mask[row, ids] = True
        return lambda top: np.take_along_axis(mask, top, axis=1)

    return _evaluate(
        queries, corpus, dims, k, chunk_size, num_relevant, chunk_relevance
    )
