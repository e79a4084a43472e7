"""Funnel retrieval over Matryoshka embeddings: shortlist narrow, rerank wide.

This is the adaptive retrieval of Matryoshka Representation Learning
(Kusupati et al., 2022): a cheap search at a short prefix picks a shortlist,
and each later stage rescores only the survivors at a wider prefix. The
module is numpy-only; faiss, when installed, runs the first stage.
"""

import contextlib
import json
import numbers
import os
import threading

import numpy as np

from keras_mrl._numpy_search import l2_normalize
from keras_mrl._numpy_search import top_k
from keras_mrl._validation import check_positive_int
from keras_mrl.nesting import validate_nesting_dims

_INDEX_KINDS = ("flat", "hnsw")
# Caps on the temporaries of one chunk of queries: large enough that BLAS
# runs long matrix products, small enough not to double the index in memory.
_SCORE_BYTES = 1 << 26
_GATHER_BYTES = 1 << 26

# faiss 1.15 scores fewer than `distance_compute_blas_threshold` (128,000)
# queries one at a time. For a short prefix and a shortlist of hundreds its
# BLAS path measured 1.4-3x faster (32-d, 200,000 rows, 256 queries). The
# setting is global to faiss, so a flat search lowers it to faiss' earlier
# default only for its own duration, under a lock.
_FAISS_BLAS_THRESHOLD = 20
_faiss_settings_lock = threading.Lock()


@contextlib.contextmanager
def _faiss_blas_search(faiss):
    with _faiss_settings_lock:
        saved = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = min(
            saved, _FAISS_BLAS_THRESHOLD
        )
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = saved


def _import_faiss():
    """Returns the faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _as_matrix(x, name, width=None):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array (num_vectors, width), got shape "
            f"{x.shape}."
        )
    if width is not None and x.shape[1] != width:
        raise ValueError(
            f"`{name}` has width {x.shape[1]}, but the corpus has width "
            f"{width}. Pass full-width embeddings from the same model; the "
            "index cuts the prefixes itself."
        )
    if not np.isfinite(x).all():
        raise ValueError(f"`{name}` holds NaN or infinite values.")
    return x


class _NumpyFirstStage:
    """Exact inner-product search by chunked matrix products.

    The first stage when faiss is missing or `use_faiss=False`: exact for
    every `index` kind. Scores come from one BLAS product per chunk of
    queries, the top `s` from the pruned `top_k`.
    """

    def __init__(self, vectors):
        self.vectors = np.ascontiguousarray(vectors)

    def add(self, vectors):
        self.vectors = np.concatenate([self.vectors, vectors])

    def search(self, queries, s):
        n = len(self.vectors)
        rows = max(1, _SCORE_BYTES // (4 * n))
        scores = np.empty((len(queries), s), np.float32)
        ids = np.empty((len(queries), s), np.int64)
        for start in range(0, len(queries), rows):
            chunk = slice(start, start + rows)
            scores[chunk], ids[chunk] = top_k(
                queries[chunk] @ self.vectors.T, s
            )
        return scores, ids

    def stored_vectors(self):
        return self.vectors

    def serialize(self):
        return None


class _FaissFirstStage:
    """The first stage on a faiss IndexFlatIP or IndexHNSWFlat."""

    def __init__(self, faiss, vectors, index, hnsw_m, ef_construction,
                 ef_search, serialized=None):
        dim = vectors.shape[1]
        self.faiss = faiss
        self.kind = index
        if serialized is not None:
            self.index = faiss.deserialize_index(serialized)
        elif index == "flat":
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.index = faiss.IndexHNSWFlat(
                dim, hnsw_m, faiss.METRIC_INNER_PRODUCT
            )
            self.index.hnsw.efConstruction = ef_construction
        self.ef_search = ef_search
        if serialized is None:
            self.index.add(np.ascontiguousarray(vectors))

    def add(self, vectors):
        self.index.add(np.ascontiguousarray(vectors))

    def search(self, queries, s):
        queries = np.ascontiguousarray(queries)
        if self.kind == "hnsw":
            # faiss does not widen the beam to the `s` results asked for.
            params = self.faiss.SearchParametersHNSW()
            params.efSearch = self.ef_search or s
            scores, ids = self.index.search(queries, s, params=params)
        else:
            with _faiss_blas_search(self.faiss):
                scores, ids = self.index.search(queries, s)
        # faiss pads a short answer with id -1 and score -FLT_MAX.
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    def stored_vectors(self):
        # The faiss index owns the only copy of the first-stage prefixes.
        return self.index.reconstruct_n(0, self.index.ntotal)

    def serialize(self):
        # A flat index rebuilds from its vectors in one copy; an HNSW graph
        # is costly to rebuild, so its bytes are kept.
        if self.kind == "flat":
            return None
        return self.faiss.serialize_index(self.index)


class FunnelIndex:
    """Funnel search over the nested prefixes of Matryoshka embeddings.

    Stage 0 searches the whole corpus at width `dims[0]` and keeps
    `shortlist[0]` candidates per query. Each later stage `i` rescores the
    survivors at width `dims[i]` and keeps `shortlist[i]`; the last stage
    keeps `k`. With `normalize=True` the similarity at every width is the
    cosine of the re-normalised prefixes, `<q[:d], x[:d]> / (|q[:d]| |x[:d]|)`;
    with `normalize=False` it is the raw inner product of the prefixes.

    The first stage runs on faiss when it is installed (the `retrieval`
    extra, `pip install keras-mrl[retrieval]`): `index="flat"` is an exact
    `IndexFlatIP`, `index="hnsw"` an approximate `IndexHNSWFlat` with
    `METRIC_INNER_PRODUCT`. Without faiss, or with `use_faiss=False`, a numpy
    first stage serves instead: an exact chunked matrix product whatever
    `index` says. Reranking scores each query's candidates at the stage's
    stored prefix: with faiss in place (`fvec_inner_products_by_idx`),
    without it by gathering them into `(queries, candidates, width)` blocks
    scored by one batched matrix product per chunk of queries.

    The index stores one normalised prefix copy per width (the faiss index
    holds the `dims[0]` one), so it costs `4 * sum(dims)` bytes per vector
    plus the HNSW graph. A shortlist longer than the corpus keeps the whole
    corpus. An HNSW stage that finds fewer than `shortlist[0]` neighbours
    pads its answer with id -1 and score -inf, which every later stage keeps
    last.

    Args:
        corpus_embeddings: array `(N, D)` of full-width embeddings.
        dims: strictly increasing widths, at most `D`, one per stage.
        shortlist: `len(dims) - 1` candidate counts, the number each stage
            but the last keeps; each at least the next (non-increasing).
            `search(k)` needs `shortlist[-1] >= k`.
        index: `"flat"` (exact) or `"hnsw"` (approximate), the first stage.
        normalize: bool, cosine on re-normalised prefixes when True, raw
            inner product when False.
        hnsw_m: int, HNSW neighbours per node (faiss `M`); 16, hnswlib's
            default, is ample for the short prefix a first stage searches.
        ef_construction: int, HNSW build beam width (`efConstruction`);
            40 is faiss' default.
        ef_search: optional int, HNSW search beam width (`efSearch`); None
            for the number of candidates stage 0 returns (`shortlist[0]`,
            or `k` for a one-stage index). faiss does not widen the beam to
            the number of results, so a narrower one loses recall.
        use_faiss: None to use faiss when installed, True to require it,
            False for the numpy first stage.

    Example:

    >>> corpus = np.random.default_rng(0).normal(size=(500, 64))
    >>> index = keras_mrl.retrieval.FunnelIndex(
    ...     corpus, dims=(16, 64), shortlist=(50,)
    ... )
    >>> scores, ids = index.search(corpus[:3], k=5)
    >>> ids.shape, ids[:, 0].tolist()
    ((3, 5), [0, 1, 2])
    """

    def __init__(
        self,
        corpus_embeddings,
        dims,
        shortlist,
        index="flat",
        normalize=True,
        hnsw_m=16,
        ef_construction=40,
        ef_search=None,
        use_faiss=None,
    ):
        corpus = _as_matrix(corpus_embeddings, "corpus_embeddings")
        if len(corpus) == 0:
            raise ValueError("`corpus_embeddings` must hold at least 1 row.")
        self._configure(
            corpus.shape[1], dims, shortlist, index, normalize, hnsw_m,
            ef_construction, ef_search, use_faiss,
        )
        prefixes = self._prefixes(corpus)
        self._views = prefixes[1:]
        self._first = self._make_first_stage(prefixes[0])
        self._size = len(corpus)

    def _configure(self, width, dims, shortlist, index, normalize, hnsw_m,
                   ef_construction, ef_search, use_faiss):
        self.width = width
        self.dims = validate_nesting_dims(dims, max_dim=width, name="dims")
        if isinstance(shortlist, numbers.Integral):
            shortlist = (shortlist,)
        self.shortlist = tuple(
            check_positive_int(s, "shortlist") for s in shortlist
        )
        if len(self.shortlist) != len(self.dims) - 1:
            raise ValueError(
                f"`shortlist` {list(self.shortlist)} must hold one count per "
                f"stage but the last: {len(self.dims) - 1} for dims "
                f"{list(self.dims)}."
            )
        for a, b in zip(self.shortlist, self.shortlist[1:]):
            if b > a:
                raise ValueError(
                    f"`shortlist` {list(self.shortlist)} must not grow from "
                    f"stage to stage ({b} follows {a}): a stage can only "
                    "keep candidates the stage before it kept."
                )
        if index not in _INDEX_KINDS:
            raise ValueError(
                f"`index` must be one of {_INDEX_KINDS}, got {index!r}."
            )
        self.index = index
        self.normalize = bool(normalize)
        self.hnsw_m = check_positive_int(hnsw_m, "hnsw_m")
        self.ef_construction = check_positive_int(
            ef_construction, "ef_construction"
        )
        self.ef_search = (
            None if ef_search is None
            else check_positive_int(ef_search, "ef_search")
        )
        if use_faiss not in (None, True, False):
            raise ValueError(
                f"`use_faiss` must be None, True or False, got {use_faiss!r}."
            )
        self.use_faiss = use_faiss

    def _prefixes(self, x):
        if self.normalize:
            # Normalising the strided view writes the only contiguous copy.
            return [l2_normalize(x[:, :d]) for d in self.dims]
        return [np.ascontiguousarray(x[:, :d]) for d in self.dims]

    def _make_first_stage(self, vectors, serialized=None):
        # `serialized` (a saved HNSW graph) is used only when faiss is.
        faiss = None if self.use_faiss is False else _import_faiss()
        if faiss is None:
            if self.use_faiss:
                raise ImportError(
                    "FunnelIndex(use_faiss=True) needs faiss: "
                    "`pip install keras-mrl[retrieval]` (faiss-cpu), or "
                    "pass use_faiss=None to fall back to numpy."
                )
            return _NumpyFirstStage(vectors)
        return _FaissFirstStage(
            faiss, vectors, self.index, self.hnsw_m, self.ef_construction,
            self.ef_search, serialized,
        )

    @property
    def uses_faiss(self):
        """Whether the first stage runs on faiss (else on numpy)."""
        return isinstance(self._first, _FaissFirstStage)

    def __len__(self):
        return self._size

    def add(self, embeddings):
        """Appends full-width embeddings; their ids continue from `len(self)`.

        Each width's prefix array is reallocated, so add in large batches.

        Args:
            embeddings: array `(M, D)` with the corpus width `D`.
        """
        new = _as_matrix(embeddings, "embeddings", width=self.width)
        if len(new) == 0:
            return
        prefixes = self._prefixes(new)
        self._first.add(prefixes[0])
        self._views = [
            np.concatenate([view, p])
            for view, p in zip(self._views, prefixes[1:])
        ]
        self._size += len(new)

    def search(self, queries, k):
        """Returns the `k` best corpus vectors of each query, best first.

        Args:
            queries: array `(Q, D)` of full-width query embeddings.
            k: int, how many results per query, at most `len(self)` and
                `shortlist[-1]`.

        Returns:
            `(scores, ids)`: float32 and int64 arrays of shape `(Q, k)`; the
            scores are those of the last stage, at width `dims[-1]`.
        """
        queries = _as_matrix(queries, "queries", width=self.width)
        k = check_positive_int(k, "k")
        if k > self._size:
            raise ValueError(
                f"`k`={k} exceeds the corpus size {self._size}. Ask for at "
                f"most {self._size} results."
            )
        if self.shortlist and self.shortlist[-1] < k:
            raise ValueError(
                f"`k`={k} exceeds the last shortlist "
                f"{self.shortlist[-1]} of {list(self.shortlist)}: the last "
                "stage cannot keep more candidates than it is given. Use "
                f"k <= {self.shortlist[-1]} or a longer shortlist."
            )
        keeps = [min(s, self._size) for s in self.shortlist] + [k]
        prefixes = self._prefixes(queries)
        scores, ids = self._first.search(prefixes[0], keeps[0])
        faiss = self._first.faiss if self.uses_faiss else None
        for view, q, keep in zip(self._views, prefixes[1:], keeps[1:]):
            scores, ids = _rerank(view, q, ids, keep, faiss)
        return scores, ids

    def get_config(self):
        """Returns the constructor arguments, except the corpus, as a dict."""
        return {
            "dims": list(self.dims),
            "shortlist": list(self.shortlist),
            "index": self.index,
            "normalize": self.normalize,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "use_faiss": self.use_faiss,
        }

    def save(self, path):
        """Writes the index to one numpy `.npz` file.

        The file holds the configuration and every width's prefix array; an
        HNSW first stage on faiss also stores its graph (faiss's
        `serialize_index`), so loading does not rebuild it. A flat first
        stage is rebuilt from its prefixes on load, which is one copy.

        Args:
            path: the file path; `.npz` is appended when it does not end
                so, as `np.savez` does.

        Returns:
            The path written, a str.
        """
        arrays = {
            f"prefix_{d}": view for d, view in zip(self.dims[1:], self._views)
        }
        arrays[f"prefix_{self.dims[0]}"] = self._first.stored_vectors()
        graph = self._first.serialize()
        if graph is not None:
            arrays["faiss_index"] = graph
        config = dict(self.get_config(), width=self.width, size=self._size)
        path = _npz_path(path)
        np.savez(path, config=np.array(json.dumps(config)), **arrays)
        return path

    @classmethod
    def load(cls, path, use_faiss=None):
        """Reads an index written by `save`.

        Args:
            path: the file, or the path given to `save`: when no file has
                that name and it does not end in `.npz`, `.npz` is appended,
                as `save` does.
            use_faiss: overrides the saved choice when not None. A saved
                HNSW graph is used when faiss is; without faiss the numpy
                first stage serves.

        Returns:
            A `FunnelIndex` that answers as the saved one did.
        """
        path = os.fsdecode(path)
        if not os.path.exists(path):
            path = _npz_path(path)
        with np.load(path, allow_pickle=False) as data:
            config = json.loads(str(data["config"]))
            width, size = config.pop("width"), config.pop("size")
            if use_faiss is not None:
                config["use_faiss"] = use_faiss
            obj = cls.__new__(cls)
            obj._configure(width, **config)
            views = [data[f"prefix_{d}"] for d in obj.dims]
            graph = data["faiss_index"] if "faiss_index" in data else None
        obj._views = views[1:]
        obj._first = obj._make_first_stage(views[0], graph)
        obj._size = size
        return obj


def _npz_path(path):
    """`path` as a str, with `.npz` appended when missing, as `np.savez`."""
    path = os.fsdecode(path)
    return path if path.endswith(".npz") else path + ".npz"


def _rerank(view, queries, ids, keep, faiss=None):
    """Rescores each query's candidates at `view`'s width; keeps `keep`.

    With faiss, `fvec_inner_products_by_idx` reads the candidates' rows in
    place, in parallel over queries. numpy must first gather `view[ids]`
    into `(chunk, candidates, width)` blocks, then scores each with one
    batched matrix product; the copy makes it about 4x slower.
    """
    num_queries, candidates = ids.shape
    if faiss is not None:
        scores = np.empty((num_queries, candidates), np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        # A padding id (-1) scores -inf.
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(scores), faiss.swig_ptr(queries),
            faiss.swig_ptr(view), faiss.swig_ptr(ids), view.shape[1],
            num_queries, candidates,
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
        scores = np.matmul(view[cand], queries[chunk, :, None])[..., 0]
        scores[cand < 0] = -np.inf
        out_scores[chunk], pos = top_k(scores, keep)
        out_ids[chunk] = np.take_along_axis(cand, pos, axis=-1)
    return out_scores, out_ids
