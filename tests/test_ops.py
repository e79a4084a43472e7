import keras
import numpy as np
import pytest

from keras_mrl.ops import truncate

BACKEND = keras.backend.backend()


def _reference(x, dim):
    prefix = np.asarray(x, dtype=np.float64)[..., :dim]
    norm = np.linalg.norm(prefix, axis=-1, keepdims=True)
    return np.where(norm > 0, prefix / np.where(norm > 0, norm, 1.0), 0.0)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("shape", [(5, 16), (2, 3, 16)])
@pytest.mark.parametrize("dim", [1, 4, 16])
def test_matches_numpy_reference(shape, dim):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    out = truncate(x, dim=dim)
    assert tuple(out.shape) == shape[:-1] + (dim,)
    np.testing.assert_allclose(_numpy(out), _reference(x, dim), atol=1e-6)
    np.testing.assert_allclose(
        np.linalg.norm(_numpy(out), axis=-1), 1.0, atol=1e-6
    )


def test_without_normalize_is_the_slice():
    x = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    cut = truncate(x, dim=3, normalize=False)
    np.testing.assert_array_equal(_numpy(cut), x[:, :3])


def test_zero_prefix_gives_zeros_not_nan():
    x = np.array(
        [[0.0, 0.0, 5.0], [3.0, 4.0, 0.0], [1e-30, 0.0, 1.0]], "float32"
    )
    out = _numpy(truncate(x, dim=2))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], [0.0, 0.0])
    np.testing.assert_allclose(out[1], [0.6, 0.8], atol=1e-6)
    assert np.all(np.abs(out[2]) < 1e-12)


def test_float16_norm_is_computed_in_float32():
    # 300**2 overflows float16 (max 65504): a float16 norm would be inf and
    # the output zeros.
    x = np.array([[300.0, 400.0, 1.0], [0.5, -0.25, 2.0]], dtype="float32")
    out = truncate(keras.ops.cast(x, "float16"), dim=2)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_allclose(
        _numpy(out).astype("float32"), _reference(x, 2), atol=1e-3
    )


def test_bfloat16_keeps_its_dtype():
    x = np.random.default_rng(2).normal(size=(3, 8)).astype("float32")
    out = truncate(keras.ops.cast(x, "bfloat16"), dim=4)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(
        _numpy(keras.ops.cast(out, "float32")), _reference(x, 4), atol=1e-2
    )


def test_integer_input_is_normalised_in_floatx():
    out = truncate(np.array([[3, 4, 7]], dtype="int32"), dim=2)
    assert keras.backend.standardize_dtype(out.dtype) == keras.config.floatx()
    np.testing.assert_allclose(_numpy(out), [[0.6, 0.8]], atol=1e-6)


@pytest.mark.parametrize("dim", [0, -3])
def test_non_positive_dim_raises(dim):
    with pytest.raises(ValueError, match=rf"dim.*{dim}"):
        truncate(np.ones((2, 4)), dim=dim)


def test_too_wide_dim_names_the_shape():
    with pytest.raises(ValueError, match=r"dim`=5.*\(2, 4\)"):
        truncate(np.ones((2, 4)), dim=5)


@pytest.mark.parametrize("dim", [2.0, "2", True])
def test_non_int_dim_raises(dim):
    with pytest.raises(TypeError, match="dim"):
        truncate(np.ones((2, 4)), dim=dim)


def test_positional_dim_raises():
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        truncate(np.ones((2, 4)), 2)


@pytest.mark.parametrize("normalize", ["no", 0, None])
def test_non_bool_normalize_raises(normalize):
    with pytest.raises(TypeError, match=rf"`normalize`.*{normalize!r}"):
        truncate(np.ones((2, 4)), dim=2, normalize=normalize)


def test_scalar_input_raises():
    with pytest.raises(ValueError, match="scalar"):
        truncate(np.float32(1.0), dim=1)


@pytest.mark.skipif(BACKEND == "torch", reason="jit is tested on TF and JAX")
def test_under_jit():
    x = np.random.default_rng(3).normal(size=(4, 12)).astype("float32")
    x[0, :6] = 0.0
    if BACKEND == "jax":
        import jax

        fn = jax.jit(lambda t: truncate(t, dim=6))
    else:
        import tensorflow as tf

        fn = tf.function(lambda t: truncate(t, dim=6), jit_compile=True)
    out = _numpy(fn(x))
    np.testing.assert_allclose(out, _reference(x, 6), atol=1e-6)
    assert np.all(out[0] == 0.0)
