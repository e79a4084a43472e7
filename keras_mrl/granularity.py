"""How a loss or a metric reads one granularity out of `y_true`/`y_pred`.

Written once and shared by `MatryoshkaLoss` and `MatryoshkaMetric`:

- stacked mode: `y_pred` is `MatryoshkaDense`'s `(..., G, units)`, and
  granularity `g` is `y_pred[..., g, :]` against the unchanged `y_true`;
- prefix mode: `y_pred` is an embedding `(..., D)`, and granularity `g` is
  the prefix `y_pred[..., :m_g]`; `y_true` is cut the same way only when
  `truncate_targets` is set (a teacher embedding in distillation).
"""


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
