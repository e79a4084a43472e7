"""How a loss or a metric reads one granularity out of `y_true`/`y_pred`.

Written once and shared by `MatryoshkaLoss` and `MatryoshkaMetric`:

- stacked mode: `y_pred` is `MatryoshkaDense`'s `(..., G, units)`, and
  granularity `g` is `y_pred[..., g, :]` against the unchanged `y_true`;
- prefix mode: `y_pred` is an embedding `(..., D)`, and granularity `g` is
  the prefix `y_pred[..., :m_g]`; `y_true` is cut the same way only when
  `truncate_targets` is set (a teacher embedding in distillation).
"""

import keras

# Keras losses and metrics that compare y_true and y_pred coordinate by
# coordinate: in prefix mode their target is an embedding as wide as the
# prediction, so it is cut with the prediction unless the user says
# otherwise. The decision never looks at tensor sizes.
_ELEMENTWISE_CLASSES = (
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
)
_ELEMENTWISE_FUNCTIONS = (
    keras.losses.mean_squared_error,
    keras.losses.mean_absolute_error,
    keras.losses.mean_squared_logarithmic_error,
    keras.losses.cosine_similarity,
    keras.losses.huber,
    keras.losses.log_cosh,
)


def cuts_targets_by_default(loss_or_metric):
    """Whether prefix mode cuts `y_true` when `truncate_targets` is None.

    True exactly for Keras' coordinate-by-coordinate losses and metrics
    (MSE, MAE, MSLE, RMSE, cosine similarity, Huber, log-cosh), as classes,
    functions, or metrics wrapping those functions.
    """
    if isinstance(loss_or_metric, _ELEMENTWISE_CLASSES):
        return True
    # A metric built from a function name ("mse") wraps that function.
    fn = getattr(loss_or_metric, "_fn", loss_or_metric)
    return any(fn is candidate for candidate in _ELEMENTWISE_FUNCTIONS)


def check_truncate_targets(truncate_targets):
    if truncate_targets is not None and not isinstance(truncate_targets, bool):
        raise TypeError(
            "`truncate_targets` must be None, True or False, got "
            f"{truncate_targets!r}."
        )
    return truncate_targets


def check_stacked(y_pred, num_granularities, owner):
    """Raises a ValueError when the granularity axis has the wrong size."""
    if len(y_pred.shape) < 2:
        raise ValueError(
            f"{owner} in stacked mode expects y_pred of shape "
            f"(..., G, units) from MatryoshkaDense, got shape "
            f"{tuple(y_pred.shape)}."
        )
    size = y_pred.shape[-2]
    if size is not None and size != num_granularities:
        raise ValueError(
            f"{owner} expects {num_granularities} granularities on axis -2 "
            f"of y_pred, got shape {tuple(y_pred.shape)} with {size}. The "
            "weights / nesting_dims must have one entry per granularity."
        )


def check_prefix(y_pred, nesting_dims, owner):
    """Raises a ValueError when the embedding is narrower than the widths."""
    width = y_pred.shape[-1]
    if width is not None and width < nesting_dims[-1]:
        raise ValueError(
            f"{owner} cuts prefixes of widths {list(nesting_dims)}, but "
            f"y_pred has shape {tuple(y_pred.shape)}, only {width} wide."
        )


def granularity_views(y_true, y_pred, nesting_dims, prefix, truncate_targets):
    """Returns one `(y_true_g, y_pred_g)` pair per granularity.

    Args:
        y_true: the targets, or None.
        y_pred: a stacked `(..., G, units)` or an embedding `(..., D)`.
        nesting_dims: the widths; in stacked mode only their count is used.
        prefix: bool, prefix mode when True, stacked mode when False.
        truncate_targets: bool, whether prefix mode also cuts `y_true`.
    """
    if not prefix:
        return [(y_true, y_pred[..., g, :]) for g in range(len(nesting_dims))]
    views = []
    for m in nesting_dims:
        target = y_true[..., :m] if truncate_targets else y_true
        views.append((target, y_pred[..., :m]))
    return views
