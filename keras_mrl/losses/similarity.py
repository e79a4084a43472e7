"""Scaled cosine similarity matrices of every nested prefix, in one pass.

The in-batch contrastive losses score all pairs of a batch at every width of
a Matryoshka embedding. Slicing each prefix and multiplying it again costs
`sum(nesting_dims)` multiply-adds per pair; here the Gram matrix of prefix
`m_g` is the running sum of the Gram matrices of the disjoint blocks
`[m_{g-1}, m_g)` (see `keras_mrl._blocks`), and the squared norms of every
prefix come out of one product with a 0/1 matrix, so all widths together
cost about one full-width Gram matrix.
"""

import numpy as np
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

    # prefix_sums(v)[:, g] = sum(v[:, :m_g]): one small matmul with a 0/1
    # matrix instead of a sum per block and a running sum, which on torch's
    # eager dispatch cost two dozen small kernels per tensor (issue 13).
    if nesting_dims is None:
        def prefix_sums(values):
            return ops.sum(values, axis=-1, keepdims=True)
    else:
        width = nesting_dims[-1]
        indicator = ops.convert_to_tensor(
            np.arange(width)[:, None] < np.asarray(nesting_dims)[None, :],
            dtype=anchors.dtype,
        )

        def prefix_sums(values):
            if values.shape[-1] != width:
                values = values[..., :width]
            return ops.matmul(values, indicator)

    anchor_norms = prefix_sums(anchors * anchors)
    grams = [
        prefix_totals(
            ops.matmul(a, ops.transpose(o))
            for a, o in zip(anchor_blocks, blocks)
        )
        for blocks in other_blocks
    ]
    other_norms = [prefix_sums(other * other) for other in others]
    if paired:
        paired_dots = prefix_sums(anchors * others[0])
    # The scale rides on the (A, G) factors, not on each (A, N) matrix.
    all_rows = scale * inverse_norm(anchor_norms, ops)
    all_columns = [inverse_norm(n, ops) for n in other_norms]
    results = []
    for g in range(len(anchor_blocks)):
        row_factors = all_rows[:, g]
        column_factors = [c[:, g] for c in all_columns]
        matrices = [
            gram[g] * ops.expand_dims(row_factors, 1) * ops.expand_dims(col, 0)
            for gram, col in zip(grams, column_factors)
        ]
        paired_scores = None
        if paired:
            paired_scores = paired_dots[:, g] * row_factors * column_factors[0]
        results.append((paired_scores, matrices))
    return results
