"""Hard negatives for (anchor, positive) pairs, mined with a funnel search.

The positives (and an optional extra corpus) are embedded once, indexed in
a `FunnelIndex`, and every distinct anchor is searched once. The rows of
the search results are then filtered in blocks with numpy: the positives
and duplicates are struck out, the rank window and the score filters
applied, and the negatives picked.
"""

import inspect
import numbers
import time

import numpy as np

from keras_mrl._numpy_search import l2_normalize
from keras_mrl._validation import check_choice
from keras_mrl._validation import check_finite_rows
from keras_mrl._validation import check_optional_int
from keras_mrl._validation import check_positive_int
from keras_mrl._validation import to_numpy
from keras_mrl.retrieval._funnel import FunnelIndex

_SAMPLING_STRATEGIES = ("top", "random")
_ON_TOO_FEW = ("drop", "raise")
# The score filters, in the order they are reported.
_FILTERS = ("absolute_margin", "relative_margin", "max_score", "min_score")

# Below this width a full-width scan is cheap; above it the default funnel
# shortlists at this prefix and rescores at the full width.
_FUNNEL_FROM_WIDTH = 256
_DEFAULT_PREFIX = 64
# Distinct anchors per `search` call: one step of the progress bar.
_SEARCH_BLOCK = 2048
# Rows filtered at once; bounds the (rows, k, excluded) comparison.
_FILTER_BLOCK = 4096


def _is_text(value):
    return isinstance(value, (str, bytes, np.str_, np.bytes_))


def _as_rows(values, name):
    """`("text", list)` for strings, else `("array", ndarray)`.

    Raises:
        ValueError: for a None row or no rows.
        TypeError: for strings mixed with other values.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "USO":
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        rows = list(values)
        if any(row is None for row in rows):
            raise ValueError(
                f"`{name}` holds None at row "
                f"{next(i for i, r in enumerate(rows) if r is None)}: every "
                "row must be a string, or an input or vector of numbers."
            )
        text = [_is_text(row) for row in rows]
        if any(text) and not all(text):
            row = text.index(False) if text[0] else text.index(True)
            raise TypeError(
                f"`{name}` mixes strings with other values: row {row} is "
                f"{rows[row]!r} of type {type(rows[row]).__name__}. Every "
                "row must be a string, or none."
            )
        if rows and all(text):
            return "text", [
                str(row) if isinstance(row, np.str_) else row for row in rows
            ]
        values = rows
    if isinstance(values, dict):
        raise TypeError(
            f"`{name}` must be a list of strings or an array with one row "
            f"per example, got a dict (keys {sorted(values)})."
        )
    try:
        array = to_numpy(values)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be a list of strings or an array with one row "
            f"per example, got {type(values).__name__}: {error}"
        ) from None
    if array.ndim == 0 or array.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must be a list of strings or a numeric array with one "
            f"row per example, got shape {array.shape} of dtype "
            f"{array.dtype}."
        )
    return "array", array


def _check_count(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Integral
    ):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}, got {name}={value}."
        )
    return int(value)


def _check_optional_real(value, name, minimum=None):
    """None, or `value` as a finite float (at least `minimum`)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Real
    ):
        raise TypeError(f"`{name}` must be None or a number, got {value!r}.")
    if not np.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(
            f"`{name}` must be a finite number{bound}, got {name}={value}."
        )
    return float(value)


def _check_verbose(verbose):
    if verbose == "auto" and isinstance(verbose, str):
        return 1
    if (
        isinstance(verbose, (bool, np.bool_))
        or not isinstance(verbose, numbers.Integral)
        or verbose not in (0, 1, 2)
    ):
        raise ValueError(
            f"`verbose` must be 0 (silent), 1 (a progress bar), 2 (one line "
            f"per stage) or 'auto' (1), got {verbose!r}."
        )
    return int(verbose)


def _check_embedder(embedder):
    if callable(getattr(embedder, "encode", None)) or callable(
        getattr(embedder, "predict", None)
    ):
        return embedder
    raise TypeError(
        "`embedder` must have an `encode(inputs)` method (such as "
        "keras_mrl.models.ContrastiveModel) or be a Keras model whose "
        "`predict` returns (N, D) embeddings, or be None when `anchors`, "
        "`positives` and `corpus` are embeddings already; got "
        f"{type(embedder).__name__}."
    )


def _first_occurrence_ids(kind, values):
    """`(ids, first)`: equal rows share an id, numbered by first occurrence.

    `first[i]` is the row where id `i` first occurs. Texts are equal when
    they are the same string; arrays when their rows hold equal numbers
    (so -0.0 equals 0.0).
    """
    if kind == "text":
        seen = {}
        ids = np.empty(len(values), np.int64)
        first = []
        for row, value in enumerate(values):
            ids[row] = seen.setdefault(value, len(seen))
            if ids[row] == len(first):
                first.append(row)
        return ids, np.asarray(first, np.int64)
    flat = values.reshape(len(values), -1)
    _, index, inverse = np.unique(
        flat, axis=0, return_index=True, return_inverse=True
    )
    order = np.argsort(index, kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return renumber[inverse.reshape(-1)], index[order]


def _take(kind, values, rows):
    if kind == "text":
        return [values[row] for row in rows]
    return values[rows]


def _embed(embedder, kind, inputs, batch_size, verbose):
    """The `(U, D)` float32 embeddings of the distinct inputs."""
    encode = getattr(embedder, "encode", None)
    if callable(encode):
        # Only the arguments an `encode` names: a user's own may take none.
        parameters = inspect.signature(encode).parameters
        options = {"batch_size": batch_size, "verbose": verbose}
        output = encode(
            inputs, **{k: v for k, v in options.items() if k in parameters}
        )
    else:
        # Keras reads a Python list as several inputs; an array is one.
        output = embedder.predict(
            np.asarray(inputs) if kind == "text" else inputs,
            batch_size=batch_size,
            verbose=verbose,
        )
    output = to_numpy(output)
    if output.ndim != 2 or len(output) != len(inputs):
        raise ValueError(
            f"`embedder` must embed {len(inputs)} inputs into a 2-D array "
            f"(N, D) with one row each, got shape {output.shape}."
        )
    return check_finite_rows(
        output.astype(np.float32, copy=False), "the embeddings of `embedder`"
    )


def _exclusions(group_of_row, positive_ids, anchor_ids, corpus_size):
    """`(G, E)` corpus ids no row of each anchor may take, padded with -1.

    The positives of every row with that anchor, and the anchor itself
    when the corpus holds it.
    """
    groups = len(anchor_ids)
    in_corpus = np.flatnonzero(anchor_ids < corpus_size)
    pairs = np.unique(
        np.stack(
            [
                np.concatenate([group_of_row, in_corpus]),
                np.concatenate([positive_ids, anchor_ids[in_corpus]]),
            ],
            axis=1,
        ),
        axis=0,
    )
    counts = np.bincount(pairs[:, 0], minlength=groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slots = np.arange(len(pairs)) - starts[pairs[:, 0]]
    table = np.full((groups, counts.max()), -1, np.int64)
    table[pairs[:, 0], slots] = pairs[:, 1]
    return table


def _rejections(scores, positive_scores, filters):
    """One boolean `(rows, k)` mask per set filter: the candidates it
    rejects."""
    positive = positive_scores[:, None]
    tests = {
        "absolute_margin": lambda m: scores > positive - m,
        "relative_margin": lambda m: scores > positive - np.abs(positive) * m,
        "max_score": lambda m: scores > m,
        "min_score": lambda m: scores < m,
    }
    return {
        name: tests[name](value)
        for name, value in filters.items()
        if value is not None
    }


def _pick(valid, num_negatives, sampling_strategy, rng):
    """The positions (rank order) of each row's negatives, `(rows, n)`."""
    rows, k = valid.shape
    if sampling_strategy == "top":
        keys = np.where(valid, np.arange(k), k)
    else:
        # Drawn for every candidate, valid or not, so that the draws of a
        # row do not depend on how the filters treat the rows before it.
        keys = np.where(valid, rng.random((rows, k)), 2.0)
    chosen = np.argsort(keys, axis=1, kind="stable")[:, :num_negatives]
    return np.sort(chosen, axis=1)


def mine_hard_negatives(
    anchors,
    positives,
    *,
    embedder=None,
    corpus=None,
    num_negatives=3,
    range_min=0,
    range_max=None,
    max_score=None,
    min_score=None,
    absolute_margin=None,
    relative_margin=None,
    sampling_strategy="top",
    stage_dims=None,
    shortlist=None,
    on_too_few="drop",
    batch_size=32,
    seed=None,
    verbose=1,
):
    """Adds `num_negatives` mined hard negatives to (anchor, positive) pairs.

    The corpus, the positives and `corpus` (deduplicated), is indexed in
    a `keras_mrl.retrieval.FunnelIndex`, and each anchor's nearest corpus
    entries are searched. Each row then takes its negatives among them:

    1. The row's positive is never a negative, nor any entry equal to it,
       nor the positive of any other row with the same anchor, nor the
       anchor itself when the corpus holds it. "Equal" is the same
       string for text and the same numbers for arrays and vectors.
    2. The rank window: what remains is ranked by score, best first from
       rank 0, and ranks `range_min` to `range_max - 1` are candidates.
    3. The score filters strike out candidates that are likely false
       negatives (unlabelled positives) or too easy; all scores are
       cosines at the width `stage_dims[-1]`.
    4. `"top"` takes the `num_negatives` best candidates left, `"random"`
       a uniform sample of them; either way `negative_1` is the
       best-scored.

    The arguments are those of sentence-transformers'
    `util.mine_hard_negatives` with the same meaning, but for `range_min`,
    which counts ranks before the score filters: here it skips the
    `range_min` best candidates, filtered or not (sentence-transformers
    skips the `range_min` best of those the filters keep).

    A row left with fewer than `num_negatives` candidates is dropped
    (`on_too_few="drop"`, sentence-transformers' behaviour, with the
    count printed unless `verbose=0`) or raises (`"raise"`). The rows
    kept stay in input order.

    With `embedder`, the inputs are embedded with its `encode` (given
    `batch_size` and `verbose` when it names them), else with its
    `predict` (a Keras model returning `(N, D)`). Each distinct input is
    embedded once. Without it, `anchors`, `positives` and `corpus` are
    embeddings already, and the negatives are corpus vectors.

    Args:
        anchors: the anchors (queries): a list of strings, an array of
            embedder inputs with one row per example, or `(N, D)`
            embeddings without `embedder`.
        positives: one positive per anchor, of the same kind.
        embedder: None, an object with `encode(inputs)` (such as
            `keras_mrl.models.ContrastiveModel`), or a Keras model whose
            `predict` maps inputs to `(N, D)` embeddings (such as a
            KerasHub `TextEmbedder`).
        corpus: optional further documents (or embeddings) to mine
            negatives from, of the same kind; the positives always are.
        num_negatives: int >= 1, the negatives per row.
        range_min: int >= 0, the first rank that may be a negative: skips
            the `range_min` nearest entries, which are the likeliest
            unlabelled positives.
        range_max: optional int > `range_min`, the rank after the last
            candidate; a smaller window searches less. Default
            `range_min + num_negatives`, or `range_min + 10 *
            num_negatives` when `absolute_margin`, `relative_margin` or
            `max_score` may strike candidates out.
        max_score: optional float; candidates scoring above it are struck
            out, as near duplicates of the anchor.
        min_score: optional float, at most `max_score`; candidates scoring
            below it are struck out, as too easy to teach anything.
        absolute_margin: optional float >= 0; a candidate must score at
            most `positive_score - absolute_margin`. 0 strikes out what
            scores above the positive.
        relative_margin: optional float >= 0; a candidate must score at
            most `positive_score - abs(positive_score) * relative_margin`;
            0.05 keeps those at least 5% below the positive (the
            NV-Retriever "TopK-PercPos" setting).
        sampling_strategy: `"top"` or `"random"`, see above.
        stage_dims: optional widths of the funnel's stages, as
            `FunnelIndex` takes them; the last is the width of every
            score. Default `(64, D)` for embeddings of width `D >= 256`
            (shortlist at a 64-wide prefix, rescore at full width), else
            `(D,)`, an exact search.
        shortlist: optional candidate counts of the funnel's stages but
            the last, as `FunnelIndex` takes them, each at least the `k`
            searched (`range_max` plus the most entries one anchor
            excludes). Default `10 * k` (at least 100) per stage.
        on_too_few: `"drop"` or `"raise"`, see above.
        batch_size: int, the embedding batch size.
        seed: optional int; with `"random"` the same seed draws the same
            negatives.
        verbose: 0 (silent), 1 (progress bars and a summary), 2 (one line
            per stage) or `"auto"` (1).

    Returns:
        A tuple `(anchors, positives, negative_1, ..., negative_n)` of the
        rows kept, ready for `keras_mrl.models.ContrastiveModel.fit`:
        lists of strings for text, else numpy arrays.

    Raises:
        ValueError: for a bad count, window, score bound or margin, for
            inputs of different lengths or none, a None row, a NaN
            embedding, when no row keeps `num_negatives` candidates, and
            with `on_too_few="raise"` when any row does not.
        TypeError: for a value of the wrong type, strings mixed with other
            values, strings without `embedder`, or an `embedder` with
            neither `encode` nor `predict`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> documents = rng.normal(size=(100, 16)).astype("float32")
    >>> queries = documents + 0.1 * rng.normal(size=(100, 16))
    >>> branches = keras_mrl.retrieval.mine_hard_negatives(
    ...     queries, documents, num_negatives=2, verbose=0
    ... )
    >>> len(branches), branches[2].shape
    (4, (100, 16))

    The positive is never its own negative, and the margin keeps every
    negative below it:

    >>> anchors, positives, first, second = (
    ...     keras_mrl.retrieval.mine_hard_negatives(
    ...         queries, documents, num_negatives=2, absolute_margin=0.1,
    ...         verbose=0,
    ...     )
    ... )
    >>> bool((first != positives).any(axis=1).all())
    True
    >>> unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    >>> gap = (unit(anchors) * (unit(positives) - unit(first))).sum(axis=1)
    >>> bool((gap >= 0.1 - 1e-6).all())
    True
    """
    num_negatives = check_positive_int(num_negatives, "num_negatives")
    range_min = _check_count(range_min, "range_min", 0)
    filters = {
        "absolute_margin": _check_optional_real(
            absolute_margin, "absolute_margin", 0.0
        ),
        "relative_margin": _check_optional_real(
            relative_margin, "relative_margin", 0.0
        ),
        "max_score": _check_optional_real(max_score, "max_score"),
        "min_score": _check_optional_real(min_score, "min_score"),
    }
    if (
        filters["min_score"] is not None
        and filters["max_score"] is not None
        and filters["min_score"] > filters["max_score"]
    ):
        raise ValueError(
            f"`min_score`={min_score} exceeds `max_score`={max_score}: no "
            "score lies between them."
        )
    if range_max is None:
        striking = any(
            filters[name] is not None
            for name in ("absolute_margin", "relative_margin", "max_score")
        )
        range_max = range_min + num_negatives * (10 if striking else 1)
    range_max = _check_count(range_max, "range_max", range_min + 1)
    if num_negatives > range_max - range_min:
        raise ValueError(
            f"Cannot mine `num_negatives`={num_negatives} negatives from "
            f"the {range_max - range_min} ranks from `range_min`="
            f"{range_min} to `range_max`={range_max}. Lower num_negatives "
            "or range_min, or raise range_max."
        )
    sampling_strategy = check_choice(
        sampling_strategy, "sampling_strategy", _SAMPLING_STRATEGIES
    )
    on_too_few = check_choice(on_too_few, "on_too_few", _ON_TOO_FEW)
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_optional_int(seed, "seed")
    verbose = _check_verbose(verbose)
    if embedder is not None:
        _check_embedder(embedder)

    kind, anchors = _as_rows(anchors, "anchors")
    inputs = {"anchors": (kind, anchors)}
    inputs["positives"] = _as_rows(positives, "positives")
    if corpus is not None:
        inputs["corpus"] = _as_rows(corpus, "corpus")
        if not len(inputs["corpus"][1]):
            # An empty corpus adds nothing, whatever kind it would be.
            del inputs["corpus"]
            corpus = None
    size = len(anchors)
    if size == 0 or len(inputs["positives"][1]) != size:
        raise ValueError(
            "`anchors` and `positives` must hold one row per example each, "
            f"at least one: got {size} anchors and "
            f"{len(inputs['positives'][1])} positives."
        )
    _check_kinds(inputs, vectors=embedder is None)
    positives = inputs["positives"][1]
    extra = [] if corpus is None else inputs["corpus"][1]

    start = time.perf_counter()
    # Positives first, then the corpus, then the anchors: the distinct
    # corpus entries get the ids below `corpus_size`.
    if kind == "text":
        every = list(positives) + list(extra) + list(anchors)
    else:
        every = np.concatenate(
            [positives] + ([] if corpus is None else [extra]) + [anchors]
        )
    ids, first = _first_occurrence_ids(kind, every)
    positive_ids = ids[:size]
    corpus_size = int(ids[: size + len(extra)].max()) + 1
    distinct = _take(kind, every, first)
    if embedder is None:
        embeddings = distinct.astype(np.float32, copy=False)
    else:
        embeddings = _embed(embedder, kind, distinct, batch_size, verbose)
    anchor_ids, group_of_row = np.unique(
        ids[size + len(extra) :], return_inverse=True
    )
    group_of_row = group_of_row.reshape(-1)
    excluded = _exclusions(group_of_row, positive_ids, anchor_ids, corpus_size)
    k = min(range_max + excluded.shape[1], corpus_size)

    index = _funnel(embeddings[:corpus_size], stage_dims, shortlist, k)
    scores, found = _search(index, embeddings[anchor_ids], k, verbose)
    width = index.stage_dims[-1]
    kept, negatives, rejected = [], [], dict.fromkeys(_FILTERS, 0)
    rng = np.random.default_rng(seed)
    for begin in range(0, size, _FILTER_BLOCK):
        rows = np.arange(begin, min(begin + _FILTER_BLOCK, size))
        groups = group_of_row[rows]
        candidates = found[groups]
        struck = (candidates[:, :, None] == excluded[groups][:, None, :]).any(
            axis=-1
        )
        rank = np.cumsum(~struck, axis=1) - 1
        window = ~struck & (rank >= range_min) & (rank < range_max)
        positive_scores = np.einsum(
            "ij,ij->i",
            l2_normalize(embeddings[anchor_ids[groups], :width]),
            l2_normalize(embeddings[positive_ids[rows], :width]),
        )
        valid = window
        for name, mask in _rejections(
            scores[groups], positive_scores, filters
        ).items():
            rejected[name] += int(np.count_nonzero(window & mask))
            valid = valid & ~mask
        enough = np.count_nonzero(valid, axis=1) >= num_negatives
        chosen = _pick(valid, num_negatives, sampling_strategy, rng)
        kept.append(rows[enough])
        negatives.append(np.take_along_axis(candidates, chosen, axis=1)[enough])
    kept = np.concatenate(kept)
    negatives = np.concatenate(negatives)
    _check_kept(
        kept, size, num_negatives, on_too_few, range_min, range_max, filters
    )
    if verbose:
        _summary(kept, size, num_negatives, rejected, filters, start)
    return (
        _take(kind, anchors, kept),
        _take(kind, positives, kept),
        *(_take(kind, distinct, negatives[:, j]) for j in range(num_negatives)),
    )


def _check_kinds(inputs, vectors):
    """Raises unless every input is of one kind that fits the mode."""
    kinds = {name: kind for name, (kind, _) in inputs.items()}
    if vectors and "text" in kinds.values():
        name = next(n for n, k in kinds.items() if k == "text")
        raise TypeError(
            f"`{name}` holds strings, which need an `embedder` to embed "
            "them; without one, pass (N, D) embeddings."
        )
    if len(set(kinds.values())) > 1:
        text = next(n for n, k in kinds.items() if k == "text")
        other = next(n for n, k in kinds.items() if k != "text")
        raise TypeError(
            f"`{text}` holds strings while `{other}` does not: all go "
            "through the same embedder, so all hold text or none do."
        )
    shapes = {
        name: values.shape[1:]
        for name, (kind, values) in inputs.items()
        if kind == "array"
    }
    if vectors:
        for name, shape in shapes.items():
            if len(shape) != 1:
                raise ValueError(
                    f"`{name}` must be 2-D embeddings (N, D) without an "
                    f"`embedder`, got shape {inputs[name][1].shape}."
                )
        for name, (_, values) in inputs.items():
            check_finite_rows(values, name)
    if len(set(shapes.values())) > 1:
        raise ValueError(
            "`anchors`, `positives` and `corpus` must have rows of one "
            "shape, got "
            + ", ".join(f"{name} {inputs[name][1].shape}" for name in shapes)
            + "."
        )


def _funnel(corpus, stage_dims, shortlist, k):
    width = corpus.shape[1]
    if stage_dims is None:
        stage_dims = (
            (_DEFAULT_PREFIX, width)
            if width >= _FUNNEL_FROM_WIDTH
            else (width,)
        )
    if shortlist is None:
        stages = len(stage_dims) if hasattr(stage_dims, "__len__") else 1
        shortlist = (max(10 * k, 100),) * (stages - 1)
    index = FunnelIndex(corpus, stage_dims=stage_dims, shortlist=shortlist)
    if index.shortlist and index.shortlist[-1] < k:
        raise ValueError(
            f"`shortlist` {list(index.shortlist)} keeps fewer than the "
            f"{k} candidates each anchor needs (`range_max` plus the "
            "entries an anchor excludes: its positives, and itself when the "
            f"corpus holds it). Pass shortlist entries >= {k}."
        )
    return index


def _search(index, queries, k, verbose):
    """`(scores, ids)`, each `(len(queries), k)`, best first."""
    progress = None
    if verbose:
        import keras

        progress = keras.utils.Progbar(
            len(queries), verbose=verbose, unit_name="anchor"
        )
    scores, ids = [], []
    for begin in range(0, len(queries), _SEARCH_BLOCK):
        block_scores, block_ids = index.search(
            queries[begin : begin + _SEARCH_BLOCK], k=k
        )
        scores.append(block_scores)
        ids.append(block_ids)
        if progress is not None:
            progress.update(min(begin + _SEARCH_BLOCK, len(queries)))
    return np.concatenate(scores), np.concatenate(ids)


def _check_kept(
    kept, size, num_negatives, on_too_few, range_min, range_max, filters
):
    short = size - len(kept)
    if not short:
        return
    set_filters = [name for name in _FILTERS if filters[name] is not None]
    advice = (
        f"Widen the window `range_min`={range_min} to `range_max`="
        f"{range_max}"
        + (f", or loosen {', '.join(set_filters)}" if set_filters else "")
        + ", or add a larger `corpus`."
    )
    if not len(kept) or on_too_few == "raise":
        missing = np.setdiff1d(np.arange(size), kept)[:5].tolist()
        raise ValueError(
            f"{short} of {size} rows have fewer than `num_negatives`="
            f"{num_negatives} valid negatives (rows {missing}"
            f"{', ...' if short > 5 else ''})"
            + (", so none is left. " if not len(kept) else ". ")
            + advice
            + (
                " Or pass on_too_few='drop' to keep the other rows."
                if len(kept)
                else ""
            )
        )


def _summary(kept, size, num_negatives, rejected, filters, start):
    dropped = size - len(kept)
    line = (
        f"Mined {num_negatives} negatives for {len(kept)} of {size} rows in "
        f"{time.perf_counter() - start:.1f} s"
    )
    if dropped:
        line += (
            f"; dropped {dropped} rows with fewer than {num_negatives} "
            "valid negatives"
        )
    counts = [
        f"{name}={filters[name]}: {rejected[name]}"
        for name in _FILTERS
        if filters[name] is not None
    ]
    if counts:
        line += "; candidates struck out by " + ", ".join(counts)
    print(line + ".")
