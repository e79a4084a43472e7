"""Nesting widths: the default list of widths of a representation.

The checks of a list of widths and of per-width loss weights are in
`keras_mrl._validation`, with every other argument check.
"""

from keras_mrl._validation import check_positive_int

__all__ = ["default_nesting_dims"]


def default_nesting_dims(dim, *, smallest=8):
    """Returns the doubling list of widths `[smallest, 2 * smallest, ...]`.

    The list always ends at `dim`, also when `dim` is not a power of two, so
    that the full representation is one of the granularities. For
    `dim=2048` this is the paper's list, 8 ... 2048.

    Args:
        dim: int, the full width of the representation.
        smallest: int, the first width. A `dim` smaller than `smallest` gives
            `[dim]`.

    Returns:
        A list of strictly increasing ints that ends at `dim`.

    Example:

    >>> keras_mrl.nesting.default_nesting_dims(64)
    [8, 16, 32, 64]
    >>> keras_mrl.nesting.default_nesting_dims(100, smallest=16)
    [16, 32, 64, 100]
    """
    dim = check_positive_int(dim, "dim")
    width = check_positive_int(smallest, "smallest")
    dims = []
    while width < dim:
        dims.append(width)
        width *= 2
    dims.append(dim)
    return dims
