"""`model.fit(x)` without labels, trained by an in-batch ranking loss.

Keras passes y=None to the loss, which a plain Keras loss cannot convert to
a tensor ("None values not supported" on TensorFlow, similar errors on JAX
and torch). MultipleNegativesRankingLoss and MatryoshkaLoss accept it.
"""

import keras
import numpy as np
import pytest

from keras_mrl.losses._matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses._multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)

FEATURES = 24
DIMS = [4, 8, 16]


def _views(n=72, columns=2, seed=0):
    """(n, columns, FEATURES): two noisy views of a point, then negatives."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, FEATURES))
    views = [points + 0.6 * rng.normal(size=points.shape) for _ in range(2)]
    views += [rng.normal(size=points.shape) for _ in range(columns - 2)]
    return np.stack(views, axis=1).astype("float32")


def _encoder(columns=2):
    # Dense acts on the last axis, so one encoder embeds every column.
    return keras.Sequential(
        [
            keras.Input((columns, FEATURES)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(DIMS[-1]),
        ]
    )


def _fit(loss, x, columns=2, **kwargs):
    model = _encoder(columns)
    model.compile(keras.optimizers.Adam(0.01), loss)
    return model.fit(x, epochs=3, verbose=0, **kwargs).history


def _assert_decreases(losses):
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_matryoshka_ranking_loss_fits_without_labels():
    # 72 = 2 * 32 + 8: the last, partial batch runs too.
    x = _views()
    history = _fit(
        MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS),
        x,
        batch_size=32,
    )
    _assert_decreases(history["loss"])


def test_dataset_of_inputs_only():
    tf = pytest.importorskip("tensorflow")
    x = _views()
    history = _fit(
        MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS),
        tf.data.Dataset.from_tensor_slices(x).shuffle(72, seed=0).batch(32),
        validation_data=x,  # inputs only, as a NumPy array
        shuffle=False,  # the dataset shuffles itself
    )
    _assert_decreases(history["loss"])
    _assert_decreases(history["val_loss"])


def test_bare_symmetric_loss_with_hard_negatives_fits_without_labels():
    history = _fit(
        MultipleNegativesRankingLoss(symmetric=True),
        _views(columns=3),
        columns=3,
        batch_size=32,
    )
    _assert_decreases(history["loss"])


def test_plain_keras_loss_still_fails_without_labels():
    # Why the ranking losses handle y_true=None themselves. When this starts
    # passing through `fit`, Keras handles it and the overrides can go.
    model = _encoder()
    model.compile("sgd", keras.losses.MeanSquaredError())
    with pytest.raises(ValueError):
        model.fit(_views(n=8), epochs=1, verbose=0)
