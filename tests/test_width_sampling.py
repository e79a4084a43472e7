"""WidthSampling: gradient of n random granularities a training step."""

import keras
import numpy as np
import pytest
from component_test import run_layer_test
from keras import ops

import keras_mrl
from keras_mrl.layers import WidthSampling
from tests.conftest import jit_compile

BACKEND = keras.backend.backend()
DIMS = [2, 4, 8, 16]


def _input_gradient(layer, x, training):
    """d sum(layer(x)) / dx: 1 where the gradient passes, 0 where stopped.

    The one backend-specific piece: each backend's own gradient tape. On
    JAX the seed state is threaded by hand, as the JAX trainer does.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(layer(x, training=training))
        return tape.gradient(total, x).numpy()
    if BACKEND == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        layer(x, training=training).sum().backward()
        return x.grad.cpu().numpy()
    import jax

    def total(x, state):
        y, state = layer.stateless_call([], state, x, training=training)
        return jax.numpy.sum(y), state

    state = [v.value for v in layer.non_trainable_variables]
    grad, state = jax.grad(total, has_aux=True)(x, state)
    for variable, value in zip(layer.non_trainable_variables, state):
        variable.assign(value)
    return np.asarray(grad)


def _stacked(shape=(3, 4, 5), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_component():
    run_layer_test(
        WidthSampling,
        {"n_dims_per_step": 2, "seed": 1},
        _stacked((4, 3, 5)),
        (4, 3, 5),
    )


@pytest.mark.parametrize("training", [None, False])
def test_identity_outside_training(training):
    layer = WidthSampling(1, seed=0)
    x = _stacked()
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(x, training=training)), x
    )
    np.testing.assert_array_equal(_input_gradient(layer, x, training), 1.0)


def test_training_passes_the_gradient_of_n_granularities():
    layer = WidthSampling(2, seed=3)
    x = _stacked()
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(x, training=True)), x
    )
    draws = []
    for _ in range(6):
        grad = _input_gradient(layer, x, True)
        # One 0/1 gate per granularity, the same for every row and unit.
        gates = grad[0, :, 0]
        np.testing.assert_array_equal(grad, gates[None, :, None] + 0 * grad)
        assert sorted(set(gates)) == [0.0, 1.0] and gates.sum() == 2, gates
        draws.append(tuple(np.flatnonzero(gates)))
    assert len(set(draws)) > 1, f"the draw never changed: {draws}"
    every = WidthSampling(4, seed=0)
    every(x)
    np.testing.assert_array_equal(_input_gradient(every, x, True), 1.0)


def _sampled_model(seed):
    inputs = keras.Input((16,))
    logits = keras_mrl.layers.MatryoshkaDense(
        3, nesting_dims=DIMS, name="head"
    )(inputs)
    model = keras.Model(inputs, WidthSampling(2, seed=seed)(logits))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras_mrl.losses.MatryoshkaLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        ),
        jit_compile=jit_compile(),
    )
    return model


class _ChangedKernels(keras.callbacks.Callback):
    """Records, per step, which granularities' untied kernels changed."""

    def __init__(self, draws):
        super().__init__()
        self.draws = draws

    def _kernels(self):
        head = self.model.get_layer("head")
        return [ops.convert_to_numpy(k) for k in head.kernels]

    def on_train_batch_begin(self, batch, logs=None):
        self.before = self._kernels()

    def on_train_batch_end(self, batch, logs=None):
        changed = [
            g
            for g, (a, b) in enumerate(zip(self.before, self._kernels()))
            if not np.array_equal(a, b)
        ]
        self.draws.append(tuple(changed))


def _data():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(8, 16)).astype("float32"),
        rng.integers(0, 3, size=8),
    )


def _draws_in_fit(model, epochs):
    x, y = _data()
    draws = []
    model.fit(
        x,
        y,
        batch_size=2,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[_ChangedKernels(draws)],
    )
    return draws


def test_fit_trains_n_drawn_widths_reproducibly_across_fit_calls():
    # SGD leaves a kernel exactly unchanged when its gradient is zero.
    keras.utils.set_random_seed(0)
    once = _draws_in_fit(_sampled_model(seed=5), epochs=2)
    assert len(once) == 8
    assert all(len(draw) == 2 for draw in once), once
    assert len(set(once)) > 1, f"the draw never changed: {once}"
    # The seed state is a model variable that every trainer carries from
    # one fit call to the next: two calls draw what one call of both did.
    keras.utils.set_random_seed(1)
    model = _sampled_model(seed=5)
    twice = _draws_in_fit(model, epochs=1) + _draws_in_fit(model, epochs=1)
    assert twice == once


def test_predict_and_evaluate_see_every_width_unsampled():
    x, y = _data()
    model = _sampled_model(seed=0)
    plain = keras.Model(model.inputs, model.get_layer("head").output)
    plain.compile(loss=model.loss, jit_compile=jit_compile())
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), plain.predict(x, verbose=0)
    )
    assert model.evaluate(x, y, verbose=0) == plain.evaluate(x, y, verbose=0)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((0,), {}, ValueError, "n_dims_per_step.*0"),
        (("2",), {}, TypeError, "n_dims_per_step.*'2'"),
        ((2.0,), {}, TypeError, "n_dims_per_step.*2.0"),
        ((2,), {"seed": "0"}, TypeError, "seed.*'0'"),
        ((2,), {"seed": True}, TypeError, "seed.*True"),
        ((2,), {"seed": 3.0}, TypeError, "seed.*3.0"),
        ((2, 0), {}, TypeError, "positional argument"),
    ],
)
def test_bad_arguments_raise(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        WidthSampling(*args, **kwargs)


@pytest.mark.parametrize("seed", [np.int64(3), np.int32(3), np.uint8(3)])
def test_numpy_int_seed_draws_as_the_python_int(seed):
    layer = WidthSampling(2, seed=seed)
    assert type(layer.seed) is int and layer.get_config()["seed"] == 3
    plain = WidthSampling(2, seed=3)
    x = _stacked()
    layer(x)
    plain(x)
    for _ in range(4):
        np.testing.assert_array_equal(
            _input_gradient(layer, x, True), _input_gradient(plain, x, True)
        )


def test_more_draws_than_granularities_raise():
    with pytest.raises(ValueError, match=r"`n_dims_per_step`=4.*3 gran"):
        WidthSampling(4)(_stacked((2, 3, 5)))


def test_rank_2_input_raises():
    with pytest.raises(ValueError, match=r"\(2, 5\).*after the head"):
        WidthSampling(1)(np.zeros((2, 5), "float32"))
