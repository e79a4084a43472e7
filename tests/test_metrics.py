import keras
import numpy as np
import pytest
from keras import ops

import keras_mrl
from tests.conftest import jit_compile

DIMS = [4, 8, 16]


def _accuracy():
    return keras.metrics.SparseCategoricalAccuracy(name="acc")


def test_stacked_mode_matches_numpy_per_granularity(rng):
    y_pred = rng.normal(size=(20, 3, 5)).astype("float32")
    y_true = rng.integers(0, 5, size=20)
    metric = keras_mrl.MatryoshkaMetric(_accuracy(), DIMS)
    metric.update_state(y_true[:10], y_pred[:10])
    metric.update_state(y_true[10:], y_pred[10:])
    result = {k: float(v) for k, v in metric.result().items()}
    expected = {
        f"acc@{m}": float((y_pred[:, g].argmax(-1) == y_true).mean())
        for g, m in enumerate(DIMS)
    }
    assert result == pytest.approx(expected)
    metric.reset_state()
    assert all(float(v) == 0.0 for v in metric.result().values())


def test_prefix_mode_cuts_prediction_and_optionally_target(rng):
    y_pred = rng.normal(size=(6, 16)).astype("float32")
    y_true = rng.normal(size=(6, 16)).astype("float32")
    metric = keras_mrl.MatryoshkaMetric(
        keras.metrics.MeanSquaredError(name="mse"), DIMS, prefix=True,
        truncate_targets=True,
    )
    metric.update_state(y_true, y_pred)
    for m in DIMS:
        expected = ((y_true[:, :m] - y_pred[:, :m]) ** 2).mean()
        np.testing.assert_allclose(
            float(metric.result()[f"mse@{m}"]), expected, rtol=1e-5
        )
    labels = rng.integers(0, 4, size=6)
    acc = keras_mrl.MatryoshkaMetric(_accuracy(), DIMS, prefix=True)
    acc.update_state(labels, y_pred)
    for m in DIMS:
        expected = (y_pred[:, :m].argmax(-1) == labels).mean()
        np.testing.assert_allclose(float(acc.result()[f"acc@{m}"]), expected)


def test_sample_weight_is_forwarded(rng):
    y_pred = rng.normal(size=(4, 3, 5)).astype("float32")
    y_true = y_pred[:, 0].argmax(-1)
    y_true[:2] = (y_true[:2] + 1) % 5  # two wrong at granularity 0
    metric = keras_mrl.MatryoshkaMetric(_accuracy(), DIMS)
    metric.update_state(y_true, y_pred, sample_weight=np.array([0, 0, 1, 1]))
    assert float(metric.result()["acc@4"]) == pytest.approx(1.0)


def test_names_default_to_the_wrapped_metric():
    metric = keras_mrl.MatryoshkaMetric("sparse_categorical_accuracy", [2, 4])
    assert metric.name == "sparse_categorical_accuracy"
    named = keras_mrl.MatryoshkaMetric(_accuracy(), [2, 4], name="top1")
    assert set(named.result()) == {"top1@2", "top1@4"}


def test_errors():
    with pytest.raises(ValueError, match="increasing"):
        keras_mrl.MatryoshkaMetric(_accuracy(), [8, 4])
    with pytest.raises(TypeError, match="metric"):
        keras_mrl.MatryoshkaMetric(3, [4])
    metric = keras_mrl.MatryoshkaMetric(_accuracy(), DIMS)
    with pytest.raises(ValueError, match=r"3 granularities.*\(2, 2, 5\)"):
        metric.update_state(np.zeros(2), np.zeros((2, 2, 5), "float32"))
    prefix = keras_mrl.MatryoshkaMetric(_accuracy(), DIMS, prefix=True)
    with pytest.raises(ValueError, match="8 wide"):
        prefix.update_state(np.zeros(2), np.zeros((2, 8), "float32"))


def test_config_round_trip():
    metric = keras_mrl.MatryoshkaMetric(_accuracy(), DIMS, prefix=True)
    clone = keras_mrl.MatryoshkaMetric.from_config(metric.get_config())
    assert clone.get_config() == metric.get_config()
    assert set(clone.result()) == {"acc@4", "acc@8", "acc@16"}


def test_per_width_keys_in_fit_and_evaluate_logs(rng):
    x = rng.normal(size=(48, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    inputs = keras.Input((16,))
    outputs = keras_mrl.MatryoshkaDense(2, nesting_dims=DIMS)(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam",
        loss=keras_mrl.MatryoshkaLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        ),
        metrics=[keras_mrl.MatryoshkaMetric(_accuracy(), DIMS)],
        jit_compile=jit_compile(),
    )
    history = model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0)
    keys = {f"acc@{m}" for m in DIMS} | {f"val_acc@{m}" for m in DIMS}
    assert keys <= set(history.history)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    preds = ops.convert_to_numpy(model.predict(x, verbose=0))
    for g, m in enumerate(DIMS):
        expected = (preds[:, g].argmax(-1) == y).mean()
        assert logs[f"acc@{m}"] == pytest.approx(expected)


def test_prefix_mode_cuts_targets_of_elementwise_metrics_by_default(rng):
    y_pred = rng.normal(size=(5, 8)).astype("float32")
    teacher = rng.normal(size=(5, 8)).astype("float32")
    for metric in (keras.metrics.MeanSquaredError(name="mse"), "mse"):
        wrapped = keras_mrl.MatryoshkaMetric(metric, [4, 8], prefix=True)
        wrapped.update_state(teacher, y_pred)
        result = list(wrapped.result().values())
        np.testing.assert_allclose(
            float(result[0]), ((teacher[:, :4] - y_pred[:, :4]) ** 2).mean(),
            rtol=1e-5,
        )
    labels = rng.integers(0, 4, size=5)
    kept = keras_mrl.MatryoshkaMetric(_accuracy(), [4, 8], prefix=True)
    kept.update_state(labels, y_pred)  # labels are never cut
    with pytest.raises(TypeError, match="truncate_targets"):
        keras_mrl.MatryoshkaMetric(_accuracy(), [4], truncate_targets="yes")


@pytest.mark.parametrize("name", ["accuracy", "acc"])
def test_ambiguous_metric_names_ask_for_an_explicit_one(name):
    with pytest.raises(ValueError, match="sparse_categorical_accuracy"):
        keras_mrl.MatryoshkaMetric(name, [4])
