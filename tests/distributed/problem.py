"""The toy problem that every data/model parallel test trains.

Imported by the worker scripts next to it and by `tests/test_distribution.py`
(for the one-device references), so that both sides build the same model
from the same initial weights and feed it the same global batches.

The model covers every keras_mrl component that training touches: an untied
and a tied `MatryoshkaDense` trained through a stacked `MatryoshkaLoss`, the
tied one behind a `WidthSampling` layer (so every device must draw the same
widths at every step), a prefix-mode `MatryoshkaLoss` on the trunk
embedding, and a stacked `MatryoshkaMetric`.
"""

import keras
import numpy as np

import keras_mrl

NUM_EXAMPLES = 64
GLOBAL_BATCH = 16
FEATURES = 12
WIDTH = 16
UNITS = 6
NESTING_DIMS = [4, 8, 16]
EPOCHS = 2
LEARNING_RATE = 0.1


def data():
    """Returns `(x, y)`: features and a dict of targets, one per output."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_EXAMPLES, FEATURES)).astype("float32")
    labels = rng.integers(0, UNITS, size=(NUM_EXAMPLES,)).astype("int32")
    teacher = rng.normal(size=(NUM_EXAMPLES, WIDTH)).astype("float32")
    y = {"head": labels, "tied": labels, "embedding": teacher}
    return x, y


def process_slice(array, process_id, num_processes):
    """The rows of every global batch that process `process_id` feeds."""
    local = GLOBAL_BATCH // num_processes
    batches = array.reshape((-1, GLOBAL_BATCH) + array.shape[1:])
    part = batches[:, process_id * local : (process_id + 1) * local]
    return part.reshape((-1,) + array.shape[1:])


def build_model():
    """The model, with fixed initial weights that do not depend on seeds."""
    inputs = keras.Input((FEATURES,), name="features")
    embedding = keras.layers.Dense(WIDTH, activation="tanh", name="trunk")(
        inputs
    )
    outputs = {
        "head": keras_mrl.layers.MatryoshkaDense(
            UNITS, nesting_dims=NESTING_DIMS, name="head"
        )(embedding),
        "tied": keras_mrl.layers.WidthSampling(2, seed=7, name="tied_sampling")(
            keras_mrl.layers.MatryoshkaDense(
                UNITS, nesting_dims=NESTING_DIMS, tied=True, name="tied"
            )(embedding)
        ),
        "embedding": keras.layers.Identity(name="embedding")(embedding),
    }
    model = keras.Model(inputs, outputs, name="mrl")
    values = initial_weights([v.shape for v in model.trainable_weights])
    for variable, value in zip(model.trainable_weights, values):
        variable.assign(value)
    return model


def initial_weights(shapes):
    """The initial values of `build_model`, drawn without Keras' seeds."""
    rng = np.random.default_rng(1)
    return [
        rng.normal(scale=0.3, size=shape).astype("float32") for shape in shapes
    ]


def losses():
    """Per-output losses: stacked for the heads, prefix for the embedding."""
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return {
        "head": keras_mrl.losses.MatryoshkaLoss(ce),
        "tied": keras_mrl.losses.MatryoshkaLoss(ce, weights=[1.0, 1.0, 2.0]),
        "embedding": keras_mrl.losses.MatryoshkaLoss(
            keras.losses.MeanSquaredError(), nesting_dims=NESTING_DIMS
        ),
    }


def metric():
    return keras_mrl.metrics.MatryoshkaMetric(
        keras.metrics.SparseCategoricalAccuracy(name="acc"),
        head_nesting_dims=NESTING_DIMS,
    )


def compile_model(model, jit_compile):
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9),
        loss=losses(),
        metrics={"head": [metric()]},
        jit_compile=jit_compile,
    )


def fit(model, x, y, batch_size=GLOBAL_BATCH):
    """Fits without shuffling; returns the history as float arrays."""
    history = model.fit(
        x, y, batch_size=batch_size, epochs=EPOCHS, shuffle=False, verbose=0
    )
    return {k: np.asarray(v, "float64") for k, v in history.history.items()}


def weights(model):
    return [
        np.asarray(keras.ops.convert_to_numpy(w))
        for w in model.trainable_weights
    ]


def save(path, **results):
    """Writes named weight lists and histories into one `.npz` file."""
    arrays = {}
    for name, value in results.items():
        if isinstance(value, dict):
            for key, v in value.items():
                arrays[f"{name}:{key}"] = v
        else:
            for i, v in enumerate(value):
                arrays[f"{name}#{i:03d}"] = v
    np.savez(path, **arrays)


def load(path):
    """Inverse of `save`: dicts stay dicts, lists come back as lists."""
    results = {}
    with np.load(path) as archive:
        for key in sorted(archive.files):
            if ":" in key:
                name, sub = key.split(":", 1)
                results.setdefault(name, {})[sub] = archive[key]
            else:
                name = key.split("#", 1)[0]
                results.setdefault(name, []).append(archive[key])
    return results
