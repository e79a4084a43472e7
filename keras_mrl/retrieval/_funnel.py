"""FunnelIndex: the stages of a funnel search, its checks and its file."""

import numbers

import numpy as np

from keras_mrl._numpy_search import l2_normalize
from keras_mrl._validation import check_bool
from keras_mrl._validation import check_choice
from keras_mrl._validation import check_finite
from keras_mrl._validation import check_optional_bool
from keras_mrl._validation import check_optional_positive_int
from keras_mrl._validation import check_positive_int
from keras_mrl._validation import to_numpy
from keras_mrl._validation import validate_nesting_dims
from keras_mrl.retrieval import _index_file
from keras_mrl.retrieval._codes import bytes_per_vector
from keras_mrl.retrieval._codes import check_precisions
from keras_mrl.retrieval._codes import encode
from keras_mrl.retrieval._codes import measure_ranges
from keras_mrl.retrieval._first_stage import INDEX_KINDS
from keras_mrl.retrieval._quantized_stage import make_first_stage
from keras_mrl.retrieval._rerank import rerank

_CONFIG_KEYS = (
    "stage_dims",
    "shortlist",
    "precisions",
    "index",
    "normalize",
    "hnsw_m",
    "ef_construction",
    "ef_search",
    "use_faiss",
)


def _as_matrix(x, name, width=None):
    x = to_numpy(x).astype(np.float32, copy=False)
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
    return check_finite(x, name)


def _check_shortlist(shortlist, stage_dims):
    """Returns `shortlist` as a tuple of counts that fits `stage_dims`."""
    stages = len(stage_dims) - 1
    if isinstance(shortlist, numbers.Integral):
        shortlist = (shortlist,)
    if isinstance(shortlist, (str, bytes)) or not hasattr(
        shortlist, "__iter__"
    ):
        raise TypeError(
            f"`shortlist` must be a tuple of ints, one per stage but the "
            f"last ({stages} for stage_dims {list(stage_dims)}), e.g. "
            "shortlist=(200,) "
            f"for stage_dims=(32, 1024); a one-stage index takes shortlist=(). "
            f"Got {shortlist!r}."
        )
    counts = tuple(
        check_positive_int(s, f"shortlist[{i}]")
        for i, s in enumerate(shortlist)
    )
    if len(counts) != stages:
        raise ValueError(
            f"`shortlist` {list(counts)} must hold one count per stage but "
            f"the last: {stages} for stage_dims {list(stage_dims)}."
        )
    for a, b in zip(counts, counts[1:]):
        if b > a:
            raise ValueError(
                f"`shortlist` {list(counts)} must not grow from stage to "
                f"stage ({b} follows {a}): a stage can only keep candidates "
                "the stage before it kept."
            )
    return counts


class FunnelIndex:
    """Funnel search over the nested prefixes of Matryoshka embeddings.

    Stage 0 searches the whole corpus at width `stage_dims[0]` and keeps
    `shortlist[0]` candidates per query. Each later stage `i` rescores the
    survivors at width `stage_dims[i]` and keeps `shortlist[i]`; the last stage
    keeps `k`. With `normalize=True` the similarity at every width is the
    cosine of the re-normalised prefixes, `<q[:d], x[:d]> / (|q[:d]| |x[:d]|)`;
    with `normalize=False` it is the raw inner product of the prefixes.

    Each stage stores its prefixes in a precision (`precisions`, float32
    by default). `"int8"` keeps one byte per dimension, the scalar codes of
    `keras_mrl.serving.quantize` over per-dimension ranges measured on
    `calibration` (default: the corpus), and scores the float query against
    the decoded codes. `"binary"` (first stage only, a width that is a
    multiple of 8) keeps the sign bits of the prefix, `stage_dims[0] / 8` bytes,
    and ranks by Hamming distance; its score is `stage_dims[0] - 2 * hamming`,
    the inner product of the sign vectors. The prefix is normalised (or
    not) before it is quantized. `bytes_per_vector` tells what each stage
    costs.

    The first stage runs on faiss when it is installed (the `retrieval`
    extra, `pip install keras-mrl[retrieval]`): `index="flat"` is an exact
    `IndexFlatIP` (float32), `IndexScalarQuantizer` (int8, `QT_8bit`, inner
    product) or `IndexBinaryFlat` (binary); `index="hnsw"` an approximate
    `IndexHNSWFlat` with `METRIC_INNER_PRODUCT` (float32) or
    `IndexBinaryHNSW` (binary). Without faiss, or with `use_faiss=False`, a
    numpy first stage serves instead: an exact scan (a chunked matrix
    product, or popcounts) whatever `index` says. Reranking scores each
    query's candidates at the stage's stored prefix: float32 with faiss in
    place (`fvec_inner_products_by_idx`); without faiss, and for int8
    codes always, by gathering them into `(queries, candidates, width)`
    blocks scored by one batched matrix product per chunk of queries.

    A flat binary first stage ranks equal Hamming distances by id, lowest
    first, on faiss and on numpy alike: the two shortlist the same rows,
    so an index loaded with another `use_faiss` than it was saved with
    returns the same ids. Float scores (float32 and int8 stages) are
    summed in another order on each backend and may differ in the last
    bit, which can order two nearly equal candidates differently; an HNSW
    first stage is approximate on faiss and exact on numpy.

    The index stores one normalised prefix copy per width (the first stage
    holds the `stage_dims[0]` one) in its stage's precision: float32 at every
    stage costs `4 * sum(stage_dims)` bytes per vector, plus the HNSW graph and,
    per int8 stage, its `(2, width)` float32 ranges. A shortlist longer
    than the corpus keeps the whole corpus. An HNSW beam narrower than
    `shortlist[0]` may shortlist fewer candidates, and the later stages
    rerank those it found; a search whose
    first stage finds fewer than `k` for a query raises rather than pad the
    answer.

    Args:
        corpus_embeddings: array `(N, D)` of full-width embeddings, finite.
        stage_dims: strictly increasing widths, at most `D`, one per stage.
        shortlist: `len(stage_dims) - 1` candidate counts, the number each stage
            but the last keeps; each at least the next (non-increasing);
            `()` for a one-stage index. `search` needs `shortlist[-1] >= k`.
        precisions: None for float32 at every stage, or one precision per
            width of `stage_dims`: `"float32"`, `"int8"` or `"binary"` for the
            first stage, `"float32"` or `"int8"` for the later ones.
            `index="hnsw"` takes a float32 or binary first stage.
        calibration: optional array `(C, D)` of full-width embeddings,
            finite, `C >= 2`, whose prefixes' per-dimension minima and
            maxima set the int8 steps; None for the corpus' own (then at
            least 2 rows). Only with an int8 stage.
            It is data, so `get_config` leaves it out; the ranges are saved.
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
    ...     corpus, stage_dims=(16, 64), shortlist=(50,)
    ... )
    >>> scores, ids = index.search(corpus[:3], k=5)
    >>> ids.shape, ids[:, 0].tolist()
    ((3, 5), [0, 1, 2])

    A binary first stage at 32 bits, rescored in float32 at 64:

    >>> small = keras_mrl.retrieval.FunnelIndex(
    ...     corpus, stage_dims=(32, 64), shortlist=(50,),
    ...     precisions=("binary", "float32"),
    ... )
    >>> small.bytes_per_vector, small.total_bytes_per_vector
    ((4, 256), 260)
    >>> small.search(corpus[:3], k=5)[1][:, 0].tolist()
    [0, 1, 2]
    """

    def __init__(
        self,
        corpus_embeddings,
        *,
        stage_dims,
        shortlist,
        precisions=None,
        calibration=None,
        index="flat",
        normalize=True,
        hnsw_m=16,
        ef_construction=40,
        ef_search=None,
        use_faiss=None,
    ):
        # `load` passes the prefixes of a saved index in place of the
        # embeddings, so that a loaded index goes through these checks too.
        saved = corpus_embeddings
        if not isinstance(saved, _index_file.SavedCorpus):
            corpus = _as_matrix(corpus_embeddings, "corpus_embeddings")
            if len(corpus) == 0:
                raise ValueError(
                    "`corpus_embeddings` must hold at least 1 row."
                )
            saved = _index_file.SavedCorpus(corpus.shape[1], None, None, None)
        self.width = saved.width
        self.stage_dims = validate_nesting_dims(
            stage_dims, max_dim=self.width, name="stage_dims"
        )
        self.shortlist = _check_shortlist(shortlist, self.stage_dims)
        self.index = check_choice(index, "index", INDEX_KINDS)
        self.precisions = check_precisions(
            precisions, self.stage_dims, self.index
        )
        self.normalize = check_bool(normalize, "normalize")
        self.hnsw_m = check_positive_int(hnsw_m, "hnsw_m")
        self.ef_construction = check_positive_int(
            ef_construction, "ef_construction"
        )
        self.ef_search = check_optional_positive_int(ef_search, "ef_search")
        self.use_faiss = check_optional_bool(use_faiss, "use_faiss")
        calibration = self._check_calibration(calibration)
        stored, self._ranges = saved.prefixes, saved.ranges
        if stored is None:
            prefixes = self._prefixes(corpus)
            self._ranges = self._measure_ranges(
                prefixes
                if calibration is None
                else self._prefixes(calibration),
                "corpus_embeddings" if calibration is None else "calibration",
            )
            stored = self._encode(prefixes)
        self._views = list(stored[1:])
        self._first = make_first_stage(
            stored[0],
            precision=self.precisions[0],
            ranges=self._ranges[0],
            kind=self.index,
            use_faiss=self.use_faiss,
            hnsw_m=self.hnsw_m,
            ef_construction=self.ef_construction,
            ef_search=self.ef_search,
            state=saved.state,
        )
        self._size = len(stored[0])

    def _check_calibration(self, calibration):
        if calibration is None:
            return None
        if "int8" not in self.precisions:
            raise ValueError(
                "`calibration` sets the steps of int8 stages, and "
                f"precisions {list(self.precisions)} have none: pass "
                "calibration=None, or an int8 stage."
            )
        return _as_matrix(calibration, "calibration", width=self.width)

    def _measure_ranges(self, prefixes, name):
        """The int8 stages' `(2, width)` ranges, measured on `prefixes`.

        Raises:
            ValueError: when fewer than 2 rows, or rows identical at an
                int8 stage's width, leave its ranges empty: every code
                would be the same.
        """
        ranges = []
        for i, (p, precision) in enumerate(zip(prefixes, self.precisions)):
            if precision != "int8":
                ranges.append(None)
                continue
            measured = measure_ranges(p) if len(p) >= 2 else None
            if measured is None or (measured[0] == measured[1]).all():
                raise ValueError(
                    f"The int8 stage {i} (width {self.stage_dims[i]}) measures "
                    f"its per-dimension ranges on `{name}`, whose {len(p)} "
                    "row(s) leave them empty (minimum = maximum in every "
                    "dimension): every code would be the same. Pass a "
                    "`calibration` of at least 2 varied embeddings, e.g. "
                    "a sample of the corpus."
                )
            ranges.append(measured)
        return tuple(ranges)

    def _encode(self, prefixes):
        return [
            encode(p, precision, ranges)
            for p, precision, ranges in zip(
                prefixes, self.precisions, self._ranges
            )
        ]

    def _prefixes(self, x):
        if self.normalize:
            # Normalising the strided view writes the only contiguous copy.
            return [l2_normalize(x[:, :d]) for d in self.stage_dims]
        return [np.ascontiguousarray(x[:, :d]) for d in self.stage_dims]

    @property
    def uses_faiss(self):
        """Whether the first stage runs on faiss (else on numpy)."""
        return self._first.faiss is not None

    @property
    def bytes_per_vector(self):
        """The bytes each stage stores per corpus vector, a tuple of ints.

        `4 * width` for float32, `width` for int8, `width / 8` for binary;
        not counting an HNSW graph's links or an int8 stage's ranges, which
        do not grow with the corpus.
        """
        return tuple(
            bytes_per_vector(precision, d)
            for precision, d in zip(self.precisions, self.stage_dims)
        )

    @property
    def total_bytes_per_vector(self):
        """The bytes all stages store per corpus vector, an int."""
        return sum(self.bytes_per_vector)

    def __len__(self):
        return self._size

    def add(self, embeddings):
        """Appends full-width embeddings; their ids continue from `len(self)`.

        Each width's prefix array is reallocated, so add in large batches.

        Args:
            embeddings: array `(M, D)` with the corpus width `D`, finite.
        """
        new = _as_matrix(embeddings, "embeddings", width=self.width)
        if len(new) == 0:
            return
        stored = self._encode(self._prefixes(new))
        self._first.add(stored[0])
        self._views = [
            np.concatenate([view, p])
            for view, p in zip(self._views, stored[1:])
        ]
        self._size += len(new)

    def search(self, queries, *, k):
        """Returns the `k` best corpus vectors of each query, best first.

        Args:
            queries: array `(Q, D)` of full-width query embeddings, finite.
            k: int, how many results per query, at most `len(self)` and
                `shortlist[-1]`.

        Returns:
            `(scores, ids)`: float32 and int64 arrays of shape `(Q, k)`; the
            scores are those of the last stage, at width `stage_dims[-1]`. Every
            id is a row of the corpus: there is no padding.

        Raises:
            ValueError: for queries of another width, a `k` above the corpus
                size or the last shortlist, or when an HNSW first stage
                finds fewer than `k` candidates for a query (its beam
                `ef_search` is too narrow).
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
        first = prefixes[0]
        if self.precisions[0] == "binary":
            first = encode(first, "binary")
        scores, ids = self._first.search(first, keeps[0])
        self._check_found(ids, k)
        for view, q, keep, ranges in zip(
            self._views, prefixes[1:], keeps[1:], self._ranges[1:]
        ):
            scores, ids = rerank(view, q, ids, keep, self._first.faiss, ranges)
        return scores, ids

    def _check_found(self, ids, k):
        """Raises when a query's first stage found fewer than `k` rows.

        An approximate first stage pads a short answer with id -1; passed
        on, `corpus[-1]` would silently read the last row.
        """
        found = np.count_nonzero(ids >= 0, axis=1)
        if not len(found) or found.min() >= k:
            return
        query = int(np.argmin(found))
        message = (
            f"The first stage found only {found[query]} of the "
            f"{ids.shape[1]} candidates asked for query {query}, fewer than "
            f"k={k}, so the answer would be padded with id -1. "
        )
        advice = self._first.short_answer_advice(ids.shape[1])
        raise ValueError((message + advice).rstrip())

    def get_config(self):
        """Returns the constructor arguments, except the corpus, as a dict.

        The corpus is data, as a Keras layer's weights are not in its
        config: `from_config(config, corpus_embeddings=...)` rebuilds the
        same index over it, and `save` stores both.
        """
        return {
            "stage_dims": list(self.stage_dims),
            "shortlist": list(self.shortlist),
            "precisions": list(self.precisions),
            "index": self.index,
            "normalize": self.normalize,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "use_faiss": self.use_faiss,
        }

    @classmethod
    def from_config(cls, config, *, corpus_embeddings, calibration=None):
        """Builds the index `config` describes over `corpus_embeddings`.

        Args:
            config: a dict from `get_config`.
            corpus_embeddings: array `(N, D)` of full-width embeddings, e.g.
                the corpus embedded again by a newer checkpoint.
            calibration: optional calibration embeddings for the int8
                stages, as the constructor takes them; None calibrates on
                `corpus_embeddings`.

        Returns:
            A `FunnelIndex` with those settings over that corpus.

        Example:

        >>> corpus = np.random.default_rng(0).normal(size=(200, 32))
        >>> index = keras_mrl.retrieval.FunnelIndex(
        ...     corpus, stage_dims=(8, 32), shortlist=(40,), use_faiss=False
        ... )
        >>> again = keras_mrl.retrieval.FunnelIndex.from_config(
        ...     index.get_config(), corpus_embeddings=corpus
        ... )
        >>> again.get_config() == index.get_config()
        True
        """
        if not isinstance(config, dict):
            raise TypeError(
                f"`config` must be a dict from `get_config()`, got {config!r}."
            )
        return cls(corpus_embeddings, calibration=calibration, **config)

    def save(self, path):
        """Writes the index to one numpy `.npz` file.

        The file holds a format marker and version (2), the configuration
        and what every stage stores (float32 prefixes, int8 codes and their
        ranges, or packed sign bits); an HNSW first stage on faiss also
        stores its graph (faiss's `serialize_index`), so loading does not
        rebuild it. A flat first stage is rebuilt from its prefixes on
        load, which is one copy.

        Args:
            path: the file path; `.npz` is appended when it does not end
                so, as `np.savez` does.

        Returns:
            The path written, a str.
        """
        return _index_file.write(
            path,
            config=self.get_config(),
            width=self.width,
            prefixes=[self._first.vectors(), *self._views],
            ranges=self._ranges,
            state=self._first.state(),
        )

    @classmethod
    def load(cls, path, *, use_faiss=None):
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

        Raises:
            FileNotFoundError: when no file has that name.
            ValueError: for a file `save` did not write (another format, a
                corrupt or truncated file, missing entries, a format
                version other than 1 or 2), naming the path and what is
                wrong. Version 1 files (float32 stages only) load.
        """
        use_faiss = check_optional_bool(use_faiss, "use_faiss")
        path, config, saved = _index_file.read(path)
        keys = set(config)
        if keys != set(_CONFIG_KEYS):
            raise ValueError(
                f"Cannot load a FunnelIndex from {path!r}: its saved "
                f"configuration lacks {sorted(set(_CONFIG_KEYS) - keys)} "
                f"and has unknown {sorted(keys - set(_CONFIG_KEYS))}."
            )
        if use_faiss is not None:
            config["use_faiss"] = use_faiss
        try:
            return cls.from_config(config, corpus_embeddings=saved)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Cannot load a FunnelIndex from {path!r}: {error}"
            ) from None
