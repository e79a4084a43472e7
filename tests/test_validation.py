import numpy as np
import pytest

from keras_mrl import _validation as v


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_check_bool_accepts_bools(value):
    result = v.check_bool(value, "tied")
    assert type(result) is bool and result == bool(value)


@pytest.mark.parametrize("value", ["no", 1, 0, None, 1.0])
def test_check_bool_rejects_everything_else(value):
    with pytest.raises(
        TypeError,
        match=rf"`tied` must be True or False, "
        rf"got {value!r}",
    ):
        v.check_bool(value, "tied")


def test_check_optional_bool():
    assert v.check_optional_bool(None, "cut") is None
    assert v.check_optional_bool(np.bool_(False), "cut") is False
    with pytest.raises(
        TypeError, match="`cut` must be None, True or False, got 'yes'"
    ):
        v.check_optional_bool("yes", "cut")


def test_check_positive_int():
    assert v.check_positive_int(3, "k") == 3
    assert type(v.check_positive_int(np.int64(3), "k")) is int
    for bad in (True, 2.0, "2", None):
        with pytest.raises(
            TypeError,
            match=rf"`k` must be an int, got "
            rf"{bad!r}",
        ):
            v.check_positive_int(bad, "k")
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"positive int, got k={bad}"):
            v.check_positive_int(bad, "k")
    assert v.check_optional_positive_int(None, "k") is None
    with pytest.raises(ValueError, match="k=0"):
        v.check_optional_positive_int(0, "k")


def test_check_optional_int():
    assert v.check_optional_int(None, "seed") is None
    for good in (3, np.int64(3), np.int32(3), np.uint8(3)):
        result = v.check_optional_int(good, "seed")
        assert type(result) is int and result == 3
    for bad in (True, np.bool_(False), 3.0, "3"):
        with pytest.raises(
            TypeError,
            match=rf"`seed` must be None or an "
            rf"int, got {bad!r}",
        ):
            v.check_optional_int(bad, "seed")


def test_check_positive_float():
    assert v.check_positive_float(2, "scale", "20.0") == 2.0
    assert type(v.check_positive_float(np.float32(0.5), "scale", "20.0")) is (
        float
    )
    for bad in (True, "20", None):
        with pytest.raises(
            TypeError,
            match=rf"`scale` must be a positive "
            rf"number such as 20.0, got {bad!r}",
        ):
            v.check_positive_float(bad, "scale", "20.0")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"such as 20.0, got {bad}"):
            v.check_positive_float(bad, "scale", "20.0")


def test_check_choice():
    assert v.check_choice("ip", "metric", ("ip", "l2")) == "ip"
    with pytest.raises(ValueError, match=r"\['ip', 'l2'\], got 'cos'"):
        v.check_choice("cos", "metric", ("ip", "l2"))


def test_check_finite():
    finite = np.ones((2, 3), "float32")
    assert v.check_finite(finite, "emb") is not None
    np.testing.assert_array_equal(v.check_finite([[1, 2]], "ids"), [[1, 2]])
    for bad in (np.nan, np.inf, -np.inf):
        x = finite.copy()
        x[0, 1] = bad
        x[1, 2] = bad
        with pytest.raises(
            ValueError,
            match=r"`emb` holds 2 NaN or infinite"
            r" values \(shape \(2, 3\)\)",
        ):
            v.check_finite(x, "emb")


def test_label_vector():
    np.testing.assert_array_equal(
        v.label_vector(np.array([[1], [2]]), 2, "labels", "x"), [1, 2]
    )
    with pytest.raises(
        ValueError,
        match=r"`labels`.*row of `x`.*\(3,\), "
        r"got shape \(2,\)",
    ):
        v.label_vector([1, 2], 3, "labels", "x")


def test_check_dim():
    assert v.check_dim(4, 8, (2, 8)) == 4
    with pytest.raises(ValueError, match=r"`dim`=9.*\(2, 8\).*dim <= 8"):
        v.check_dim(9, 8, (2, 8))
    with pytest.raises(TypeError, match="dim"):
        v.check_dim(4.0)


def test_check_finite_rows_counts_the_bad_rows():
    x = np.ones((8, 3), "float32")
    assert v.check_finite_rows(x, "x") is not None
    x[[1, 6], 0] = np.nan
    x[6, 2] = np.inf
    with pytest.raises(
        ValueError,
        match=r"`x` has 2 of 8 rows holding NaN "
        r"or infinite values \(rows 1, 6\)",
    ):
        v.check_finite_rows(x, "x")
    x = np.full((7, 2), np.nan)
    with pytest.raises(
        ValueError,
        match=r"7 of 7 rows.*\(rows 0, 1, 2, 3, 4, "
        r"\.\.\.\)",
    ):
        v.check_finite_rows(x, "x")
