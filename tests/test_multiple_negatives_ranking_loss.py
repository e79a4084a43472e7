import keras
import numpy as np
import pytest
from component_test import run_loss_test

from keras_mrl.losses._matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses._multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)

DIMS = [4, 8, 16, 32]


def _logsumexp(x, axis):
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def reference(y_pred, scale=20.0, symmetric=False):
    """Per-example loss written from the definition, in float64."""
    y = np.asarray(y_pred, "float64")
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    batch = y.shape[0]
    anchors = y[:, 0]
    candidates = np.concatenate([y[:, k] for k in range(1, y.shape[1])])
    scores = scale * anchors @ candidates.T  # (B, B * (1 + n))
    target = scores[np.arange(batch), np.arange(batch)]
    forward = _logsumexp(scores, axis=1) - target
    if not symmetric:
        return forward
    backward = _logsumexp(scores[:, :batch], axis=0) - target
    return (forward + backward) / 2


def _embeddings(batch=6, columns=4, width=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, columns, width)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("columns", [2, 4])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("scale", [7.0, 50.0])
def test_matches_numpy_reference(columns, symmetric, scale):
    y_pred = _embeddings(columns=columns)
    loss = MultipleNegativesRankingLoss(scale=scale, symmetric=symmetric)
    expected = reference(y_pred, scale=scale, symmetric=symmetric)
    np.testing.assert_allclose(
        _np(loss.call(None, y_pred)), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        float(loss(None, y_pred)), expected.mean(), rtol=1e-5
    )


@pytest.mark.parametrize("scale", [40.0, 100.0])
def test_stable_when_every_pair_is_opposite(scale):
    # Every cosine is -1, every logit -scale: the sum of exponentials must
    # not vanish, and the loss is that of a uniform guess.
    v = _embeddings(batch=1, columns=1)[0, 0]
    y_pred = np.stack(
        [np.tile(v, (6, 1)), np.tile(-v, (6, 1)), np.tile(-2 * v, (6, 1))],
        axis=1,
    )
    loss = MultipleNegativesRankingLoss(scale=scale, symmetric=True)
    value = _np(loss.call(None, y_pred))
    np.testing.assert_allclose(value, (np.log(12) + np.log(6)) / 2, rtol=1e-5)


def test_symmetric_differs_from_forward_only():
    y_pred = _embeddings(columns=2)
    forward = float(MultipleNegativesRankingLoss()(None, y_pred))
    both = float(MultipleNegativesRankingLoss(symmetric=True)(None, y_pred))
    assert abs(forward - both) > 1e-3


def test_hard_negatives_raise_the_loss():
    y_pred = _embeddings(columns=3)
    # The hard negative is a near copy of the positive.
    y_pred[:, 2] = y_pred[:, 1] + 0.01
    loss = MultipleNegativesRankingLoss()
    assert float(loss(None, y_pred)) > float(loss(None, y_pred[:, :2])) + 0.5


@pytest.mark.parametrize("columns", [2, 3])
@pytest.mark.parametrize("symmetric", [False, True])
def test_call_prefixes_equals_sliced_path(columns, symmetric):
    y_pred = _embeddings(batch=8, columns=columns)
    loss = MultipleNegativesRankingLoss(symmetric=symmetric)
    fused = loss.call_prefixes(None, y_pred, DIMS)
    assert len(fused) == len(DIMS)
    for m, value in zip(DIMS, fused):
        np.testing.assert_allclose(
            _np(value), _np(loss.call(None, y_pred[..., :m])), atol=1e-5
        )
        np.testing.assert_allclose(
            _np(value),
            reference(y_pred[..., :m], symmetric=symmetric),
            rtol=1e-5,
            atol=1e-5,
        )


def test_inside_matryoshka_loss_with_weights():
    y_pred = _embeddings(columns=3)
    weights = [0.5, 1.0, 2.0, 1.5]
    wrapped = MatryoshkaLoss(
        MultipleNegativesRankingLoss(), nesting_dims=DIMS, weights=weights
    )
    expected = sum(
        w * reference(y_pred[..., :m]) for w, m in zip(weights, DIMS)
    )
    np.testing.assert_allclose(
        _np(wrapped.call(None, y_pred)), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        float(wrapped(None, y_pred)), expected.mean(), rtol=1e-5
    )


def test_y_true_is_ignored():
    y_pred = _embeddings()
    loss = MultipleNegativesRankingLoss()
    np.testing.assert_allclose(
        float(loss(None, y_pred)),
        float(loss(np.arange(6.0), y_pred)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_input_computes_in_float32(dtype):
    y_pred = _embeddings()
    low = keras.ops.cast(y_pred, dtype)
    loss = MultipleNegativesRankingLoss(symmetric=True)
    value = loss.call(None, low)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    expected = reference(_np(keras.ops.cast(low, "float32")), symmetric=True)
    np.testing.assert_allclose(_np(value), expected, rtol=1e-4, atol=1e-4)


def test_zero_vector_gives_finite_loss():
    y_pred = _embeddings()
    y_pred[0, 1] = 0.0
    y_pred[2, :, :8] = 0.0  # a zero prefix at width 8
    wrapped = MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)
    assert np.all(np.isfinite(_np(wrapped.call(None, y_pred))))


@pytest.mark.parametrize("shape", [(4, 32), (4, 1, 32), (4, 2, 3, 32)])
def test_bad_shape_raises_naming_it(shape):
    y_pred = np.zeros(shape, "float32")
    loss = MultipleNegativesRankingLoss()
    with pytest.raises(
        ValueError,
        match=r"\(batch, 2 \+ n, D\).*"
        + str(shape).replace("(", r"\(").replace(")", r"\)"),
    ):
        loss(None, y_pred)
    with pytest.raises(ValueError, match="2 \\+ n"):
        MatryoshkaLoss(loss, nesting_dims=[8, 32])(None, y_pred)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"scale": 0.0}, ValueError),
        ({"scale": -1.0}, ValueError),
        ({"scale": float("inf")}, ValueError),
        ({"scale": "20"}, TypeError),
        ({"symmetric": 1}, TypeError),
        ({"symmetric": "yes"}, TypeError),
    ],
)
def test_bad_arguments_raise(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        MultipleNegativesRankingLoss(**kwargs)


def test_positional_symmetric_raises():
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        MultipleNegativesRankingLoss(20.0, True)


def _pairs(rng):
    return rng.normal(size=(8, 3, 12)).astype("float32")


def _encoder():
    return keras.Sequential([keras.Input((3, 12)), keras.layers.Dense(16)])


def test_component_alone(rng):
    run_loss_test(
        MultipleNegativesRankingLoss(scale=10.0, symmetric=True),
        _encoder,
        _pairs(rng),
        None,
    )


def test_component_inside_matryoshka_loss(rng):
    loss = MatryoshkaLoss(
        MultipleNegativesRankingLoss(),
        nesting_dims=[4, 8, 16],
        weights=[1.0, 1.0, 2.0],
    )
    run_loss_test(loss, _encoder, _pairs(rng), None)


def test_config_round_trip():
    loss = MultipleNegativesRankingLoss(scale=5.0, symmetric=True, name="x")
    config = keras.losses.serialize(
        MatryoshkaLoss(loss, nesting_dims=DIMS, weights=[1, 2, 3, 4])
    )
    restored = keras.losses.deserialize(config)
    inner = restored.loss
    assert isinstance(inner, MultipleNegativesRankingLoss)
    assert (inner.scale, inner.symmetric, inner.name) == (5.0, True, "x")
    y_pred = _embeddings()
    np.testing.assert_allclose(
        float(restored(None, y_pred)),
        sum(
            w * reference(y_pred[..., :m], 5.0, True).mean()
            for w, m in zip([1, 2, 3, 4], DIMS)
        ),
        rtol=1e-5,
    )


def test_model_save_and_load(tmp_path):
    model = keras.Sequential([keras.Input((2, 8)), keras.layers.Dense(16)])
    model.compile(
        "sgd",
        MatryoshkaLoss(
            MultipleNegativesRankingLoss(scale=10.0), nesting_dims=[8, 16]
        ),
    )
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.loss.loss, MultipleNegativesRankingLoss)
    assert restored.loss.loss.scale == 10.0
