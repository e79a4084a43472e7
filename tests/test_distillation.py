"""Matryoshka distillation: a student matches a teacher's prefixes.

`keras_mrl.losses.MatryoshkaLoss` in prefix mode cuts the teacher embedding
(y_true) with the student's (y_pred) when it is as wide; a wider teacher is
cut when `truncate_targets=True` says so.
"""

import keras
import numpy as np
import pytest

from keras_mrl.losses._matryoshka_loss import MatryoshkaLoss

DIMS = [4, 8, 16]
WEIGHTS = [2.0, 1.0, 0.5]


def mse_reference(teacher, student, dims, weights):
    return sum(
        w * np.mean((teacher[:, :m] - student[:, :m]) ** 2, axis=1)
        for w, m in zip(weights, dims)
    )


def cosine_reference(teacher, student, dims, weights):
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return sum(
        -w * np.sum(unit(teacher[:, :m]) * unit(student[:, :m]), axis=1)
        for w, m in zip(weights, dims)
    )


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(8, 16)).astype("float32")
    student = (teacher + rng.normal(size=(8, 16))).astype("float32")
    return teacher, student


@pytest.mark.parametrize(
    "inner, reference",
    [
        (keras.losses.MeanSquaredError(), mse_reference),
        (keras.losses.CosineSimilarity(), cosine_reference),
    ],
)
def test_matches_numpy_reference(inner, reference):
    teacher, student = _pair()
    loss = MatryoshkaLoss(inner, nesting_dims=DIMS, weights=WEIGHTS)
    expected = reference(teacher, student, DIMS, WEIGHTS)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss.call(teacher, student)),
        expected,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        float(loss(teacher, student)), expected.mean(), rtol=1e-5
    )


def test_target_is_cut_not_the_full_teacher():
    # Only the first 4 teacher coordinates may matter at width 4.
    teacher, student = _pair()
    loss = MatryoshkaLoss(keras.losses.MeanSquaredError(), nesting_dims=[4])
    changed = teacher.copy()
    changed[:, 4:] += 10.0
    np.testing.assert_allclose(
        float(loss(changed, student)), float(loss(teacher, student)), rtol=1e-6
    )


@pytest.mark.parametrize(
    "inner, reference",
    [
        (keras.losses.MeanSquaredError(), mse_reference),
        ("cosine_similarity", cosine_reference),
    ],
)
def test_wider_teacher_is_cut_to_the_student_prefixes(inner, reference):
    # A 32-wide teacher distilled into a 16-wide student.
    rng = np.random.default_rng(2)
    teacher = rng.normal(size=(8, 32)).astype("float32")
    student = rng.normal(size=(8, 16)).astype("float32")
    loss = MatryoshkaLoss(
        inner, nesting_dims=DIMS, weights=WEIGHTS, truncate_targets=True
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss.call(teacher, student)),
        reference(teacher, student, DIMS, WEIGHTS),
        rtol=1e-5,
        atol=1e-6,
    )


def test_wider_teacher_without_truncate_targets_raises():
    # Whether 32 columns are a teacher to cut is not in the shapes.
    loss = MatryoshkaLoss(keras.losses.MeanSquaredError(), nesting_dims=DIMS)
    with pytest.raises(
        ValueError, match=r"\(8, 32\).*\(8, 16\).*truncate_targets=True"
    ):
        loss(np.zeros((8, 32), "float32"), np.zeros((8, 16), "float32"))


@pytest.mark.parametrize(
    "inner",
    [keras.losses.MeanSquaredError(), keras.losses.CosineSimilarity()],
)
def test_student_learns_fixed_teacher(inner):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(512, 12)).astype("float32")
    # A fixed nonlinear teacher whose leading coordinates carry most
    # variance, as an MRL-trained embedding's do.
    projection = rng.normal(size=(12, 16)) * np.geomspace(1.0, 0.1, 16)
    teacher = np.tanh(x @ projection).astype("float32")

    student = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16),
        ]
    )
    student.compile(
        keras.optimizers.Adam(0.01),
        MatryoshkaLoss(inner, nesting_dims=DIMS),
        jit_compile=keras.backend.backend() != "torch",
    )
    before = student.evaluate(x, teacher, verbose=0)
    student.fit(x, teacher, batch_size=64, epochs=4, verbose=0)
    after = student.evaluate(x, teacher, verbose=0)
    # The cosine loss is negative: -len(DIMS) when every prefix aligns.
    assert after < before - 0.3 * abs(before)
