import keras

from keras_mrl._validation import check_bool
from keras_mrl._validation import check_dim
from keras_mrl.ops import truncate


@keras.saving.register_keras_serializable(package="keras_mrl")
class Truncate(keras.layers.Layer):
    """Serves a Matryoshka embedding at a smaller width.

    Appended to an encoder, this layer keeps the first `dim` features of the
    embedding and, by default, L2-normalises them (see
    `keras_mrl.ops.truncate`), so the saved model emits ready-to-index
    vectors of the chosen width. It has no weights.

    Args:
        dim: int, the width to keep, at least 1 and at most the input width.
        normalize: bool, whether to L2-normalise the kept prefix.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor of shape `(..., D)` with `D >= dim`.

    Returns:
        A tensor of shape `(..., dim)`, in the layer's compute dtype.

    Example:

    >>> encoder = keras.Sequential(
    ...     [keras.Input((32,)), keras.layers.Dense(64)]
    ... )
    >>> serving = keras.Sequential(
    ...     [encoder, keras_mrl.layers.Truncate(16)]
    ... )
    >>> serving.predict(np.ones((2, 32)), verbose=0).shape
    (2, 16)
    """

    def __init__(self, dim, *, normalize=True, **kwargs):
        super().__init__(**kwargs)
        self.dim = check_dim(dim)
        self.normalize = check_bool(normalize, "normalize")
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if not input_shape:
            raise ValueError(
                f"Truncate needs inputs of shape (..., D), got shape "
                f"{input_shape}."
            )
        check_dim(self.dim, input_shape[-1], input_shape)
        if input_shape[-1] is not None:
            self.input_spec = keras.layers.InputSpec(
                min_ndim=1, axes={-1: input_shape[-1]}
            )

    def call(self, inputs):
        return truncate(inputs, dim=self.dim, normalize=self.normalize)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        check_dim(self.dim, input_shape[-1], input_shape)
        return input_shape[:-1] + (self.dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim, "normalize": self.normalize})
        return config
