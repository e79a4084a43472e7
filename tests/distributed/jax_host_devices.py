"""Worker: JAX DataParallel and ModelParallel over two host devices.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=2 \
    python jax_host_devices.py OUT.npz

The host device count is read once, when JAX starts, hence a process of its
own. Writes the one-device reference, the DataParallel run and the
ModelParallel run (whose Matryoshka heads are sharded over their units by
`keras_mrl.distribution.matryoshka_layout_map`), plus the sharding spec of
every head variable.
"""

import contextlib
import sys

# Like a JAX-only install (a TPU VM), without TensorFlow: Keras' serializer
# would otherwise import it, which costs seconds per worker.
sys.modules["tensorflow"] = None

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import problem  # noqa: E402

from keras_mrl.distribution import matryoshka_layout_map  # noqa: E402


def train(distribution):
    # Every layer of the problem is named, so each run has the variable
    # paths that the layout map was built from.
    x, y = problem.data()
    scope = distribution.scope() if distribution else contextlib.nullcontext()
    with scope:
        model = problem.build_model()
        problem.compile_model(model, jit_compile=True)
        return model, problem.fit(model, x, y)


def head_variables(model):
    return model.get_layer("head").weights + model.get_layer("tied").weights


def specs(model):
    """`{path: partition spec}` of the head variables, as strings."""
    return {
        v.path: np.array(str(tuple(v.value.sharding.spec)))
        for v in head_variables(model)
    }


def shard_shapes(model):
    """`{path: shape of the slice on the first device}` of the heads."""
    return {
        v.path: np.array(v.value.addressable_shards[0].data.shape)
        for v in head_variables(model)
    }


def main(out):
    devices = jax.devices()
    assert len(devices) == 2, devices
    reference, reference_history = train(None)

    data_parallel = keras.distribution.DataParallel(devices=devices)
    dp_model, dp_history = train(data_parallel)

    mesh = keras.distribution.DeviceMesh(
        (1, 2), ["batch", "model"], devices=devices
    )
    layout_map = matryoshka_layout_map(
        reference, device_mesh=mesh, model_axis="model"
    )
    model_parallel = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    mp_model, mp_history = train(model_parallel)
    problem.save(
        out,
        reference_weights=problem.weights(reference),
        reference_history=reference_history,
        dp_weights=problem.weights(dp_model),
        dp_history=dp_history,
        dp_devices={
            v.path: np.array(len(v.value.sharding.device_set))
            for v in dp_model.weights
        },
        mp_weights=problem.weights(mp_model),
        mp_history=mp_history,
        mp_specs=specs(mp_model),
        mp_shard_shapes=shard_shapes(mp_model),
    )


if __name__ == "__main__":
    main(sys.argv[1])
