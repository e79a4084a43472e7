"""What a funnel stage stores per vector: float32, int8 or binary codes.

- `float32`: the (normalised) prefix itself, `4 * width` bytes.
- `int8`: one byte per dimension, sentence-transformers' scalar codes
  (`keras_mrl.serving.quantize`) over per-dimension ranges measured on
  calibration embeddings. They are kept as the uint8 codes (the int8 codes
  plus 128), the layout faiss' 8-bit scalar quantizer stores. A code `c`
  stands for the middle of its step, `low + (c + 0.5) * (high - low) / 255`,
  as faiss decodes it; a query is scored in float32 against that.
- `binary`: the sign bits of the prefix (`x > 0`), packed 8 to a byte
  (`numpy.packbits`, `quantize(..., precision="ubinary")`), `width / 8`
  bytes, compared by Hamming distance.

The arithmetic of both codes is `keras_mrl._quantizers`, which
`keras_mrl.losses.QuantizationAwareLoss` trains with.
"""

import numpy as np

from keras_mrl import _quantizers
from keras_mrl._validation import check_choice
from keras_mrl.serving import quantize

PRECISIONS = ("float32", "int8", "binary")
# A Hamming distance only ranks; a later stage rescores in numbers.
RESCORING_PRECISIONS = ("float32", "int8")
# faiss' HNSW graphs on codes: IndexBinaryHNSW; the scalar quantizer's
# IndexHNSWSQ encodes by its own rounding, not these codes.
HNSW_PRECISIONS = ("float32", "binary")


def check_precisions(precisions, stage_dims, index):
    """Returns `precisions` as a tuple, one precision per `stage_dims` width.

    None means float32 at every stage.
    """
    if precisions is None:
        return ("float32",) * len(stage_dims)
    if isinstance(precisions, (str, bytes)) or not hasattr(
        precisions, "__iter__"
    ):
        raise TypeError(
            "`precisions` must be a tuple of str, one per width of stage_dims "
            f"{list(stage_dims)}, e.g. ('binary', 'float32'); "
            f"got {precisions!r}."
        )
    precisions = tuple(precisions)
    if len(precisions) != len(stage_dims):
        raise ValueError(
            f"`precisions` {list(precisions)} must hold one precision per "
            f"width of stage_dims {list(stage_dims)}: {len(stage_dims)}."
        )
    checked = [check_choice(precisions[0], "precisions[0]", PRECISIONS)]
    for i, precision in enumerate(precisions[1:], start=1):
        checked.append(
            check_choice(precision, f"precisions[{i}]", RESCORING_PRECISIONS)
        )
    if checked[0] == "binary" and stage_dims[0] % 8:
        raise ValueError(
            f"A binary first stage packs 8 dimensions to a byte, so its "
            f"width stage_dims[0] must be a multiple of 8; got {stage_dims[0]}."
        )
    if index == "hnsw" and checked[0] not in HNSW_PRECISIONS:
        raise ValueError(
            f"index='hnsw' takes a first-stage precision in "
            f"{list(HNSW_PRECISIONS)}, got {checked[0]!r}: an int8 first "
            "stage is an exact scan (index='flat')."
        )
    return tuple(checked)


def bytes_per_vector(precision, width):
    """The bytes one vector's code takes at `width` in `precision`."""
    return {"float32": 4 * width, "int8": width, "binary": width // 8}[
        precision
    ]


def stored_layout(precision, width):
    """`(dtype, columns)` of the array a stage stores."""
    if precision == "float32":
        return np.dtype(np.float32), width
    if precision == "int8":
        return np.dtype(np.uint8), width
    return np.dtype(np.uint8), width // 8


def measure_ranges(prefixes):
    """Per-dimension `(2, width)` float32 minima and maxima."""
    return _quantizers.measure_ranges(prefixes, np).astype(np.float32)


def encode(prefixes, precision, ranges=None):
    """The codes a stage stores for `(N, width)` float32 prefixes."""
    if precision == "float32":
        return prefixes
    if precision == "int8":
        return quantize(prefixes, precision="uint8", ranges=ranges)
    return quantize(prefixes, precision="ubinary")


def int8_query_terms(queries, ranges):
    """`(scaled, offset)` with `scaled @ codes.T + offset[:, None]` the
    inner products of `queries` with the decoded int8 codes.

    A code `c` decodes to `low + (c + 0.5) * step`
    (`_quantizers.scalar_values`), so `q . decoded = (q * step) . c +
    q . (low + 0.5 * step)`: the codes are cast to float, never decoded.
    """
    low, high = ranges
    scaled = (queries * _quantizers.step(low, high, np)).astype(np.float32)
    offset = queries @ _quantizers.scalar_values(0, low, high, np)
    return scaled, offset.astype(np.float32)
