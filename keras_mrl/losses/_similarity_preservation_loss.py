"""What a Matryoshka adaptor preserves of the frozen embeddings it adapts.

`keras_mrl.models.MatryoshkaAdaptor` trains with this loss: every prefix
of the adapted embedding keeps the pairwise similarities and the nearest
neighbours of the full-width frozen one (Yoon et al., 2024, arXiv
2407.20243).
"""

import keras
from keras import ops

from keras_mrl._validation import check_loss_weight
from keras_mrl._validation import check_positive_int
from keras_mrl.losses._nested_loss import NestedLoss
from keras_mrl.losses._nested_loss import compute_dtype
from keras_mrl.losses._similarity import prefix_similarities

# Below every cosine: ranks a batch's own row, then the padding, last.
_SELF = -3.0
_PAD = -4.0


def _check_embeddings(y_true, y_pred):
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(true_shape) != 2 or len(pred_shape) != 2:
        raise ValueError(
            "SimilarityPreservationLoss compares (batch, D) embeddings: "
            "y_true the frozen input, y_pred the adapted one; got shapes "
            f"{true_shape} and {pred_shape}."
        )


@keras.saving.register_keras_serializable(package="keras_mrl")
class SimilarityPreservationLoss(NestedLoss):
    """Keeps each prefix's in-batch cosines those of the full input.

    The unsupervised objective of Matryoshka-Adaptor. For a batch of
    frozen embeddings `e` (`y_true`) and their adapted `ê` (`y_pred`), with
    `S_ij = cos(e_i, e_j)` at full width and `Ŝ_ij = cos(ê_i[:m], ê_j[:m])`
    at prefix width `m`, example `i`'s loss at width `m` is

        topk_weight * mean_{j in N_k(i)} |S_ij - Ŝ_ij|
        + pairwise_weight * mean_j |S_ij - Ŝ_ij|

    where `N_k(i)` are the `top_k` rows of the batch most similar to `i`
    by `S` (`i` itself excluded; a batch of at most `top_k` rows uses all
    the others). The first term keeps the neighbours a search would
    return, the second the global geometry. Inside
    `keras_mrl.losses.MatryoshkaLoss(..., nesting_dims=...)` every width is
    computed in one pass; alone it is the full width.

    Args:
        top_k: positive int, the neighbours of the top-k term.
        topk_weight: float >= 0, the weight of the top-k term.
        pairwise_weight: float >= 0, the weight of the all-pairs term.
        reduction: the Keras reduction of the per-example values.
        name: the loss name.
        **kwargs: other `keras.losses.Loss` arguments, such as `dtype`.

    Call arguments:
        y_true: float tensor `(batch, D)`, the frozen embeddings.
        y_pred: float tensor `(batch, D')`, the adapted embeddings.

    Returns:
        The reduced loss; `call` returns the per-example values.

    Example:

    >>> loss = keras_mrl.losses.SimilarityPreservationLoss(
    ...     top_k=2
    ... )
    >>> e = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    >>> float(loss(e, e))
    0.0
    >>> nested = keras_mrl.losses.MatryoshkaLoss(loss, nesting_dims=[2, 8])
    >>> float(nested(e, e)) > 0  # the 2-wide prefix loses similarities
    True
    """

    def __init__(
        self,
        top_k=10,
        *,
        topk_weight=1.0,
        pairwise_weight=1.0,
        reduction="sum_over_batch_size",
        name="similarity_preservation_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.top_k = check_positive_int(top_k, "top_k")
        self.topk_weight = check_loss_weight(topk_weight, "topk_weight")
        self.pairwise_weight = check_loss_weight(
            pairwise_weight, "pairwise_weight"
        )
        if self.topk_weight == 0 and self.pairwise_weight == 0:
            raise ValueError(
                "SimilarityPreservationLoss got topk_weight=0 and "
                "pairwise_weight=0: it would train nothing. Give one a "
                "positive weight."
            )

    def __call__(self, y_true, y_pred, sample_weight=None):
        # A missing y_true gets the base class's message instead.
        if y_true is not None:
            _check_embeddings(y_true, y_pred)
        return super().__call__(y_true, y_pred, sample_weight)

    def call_prefixes(self, y_true, y_pred, nesting_dims):
        """Returns the per-example losses of every prefix width.

        Args:
            y_true: float tensor `(batch, D)`, the frozen embeddings.
            y_pred: float tensor `(batch, D')`, the adapted embeddings.
            nesting_dims: the increasing prefix widths of `y_pred`, or
                None for its full width.

        Returns:
            A list with one `(batch,)` tensor per width.
        """
        _check_embeddings(y_true, y_pred)
        dtype = compute_dtype(self.dtype)
        target = ops.cast(y_true, dtype)
        ((_, (full,)),) = prefix_similarities(target, [target])
        if self.topk_weight > 0:
            neighbours, valid, count = self._neighbours(full)
            picked = ops.take_along_axis(self._pad(full), neighbours, axis=1)
        losses = []
        for _, (adapted,) in prefix_similarities(
            ops.cast(y_pred, dtype), [ops.cast(y_pred, dtype)], nesting_dims
        ):
            loss = 0.0
            if self.pairwise_weight > 0:
                pair = ops.mean(ops.abs(full - adapted), axis=1)
                loss = loss + self.pairwise_weight * pair
            if self.topk_weight > 0:
                near = ops.take_along_axis(
                    self._pad(adapted), neighbours, axis=1
                )
                gap = ops.sum(ops.abs(picked - near) * valid, axis=1)
                loss = loss + self.topk_weight * gap / count
            losses.append(loss)
        return losses

    def _pad(self, scores):
        # `top_k` columns of padding, so that a batch of at most `top_k`
        # rows still has `top_k` picks; `valid` zeroes those that land
        # there or on the row itself.
        return ops.pad(scores, [[0, 0], [0, self.top_k]], constant_values=_PAD)

    def _neighbours(self, similarities):
        rows = ops.arange(ops.shape(similarities)[0])
        own = ops.expand_dims(rows, 1) == ops.expand_dims(rows, 0)
        ranked = self._pad(ops.where(own, _SELF, similarities))
        _, neighbours = ops.top_k(ranked, self.top_k)
        others = ops.cast(ops.logical_not(own), similarities.dtype)
        others = ops.pad(others, [[0, 0], [0, self.top_k]])
        valid = ops.take_along_axis(others, neighbours, axis=1)
        count = ops.maximum(ops.sum(valid, axis=1), 1.0)
        return neighbours, valid, count

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "top_k": self.top_k,
                "topk_weight": self.topk_weight,
                "pairwise_weight": self.pairwise_weight,
            }
        )
        return config
