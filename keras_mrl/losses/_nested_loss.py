"""The base of losses that compute every nested prefix width in one pass."""

import abc

import keras
from keras import ops


def compute_dtype(loss_dtype):
    """The dtype a loss computes in: the wider of its dtype and float32.

    Half-precision logits or cosines lose the bits a sum of G losses needs,
    so float16 and bfloat16 compute in float32; a float64 loss stays so.
    """
    dtype = keras.backend.standardize_dtype(loss_dtype)
    return "float64" if dtype == "float64" else "float32"


class NestedLoss(keras.losses.Loss, abc.ABC):
    """A loss that shares its work between the prefixes of an embedding.

    Inside `keras_mrl.losses.MatryoshkaLoss(..., nesting_dims=...)`, a plain
    loss is called once per width on the sliced prefix. A `NestedLoss`
    instead returns every width's per-example values from `call_prefixes`,
    and may reuse the work of the narrower widths (the in-batch contrastive
    losses build each prefix's similarity matrix from those of its blocks).
    It gets `y_true` whole and the full-width `y_pred` with the widths, and
    cuts what it needs itself: `MatryoshkaLoss` applies no rule of its own
    to the targets of a `NestedLoss`.

    Subclasses implement `call_prefixes`; `call` is the full-width case.
    The class attribute `needs_targets` is False when `y_true` is ignored,
    so `fit(x)` without labels works (None is then replaced by zeros).
    """

    needs_targets = True

    @abc.abstractmethod
    def call_prefixes(self, y_true, y_pred, nesting_dims):
        """Returns the per-example losses of every prefix width.

        Args:
            y_true: the targets, as `call` takes them.
            y_pred: the full-width predictions.
            nesting_dims: the increasing prefix widths, or None for the
                full width only.

        Returns:
            A list with one per-example tensor per width, in the loss's
            compute dtype.
        """

    def call(self, y_true, y_pred):
        return self.call_prefixes(y_true, y_pred, None)[0]

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true = fill_missing_targets(self, y_true, y_pred, self.name)
        return super().__call__(y_true, y_pred, sample_weight)


def fill_missing_targets(loss, y_true, y_pred, owner):
    """Returns `y_true`, or a stand-in when `loss` ignores its targets.

    `fit(x)` passes `y_true=None`, which Keras' base `Loss.__call__` cannot
    convert to a tensor. A `NestedLoss` with `needs_targets = False` gets
    zeros of shape `(batch,)` instead; any other loss raises, rather than
    silently training towards zeros.
    """
    if y_true is not None:
        return y_true
    if not isinstance(loss, NestedLoss) or loss.needs_targets:
        raise ValueError(
            f"{owner} got y_true=None (`fit` without labels), but its loss "
            f"{loss!r} needs targets. Pass labels to `fit`, or use a loss that "
            "ignores them, such as "
            "keras_mrl.losses.MultipleNegativesRankingLoss."
        )
    return ops.zeros(ops.shape(y_pred)[:1], dtype="float32")
