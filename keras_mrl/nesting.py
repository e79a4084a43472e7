"""Nesting widths: their defaults, their validation and their blocks.

Every component that takes a list of widths validates it here, so that a bad
list gets the same error wherever it is passed.
"""

import numbers


def check_positive_int(value, name):
    """Returns `value` as an int, or raises naming `name` and the value.

    Raises:
        TypeError: when `value` is not an int (numpy ints are ints).
        ValueError: when it is 0 or negative.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")
    if value <= 0:
        raise ValueError(
            f"`{name}` must be a positive int, got {name}={value}."
        )
    return int(value)


def default_nesting_dims(dim, smallest=8):
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

    >>> keras_mrl.default_nesting_dims(64)
    [8, 16, 32, 64]
    >>> keras_mrl.default_nesting_dims(100, smallest=16)
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


def validate_nesting_dims(nesting_dims, max_dim=None, name="nesting_dims"):
    """Checks a list of widths and returns it as a tuple of ints.

    Args:
        nesting_dims: a sequence of widths.
        max_dim: optional int, the width of the representation the widths
            cut; no width may exceed it.
        name: the argument's name, used in error messages.

    Returns:
        A tuple of strictly increasing positive ints.

    Raises:
        TypeError: when `nesting_dims` is not a sequence of ints.
        ValueError: when it is empty, holds a width <= 0, is not strictly
            increasing, or holds a width larger than `max_dim`.
    """
    if isinstance(nesting_dims, (str, bytes)) or not hasattr(
        nesting_dims, "__iter__"
    ):
        raise TypeError(
            f"`{name}` must be a list of ints such as [8, 16, 32], "
            f"got {nesting_dims!r}."
        )
    dims = tuple(nesting_dims)
    if not dims:
        raise ValueError(f"`{name}` must hold at least one width, got [].")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(
                f"`{name}` must hold ints, got {d!r} in {list(dims)}."
            )
        if d <= 0:
            raise ValueError(
                f"`{name}` must hold positive widths, got {d} in "
                f"{list(dims)}."
            )
    dims = tuple(int(d) for d in dims)
    for a, b in zip(dims, dims[1:]):
        if b <= a:
            raise ValueError(
                f"`{name}` must be strictly increasing, got {list(dims)} "
                f"({b} follows {a})."
            )
    if max_dim is not None and dims[-1] > max_dim:
        raise ValueError(
            f"`{name}` {list(dims)} holds a width of {dims[-1]}, wider than "
            f"the representation's {max_dim} dimensions. Use widths <= "
            f"{max_dim}."
        )
    return dims


def validate_weights(weights, num_granularities):
    """Returns the per-granularity loss weights as a tuple of floats.

    Args:
        weights: None (all ones) or a sequence of `num_granularities` numbers.
        num_granularities: int, how many granularities the weights cover.

    Raises:
        ValueError: when the lengths differ.
    """
    if weights is None:
        return (1.0,) * num_granularities
    try:
        weights = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise TypeError(
            f"`weights` must be a list of numbers such as [1.0, 1.0, 2.0], "
            f"got {weights!r}."
        ) from None
    if len(weights) != num_granularities:
        raise ValueError(
            f"`weights` has {len(weights)} entries {list(weights)}, but there "
            f"are {num_granularities} granularities. Pass one weight per "
            "granularity."
        )
    return weights


def block_bounds(nesting_dims):
    """Returns the disjoint blocks `(start, end)` between consecutive widths.

    Prefix `nesting_dims[g]` is the union of blocks `0 ... g`; computing each
    block once and accumulating is what makes nested work cost one pass over
    the full width instead of the sum of all widths.

    Example:

    >>> keras_mrl.nesting.block_bounds([8, 16, 32])
    [(0, 8), (8, 16), (16, 32)]
    """
    starts = (0,) + tuple(nesting_dims[:-1])
    return list(zip(starts, nesting_dims))
