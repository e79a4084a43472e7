import re

import keras
import numpy as np
import pytest
from component_test import run_loss_test
from keras import ops

import keras_mrl
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.losses import SupervisedContrastiveLoss
from tests.conftest import jit_compile


def _has_float64():
    if keras.backend.backend() != "jax":
        return True
    import jax

    return bool(jax.config.read("jax_enable_x64"))


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
    loss = keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), weights=weights)
    per_example = sum(
        w * _np_sparse_ce(y_true, y_pred[:, g]) for g, w in enumerate(weights)
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(y_true, y_pred)), per_example, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(loss(y_true, y_pred)), per_example.mean(), rtol=1e-5
    )


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")


# inner loss, targets, predictions, whether one call scores every granularity
STACKED_LOSSES = {
    "sparse_ce_logits": (_sparse_ce, "labels", "logits", True),
    "sparse_ce_column": (_sparse_ce, "labels_column", "logits", True),
    "sparse_ce_probs": (
        keras.losses.SparseCategoricalCrossentropy,
        "labels",
        "probabilities",
        True,
    ),
    "sparse_ce_fn": (
        lambda: keras.losses.sparse_categorical_crossentropy,
        "labels",
        "probabilities",
        True,
    ),
    "ce": (
        lambda: keras.losses.CategoricalCrossentropy(from_logits=True),
        "one_hot",
        "logits",
        True,
    ),
    "bce": (
        lambda: keras.losses.BinaryCrossentropy(from_logits=True),
        "multi_hot",
        "logits",
        True,
    ),
    "mse": (keras.losses.MeanSquaredError, "dense", "logits", True),
    "mse_column": (
        keras.losses.MeanSquaredError,
        "dense_column",
        "logits",
        True,
    ),
    "kld": (keras.losses.KLDivergence, "probabilities", "probabilities", True),
    "huber": (keras.losses.Huber, "dense", "logits", True),
    # Dice reduces every axis: one value per call, not per example.
    "dice": (keras.losses.Dice, "probabilities", "probabilities", False),
}


@pytest.mark.parametrize("name", sorted(STACKED_LOSSES))
def test_stacked_mode_fused_and_looped_equal_each_granularity_s_loss(
    rng, monkeypatch, name
):
    make_inner, targets, predictions, fused = STACKED_LOSSES[name]
    logits = rng.normal(size=(6, 3, 5)).astype("float32")
    y_pred = {"logits": logits, "probabilities": _softmax(logits)}[predictions]
    labels = rng.integers(0, 5, size=6)
    y_true = {
        "labels": labels,
        "labels_column": labels[:, None],
        "one_hot": np.eye(5, dtype="float32")[labels],
        "multi_hot": (rng.random((6, 5)) > 0.5).astype("float32"),
        "dense": rng.normal(size=(6, 5)).astype("float32"),
        "dense_column": rng.normal(size=(6, 1)).astype("float32"),
        "probabilities": _softmax(rng.normal(size=(6, 5))),
    }[targets]
    inner = make_inner()
    call = inner.call if isinstance(inner, keras.losses.Loss) else inner
    weights = [1.0, 0.5, 2.0]
    loop = sum(
        w * ops.convert_to_numpy(call(y_true, y_pred[:, g]))
        for g, w in enumerate(weights)
    )
    loss = keras_mrl.losses.MatryoshkaLoss(inner, weights=weights)
    values = ops.convert_to_numpy(loss.call(y_true, y_pred))
    assert list(loss._fusable.values()) == [fused]
    np.testing.assert_allclose(values, loop, rtol=1e-5, atol=1e-6)
    # The same loss forced through the loop over granularities.
    monkeypatch.setattr(
        keras_mrl.losses._matryoshka_loss,
        "fuses_granularities",
        lambda *args: False,
    )
    looped = keras_mrl.losses.MatryoshkaLoss(inner, weights=weights)
    np.testing.assert_allclose(
        ops.convert_to_numpy(looped.call(y_true, y_pred)),
        values,
        rtol=1e-5,
        atol=1e-6,
    )


def test_column_labels_score_as_labels_in_both_modes(rng):
    logits = rng.normal(size=(6, 3, 5)).astype("float32")
    labels = rng.integers(0, 5, size=6)
    stacked = keras_mrl.losses.MatryoshkaLoss(_sparse_ce())
    np.testing.assert_allclose(
        ops.convert_to_numpy(stacked.call(labels[:, None], logits)),
        sum(_np_sparse_ce(labels, logits[:, g]) for g in range(3)),
        rtol=1e-5,
    )
    embedding = logits[:, 0]
    prefix = keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), nesting_dims=[3, 5])
    np.testing.assert_allclose(
        ops.convert_to_numpy(prefix.call(labels[:, None] % 3, embedding)),
        _np_sparse_ce(labels % 3, embedding[:, :3])
        + _np_sparse_ce(labels % 3, embedding),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "nesting_dims", [None, [3, 5]], ids=["stacked", "prefix"]
)
def test_labels_of_another_batch_raise_instead_of_broadcasting(nesting_dims):
    # One label against six rows would broadcast in a one-hot product.
    shape = (6, 5) if nesting_dims else (6, 3, 5)
    loss = keras_mrl.losses.MatryoshkaLoss(
        _sparse_ce(), nesting_dims=nesting_dims
    )
    with pytest.raises(ValueError, match=r"target.shape=.*\b1\b.*6"):
        loss.call(np.array([1]), np.zeros(shape, "float32"))


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
        loss = keras_mrl.losses.MatryoshkaLoss(inner)
        np.testing.assert_allclose(
            float(loss(y_true, y_pred)), expected.mean(), rtol=1e-5
        )
    # A loss name resolves to Keras' function (probabilities, not logits).
    probs = np.full((6, 4, 3), 1.0 / 3.0, dtype="float32")
    by_name = keras_mrl.losses.MatryoshkaLoss("sparse_categorical_crossentropy")
    np.testing.assert_allclose(
        float(by_name(y_true, probs)), 4 * np.log(3.0), rtol=1e-5
    )


def test_sample_weight_is_applied_per_example(rng):
    y_pred = rng.normal(size=(5, 2, 3)).astype("float32")
    y_true = rng.integers(0, 3, size=5)
    sample_weight = np.array([1.0, 0.0, 2.0, 1.0, 0.5], "float32")
    loss = keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), weights=[1.0, 3.0])
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
    loss = keras_mrl.losses.MatryoshkaLoss(
        keras.losses.MeanSquaredError(), nesting_dims=dims, weights=weights
    )
    expected = sum(
        w * ((teacher[:, :m] - student[:, :m]) ** 2).mean(axis=-1)
        for m, w in zip(dims, weights)
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(teacher, student)), expected, rtol=1e-5
    )
    by_name = keras_mrl.losses.MatryoshkaLoss("mse", nesting_dims=dims)
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


def _squared_error(y_true, y_pred):
    # A loss function MatryoshkaLoss does not know as coordinate-wise.
    return ops.mean(ops.square(y_true - y_pred), axis=-1)


@pytest.mark.parametrize(
    "target_width, truncate_targets, expected",
    [
        (8, None, (2 + 200) + (8 + 800)),  # as wide as y_pred: cut
        (4, None, (2 + 400) + (8 + 400)),  # narrower: whole
        (8, False, (2 + 800) + (8 + 800)),
        (16, True, (2 + 200) + (8 + 800)),
        (8, True, (2 + 200) + (8 + 800)),
    ],
)
def test_a_custom_loss_gets_its_target_cut_by_the_shape_rule(
    rng, target_width, truncate_targets, expected
):
    y_pred = rng.normal(size=(6, 8)).astype("float32")
    y_true = rng.normal(size=(6, target_width)).astype("float32")
    loss = keras_mrl.losses.MatryoshkaLoss(
        _first_target_plus_width,
        nesting_dims=[2, 8],
        truncate_targets=truncate_targets,
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(y_true, y_pred)), expected
    )


def test_a_target_wider_than_the_embedding_asks_for_truncate_targets(rng):
    student = rng.normal(size=(6, 8)).astype("float32")
    teacher = rng.normal(size=(6, 16)).astype("float32")
    loss = keras_mrl.losses.MatryoshkaLoss(_squared_error, nesting_dims=[4, 8])
    with pytest.raises(
        ValueError,
        match=r"wider than the embedding: y_true of shape \(6, 16\), "
        r"y_pred of shape \(6, 8\).*truncate_targets=True.*"
        r"truncate_targets=False",
    ):
        loss(teacher, student)


@pytest.mark.parametrize("target_shape", [(6, 4), (6,)])
def test_truncate_targets_true_on_a_target_it_cannot_cut_raises(
    rng, target_shape
):
    # Cut to width 8, a 4-wide target stays 4 wide, and labels would lose
    # examples: both would score something else than what was asked.
    loss = keras_mrl.losses.MatryoshkaLoss(
        _squared_error, nesting_dims=[4, 8], truncate_targets=True
    )
    with pytest.raises(
        ValueError,
        match=r"truncate_targets=True.*y_true has shape "
        + re.escape(str(target_shape))
        + r" against y_pred of shape \(6, 8\).*at least 8 wide",
    ):
        loss(np.zeros(target_shape, "float32"), np.zeros((6, 8), "float32"))


class _TargetWidth(keras_mrl.losses.NestedLoss):
    """Returns the width of the y_true it gets, for every prefix."""

    def call_prefixes(self, y_true, y_pred, nesting_dims):
        width = ops.cast(ops.shape(y_true)[-1], "float32")
        return [ops.zeros_like(y_pred[:, 0]) + width for _ in nesting_dims]


def test_a_nested_loss_gets_the_whole_target(rng):
    # As wide as the embedding, the target of a plain loss would be cut.
    y = rng.normal(size=(4, 8)).astype("float32")
    loss = keras_mrl.losses.MatryoshkaLoss(_TargetWidth(), nesting_dims=[2, 8])
    np.testing.assert_allclose(ops.convert_to_numpy(loss.call(y, y)), 16.0)


@pytest.mark.parametrize("value", [True, False])
def test_truncate_targets_raises_where_it_would_do_nothing(value):
    with pytest.raises(ValueError, match=r"_TargetWidth\).*call_prefixes"):
        keras_mrl.losses.MatryoshkaLoss(
            _TargetWidth(), nesting_dims=[2, 8], truncate_targets=value
        )
    with pytest.raises(ValueError, match="without `nesting_dims`"):
        keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), truncate_targets=value)


def test_truncate_targets_true_cuts_a_wider_teacher(rng):
    dims, weights = [4, 8], [1.0, 3.0]
    student = rng.normal(size=(6, 8)).astype("float32")
    teacher = rng.normal(size=(6, 16)).astype("float32")
    loss = keras_mrl.losses.MatryoshkaLoss(
        _squared_error,
        nesting_dims=dims,
        weights=weights,
        truncate_targets=True,
    )
    expected = sum(
        w * ((teacher[:, :m] - student[:, :m]) ** 2).mean(axis=-1)
        for m, w in zip(dims, weights)
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(teacher, student)), expected, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(loss(teacher, student)), expected.mean(), rtol=1e-5
    )


def test_truncate_targets_false_passes_the_whole_target(rng):
    y_pred = rng.normal(size=(8, 8)).astype("float32")
    y_true = rng.normal(size=(8, 16)).astype("float32")
    loss = keras_mrl.losses.MatryoshkaLoss(
        _first_target_plus_width, nesting_dims=[2, 8], truncate_targets=False
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(y_true, y_pred)),
        (2 + 1600) + (8 + 1600),
    )


def test_prefix_mode_with_labels_is_not_cut(rng):
    dims = [3, 6]
    y_pred = rng.normal(size=(6, 6)).astype("float32")
    y_true = rng.integers(0, 3, size=6)
    loss = keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), nesting_dims=dims)
    expected = _np_sparse_ce(y_true, y_pred[:, :3]) + _np_sparse_ce(
        y_true, y_pred[:, :6]
    )
    np.testing.assert_allclose(
        float(loss(y_true, y_pred)), expected.mean(), rtol=1e-5
    )


@pytest.mark.parametrize("dtype", [None, "float16", "mixed_bfloat16"])
def test_half_precision_computes_in_float32(rng, dtype):
    y_pred = ops.cast(rng.normal(size=(4, 3, 1000)) * 30, "bfloat16")
    y_true = rng.integers(0, 1000, size=4)
    loss = keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), dtype=dtype)
    per_example = loss.call(y_true, y_pred)
    assert keras.backend.standardize_dtype(per_example.dtype) == "float32"
    logits = ops.convert_to_numpy(ops.cast(y_pred, "float32"))
    expected = sum(_np_sparse_ce(y_true, logits[:, g]) for g in range(3))
    # Half-precision arithmetic would be off by ~1e-3 of the value.
    np.testing.assert_allclose(
        ops.convert_to_numpy(per_example), expected, rtol=1e-5
    )
    # Keras casts the reduced value to the loss dtype.
    value = float(ops.cast(loss(y_true, y_pred), "float32"))
    np.testing.assert_allclose(value, expected.mean(), rtol=1e-2)


@pytest.mark.skipif(
    not _has_float64(), reason="JAX has float64 only with jax_enable_x64"
)
def test_float64_loss_computes_in_float64():
    loss = keras_mrl.losses.MatryoshkaLoss(
        "mse", nesting_dims=[2, 4], dtype="float64"
    )
    y_true = np.ones((3, 4))
    y_pred = y_true + 1e-9  # float32 rounds it to 1: the loss would be 0
    per_example = loss.call(
        ops.convert_to_tensor(y_true, "float64"),
        ops.convert_to_tensor(y_pred, "float64"),
    )
    assert keras.backend.standardize_dtype(per_example.dtype) == "float64"
    np.testing.assert_allclose(
        ops.convert_to_numpy(per_example), 2e-18, rtol=1e-6
    )
    assert float(loss(y_true, y_pred)) == pytest.approx(2e-18, rel=1e-6)


def test_component_stacked_mode(rng):
    x = rng.normal(size=(8, 16)).astype("float32")
    y = rng.integers(0, 3, size=8)

    def model():
        inputs = keras.Input((16,))
        head = keras_mrl.layers.MatryoshkaDense(3, nesting_dims=[4, 8, 16])
        return keras.Model(inputs, head(inputs))

    loss = keras_mrl.losses.MatryoshkaLoss(
        _sparse_ce(), weights=[1.0, 1.0, 2.0]
    )
    run_loss_test(loss, model, x, y)


def test_component_prefix_mode(rng):
    x = rng.normal(size=(8, 12)).astype("float32")
    teacher = rng.normal(size=(8, 16)).astype("float32")

    def model():
        return keras.Sequential([keras.Input((12,)), keras.layers.Dense(16)])

    loss = keras_mrl.losses.MatryoshkaLoss(
        keras.losses.MeanSquaredError(),
        nesting_dims=[4, 8, 16],
        weights=[2.0, 1.0, 0.5],
    )
    run_loss_test(loss, model, x, teacher)


def test_errors():
    with pytest.raises(ValueError, match="3 entries.*2 granularities"):
        keras_mrl.losses.MatryoshkaLoss(
            "mse", nesting_dims=[4, 8], weights=[1, 1, 1]
        )
    with pytest.raises(ValueError, match="increasing"):
        keras_mrl.losses.MatryoshkaLoss("mse", nesting_dims=[8, 4])
    with pytest.raises(TypeError, match="loss"):
        keras_mrl.losses.MatryoshkaLoss(3)
    stacked = keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), weights=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"2 granularities.*\(4, 3, 5\)"):
        stacked(np.zeros(4), np.zeros((4, 3, 5), "float32"))
    prefix = keras_mrl.losses.MatryoshkaLoss("mse", nesting_dims=[4, 16])
    with pytest.raises(ValueError, match=r"\(4, 8\).*8 wide"):
        prefix(np.zeros((4, 8)), np.zeros((4, 8), "float32"))


def test_positional_widths_raise():
    # Once read as weights: the loss came out 19.6 times too large.
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), [8, 16, 32])


def test_stacked_mode_on_an_embedding_asks_for_nesting_dims():
    # The batch axis would be read as the granularity axis.
    loss = keras_mrl.losses.MatryoshkaLoss("mse")
    with pytest.raises(ValueError, match=r"\(4, 8\).*pass `nesting_dims`"):
        loss(np.zeros((4, 8), "float32"), np.zeros((4, 8), "float32"))


@pytest.mark.parametrize(
    "inner",
    [MultipleNegativesRankingLoss(), SupervisedContrastiveLoss()],
    ids=["mnrl", "supcon"],
)
def test_nested_loss_without_nesting_dims_raises_at_construction(inner):
    with pytest.raises(
        ValueError,
        match=rf"{type(inner).__name__}\).*"
        r"pass `nesting_dims`",
    ):
        keras_mrl.losses.MatryoshkaLoss(inner)


def test_loss_class_instead_of_instance_raises():
    with pytest.raises(
        TypeError,
        match=r"class MeanSquaredError.*"
        r"MeanSquaredError\(\.\.\.\)",
    ):
        keras_mrl.losses.MatryoshkaLoss(keras.losses.MeanSquaredError)


@pytest.mark.parametrize("name", ["n_dims_per_step", "seed"])
def test_width_sampling_arguments_are_not_the_loss_s(name):
    # Width sampling is keras_mrl.layers.WidthSampling's: the loss holds no
    # random state.
    with pytest.raises(TypeError, match=rf"unexpected keyword.*'{name}'"):
        keras_mrl.losses.MatryoshkaLoss(_sparse_ce(), **{name: 2})


@pytest.mark.parametrize("value", ["no", 1])
def test_truncate_targets_takes_bools_only(value):
    with pytest.raises(TypeError, match=rf"`truncate_targets`.*{value!r}"):
        keras_mrl.losses.MatryoshkaLoss(
            "mse", nesting_dims=[4], truncate_targets=value
        )


@pytest.mark.parametrize(
    "weights, error, match",
    [
        ([-1, 1, 1], ValueError, r">= 0.*got -1.0 in \[-1.0, 1.0, 1.0\]"),
        ([float("nan"), 1, 1], ValueError, "finite.*got nan"),
        ([float("inf"), 1, 1], ValueError, "finite.*got inf"),
        (["2", 1, 1], TypeError, r"numbers.*got '2'"),
        ([True, 1, 1], TypeError, "numbers.*got True"),
        ([0, 0, 0], ValueError, "all 0.*positive weight"),
        (2.0, TypeError, r"list of numbers.*one per granularity; got 2.0"),
        ([1, 1], ValueError, r"2 entries.*3 granularities"),
        ([], ValueError, "at least one"),
    ],
)
def test_bad_weights_raise(weights, error, match):
    with pytest.raises(error, match=match):
        keras_mrl.losses.MatryoshkaLoss(
            "mse", nesting_dims=[2, 4, 8], weights=weights
        )


def test_config_round_trip():
    loss = keras_mrl.losses.MatryoshkaLoss(
        _sparse_ce(),
        weights=[1.0, 2.0],
        name="mrl",
    )
    clone = keras_mrl.losses.MatryoshkaLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    assert isinstance(clone.loss, keras.losses.SparseCategoricalCrossentropy)
    assert clone.loss.from_logits
    by_name = keras_mrl.losses.MatryoshkaLoss(
        "mse", nesting_dims=(2, 4), truncate_targets=False
    )
    config = by_name.get_config()
    assert config["nesting_dims"] == [2, 4]
    assert config["truncate_targets"] is False
    clone = keras_mrl.losses.MatryoshkaLoss.from_config(config)
    assert clone.loss is keras.losses.mean_squared_error
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, keras_mrl.losses.MatryoshkaLoss)


def test_get_config_returns_the_weights_as_passed():
    loss = keras_mrl.losses.MatryoshkaLoss("mse", nesting_dims=[2, 4])
    assert loss.get_config()["weights"] is None
    weighted = keras_mrl.losses.MatryoshkaLoss(
        "mse", nesting_dims=[2, 4], weights=[1, 2]
    )
    assert weighted.get_config()["weights"] == [1.0, 2.0]


def test_fit_without_labels_needs_a_loss_that_ignores_targets(rng):
    x = rng.normal(size=(8, 16)).astype("float32")
    inputs = keras.Input((16,))
    model = keras.Model(
        inputs,
        keras_mrl.layers.MatryoshkaDense(3, nesting_dims=[4, 16])(inputs),
    )
    model.compile(
        optimizer="sgd",
        loss=keras_mrl.losses.MatryoshkaLoss(_sparse_ce()),
        jit_compile=jit_compile(),
    )
    with pytest.raises(ValueError, match="y_true=None.*needs targets"):
        model.fit(x, epochs=1, verbose=0)


def test_stacked_mode_with_unknown_granularity_count_asks_for_weights():
    loss = keras_mrl.losses.MatryoshkaLoss(_sparse_ce())

    class Unknown:
        shape = (4, None, 5)

    with pytest.raises(ValueError, match=r"\(4, None, 5\).*weights"):
        loss.call(np.zeros(4), Unknown())


def test_a_custom_loss_that_mixes_the_granularity_axis_is_not_fused():
    def mixes_axis_1(y_true, y_pred):
        # A per-example shape, (batch, G), but values mixed across G.
        return -ops.sum(ops.log_softmax(y_pred, axis=1), axis=-1)

    rng = np.random.default_rng(0)
    y_pred = rng.normal(size=(4, 3, 5)).astype("float32")
    y_true = rng.integers(0, 5, size=(4,)).astype("int32")
    loss = keras_mrl.losses.MatryoshkaLoss(mixes_axis_1)
    expected = sum(
        ops.convert_to_numpy(mixes_axis_1(y_true, y_pred[:, g, :]))
        for g in range(3)
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(loss.call(y_true, y_pred)), expected, rtol=1e-5
    )
