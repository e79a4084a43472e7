"""Targets for `fit(x)` without labels."""

from keras import ops


def fill_missing_targets(loss, y_true, y_pred, owner):
    """Returns `y_true`, or a stand-in when `loss` ignores its targets.

    `fit(x)` passes `y_true=None`, which Keras' base `Loss.__call__` cannot
    convert to a tensor. Losses that set `needs_targets = False` (the
    in-batch contrastive losses) get zeros of shape `(batch,)` instead; any
    other loss raises, rather than silently training towards zeros.
    """
    if y_true is not None:
        return y_true
    if getattr(loss, "needs_targets", True):
        raise ValueError(
            f"{owner} got y_true=None (`fit` without labels), but its loss "
            f"{loss!r} needs targets. Pass labels to `fit`, or use a loss that "
            "ignores them, such as "
            "keras_mrl.losses.MultipleNegativesRankingLoss."
        )
    return ops.zeros(ops.shape(y_pred)[:1], dtype="float32")
