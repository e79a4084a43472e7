"""How a loss or a metric reads one granularity out of `y_true`/`y_pred`.

Written once and shared by `MatryoshkaLoss` and `MatryoshkaMetric`, which
choose the mode by the same rule: `nesting_dims` given means prefix mode.

- stacked mode: `y_pred` is `MatryoshkaDense`'s `(batch, ..., G, units)`,
  and granularity `g` is `y_pred[..., g, :]` against the unchanged `y_true`;
- prefix mode: `y_pred` is an embedding `(..., D)`, and granularity `g` is
  the prefix `y_pred[..., :m_g]`; `y_true` is cut the same way when it is
  as wide as the embedding (a teacher embedding in distillation), see
  `cuts_targets`.

Both decisions read shapes, never the type of the inner loss or metric.
"""

import keras
from keras import ops


def _shape(x):
    return tuple(x.shape)


def cuts_targets(y_true, y_pred, nesting_dims, truncate_targets, owner):
    """Whether prefix mode cuts `y_true` to each width along with `y_pred`.

    A target as wide as the embedding is cut with it: it has the rank of
    `y_pred` and the same static last dimension. A target of another rank
    (class ids) or narrower (a column of labels) is passed whole. What the
    shapes cannot settle raises instead of guessing: a target of the same
    rank that is wider than the embedding (a wider teacher, or something
    else), or one whose last dimension, or the embedding's, is unknown.

    Args:
        y_true: the targets.
        y_pred: the embedding `(..., D)`.
        nesting_dims: the widths of prefix mode.
        truncate_targets: the user's choice, which overrides the shape
            rule; None to follow it. True needs a target of `y_pred`'s
            rank at least `nesting_dims[-1]` wide.
        owner: the class name, for the messages.
    """
    if truncate_targets is False:
        return False
    true_shape, pred_shape = _shape(y_true), _shape(y_pred)
    same_rank = len(true_shape) == len(pred_shape)
    true_width = true_shape[-1] if true_shape else None
    if truncate_targets:
        if not same_rank or (
            true_width is not None and true_width < nesting_dims[-1]
        ):
            raise ValueError(
                f"{owner} got truncate_targets=True, which cuts y_true to "
                f"each of the widths {list(nesting_dims)}, but y_true has "
                f"shape {true_shape} against y_pred of shape {pred_shape}. "
                "A target to cut must have the rank of y_pred and be at "
                f"least {nesting_dims[-1]} wide; pass truncate_targets=False "
                "(or leave it out) to pass y_true whole."
            )
        return True
    if not same_rank:
        return False
    width = pred_shape[-1]
    if true_width is None or width is None:
        problem = "unknown widths"
    elif true_width > width:
        problem = "a target wider than the embedding"
    else:
        return true_width == width
    raise ValueError(
        f"{owner} cuts y_true with each prefix when it is as wide as y_pred "
        f"and passes it whole when it is narrower, but got {problem}: "
        f"y_true of shape {true_shape}, y_pred of shape {pred_shape}. Pass "
        "truncate_targets=True to cut y_true to each of the widths "
        f"{list(nesting_dims)} (a teacher embedding), or "
        "truncate_targets=False to pass it whole."
    )


def _granularity_axis(y_true, y_pred):
    """Where `y_true` takes the G axis of a stacked `y_pred`, or None.

    Class ids have the rank of `y_pred` minus 2 and take it last; targets
    with a units axis (one-hot, probabilities, regression values, or a
    trailing 1) have the rank minus 1 and take it before that axis.
    """
    offset = len(_shape(y_pred)) - len(_shape(y_true))
    return {2: -1, 1: -2}.get(offset)


def repeat_over_granularities(y_true, y_pred, num_stacked):
    """`y_true` with the G axis of a stacked `y_pred`.

    Granularity `g` of the result is `y_true` itself, so one call of a loss
    on the result and the whole `(..., G, units)` scores every granularity
    as G calls on the slices would, where `fuses_granularities` says so.
    """
    axis = _granularity_axis(y_true, y_pred) + len(_shape(y_true)) + 1
    shape = tuple(ops.shape(y_true))
    return ops.broadcast_to(
        ops.expand_dims(y_true, axis),
        shape[:axis] + (num_stacked,) + shape[axis:],
    )


class _PerExample(keras.Operation):
    # `Operation.compute_output_spec` traces `call` on each backend's own
    # shape-only tensors (jax.eval_shape, a TensorFlow FuncGraph, torch's
    # meta device), so a loss written with backend ops is traced too.
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def fuses_granularities(per_example, y_true, y_pred):
    """Whether one call of `per_example` scores a whole stacked `y_pred`.

    True when `per_example`, given the targets of
    `repeat_over_granularities` and the whole `(..., G, units)`, returns
    values of shape `y_pred.shape[:-1]`: it reduced the last axis only, so
    its value at `[..., g]` is granularity `g`'s. The shapes are traced,
    not computed, with a stand-in for `G` that equals no other dimension,
    so that a loss reducing another axis of the same size is not taken for
    one that reduces the last. Targets whose rank has no place for the G
    axis, a loss that reduces every axis (such as `keras.losses.Dice`) and
    one that cannot be traced are not fused.

    Args:
        per_example: `fn(y_true, y_pred)` returning unreduced values.
        y_true: the targets.
        y_pred: the stacked prediction.
    """
    true_shape, pred_shape = _shape(y_true), _shape(y_pred)
    axis = _granularity_axis(y_true, y_pred)
    if axis is None:
        return False
    axis += len(true_shape) + 1
    taken = set(true_shape) | set(pred_shape)
    size = next(n for n in range(2, len(taken) + 3) if n not in taken)
    probe_true = true_shape[:axis] + (size,) + true_shape[axis:]
    probe_pred = pred_shape[:-2] + (size,) + pred_shape[-1:]
    try:
        values = _PerExample(per_example).compute_output_spec(
            keras.KerasTensor(probe_true, y_true.dtype),
            keras.KerasTensor(probe_pred, y_pred.dtype),
        )
    except Exception:
        # A loss that cannot be traced at this shape is called once per
        # granularity instead, where any real error of its own surfaces.
        return False
    return tuple(getattr(values, "shape", ())) == probe_pred[:-1]


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
