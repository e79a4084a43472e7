"""Scalar and binary quantization of (prefixes of) embeddings, in numpy.

The same numbers as sentence-transformers' `quantize_embeddings`, so that
an index built here and one built there agree code for code:

- `int8` / `uint8`: each dimension's range `[min, max]` (from calibration
  embeddings, or from the embeddings themselves) is cut into 255 equal
  steps and a value becomes the floor of its step, clipped to [0, 255]
  (minus 128 for `int8`);
- `binary` / `ubinary`: one bit per dimension, set when the value is > 0,
  packed 8 to a byte (`numpy.packbits`, first dimension in the highest
  bit); `binary` stores each byte minus 128 as int8, as
  sentence-transformers does, `ubinary` the byte itself.
"""

import numpy as np

from keras_mrl._quantizers import scalar_codes
from keras_mrl._quantizers import sign_bits
from keras_mrl._validation import check_choice
from keras_mrl._validation import check_dim
from keras_mrl._validation import check_finite
from keras_mrl._validation import to_matrix
from keras_mrl._validation import to_numpy

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
_SCALAR = ("int8", "uint8")


def _float_matrix(x, name):
    """Returns `x` as a finite 2-D float numpy array, or raises."""
    x = to_matrix(x, name)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"`{name}` must hold floats (unquantized embeddings), got dtype "
            f"{x.dtype}."
        )
    return check_finite(x, name)


def _ranges(calibration, ranges, x, precision):
    """Returns the float32 `(2, D)` minima and maxima of `precision`.

    Raises:
        ValueError: when the embeddings that calibrate (`calibration`, or
            `x` without it) are fewer than 2, or when the ranges are empty
            in every dimension: every code would then be the lowest.
    """
    if ranges is not None:
        if calibration is not None:
            raise ValueError(
                "Pass `calibration` (embeddings to measure) or `ranges` (the "
                "measured (2, dim) minima and maxima), not both."
            )
        name = "`ranges`"
    else:
        name, source = (
            ("`x`", x)
            if calibration is None
            else ("`calibration`", calibration)
        )
        if len(source) < 2:
            advice = (
                "pass `calibration`, a representative set of embeddings "
                "(e.g. the corpus)"
                if calibration is None
                else "pass a representative set of embeddings (e.g. the corpus)"
            )
            raise ValueError(
                f"`{precision}` needs per-dimension ranges, and {len(source)} "
                f"embedding(s) of {name} cannot give them: {advice}."
            )
        ranges = np.vstack((source.min(axis=0), source.max(axis=0)))
    if (ranges[0] == ranges[1]).all():
        raise ValueError(
            f"`{precision}` needs per-dimension ranges, and those of {name} "
            "are empty (minimum = maximum) in every dimension, as identical "
            "embeddings give: every code would be the same. Calibrate on a "
            "representative set of embeddings (e.g. the corpus)."
        )
    return ranges


def quantize(x, *, precision, calibration=None, ranges=None, dim=None):
    """Quantizes embeddings to int8, uint8 or packed bits, as numpy.

    Gives the same arrays as sentence-transformers' `quantize_embeddings`
    for the same input (`calibration` is its `calibration_embeddings`).
    To quantize a Matryoshka prefix, pass `dim`: the first `dim` columns of
    `x`, of `calibration` and of `ranges` are taken, unnormalized, so one
    full-width calibration serves every width (a per-dimension range does
    not change when later dimensions are cut). Cutting first with
    `keras_mrl.ops.truncate(x, dim=m)` instead renormalizes the prefix: its
    calibration must then be truncated the same way.

    Ranking by the int8 codes' dot product approximates the float ranking
    only when every dimension has a similar range; rescore the shortlist
    with float vectors, as a funnel does. The binary codes are compared by
    Hamming distance (`keras_mrl.serving.hamming_distance`).

    Args:
        x: float array `(n, D)` (numpy or any backend's tensor), finite.
        precision: one of `"float32"`, `"int8"`, `"uint8"`, `"binary"`,
            `"ubinary"`.
        calibration: optional float array `(c, D)`, `c >= 2`, whose
            per-dimension minima and maxima set the int8/uint8 steps.
            When neither it nor `ranges` is given, `x` itself calibrates
            (as in sentence-transformers), which needs `n >= 2` and gives
            a query batch other steps than its corpus. Ignored by the
            float and binary precisions, whose thresholds are fixed.
        ranges: optional float array `(2, D)`: the minima (row 0) and
            maxima (row 1) that `calibration` would give, measured once
            (e.g. stored with an index). Not with `calibration`.
        dim: optional int, the prefix width to quantize; default all `D`.

    Returns:
        A numpy array: float32 `(n, dim)`; int8 or uint8 `(n, dim)`; for
        the binary precisions int8 (`binary`) or uint8 (`ubinary`)
        `(n, ceil(dim / 8))`, the last byte padded with zero bits.

    Raises:
        ValueError: when an array is not 2-D or holds NaN or inf, when
            `calibration` or `ranges` is not as wide as `x`, when a range
            has its minimum above its maximum, for an unknown `precision`,
            for a `dim` wider than `x`, or when int8/uint8 has nothing to
            calibrate on: fewer than 2 calibrating embeddings, or ranges
            empty in every dimension.
        TypeError: when an array does not hold floats.

    Example:

    >>> x = np.array([[0.5, -0.2, 0.1], [-0.3, 0.4, 0.0]], "float32")
    >>> keras_mrl.serving.quantize(x, precision="ubinary")
    array([[160],
           [ 64]], dtype=uint8)
    >>> keras_mrl.serving.quantize(x, precision="uint8", dim=2)
    array([[255,   0],
           [  0, 255]], dtype=uint8)
    """
    precision = check_choice(precision, "precision", PRECISIONS)
    x = _float_matrix(x, "x")
    width = x.shape[1]
    if calibration is not None:
        calibration = _float_matrix(calibration, "calibration")
        if calibration.shape[1] != width:
            raise ValueError(
                "`calibration` must be (num_vectors, D) with x's width "
                f"D={width}, got shape {calibration.shape}."
            )
    if ranges is not None:
        ranges = _float_matrix(ranges, "ranges")
        if ranges.shape != (2, width):
            raise ValueError(
                f"`ranges` must have shape (2, {width}): the minima and the "
                f"maxima of x's {width} dimensions; got shape {ranges.shape}."
            )
        if (ranges[0] > ranges[1]).any():
            raise ValueError(
                "`ranges` must hold the minima in row 0 and the maxima in "
                f"row 1; {int((ranges[0] > ranges[1]).sum())} dimension(s) "
                "have a minimum above their maximum."
            )
    if dim is not None:
        dim = check_dim(dim, width, x.shape)
        x = x[:, :dim]
        calibration = None if calibration is None else calibration[:, :dim]
        ranges = None if ranges is None else ranges[:, :dim]

    if precision == "float32":
        return x.astype(np.float32)
    if precision in _SCALAR:
        # The arithmetic, dtypes included, is sentence-transformers': the
        # ranges are float32 and x keeps its own precision.
        bounds = _ranges(calibration, ranges, x, precision)
        low, high = bounds.astype(np.float32, copy=False)
        codes = scalar_codes(x, low, high, np)
        if precision == "uint8":
            return codes.astype(np.uint8)
        return (codes - 128).astype(np.int8)
    packed = np.packbits(sign_bits(x, np), axis=-1)
    if precision == "ubinary":
        return packed
    return (packed.astype(np.int16) - 128).astype(np.int8)


def _packed(codes, name):
    """Checked packed bits as uint8: int8 codes are the uint8 ones minus
    128, the same bytes but the top bit, which XOR cancels."""
    codes = to_numpy(codes)
    if codes.ndim != 2 or codes.dtype not in (np.int8, np.uint8):
        raise ValueError(
            f"`{name}` must be packed bits from quantize(..., "
            "precision='binary' or 'ubinary'): a 2-D int8 or uint8 array; "
            f"got dtype {codes.dtype} and shape {codes.shape}."
        )
    return codes


# numpy >= 2.0 counts bits itself; older numpy looks bytes up.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _popcount(words):
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return (
        _POPCOUNT[words.view(np.uint8)]
        .reshape(*words.shape, -1)
        .sum(axis=-1, dtype=np.uint8)
    )


def _as_words(codes):
    """Packed bytes `(N, B)` viewed as the widest unsigned words they fill."""
    for dtype in (np.uint64, np.uint32, np.uint16):
        if codes.shape[1] % np.dtype(dtype).itemsize == 0:
            return np.ascontiguousarray(codes).view(dtype)
    return codes


def hamming(queries, codes):
    """int32 `(Q, N)` Hamming distances of packed bits `(Q, B)`, `(N, B)`."""
    q, c = _as_words(queries), _as_words(codes)
    distances = np.zeros((len(q), len(c)), np.int32)
    # One word column at a time keeps the temporaries at (Q, N).
    for w in range(q.shape[1]):
        distances += _popcount(q[:, w, None] ^ c[None, :, w])
    return distances


def hamming_distance(queries, *, corpus):
    """Returns the Hamming distance of every query code to every corpus code.

    Args:
        queries: packed bits `(q, B)` from `quantize(..., precision=
            "binary")` (int8) or `"ubinary"` (uint8).
        corpus: packed bits `(n, B)` of the same precision.

    Returns:
        An int32 array `(q, n)`: the number of differing bits; smaller is
        closer.

    Raises:
        ValueError: when an input is not a 2-D int8/uint8 array, when the
            two have different dtypes or byte widths.

    Example:

    >>> x = np.array([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
    >>> codes = keras_mrl.serving.quantize(x, precision="binary")
    >>> keras_mrl.serving.hamming_distance(codes, corpus=codes)
    array([[0, 1],
           [1, 0]], dtype=int32)
    """
    q, c = _packed(queries, "queries"), _packed(corpus, "corpus")
    if q.dtype != c.dtype or q.shape[1] != c.shape[1]:
        raise ValueError(
            "`queries` and `corpus` must be codes of one precision and "
            f"width: got {q.dtype} {q.shape} and {c.dtype} {c.shape}."
        )
    return hamming(q.view(np.uint8), c.view(np.uint8))
