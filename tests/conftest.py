import os

import keras
import numpy as np
import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "once: tests that give the same result under every backend (the "
        "numpy modules, checks of the repository) or whose Keras parts "
        "other tests check under every backend (the command line, the "
        "demo, the benchmarks, the README and docs examples, the real "
        "model); `make test` runs them under the first backend only.",
    )


def pytest_collection_modifyitems(config, items):
    # KERAS_MRL_SKIP_ONCE=1 leaves out what another stage already ran.
    if not os.environ.get("KERAS_MRL_SKIP_ONCE"):
        return
    kept = [item for item in items if not item.get_closest_marker("once")]
    deselected = [item for item in items if item.get_closest_marker("once")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def jit_compile():
    """XLA on the backends that compile the train step; torch runs eagerly.

    For the tests about XLA. Other tests compile with Keras' default, which
    is XLA on JAX and, without an accelerator, a plain graph on TensorFlow.
    """
    return keras.backend.backend() in ("tensorflow", "jax")


@pytest.fixture(autouse=True)
def _reset_state():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
