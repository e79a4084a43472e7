"""The inverse norm every normalisation in keras_mrl uses, once.

`keras_mrl.ops.truncate`, the contrastive losses' cosines (keras.ops) and the
numpy evaluation and retrieval all divide by a norm floored the same way,
so a zero vector scores 0 against everything instead of NaN.
"""

# The floor of the squared norm, as in `tf.math.l2_normalize`.
EPSILON = 1e-12


def inverse_norm(squared_norm, xp):
    """Returns `1 / sqrt(max(squared_norm, 1e-12))`, elementwise.

    Args:
        squared_norm: squared norms, a tensor or a numpy array.
        xp: the array module that computes: `keras.ops` or `numpy`. Both
            spell `sqrt` and `maximum` alike.

    A zero vector gets `1e6`, so scaling it keeps it zero.
    """
    return 1.0 / xp.sqrt(xp.maximum(squared_norm, EPSILON))
