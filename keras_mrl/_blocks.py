"""The running block sum of nested work, written once.

Prefix `m_g` of a Matryoshka representation is the union of the disjoint
blocks `[m_{g-1}, m_g)`. Anything linear in the features (a matmul, a Gram
matrix, a squared norm) is therefore, for prefix `m_g`, the running sum of
its values on blocks `0 ... g`: every width together costs one pass over the
full width instead of `sum(nesting_dims)`.
"""

from keras import ops


def block_bounds(nesting_dims):
    """Returns the disjoint blocks `(start, end)` between consecutive widths.

    Example: `[8, 16, 32]` gives `[(0, 8), (8, 16), (16, 32)]`.
    """
    starts = (0,) + tuple(nesting_dims[:-1])
    return list(zip(starts, nesting_dims))


def split_blocks(x, nesting_dims, axis=-1):
    """Returns `x`'s blocks along `axis`, -1 (features) or 0 (kernel rows).

    One `split` instead of a slice per block: a split's gradient is one
    concatenation, where each slice's gradient is padded back to the full
    width and the pads are added.

    Args:
        x: a tensor at least `nesting_dims[-1]` wide along `axis`.
        nesting_dims: the increasing widths, or None for `[x]` whole.
        axis: -1 or 0.
    """
    if nesting_dims is None:
        return [x]
    width = nesting_dims[-1]
    if x.shape[axis] != width:
        x = x[:width] if axis == 0 else x[..., :width]
    if len(nesting_dims) == 1:
        return [x]
    return ops.split(x, list(nesting_dims[:-1]), axis=axis)


def running_sums(values):
    """Yields `values[0]`, `values[0] + values[1]`, ...: prefix totals."""
    total = None
    for value in values:
        total = value if total is None else total + value
        yield total
