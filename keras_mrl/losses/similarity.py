"""Scaled cosine similarity matrices of every nested prefix, in one pass.

The in-batch contrastive losses score all pairs of a batch at every width of
a Matryoshka embedding. Slicing each prefix and multiplying it again costs
`sum(nesting_dims)` multiply-adds per pair; here the Gram matrix of prefix
`m_g` is the running sum of the Gram matrices of the disjoint blocks
`[m_{g-1}, m_g)`, and so are the squared norms, so all widths together cost
one full-width Gram matrix.
"""

from keras import ops

from keras_mrl.ops import inverse_norm


def _blocks(x, nesting_dims):
    if nesting_dims is None:
        return [x]
    # One split, whose gradient is one concatenation; a slice per block
    # would pad each block's gradient to the full width and add them.
    x = x[..., : nesting_dims[-1]]
    if len(nesting_dims) == 1:
        return [x]
    return ops.split(x, list(nesting_dims[:-1]), axis=-1)


def _accumulate(total, value):
    return value if total is None else total + value


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
    anchor_blocks = _blocks(anchors, nesting_dims)
    other_blocks = [_blocks(other, nesting_dims) for other in others]
    anchor_norms = paired_dot = None
    grams = [None] * len(others)
    other_norms = [None] * len(others)
    results = []
    for b, a in enumerate(anchor_blocks):
        anchor_norms = _accumulate(anchor_norms, ops.sum(a * a, axis=-1))
        if paired:
            paired_dot = _accumulate(
                paired_dot, ops.sum(a * other_blocks[0][b], axis=-1)
            )
        for k, blocks in enumerate(other_blocks):
            o = blocks[b]
            grams[k] = _accumulate(grams[k], ops.matmul(a, ops.transpose(o)))
            other_norms[k] = _accumulate(
                other_norms[k], ops.sum(o * o, axis=-1)
            )
        # The scale rides on the (A,) vector, not on each (A, N) matrix.
        row_factors = scale * inverse_norm(anchor_norms)
        column_factors = [inverse_norm(norms) for norms in other_norms]
        matrices = [
            gram * ops.expand_dims(row_factors, 1) * ops.expand_dims(col, 0)
            for gram, col in zip(grams, column_factors)
        ]
        paired_scores = None
        if paired:
            paired_scores = paired_dot * row_factors * column_factors[0]
        results.append((paired_scores, matrices))
    return results
