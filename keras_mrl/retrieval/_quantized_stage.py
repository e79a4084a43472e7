"""First stages that search int8 or binary codes of the first prefix.

- int8: faiss `IndexScalarQuantizer` (`QT_8bit`, inner product) holding
  the very codes of `keras_mrl.serving.quantize` (faiss' own encoder rounds
  a few values the other way), or numpy; both score a float query against
  the decoded codes (`_codes.int8_query_terms`).
- binary: faiss `IndexBinaryFlat` (exact) or `IndexBinaryHNSW`, or a numpy
  popcount scan. A binary stage's score is `width - 2 * hamming`, the inner
  product of the prefixes' sign vectors (+1 / -1), so higher is better as
  at every other stage.

`make_first_stage` here serves every precision; the float32 backends stay
in `_first_stage.py`.
"""

import numpy as np

from keras_mrl._numpy_search import top_k
from keras_mrl.retrieval import _first_stage
from keras_mrl.retrieval._codes import int8_query_terms
from keras_mrl.serving._quantize import hamming


def _blockwise_top_k(num_queries, size, count, scores_of, itemsize=4):
    """Top `count` of `scores_of(start, stop)`, `(Q, stop - start)` blocks
    of corpus rows (of `itemsize` bytes a score), merged block by block:
    the codes are cast or compared one block of rows at a time, for all
    queries at once."""
    rows = max(
        count,
        _first_stage._SCORE_BYTES // (itemsize * max(num_queries, 1)),
    )
    best = ids = None
    for start in range(0, size, rows):
        stop = min(size, start + rows)
        block_scores, block_ids = top_k(scores_of(start, stop), count)
        block_ids += start
        if best is not None:
            block_scores = np.concatenate([best, block_scores], axis=1)
            block_ids = np.concatenate([ids, block_ids], axis=1)
            block_scores, pos = top_k(block_scores, count)
            block_ids = np.take_along_axis(block_ids, pos, axis=1)
        best, ids = block_scores, block_ids
    return best, ids


class NumpyInt8FirstStage(_first_stage.FirstStage):
    """Exact scan of uint8 codes `(N, d)` with their `(2, d)` ranges."""

    def __init__(self, codes, ranges):
        self._codes = np.ascontiguousarray(codes)
        self._ranges = ranges

    def add(self, codes):
        self._codes = np.concatenate([self._codes, codes])

    def search(self, queries, count):
        scaled, offset = int8_query_terms(queries, self._ranges)

        def scores_of(start, stop):
            block = self._codes[start:stop].astype(np.float32)
            return scaled @ block.T + offset[:, None]

        scores, ids = _blockwise_top_k(
            len(queries), len(self._codes), count, scores_of
        )
        return scores.astype(np.float32, copy=False), ids

    def vectors(self):
        return self._codes


class NumpyBinaryFirstStage(_first_stage.FirstStage):
    """Exact Hamming scan of packed bits `(N, d / 8)` by popcount.

    Short codes tie often (8 bits have 9 distances). Among equal distances
    the lowest ids come first, the order of faiss' `IndexBinaryFlat`, so
    that an index saved on one backend and loaded on the other returns
    the same ids.
    """

    def __init__(self, codes):
        self._codes = np.ascontiguousarray(codes)

    def add(self, codes):
        self._codes = np.concatenate([self._codes, codes])

    def search(self, packed_queries, count):
        bits = 8 * self._codes.shape[1]
        size = len(self._codes)

        def keys_of(start, stop):
            # One distinct int64 key per row, larger for fewer differing
            # bits, then for a lower id: no two rows tie.
            matching = bits - hamming(packed_queries, self._codes[start:stop])
            return matching.astype(np.int64) * size + (
                size - 1 - np.arange(start, stop)
            )

        keys, ids = _blockwise_top_k(
            len(packed_queries), size, count, keys_of, itemsize=8
        )
        return (2 * (keys // size) - bits).astype(np.float32), ids

    def vectors(self):
        return self._codes


class FaissInt8FirstStage(_first_stage._FaissFirstStage):
    """Exact scan on a faiss `IndexScalarQuantizer` (`QT_8bit`, inner
    product) whose per-dimension minima and spans are the given ranges."""

    def __init__(self, faiss, codes, ranges):
        d = codes.shape[1]
        index = faiss.IndexScalarQuantizer(
            d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        low, high = ranges
        faiss.copy_array_to_vector(
            np.concatenate([low, high - low]).astype(np.float32),
            index.sq.trained,
        )
        index.is_trained = True
        super().__init__(faiss, index)
        self.add(codes)

    def add(self, codes):
        self.index.add_sa_codes(np.ascontiguousarray(codes))

    def _search(self, queries, count):
        return self.index.search(queries, count)

    def vectors(self):
        codes = self.faiss.vector_to_array(self.index.codes)
        return codes.reshape(self.index.ntotal, self.index.d)


class _FaissBinary:
    """What faiss' binary indexes share: Hamming distances become scores."""

    def search(self, packed_queries, count):
        distances, ids = self._search(
            np.ascontiguousarray(packed_queries), count
        )
        scores = (self.index.d - 2 * distances).astype(np.float32)
        # faiss pads a short answer with id -1.
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    def add(self, codes):
        self.index.add(np.ascontiguousarray(codes))

    def _codes_of(self, flat):
        codes = self.faiss.vector_to_array(flat.xb)
        return codes.reshape(flat.ntotal, flat.code_size)


class FaissBinaryFlatFirstStage(_FaissBinary, _first_stage._FaissFirstStage):
    """Exact Hamming search on a faiss `IndexBinaryFlat`.

    faiss scans the rows in id order and replaces a kept row only by a
    strictly closer one, then sorts by (distance, id): among equal
    distances the lowest ids come first, as in `NumpyBinaryFirstStage`
    (`test_binary_ties_break_by_id_on_faiss_and_numpy` holds faiss to it).
    """

    def __init__(self, faiss, codes):
        index = faiss.IndexBinaryFlat(8 * codes.shape[1])
        super().__init__(faiss, index)
        self.add(codes)

    def _search(self, packed_queries, count):
        return self.index.search(packed_queries, count)

    def vectors(self):
        return self._codes_of(self.index)


class FaissBinaryHNSWFirstStage(_FaissBinary, _first_stage.FaissHNSWFirstStage):
    """Approximate Hamming search on a faiss `IndexBinaryHNSW`.

    Args: those of `FaissHNSWFirstStage`, with packed bits for vectors.
    """

    def __init__(
        self, faiss, codes, *, m, ef_construction, ef_search, state=None
    ):
        self.faiss, self.ef_search = faiss, ef_search
        if state is not None:
            self.index = _first_stage.deserialize_graph(
                faiss.deserialize_index_binary,
                state,
                faiss.IndexBinaryHNSW,
                (len(codes), 8 * codes.shape[1]),
                "bit codes",
            )
            return
        self.index = faiss.IndexBinaryHNSW(8 * codes.shape[1], m)
        self.index.hnsw.efConstruction = ef_construction
        self.add(codes)

    def vectors(self):
        return self._codes_of(
            self.faiss.downcast_IndexBinary(self.index.storage)
        )

    def state(self):
        return self.faiss.serialize_index_binary(self.index)


def make_first_stage(
    vectors,
    *,
    precision,
    ranges,
    kind,
    use_faiss,
    hnsw_m,
    ef_construction,
    ef_search,
    state=None,
):
    """Returns the backend for `precision`, `kind` and `use_faiss`.

    Args:
        vectors: what the stage stores (`_codes.encode`), N >= 1 rows.
        precision: one of `_codes.PRECISIONS`.
        ranges: the `(2, d)` int8 ranges, or None.
        kind, use_faiss, hnsw_m, ef_construction, ef_search, state: as
            `_first_stage.make_first_stage` takes them.
    """
    if precision == "float32":
        return _first_stage.make_first_stage(
            vectors,
            kind=kind,
            use_faiss=use_faiss,
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            state=state,
        )
    faiss = _first_stage.resolve_faiss(use_faiss)
    if precision == "int8":
        if faiss is None:
            return NumpyInt8FirstStage(vectors, ranges)
        return FaissInt8FirstStage(faiss, vectors, ranges)
    return _first_stage.pick_backend(
        vectors,
        faiss,
        kind,
        (
            NumpyBinaryFirstStage,
            FaissBinaryFlatFirstStage,
            FaissBinaryHNSWFirstStage,
        ),
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        state=state,
    )
