import keras
from keras import ops

from keras_mrl._modes import check_prefix
from keras_mrl._modes import check_stacked
from keras_mrl._modes import cuts_targets
from keras_mrl._modes import fuses_granularities
from keras_mrl._modes import granularity_views
from keras_mrl._modes import repeat_over_granularities
from keras_mrl._validation import check_optional_bool
from keras_mrl._validation import validate_nesting_dims
from keras_mrl._validation import validate_weights
from keras_mrl.losses._cross_entropy import fits_sparse_logits
from keras_mrl.losses._cross_entropy import is_sparse_logits_cross_entropy
from keras_mrl.losses._cross_entropy import sparse_logits_cross_entropy
from keras_mrl.losses._nested_loss import NestedLoss
from keras_mrl.losses._nested_loss import compute_dtype
from keras_mrl.losses._nested_loss import fill_missing_targets


def _as_loss(loss):
    """Returns a `keras.losses.Loss` or a per-example loss function."""
    if isinstance(loss, type):
        raise TypeError(
            f"`loss` must be a loss instance, got the class {loss.__name__}. "
            f"Write {loss.__name__}(...) to pass an instance."
        )
    if isinstance(loss, (str, dict)):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss) or callable(loss):
        return loss
    raise TypeError(
        "`loss` must be a keras.losses.Loss, a loss name such as "
        f"'sparse_categorical_crossentropy', or a function; got {loss!r}."
    )


def _is_keras_loss(loss):
    """Whether `loss` is one of Keras' own losses or loss functions."""
    owner = type(loss) if isinstance(loss, keras.losses.Loss) else loss
    return getattr(owner, "__module__", "").startswith("keras.")


def _per_example(loss, y_true, y_pred):
    # The unreduced `call` of a Loss object; a loss function is unreduced.
    if is_sparse_logits_cross_entropy(loss) and fits_sparse_logits(
        y_true, y_pred
    ):
        return sparse_logits_cross_entropy(y_true, y_pred)
    if isinstance(loss, keras.losses.Loss):
        return loss.call(y_true, y_pred)
    return loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="keras_mrl")
class MatryoshkaLoss(keras.losses.Loss):
    """Sums any Keras loss over the nested granularities of a prediction.

    Returns `sum_g w_g * loss(y_true_g, y_pred_g)` per example: the paper's
    `Matryoshka_CE_Loss` with `relative_importance`, and sentence-transformers'
    `MatryoshkaLoss` with `matryoshka_weights`. `nesting_dims` chooses the
    mode, as it does for `keras_mrl.metrics.MatryoshkaMetric`:

    - stacked mode (no `nesting_dims`): `y_pred` is the output of
      `keras_mrl.layers.MatryoshkaDense`, `(batch, ..., G, units)`, and
      `y_pred_g = y_pred[..., g, :]`. A rank-2 `(batch, D)` tensor raises:
      an embedding needs `nesting_dims`;
    - prefix mode (`nesting_dims=[m_1, ..., m_G]`): `y_pred` is an
      embedding `(..., D)` and `y_pred_g = y_pred[..., :m_g]`.

    What the inner loss gets as `y_true_g` follows from the shapes, not
    from the kind of loss:

    - stacked mode: `y_true` itself, for every granularity. When `y_true`
      has the rank of `y_pred` minus 2 (class ids) or minus 1 (targets
      with a units axis, or a trailing 1), the inner loss is first traced
      once on `y_true` repeated over the G axis and the whole stacked
      `y_pred`; if its unreduced values come out with the shape
      `y_pred.shape[:-1]`, it reduced the last axis only and one call
      scores every granularity (the same numbers, in fewer passes). A loss
      that reduces every axis, such as `keras.losses.Dice`, or that cannot
      be traced, is called once per granularity;
    - prefix mode: `y_true[..., :m_g]` when `y_true` is as wide as the
      embedding (the rank of `y_pred` and the same static last dimension,
      a teacher embedding in distillation), else `y_true` whole (class
      ids, a column of labels). A target of `y_pred`'s rank that is wider
      than the embedding, or whose width is unknown, raises and asks for
      `truncate_targets`, which overrides the rule both ways: True cuts a
      target at least `m_G` wide (a wider teacher), False passes it whole;
    - a `keras_mrl.losses.NestedLoss` (the in-batch contrastive losses)
      gets `y_true` whole, with every width at once, in its
      `call_prefixes`, and cuts what it needs itself; it takes no
      `truncate_targets`.

    `call` returns the per-example values of the inner loss's unreduced
    `call`, so Keras' reduction, `sample_weight`, masks and the loss scaling
    of `tf.distribute` work as for any loss. The sum is computed in the
    wider of the loss dtype and float32.

    To train a random subset of the granularities each step, as
    sentence-transformers' `n_dims_per_step` does, put a
    `keras_mrl.layers.WidthSampling` layer after the head.

    Args:
        loss: a `keras.losses.Loss` instance, a loss name, or a function
            `fn(y_true, y_pred)` returning per-example values.
        nesting_dims: None for stacked mode, or the widths of prefix mode.
        weights: optional list of one weight per granularity, each finite
            and >= 0, at least one > 0; default 1 each.
        truncate_targets: optional bool, whether prefix mode cuts `y_true`
            too; None (the default) follows the shapes, as above.
        reduction: the Keras reduction of the per-example values.
        name: the loss name.
        **kwargs: other `keras.losses.Loss` arguments, such as `dtype`.

    Call arguments:
        y_true: the targets. A loss that ignores them (such as
            `keras_mrl.losses.MultipleNegativesRankingLoss`) accepts None,
            which lets `model.fit(x)` run without labels.
        y_pred: a stacked `(batch, ..., G, units)` or an embedding
            `(..., D)`.

    Returns:
        The reduced loss; `call` returns the per-example values.

    Example:

    >>> loss = keras_mrl.losses.MatryoshkaLoss(
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...     weights=[1.0, 1.0, 2.0],
    ... )
    >>> y_pred = np.random.normal(size=(4, 3, 10)).astype("float32")
    >>> float(loss(np.array([1, 2, 3, 4]), y_pred)) > 0
    True
    >>> distill = keras_mrl.losses.MatryoshkaLoss("mse", nesting_dims=[2, 4])
    >>> float(distill(np.ones((3, 4)), np.ones((3, 4))))
    0.0
    """

    def __init__(
        self,
        loss,
        *,
        nesting_dims=None,
        weights=None,
        truncate_targets=None,
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
        if self.nesting_dims is None and isinstance(self.loss, NestedLoss):
            raise ValueError(
                f"MatryoshkaLoss({type(self.loss).__name__}) cuts an "
                "embedding into prefixes: pass `nesting_dims`, the widths to "
                "train, e.g. nesting_dims=[32, 64, 128, 256]."
            )
        count = None if nesting_dims is None else len(self.nesting_dims)
        # Kept as passed: None stays None in get_config().
        self.weights = (
            None if weights is None else list(validate_weights(weights, count))
        )
        self.truncate_targets = check_optional_bool(
            truncate_targets, "truncate_targets"
        )
        if truncate_targets is not None and self.nesting_dims is None:
            raise ValueError(
                f"MatryoshkaLoss got truncate_targets={truncate_targets} "
                "without `nesting_dims`: stacked mode passes y_true whole to "
                "every granularity, and only prefix mode cuts it. Leave "
                "truncate_targets out, or pass `nesting_dims`."
            )
        if truncate_targets is not None and isinstance(self.loss, NestedLoss):
            raise ValueError(
                f"MatryoshkaLoss({type(self.loss).__name__}) got "
                f"truncate_targets={truncate_targets}, but a NestedLoss "
                "receives y_true whole, with every width, in its "
                "`call_prefixes`, and cuts what it needs itself. Leave "
                "truncate_targets out."
            )
        # Whether the inner loss scores a stacked prediction in one call,
        # per input signature; see `_fuses`.
        self._fusable = {}

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true = fill_missing_targets(self.loss, y_true, y_pred, self.name)
        return super().__call__(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        dims = self.nesting_dims
        if dims is None:
            count = None if self.weights is None else len(self.weights)
            count = check_stacked(y_pred, count, "MatryoshkaLoss")
        else:
            check_prefix(y_pred, dims, "MatryoshkaLoss")
            count = len(dims)
        weights = validate_weights(self.weights, count)
        nested = isinstance(self.loss, NestedLoss)
        cut = (
            dims is not None
            and not nested
            and cuts_targets(
                y_true, y_pred, dims, self.truncate_targets, "MatryoshkaLoss"
            )
        )

        dtype = compute_dtype(self.dtype)
        y_pred = ops.cast(y_pred, dtype)
        if y_true is not None and "float" in keras.backend.standardize_dtype(
            y_true.dtype
        ):
            y_true = ops.cast(y_true, dtype)
        if dims is None and self._fuses(y_true, y_pred):
            repeated = repeat_over_granularities(y_true, y_pred, count)
            values = ops.cast(_per_example(self.loss, repeated, y_pred), dtype)
            return ops.sum(values * ops.convert_to_tensor(weights, dtype), -1)
        if nested:
            losses = self.loss.call_prefixes(y_true, y_pred, dims)
        else:
            losses = [
                _per_example(self.loss, target, pred)
                for target, pred in granularity_views(
                    y_true, y_pred, dims, count, cut
                )
            ]
        total = None
        for w, value in zip(weights, losses):
            term = w * ops.cast(value, dtype)
            total = term if total is None else total + term
        return total

    def _fuses(self, y_true, y_pred):
        """Whether one call of the inner loss scores every granularity."""
        # Shapes cannot show a loss that mixes values along an axis it
        # keeps (a softmax over the G axis, say); Keras' own losses do not,
        # so only they are fused, and any other loss gets each slice alone.
        if y_true is None or not _is_keras_loss(self.loss):
            return False
        key = (
            tuple(y_true.shape),
            keras.backend.standardize_dtype(y_true.dtype),
            tuple(y_pred.shape),
            keras.backend.standardize_dtype(y_pred.dtype),
        )
        # Tracing the inner loss costs milliseconds: once per input
        # signature, not once per eager step.
        if key not in self._fusable:
            self._fusable[key] = fuses_granularities(
                lambda t, p: _per_example(self.loss, t, p), y_true, y_pred
            )
        return self._fusable[key]

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.losses.serialize(self.loss),
            "nesting_dims": self.nesting_dims,
            "weights": self.weights,
            "truncate_targets": self.truncate_targets,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)
