import os

import keras
import numpy as np
import pytest
from component_test import run_layer_test
from conftest import jit_compile

from keras_mrl.layers._truncate import Truncate


def _reference(x, dim):
    prefix = np.asarray(x, dtype=np.float64)[..., :dim]
    norm = np.linalg.norm(prefix, axis=-1, keepdims=True)
    return prefix / np.maximum(norm, 1e-300)


def _encoder(width=16):
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(width)(hidden))


@pytest.mark.parametrize("normalize", [True, False])
def test_matches_reference(normalize):
    x = np.random.default_rng(0).normal(size=(6, 3, 12)).astype("float32")
    out = keras.ops.convert_to_numpy(Truncate(5, normalize=normalize)(x))
    expected = _reference(x, 5) if normalize else x[..., :5]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_component():
    x = np.random.default_rng(0).normal(size=(4, 3, 8)).astype("float32")
    run_layer_test(Truncate, {"dim": 4, "normalize": True}, x, (4, 3, 4))


def test_compute_output_shape():
    layer = Truncate(4)
    assert layer.compute_output_shape((None, 7, 16)) == (None, 7, 4)
    symbolic = layer(keras.Input((7, 16)))
    assert tuple(symbolic.shape) == (None, 7, 4)


@pytest.mark.parametrize("dim", [0, -1])
def test_non_positive_dim_raises_at_construction(dim):
    with pytest.raises(ValueError, match=rf"dim={dim}"):
        Truncate(dim)


def test_non_int_dim_raises_at_construction():
    with pytest.raises(TypeError, match="dim"):
        Truncate(4.0)


def test_positional_normalize_raises():
    with pytest.raises(TypeError, match="positional argument"):
        Truncate(4, True)


@pytest.mark.parametrize("normalize", ["no", 1])
def test_non_bool_normalize_raises(normalize):
    with pytest.raises(TypeError, match=rf"`normalize`.*{normalize!r}"):
        Truncate(4, normalize=normalize)


def test_too_wide_dim_raises_at_build():
    layer = Truncate(32)
    with pytest.raises(ValueError, match=r"dim`=32.*\(None, 16\)"):
        layer.build((None, 16))


def test_get_config_round_trip():
    layer = Truncate(8, normalize=False, name="cut")
    clone = Truncate.from_config(layer.get_config())
    assert (clone.dim, clone.normalize, clone.name) == (8, False, "cut")


def test_registered_for_deserialization():
    config = keras.saving.serialize_keras_object(Truncate(3))
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, Truncate) and restored.dim == 3


def test_save_and_load_gives_identical_outputs(tmp_path):
    serving = keras.Sequential([_encoder(), Truncate(8)])
    x = np.random.default_rng(1).normal(size=(9, 10)).astype("float32")
    expected = serving.predict(x, verbose=0)
    path = os.path.join(tmp_path, "serving.keras")
    serving.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[-1], Truncate)
    assert loaded.layers[-1].dim == 8
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    np.testing.assert_allclose(
        np.linalg.norm(expected, axis=-1), 1.0, atol=1e-6
    )


def test_jit_predict_matches_reference():
    encoder = _encoder()
    serving = keras.Sequential([encoder, Truncate(4)])
    serving.compile(jit_compile=jit_compile())
    x = np.random.default_rng(2).normal(size=(5, 10)).astype("float32")
    full = encoder.predict(x, verbose=0)
    np.testing.assert_allclose(
        serving.predict(x, verbose=0), _reference(full, 4), atol=1e-5
    )


def test_mixed_precision_returns_compute_dtype():
    layer = Truncate(2, dtype="mixed_float16")
    x = np.array([[300.0, 400.0, 1.0], [0.5, -0.25, 2.0]], dtype="float32")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out).astype("float32"),
        _reference(x, 2),
        atol=1e-3,
    )
