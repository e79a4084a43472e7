import keras
from keras import ops

from keras_mrl._validation import check_optional_int
from keras_mrl._validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_mrl")
class WidthSampling(keras.layers.Layer):
    """Trains a random subset of a Matryoshka head's granularities a step.

    Put after a `keras_mrl.layers.MatryoshkaDense` head, whose output stacks the
    `G` granularities on axis -2. At every training step the layer draws
    `n_dims_per_step` of them at random; the others pass through
    `stop_gradient`. The output's values never change, so the loss and the
    metrics still report every width, but only the drawn widths send a
    gradient: the update is that of sentence-transformers'
    `MatryoshkaLoss(..., n_dims_per_step=k)`, which sums the drawn widths'
    losses only. Outside `training=True` (`evaluate`, `predict`) the layer
    is the identity.

    The draw comes from the layer's `keras.random.SeedGenerator`, whose
    state is a model variable: every Keras trainer (TensorFlow, JAX,
    PyTorch) carries it from step to step, so a seed gives the same
    sequence of draws on every backend's trainer, and every device of a
    data-parallel run draws the same widths. Every granularity's loss is
    still computed: the layer saves no compute, it changes which widths
    are trained.

    Args:
        n_dims_per_step: int in `[1, G]`, the number of granularities
            trained per step.
        seed: optional int seed of the draws.
        **kwargs: base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: the stacked `(batch, ..., G, units)` of a MatryoshkaDense.
        training: bool, whether to sample (True in `fit`).

    Returns:
        The inputs, unchanged in value.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((32,)),
    ...     keras_mrl.layers.MatryoshkaDense(10, nesting_dims=[8, 16, 32]),
    ...     keras_mrl.layers.WidthSampling(2, seed=0),
    ... ])
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_mrl.losses.MatryoshkaLoss(
    ...         "sparse_categorical_crossentropy"
    ...     ),
    ... )
    >>> x, y = np.ones((8, 32)), np.zeros((8,), "int32")
    >>> _ = model.fit(x, y, epochs=1, verbose=0)
    """

    def __init__(self, n_dims_per_step, *, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.n_dims_per_step = check_positive_int(
            n_dims_per_step, "n_dims_per_step"
        )
        self.seed = check_optional_int(seed, "seed")
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3 or input_shape[-2] is None:
            raise ValueError(
                "WidthSampling reads the stacked (batch, ..., G, units) "
                "output of keras_mrl.layers.MatryoshkaDense with a known G, "
                "got "
                f"inputs of shape {input_shape}. Put it after the head."
            )
        count = input_shape[-2]
        if self.n_dims_per_step > count:
            raise ValueError(
                f"`n_dims_per_step`={self.n_dims_per_step} exceeds the "
                f"{count} granularities of inputs of shape {input_shape}. "
                f"Use a value from 1 to {count}."
            )

    def call(self, inputs, training=None):
        if not training:
            return inputs
        count = inputs.shape[-2]
        noise = keras.random.uniform((count,), seed=self.seed_generator)
        kth_largest = ops.top_k(noise, self.n_dims_per_step)[0][-1]
        keep = ops.cast(ops.expand_dims(noise >= kth_largest, -1), inputs.dtype)
        # x * 1 + x * 0 is x exactly: only the gradient is gated.
        return inputs * keep + ops.stop_gradient(inputs) * (1 - keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"n_dims_per_step": self.n_dims_per_step, "seed": self.seed}
        )
        return config
