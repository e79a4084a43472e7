import pytest

from keras_mrl._blocks import block_bounds
from keras_mrl._validation import validate_nesting_dims
from keras_mrl._validation import validate_weights
from keras_mrl.nesting import default_nesting_dims

# Pure Python: the widths and their checks touch no backend.
pytestmark = pytest.mark.once


def test_default_nesting_dims_is_the_papers_list_for_2048():
    assert default_nesting_dims(2048) == [
        8,
        16,
        32,
        64,
        128,
        256,
        512,
        1024,
        2048,
    ]


@pytest.mark.parametrize(
    "dim, smallest, expected",
    [
        (64, 8, [8, 16, 32, 64]),
        (100, 8, [8, 16, 32, 64, 100]),
        (100, 16, [16, 32, 64, 100]),
        (5, 8, [5]),
        (8, 8, [8]),
        (9, 8, [8, 9]),
        (64, 2, [2, 4, 8, 16, 32, 64]),
    ],
)
def test_default_nesting_dims_ends_at_dim(dim, smallest, expected):
    assert default_nesting_dims(dim, smallest=smallest) == expected


@pytest.mark.parametrize("bad", [0, -4])
def test_default_nesting_dims_rejects_non_positive(bad):
    with pytest.raises(ValueError, match=str(bad)):
        default_nesting_dims(bad)


def test_default_nesting_dims_rejects_non_int():
    with pytest.raises(TypeError, match="64.0"):
        default_nesting_dims(64.0)


def test_default_nesting_dims_takes_smallest_by_keyword():
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        default_nesting_dims(64, 16)


def test_validate_accepts_and_returns_tuple():
    assert validate_nesting_dims([8, 16, 32], max_dim=32) == (8, 16, 32)


@pytest.mark.parametrize(
    "dims, match",
    [
        ([8, 8, 16], "strictly increasing"),
        ([16, 8], "strictly increasing"),
        ([0, 8], "positive"),
        ([-8, 8], "positive"),
        ([], "at least one"),
    ],
)
def test_validate_rejects_bad_lists(dims, match):
    with pytest.raises(ValueError, match=match):
        validate_nesting_dims(dims)


def test_validate_rejects_widths_wider_than_input():
    with pytest.raises(ValueError, match="64.*wider.*32"):
        validate_nesting_dims([8, 64], max_dim=32)


@pytest.mark.parametrize("dims", ["8,16", 8, [8, 16.5]])
def test_validate_rejects_non_int_lists(dims):
    with pytest.raises(TypeError):
        validate_nesting_dims(dims)


def test_validate_weights():
    assert validate_weights(None, 3) == (1.0, 1.0, 1.0)
    assert validate_weights(None) is None
    assert validate_weights([1, 2], 2) == (1.0, 2.0)
    assert validate_weights([0, 2]) == (0.0, 2.0)
    with pytest.raises(ValueError, match="3 entries.*2 granularities"):
        validate_weights([1, 2, 3], 2)


def test_block_bounds_tile_the_widest_prefix():
    assert block_bounds([8, 16, 32]) == [(0, 8), (8, 16), (16, 32)]
    assert block_bounds([5]) == [(0, 5)]
