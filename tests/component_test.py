"""One check of everything a drop-in Keras component must do.

As KerasHub's `TestCase.run_layer_test`: every layer, loss and metric test
calls one of `run_layer_test`, `run_loss_test`, `run_metric_test`, which
check the config and its JSON round trip, symbolic and eager calls, a
`.keras` save and load, a compiled `fit` (XLA on TensorFlow and JAX; torch
runs eagerly) and the mixed precision policies.
"""

import json
import os
import tempfile

import keras
import numpy as np
from conftest import jit_compile

JIT = jit_compile()
POLICIES = ("mixed_float16", "mixed_bfloat16")


def _json_round_trip(obj):
    serialized = keras.saving.serialize_keras_object(obj)
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(serialized))
    )
    assert type(restored) is type(obj)
    assert restored.get_config() == obj.get_config()
    return restored


def _check_config(cls, instance, init_kwargs):
    config = instance.get_config()
    for name, value in init_kwargs.items():
        if isinstance(value, (bool, int, float, str, type(None))):
            assert config[name] == value, (name, config[name], value)
    assert cls.from_config(config).get_config() == config
    _json_round_trip(instance)


def _save_and_load(model):
    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(path)
    return keras.models.load_model(path)


def _fit(model, x, y, loss, metrics=None):
    model.compile(optimizer="adam", loss=loss, metrics=metrics, jit_compile=JIT)
    history = model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    return history


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    *,
    loss="mse",
    y=None,
):
    """Checks a layer: config, calls, `.keras` round trip, fit, precision.

    Args:
        cls: the layer class.
        init_kwargs: the constructor arguments (the first positional one
            passed by keyword, as every argument can be).
        input_data: a numpy batch the layer is called on.
        expected_output_shape: the output shape of that batch.
        loss: the loss of the `fit` check.
        y: the `fit` targets; zeros of the output shape by default.
    """
    layer = cls(**init_kwargs)
    output = layer(input_data)
    assert tuple(output.shape) == tuple(expected_output_shape)
    _check_config(cls, layer, init_kwargs)

    inputs = keras.Input(input_data.shape[1:])
    symbolic = cls(**init_kwargs)(inputs)
    assert tuple(symbolic.shape)[1:] == tuple(expected_output_shape)[1:]

    model = keras.Model(inputs, cls(**init_kwargs)(inputs))
    if y is None:
        y = np.zeros(expected_output_shape, "float32")
    _fit(model, input_data, y, loss)
    restored = _save_and_load(model)
    np.testing.assert_allclose(
        restored.predict(input_data, verbose=0),
        model.predict(input_data, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )

    for policy in POLICIES:
        mixed = cls(**init_kwargs, dtype=policy)
        out = mixed(input_data)
        assert keras.backend.standardize_dtype(out.dtype) == (
            mixed.compute_dtype
        ), (policy, out.dtype)
        for variable in mixed.weights:
            assert variable.dtype == "float32", (policy, variable.path)
    return layer


def run_loss_test(loss, model, x, y):
    """Checks a loss inside a model: config, `.keras`, jit fit, precision.

    Args:
        loss: the loss instance.
        model: a function returning a fresh, built model for the loss.
        x: the model inputs.
        y: the targets (None for a loss that ignores them).
    """
    _check_config(type(loss), loss, {})
    trained = model()
    _fit(trained, x, y, loss)
    restored = _save_and_load(trained)
    assert restored.loss.get_config() == loss.get_config()
    value = float(trained.evaluate(x, y, verbose=0, batch_size=len(x)))
    np.testing.assert_allclose(
        float(restored.evaluate(x, y, verbose=0, batch_size=len(x))),
        value,
        rtol=1e-5,
    )
    for policy in POLICIES:
        keras.config.set_dtype_policy(policy)
        try:
            _fit(model(), x, y, loss)
        finally:
            keras.config.set_dtype_policy("float32")


def run_metric_test(metric, model, x, y):
    """Checks a metric inside a model: config, `.keras`, jit fit, precision.

    Args:
        metric: the metric instance.
        model: a function returning a fresh, built model and its loss.
        x: the model inputs.
        y: the targets.

    Returns:
        The `fit` history of the float32 run.
    """
    _check_config(type(metric), metric, {})
    trained, loss = model()
    history = _fit(trained, x, y, loss, metrics=[metric])
    restored = _save_and_load(trained)
    expected = trained.evaluate(x, y, verbose=0, return_dict=True)
    actual = restored.evaluate(x, y, verbose=0, return_dict=True)
    assert list(actual) == list(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5)
    for policy in POLICIES:
        keras.config.set_dtype_policy(policy)
        try:
            mixed, loss = model()
            _fit(
                mixed,
                x,
                y,
                loss,
                metrics=[type(metric).from_config(metric.get_config())],
            )
        finally:
            keras.config.set_dtype_policy("float32")
    return history
