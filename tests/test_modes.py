import re

import keras
import numpy as np
import pytest
from keras import ops

from keras_mrl import _modes


def _cuts(true_shape, pred_shape, truncate_targets=None, dims=(4, 8)):
    # Symbolic tensors: the rule reads static shapes only.
    return _modes.cuts_targets(
        keras.KerasTensor(true_shape),
        keras.KerasTensor(pred_shape),
        dims,
        truncate_targets,
        "L",
    )


@pytest.mark.parametrize(
    "true_shape, pred_shape, cut",
    [
        ((None, 8), (None, 8), True),  # a teacher as wide as the embedding
        ((3, 5, 8), (3, 5, 8), True),
        ((None,), (None, 8), False),  # class ids
        ((None, 1), (None, 8), False),  # a column of labels
        ((None, 4), (None, 8), False),  # narrower: passed whole
        ((None, 8), (None, 3, 8), False),  # another rank
    ],
)
def test_a_target_as_wide_as_the_embedding_is_cut(true_shape, pred_shape, cut):
    assert _cuts(true_shape, pred_shape) is cut
    assert _cuts(true_shape, pred_shape, False) is False


@pytest.mark.parametrize(
    "true_shape, pred_shape, problem",
    [
        ((None, 16), (None, 8), "a target wider than the embedding"),
        ((None, None), (None, 8), "unknown widths"),
        ((None, 8), (None, None), "unknown widths"),
    ],
)
def test_what_the_shapes_cannot_settle_raises(true_shape, pred_shape, problem):
    with pytest.raises(
        ValueError,
        match=rf"L cuts y_true.*{problem}: y_true of shape "
        + re.escape(str(true_shape))
        + r".*truncate_targets=True.*\[4, 8\].*"
        "truncate_targets=False",
    ):
        _cuts(true_shape, pred_shape)
    assert _cuts(true_shape, pred_shape, False) is False


@pytest.mark.parametrize(
    "true_shape", [(None, 16), (None, 8), (None, None)], ids=str
)
def test_truncate_targets_true_cuts_a_wide_or_unknown_target(true_shape):
    assert _cuts(true_shape, (None, 8), True) is True


@pytest.mark.parametrize(
    "true_shape", [(None, 4), (None,), (None, 2, 8)], ids=str
)
def test_truncate_targets_true_raises_for_a_target_it_cannot_cut(true_shape):
    with pytest.raises(
        ValueError,
        match=r"truncate_targets=True.*\[4, 8\].*y_true has shape "
        + re.escape(str(true_shape))
        + r".*y_pred of shape \(None, 8\).*at least 8 wide",
    ):
        _cuts(true_shape, (None, 8), True)


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


def test_repeated_targets_are_y_true_at_every_granularity(rng):
    logits = rng.normal(size=(6, 3, 5)).astype("float32")
    for y_true in (
        rng.integers(0, 5, size=6),  # class ids: rank - 2
        rng.integers(0, 5, size=(6, 1)),  # a trailing 1: rank - 1
        rng.normal(size=(6, 5)).astype("float32"),  # units axis: rank - 1
    ):
        repeated = ops.convert_to_numpy(
            _modes.repeat_over_granularities(y_true, logits, 3)
        )
        assert repeated.shape[:2] == (6, 3)
        for g in range(3):
            np.testing.assert_array_equal(repeated[:, g], y_true)


def _per_example(loss):
    return loss.call if isinstance(loss, keras.losses.Loss) else loss


@pytest.mark.parametrize(
    "loss, true_shape, fused",
    [
        (keras.losses.SparseCategoricalCrossentropy(), (6,), True),
        (keras.losses.SparseCategoricalCrossentropy(), (6, 1), True),
        (keras.losses.CategoricalCrossentropy(), (6, 5), True),
        (keras.losses.MeanSquaredError(), (6, 5), True),
        (keras.losses.Huber(), (6, 5), True),
        (keras.losses.Dice(), (6, 5), False),  # reduces every axis
        (keras.losses.MeanSquaredError(), (6, 7, 5), False),  # rank
        (keras.losses.MeanSquaredError(), (), False),
    ],
    ids=lambda x: getattr(x, "name", str(x)),
)
def test_fused_exactly_when_the_last_axis_alone_is_reduced(
    loss, true_shape, fused
):
    y_true = keras.KerasTensor(true_shape)
    y_pred = keras.KerasTensor((6, 3, 5))
    assert (
        _modes.fuses_granularities(_per_example(loss), y_true, y_pred) is fused
    )


def test_a_loss_reducing_another_axis_of_the_same_size_is_not_fused():
    # Axis 1 is the units axis of one granularity but G of the stack; with
    # 3 units and 3 granularities the shapes alone would look fused.
    def over_axis_1(y_true, y_pred):
        return ops.mean(ops.square(y_true - y_pred), axis=1)

    y_true = keras.KerasTensor((6, 3))
    y_pred = keras.KerasTensor((6, 3, 3))
    assert not _modes.fuses_granularities(over_axis_1, y_true, y_pred)


def test_a_loss_that_raises_at_the_stacked_shape_is_not_fused():
    def rank_2_only(y_true, y_pred):
        if len(y_pred.shape) != 2:
            raise ValueError("expects (batch, units)")
        return ops.mean(y_pred, axis=-1)

    y_true = keras.KerasTensor((6,))
    y_pred = keras.KerasTensor((6, 3, 5))
    assert not _modes.fuses_granularities(rank_2_only, y_true, y_pred)
