"""The first stage of a funnel: a search of the whole corpus at one width.

Each backend stores the first width's prefixes and answers `search`; the
index above it does not know which one serves. A backend is one more
class and one more branch of `make_first_stage`; the quantized ones (int8
and binary codes) live in `_quantized_stage.py`.
"""

import abc
import threading

import numpy as np

from keras_mrl._numpy_search import top_k

# The `index` kinds a FunnelIndex takes; the numpy backend serves them all.
INDEX_KINDS = ("flat", "hnsw")

# Cap on the score block of one chunk of queries: large enough that BLAS
# runs long matrix products, small enough not to double the index in memory.
_SCORE_BYTES = 1 << 26

# faiss 1.15 scores fewer than `distance_compute_blas_threshold` (128,000)
# queries one at a time. For a short prefix and a shortlist of hundreds its
# BLAS path measured 1.4-3x faster (32-d, 200,000 rows, 256 queries). The
# setting is global to faiss, so a flat search lowers it to faiss' earlier
# default only for its own duration, under a lock.
_FAISS_BLAS_THRESHOLD = 20
_faiss_settings_lock = threading.Lock()


def import_faiss():
    """Returns the faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class FirstStage(abc.ABC):
    """Stores the first width's prefixes and searches all of them.

    Attributes:
        faiss: the faiss module when the backend runs on faiss, else None;
            the reranking stages then score on faiss too.
    """

    faiss = None

    @abc.abstractmethod
    def add(self, vectors):
        """Appends `(M, d)` float32 prefixes; their ids continue."""

    @abc.abstractmethod
    def search(self, queries, count):
        """Returns `(scores, ids)`, each `(Q, count)`, best first.

        `count` is at most the number of vectors stored. An approximate
        backend may find fewer: it pads each row with id -1 and score -inf.
        """

    @abc.abstractmethod
    def vectors(self):
        """Returns the stored prefixes, `(N, d)` float32, for saving."""

    def short_answer_advice(self, count):
        """What to change when a search of `count` finds fewer; a str."""
        return ""

    def state(self):
        """Returns bytes to save beside `vectors()`, or None.

        They come back as `make_first_stage(..., state=...)` on load, for
        a structure costly to rebuild from the vectors (an HNSW graph).
        """
        return None


class NumpyFirstStage(FirstStage):
    """Exact inner-product search by chunked matrix products.

    Serves every `index` kind when faiss is missing or off. Scores come
    from one BLAS product per chunk of queries, the top `count` from the
    pruned `top_k`.
    """

    def __init__(self, vectors):
        self._vectors = np.ascontiguousarray(vectors)

    def add(self, vectors):
        self._vectors = np.concatenate([self._vectors, vectors])

    def search(self, queries, count):
        rows = max(1, _SCORE_BYTES // (4 * len(self._vectors)))
        scores = np.empty((len(queries), count), np.float32)
        ids = np.empty((len(queries), count), np.int64)
        for start in range(0, len(queries), rows):
            chunk = slice(start, start + rows)
            scores[chunk], ids[chunk] = top_k(
                queries[chunk] @ self._vectors.T, count
            )
        return scores, ids

    def vectors(self):
        return self._vectors


class _FaissFirstStage(FirstStage):
    """What the faiss backends share: the index owns the only copy."""

    def __init__(self, faiss, index):
        self.faiss = faiss
        self.index = index

    def add(self, vectors):
        self.index.add(np.ascontiguousarray(vectors))

    def search(self, queries, count):
        scores, ids = self._search(np.ascontiguousarray(queries), count)
        # faiss pads a short answer with id -1 and score -FLT_MAX.
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    @abc.abstractmethod
    def _search(self, queries, count):
        """faiss' own `(scores, ids)`."""

    def vectors(self):
        return self.index.reconstruct_n(0, self.index.ntotal)


class FaissFlatFirstStage(_FaissFirstStage):
    """Exact search on a faiss `IndexFlatIP`, rebuilt from its vectors."""

    def __init__(self, faiss, vectors):
        super().__init__(faiss, faiss.IndexFlatIP(vectors.shape[1]))
        self.add(vectors)

    def _search(self, queries, count):
        with _faiss_settings_lock:
            saved = self.faiss.cvar.distance_compute_blas_threshold
            self.faiss.cvar.distance_compute_blas_threshold = min(
                saved, _FAISS_BLAS_THRESHOLD
            )
            try:
                return self.index.search(queries, count)
            finally:
                self.faiss.cvar.distance_compute_blas_threshold = saved


class FaissHNSWFirstStage(_FaissFirstStage):
    """Approximate search on a faiss `IndexHNSWFlat` (inner product).

    Args:
        faiss: the faiss module.
        vectors: `(N, d)` float32 prefixes.
        m, ef_construction: the graph's `M` and `efConstruction`.
        ef_search: the search beam `efSearch`, or None for as wide as the
            number of results asked: faiss does not widen it by itself.
        state: bytes of `state()`, the saved graph of these vectors.
    """

    def __init__(
        self, faiss, vectors, *, m, ef_construction, ef_search, state=None
    ):
        self.ef_search = ef_search
        if state is None:
            index = faiss.IndexHNSWFlat(
                vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT
            )
            index.hnsw.efConstruction = ef_construction
            super().__init__(faiss, index)
            self.add(vectors)
            return
        super().__init__(
            faiss,
            deserialize_graph(
                faiss.deserialize_index,
                state,
                faiss.IndexHNSWFlat,
                vectors.shape,
                "prefixes",
            ),
        )

    def _search(self, queries, count):
        params = self.faiss.SearchParametersHNSW()
        params.efSearch = self.ef_search or count
        return self.index.search(queries, count, params=params)

    def short_answer_advice(self, count):
        return (
            f"Its HNSW beam ef_search={self.ef_search or count} is too "
            "narrow: pass a larger `ef_search` (None makes it as wide as "
            f"the {count} candidates asked), or build the graph with a "
            "larger `hnsw_m` or `ef_construction`."
        )

    def state(self):
        # A graph is costly to rebuild, so its bytes are kept.
        return self.faiss.serialize_index(self.index)


def deserialize_graph(read, state, kind, shape, what):
    """A saved faiss graph, checked against the data saved beside it.

    Args:
        read: faiss' deserializer (`deserialize_index` or its binary twin).
        state: the saved bytes.
        kind: the faiss index class the graph must be.
        shape: `(n, d)`, the rows and dimensions (bits) it must hold.
        what: the data saved beside it, for the messages.
    """
    try:
        index = read(np.asarray(state, np.uint8))
    except RuntimeError as error:
        raise ValueError(
            f"The saved {kind.__name__} graph cannot be read by faiss: {error}"
        ) from None
    n, d = shape
    if not isinstance(index, kind) or (index.d, index.ntotal) != (d, n):
        raise ValueError(
            f"The saved faiss index ({type(index).__name__}, {index.ntotal} "
            f"x {index.d}) is not the {kind.__name__} of the {n} x {d} "
            f"first-stage {what} saved beside it."
        )
    return index


def resolve_faiss(use_faiss):
    """The faiss module `use_faiss` asks for, or None for numpy.

    Raises:
        ImportError: for `use_faiss=True` without faiss installed.
    """
    faiss = None if use_faiss is False else import_faiss()
    if faiss is None and use_faiss:
        raise ImportError(
            "FunnelIndex(use_faiss=True) needs faiss: "
            "`pip install keras-mrl[retrieval]` (faiss-cpu), or "
            "pass use_faiss=None to fall back to numpy."
        )
    return faiss


def make_first_stage(
    vectors, *, kind, use_faiss, hnsw_m, ef_construction, ef_search, state=None
):
    """Returns the backend for `kind` and `use_faiss` over `vectors`.

    Args:
        vectors: `(N, d)` float32 first-width prefixes, N >= 1.
        kind: one of `INDEX_KINDS`.
        use_faiss: None for faiss when installed, True to require it,
            False for numpy.
        hnsw_m, ef_construction, ef_search: the HNSW parameters.
        state: a saved `state()`, used only by the backend that wrote it.
    """
    return pick_backend(
        vectors,
        resolve_faiss(use_faiss),
        kind,
        (NumpyFirstStage, FaissFlatFirstStage, FaissHNSWFirstStage),
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        state=state,
    )


def pick_backend(
    vectors, faiss, kind, backends, *, hnsw_m, ef_construction, ef_search, state
):
    """Builds the numpy, faiss flat or faiss HNSW class of `backends`.

    Args:
        vectors: what the stage stores.
        faiss: the faiss module, or None for numpy.
        kind: "flat" or "hnsw".
        backends: `(numpy class, faiss flat class, faiss HNSW class)`.
        hnsw_m, ef_construction, ef_search, state: the HNSW arguments.
    """
    numpy_backend, flat_backend, hnsw_backend = backends
    if faiss is None:
        return numpy_backend(vectors)
    if kind == "hnsw":
        return hnsw_backend(
            faiss,
            vectors,
            m=hnsw_m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            state=state,
        )
    return flat_backend(faiss, vectors)
