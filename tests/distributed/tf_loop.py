"""The custom training loop of the TF MultiWorkerMirroredStrategy test.

Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy, so this is how
keras_mrl trains there: `strategy.run` on a distributed dataset, with the
per-example values of `MatryoshkaLoss.call` summed per replica and divided
by the GLOBAL batch (`tf.nn.compute_average_loss`), so that the optimizer's
all-reduce sum of the replicas' gradients is the gradient of the global
mean. Run under the default strategy, it is the one-device reference.
"""

import keras
import numpy as np
import problem
import tensorflow as tf


def train(strategy):
    """Trains `problem`'s model; returns `(weights, step losses, metric)`."""
    x, y = problem.data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.batch(problem.GLOBAL_BATCH, drop_remainder=True)
    # Each worker reads the same global batches; DATA sharding gives every
    # replica its slice of each of them.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = strategy.experimental_distribute_dataset(
        dataset.with_options(options)
    )
    with strategy.scope():
        model = problem.build_model()
        optimizer = keras.optimizers.SGD(problem.LEARNING_RATE, momentum=0.9)
        optimizer.build(model.trainable_variables)
        losses = problem.losses()
        metric = problem.metric()

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            per_example = tf.add_n(
                [loss.call(y[k], y_pred[k]) for k, loss in losses.items()]
            )
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=problem.GLOBAL_BATCH
            )
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        metric.update_state(y["head"], y_pred["head"])
        return loss

    @tf.function
    def step(x, y):
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce("SUM", per_replica, axis=None)

    step_losses = []
    for _ in range(problem.EPOCHS):
        for batch_x, batch_y in dataset:
            step_losses.append(float(step(batch_x, batch_y)))
    results = {k: np.asarray(v) for k, v in metric.result().items()}
    results["step_losses"] = np.asarray(step_losses)
    return problem.weights(model), results
