import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_mrl
from tests.conftest import jit_compile


def _np_sparse_ce(labels, logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]


def _sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_stacked_mode_is_weighted_sum_of_per_granularity_losses(rng):
    weights = [1.0, 0.5, 2.0]
    y_pred = rng.normal(size=(8, 3, 5)).astype("float32")
    y_true = rng.integers(0, 5, size=8)
    loss = keras_mrl.MatryoshkaLoss(_sparse_ce(), weights=weights)
    per_example = sum(
        w * _np_sparse_ce(y_true, y_pred[:, g]) for g, w in enumerate(weights)
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(y_true, y_pred)), per_example, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(loss(y_true, y_pred)), per_example.mean(), rtol=1e-5
    )


def test_default_weights_are_one_and_strings_and_functions_work(rng):
    y_pred = rng.normal(size=(6, 4, 3)).astype("float32")
    y_true = rng.integers(0, 3, size=6)
    expected = sum(_np_sparse_ce(y_true, y_pred[:, g]) for g in range(4))
    for inner in (
        _sparse_ce(),
        lambda t, p: keras.losses.sparse_categorical_crossentropy(
            t, p, from_logits=True
        ),
    ):
        loss = keras_mrl.MatryoshkaLoss(inner)
        np.testing.assert_allclose(
            float(loss(y_true, y_pred)), expected.mean(), rtol=1e-5
        )
    # A loss name resolves to Keras' function (probabilities, not logits).
    probs = np.full((6, 4, 3), 1.0 / 3.0, dtype="float32")
    by_name = keras_mrl.MatryoshkaLoss("sparse_categorical_crossentropy")
    np.testing.assert_allclose(
        float(by_name(y_true, probs)), 4 * np.log(3.0), rtol=1e-5
    )


def test_sample_weight_is_applied_per_example(rng):
    y_pred = rng.normal(size=(5, 2, 3)).astype("float32")
    y_true = rng.integers(0, 3, size=5)
    sample_weight = np.array([1.0, 0.0, 2.0, 1.0, 0.5], "float32")
    loss = keras_mrl.MatryoshkaLoss(_sparse_ce(), weights=[1.0, 3.0])
    per_example = _np_sparse_ce(y_true, y_pred[:, 0]) + 3 * _np_sparse_ce(
        y_true, y_pred[:, 1]
    )
    expected = (per_example * sample_weight).sum() / 5
    np.testing.assert_allclose(
        float(loss(y_true, y_pred, sample_weight=sample_weight)),
        expected,
        rtol=1e-5,
    )


def test_prefix_mode_distillation_cuts_teacher_embedding(rng):
    dims, weights = [2, 4, 8], [1.0, 2.0, 4.0]
    student = rng.normal(size=(6, 8)).astype("float32")
    teacher = rng.normal(size=(6, 8)).astype("float32")
    loss = keras_mrl.MatryoshkaLoss(
        keras.losses.MeanSquaredError(), nesting_dims=dims, weights=weights
    )
    expected = sum(
        w * ((teacher[:, :m] - student[:, :m]) ** 2).mean(axis=-1)
        for m, w in zip(dims, weights)
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(teacher, student)), expected, rtol=1e-5
    )
    by_name = keras_mrl.MatryoshkaLoss("mse", nesting_dims=dims)
    np.testing.assert_allclose(
        float(by_name(teacher, student)),
        sum(((teacher[:, :m] - student[:, :m]) ** 2).mean() for m in dims),
        rtol=1e-5,
    )


def _first_target_plus_width(y_true, y_pred):
    # Depends on the target's width and the prediction's width, so the test
    # sees whether the target was cut.
    width = ops.cast(ops.shape(y_pred)[-1], "float32")
    target_width = ops.cast(ops.shape(y_true)[-1], "float32")
    return ops.zeros_like(y_pred[:, 0]) + width + 100.0 * target_width


def test_prefix_mode_never_decides_from_sizes(rng):
    # batch == D == 8: the target is not cut unless the user says so.
    dims = [2, 8]
    y_pred = rng.normal(size=(8, 8)).astype("float32")
    y_true = rng.normal(size=(8, 8)).astype("float32")
    loss = keras_mrl.MatryoshkaLoss(_first_target_plus_width, nesting_dims=dims)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(y_true, y_pred)), (2 + 800) + (8 + 800)
    )
    cut = keras_mrl.MatryoshkaLoss(
        _first_target_plus_width, nesting_dims=dims, truncate_targets=True
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(cut.call(y_true, y_pred)), (2 + 200) + (8 + 800)
    )
    kept = keras_mrl.MatryoshkaLoss(
        keras.losses.MeanSquaredError(), nesting_dims=dims,
        truncate_targets=False,
    )
    assert kept.truncate_targets is False


def test_prefix_mode_with_labels_is_not_cut(rng):
    dims = [3, 6]
    y_pred = rng.normal(size=(6, 6)).astype("float32")
    y_true = rng.integers(0, 3, size=6)
    loss = keras_mrl.MatryoshkaLoss(_sparse_ce(), nesting_dims=dims)
    expected = _np_sparse_ce(y_true, y_pred[:, :3]) + _np_sparse_ce(
        y_true, y_pred[:, :6]
    )
    np.testing.assert_allclose(float(loss(y_true, y_pred)), expected.mean(),
                               rtol=1e-5)


def test_mixed_precision_inputs_reduce_in_float32(rng):
    y_pred = ops.cast(rng.normal(size=(4, 3, 1000)) * 30, "bfloat16")
    y_true = rng.integers(0, 1000, size=4)
    loss = keras_mrl.MatryoshkaLoss(_sparse_ce())
    per_example = loss.call(y_true, y_pred)
    assert keras.backend.standardize_dtype(per_example.dtype) == "float32"
    value = ops.convert_to_numpy(loss(y_true, y_pred))
    assert np.isfinite(value)
    expected = sum(
        _np_sparse_ce(
            y_true, ops.convert_to_numpy(ops.cast(y_pred, "float32"))[:, g]
        )
        for g in range(3)
    ).mean()
    np.testing.assert_allclose(value, expected, rtol=1e-4)


def test_errors():
    with pytest.raises(ValueError, match="3 entries.*2 granularities"):
        keras_mrl.MatryoshkaLoss("mse", nesting_dims=[4, 8], weights=[1, 1, 1])
    with pytest.raises(ValueError, match="increasing"):
        keras_mrl.MatryoshkaLoss("mse", nesting_dims=[8, 4])
    with pytest.raises(TypeError, match="loss"):
        keras_mrl.MatryoshkaLoss(3)
    with pytest.raises(TypeError, match="truncate_targets"):
        keras_mrl.MatryoshkaLoss("mse", nesting_dims=[4], truncate_targets=1)
    stacked = keras_mrl.MatryoshkaLoss(_sparse_ce(), weights=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"2 granularities.*\(4, 3, 5\)"):
        stacked(np.zeros(4), np.zeros((4, 3, 5), "float32"))
    prefix = keras_mrl.MatryoshkaLoss("mse", nesting_dims=[4, 16])
    with pytest.raises(ValueError, match=r"\(4, 8\).*8 wide"):
        prefix(np.zeros((4, 8)), np.zeros((4, 8), "float32"))


@pytest.mark.parametrize("k", [0, 4, -1])
def test_n_dims_per_step_bounds(k):
    with pytest.raises(ValueError, match="n_dims_per_step"):
        keras_mrl.MatryoshkaLoss("mse", nesting_dims=[2, 4, 8], n_dims_per_step=k)


def test_config_round_trip():
    loss = keras_mrl.MatryoshkaLoss(
        _sparse_ce(), weights=[1.0, 2.0], n_dims_per_step=1, seed=3,
        name="mrl",
    )
    clone = keras_mrl.MatryoshkaLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    assert isinstance(clone.loss, keras.losses.SparseCategoricalCrossentropy)
    assert clone.loss.from_logits
    by_name = keras_mrl.MatryoshkaLoss("mse", nesting_dims=[2, 4])
    clone = keras_mrl.MatryoshkaLoss.from_config(by_name.get_config())
    assert clone.loss is keras.losses.mean_squared_error
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, keras_mrl.MatryoshkaLoss)


class _Powers(keras.layers.Layer):
    """Outputs granularity g = 2**g * (1 + w): the loss value spells the mask."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(), initializer="zeros")

    def call(self, x):
        powers = ops.reshape(ops.power(2.0, ops.arange(4, dtype="float32")),
                             (4, 1))
        return ops.zeros_like(x[:, :1, None]) + powers * (1.0 + self.w)


def _mean_prediction(y_true, y_pred):
    return ops.mean(y_pred, axis=-1)


def _masks_seen_in_fit(seed, steps=12):
    inputs = keras.Input((1,))
    model = keras.Model(inputs, _Powers()(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(1e-6),
        loss=keras_mrl.MatryoshkaLoss(
            _mean_prediction, weights=[1.0] * 4, n_dims_per_step=2, seed=seed
        ),
        jit_compile=jit_compile(),
    )
    x = np.ones((steps * 4, 1), "float32")
    codes = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            codes.append(int(round(float(logs["loss"]))))

    # One batch per epoch: logs["loss"] is then that step's loss.
    model.fit(x[:4], np.zeros(4), epochs=steps, batch_size=4, verbose=0,
              callbacks=[Record()])
    return codes


def test_width_sampling_masks_are_random_reproducible_and_have_k_ones():
    first = _masks_seen_in_fit(seed=7)
    for code in first:
        assert bin(code).count("1") == 2, first
    assert len(set(first)) > 1, f"the mask never changed: {first}"
    assert _masks_seen_in_fit(seed=7) == first
    unseeded = _masks_seen_in_fit(seed=None)
    assert len(set(unseeded)) > 1, f"the mask never changed: {unseeded}"


def test_fit_with_prefix_mode_and_jit(rng):
    x = rng.normal(size=(64, 12)).astype("float32")
    teacher = np.tanh(x @ rng.normal(size=(12, 8))).astype("float32")
    inputs = keras.Input((12,))
    model = keras.Model(inputs, keras.layers.Dense(8)(inputs))
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras_mrl.MatryoshkaLoss("mse", nesting_dims=[2, 4, 8]),
        metrics=[keras_mrl.MatryoshkaMetric(keras.metrics.MeanAbsoluteError(name="mae"), [2, 4, 8], prefix=True,
                                            truncate_targets=True)],
        jit_compile=jit_compile(),
    )
    history = model.fit(x, teacher, epochs=10, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert {"mae@2", "mae@4", "mae@8"} <= set(history.history)


def _cross_entropy_plus_1000(y_true, y_pred):
    return 1000.0 + keras.losses.sparse_categorical_crossentropy(
        y_true, y_pred, from_logits=True
    )


def test_width_sampling_changes_for_a_linear_probe_with_sgd(rng):
    # SGD on fixed features conserves the sum of softmax logits in exact
    # arithmetic; on JAX the mask's key must still change. Loss / 1000
    # spells the mask in binary.
    x = rng.normal(size=(16, 8)).astype("float32")
    y = rng.integers(0, 3, size=16)
    inputs = keras.Input((8,))
    model = keras.Model(
        inputs, keras_mrl.MatryoshkaDense(3, nesting_dims=[1, 2, 4, 8])(inputs)
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras_mrl.MatryoshkaLoss(
            _cross_entropy_plus_1000, weights=[1.0, 2.0, 4.0, 8.0],
            n_dims_per_step=2, seed=3,
        ),
        jit_compile=jit_compile(),
    )
    codes = []
    for _ in range(10):
        loss = model.train_on_batch(x, y)
        codes.append(int(round(float(loss) / 1000.0)))
    assert all(bin(code).count("1") == 2 for code in codes), codes
    assert len(set(codes)) > 1, f"the mask never changed: {codes}"


def test_fit_without_labels_needs_a_loss_that_ignores_targets(rng):
    x = rng.normal(size=(8, 16)).astype("float32")
    inputs = keras.Input((16,))
    model = keras.Model(
        inputs, keras_mrl.MatryoshkaDense(3, nesting_dims=[4, 16])(inputs)
    )
    model.compile(
        optimizer="sgd",
        loss=keras_mrl.MatryoshkaLoss(_sparse_ce()),
        jit_compile=jit_compile(),
    )
    with pytest.raises(ValueError, match="y_true=None.*needs targets"):
        model.fit(x, epochs=1, verbose=0)


def test_stacked_mode_with_unknown_granularity_count_asks_for_weights():
    loss = keras_mrl.MatryoshkaLoss(_sparse_ce())

    class Unknown:
        shape = (4, None, 5)

    with pytest.raises(ValueError, match=r"\(4, None, 5\).*weights"):
        loss.call(np.zeros(4), Unknown())


def test_weights_must_be_numbers():
    with pytest.raises(TypeError, match="weights"):
        keras_mrl.MatryoshkaLoss("mse", nesting_dims=[2, 4], weights=["a", 1])
    with pytest.raises(TypeError, match="weights"):
        keras_mrl.MatryoshkaLoss("mse", nesting_dims=[2], weights=1.0)
