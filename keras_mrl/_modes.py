"""How a loss or a metric reads one granularity out of `y_true`/`y_pred`.

Written once and shared by `MatryoshkaLoss` and `MatryoshkaMetric`, which
choose the mode by the same rule: `nesting_dims` given means prefix mode.

- stacked mode: `y_pred` is `MatryoshkaDense`'s `(batch, ..., G, units)`,
  and granularity `g` is `y_pred[..., g, :]` against the unchanged `y_true`;
- prefix mode: `y_pred` is an embedding `(..., D)`, and granularity `g` is
  the prefix `y_pred[..., :m_g]`; `y_true` is cut the same way when the
  inner loss or metric compares coordinates (a teacher embedding in
  distillation), see `cuts_targets`.
"""

import keras
from keras import ops

# Keras' losses and metrics that compare y_true and y_pred coordinate by
# coordinate: in prefix mode their target is an embedding as wide as the
# prediction, so it is cut with the prediction. This is the one place that
# maps Keras' built-ins; a loss of ours declares `cuts_targets` itself.
_ELEMENTWISE = (
    keras.losses.MeanSquaredError,
    keras.losses.MeanAbsoluteError,
    keras.losses.MeanSquaredLogarithmicError,
    keras.losses.CosineSimilarity,
    keras.losses.Huber,
    keras.losses.LogCosh,
    keras.metrics.MeanSquaredError,
    keras.metrics.MeanAbsoluteError,
    keras.metrics.MeanSquaredLogarithmicError,
    keras.metrics.RootMeanSquaredError,
    keras.metrics.CosineSimilarity,
    keras.metrics.LogCoshError,
    keras.losses.mean_squared_error,
    keras.losses.mean_absolute_error,
    keras.losses.mean_squared_logarithmic_error,
    keras.losses.cosine_similarity,
    keras.losses.huber,
    keras.losses.log_cosh,
)


# Keras' losses whose per-example value reduces the last axis only, so they
# score a stacked `(..., G, units)` in one call, one value per granularity.
# The sparse ones take class ids, which are repeated over the G axis; the
# others take targets with the units axis, repeated the same way.
_SPARSE_LAST_AXIS = (
    keras.losses.SparseCategoricalCrossentropy,
    keras.losses.sparse_categorical_crossentropy,
)
_DENSE_LAST_AXIS = (
    keras.losses.CategoricalCrossentropy,
    keras.losses.BinaryCrossentropy,
    keras.losses.MeanSquaredError,
    keras.losses.MeanAbsoluteError,
    keras.losses.Huber,
    keras.losses.LogCosh,
    keras.losses.KLDivergence,
    keras.losses.categorical_crossentropy,
    keras.losses.binary_crossentropy,
    keras.losses.mean_squared_error,
    keras.losses.mean_absolute_error,
    keras.losses.huber,
    keras.losses.log_cosh,
    keras.losses.kl_divergence,
)


def _is_one_of(obj, kinds):
    return any(
        obj is kind or (isinstance(kind, type) and isinstance(obj, kind))
        for kind in kinds
    )


def stacked_targets(loss, y_true, y_pred):
    """`y_true` repeated over the G axis of a stacked `y_pred`, or None.

    One call of a last-axis loss on the whole `(..., G, units)` replaces G
    calls on its slices: one fused softmax cross-entropy instead of G, the
    same numbers. None means `loss` is not known to reduce the last axis
    only, or `y_true` does not have a shape it can be repeated from.
    """
    if y_true is None:
        return None
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if _is_one_of(loss, _SPARSE_LAST_AXIS):
        if true_rank == pred_rank - 1 and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, axis=-1)
            true_rank -= 1
        if true_rank != pred_rank - 2:
            return None
        return ops.broadcast_to(
            ops.expand_dims(y_true, -1), ops.shape(y_pred)[:-1]
        )
    if _is_one_of(loss, _DENSE_LAST_AXIS) and true_rank == pred_rank - 1:
        return ops.broadcast_to(ops.expand_dims(y_true, -2), ops.shape(y_pred))
    return None


def cuts_targets(loss_or_metric, truncate_targets):
    """Whether prefix mode cuts `y_true` along with `y_pred`.

    Args:
        loss_or_metric: the inner loss or metric, or the function a metric
            was built from.
        truncate_targets: the user's choice; None for the inner object's
            own declaration (`cuts_targets` attribute) or, for Keras'
            built-ins, True exactly for the coordinate-by-coordinate ones.
            The decision never looks at tensor sizes.
    """
    if truncate_targets is not None:
        return truncate_targets
    declared = getattr(loss_or_metric, "cuts_targets", None)
    if declared is not None:
        return bool(declared)
    return _is_one_of(loss_or_metric, _ELEMENTWISE)


def keras_mask(x):
    """Returns the Keras mask that travels with tensor `x`, or None.

    Keras keeps a tensor's mask in its own attribute store (a side table on
    JAX, whose arrays take no attributes) and exports no reader. Its own
    metrics read it through this private function, and so do ours, here
    only.
    """
    from keras.src.backend import get_keras_mask

    return get_keras_mask(x)


def check_stacked(y_pred, num_granularities, owner):
    """Checks a stacked `(batch, ..., G, units)` and returns its `G`.

    Args:
        y_pred: the prediction.
        num_granularities: the expected `G`, or None to accept any.
        owner: the class name, for the messages.
    """
    shape = tuple(y_pred.shape)
    if len(shape) < 3:
        raise ValueError(
            f"{owner} without `nesting_dims` reads the stacked output of "
            "keras_mrl.layers.MatryoshkaDense, (batch, ..., G, units), "
            f"but got "
            f"y_pred of shape {shape}. For an embedding, pass `nesting_dims` "
            "(the widths to cut it to)."
        )
    size = shape[-2]
    if size is None:
        if num_granularities is None:
            raise ValueError(
                f"{owner} cannot tell the number of granularities: y_pred "
                f"has shape {shape}, with an unknown axis -2. Pass "
                "`weights=[...]` with one entry per granularity."
            )
        return num_granularities
    if num_granularities is not None and size != num_granularities:
        raise ValueError(
            f"{owner} expects {num_granularities} granularities on axis -2 "
            f"of y_pred, got shape {shape} with {size}. Its weights or the "
            "head's widths must have one entry per granularity of the head."
        )
    return size


def check_prefix(y_pred, nesting_dims, owner):
    """Raises a ValueError when the embedding is narrower than the widths."""
    shape = tuple(y_pred.shape)
    width = shape[-1] if shape else None
    if not shape or (width is not None and width < nesting_dims[-1]):
        raise ValueError(
            f"{owner} cuts prefixes of widths {list(nesting_dims)}, but "
            f"y_pred has shape {shape}, only {width} wide."
        )


def granularity_views(y_true, y_pred, nesting_dims, num_stacked, cut_targets):
    """Returns one `(y_true_g, y_pred_g)` pair per granularity.

    Args:
        y_true: the targets, or None.
        y_pred: a stacked `(..., G, units)` or an embedding `(..., D)`.
        nesting_dims: the widths of prefix mode, or None for stacked mode.
        num_stacked: `G` of stacked mode.
        cut_targets: bool, whether prefix mode also cuts `y_true`.
    """
    if nesting_dims is None:
        return [(y_true, y_pred[..., g, :]) for g in range(num_stacked)]
    return [
        (y_true[..., :m] if cut_targets else y_true, y_pred[..., :m])
        for m in nesting_dims
    ]
