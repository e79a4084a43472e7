"""The digits splits and model of the cascade and spectrum benchmarks.

Each split (random_state 0, 1, ...) is sklearn digits divided 60/20/20
(1078 train, 359 validation, 360 test), stratified. The model is a 64-d MLP
embedding under a `keras_mrl.layers.MatryoshkaDense` head over widths 1 ... 64,
trained with `MatryoshkaLoss` for 30 epochs; `matryoshka=False` swaps in a
plain `Dense` head and loss, the fixed-feature baseline.
"""

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_mrl

DIMS = [1, 2, 4, 8, 16, 32, 64]


def load_split(split):
    """Returns `((x_train, y_train), (x_val, y_val), (x_test, y_test))`."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, random_state=split, stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=split, stratify=y_rest
    )
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def train(x, y, seed, epochs=30, matryoshka=True):
    """Trains the model; returns it and the model computing its embedding."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    embedding = keras.layers.Dense(64)(hidden)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if matryoshka:
        head = keras_mrl.layers.MatryoshkaDense(10, nesting_dims=DIMS)
        loss = keras_mrl.losses.MatryoshkaLoss(loss)
    else:
        head = keras.layers.Dense(10)
    model = keras.Model(inputs, head(embedding))
    model.compile(
        keras.optimizers.Adam(2e-3),
        loss,
        jit_compile=keras.backend.backend() != "torch",
    )
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model, keras.Model(inputs, embedding)
