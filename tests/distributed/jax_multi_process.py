"""Worker: one of two JAX processes training data parallel on 127.0.0.1.

Usage: python jax_multi_process.py PORT PROCESS_ID OUT.npz

This is the multi-host path Keras recommends for TPU pods, on CPU: the
processes meet at a coordinator, the gloo collectives join their CPUs into
one device list, and each process feeds its own half of every global batch
(`auto_shard_dataset=False`). Process 0 writes the weights and history.
"""

import sys

# Like a JAX-only install (a TPU VM), without TensorFlow: Keras' serializer
# would otherwise import it, which costs seconds per worker.
sys.modules["tensorflow"] = None

import jax  # noqa: E402


def main(port, process_id, out):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
    )
    # Keras may touch JAX on import, and JAX must not start before
    # `initialize`.
    import keras
    import problem

    assert jax.device_count() == 2 and jax.local_device_count() == 1
    # Every process must draw the same initial values (JAX checks that
    # they agree); `keras.distribution.initialize` would agree on a seed.
    keras.utils.set_random_seed(0)
    distribution = keras.distribution.DataParallel(
        devices=jax.devices(), auto_shard_dataset=False
    )
    x, y = problem.data()
    x = problem.process_slice(x, process_id, 2)
    y = {k: problem.process_slice(v, process_id, 2) for k, v in y.items()}
    with distribution.scope():
        model = problem.build_model()
        problem.compile_model(model, jit_compile=True)
        history = problem.fit(model, x, y, batch_size=problem.GLOBAL_BATCH // 2)
    if process_id == 0:
        problem.save(out, weights=problem.weights(model), history=history)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
