"""Backend-agnostic tensor operations of keras_mrl."""

import keras
from keras import ops

from keras_mrl._norms import inverse_norm
from keras_mrl._validation import check_bool
from keras_mrl._validation import check_dim

__all__ = ["truncate"]

# Half-precision squares of typical embedding values underflow or lose most
# of their bits when summed, so the norm is taken in float32.
_HALF_DTYPES = ("float16", "bfloat16")


def truncate(x, *, dim, normalize=True):
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
    >>> keras.ops.convert_to_numpy(keras_mrl.ops.truncate(x, dim=2))
    array([[0.6, 0.8]], dtype=float32)
    >>> cut = keras_mrl.ops.truncate(x, dim=2, normalize=False)
    >>> keras.ops.convert_to_numpy(cut)
    array([[3., 4.]], dtype=float32)
    """
    x = ops.convert_to_tensor(x)
    shape = tuple(x.shape)
    if not shape:
        raise ValueError(
            f"`truncate` needs an input of shape (..., D), got a scalar of "
            f"shape {shape}."
        )
    dim = check_dim(dim, shape[-1], shape)
    normalize = check_bool(normalize, "normalize")
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
    scale = inverse_norm(squared_norm, ops)
    return ops.cast(prefix * scale, dtype)
