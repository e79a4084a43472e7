import keras
import numpy as np
import pytest
from component_test import run_metric_test
from keras import ops

import keras_mrl
from tests.conftest import jit_compile

DIMS = [4, 8, 16]


def _accuracy():
    return keras.metrics.SparseCategoricalAccuracy(name="acc")


def _sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _classifier(dims=DIMS, units=3):
    inputs = keras.Input((16,))
    head = keras_mrl.layers.MatryoshkaDense(
        units, nesting_dims=dims, name="head"
    )
    return keras.Model(inputs, head(inputs))


def test_component_stacked_mode(rng):
    x = rng.normal(size=(8, 16)).astype("float32")
    y = rng.integers(0, 3, size=8)
    metric = keras_mrl.metrics.MatryoshkaMetric(
        _accuracy(), head_nesting_dims=DIMS
    )

    def model():
        return _classifier(), keras_mrl.losses.MatryoshkaLoss(_sparse_ce())

    history = run_metric_test(metric, model, x, y)
    assert {f"acc@{m}" for m in DIMS} <= set(history.history)


def test_component_prefix_mode(rng):
    x = rng.normal(size=(8, 12)).astype("float32")
    teacher = rng.normal(size=(8, 16)).astype("float32")
    metric = keras_mrl.metrics.MatryoshkaMetric(
        keras.metrics.MeanAbsoluteError(name="mae"), nesting_dims=DIMS
    )

    def model():
        encoder = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16)])
        return encoder, keras_mrl.losses.MatryoshkaLoss(
            "mse", nesting_dims=DIMS
        )

    history = run_metric_test(metric, model, x, teacher)
    assert {f"mae@{m}" for m in DIMS} <= set(history.history)


def test_stacked_mode_matches_numpy_per_granularity(rng):
    y_pred = rng.normal(size=(20, 3, 5)).astype("float32")
    y_true = rng.integers(0, 5, size=20)
    metric = keras_mrl.metrics.MatryoshkaMetric(
        _accuracy(), head_nesting_dims=DIMS
    )
    metric.update_state(y_true[:10], y_pred[:10])
    metric.update_state(y_true[10:], y_pred[10:])
    result = {k: float(v) for k, v in metric.result().items()}
    expected = {
        f"acc@{m}": float((y_pred[:, g].argmax(-1) == y_true).mean())
        for g, m in enumerate(DIMS)
    }
    assert result == pytest.approx(expected)
    assert list(result) == ["acc@4", "acc@8", "acc@16"]
    metric.reset_state()
    assert all(float(v) == 0.0 for v in metric.result().values())


def test_head_nesting_dims_are_the_head_s_widths_after_build():
    head = keras_mrl.layers.MatryoshkaDense(3)
    # Before build a default head has no widths yet.
    with pytest.raises(ValueError, match="build the model first"):
        keras_mrl.metrics.MatryoshkaMetric(
            _accuracy(), head_nesting_dims=head.nesting_dims
        )
    head.build((None, 32))
    metric = keras_mrl.metrics.MatryoshkaMetric(
        _accuracy(), head_nesting_dims=head.nesting_dims
    )
    assert metric.widths == metric.head_nesting_dims == [8, 16, 32]
    assert metric.get_config()["head_nesting_dims"] == [8, 16, 32]
    assert "head" not in metric.get_config()


@pytest.mark.parametrize("holder", ["layer", "model"])
def test_a_layer_for_head_nesting_dims_raises_with_the_fix(holder):
    head = keras_mrl.layers.MatryoshkaDense(3, nesting_dims=[4, 16])
    value = head if holder == "layer" else _classifier()
    with pytest.raises(
        TypeError,
        match=r"widths of the head.*not the layer.*"
        r"head_nesting_dims=head\.nesting_dims",
    ):
        keras_mrl.metrics.MatryoshkaMetric(_accuracy(), head_nesting_dims=value)


def test_head_with_other_widths_than_the_prediction_raises():
    metric = keras_mrl.metrics.MatryoshkaMetric(
        _accuracy(), head_nesting_dims=[1, 2, 3]
    )
    with pytest.raises(ValueError, match=r"3 granularities.*\(2, 2, 5\)"):
        metric.update_state(np.zeros(2), np.zeros((2, 2, 5), "float32"))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"head_nesting_dims": DIMS, "nesting_dims": DIMS}],
    ids=["none", "both"],
)
def test_head_nesting_dims_or_nesting_dims_exactly_one(kwargs):
    with pytest.raises(
        ValueError,
        match=r"pass `head_nesting_dims=`.*pass "
        r"`nesting_dims=`.*exactly one",
    ):
        keras_mrl.metrics.MatryoshkaMetric(_accuracy(), **kwargs)


def test_prefix_mode_cuts_prediction_and_optionally_target(rng):
    y_pred = rng.normal(size=(6, 16)).astype("float32")
    y_true = rng.normal(size=(6, 16)).astype("float32")
    metric = keras_mrl.metrics.MatryoshkaMetric(
        keras.metrics.MeanSquaredError(name="mse"),
        nesting_dims=DIMS,
        truncate_targets=True,
    )
    metric.update_state(y_true, y_pred)
    for m in DIMS:
        expected = ((y_true[:, :m] - y_pred[:, :m]) ** 2).mean()
        np.testing.assert_allclose(
            float(metric.result()[f"mse@{m}"]), expected, rtol=1e-5
        )


@keras.saving.register_keras_serializable(package="keras_mrl_tests")
def _mean_target(y_true, y_pred):
    # Reads the target's full width: a cut target gives another value.
    return ops.mean(y_true, axis=-1) + 0.0 * ops.mean(y_pred, axis=-1)


def test_prefix_mode_passes_the_whole_target_when_told(rng):
    y_pred = rng.normal(size=(6, 16)).astype("float32")
    y_true = rng.normal(size=(6, 16)).astype("float32")
    kept = keras_mrl.metrics.MatryoshkaMetric(
        _mean_target, nesting_dims=DIMS, truncate_targets=False
    )
    kept.update_state(y_true, y_pred)
    for value in kept.result().values():
        np.testing.assert_allclose(float(value), y_true.mean(), rtol=1e-5)


@pytest.mark.parametrize(
    "target_width, truncate_targets, cut",
    [(16, None, True), (4, None, False), (16, False, False), (32, True, True)],
)
def test_a_custom_metric_gets_its_target_cut_by_the_shape_rule(
    rng, target_width, truncate_targets, cut
):
    y_pred = rng.normal(size=(6, 16)).astype("float32")
    y_true = rng.normal(size=(6, target_width)).astype("float32")
    metric = keras_mrl.metrics.MatryoshkaMetric(
        _mean_target, nesting_dims=DIMS, truncate_targets=truncate_targets
    )
    metric.update_state(y_true, y_pred)
    for m, value in zip(DIMS, metric.result().values()):
        expected = y_true[:, :m].mean() if cut else y_true.mean()
        np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_a_target_wider_than_the_embedding_asks_for_truncate_targets(rng):
    metric = keras_mrl.metrics.MatryoshkaMetric(_mean_target, nesting_dims=DIMS)
    with pytest.raises(
        ValueError,
        match=r"MatryoshkaMetric.*wider than the embedding: y_true of shape "
        r"\(6, 32\), y_pred of shape \(6, 16\).*truncate_targets=True",
    ):
        metric.update_state(
            np.zeros((6, 32), "float32"), np.zeros((6, 16), "float32")
        )


def test_truncate_targets_true_on_labels_raises(rng):
    # Cut like an embedding, 6 labels would become 4 at width 4.
    metric = keras_mrl.metrics.MatryoshkaMetric(
        _accuracy(), nesting_dims=DIMS, truncate_targets=True
    )
    with pytest.raises(
        ValueError, match=r"truncate_targets=True.*y_true has shape \(6,\)"
    ):
        metric.update_state(np.zeros(6), np.zeros((6, 16), "float32"))


@pytest.mark.parametrize("value", [True, False])
def test_truncate_targets_in_stacked_mode_raises(value):
    with pytest.raises(ValueError, match="stacked mode passes y_true whole"):
        keras_mrl.metrics.MatryoshkaMetric(
            _accuracy(), head_nesting_dims=DIMS, truncate_targets=value
        )


def test_an_unregistered_function_metric_works():
    def mean_prediction(y_true, y_pred):
        return ops.mean(y_pred, axis=-1)

    metric = keras_mrl.metrics.MatryoshkaMetric(
        mean_prediction, nesting_dims=[2, 4]
    )
    y_pred = np.array([[1.0, 3.0, 5.0, 7.0]], "float32")
    metric.update_state(np.zeros((1, 4)), y_pred)
    result = {k: float(v) for k, v in metric.result().items()}
    assert result == {"mean_prediction@2": 2.0, "mean_prediction@4": 4.0}
    lam = keras_mrl.metrics.MatryoshkaMetric(
        lambda t, p: ops.mean(p, axis=-1), nesting_dims=[2], name="m"
    )
    lam.update_state(np.zeros((1, 4)), y_pred)
    assert float(lam.result()["m@2"]) == 2.0


def test_labels_are_never_cut(rng):
    # 6 labels: cut like an embedding to width 4 they would be 4 labels.
    y_pred = rng.normal(size=(6, 16)).astype("float32")
    labels = rng.integers(0, 4, size=6)
    for metric in (_accuracy(), "sparse_categorical_accuracy"):
        acc = keras_mrl.metrics.MatryoshkaMetric(metric, nesting_dims=DIMS)
        acc.update_state(labels, y_pred)
        for m, value in zip(DIMS, acc.result().values()):
            expected = (y_pred[:, :m].argmax(-1) == labels).mean()
            np.testing.assert_allclose(float(value), expected)


def test_prefix_mode_cuts_a_teacher_as_wide_as_the_embedding(rng):
    y_pred = rng.normal(size=(5, 8)).astype("float32")
    teacher = rng.normal(size=(5, 8)).astype("float32")
    for metric in (keras.metrics.MeanSquaredError(name="mse"), "mse"):
        wrapped = keras_mrl.metrics.MatryoshkaMetric(
            metric, nesting_dims=[4, 8]
        )
        wrapped.update_state(teacher, y_pred)
        result = list(wrapped.result().values())
        for m, value in zip([4, 8], result):
            np.testing.assert_allclose(
                float(value),
                ((teacher[:, :m] - y_pred[:, :m]) ** 2).mean(),
                rtol=1e-5,
            )


def test_sample_weight_is_forwarded(rng):
    y_pred = rng.normal(size=(4, 3, 5)).astype("float32")
    y_true = y_pred[:, 0].argmax(-1)
    y_true[:2] = (y_true[:2] + 1) % 5  # two wrong at granularity 0
    metric = keras_mrl.metrics.MatryoshkaMetric(
        _accuracy(), head_nesting_dims=DIMS
    )
    metric.update_state(y_true, y_pred, sample_weight=np.array([0, 0, 1, 1]))
    assert float(metric.result()["acc@4"]) == pytest.approx(1.0)


def test_names_default_to_the_wrapped_metric():
    metric = keras_mrl.metrics.MatryoshkaMetric(
        "sparse_categorical_accuracy", head_nesting_dims=[2, 4]
    )
    assert metric.name == "sparse_categorical_accuracy"
    named = keras_mrl.metrics.MatryoshkaMetric(
        _accuracy(), head_nesting_dims=[2, 4], name="top1"
    )
    assert set(named.result()) == {"top1@2", "top1@4"}


def test_errors():
    with pytest.raises(ValueError, match="increasing"):
        keras_mrl.metrics.MatryoshkaMetric(_accuracy(), nesting_dims=[8, 4])
    with pytest.raises(ValueError, match="increasing"):
        keras_mrl.metrics.MatryoshkaMetric(
            _accuracy(), head_nesting_dims=[8, 4]
        )
    with pytest.raises(TypeError, match="metric"):
        keras_mrl.metrics.MatryoshkaMetric(3, head_nesting_dims=[4])
    with pytest.raises(TypeError, match="`head_nesting_dims` must be"):
        keras_mrl.metrics.MatryoshkaMetric(
            _accuracy(), head_nesting_dims="head"
        )
    prefix = keras_mrl.metrics.MatryoshkaMetric(_accuracy(), nesting_dims=DIMS)
    with pytest.raises(ValueError, match="8 wide"):
        prefix.update_state(np.zeros(2), np.zeros((2, 8), "float32"))


def test_stacked_mode_on_an_embedding_asks_for_nesting_dims():
    metric = keras_mrl.metrics.MatryoshkaMetric(
        _accuracy(), head_nesting_dims=DIMS
    )
    with pytest.raises(ValueError, match=r"\(2, 16\).*pass `nesting_dims`"):
        metric.update_state(np.zeros(2), np.zeros((2, 16), "float32"))


def test_positional_widths_raise():
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        keras_mrl.metrics.MatryoshkaMetric(_accuracy(), [4, 8])


def test_metric_class_instead_of_instance_raises():
    with pytest.raises(
        TypeError,
        match=r"class SparseCategoricalAccuracy.*"
        r"SparseCategoricalAccuracy\(\.\.\.\)",
    ):
        keras_mrl.metrics.MatryoshkaMetric(
            keras.metrics.SparseCategoricalAccuracy, head_nesting_dims=DIMS
        )


@pytest.mark.parametrize("value", ["no", 1])
def test_truncate_targets_takes_bools_only(value):
    with pytest.raises(TypeError, match=rf"truncate_targets.*{value!r}"):
        keras_mrl.metrics.MatryoshkaMetric(
            _accuracy(), nesting_dims=[4], truncate_targets=value
        )


def test_config_round_trip():
    for metric in (
        keras_mrl.metrics.MatryoshkaMetric(_accuracy(), nesting_dims=DIMS),
        keras_mrl.metrics.MatryoshkaMetric(_accuracy(), head_nesting_dims=DIMS),
    ):
        clone = keras_mrl.metrics.MatryoshkaMetric.from_config(
            metric.get_config()
        )
        assert clone.get_config() == metric.get_config()
        assert list(clone.result()) == ["acc@4", "acc@8", "acc@16"]


def test_per_width_keys_in_fit_and_evaluate_logs(rng):
    x = rng.normal(size=(48, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = _classifier(units=2)
    model.compile(
        optimizer="adam",
        loss=keras_mrl.losses.MatryoshkaLoss(_sparse_ce()),
        metrics=[
            keras_mrl.metrics.MatryoshkaMetric(
                _accuracy(), head_nesting_dims=DIMS
            )
        ],
        jit_compile=jit_compile(),
    )
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    keys = {f"acc@{m}" for m in DIMS} | {f"val_acc@{m}" for m in DIMS}
    assert keys <= set(history.history)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    preds = ops.convert_to_numpy(model.predict(x, verbose=0))
    for g, m in enumerate(DIMS):
        expected = (preds[:, g].argmax(-1) == y).mean()
        assert logs[f"acc@{m}"] == pytest.approx(expected)


def test_evaluate_logs_sort_keys_as_strings_and_map_them_right(rng):
    # Keras sorts log keys as strings (its pythonify_logs); the docstring
    # says so and asks for reading by key, which this checks is right.
    x = rng.normal(size=(8, 16)).astype("float32")
    y = rng.integers(0, 3, size=8)
    model = _classifier()
    model.compile(
        loss=keras_mrl.losses.MatryoshkaLoss(_sparse_ce()),
        metrics=[
            keras_mrl.metrics.MatryoshkaMetric(
                _accuracy(), head_nesting_dims=DIMS
            )
        ],
        jit_compile=False,
    )
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert [k for k in logs if "@" in k] == ["acc@16", "acc@4", "acc@8"]
    preds = ops.convert_to_numpy(model.predict(x, verbose=0))
    for g, m in enumerate([4, 8, 16]):
        expected = (preds[:, g].argmax(-1) == y).mean()
        assert logs[f"acc@{m}"] == pytest.approx(expected)


def test_masked_timesteps_do_not_count(rng):
    tokens = rng.integers(1, 20, size=(6, 5))
    for row, length in enumerate([5, 3, 1, 4, 2, 5]):
        tokens[row, length:] = 0
    keep = tokens != 0
    inputs = keras.Input((5,), dtype="int32")
    features = keras.layers.Embedding(20, 16, mask_zero=True)(inputs)
    head = keras_mrl.layers.MatryoshkaDense(3, nesting_dims=[4, 16])
    model = keras.Model(inputs, head(features))
    model.compile(
        loss=keras_mrl.losses.MatryoshkaLoss(_sparse_ce()),
        metrics=[
            keras_mrl.metrics.MatryoshkaMetric(
                _accuracy(), head_nesting_dims=head.nesting_dims
            )
        ],
        jit_compile=jit_compile(),
    )
    preds = model.predict(tokens, verbose=0)  # (6, 5, 2, 3)
    labels = rng.integers(0, 3, size=(6, 5))
    # Padding right at width 4: counting it would raise acc@4.
    labels[~keep] = preds[:, :, 0].argmax(-1)[~keep]
    logs = model.evaluate(tokens, labels, verbose=0, return_dict=True)
    for g, m in enumerate([4, 16]):
        correct = preds[:, :, g].argmax(-1) == labels
        assert logs[f"acc@{m}"] == pytest.approx(correct[keep].mean())
        if g == 0:
            assert correct.mean() > correct[keep].mean() + 0.1


@pytest.mark.parametrize("name", ["accuracy", "acc"])
def test_ambiguous_metric_names_ask_for_an_explicit_one(name):
    with pytest.raises(ValueError, match="sparse_categorical_accuracy"):
        keras_mrl.metrics.MatryoshkaMetric(name, head_nesting_dims=[4])
