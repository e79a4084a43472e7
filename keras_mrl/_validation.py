"""Checks of the values that enter keras_mrl, written once.

Every public class and function checks its arguments here, so a bad value
gets the same clear message wherever it is passed: the argument's name, the
value received and what would be right. Nothing here imports the rest of
keras_mrl.
"""

import numbers

import numpy as np


def check_bool(value, name):
    """Returns `value` when it is a bool (numpy's included), else raises.

    A string such as "no" or an int is truthy or falsy by accident; a flag
    takes True or False only.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_optional_bool(value, name):
    """Returns None, True or False; raises for anything else."""
    if value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be None, True or False, got {value!r}.")
    return bool(value)


def check_positive_int(value, name):
    """Returns `value` as an int, or raises naming `name` and the value.

    Raises:
        TypeError: when `value` is not an int (numpy ints are ints).
        ValueError: when it is 0 or negative.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Integral
    ):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")
    if value <= 0:
        raise ValueError(
            f"`{name}` must be a positive int, got {name}={value}."
        )
    return int(value)


def check_optional_positive_int(value, name):
    """Returns None, or `value` checked by `check_positive_int`."""
    return None if value is None else check_positive_int(value, name)


def check_optional_int(value, name):
    """Returns None, or `value` as an int (numpy's included); else raises.

    For a seed, say: a bool or a float such as 3.0 is an int by accident.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Integral
    ):
        raise TypeError(f"`{name}` must be None or an int, got {value!r}.")
    return int(value)


def check_positive_float(value, name, example):
    """Returns `value` as a float when it is finite and > 0.

    Args:
        value: the number to check.
        name: the argument's name.
        example: a typical value, quoted in the message (e.g. "20.0").
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Real
    ):
        raise TypeError(
            f"`{name}` must be a positive number such as {example}, got "
            f"{value!r}."
        )
    if not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive finite number such as {example}, "
            f"got {value}."
        )
    return float(value)


def check_loss_weight(value, name):
    """Returns the weight of a loss term, a finite float >= 0 (0: off)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Real
    ):
        raise TypeError(f"`{name}` must be a number >= 0, got {value!r}.")
    if not np.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0 (0 turns its term off), "
            f"got {name}={value}."
        )
    return float(value)


def check_choice(value, name, choices):
    """Returns `value` when it is one of `choices`, else raises."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"`{name}` must be one of {list(choices)}, got {value!r}."
        )
    return value


def check_finite(array, name):
    """Raises a ValueError naming `name` when `array` holds NaN or inf.

    Embeddings of a diverged model are NaN; scoring them would report a
    chance-level figure next to `loss: nan` instead of failing.
    """
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(
            f"`{name}` holds {bad} NaN or infinite values (shape "
            f"{array.shape}); a diverged model gives such embeddings. "
            "Check the training loss before evaluating."
        )
    return array


def check_finite_rows(array, name):
    """Raises a ValueError when rows of the 2-D `array` hold NaN or inf.

    The message counts the bad rows, the unit a user drops or re-embeds.

    Returns:
        `array` as a numpy array.
    """
    array = to_numpy(array)
    if np.issubdtype(array.dtype, np.inexact) and array.ndim == 2:
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = ", ".join(str(row) for row in rows[:5])
            raise ValueError(
                f"`{name}` has {len(rows)} of {len(array)} rows holding NaN "
                f"or infinite values (rows {shown}"
                f"{', ...' if len(rows) > 5 else ''}): their outputs would "
                "be NaN, and in training the loss and every weight. Drop or "
                "re-embed those rows."
            )
    return array


def to_numpy(x):
    """Returns a numpy array of an array, a list or any backend's tensor."""
    # Imported here so that the numpy-only modules load without a backend
    # until a tensor actually arrives.
    import keras

    if keras.ops.is_tensor(x):
        return keras.ops.convert_to_numpy(x)
    return np.asarray(x)


def label_vector(labels, length, name, rows_name):
    """Returns `labels` as a 1-D numpy array, or raises naming `name`.

    Args:
        labels: `(n,)` or `(n, 1)` labels, any dtype.
        length: the number of rows of `rows_name` that the labels must
            match; None checks the shape only.
        name: the labels' argument name, for the message.
        rows_name: the name of the argument whose rows they label.
    """
    labels = to_numpy(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or (length is not None and len(labels) != length):
        expected = "(num_rows,)" if length is None else f"({length},)"
        raise ValueError(
            f"`{name}` must hold one label per row of `{rows_name}`, "
            f"i.e. shape {expected}, got shape {labels.shape}."
        )
    return labels


def check_dim(dim, width=None, shape=None):
    """Checks a serving width and returns it as an int.

    Args:
        dim: the width to cut to.
        width: optional int, the last dimension of the tensor to cut.
        shape: optional shape of that tensor, named in the error message.

    Raises:
        TypeError: when `dim` is not an int.
        ValueError: when `dim` is below 1 or larger than `width`.
    """
    dim = check_positive_int(dim, "dim")
    if width is not None and dim > width:
        raise ValueError(
            f"`dim`={dim} is wider than the embedding: the input has shape "
            f"{shape}, whose last dimension is {width}. Use dim <= {width}."
        )
    return dim


def to_matrix(x, name):
    """Returns `x` (an array, a list or a tensor) as a 2-D numpy array."""
    x = to_numpy(x)
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array (num_vectors, dim), got shape "
            f"{x.shape}. Reshape one vector with x[None, :]."
        )
    return x


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
