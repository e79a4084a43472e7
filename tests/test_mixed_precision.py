"""keras_mrl under `mixed_bfloat16` and `mixed_float16`.

Heads compute in the policy's compute dtype and keep float32 variables;
losses and metrics reduce in float32; softmax cross-entropy over many
classes and the normalisation of all-zero prefixes stay finite; and models
train with XLA (`mixed_float16` with a `LossScaleOptimizer`).
"""

import keras
import numpy as np
import pytest
from conftest import jit_compile

import keras_mrl
from keras_mrl.losses._multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)
from keras_mrl.losses._supervised_contrastive_loss import (
    SupervisedContrastiveLoss,
)
from keras_mrl.ops import truncate

DIMS = [4, 8, 16]
# Relative error of one rounding to the compute dtype's mantissa.
ROUNDING = {"bfloat16": 2.0**-8, "float16": 2.0**-11}


@pytest.fixture(params=["mixed_bfloat16", "mixed_float16"])
def policy(request):
    keras.config.set_dtype_policy(request.param)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy("float32")


# The fits below run under one policy each, as every component's own test
# (tests/component_test.py) already fits it under both.
def _one_policy(name):
    return pytest.mark.parametrize("policy", [name], indirect=True)


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def _half(values, policy):
    """`values` rounded to the compute dtype, as a tensor of that dtype."""
    return keras.ops.cast(np.asarray(values, "float32"), policy.compute_dtype)


def _optimizer(policy, learning_rate=0.05):
    optimizer = keras.optimizers.Adam(learning_rate)
    if policy.compute_dtype == "float16":
        # float16 gradients underflow without loss scaling.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _log_softmax(logits, axis=-1):
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_head_computes_in_compute_dtype_with_float32_variables(policy, tied):
    head = keras_mrl.layers.MatryoshkaDense(10, nesting_dims=DIMS, tied=tied)
    x = np.random.default_rng(0).normal(size=(3, 16)).astype("float32")
    y = head(x)
    assert _dtype(y) == policy.compute_dtype
    assert head.weights and all(_dtype(v) == "float32" for v in head.weights)
    # The half-precision result is the float32 one up to the rounding of
    # inputs, weights, block partials and sums: a few units of rounding
    # of the sum of magnitudes.
    kernels = [head.kernel] * 3 if tied else head.kernels
    biases = [head.bias] * 3 if tied else head.biases
    for g, (m, kernel, bias) in enumerate(zip(DIMS, kernels, biases)):
        w, b = _numpy(kernel)[:m], _numpy(bias)
        expected = x[:, :m] @ w + b
        bound = np.abs(x[:, :m]) @ np.abs(w) + np.abs(b)
        error = np.abs(_numpy(y[:, g]) - expected)
        assert np.all(error <= 6 * ROUNDING[policy.compute_dtype] * bound)
    exported = head.export(8)
    assert _dtype(exported(x[:, :8])) == policy.compute_dtype
    assert _dtype(exported.kernel) == "float32"


def test_losses_and_metrics_reduce_in_float32(policy):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=(6,))
    stacked = _half(rng.normal(size=(6, 3, 5)), policy)
    logits = _numpy(stacked)  # the values the loss sees, exactly

    loss = keras_mrl.losses.MatryoshkaLoss(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    per_example = loss.call(labels, stacked)
    assert _dtype(per_example) == "float32"
    assert _dtype(loss(labels, stacked)) == "float32"
    expected = -_log_softmax(logits)[np.arange(6), :, labels].sum(axis=1)
    np.testing.assert_allclose(_numpy(per_example), expected, rtol=1e-5)

    embedding = _half(rng.normal(size=(6, 16)), policy)
    teacher = rng.normal(size=(6, 16)).astype("float32")
    distill = keras_mrl.losses.MatryoshkaLoss(
        keras.losses.MeanSquaredError(), nesting_dims=DIMS
    )
    value = distill.call(teacher, embedding)
    assert _dtype(value) == "float32"
    expected = sum(
        ((_numpy(embedding)[:, :m] - teacher[:, :m]) ** 2).mean(axis=1)
        for m in DIMS
    )
    np.testing.assert_allclose(_numpy(value), expected, rtol=1e-5)

    pairs = _half(rng.normal(size=(6, 2, 16)), policy)
    ranking = keras_mrl.losses.MatryoshkaLoss(
        MultipleNegativesRankingLoss(), nesting_dims=DIMS
    )
    assert _dtype(ranking(None, pairs)) == "float32"
    supcon = keras_mrl.losses.MatryoshkaLoss(
        SupervisedContrastiveLoss(), nesting_dims=DIMS
    )
    assert _dtype(supcon(labels % 2, embedding)) == "float32"

    metric = keras_mrl.metrics.MatryoshkaMetric(
        keras.metrics.SparseCategoricalAccuracy(name="acc"),
        head_nesting_dims=DIMS,
    )
    metric.update_state(labels, stacked)
    result = metric.result()
    assert all(_dtype(v) == "float32" for v in result.values())
    accuracy = (logits.argmax(-1) == labels[:, None]).mean(axis=0)
    np.testing.assert_allclose(
        [float(result[f"acc@{m}"]) for m in DIMS], accuracy
    )


def test_softmax_of_1000_half_logits_has_no_nan(policy):
    # Logits of a large-vocabulary head: wide spread, far from zero. Their
    # softmax in half precision underflows to 0 for most classes; the loss
    # works on float32 logits, so log-softmax stays finite and exact.
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 1000, size=(8,))
    logits = _half(200.0 + 40.0 * rng.normal(size=(8, 3, 1000)), policy)
    loss = keras_mrl.losses.MatryoshkaLoss(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    values = _numpy(loss.call(labels, logits))
    expected = -_log_softmax(_numpy(logits))[np.arange(8), :, labels].sum(1)
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, expected, rtol=1e-5)

    probabilities = keras.ops.softmax(logits, axis=-1)
    assert _dtype(probabilities) == policy.compute_dtype
    from_probabilities = keras_mrl.losses.MatryoshkaLoss(
        keras.losses.SparseCategoricalCrossentropy()
    )
    value = _numpy(from_probabilities(labels, probabilities))
    assert np.isfinite(value) and value > 0


def test_zero_norm_prefixes_normalise_to_zero(policy):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 16))
    x[:, :4] = 0.0  # every width-4 prefix is the zero vector
    x = _half(x, policy)

    cut = truncate(x, dim=4)
    assert _dtype(cut) == policy.compute_dtype
    np.testing.assert_array_equal(_numpy(cut), 0.0)
    wider = _numpy(truncate(x, dim=8))
    np.testing.assert_allclose(np.linalg.norm(wider, axis=1), 1.0, rtol=1e-2)

    # A zero prefix has cosine 0 with every candidate: the ranking loss of
    # width 4 is the uniform log(batch), and nothing is NaN.
    pairs = keras.ops.stack([x, x], axis=1)
    losses = MultipleNegativesRankingLoss().call_prefixes(None, pairs, DIMS)
    np.testing.assert_allclose(_numpy(losses[0]), np.log(6), rtol=1e-6)
    assert all(np.all(np.isfinite(_numpy(v))) for v in losses)
    supcon = SupervisedContrastiveLoss().call_prefixes(
        np.array([0, 0, 1, 1, 2, 2]), x, DIMS
    )
    assert all(np.all(np.isfinite(_numpy(v))) for v in supcon)


def _classifier(units=1000):
    inputs = keras.Input((12,))
    embedding = keras.layers.Dense(16, activation="tanh", name="trunk")(inputs)
    tied = keras_mrl.layers.MatryoshkaDense(
        units, nesting_dims=DIMS, tied=True, name="tied_head"
    )(embedding)
    outputs = {
        "head": keras_mrl.layers.MatryoshkaDense(
            units, nesting_dims=DIMS, name="head"
        )(embedding),
        "tied": keras_mrl.layers.WidthSampling(2, seed=0, name="tied")(tied),
        "embedding": keras.layers.Identity(name="embedding")(embedding),
    }
    return keras.Model(inputs, outputs)


def _classifier_losses():
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return {
        "head": keras_mrl.losses.MatryoshkaLoss(ce),
        "tied": keras_mrl.losses.MatryoshkaLoss(ce, weights=[1.0, 1.0, 1.0]),
        "embedding": keras_mrl.losses.MatryoshkaLoss(
            keras.losses.MeanSquaredError(), nesting_dims=DIMS
        ),
    }


def _classifier_data(n=64):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, 12)).astype("float32")
    labels = (np.abs(x[:, :3]).argmax(1) * 300 + 7).astype("int32")
    teacher = np.tanh(rng.normal(size=(n, 16))).astype("float32")
    return x, {"head": labels, "tied": labels, "embedding": teacher}


@_one_policy("mixed_float16")
def test_classifier_fits_with_xla(policy):
    x, y = _classifier_data()
    model = _classifier()
    assert _dtype(model(x[:2])["head"]) == policy.compute_dtype
    model.compile(
        _optimizer(policy),
        _classifier_losses(),
        metrics={
            "head": [
                keras_mrl.metrics.MatryoshkaMetric(
                    keras.metrics.SparseCategoricalAccuracy(name="acc"),
                    head_nesting_dims=DIMS,
                )
            ]
        },
        jit_compile=jit_compile(),
    )
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    for key in ("loss", "acc@4", "acc@16"):
        assert np.all(np.isfinite(history[key])), (key, history[key])
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
    assert all(_dtype(w) == "float32" for w in model.weights)
    assert all(np.all(np.isfinite(_numpy(w))) for w in model.weights)


@_one_policy("mixed_bfloat16")
def test_embedding_losses_fit_with_xla_and_a_zero_prefix(policy):
    class ZeroFirstBlock(keras.layers.Layer):
        """Zeroes the first DIMS[0] features: a width with zero norm."""

        def call(self, x):
            keep = np.arange(DIMS[-1]) >= DIMS[0]
            return x * keras.ops.cast(keep, x.dtype)

    inputs = keras.Input((2, 12))
    pairs = ZeroFirstBlock()(keras.layers.Dense(DIMS[-1])(inputs))
    anchors = keras.layers.Lambda(lambda p: p[:, 0, :])(pairs)
    model = keras.Model(inputs, {"pairs": pairs, "anchors": anchors})
    model.compile(
        _optimizer(policy, 0.01),
        {
            "pairs": keras_mrl.losses.MatryoshkaLoss(
                MultipleNegativesRankingLoss(), nesting_dims=DIMS
            ),
            "anchors": keras_mrl.losses.MatryoshkaLoss(
                SupervisedContrastiveLoss(), nesting_dims=DIMS
            ),
        },
        jit_compile=jit_compile(),
    )
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(16), 4).astype("int32")
    centres = rng.normal(size=(16, 12))[labels]
    x = np.stack(
        [centres + 0.3 * rng.normal(size=centres.shape) for _ in range(2)],
        axis=1,
    ).astype("float32")
    y = {"pairs": np.zeros(64, "float32"), "anchors": labels}
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"])), history["loss"]
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    assert all(np.all(np.isfinite(_numpy(w))) for w in model.weights)
