"""Backend-agnostic tensor operations of keras_mrl."""

import keras
from keras import ops

from keras_mrl.nesting import check_positive_int

# The floor of the squared norm, as in `tf.math.l2_normalize`: a zero prefix
# then scales to zeros instead of dividing 0 by 0.
_EPSILON = 1e-12

# Half-precision squares of typical embedding values underflow or lose most
# of their bits when summed, so the norm is taken in float32.
_HALF_DTYPES = ("float16", "bfloat16")


def inverse_norm(squared_norm):
    """Returns `1 / sqrt(max(squared_norm, 1e-12))`.

    The floor keeps zeros finite: a zero vector times its inverse norm stays
    a zero vector, and scores 0 against everything instead of NaN.

    Shared by `truncate` and the in-batch contrastive losses, so that every
    normalisation in keras_mrl treats zero vectors alike.
    """
    return ops.rsqrt(ops.maximum(squared_norm, _EPSILON))


def validate_dim(dim, width=None, shape=None):
    """Checks a serving width and returns it as an int.

    Args:
        dim: the width to cut to.
        width: optional int, the last dimension of the tensor to cut.
        shape: optional shape of that tensor, named in the error message.

    Raises:
        TypeError: when `dim` is not an int.
        ValueError: when `dim` is below 1 or larger than `width`.
    """
    dim = check_positive_int(dim, "dim")
    if width is not None and dim > width:
        raise ValueError(
            f"`dim`={dim} is wider than the embedding: the input has shape "
            f"{shape}, whose last dimension is {width}. Use dim <= {width}."
        )
    return dim


def truncate(x, dim, normalize=True):
    """Cuts embeddings to their first `dim` features and L2-normalises them.

    This is how a Matryoshka embedding is served at a smaller width. The
    prefix of a unit vector is not a unit vector, so it is re-normalised, as
    sentence-transformers (`truncate_dim`) and OpenAI's `dimensions` do;
    cosine and dot-product search then agree at every width.

    A prefix that is all zeros stays all zeros (no NaN). For float16 and
    bfloat16 inputs the norm is computed in float32 and the result is cast
    back to the input dtype. Integer inputs are normalised in
    `keras.config.floatx()`.

    Args:
        x: a tensor of shape `(..., D)`.
        dim: int, the width to keep, `1 <= dim <= D`.
        normalize: bool, whether to L2-normalise the prefix over the last
            axis. With False this is the plain slice `x[..., :dim]`.

    Returns:
        A tensor of shape `(..., dim)`.

    Raises:
        TypeError: when `dim` is not an int.
        ValueError: when `dim` is below 1 or wider than `x`'s last dimension.

    Example:

    >>> x = np.array([[3.0, 4.0, 12.0]], dtype="float32")
    >>> keras.ops.convert_to_numpy(keras_mrl.ops.truncate(x, 2))
    array([[0.6, 0.8]], dtype=float32)
    >>> keras.ops.convert_to_numpy(keras_mrl.ops.truncate(x, 2, False))
    array([[3., 4.]], dtype=float32)
    """
    x = ops.convert_to_tensor(x)
    shape = tuple(x.shape)
    if not shape:
        raise ValueError(
            f"`truncate` needs an input of shape (..., D), got a scalar of "
            f"shape {shape}."
        )
    dim = validate_dim(dim, shape[-1], shape)
    prefix = x[..., :dim]
    if not normalize:
        return prefix
    dtype = keras.backend.standardize_dtype(prefix.dtype)
    if dtype in _HALF_DTYPES:
        compute_dtype = "float32"
    elif "float" in dtype:
        compute_dtype = dtype
    else:
        dtype = compute_dtype = keras.config.floatx()
    prefix = ops.cast(prefix, compute_dtype)
    squared_norm = ops.sum(ops.square(prefix), axis=-1, keepdims=True)
    scale = inverse_norm(squared_norm)
    return ops.cast(prefix * scale, dtype)
