"""Nesting widths and their loss weights: defaults and validation.

Every component that takes a list of widths or of per-width weights
validates it here, so that a bad list gets the same error wherever it is
passed.
"""

import numbers

import numpy as np

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
                f"`{name}` must hold positive widths, got {d} in {list(dims)}."
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


def validate_weights(weights, num_granularities=None):
    """Returns the per-granularity loss weights as a tuple of floats.

    Each weight must be a finite number >= 0 (a negative weight would train
    that width by gradient ascent), and at least one must be > 0.

    Args:
        weights: None (all ones) or a sequence of numbers.
        num_granularities: optional int, how many granularities the weights
            must cover.

    Raises:
        TypeError: when `weights` is not a sequence of numbers.
        ValueError: when a weight is negative, NaN or infinite, when all
            are 0, or when the lengths differ.
    """
    if weights is None:
        if num_granularities is None:
            return None
        return (1.0,) * num_granularities
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
        raise TypeError(
            "`weights` must be a list of numbers such as [1.0, 1.0, 2.0], one "
            f"per granularity; got {weights!r}."
        )
    weights = tuple(weights)
    for w in weights:
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, numbers.Real):
            raise TypeError(
                "`weights` must hold numbers such as [1.0, 1.0, 2.0], got "
                f"{w!r} in {list(weights)}."
            )
    weights = tuple(float(w) for w in weights)
    if not weights:
        raise ValueError("`weights` must hold at least one weight, got [].")
    for w in weights:
        if not np.isfinite(w) or w < 0:
            raise ValueError(
                "`weights` must be finite and >= 0 (a negative weight trains "
                f"its width by gradient ascent), got {w} in {list(weights)}."
            )
    if not any(w > 0 for w in weights):
        raise ValueError(
            f"`weights` {list(weights)} are all 0: nothing would be trained. "
            "Give at least one granularity a positive weight."
        )
    if num_granularities is not None and len(weights) != num_granularities:
        raise ValueError(
            f"`weights` has {len(weights)} entries {list(weights)}, but there "
            f"are {num_granularities} granularities. Pass one weight per "
            "granularity."
        )
    return weights
