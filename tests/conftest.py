"""Shared test helpers, and the `once` marker.

Keras is imported inside the hooks and helpers, not here: under
pytest-xdist the controlling process loads this file but runs no test,
and importing Keras (and with it TensorFlow, JAX or torch) there would
delay the start of every worker by seconds.
"""

import os

import numpy as np
import pytest

ALL_BACKENDS = ("torch", "jax", "tensorflow")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "once(backends=None): tests that give the same result under every "
        "backend (the numpy modules, checks of the repository) or whose "
        "Keras parts other tests check under every backend (the command "
        "line, the demo, the benchmarks, the README, docs and docstring "
        "examples, the real model). `make test` runs them in the first of "
        "its stages whose backend is in `backends` (default: any); under "
        "another backend they are skipped.",
    )


def pytest_collection_modifyitems(config, items):
    # KERAS_MRL_ONCE_RAN names the backends whose stages ran before this
    # one: a `once` test that one of them could run is left out here.
    import keras

    ran = os.environ.get("KERAS_MRL_ONCE_RAN", "").split()
    backend = keras.backend.backend()
    kept, deselected = [], []
    for item in items:
        marker = item.get_closest_marker("once")
        if marker is None:
            kept.append(item)
            continue
        backends = marker.kwargs.get("backends", ALL_BACKENDS)
        if any(b in backends for b in ran):
            deselected.append(item)
            continue
        if backend not in backends:
            item.add_marker(
                pytest.mark.skip(reason=f"runs once, under {backends}")
            )
        kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def jit_compile():
    """XLA on the backends that compile the train step; torch runs eagerly.

    For the tests about XLA. Other tests compile with Keras' default, which
    is XLA on JAX and, without an accelerator, a plain graph on TensorFlow.
    """
    import keras

    return keras.backend.backend() in ("tensorflow", "jax")


def gradient(fn, x):
    """The gradient of the scalar `fn(x)` with respect to the array `x`."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return tape.gradient(value, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(fn)(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    fn(x).backward()
    return x.grad.numpy()


@pytest.fixture(autouse=True)
def _reset_state():
    import keras

    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
