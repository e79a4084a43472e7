"""Tests of keras_mrl.distribution, and data/model parallel training.

The helpers are tested in this process on every backend. The parallel runs
need their devices set up before TensorFlow or JAX starts, so they train in
worker processes (`tests/distributed/`), each against the same problem on
one device, on the one backend they concern. The workers of a backend all
start in one module fixture, so that their imports overlap.
"""

import json
import os
import re
import sys

import keras
import numpy as np
import pytest

import keras_mrl
from keras_mrl.distribution import check_global_batch
from keras_mrl.distribution import matryoshka_layout_map

BACKEND = keras.backend.backend()
WORKERS = os.path.join(os.path.dirname(__file__), "distributed")
TIMEOUT = 300


# The workers import each other by name, as scripts in one folder do.
sys.path.insert(0, WORKERS)
import launch  # noqa: E402
import problem  # noqa: E402

only_tensorflow = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="tf.distribute needs the TF backend"
)
only_jax = pytest.mark.skipif(
    BACKEND != "jax", reason="this keras.distribution path is JAX-only"
)


def _assert_same_training(weights, history, ref_weights, ref_history):
    assert len(weights) == len(ref_weights)
    initial = problem.initial_weights([w.shape for w in ref_weights])
    for w, ref, init in zip(weights, ref_weights, initial):
        # Training moved every weight, so equality is not the start values.
        assert not np.allclose(ref, init, atol=1e-3)
        np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)
    assert sorted(history) == sorted(ref_history)
    assert {"acc@4", "acc@8", "acc@16", "embedding_loss"} <= set(history)
    for key in ref_history:
        np.testing.assert_allclose(
            history[key], ref_history[key], rtol=1e-5, err_msg=key
        )


@pytest.fixture(scope="module", autouse=True)
def _start_workers_first(request):
    """Starts this backend's workers before any test, if a test needs them.

    Importing TensorFlow or JAX takes each worker seconds; started first,
    they run while the in-process tests do.
    """
    wanted = {"tensorflow": "tf_workers", "jax": "jax_workers"}.get(BACKEND)
    needed = {
        name
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        for name in item.fixturenames
    }
    if wanted in needed:
        request.getfixturevalue(wanted)


# --- matryoshka_layout_map ------------------------------------------------


def _mesh(shape=(1, 2), axes=("batch", "model")):
    devices = [f"cpu:{i}" for i in range(int(np.prod(shape)))]
    return keras.distribution.DeviceMesh(shape, list(axes), devices=devices)


def _two_head_model():
    return keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(16, name="trunk"),
            keras_mrl.layers.MatryoshkaDense(
                4, nesting_dims=[8, 16], name="head"
            ),
            keras.layers.Reshape((8,)),
            keras_mrl.layers.MatryoshkaDense(
                6, nesting_dims=[4, 8], tied=True, name="head_2"
            ),
        ],
        name="net",
    )


def test_layout_map_shards_every_head_variable_on_units():
    model = _two_head_model()
    layout_map = matryoshka_layout_map(model, device_mesh=_mesh())
    sharded = {}
    for v in model.weights:
        layout = layout_map[v.path]
        sharded[v.path] = None if layout is None else layout.axes
    assert sharded == {
        "net/trunk/kernel": None,
        "net/trunk/bias": None,
        "net/head/kernel_8": (None, "model"),
        "net/head/bias_8": ("model",),
        "net/head/kernel_16": (None, "model"),
        "net/head/bias_16": ("model",),
        "net/head_2/kernel_0_4": (None, "model"),
        "net/head_2/kernel_4_8": (None, "model"),
        "net/head_2/bias": ("model",),
    }


def test_layout_map_keys_are_anchored_and_escaped():
    layout_map = matryoshka_layout_map(_two_head_model(), device_mesh=_mesh())
    # "head" must not catch "head_2" or a path that merely contains it, and
    # the "." of a name must not match any character.
    for path in (
        "net/head/kernel_80",
        "other/net/head/kernel_8",
        "net/head_2/kernel_8",
        "net/head/kernel_16/slot",
    ):
        assert layout_map[path] is None, path
    assert all(k.startswith("^") and k.endswith("$") for k in layout_map)


def test_layout_map_extends_a_given_map_on_a_named_axis():
    mesh = _mesh((2, 2), ("data", "classes"))
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["net/trunk/kernel"] = (None, "classes")
    result = matryoshka_layout_map(
        _two_head_model(),
        device_mesh=mesh,
        model_axis="classes",
        layout_map=layout_map,
    )
    assert result is layout_map
    assert layout_map["net/trunk/kernel"].axes == (None, "classes")
    assert layout_map["net/head/kernel_8"].axes == (None, "classes")
    assert layout_map["net/head/kernel_8"].device_mesh is mesh


def test_layout_map_errors():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="holds no keras_mrl"):
        matryoshka_layout_map(plain, device_mesh=_mesh())
    with pytest.raises(ValueError, match="'units' is not an axis|axes are"):
        matryoshka_layout_map(
            _two_head_model(), device_mesh=_mesh(), model_axis="units"
        )
    odd = keras.Sequential(
        [
            keras.Input((8,)),
            keras_mrl.layers.MatryoshkaDense(5, nesting_dims=[4, 8]),
        ]
    )
    with pytest.raises(ValueError, match="units=5.*multiple of 2"):
        matryoshka_layout_map(odd, device_mesh=_mesh())
    unbuilt = keras.Sequential(
        [keras_mrl.layers.MatryoshkaDense(4, nesting_dims=[4, 8])]
    )
    with pytest.raises(ValueError, match="not built"):
        matryoshka_layout_map(unbuilt, device_mesh=_mesh())
    with pytest.raises(TypeError, match="`model` must be a built keras"):
        matryoshka_layout_map(None, device_mesh=_mesh())
    with pytest.raises(TypeError, match="`device_mesh` must be a keras"):
        matryoshka_layout_map(_two_head_model(), device_mesh=None)
    with pytest.raises(TypeError, match="positional argument"):
        matryoshka_layout_map(_two_head_model(), _mesh())


# --- check_global_batch ---------------------------------------------------


def test_check_global_batch_data_parallel():
    data_parallel = keras.distribution.DataParallel(
        devices=[f"cpu:{i}" for i in range(4)]
    )
    assert check_global_batch(32, distribution=data_parallel) == 8
    message = (
        "global batch 30 is not divisible by the 4 devices of DataParallel; "
        "use a batch size that is a multiple of 4 (e.g. 28 or 32)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        check_global_batch(30, distribution=data_parallel)
    with pytest.raises(ValueError, match=r"\(e.g. 4\)"):
        check_global_batch(3, distribution=data_parallel)


def test_check_global_batch_model_parallel_counts_the_batch_axis():
    layout_map = keras.distribution.LayoutMap(_mesh((2, 3), ("b", "m")))
    model_parallel = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="b"
    )
    # Six devices, but only the two of the batch axis split the batch.
    assert check_global_batch(10, distribution=model_parallel) == 5
    with pytest.raises(ValueError, match="2 devices of the 'b' mesh axis"):
        check_global_batch(9, distribution=model_parallel)


def test_check_global_batch_reads_the_current_distribution():
    assert check_global_batch(7) == 7
    data_parallel = keras.distribution.DataParallel(devices=["cpu:0", "cpu:1"])
    with data_parallel.scope():
        assert check_global_batch(8) == 4
        with pytest.raises(ValueError, match="not divisible by the 2"):
            check_global_batch(7)


@only_tensorflow
def test_check_global_batch_reads_the_tf_strategy_scope():
    import tensorflow as tf

    # One device is enough: the count is the strategy's, not the machine's.
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        assert check_global_batch(5) == 5
    assert check_global_batch(6, distribution=strategy) == 6


def test_check_global_batch_bad_batch():
    with pytest.raises(TypeError, match="must be an int"):
        check_global_batch(8.0)
    with pytest.raises(ValueError, match="positive"):
        check_global_batch(0)
    with pytest.raises(TypeError, match="positional argument"):
        check_global_batch(8, None)


# --- TensorFlow: tf.distribute against one device -------------------------


@pytest.fixture(scope="module")
def tf_workers(tmp_path_factory):
    """Starts the MirroredStrategy worker and the two MWMS workers."""
    out = tmp_path_factory.mktemp("tf_workers")
    ports = launch.free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    multi_worker = [
        (
            ["tf_multi_worker.py", str(out / "multi_worker")],
            launch.worker_env(
                "tensorflow",
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
            ),
        )
        for i in range(2)
    ]
    mirrored = [
        (
            ["tf_mirrored.py", str(out / "mirrored.npz")],
            launch.worker_env("tensorflow"),
        )
    ]
    with launch.Workers(mirrored) as m, launch.Workers(multi_worker) as w:
        yield {"mirrored": m, "multi_worker": w, "out": out}


@only_tensorflow
def test_tf_mirrored_strategy_fit_equals_one_device(tf_workers):
    tf_workers["mirrored"].wait(TIMEOUT)
    r = problem.load(tf_workers["out"] / "mirrored.npz")
    _assert_same_training(
        r["weights"],
        r["history"],
        r["reference_weights"],
        r["reference_history"],
    )


@only_tensorflow
def test_tf_multi_worker_custom_loop_equals_one_device(tf_workers):
    import tensorflow as tf

    # The one-device reference trains here while the workers run.
    import tf_loop

    ref_weights, ref_results = tf_loop.train(tf.distribute.get_strategy())
    tf_workers["multi_worker"].wait(TIMEOUT)
    r = problem.load(tf_workers["out"] / "multi_worker.loop.npz")
    weights, results = r["weights"], r["results"]
    initial = problem.initial_weights([w.shape for w in ref_weights])
    for w, ref, init in zip(weights, ref_weights, initial):
        assert not np.allclose(ref, init, atol=1e-3)
        np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)
    assert sorted(results) == ["acc@16", "acc@4", "acc@8", "step_losses"]
    for key in ref_results:
        np.testing.assert_allclose(
            results[key], ref_results[key], rtol=1e-5, err_msg=key
        )


@only_tensorflow
def test_tf_multi_worker_fit_fails_as_docs_scaling_says(tf_workers):
    # docs/scaling.md documents that Keras 3.15's fit fails under
    # MultiWorkerMirroredStrategy in its data adapter (the custom training
    # loop works, see the test above). When Keras fixes it, or fails in
    # another way, this fails and the docs need updating.
    tf_workers["multi_worker"].wait(TIMEOUT)
    outcome = (tf_workers["out"] / "multi_worker.fit.txt").read_text()
    assert outcome != "ok", (
        "fit now works under MultiWorkerMirroredStrategy: update "
        "docs/scaling.md (and this test) to say so."
    )
    assert "PerReplica" in outcome, f"fit failed otherwise: {outcome}"


# --- JAX: keras.distribution against one device ---------------------------


@pytest.fixture(scope="module")
def jax_workers(tmp_path_factory):
    """Starts the two multi-process workers and the two-device worker."""
    out = tmp_path_factory.mktemp("jax_workers")
    (port,) = launch.free_ports(1)
    multi_process = [
        (
            ["jax_multi_process.py", str(port), str(i), str(out / "mp.npz")],
            launch.worker_env("jax"),
        )
        for i in range(2)
    ]
    host_devices = [
        (
            ["jax_host_devices.py", str(out / "host.npz")],
            launch.worker_env(
                "jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"
            ),
        )
    ]
    with launch.Workers(multi_process) as p, launch.Workers(host_devices) as h:
        yield {"multi_process": p, "host_devices": h, "out": out}


@pytest.fixture(scope="module")
def host_device_results(jax_workers):
    jax_workers["host_devices"].wait(TIMEOUT)
    return problem.load(jax_workers["out"] / "host.npz")


@only_jax
def test_jax_multi_process_fit_equals_one_process(jax_workers):
    # The one-process reference trains here while the workers run.
    x, y = problem.data()
    model = problem.build_model()
    problem.compile_model(model, jit_compile=True)
    history = problem.fit(model, x, y)
    jax_workers["multi_process"].wait(TIMEOUT)
    r = problem.load(jax_workers["out"] / "mp.npz")
    _assert_same_training(
        r["weights"], r["history"], problem.weights(model), history
    )


@only_jax
def test_jax_data_parallel_two_host_devices(host_device_results):
    r = host_device_results
    # Every variable is replicated on both devices.
    assert set(int(n) for n in r["dp_devices"].values()) == {2}
    _assert_same_training(
        r["dp_weights"],
        r["dp_history"],
        r["reference_weights"],
        r["reference_history"],
    )


@only_jax
def test_jax_model_parallel_shards_heads_over_units(host_device_results):
    r = host_device_results
    # The spec, not only the run: a layout key that matched nothing would
    # have replicated the kernel and trained just the same.
    specs = {k: str(v) for k, v in r["mp_specs"].items()}
    kernels = [
        "head/kernel_4",
        "head/kernel_8",
        "head/kernel_16",
        "tied/kernel_0_4",
        "tied/kernel_4_8",
        "tied/kernel_8_16",
    ]
    biases = ["head/bias_4", "head/bias_8", "head/bias_16", "tied/bias"]
    assert specs == {
        **{k: "(None, 'model')" for k in kernels},
        **{b: "('model',)" for b in biases},
    }
    half = problem.UNITS // 2
    shapes = {k: tuple(v) for k, v in r["mp_shard_shapes"].items()}
    assert shapes["head/kernel_4"] == (4, half)
    assert shapes["tied/kernel_8_16"] == (8, half)
    assert shapes["tied/bias"] == (half,)
    _assert_same_training(
        r["mp_weights"],
        r["mp_history"],
        r["reference_weights"],
        r["reference_history"],
    )
