"""keras_mrl.layers.OrthogonalProjection against numpy's PCA."""

import keras
import numpy as np
import pytest
from conftest import jit_compile

from keras_mrl.layers._orthogonal_projection import OrthogonalProjection
from keras_mrl.layers._orthogonal_projection import _NearestOrthogonal


def _data(rng, n=300, scales=(0.2, 3.0, 1.0, 0.5, 2.0)):
    return (rng.normal(size=(n, len(scales))) * scales + 1.0).astype("float32")


def test_adapt_projects_onto_the_principal_axes(rng):
    x = _data(rng)
    layer = OrthogonalProjection()
    layer.adapt(x)
    y = keras.ops.convert_to_numpy(layer(x))
    centred = x - x.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred.astype(np.float64))
    # Each output feature is the data along one principal axis, by
    # decreasing variance; the sign of an axis is a convention.
    expected = x @ vt.T
    for i in range(x.shape[1]):
        sign = np.sign(expected[:, i] @ y[:, i])
        np.testing.assert_allclose(y[:, i], sign * expected[:, i], atol=1e-3)
    variances = y.var(axis=0)
    assert np.all(np.diff(variances) <= 0)


def test_full_width_cosines_are_unchanged(rng):
    x = _data(rng)
    layer = OrthogonalProjection()
    layer.adapt(x)
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y @ y.T, x @ x.T, rtol=1e-4, atol=1e-3)


def test_adapt_is_deterministic(rng):
    x = _data(rng)
    kernels = []
    for _ in range(2):
        layer = OrthogonalProjection()
        layer.adapt(x)
        kernels.append(keras.ops.convert_to_numpy(layer.kernel))
    np.testing.assert_array_equal(kernels[0], kernels[1])


def test_identity_before_adapt(rng):
    x = _data(rng, n=4)
    y = keras.ops.convert_to_numpy(OrthogonalProjection()(x))
    np.testing.assert_allclose(y, x, atol=1e-6)


@pytest.mark.parametrize("keep", [True, False])
def test_training_keeps_the_kernel_orthogonal_only_when_asked(rng, keep):
    x = _data(rng, n=64)
    layer = OrthogonalProjection(keep_orthogonal=keep)
    model = keras.Sequential([keras.Input((5,)), layer])
    model.compile(
        optimizer=keras.optimizers.SGD(0.02),
        loss="mse",
        jit_compile=jit_compile(),
    )
    model.fit(x, 2.0 * x[:, ::-1], epochs=3, batch_size=16, verbose=0)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    error = np.abs(kernel.T @ kernel - np.eye(5)).max()
    if keep:
        assert error < 1e-3
    else:
        assert error > 1e-2


def _orthogonality_error(kernel):
    kernel = np.asarray(kernel, np.float64)
    return np.abs(kernel.T @ kernel - np.eye(len(kernel))).max()


@pytest.mark.parametrize("learning_rate", [0.3, 1.0, 100.0])
def test_large_steps_keep_the_kernel_orthogonal(rng, learning_rate):
    x = _data(rng, n=64)
    layer = OrthogonalProjection()
    model = keras.Sequential([keras.Input((5,)), layer])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss="mse",
        jit_compile=jit_compile(),
    )
    history = model.fit(x, 2.0 * x[:, ::-1], epochs=3, batch_size=16, verbose=0)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    assert np.isfinite(kernel).all()
    assert np.isfinite(history.history["loss"]).all()
    # float32 rounding of a 5 x 5 product is about 1e-7.
    assert _orthogonality_error(kernel) < 1e-5
    # The kernel moved: the constraint did not just restore the identity.
    assert np.abs(kernel - np.eye(5)).max() > 0.1


def test_large_steps_keep_a_mixed_precision_kernel_orthogonal(rng):
    keras.config.set_dtype_policy("mixed_float16")
    x = _data(rng, n=64)
    layer = OrthogonalProjection()
    model = keras.Sequential([keras.Input((5,)), layer])
    model.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss="mse",
        jit_compile=jit_compile(),
    )
    model.fit(x, 2.0 * x[:, ::-1], epochs=2, batch_size=16, verbose=0)
    assert keras.backend.standardize_dtype(layer.kernel.dtype) == "float32"
    assert keras.backend.standardize_dtype(layer(x).dtype) == "float16"
    assert _orthogonality_error(keras.ops.convert_to_numpy(layer.kernel)) < (
        1e-5
    )


def _matrix(rng, singular_values):
    left, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    right, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    return (left * singular_values) @ right


def _polar(w):
    u, _, vt = np.linalg.svd(np.asarray(w, np.float64))
    return u @ vt


@pytest.mark.parametrize(
    "singular_values",
    [
        [1.01, 0.99, 1.0, 1.02, 0.98, 1.0],  # after a small step
        [0.1, 0.5, 1.0, 2.0, 5.0, 30.0],  # beyond Newton-Schulz's sqrt(3)
        [1e-3, 1.0, 1.0, 1.0, 1.0, 1e3],  # condition number 1e6
    ],
)
def test_constraint_gives_the_nearest_orthogonal_matrix(rng, singular_values):
    w = _matrix(rng, singular_values).astype("float32")
    result = keras.ops.convert_to_numpy(_NearestOrthogonal()(w))
    assert _orthogonality_error(result) < 1e-5
    np.testing.assert_allclose(result, _polar(w), atol=1e-4)


@pytest.mark.parametrize(
    "w",
    [
        np.zeros((6, 6)),
        np.ones((6, 6)),
        _matrix(np.random.default_rng(1), [3.0, 2.0, 1.0, 0.0, 0.0, 0.0]),
    ],
    ids=["zeros", "rank_1", "rank_3"],
)
def test_constraint_makes_a_kernel_of_short_rank_orthogonal(w):
    result = keras.ops.convert_to_numpy(_NearestOrthogonal()(w.astype("f")))
    assert _orthogonality_error(result) < 1e-5


def test_constraint_compiles(rng):
    w = _matrix(rng, [0.1, 0.5, 1.0, 2.0, 5.0, 30.0]).astype("float32")
    if keras.backend.backend() == "jax":
        import jax

        result = jax.jit(_NearestOrthogonal())(w)
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        result = tf.function(_NearestOrthogonal(), jit_compile=True)(w)
    else:
        pytest.skip("torch runs the constraint eagerly")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(result), _polar(w), atol=1e-4
    )


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool"])
def test_integer_inputs_are_cast_to_the_compute_dtype(rng, dtype):
    layer = OrthogonalProjection()
    layer.adapt(_data(rng))
    x = rng.integers(0, 4, size=(8, 5)).astype(dtype)
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(y),
        x.astype("float32") @ kernel,
        atol=1e-5,
    )
    inputs = keras.Input((5,), dtype=dtype)
    model = keras.Model(inputs, layer(inputs))
    np.testing.assert_allclose(
        model.predict(x, verbose=0), x.astype("float32") @ kernel, atol=1e-5
    )


def test_serialization_round_trip(rng, tmp_path):
    x = _data(rng)
    layer = OrthogonalProjection(keep_orthogonal=False)
    layer.adapt(x)
    model = keras.Sequential([keras.Input((5,)), layer])
    path = str(tmp_path / "rotation.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[0].keep_orthogonal is False
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_non_finite_data_raises(rng):
    x = _data(rng)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        OrthogonalProjection().adapt(x)


@pytest.mark.parametrize("shape", [(10,), (1, 4), (2, 3, 4)])
def test_data_of_the_wrong_shape_raises(shape):
    with pytest.raises(ValueError, match=r"\(N, D\) with N >= 2"):
        OrthogonalProjection().adapt(np.ones(shape))


def test_data_of_another_width_raises(rng):
    layer = OrthogonalProjection()
    layer.build((None, 5))
    with pytest.raises(ValueError, match="built for width 5"):
        layer.adapt(np.ones((4, 3)))


def test_unknown_width_raises():
    with pytest.raises(ValueError, match="known D"):
        OrthogonalProjection().build((None, None))


def test_non_bool_flag_raises():
    with pytest.raises(TypeError, match="keep_orthogonal"):
        OrthogonalProjection(keep_orthogonal="yes")


def test_positional_argument_raises():
    # Python's own message for the bare `*`; it never suggests `self`.
    with pytest.raises(TypeError, match="positional argument") as error:
        OrthogonalProjection(True)
    assert "self" not in str(error.value)
