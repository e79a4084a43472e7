import keras
import numpy as np
import pytest


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
