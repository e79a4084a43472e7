import keras
from keras import ops

from keras_mrl.granularity import check_prefix
from keras_mrl.granularity import check_stacked
from keras_mrl.granularity import check_truncate_targets
from keras_mrl.granularity import cuts_targets_by_default
from keras_mrl.granularity import granularity_views
from keras_mrl.losses.targets import fill_missing_targets
from keras_mrl._validation import check_positive_int
from keras_mrl.nesting import validate_nesting_dims
from keras_mrl.nesting import validate_weights


def _as_loss(loss):
    """Returns a `keras.losses.Loss` or a per-example loss function."""
    if isinstance(loss, (str, dict)):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss) or callable(loss):
        return loss
    raise TypeError(
        "`loss` must be a keras.losses.Loss, a loss name such as "
        f"'sparse_categorical_crossentropy', or a function; got {loss!r}."
    )


def _per_example(loss, y_true, y_pred):
    # The unreduced `call` of a Loss object; a loss function is unreduced.
    if isinstance(loss, keras.losses.Loss):
        return loss.call(y_true, y_pred)
    return loss(y_true, y_pred)


def _jax_step_noise(seed_generator, num_granularities, y_pred):
    """Uniform noise for the granularity mask on the JAX backend.

    The JAX trainer threads only model and metric variables through its
    jitted step, so a loss's SeedGenerator state stays at its initial value
    and `keras.random` would draw the same mask at every step. A fingerprint
    of the batch's predictions is folded into the generator's key instead:
    the masks stay reproducible for a seed and change from step to step.
    The fingerprint adds the predictions' bit patterns as integers, which
    wrap instead of rounding: no training dynamics conserve it, and the sum
    does not depend on how it is split over devices. XLA may still round
    sharded predictions differently in the last bit, so the masks of a
    sharded run are not bit-for-bit those of a one-device run.
    """
    import jax
    import jax.numpy as jnp

    bits = jax.lax.bitcast_convert_type(ops.cast(y_pred, "float32"), "uint32")
    fingerprint = jnp.sum(bits, dtype="uint32")
    key = jax.random.fold_in(seed_generator.next(), fingerprint)
    return jax.random.uniform(key, (num_granularities,))


@keras.saving.register_keras_serializable(package="keras_mrl")
class MatryoshkaLoss(keras.losses.Loss):
    """Sums any Keras loss over the nested granularities of a prediction.

    Returns `sum_g w_g * loss(y_true_g, y_pred_g)` per example: the paper's
    `Matryoshka_CE_Loss` with `relative_importance`, and sentence-transformers'
    `MatryoshkaLoss` with `matryoshka_weights`. The mode is chosen by
    `nesting_dims`:

    - stacked mode (`nesting_dims=None`): `y_pred` is `MatryoshkaDense`'s
      output `(..., G, units)` and `y_pred_g = y_pred[..., g, :]`;
    - prefix mode (`nesting_dims` given): `y_pred` is an embedding
      `(..., D)` and `y_pred_g = y_pred[..., :m_g]`.

    In prefix mode `y_true` is cut to `m_g` too when `truncate_targets` is
    True: the teacher embedding of a distillation loss. Its default (None)
    cuts the target exactly when the inner loss is one of Keras' coordinate
    by coordinate losses (`MeanSquaredError`, `MeanAbsoluteError`,
    `MeanSquaredLogarithmicError`, `CosineSimilarity`, `Huber`, `LogCosh`, or
    their functions), whose target must be as wide as the prediction. The
    decision never looks at tensor sizes.

    `call` returns the per-example values of the inner loss's unreduced
    `call`, so Keras' reduction, `sample_weight` and the loss scaling of
    `tf.distribute` work as for any loss. The sum is computed in float32.

    With `n_dims_per_step=k`, each step trains a random subset of `k`
    granularities, as sentence-transformers does: a 0/1 mask drawn with
    `keras.random` keeps shapes static under XLA. The mask saves no FLOPs:
    every granularity's loss is still computed, then masked. On JAX the
    mask's key also folds in a fingerprint of the predictions, since the
    JAX trainer does not carry a loss's random state from step to step (see
    docs/scaling.md). The mask also
    applies in `evaluate`, so `val_loss` then covers a random subset of the
    widths; a `keras_mrl.MatryoshkaMetric` reports every width.

    Args:
        loss: a `keras.losses.Loss`, a loss name, or a function
            `fn(y_true, y_pred)` returning per-example values.
        weights: optional list of one weight per granularity; default 1.
        nesting_dims: None for stacked mode, or the widths of prefix mode.
        truncate_targets: optional bool, whether prefix mode cuts `y_true`
            too; see above for the default.
        n_dims_per_step: optional int in `[1, G]`, the number of
            granularities trained per step.
        seed: optional int seed of the per-step mask.
        reduction: the Keras reduction of the per-example values.
        name: the loss name.
        **kwargs: other `keras.losses.Loss` arguments, such as `dtype`.

    Call arguments:
        y_true: the targets. A loss that ignores them (such as
            `keras_mrl.losses.MultipleNegativesRankingLoss`) accepts None,
            which lets `model.fit(x)` run without labels.
        y_pred: a stacked `(..., G, units)` or an embedding `(..., D)`.

    Returns:
        The reduced loss; `call` returns the per-example values.

    Example:

    >>> loss = keras_mrl.MatryoshkaLoss(
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...     weights=[1.0, 1.0, 2.0],
    ... )
    >>> y_pred = np.random.normal(size=(4, 3, 10)).astype("float32")
    >>> float(loss(np.array([1, 2, 3, 4]), y_pred)) > 0
    True
    """

    def __init__(
        self,
        loss,
        weights=None,
        nesting_dims=None,
        truncate_targets=None,
        n_dims_per_step=None,
        seed=None,
        reduction="sum_over_batch_size",
        name="matryoshka_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.loss = _as_loss(loss)
        self.nesting_dims = (
            None
            if nesting_dims is None
            else list(validate_nesting_dims(nesting_dims))
        )
        if self.nesting_dims is not None:
            weights = validate_weights(weights, len(self.nesting_dims))
        elif weights is not None:
            weights = validate_weights(weights, len(weights))
        self.weights = None if weights is None else list(weights)
        self.truncate_targets = check_truncate_targets(truncate_targets)
        self.n_dims_per_step = n_dims_per_step
        self.seed = seed
        if n_dims_per_step is not None:
            self._check_dims_per_step(self._num_granularities())
            self._seed_generator = keras.random.SeedGenerator(seed)

    def _num_granularities(self):
        if self.nesting_dims is not None:
            return len(self.nesting_dims)
        if self.weights is not None:
            return len(self.weights)
        return None

    def _check_dims_per_step(self, num_granularities):
        k = check_positive_int(self.n_dims_per_step, "n_dims_per_step")
        if num_granularities is not None and k > num_granularities:
            raise ValueError(
                f"`n_dims_per_step`={k} exceeds the {num_granularities} "
                "granularities. Use a value from 1 to "
                f"{num_granularities}."
            )

    def _granularity_mask(self, num_granularities, y_pred):
        """A 0/1 vector with `n_dims_per_step` ones at random positions."""
        if keras.backend.backend() == "jax":
            noise = _jax_step_noise(
                self._seed_generator, num_granularities, y_pred
            )
        else:
            noise = keras.random.uniform(
                (num_granularities,), seed=self._seed_generator
            )
        kth_largest = ops.top_k(noise, self.n_dims_per_step)[0][-1]
        return ops.cast(noise >= kth_largest, "float32")

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true = fill_missing_targets(self.loss, y_true, y_pred, self.name)
        return super().__call__(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        prefix = self.nesting_dims is not None
        if prefix:
            check_prefix(y_pred, self.nesting_dims, "MatryoshkaLoss")
            dims = self.nesting_dims
        else:
            num = self._num_granularities() or y_pred.shape[-2]
            if num is None:
                raise ValueError(
                    "MatryoshkaLoss cannot tell the number of granularities: "
                    f"y_pred has shape {tuple(y_pred.shape)}, with an unknown "
                    "axis -2. Pass `weights=[...]` with one entry per "
                    "granularity."
                )
            check_stacked(y_pred, num, "MatryoshkaLoss")
            dims = [None] * num
        if self.n_dims_per_step is not None:
            self._check_dims_per_step(len(dims))
        weights = validate_weights(self.weights, len(dims))
        truncate = self.truncate_targets
        if truncate is None:
            truncate = cuts_targets_by_default(self.loss)

        # Reduce in float32 whatever the compute dtype of the head.
        y_pred = ops.cast(y_pred, "float32")
        if y_true is not None and "float" in str(
            keras.backend.standardize_dtype(y_true.dtype)
        ):
            y_true = ops.cast(y_true, "float32")

        losses = self._granularity_losses(
            y_true, y_pred, dims, prefix, truncate
        )
        if self.n_dims_per_step is not None:
            mask = self._granularity_mask(len(dims), y_pred)
            weights = [w * mask[g] for g, w in enumerate(weights)]
        total = weights[0] * losses[0]
        for w, value in zip(weights[1:], losses[1:]):
            total = total + w * value
        return total

    def _granularity_losses(self, y_true, y_pred, dims, prefix, truncate):
        # A loss that knows how to share work between prefixes (the in-batch
        # contrastive losses reuse one Gram matrix per block) does so here.
        if prefix and not truncate and hasattr(self.loss, "call_prefixes"):
            return [
                ops.cast(value, "float32")
                for value in self.loss.call_prefixes(y_true, y_pred, dims)
            ]
        views = granularity_views(y_true, y_pred, dims, prefix, truncate)
        return [
            ops.cast(_per_example(self.loss, target, pred), "float32")
            for target, pred in views
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "loss": keras.losses.serialize(self.loss),
                "weights": self.weights,
                "nesting_dims": self.nesting_dims,
                "truncate_targets": self.truncate_targets,
                "n_dims_per_step": self.n_dims_per_step,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)
