"""The contrastive problem of the in-batch negatives tests on many devices.

Imported by the worker scripts next to it (`tf_negatives.py`,
`jax_negatives.py`), so that every run builds the same model from the
same initial weights and trains on the same global batch.
"""

import keras
import numpy as np

import keras_mrl

GLOBAL_BATCH = 12
FEATURES = 6
WIDTH = 8
LEARNING_RATE = 100.0


def data():
    """(anchor, positive, hard negative) features of the global batch."""
    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(GLOBAL_BATCH, FEATURES))
    positives = anchors + 0.5 * rng.normal(size=anchors.shape)
    negatives = rng.normal(size=anchors.shape)
    return tuple(b.astype("float32") for b in (anchors, positives, negatives))


def build(*, symmetric, gather, mini_batch_size=None):
    """A compiled ContrastiveModel with fixed initial weights."""
    encoder = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(WIDTH, activation="tanh"),
            keras.layers.Dense(WIDTH),
        ]
    )
    rng = np.random.default_rng(1)
    encoder.set_weights(
        [rng.normal(scale=0.5, size=w.shape) for w in encoder.weights]
    )
    model = keras_mrl.models.ContrastiveModel(
        encoder, mini_batch_size=mini_batch_size
    )
    loss = keras_mrl.losses.MultipleNegativesRankingLoss(
        symmetric=symmetric, gather_across_replicas=gather
    )
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=keras_mrl.losses.MatryoshkaLoss(
            loss, nesting_dims=[4, WIDTH], weights=[1.0, 2.0]
        ),
        # On CPU, TensorFlow cannot XLA-compile a step whose variables sit
        # on another logical device; JAX compiles.
        jit_compile=keras.backend.backend() == "jax",
    )
    return model


def step(model, x):
    """`{"loss": logged loss, "gradient_i": ...}` of one SGD step on `x`."""
    before = [np.array(w) for w in model.get_weights()]
    history = model.fit(
        x, batch_size=len(x[0]), epochs=1, shuffle=False, verbose=0
    )
    result = {"loss": np.asarray(history.history["loss"][0], "float64")}
    for i, (b, a) in enumerate(zip(before, model.get_weights())):
        result[f"gradient_{i}"] = (b - a) / LEARNING_RATE
    return result


def save(path, results):
    """Writes `{run: {key: array}}` into one `.npz` file."""
    np.savez(
        path,
        **{
            f"{run}:{key}": value
            for run, values in results.items()
            for key, value in values.items()
        },
    )


def load(path):
    """Inverse of `save`."""
    results = {}
    with np.load(path) as archive:
        for name in archive.files:
            run, key = name.split(":", 1)
            results.setdefault(run, {})[key] = archive[name]
    return results
