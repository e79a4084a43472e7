import numbers

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

# The logit of a candidate the guide masks. Finite, so that a row whose
# hard negatives are all masked has a finite log-sum-exp and gradient, and
# low enough that its exponential is 0 beside any unmasked logit.
_MASKED_LOGIT = -1e30


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


def _check_guide_margin(guide_margin):
    if guide_margin is None:
        return None
    if isinstance(guide_margin, (bool, np.bool_)) or not isinstance(
        guide_margin, numbers.Real
    ):
        raise TypeError(
            "`guide_margin` must be None (no guide) or a number >= 0 such "
            f"as 0.0, got {guide_margin!r}."
        )
    if not np.isfinite(guide_margin) or guide_margin < 0:
        raise ValueError(
            "`guide_margin` must be a finite number >= 0 such as 0.0, got "
            f"guide_margin={guide_margin}."
        )
    return float(guide_margin)


def _check_guide(y_true, y_pred, guide_margin):
    """Raises unless y_true holds a guide embedding per branch of y_pred."""
    shape = tuple(getattr(y_true, "shape", np.shape(y_true)))
    branches = tuple(y_pred.shape)[1]
    if len(shape) != 3 or shape[1] != branches:
        raise ValueError(
            f"MultipleNegativesRankingLoss(guide_margin={guide_margin}) "
            "reads a guide model's embeddings of every branch from y_true, "
            f"shape (batch, {branches}, D_guide), and got y_true of shape "
            f"{shape}. Train with keras_mrl.models.ContrastiveModel("
            "embedder, guide=guide_model), which passes them, or leave "
            "guide_margin None."
        )


def _anchors_and_candidates(stacked):
    """The anchors `(B, D)` and the candidate matrices of `(B, 2 + n, D)`:
    the positives `(B, D)`, then the hard negatives `(B * n, D)` if any."""
    candidates = [stacked[:, 1, :]]
    if stacked.shape[1] > 2:
        width = stacked.shape[-1]
        candidates.append(ops.reshape(stacked[:, 2:, :], (-1, width)))
    return stacked[:, 0, :], candidates


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

    `y_true` is ignored unless `guide_margin` is set: it may be None, so
    `model.fit(x)` trains without labels.

    With `guide_margin` (GISTEmbed's guided in-batch negatives, Solatorio,
    2024, as sentence-transformers' `GISTEmbedLoss` with its "absolute"
    margin), `y_true` holds a frozen guide model's embeddings of the same
    branches, `(B, 2 + n, D_guide)`, which
    `keras_mrl.models.ContrastiveModel(embedder, guide=...)` passes. Each
    candidate whose guide cosine to the anchor exceeds the guide cosine of
    the anchor's positive minus `guide_margin` is masked out of the
    anchor's softmax as a likely false negative; the positive never is.
    With `symmetric=True` the positive-to-anchor direction masks the
    anchors alike, against the same pair's guide cosine. The masks depend
    on the guide only, so inside `MatryoshkaLoss` every width uses the same
    ones, from the guide embeddings at their full width.

    The loss is computed in the wider of its dtype and float32, whatever
    the compute dtype of the model. A zero vector has cosine 0
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
        guide_margin: None (no guide), or a finite number >= 0: a
            candidate is masked when its guide cosine to the anchor is
            above the positive's minus `guide_margin`. 0.0 masks what the
            guide ranks above the positive; a larger margin masks more.
        gather_across_replicas: bool, whether each replica of a
            `tf.distribute` step scores against the candidates of every
            replica.
        reduction: the Keras reduction of the per-example values.
        name: the loss name.
        **kwargs: other `keras.losses.Loss` arguments, such as `dtype`.

    Call arguments:
        y_true: ignored without `guide_margin` (None, or any tensor with
            a batch axis); with it, the guide embeddings `(batch, 2 + n,
            D_guide)`.
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
        guide_margin=None,
        gather_across_replicas=False,
        reduction="sum_over_batch_size",
        name="multiple_negatives_ranking_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.scale = check_positive_float(scale, "scale", "20.0")
        self.symmetric = check_bool(symmetric, "symmetric")
        self.guide_margin = _check_guide_margin(guide_margin)
        self.gather_across_replicas = check_bool(
            gather_across_replicas, "gather_across_replicas"
        )
        if self.guide_margin is not None and self.gather_across_replicas:
            # The guide's masks cover the local batch's candidates only.
            raise ValueError(
                "`guide_margin` and `gather_across_replicas=True` do not "
                "compose: the guide masks the local candidates only. Pass "
                "one of them."
            )

    # The positives are found by position, so `fit(x)` needs no labels.
    needs_targets = False
    # The guide embeddings in `y_true` stay whole at every width: the masks
    # are the guide's, whatever prefix of `y_pred` is scored.
    cuts_targets = False

    def __call__(self, y_true, y_pred, sample_weight=None):
        # The shape is checked before any tracing work.
        _check_y_pred(y_pred)
        return super().__call__(y_true, y_pred, sample_weight)

    def call_prefixes(self, y_true, y_pred, nesting_dims):
        """Returns the per-example losses of every prefix width.

        Args:
            y_true: ignored without `guide_margin`; with it, the guide
                embeddings `(batch, 2 + n, D_guide)`, never cut to a
                prefix.
            y_pred: float tensor `(batch, 2 + n, D)`.
            nesting_dims: the increasing prefix widths, or None for the
                full width.

        Returns:
            A list with one `(batch,)` tensor per width.
        """
        _check_y_pred(y_pred)
        dtype = compute_dtype(self.dtype)
        y_pred = ops.cast(y_pred, dtype)
        masks = None
        if self.guide_margin is not None:
            _check_guide(y_true, y_pred, self.guide_margin)
            masks = self._guide_masks(ops.cast(y_true, dtype))
        anchors, candidates = _anchors_and_candidates(y_pred)
        if self.gather_across_replicas and replicated():
            return self._gathered_losses(anchors, candidates, nesting_dims)
        return [
            self._ranking_loss(target, logits, masks)
            for target, logits in prefix_similarities(
                anchors,
                candidates,
                nesting_dims,
                scale=self.scale,
                paired=True,
            )
        ]

    def _guide_masks(self, guide):
        """`(forward, backward)`: where the guide masks a logit.

        `forward` holds one boolean mask per logit matrix, true where a
        candidate scores above the anchor's positive minus the margin;
        `backward` masks the anchors of each positive (its column of the
        first matrix) the same way. The diagonal, the positives, stays.
        """
        anchors, candidates = _anchors_and_candidates(guide)
        ((positive, matrices),) = prefix_similarities(
            anchors, candidates, scale=1.0, paired=True
        )
        threshold = positive - self.guide_margin
        rows = ops.arange(ops.shape(guide)[0])
        off_diagonal = ops.not_equal(
            ops.expand_dims(rows, 1), ops.expand_dims(rows, 0)
        )
        forward = [
            ops.greater(matrix, ops.expand_dims(threshold, 1))
            for matrix in matrices
        ]
        forward[0] = ops.logical_and(forward[0], off_diagonal)
        backward = ops.logical_and(
            ops.greater(matrices[0], ops.expand_dims(threshold, 0)),
            off_diagonal,
        )
        return forward, backward

    def _ranking_loss(self, target, logits, masks=None):
        # `logits` holds the positives' and the hard negatives' scores in
        # separate matrices and `target` the diagonal of the first, so
        # nothing is sliced at a batch size that may be unknown while
        # tracing.
        scores = logits
        if masks is not None:
            scores = [
                ops.where(mask, _MASKED_LOGIT, x)
                for x, mask in zip(logits, masks[0])
            ]
        forward = _log_sum_exp(scores, self.scale, axis=1) - target
        if not self.symmetric:
            return forward
        if masks is not None:
            scores = [ops.where(masks[1], _MASKED_LOGIT, logits[0])]
        backward = _log_sum_exp(scores[:1], self.scale, axis=0) - target
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
                "guide_margin": self.guide_margin,
                "gather_across_replicas": self.gather_across_replicas,
            }
        )
        return config
