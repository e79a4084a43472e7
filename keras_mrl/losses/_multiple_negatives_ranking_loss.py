import keras
import numpy as np
from keras import ops

from keras_mrl._replicas import gather_across_replicas
from keras_mrl._replicas import replicated
from keras_mrl._validation import check_bool
from keras_mrl._validation import check_positive_float
from keras_mrl.losses._nested_loss import NestedLoss
from keras_mrl.losses._nested_loss import compute_dtype
from keras_mrl.losses._similarity import prefix_similarities

# Logits are cosines times `scale`, so they lie in [-scale, scale]. Shifting
# the exponentials by `scale` instead of by the row maximum saves a reduction
# pass over every similarity matrix, cannot overflow, and cannot lose the sum
# to underflow while exp(-2 * scale) is a normal float32, i.e. up to 40.
_LARGEST_SHIFTED_SCALE = 40.0


def _log_sum_exp(logits, scale, axis):
    """log(sum(exp)) over `axis`, jointly over a list of logit matrices."""
    if scale > _LARGEST_SHIFTED_SCALE:
        values = [ops.logsumexp(x, axis=axis) for x in logits]
        total = values[0]
        for value in values[1:]:
            total = ops.logaddexp(total, value)
        return total
    total = ops.sum(ops.exp(logits[0] - scale), axis=axis)
    for x in logits[1:]:
        total = total + ops.sum(ops.exp(x - scale), axis=axis)
    return scale + ops.log(total)


def _check_y_pred(y_pred):
    """Raises a ValueError unless y_pred is (batch, 2 + n, D)."""
    shape = y_pred.shape if hasattr(y_pred, "shape") else np.shape(y_pred)
    shape = tuple(shape)
    if len(shape) != 3 or shape[1] is None or shape[1] < 2:
        raise ValueError(
            "MultipleNegativesRankingLoss expects y_pred of shape "
            "(batch, 2 + n, D): an anchor, a positive and n >= 0 hard "
            f"negatives per example, with a static second axis; got shape "
            f"{shape}. Stack the embeddings with "
            "keras.ops.stack([anchor, positive, ...], axis=1)."
        )


@keras.saving.register_keras_serializable(package="keras_mrl")
class MultipleNegativesRankingLoss(NestedLoss):
    """The in-batch softmax loss of embedding models (InfoNCE).

    `y_pred` stacks, for each of the `B` examples, an anchor, its positive and
    `n >= 0` hard negatives: shape `(B, 2 + n, D)`. Anchor `i` is scored
    against all `B * (1 + n)` candidates of the batch (every positive and
    every hard negative) with `scale * cosine`; its loss is the
    cross-entropy of picking positive `i`. The other examples of the batch
    thus serve as negatives, which is why larger batches train better.

    This equals sentence-transformers' `MultipleNegativesRankingLoss` with
    its default `directions=("query_to_doc",)`, and inside
    `keras_mrl.losses.MatryoshkaLoss(..., nesting_dims=...)` its
    `MatryoshkaLoss`.

    With `symmetric=True` each example also gets the positive-to-anchor
    direction, as CLIP does: positive `i` is scored against the `B` anchors
    (hard negatives are not anchors) and must pick anchor `i`. The two
    directions are averaged, which equals sentence-transformers'
    `MultipleNegativesSymmetricRankingLoss`, that is
    `directions=("query_to_doc", "doc_to_query")` with
    `partition_mode="per_direction"`.

    `y_true` is ignored: it may be None, so `model.fit(x)` trains without
    labels. The loss is computed in the wider of its dtype and float32,
    whatever the compute dtype of the model. A zero vector has cosine 0
    with everything instead of NaN.

    Inside `MatryoshkaLoss` in prefix mode the loss computes every width
    through `call_prefixes`, which builds the similarity matrix of each
    prefix from those of its disjoint blocks: all widths cost about one
    full-width similarity matrix instead of one per width.

    `gather_across_replicas=True` makes the negatives global under a
    `tf.distribute` strategy, where each replica computes the loss of its
    slice of the batch: the replicas all-gather their positives and hard
    negatives (and, symmetric, their anchors), so that each replica's
    anchors score against the candidates of the whole global batch, and
    the all-gather's gradient returns to the replica that embedded each
    row. The loss and the gradients then equal one device's on the global
    batch. Without it a replica's anchors see its own slice only. Outside
    a step of several replicas the option changes nothing; JAX's
    `keras.distribution.DataParallel` computes the loss on the global
    batch already.

    Args:
        scale: positive float, the inverse temperature multiplying the
            cosine similarities; 20 is temperature 0.05.
        symmetric: bool, whether to average in the positive-to-anchor
            direction.
        gather_across_replicas: bool, whether each replica of a
            `tf.distribute` step scores against the candidates of every
            replica.
        reduction: the Keras reduction of the per-example values.
        name: the loss name.
        **kwargs: other `keras.losses.Loss` arguments, such as `dtype`.

    Call arguments:
        y_true: ignored; None, or any tensor with a batch axis.
        y_pred: float tensor `(batch, 2 + n, D)`: anchor, positive, then `n`
            hard negatives.

    Returns:
        The reduced loss; `call` returns the per-example values `(batch,)`.

    Example:

    >>> loss = keras_mrl.losses.MultipleNegativesRankingLoss(scale=20.0)
    >>> anchors = np.eye(4, 8, dtype="float32")
    >>> y_pred = np.stack([anchors, anchors], axis=1)  # positive == anchor
    >>> round(float(loss(None, y_pred)), 4)
    0.0
    >>> wide = keras_mrl.losses.MatryoshkaLoss(loss, nesting_dims=[4, 8])
    >>> round(float(wide(None, y_pred)), 4)
    0.0
    """

    def __init__(
        self,
        scale=20.0,
        *,
        symmetric=False,
        gather_across_replicas=False,
        reduction="sum_over_batch_size",
        name="multiple_negatives_ranking_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.scale = check_positive_float(scale, "scale", "20.0")
        self.symmetric = check_bool(symmetric, "symmetric")
        self.gather_across_replicas = check_bool(
            gather_across_replicas, "gather_across_replicas"
        )

    # The positives are found by position, so `fit(x)` needs no labels.
    needs_targets = False

    def __call__(self, y_true, y_pred, sample_weight=None):
        # The shape is checked before any tracing work.
        _check_y_pred(y_pred)
        return super().__call__(y_true, y_pred, sample_weight)

    def call_prefixes(self, y_true, y_pred, nesting_dims):
        """Returns the per-example losses of every prefix width.

        Args:
            y_true: ignored.
            y_pred: float tensor `(batch, 2 + n, D)`.
            nesting_dims: the increasing prefix widths, or None for the
                full width.

        Returns:
            A list with one `(batch,)` tensor per width.
        """
        _check_y_pred(y_pred)
        y_pred = ops.cast(y_pred, compute_dtype(self.dtype))
        anchors = y_pred[:, 0, :]
        candidates = [y_pred[:, 1, :]]
        if y_pred.shape[1] > 2:
            width = y_pred.shape[-1]
            candidates.append(ops.reshape(y_pred[:, 2:, :], (-1, width)))
        if self.gather_across_replicas and replicated():
            return self._gathered_losses(anchors, candidates, nesting_dims)
        return [
            self._ranking_loss(target, logits)
            for target, logits in prefix_similarities(
                anchors,
                candidates,
                nesting_dims,
                scale=self.scale,
                paired=True,
            )
        ]

    def _ranking_loss(self, target, logits):
        # `logits` holds the positives' and the hard negatives' scores in
        # separate matrices and `target` the diagonal of the first, so
        # nothing is sliced at a batch size that may be unknown while
        # tracing.
        forward = _log_sum_exp(logits, self.scale, axis=1) - target
        if not self.symmetric:
            return forward
        backward = _log_sum_exp(logits[:1], self.scale, axis=0) - target
        return 0.5 * (forward + backward)

    def _gathered_losses(self, anchors, candidates, nesting_dims):
        # This replica's anchors score against every replica's candidates
        # (and, symmetric, its positives against every replica's anchors).
        def scores(rows, others, paired=False):
            return prefix_similarities(
                rows, others, nesting_dims, scale=self.scale, paired=paired
            )

        targets = [t for t, _ in scores(anchors, candidates[:1], paired=True)]
        gathered = [gather_across_replicas(c) for c in candidates]
        forward = [m for _, m in scores(anchors, gathered)]
        if self.symmetric:
            everyone = [gather_across_replicas(anchors)]
            backward = [m for _, m in scores(candidates[0], everyone)]
        losses = []
        for g, target in enumerate(targets):
            loss = _log_sum_exp(forward[g], self.scale, axis=1) - target
            if self.symmetric:
                back = _log_sum_exp(backward[g], self.scale, axis=1) - target
                loss = 0.5 * (loss + back)
            losses.append(loss)
        return losses

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "scale": self.scale,
                "symmetric": self.symmetric,
                "gather_across_replicas": self.gather_across_replicas,
            }
        )
        return config
