import keras
import numpy as np
import pytest
from component_test import run_loss_test

from keras_mrl.losses._matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses._supervised_contrastive_loss import (
    SupervisedContrastiveLoss,
)

LABELS = np.array([0, 1, 0, 2, 1, 0, 3, 1, 2, 2])  # label 3 has no positive
DIMS = [4, 8, 16]


def reference(labels, y_pred, temperature=0.1):
    """Per-anchor L_out of Khosla et al. (2020), a loop over the definition."""
    z = np.asarray(y_pred, "float64")
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    scores = z @ z.T / temperature
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        log_partition = np.log(np.sum(np.exp(scores[i, others])))
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            losses.append(0.0)
            continue
        losses.append(
            -np.mean([scores[i, p] - log_partition for p in positives])
        )
    return np.array(losses)


def _embeddings(batch=10, width=16, seed=0):
    return (
        np.random.default_rng(seed)
        .normal(size=(batch, width))
        .astype("float32")
    )


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_matches_numpy_reference(temperature):
    y_pred = _embeddings()
    loss = SupervisedContrastiveLoss(temperature=temperature)
    expected = reference(LABELS, y_pred, temperature)
    assert expected[6] == 0.0 and np.all(expected[LABELS != 3] > 0)
    np.testing.assert_allclose(
        _np(loss.call(LABELS, y_pred)), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        float(loss(LABELS, y_pred)), expected.mean(), rtol=1e-5
    )


def test_column_labels_and_int32():
    y_pred = _embeddings()
    loss = SupervisedContrastiveLoss()
    np.testing.assert_allclose(
        float(loss(LABELS.astype("int32")[:, None], y_pred)),
        reference(LABELS, y_pred).mean(),
        rtol=1e-5,
    )


def test_scale_of_embeddings_does_not_matter():
    y_pred = _embeddings()
    loss = SupervisedContrastiveLoss()
    np.testing.assert_allclose(
        float(loss(LABELS, 100.0 * y_pred)),
        float(loss(LABELS, y_pred)),
        rtol=1e-5,
    )


def test_stable_at_low_temperature():
    # At t=0.005 the scores reach 200: a naive exp overflows float32.
    y_pred = _embeddings()
    loss = SupervisedContrastiveLoss(temperature=0.005)
    value = _np(loss.call(LABELS, y_pred))
    assert np.all(np.isfinite(value))
    np.testing.assert_allclose(
        value, reference(LABELS, y_pred, 0.005), rtol=1e-4
    )


def test_single_example_and_no_positives_give_zero():
    loss = SupervisedContrastiveLoss()
    assert float(loss(np.array([3]), _embeddings(batch=1))) == 0.0
    np.testing.assert_array_equal(
        _np(loss.call(np.arange(4), _embeddings(batch=4))), np.zeros(4)
    )


def test_call_prefixes_equals_sliced_path_and_reference():
    y_pred = _embeddings()
    loss = SupervisedContrastiveLoss()
    fused = loss.call_prefixes(LABELS, y_pred, DIMS)
    for m, value in zip(DIMS, fused):
        np.testing.assert_allclose(
            _np(value), _np(loss.call(LABELS, y_pred[:, :m])), atol=1e-5
        )
        np.testing.assert_allclose(
            _np(value),
            reference(LABELS, y_pred[:, :m]),
            rtol=1e-5,
            atol=1e-5,
        )
    wrapped = MatryoshkaLoss(loss, nesting_dims=DIMS, weights=[1, 2, 3])
    np.testing.assert_allclose(
        float(wrapped(LABELS, y_pred)),
        sum(
            w * reference(LABELS, y_pred[:, :m]).mean()
            for w, m in zip([1, 2, 3], DIMS)
        ),
        rtol=1e-5,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64", "bool"])
def test_non_integer_labels_raise_naming_dtype(dtype):
    loss = SupervisedContrastiveLoss()
    with pytest.raises(ValueError, match=f"integer.*{dtype}"):
        loss(LABELS.astype(dtype), _embeddings())


def test_missing_labels_raise():
    with pytest.raises(ValueError, match="got None"):
        SupervisedContrastiveLoss()(None, _embeddings())


@pytest.mark.parametrize(
    "labels_shape, pred_shape",
    [((10,), (10, 2, 16)), ((10, 2), (10, 16)), ((10, 1, 1), (10, 16))],
)
def test_bad_shapes_raise_naming_them(labels_shape, pred_shape):
    labels = np.zeros(labels_shape, "int32")
    y_pred = np.zeros(pred_shape, "float32")
    bad = pred_shape if len(pred_shape) != 2 else labels_shape
    with pytest.raises(
        ValueError, match=str(bad).replace("(", r"\(").replace(")", r"\)")
    ):
        SupervisedContrastiveLoss()(labels, y_pred)


def test_labels_of_another_length_raise():
    with pytest.raises(
        ValueError,
        match=r"one label per embedding, got 9 "
        r"labels.*10 embeddings",
    ):
        SupervisedContrastiveLoss()(LABELS[:9], _embeddings())


def test_string_labels_raise_asking_for_integer_ids():
    names = np.array(["cat", "dog"] * 5)
    with pytest.raises(ValueError, match=r"'cat'.*integer ids.*np\.unique"):
        SupervisedContrastiveLoss()(names, _embeddings())


def test_positional_arguments_after_temperature_raise():
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        SupervisedContrastiveLoss(0.1, "sum")


def test_component(rng):
    x = rng.normal(size=(8, 12)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3], "int32")

    def model():
        return keras.Sequential([keras.Input((12,)), keras.layers.Dense(8)])

    run_loss_test(SupervisedContrastiveLoss(temperature=0.2), model, x, labels)


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan")])
def test_bad_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        SupervisedContrastiveLoss(temperature=temperature)


def test_config_round_trip():
    loss = SupervisedContrastiveLoss(temperature=0.3, name="supcon")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, SupervisedContrastiveLoss)
    assert (restored.temperature, restored.name) == (0.3, "supcon")


def test_fit_separates_classes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 12))
    labels = rng.integers(0, 4, size=256)
    x = (centers[labels] + 1.5 * rng.normal(size=(256, 12))).astype("float32")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16)])
    model.compile(
        keras.optimizers.Adam(0.01),
        MatryoshkaLoss(SupervisedContrastiveLoss(), nesting_dims=[4, 16]),
        jit_compile=keras.backend.backend() != "torch",
    )
    history = model.fit(x, labels, batch_size=64, epochs=5, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0]
