"""Scaled cosine similarity matrices of every nested prefix, in one pass.

The in-batch contrastive losses score all pairs of a batch at every width of
a Matryoshka embedding. Slicing each prefix and multiplying it again costs
`sum(nesting_dims)` multiply-adds per pair; here the Gram matrix of prefix
`m_g` is the running sum of the Gram matrices of the disjoint blocks
`[m_{g-1}, m_g)`, and so are the squared norms, so all widths together cost
one full-width Gram matrix (see `keras_mrl._blocks`).
"""

from keras import ops

from keras_mrl._blocks import running_sums
from keras_mrl._blocks import split_blocks
from keras_mrl._norms import inverse_norm


def prefix_similarities(
    anchors, others, nesting_dims=None, scale=1.0, paired=False
):
    """Returns `scale * cosine` of `anchors` with `others` at every width.

    Args:
        anchors: a float tensor `(A, D)`.
        others: a list of float tensors `(N_k, D)`.
        nesting_dims: the increasing prefix widths, or None for the full
            width only.
        scale: a float multiplying every similarity.
        paired: bool, whether to also return the similarity of each anchor
            with the same row of `others[0]` (which then has `A` rows).

    Returns:
        One `(paired_scores, matrices)` pair per width: `matrices` holds one
        `(A, N_k)` matrix per entry of `others`, and `paired_scores` is the
        `(A,)` diagonal of the first, or None unless `paired`. The diagonal
        is computed at `O(A * D)` cost, so no gradient is scattered into an
        `(A, A)` matrix for it.
    """
    anchor_blocks = split_blocks(anchors, nesting_dims)
    other_blocks = [split_blocks(other, nesting_dims) for other in others]

    def prefix_totals(per_block):
        return list(running_sums(per_block))

    anchor_norms = prefix_totals(ops.sum(a * a, axis=-1) for a in anchor_blocks)
    grams = [
        prefix_totals(
            ops.matmul(a, ops.transpose(o))
            for a, o in zip(anchor_blocks, blocks)
        )
        for blocks in other_blocks
    ]
    other_norms = [
        prefix_totals(ops.sum(o * o, axis=-1) for o in blocks)
        for blocks in other_blocks
    ]
    if paired:
        paired_dots = prefix_totals(
            ops.sum(a * o, axis=-1)
            for a, o in zip(anchor_blocks, other_blocks[0])
        )
    results = []
    for g in range(len(anchor_blocks)):
        # The scale rides on the (A,) vector, not on each (A, N) matrix.
        row_factors = scale * inverse_norm(anchor_norms[g], ops)
        column_factors = [inverse_norm(n[g], ops) for n in other_norms]
        matrices = [
            gram[g] * ops.expand_dims(row_factors, 1) * ops.expand_dims(col, 0)
            for gram, col in zip(grams, column_factors)
        ]
        paired_scores = None
        if paired:
            paired_scores = paired_dots[g] * row_factors * column_factors[0]
        results.append((paired_scores, matrices))
    return results
