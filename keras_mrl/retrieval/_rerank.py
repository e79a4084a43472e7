"""The later stages of a funnel: rescore each query's candidates, keep some."""

import numpy as np

from keras_mrl._numpy_search import top_k
from keras_mrl.retrieval._codes import int8_query_terms

# Cap on the `(queries, candidates, width)` block numpy gathers per chunk:
# large enough for long batched products, small enough not to double the
# index in memory.
_GATHER_BYTES = 1 << 26


def rerank(view, queries, ids, keep, faiss=None, ranges=None):
    """Rescores each query's candidates at `view`'s width; keeps `keep`.

    With faiss, `fvec_inner_products_by_idx` reads the candidates' rows in
    place, in parallel over queries. numpy must first gather `view[ids]`
    into `(chunk, candidates, width)` blocks, then scores each with one
    batched matrix product; the copy makes it about 4x slower. An int8
    view (`ranges` given) is always scored so, on its codes cast to float:
    faiss has no by-index scorer for them.

    Args:
        view: `(N, width)` float32 prefixes of the corpus, or their uint8
            codes when `ranges` is given.
        queries: `(Q, width)` float32 prefixes of the queries.
        ids: `(Q, candidates)` int64 candidate rows; -1 pads a row whose
            first stage found fewer, and scores -inf, so it stays last.
        keep: how many candidates to keep, at most `candidates`.
        faiss: the faiss module to score with, or None for numpy.
        ranges: the `(2, width)` int8 ranges of a view of codes, or None.

    Returns:
        `(scores, ids)`, each `(Q, keep)`, best first.
    """
    num_queries, candidates = ids.shape
    offset = np.zeros(num_queries, np.float32)
    if ranges is not None:
        queries, offset = int8_query_terms(queries, ranges)
        faiss = None
    if faiss is not None:
        scores = np.empty((num_queries, candidates), np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        # A padding id (-1) scores -inf.
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(scores),
            faiss.swig_ptr(queries),
            faiss.swig_ptr(view),
            faiss.swig_ptr(ids),
            view.shape[1],
            num_queries,
            candidates,
        )
        scores, pos = top_k(scores, keep)
        return scores, np.take_along_axis(ids, pos, axis=-1)
    rows = max(1, _GATHER_BYTES // (4 * candidates * view.shape[1]))
    out_scores = np.empty((num_queries, keep), np.float32)
    out_ids = np.empty((num_queries, keep), np.int64)
    for start in range(0, num_queries, rows):
        chunk = slice(start, start + rows)
        cand = ids[chunk]
        # Padding ids (-1) read the last row; their score is masked below.
        block = view[cand].astype(np.float32, copy=False)
        scores = np.matmul(block, queries[chunk, :, None])[..., 0]
        scores += offset[chunk, None]
        scores[cand < 0] = -np.inf
        out_scores[chunk], pos = top_k(scores, keep)
        out_ids[chunk] = np.take_along_axis(cand, pos, axis=-1)
    return out_scores, out_ids
