import keras
import numpy as np
import pytest
from keras import ops

from keras_mrl import _modes
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.losses import NestedLoss
from keras_mrl.losses import SupervisedContrastiveLoss


class _TeacherLoss(NestedLoss):
    """A NestedLoss that declares its targets an embedding to cut."""

    cuts_targets = True

    def call_prefixes(self, y_true, y_pred, nesting_dims):
        return [ops.mean(y_pred, axis=-1)]


COORDINATE_WISE = [
    keras.losses.MeanSquaredError(),
    keras.losses.MeanAbsoluteError(),
    keras.losses.MeanSquaredLogarithmicError(),
    keras.losses.CosineSimilarity(),
    keras.losses.Huber(),
    keras.losses.LogCosh(),
    keras.losses.get("mse"),
    keras.losses.get("cosine_similarity"),
    keras.metrics.MeanSquaredError(),
    keras.metrics.RootMeanSquaredError(),
    keras.metrics.CosineSimilarity(),
    keras.metrics.LogCoshError(),
    _TeacherLoss(),
]
LABELS = [
    keras.losses.SparseCategoricalCrossentropy(),
    keras.losses.CategoricalCrossentropy(),
    keras.losses.get("sparse_categorical_crossentropy"),
    keras.metrics.SparseCategoricalAccuracy(),
    keras.metrics.get("sparse_top_k_categorical_accuracy"),
    MultipleNegativesRankingLoss(),
    SupervisedContrastiveLoss(),
    lambda y_true, y_pred: y_pred,
]


def _id(obj):
    return getattr(obj, "name", getattr(obj, "__name__", type(obj).__name__))


@pytest.mark.parametrize("inner", COORDINATE_WISE, ids=_id)
def test_coordinate_wise_losses_and_metrics_cut_targets(inner):
    assert _modes.cuts_targets(inner, None) is True
    assert _modes.cuts_targets(inner, False) is False


@pytest.mark.parametrize("inner", LABELS, ids=_id)
def test_label_losses_and_unknown_functions_do_not_cut(inner):
    assert _modes.cuts_targets(inner, None) is False
    assert _modes.cuts_targets(inner, True) is True


def test_nested_losses_declare_it_as_a_class_attribute():
    assert NestedLoss.cuts_targets is False
    assert MultipleNegativesRankingLoss.cuts_targets is False
    assert _TeacherLoss.cuts_targets is True


def test_check_stacked():
    assert _modes.check_stacked(np.zeros((2, 3, 5)), None, "L") == 3
    assert _modes.check_stacked(np.zeros((2, 7, 3, 5)), 3, "L") == 3
    with pytest.raises(ValueError, match=r"\(2, 5\).*pass `nesting_dims`"):
        _modes.check_stacked(np.zeros((2, 5)), None, "L")
    with pytest.raises(
        ValueError,
        match=r"expects 4 granularities.*\(2, 3, "
        r"5\) with 3",
    ):
        _modes.check_stacked(np.zeros((2, 3, 5)), 4, "L")


def test_check_prefix():
    _modes.check_prefix(np.zeros((2, 8)), (4, 8), "L")
    with pytest.raises(ValueError, match=r"\[4, 16\].*\(2, 8\), only 8 wide"):
        _modes.check_prefix(np.zeros((2, 8)), (4, 16), "L")


def test_granularity_views():
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    labels = np.array([0, 1])
    stacked = _modes.granularity_views(labels, x, None, 3, False)
    for g, (target, pred) in enumerate(stacked):
        assert target is labels
        np.testing.assert_array_equal(pred, x[:, g])
    teacher = x[:, 0] + 100
    cut = _modes.granularity_views(teacher, x[:, 0], (2, 4), None, True)
    for (target, pred), m in zip(cut, (2, 4)):
        np.testing.assert_array_equal(target, teacher[:, :m])
        np.testing.assert_array_equal(pred, x[:, 0, :m])
    kept = _modes.granularity_views(labels, x[:, 0], (2, 4), None, False)
    assert all(target is labels for target, _ in kept)


@pytest.mark.parametrize(
    "inner, targets",
    [
        ("sparse", "labels"),
        ("sparse", "labels_column"),
        ("sparse_fn", "labels"),
        ("categorical", "onehot"),
        ("mse", "onehot"),
    ],
)
def test_stacked_loss_in_one_call_equals_one_call_per_granularity(
    inner, targets, rng
):
    losses = {
        "sparse": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "sparse_fn": keras.losses.sparse_categorical_crossentropy,
        "categorical": keras.losses.CategoricalCrossentropy(from_logits=True),
        "mse": keras.losses.MeanSquaredError(),
    }
    logits = rng.normal(size=(6, 3, 5)).astype("float32")
    labels = rng.integers(0, 5, size=6)
    y = {
        "labels": labels,
        "labels_column": labels[:, None],
        "onehot": np.eye(5, dtype="float32")[labels],
    }[targets].astype("float32")
    loss = losses[inner]
    repeated = _modes.stacked_targets(loss, ops.convert_to_tensor(y), logits)
    assert repeated is not None
    fn = loss.call if isinstance(loss, keras.losses.Loss) else loss
    fused = ops.convert_to_numpy(fn(repeated, logits))
    assert fused.shape == (6, 3)
    for g in range(3):
        np.testing.assert_allclose(
            fused[:, g], ops.convert_to_numpy(fn(y, logits[:, g])), rtol=1e-6
        )


def test_unknown_losses_are_called_per_granularity(rng):
    logits = rng.normal(size=(6, 3, 5)).astype("float32")
    labels = ops.convert_to_tensor(rng.integers(0, 5, size=6))

    def custom(y_true, y_pred):
        return ops.mean(y_pred, axis=-1)

    assert _modes.stacked_targets(custom, labels, logits) is None
    # Labels that cannot be repeated over G (wrong rank) are left alone too.
    sparse = keras.losses.SparseCategoricalCrossentropy()
    assert _modes.stacked_targets(sparse, ops.ones((6, 3, 1)), logits) is None
