"""The stacked softmax cross-entropy of MatryoshkaLoss against Keras' own."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mrl
from keras_mrl.losses._cross_entropy import is_sparse_logits_cross_entropy
from keras_mrl.losses._cross_entropy import sparse_logits_cross_entropy

BACKEND = keras.backend.backend()


def _gradient(fn, z):
    """d sum(fn(z)) / dz, with each backend's own tape."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        z = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            total = tf.reduce_sum(fn(z))
        return tape.gradient(total, z).numpy()
    if BACKEND == "torch":
        import torch

        z = torch.tensor(z, requires_grad=True)
        fn(z).sum().backward()
        return z.grad.cpu().numpy()
    import jax

    return np.asarray(jax.grad(lambda z: fn(z).sum())(z))


def _np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("label_dtype", ["int32", "float32"])
def test_values_and_gradient_equal_keras_sparse_cross_entropy(rng, label_dtype):
    # Large logits: the log-sum-exp must be the shifted, stable one.
    logits = (30 * rng.normal(size=(6, 4, 7))).astype("float32")
    labels = rng.integers(0, 7, size=(6, 4)).astype(label_dtype)
    keras_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ours = ops.convert_to_numpy(sparse_logits_cross_entropy(labels, logits))
    theirs = ops.convert_to_numpy(keras_ce.call(labels, logits))
    assert ours.shape == (6, 4) and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    gradient = _gradient(
        lambda z: sparse_logits_cross_entropy(labels, z), logits
    )
    one_hot = np.eye(7)[labels.astype(int)]
    np.testing.assert_allclose(
        gradient, _np_softmax(logits) - one_hot, atol=1e-5
    )


def test_only_logit_sparse_cross_entropy_without_ignore_class_qualifies():
    sparse = keras.losses.SparseCategoricalCrossentropy
    assert is_sparse_logits_cross_entropy(sparse(from_logits=True))
    assert not is_sparse_logits_cross_entropy(sparse())
    assert not is_sparse_logits_cross_entropy(
        sparse(from_logits=True, ignore_class=0)
    )
    assert not is_sparse_logits_cross_entropy(
        keras.losses.sparse_categorical_crossentropy
    )
    assert not is_sparse_logits_cross_entropy(
        keras.losses.CategoricalCrossentropy(from_logits=True)
    )


def test_matryoshka_loss_with_ignore_class_keeps_keras_semantics(rng):
    # Keras' path, not ours, so the ignored class still scores 0.
    logits = rng.normal(size=(5, 3, 4)).astype("float32")
    labels = np.array([0, 1, 2, 0, 3])
    inner = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=0
    )
    values = ops.convert_to_numpy(
        keras_mrl.losses.MatryoshkaLoss(inner).call(labels, logits)
    )
    assert values[0] == 0.0 and values[3] == 0.0 and values[1] > 0
