"""Worker: TF MirroredStrategy over two logical CPUs against one device.

Usage: python tf_mirrored.py OUT.npz

The logical devices must be configured before TensorFlow initialises its
runtime, hence a process of its own; and one MirroredStrategy per process,
since a second one can clash with the first in collective keys.
"""

import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)

import problem  # noqa: E402  (after the device setup)


def main(out):
    x, y = problem.data()
    # On CPU, XLA cannot compile a step whose variables sit on another
    # logical device, so both runs use the plain graph step.
    reference = problem.build_model()
    problem.compile_model(reference, jit_compile=False)
    reference_history = problem.fit(reference, x, y)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = problem.build_model()
        problem.compile_model(model, jit_compile=False)
    history = problem.fit(model, x, y)
    problem.save(
        out,
        reference_weights=problem.weights(reference),
        reference_history=reference_history,
        weights=problem.weights(model),
        history=history,
    )


if __name__ == "__main__":
    main(sys.argv[1])
