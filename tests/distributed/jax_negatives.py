"""Worker: in-batch negatives under JAX DataParallel on two host devices.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
    python jax_negatives.py OUT.npz

Trains one SGD step of a `ContrastiveModel` with
`MatryoshkaLoss(MultipleNegativesRankingLoss(symmetric=True))` on one
device and under `keras.distribution.DataParallel`, cached and not, and
the same step on one device on each device's half of the batch. The host
device count is read once, when JAX starts, hence a process of its own.
"""

import sys

# Like a JAX-only install, without TensorFlow (see jax_host_devices.py).
sys.modules["tensorflow"] = None

import jax  # noqa: E402
import keras  # noqa: E402
import negatives  # noqa: E402


def main(out):
    devices = jax.devices()
    assert len(devices) == 2, devices
    x = negatives.data()
    half = negatives.GLOBAL_BATCH // 2
    results = {
        "one_device": negatives.step(
            negatives.build(symmetric=True, gather=False), x
        )
    }
    for i in range(2):
        rows = tuple(b[i * half : (i + 1) * half] for b in x)
        results[f"half_{i}"] = negatives.step(
            negatives.build(symmetric=True, gather=False), rows
        )
    data_parallel = keras.distribution.DataParallel(devices=devices)
    for name, mini_batch_size in (("data_parallel", None), ("cached", 3)):
        with data_parallel.scope():
            model = negatives.build(
                symmetric=True, gather=False, mini_batch_size=mini_batch_size
            )
            results[name] = negatives.step(model, x)
    negatives.save(out, results)


if __name__ == "__main__":
    main(sys.argv[1])
