"""Cosine similarity matrices of every nested prefix, in one pass.

The in-batch contrastive losses score all pairs of a batch at every width of
a Matryoshka embedding. Slicing each prefix and multiplying it again costs
`sum(nesting_dims)` multiply-adds per pair; here the Gram matrix of prefix
`m_g` is the running sum of the Gram matrices of the disjoint blocks
`[m_{g-1}, m_g)`, and so are the squared norms, so all widths together cost
one full-width Gram matrix.
"""

from keras import ops

from keras_mrl.nesting import block_bounds

# The squared-norm floor of `tf.math.l2_normalize` and `keras.ops.normalize`:
# a zero prefix scores 0 against everything instead of NaN.
_SQUARED_NORM_EPSILON = 1e-12


def _inverse_norms(squared_norms):
    return ops.rsqrt(ops.maximum(squared_norms, _SQUARED_NORM_EPSILON))


def prefix_cosine_similarities(anchors, others, nesting_dims=None):
    """Returns the cosine similarities of `anchors` with each of `others`.

    Args:
        anchors: a float tensor `(A, D)`.
        others: a list of float tensors `(N_k, D)`.
        nesting_dims: the prefix widths, or None for the full width only.

    Returns:
        One list per width; each holds one `(A, N_k)` matrix per entry of
        `others`, the cosine similarities of the width-`m` prefixes.
    """
    if nesting_dims is None:
        bounds = [(0, anchors.shape[-1])]
    else:
        bounds = block_bounds(list(nesting_dims))
    grams = [None] * len(others)
    anchor_norms = None
    other_norms = [None] * len(others)
    results = []
    for start, end in bounds:
        a = anchors[:, start:end]
        anchor_norms = _accumulate(anchor_norms, ops.sum(a * a, axis=-1))
        for k, other in enumerate(others):
            o = other[:, start:end]
            grams[k] = _accumulate(grams[k], ops.matmul(a, ops.transpose(o)))
            other_norms[k] = _accumulate(
                other_norms[k], ops.sum(o * o, axis=-1)
            )
        inv_a = ops.expand_dims(_inverse_norms(anchor_norms), 1)
        results.append(
            [
                gram * inv_a * ops.expand_dims(_inverse_norms(norms), 0)
                for gram, norms in zip(grams, other_norms)
            ]
        )
    return results


def _accumulate(total, value):
    return value if total is None else total + value
