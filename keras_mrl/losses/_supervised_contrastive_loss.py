import keras
import numpy as np
from keras import ops

from keras_mrl._validation import check_positive_float
from keras_mrl.losses._nested_loss import NestedLoss
from keras_mrl.losses._nested_loss import compute_dtype
from keras_mrl.losses._similarity import prefix_similarities

# Stands in for the excluded self-similarity inside the log-partition. A
# finite value keeps `0 * masked` at 0 where -inf would give NaN, and its
# exponential underflows to 0 for any score of a cosine over a temperature.
_MASKED_LOGIT = -1e9


def _shape(x):
    return tuple(x.shape if hasattr(x, "shape") else np.shape(x))


def _check_shapes(y_true, y_pred):
    pred_shape = _shape(y_pred)
    if len(pred_shape) != 2:
        raise ValueError(
            "SupervisedContrastiveLoss expects y_pred of shape (batch, D), "
            f"got shape {pred_shape}."
        )
    true_shape = _shape(y_true)
    if not (
        len(true_shape) == 1 or (len(true_shape) == 2 and true_shape[1] == 1)
    ):
        raise ValueError(
            "SupervisedContrastiveLoss expects integer labels of shape "
            f"(batch,) or (batch, 1), got shape {true_shape} (y_pred has "
            f"shape {pred_shape})."
        )
    if None not in (true_shape[0], pred_shape[0]) and (
        true_shape[0] != pred_shape[0]
    ):
        raise ValueError(
            "SupervisedContrastiveLoss needs one label per embedding, got "
            f"{true_shape[0]} labels (shape {true_shape}) for {pred_shape[0]} "
            f"embeddings (y_pred of shape {pred_shape})."
        )


def _check_label_dtype(y_true):
    if y_true is None:
        raise ValueError(
            "SupervisedContrastiveLoss needs integer class labels as y_true, "
            "got None. Pass `y` to `fit`."
        )
    if not hasattr(y_true, "dtype"):
        y_true = np.asarray(y_true)
    if isinstance(y_true, np.ndarray) and y_true.dtype.kind in "USO":
        raise ValueError(
            "SupervisedContrastiveLoss expects integer class labels, got "
            f"labels of dtype {y_true.dtype} such as {y_true.flat[0]!r}. Map "
            "them to integer ids first, e.g. with np.unique(labels, "
            "return_inverse=True)."
        )
    dtype = keras.backend.standardize_dtype(y_true.dtype)
    if "int" not in dtype:
        raise ValueError(
            "SupervisedContrastiveLoss expects integer class labels, got "
            f"y_true of dtype {dtype}. Cast the labels, e.g. "
            "`labels.astype('int32')`."
        )


@keras.saving.register_keras_serializable(package="keras_mrl")
class SupervisedContrastiveLoss(NestedLoss):
    """The supervised contrastive loss of Khosla et al. (2020), `L_out`.

    Embeddings `z` are L2-normalised inside. For anchor `i` with positives
    `P(i)`, the other examples of the batch with the same label,

        loss_i = -1/|P(i)| sum_{p in P(i)} log(
            exp(z_i . z_p / t) / sum_{a != i} exp(z_i . z_a / t))

    where `t` is the temperature. An anchor whose label no other example of
    the batch shares has no positive: its loss is 0, so it adds nothing but
    still counts in the mean over the batch. Sample batches with several
    examples per class.

    Labels must have an integer dtype; float labels raise a ValueError even
    when they hold whole numbers, since a float label is usually a mistake
    such as a one-hot or a regression target. The loss is computed in
    float32. Inside `keras_mrl.losses.MatryoshkaLoss(..., nesting_dims=...)` it
    computes every width from one pass over the blocks between widths, like
    `keras_mrl.losses.MultipleNegativesRankingLoss`.

    Args:
        temperature: positive float `t` dividing the cosine similarities.
        reduction: the Keras reduction of the per-example values.
        name: the loss name.
        **kwargs: other `keras.losses.Loss` arguments, such as `dtype`.

    Call arguments:
        y_true: integer labels `(batch,)` or `(batch, 1)`.
        y_pred: float embeddings `(batch, D)`.

    Returns:
        The reduced loss; `call` returns the per-example values `(batch,)`.

    Example:

    >>> loss = keras_mrl.losses.SupervisedContrastiveLoss(temperature=0.1)
    >>> labels = np.array([0, 0, 1, 1])
    >>> y_pred = np.array(
    ...     [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], "float32"
    ... )
    >>> round(float(loss(labels, y_pred)), 4)  # log(1 + 2 * exp(-10))
    0.0001
    """

    def __init__(
        self,
        temperature=0.1,
        *,
        reduction="sum_over_batch_size",
        name="supervised_contrastive_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.temperature = check_positive_float(
            temperature, "temperature", "0.1"
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        # The base class casts y_true to the loss dtype (float32), so the
        # label dtype can only be checked here, before it does.
        _check_label_dtype(y_true)
        _check_shapes(y_true, y_pred)
        return super().__call__(y_true, y_pred, sample_weight)

    def call_prefixes(self, y_true, y_pred, nesting_dims):
        """Returns the per-example losses of every prefix width.

        Args:
            y_true: labels `(batch,)` or `(batch, 1)`. Any dtype is accepted
                here, as `MatryoshkaLoss` passes them cast to float32, which
                keeps class ids below 2**24 exact.
            y_pred: float embeddings `(batch, D)`.
            nesting_dims: the increasing prefix widths, or None for the
                full width.

        Returns:
            A list with one `(batch,)` tensor per width.
        """
        _check_shapes(y_true, y_pred)
        dtype = compute_dtype(self.dtype)
        y_pred = ops.cast(y_pred, dtype)
        labels = ops.reshape(y_true, (-1,))
        batch = ops.shape(y_pred)[0]
        is_self = ops.eye(batch, dtype="bool")
        positives = ops.logical_and(
            ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0)),
            ops.logical_not(is_self),
        )
        positive_counts = ops.sum(ops.cast(positives, dtype), axis=1)
        return [
            self._anchor_losses(logits, is_self, positives, positive_counts)
            for _, (logits,) in prefix_similarities(
                y_pred, [y_pred], nesting_dims, scale=1.0 / self.temperature
            )
        ]

    def _anchor_losses(self, logits, is_self, positives, positive_counts):
        # logsumexp subtracts the row maximum, so this is a stable
        # log-softmax over the candidates a != i.
        log_partition = ops.logsumexp(
            ops.where(is_self, _MASKED_LOGIT, logits), axis=1, keepdims=True
        )
        log_probs = ops.where(positives, logits - log_partition, 0.0)
        return -ops.sum(log_probs, axis=1) / ops.maximum(positive_counts, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config
