"""Worker: one of two TF MultiWorkerMirroredStrategy workers on 127.0.0.1.

Usage: TF_CONFIG=... python tf_multi_worker.py OUT_PREFIX

The strategy must exist before TensorFlow starts its runtime, hence a
process per worker. Worker 0 writes `OUT_PREFIX.loop.npz` (the custom
loop), then both try `fit` and worker 0 writes `OUT_PREFIX.fit.txt`: "ok",
or the error `fit` raised (Keras 3.15 fails in its data adapter).
"""

import json
import os
import sys

import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()

import problem  # noqa: E402  (after the strategy)
import tf_loop  # noqa: E402


def try_fit():
    x, y = problem.data()
    try:
        with strategy.scope():
            model = problem.build_model()
            problem.compile_model(model, jit_compile=False)
        problem.fit(model, x, y)
    except Exception as error:  # the outcome is the result
        # The first line names the failure; the rest prints whole tensors.
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return "ok"


def main(prefix):
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    assert strategy.num_replicas_in_sync == 2
    weights, results = tf_loop.train(strategy)
    if index == 0:
        problem.save(prefix + ".loop.npz", weights=weights, results=results)
    outcome = try_fit()
    if index == 0:
        with open(prefix + ".fit.txt", "w") as f:
            f.write(outcome)


if __name__ == "__main__":
    main(sys.argv[1])
