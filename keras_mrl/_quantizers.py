"""How a float becomes a code, written once for numpy and for keras.ops.

`keras_mrl.serving.quantize` and `keras_mrl.retrieval.FunnelIndex` encode
and score codes with these functions on numpy arrays;
`keras_mrl.losses.QuantizationAwareLoss` trains on the same codes with them
on tensors. Each takes `xp`, the array module that computes: `numpy` or
`keras.ops`, which spell `greater`, `where`, `floor`, `clip` and `stack`
alike.

- binary: the bit of a dimension is set when its value is > 0. As +1 / -1
  signs, the inner product of two codes of width `m` is
  `m - 2 * hamming`, the score of a binary funnel stage.
- int8: a dimension's range `[low, high]` is cut into 255 equal steps; a
  value becomes the floor of its step, clipped to [0, 255]
  (sentence-transformers' scalar codes), and a code `c` stands for the
  middle of its step, `low + (c + 0.5) * (high - low) / 255`, as faiss
  decodes it.
"""

import numpy as np

LEVELS = 255


def divide(a, b, xp):
    """`a / b`, elementwise, rounded as numpy rounds it.

    XLA (JAX, and TensorFlow's `jit_compile`) turns a division by a
    constant or by a broadcast vector into a multiplication by the
    reciprocal, which can put a quotient one ulp off, and so a value on a
    step boundary into the step below. A divisor plus `0 * a` depends on
    `a`, which XLA cannot fold (`0 * inf` is NaN), so it divides.
    """
    if xp is np:
        return a / b
    return a / (b + 0 * a)


def sign_bits(x, xp):
    """The bits of the binary codes: True where `x > 0`."""
    return xp.greater(x, 0)


def signs(x, xp):
    """+1.0 where the bit is set, -1.0 elsewhere: the codes whose inner
    product is a binary stage's score, `m - 2 * hamming`."""
    return xp.where(sign_bits(x, xp), 1.0, -1.0)


def measure_ranges(prefixes, xp):
    """The `(2, width)` per-dimension minima (row 0) and maxima (row 1)."""
    return xp.stack([xp.min(prefixes, axis=0), xp.max(prefixes, axis=0)])


def step(low, high, xp):
    """The width of one of the 255 steps of each dimension's range."""
    return divide(high - low, LEVELS, xp)


def scalar_codes(x, low, high, xp):
    """The int8 step of each value, 0 ... 255, as floats of `x`'s dtype.

    An empty range (`low == high`) takes steps of 1, so that its values
    get code 0 rather than a division by zero.
    """
    steps = step(low, high, xp)
    steps = xp.where(xp.equal(steps, 0), 1, steps)
    return xp.clip(xp.floor(divide(x - low, steps, xp)), 0, LEVELS)


def scalar_values(codes, low, high, xp):
    """The value each code stands for: the middle of its step."""
    return low + (codes + 0.5) * step(low, high, xp)
