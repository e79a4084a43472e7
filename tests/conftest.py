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


class _OptimisedNotebookKernels:
    """The notebooks' kernels compile with XLA's optimisation passes.

    `make test` turns those passes off in `XLA_FLAGS`: the tests run a few
    steps of many small programs, where compiling costs more than it saves.
    The notebooks train for many steps, where the passes pay, and they run
    in the same pytest workers as the tests. A kernel inherits the worker's
    environment when it starts, so the flags are left out of that
    environment while a notebook runs, and are back before the next test.
    A plugin rather than a hook of this file, whose hooks see only the tests
    under tests/.
    """

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        if item.path.suffix != ".ipynb":
            return (yield)
        flags = os.environ.pop("XLA_FLAGS", None)
        try:
            return (yield)
        finally:
            if flags is not None:
                os.environ["XLA_FLAGS"] = flags


def pytest_configure(config):
    config.pluginmanager.register(_OptimisedNotebookKernels())
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


# The files that take longest in `make test`, longest first, from
# `--durations=0` (the most seconds a file took in any one stage). pytest-xdist
# hands each file whole to the next free worker, in collection order; these
# go first and the rest follow in their own order, so that no long file starts
# while the other worker is about to idle (the longest-processing-time-first
# rule). A file missing here only costs time, and tests/test_suite_order.py
# checks that every entry exists.
LONGEST_FIRST = (
    "notebooks/05_pretrained_text_embedder.ipynb",
    "notebooks/06_hard_negatives_and_depth.ipynb",
    "tests/test_contrastive_model.py",
    "tests/test_cached_negatives.py",
    "tests/test_docs.py",
    "notebooks/07_export_onnx.ipynb",
    "notebooks/02_finetune_pretrained.ipynb",
    "notebooks/04_adaptive_and_scaling.ipynb",
    "tests/test_runtime_export.py",
    "tests/test_text_embedder_families.py",
    "tests/test_distribution.py",
    "tests/test_depth.py",
    "tests/test_length_buckets.py",
    "tests/test_matryoshka_adaptor.py",
    "tests/test_readme.py",
    "tests/test_st_export.py",
    "tests/test_st_load.py",
    "tests/test_demo.py",
    "notebooks/01_quickstart.ipynb",
    "tests/test_xla.py",
    "tests/test_quantization_aware.py",
    "notebooks/03_embeddings_retrieval.ipynb",
    "tests/test_cli_finetune.py",
    "tests/test_text_reliability.py",
    "tests/test_cli.py",
    "tests/test_benchmarks.py",
    "tests/test_metrics.py",
)


def pytest_collection_modifyitems(config, items):
    _keep_once_tests_to_one_stage(config, items)
    sort_longest_first(items)


def sort_longest_first(items):
    """Puts the tests of `LONGEST_FIRST`'s files first, in its order.

    A stable sort: within a file, and among the files not listed, the
    collection order stays.
    """
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def _keep_once_tests_to_one_stage(config, items):
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


@pytest.fixture(scope="session", autouse=True)
def _tensorflow_graphs_run_as_traced():
    """Turns TensorFlow's graph optimizer (Grappler) off for the tests.

    Grappler rewrites each traced function and each `tf.data` map function
    when they are instantiated: about 0.15 s for every iterator over a
    dataset that runs a KerasHub tokenizer, which every `fit`, `evaluate`
    and `encode` of raw strings builds. The tests run each graph a few
    times, so the rewrite costs more than it saves. The tests of a model's
    numbers hold either way; users keep TensorFlow's default.
    """
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": True}
    )


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
