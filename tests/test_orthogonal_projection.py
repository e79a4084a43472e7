"""keras_mrl.layers.OrthogonalProjection against numpy's PCA."""

import keras
import numpy as np
import pytest

from conftest import jit_compile
from keras_mrl.layers.orthogonal_projection import OrthogonalProjection


def _data(rng, n=300, scales=(0.2, 3.0, 1.0, 0.5, 2.0)):
    return (rng.normal(size=(n, len(scales))) * scales + 1.0).astype(
        "float32"
    )


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
        np.testing.assert_allclose(y[:, i], sign * expected[:, i],
                                   atol=1e-3)
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
    model.compile(optimizer=keras.optimizers.SGD(0.02), loss="mse",
                  jit_compile=jit_compile())
    model.fit(x, 2.0 * x[:, ::-1], epochs=3, batch_size=16, verbose=0)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    error = np.abs(kernel.T @ kernel - np.eye(5)).max()
    if keep:
        assert error < 1e-3
    else:
        assert error > 1e-2


def test_serialization_round_trip(rng, tmp_path):
    x = _data(rng)
    layer = OrthogonalProjection(keep_orthogonal=False)
    layer.adapt(x)
    model = keras.Sequential([keras.Input((5,)), layer])
    path = str(tmp_path / "rotation.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[0].keep_orthogonal is False
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


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
    with pytest.raises(TypeError, match="keyword"):
        OrthogonalProjection(True)
