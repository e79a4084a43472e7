"""keras_mrl.serving.quantize against sentence-transformers and numpy."""

import warnings

import numpy as np
import pytest

from keras_mrl.serving import hamming_distance
from keras_mrl.serving import quantize

pytestmark = pytest.mark.once

PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary"]


@pytest.fixture(scope="module")
def st_quantize():
    module = pytest.importorskip("sentence_transformers.util.quantization")
    quantize_embeddings = module.quantize_embeddings

    def run(*args, **kwargs):
        # It warns that fewer than 100 rows calibrate poorly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantize_embeddings(*args, **kwargs)

    return run


@pytest.fixture
def x(rng):
    # 19 columns: the packed bits end with a partial byte.
    return rng.normal(size=(40, 19)).astype("float32")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("source", ["self", "calibration", "ranges"])
def test_same_arrays_as_sentence_transformers(
    st_quantize, x, rng, precision, source
):
    calibration = rng.normal(scale=0.7, size=(300, 19))
    kwargs, st_kwargs = {}, {}
    if source == "calibration":
        kwargs = {"calibration": calibration}
        st_kwargs = {"calibration_embeddings": calibration}
    elif source == "ranges":
        ranges = np.stack([calibration.min(0), calibration.max(0)])
        kwargs = st_kwargs = {"ranges": ranges}
    ours = quantize(x, precision=precision, **kwargs)
    theirs = st_quantize(x, precision=precision, **st_kwargs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_same_int8_codes_as_sentence_transformers_for_other_dtypes(
    st_quantize, x, rng, dtype
):
    x = x.astype(dtype)
    calibration = rng.normal(size=(50, 19)).astype(dtype)
    np.testing.assert_array_equal(
        quantize(x, precision="int8", calibration=calibration),
        st_quantize(x, precision="int8", calibration_embeddings=calibration),
    )


def test_int8_codes_are_the_formula(x, rng):
    calibration = rng.normal(size=(100, 19)).astype("float32")
    low, high = calibration.min(0), calibration.max(0)
    step = (high - low) / 255
    expected = np.clip(np.floor((x - low) / step), 0, 255)
    np.testing.assert_array_equal(
        quantize(x, precision="uint8", calibration=calibration), expected
    )
    np.testing.assert_array_equal(
        quantize(x, precision="int8", calibration=calibration),
        expected - 128,
    )


def test_a_constant_dimension_takes_step_one():
    x = np.array([[0.0, 2.0], [1.0, 2.0], [0.5, 2.0]])
    codes = quantize(x, precision="uint8")
    np.testing.assert_array_equal(codes[:, 1], [0, 0, 0])
    # float32 steps: the maximum lands on 254.99..., code 254, as in
    # sentence-transformers.
    step = np.float32(1.0) / 255
    np.testing.assert_array_equal(codes[:, 0], np.floor(x[:, 0] / step))


def test_binary_bits_are_the_signs_first_dimension_highest(x):
    bits = (x > 0).astype(np.uint8)
    bits = np.pad(bits, [(0, 0), (0, 24 - 19)])
    weights = 2 ** np.arange(7, -1, -1)
    expected = (bits.reshape(len(x), 3, 8) * weights).sum(-1)
    np.testing.assert_array_equal(quantize(x, precision="ubinary"), expected)
    np.testing.assert_array_equal(
        quantize(x, precision="binary"), expected - 128
    )


@pytest.mark.parametrize("precision", PRECISIONS)
def test_dim_quantizes_the_prefix_with_the_prefix_of_the_calibration(
    x, rng, precision
):
    calibration = rng.normal(size=(60, 19))
    np.testing.assert_array_equal(
        quantize(x, precision=precision, calibration=calibration, dim=8),
        quantize(x[:, :8], precision=precision, calibration=calibration[:, :8]),
    )
    ranges = np.stack([calibration.min(0), calibration.max(0)])
    np.testing.assert_array_equal(
        quantize(x, precision=precision, ranges=ranges, dim=8),
        quantize(x[:, :8], precision=precision, ranges=ranges[:, :8]),
    )


def test_self_calibration_uses_the_ranges_of_x(x):
    ranges = np.stack([x.min(0), x.max(0)])
    np.testing.assert_array_equal(
        quantize(x, precision="int8"),
        quantize(x, precision="int8", ranges=ranges),
    )


def test_float32_casts_and_copies(x):
    out = quantize(x.astype("float64"), precision="float32")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x)
    same = quantize(x, precision="float32")
    assert same is not x


def test_accepts_a_backend_tensor(x):
    import keras

    tensor = keras.ops.convert_to_tensor(x)
    np.testing.assert_array_equal(
        quantize(tensor, precision="binary"), quantize(x, precision="binary")
    )


def test_hamming_distance_counts_differing_bits(rng):
    a = rng.normal(size=(5, 21))
    b = rng.normal(size=(7, 21))
    expected = ((a[:, None] > 0) != (b[None] > 0)).sum(-1)
    for precision in ["binary", "ubinary"]:
        distances = hamming_distance(
            quantize(a, precision=precision),
            corpus=quantize(b, precision=precision),
        )
        assert distances.dtype == np.int32
        np.testing.assert_array_equal(distances, expected)


# --- Errors ---


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.ones(4), "2-D"),
        (np.ones((2, 3, 4)), "2-D"),
        (np.ones((3, 4), "int8"), "floats"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), "NaN or infinite"),
        (np.array([[0.1, np.inf], [0.2, 0.3]]), "NaN or infinite"),
    ],
)
def test_bad_x_raises(bad, match):
    error = TypeError if match == "floats" else ValueError
    with pytest.raises(error, match=match):
        quantize(bad, precision="binary")


@pytest.mark.parametrize("precision", ["int4", "INT8", None, "bf16"])
def test_unknown_precision_raises(x, precision):
    with pytest.raises(ValueError, match="`precision` must be one of"):
        quantize(x, precision=precision)


def test_precision_is_keyword_only(x):
    with pytest.raises(TypeError, match="positional argument"):
        quantize(x, "int8")


@pytest.mark.parametrize(
    "calibration, match",
    [
        (np.ones((10, 18)), r"D=19, got shape \(10, 18\)"),
        (np.ones((0, 19)), r"0 embedding\(s\) of `calibration` cannot"),
        (np.ones(19), "2-D"),
        (np.full((3, 19), np.nan), "NaN or infinite"),
    ],
)
def test_bad_calibration_raises(x, calibration, match):
    with pytest.raises(ValueError, match=match):
        quantize(x, precision="int8", calibration=calibration)


def test_bad_ranges_raise(x):
    with pytest.raises(ValueError, match=r"shape \(2, 19\)"):
        quantize(x, precision="int8", ranges=np.ones((2, 8)))
    flipped = np.stack([np.ones(19), np.zeros(19)])
    with pytest.raises(ValueError, match="minimum above their maximum"):
        quantize(x, precision="int8", ranges=flipped)
    with pytest.raises(ValueError, match="not both"):
        quantize(
            x,
            precision="int8",
            ranges=np.stack([x.min(0), x.max(0)]),
            calibration=x,
        )


def test_one_embedding_without_calibration_raises(x):
    with pytest.raises(ValueError, match="pass `calibration`"):
        quantize(x[:1], precision="uint8")
    # The fixed thresholds of binary need no calibration.
    assert quantize(x[:1], precision="binary").shape == (1, 3)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_one_calibration_embedding_raises_as_one_embedding_does(x, precision):
    # Its ranges would be empty: every code the lowest.
    with pytest.raises(
        ValueError,
        match=r"needs per-dimension ranges, and 1 "
        r"embedding\(s\) of `x` cannot give them",
    ):
        quantize(x[:1], precision=precision)
    with pytest.raises(
        ValueError,
        match=r"needs per-dimension ranges, and 1 "
        r"embedding\(s\) of `calibration` cannot give them",
    ):
        quantize(x, precision=precision, calibration=x[:1])
    with pytest.raises(ValueError, match="`calibration` cannot"):
        quantize(x, precision=precision, calibration=x[:1], dim=8)


@pytest.mark.parametrize("source", ["x", "calibration", "ranges"])
def test_ranges_empty_in_every_dimension_raise(x, source):
    same = np.repeat(x[:1], 4, axis=0)
    kwargs = {
        "x": {},
        "calibration": {"calibration": same},
        "ranges": {"ranges": np.concatenate([x[:1], x[:1]])},
    }[source]
    with pytest.raises(
        ValueError,
        match=rf"those of `{source}` are empty "
        r"\(minimum = maximum\) in every dimension",
    ):
        quantize(same if source == "x" else x, precision="int8", **kwargs)


def test_ranges_empty_in_some_dimensions_still_quantize(x):
    calibration = x.copy()
    calibration[:, 3] = 0.5
    codes = quantize(x, precision="uint8", calibration=calibration)
    np.testing.assert_array_equal(
        np.delete(codes, 3, axis=1),
        np.delete(quantize(x, precision="uint8", calibration=x), 3, axis=1),
    )


def test_calibration_is_ignored_by_the_fixed_thresholds(x):
    for precision in ("float32", "binary", "ubinary"):
        np.testing.assert_array_equal(
            quantize(x, precision=precision, calibration=x[:1]),
            quantize(x, precision=precision),
        )


@pytest.mark.parametrize(
    "dim, error", [(20, ValueError), (0, ValueError), (8.0, TypeError)]
)
def test_bad_dim_raises(x, dim, error):
    with pytest.raises(error, match="dim"):
        quantize(x, precision="binary", dim=dim)


def test_hamming_distance_rejects_what_is_not_packed_bits(rng):
    codes = quantize(rng.normal(size=(3, 16)), precision="binary")
    with pytest.raises(ValueError, match="packed bits"):
        hamming_distance(np.ones((3, 2)), corpus=codes)
    with pytest.raises(ValueError, match="one precision and width"):
        hamming_distance(codes, corpus=codes.view(np.uint8))
    with pytest.raises(ValueError, match="one precision and width"):
        hamming_distance(codes, corpus=codes[:, :1])
