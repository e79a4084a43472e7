import os

import keras
import numpy as np
import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "numpy_only: tests of the numpy-only modules (evaluation, retrieval, "
        "adaptive), which give the same result under every backend; "
        "`make test` runs them under the first backend only.",
    )


def pytest_collection_modifyitems(config, items):
    # KERAS_MRL_NUMPY_ONLY=skip leaves out what another stage already ran.
    if os.environ.get("KERAS_MRL_NUMPY_ONLY") != "skip":
        return
    kept = [item for item in items if "numpy_only" not in item.keywords]
    deselected = [item for item in items if "numpy_only" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def jit_compile():
    """XLA on the backends that compile the train step; torch runs eagerly."""
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
