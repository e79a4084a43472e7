"""Worker: in-batch negatives over two replicas of a MirroredStrategy.

Usage: python tf_negatives.py OUT.npz

Trains one SGD step of a `ContrastiveModel` (anchor, positive, hard
negative) with `MatryoshkaLoss(MultipleNegativesRankingLoss(...))` on two
logical CPUs, with and without `gather_across_replicas`, cached and not,
and the same steps on one device: on the global batch, and on each
replica's half. Writes each run's loss and gradient. The logical devices
must be configured before TensorFlow starts, hence a process of its own.
"""

import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)

import negatives  # noqa: E402  (after the device setup)


def main(out):
    x = negatives.data()
    half = negatives.GLOBAL_BATCH // 2
    results = {}
    for symmetric in (False, True):
        tag = "symmetric" if symmetric else "forward"
        results[f"one_device_{tag}"] = negatives.step(
            negatives.build(symmetric=symmetric, gather=True), x
        )
    # Each replica's half on one device: what a replica sees without
    # gathering.
    for i in range(2):
        rows = tuple(b[i * half : (i + 1) * half] for b in x)
        results[f"half_{i}"] = negatives.step(
            negatives.build(symmetric=True, gather=False), rows
        )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    runs = {
        "mirrored_gathered_forward": dict(symmetric=False, gather=True),
        "mirrored_gathered_symmetric": dict(symmetric=True, gather=True),
        "mirrored_local_symmetric": dict(symmetric=True, gather=False),
        "mirrored_gathered_cached_symmetric": dict(
            symmetric=True, gather=True, mini_batch_size=3
        ),
    }
    for name, kwargs in runs.items():
        with strategy.scope():
            model = negatives.build(**kwargs)
        results[name] = negatives.step(model, x)
    negatives.save(out, results)


if __name__ == "__main__":
    main(sys.argv[1])
