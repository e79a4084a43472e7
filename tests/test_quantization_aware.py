"""QuantizationAwareLoss: the codes it trains on are the index's codes, its
gradient is straight-through, and it trains inside a ContrastiveModel."""

import keras
import numpy as np
import pytest
from component_test import run_loss_test
from conftest import gradient
from conftest import jit_compile

import keras_mrl
from keras_mrl import _quantizers
from keras_mrl._numpy_search import l2_normalize
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.losses import QuantizationAwareLoss
from keras_mrl.losses._quantization_aware_loss import binary_codes
from keras_mrl.losses._quantization_aware_loss import int8_values
from keras_mrl.models import ContrastiveModel

DIMS = [8, 16]
SCALE = 20.0


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _compiled(fn, x):
    """`fn(x)` as a compiled `predict` runs it: XLA on TensorFlow and JAX."""
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), keras.layers.Lambda(fn)]
    )
    model.compile(jit_compile=jit_compile())
    return _np(model.predict(x, batch_size=len(x), verbose=0))


def _stack(batch=6, branches=3, width=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, branches, width)).astype("float32")


def _logsumexp(x, axis):
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def _mnrl(y):
    """Per-example MNRL of `(B, 2 + n, m)` from its definition, float64."""
    y = _normalize(np.asarray(y, "float64"))
    batch = y.shape[0]
    candidates = np.concatenate([y[:, k] for k in range(1, y.shape[1])])
    scores = SCALE * y[:, 0] @ candidates.T
    return _logsumexp(scores, 1) - scores[np.arange(batch), np.arange(batch)]


def _signs(y):
    return np.where(y > 0, 1.0, -1.0)


def _int8_stack(y, m, ranges=None):
    """The normalised prefix, its candidates coded by serving.quantize."""
    prefixes = _normalize(y[..., :m].astype("float32"))
    candidates = prefixes[:, 1:].reshape(-1, m)
    if ranges is None:
        ranges = np.stack([candidates.min(0), candidates.max(0)])
    codes = keras_mrl.serving.quantize(
        candidates, precision="uint8", ranges=ranges
    ).astype("float32")
    decoded = _quantizers.scalar_values(codes, ranges[0], ranges[1], np)
    return np.concatenate(
        [prefixes[:, :1], decoded.reshape(len(y), -1, m)], axis=1
    )


def _loss(precision, dims=(16,), weight=1.0, **kwargs):
    return QuantizationAwareLoss(
        MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS),
        precision=precision,
        nesting_dims=list(dims),
        weight=weight,
        **kwargs,
    )


# --- The codes are the index's ---------------------------------------------


def test_binary_forward_is_the_sign_code_that_serving_quantize_packs():
    x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
    x[0, :4] = 0.0  # the bit of 0 is not set
    out = _compiled(binary_codes, x)
    np.testing.assert_array_equal(out, _signs(x))
    np.testing.assert_array_equal(
        np.packbits(out > 0, axis=-1),
        keras_mrl.serving.quantize(x, precision="ubinary"),
    )


def test_int8_forward_codes_are_serving_quantize_codes_under_xla():
    x = np.random.default_rng(0).normal(size=(500, 64)).astype("float32")
    ranges = np.stack([x.min(0), x.max(0)])
    expected = keras_mrl.serving.quantize(x, precision="uint8", ranges=ranges)

    def codes(t):
        low = keras.ops.convert_to_tensor(ranges[0])
        high = keras.ops.convert_to_tensor(ranges[1])
        return _quantizers.scalar_codes(t, low, high, keras.ops)

    # Every range's maximum sits on a step boundary: a quotient rounded
    # one ulp low would give it code 254.
    np.testing.assert_array_equal(_compiled(codes, x), expected)
    decoded = _compiled(
        lambda t: int8_values(t, keras.ops.convert_to_tensor(ranges)), x
    )
    # XLA may fuse `low + (code + 0.5) * step` into one rounding: the
    # decoded values agree to an ulp of the range's ends.
    np.testing.assert_allclose(
        decoded,
        _quantizers.scalar_values(
            expected.astype("float32"), ranges[0], ranges[1], np
        ),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize("precision", ["binary", "int8"])
def test_training_codes_score_what_the_funnel_index_scores(precision, tmp_path):
    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(200, 48)).astype("float32")
    queries = rng.normal(size=(7, 48)).astype("float32")
    m = 32
    index = keras_mrl.retrieval.FunnelIndex(
        corpus,
        stage_dims=(m,),
        shortlist=(),
        precisions=(precision,),
        use_faiss=False,
    )
    scores, ids = index.search(queries, k=len(corpus))
    with np.load(index.save(tmp_path / "index")) as saved:
        stored = saved[f"prefix_{m}"]
    # The prefixes the index normalises, normalised as it does.
    q, c = l2_normalize(queries[:, :m]), l2_normalize(corpus[:, :m])
    if precision == "binary":
        q_codes, c_codes = (
            _compiled(binary_codes, q),
            _compiled(binary_codes, c),
        )
        np.testing.assert_array_equal(np.packbits(c_codes > 0, axis=1), stored)
        trained = q_codes @ c_codes.T  # m - 2 * hamming, exactly
        np.testing.assert_array_equal(
            np.take_along_axis(trained, ids, axis=1), scores
        )
        return
    ranges = np.stack([c.min(0), c.max(0)])
    decoded = _compiled(
        lambda t: int8_values(t, keras.ops.convert_to_tensor(ranges)), c
    )
    codes = _quantizers.divide(
        decoded - ranges[0], _quantizers.step(ranges[0], ranges[1], np), np
    )
    np.testing.assert_array_equal(np.floor(codes), stored)
    trained = q @ decoded.T  # the float query against the decoded codes
    np.testing.assert_allclose(
        np.take_along_axis(trained, ids, axis=1), scores, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("precision", ["binary", "int8"])
def test_loss_is_the_float_loss_plus_the_loss_of_the_codes(precision):
    y = _stack()
    loss = _loss(precision, dims=DIMS, weight=0.5)
    float_part = sum(_mnrl(y[..., :m]) for m in DIMS)
    if precision == "binary":
        codes = _signs(y)
        quantized = sum(_mnrl(codes[..., :m]) for m in DIMS)
    else:
        quantized = sum(_mnrl(_int8_stack(y, m)) for m in DIMS)
    np.testing.assert_allclose(
        _np(loss.call(None, y)), float_part + 0.5 * quantized, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(loss(None, y)), (float_part + 0.5 * quantized).mean(), rtol=1e-5
    )


def test_int8_with_given_ranges_codes_on_them():
    y = _stack(seed=2)
    c = _normalize(y[:, 1:, :16].reshape(-1, 16))
    ranges = np.stack([c.min(0), c.max(0)]) * 0.5  # clips the extremes
    loss = _loss("int8", ranges=[ranges])
    expected = sum(_mnrl(y[..., :m]) for m in DIMS) + _mnrl(
        _int8_stack(y, 16, ranges)
    )
    np.testing.assert_allclose(_np(loss.call(None, y)), expected, rtol=1e-5)


def test_zero_weight_leaves_the_float_loss():
    y = _stack()
    loss = _loss("int8", weight=0.0)
    np.testing.assert_allclose(
        _np(loss.call(None, y)), sum(_mnrl(y[..., :m]) for m in DIMS), rtol=1e-5
    )


def test_wrappers_nest_a_binary_first_stage_and_an_int8_second():
    y = _stack()
    mrl = MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)
    both = QuantizationAwareLoss(
        QuantizationAwareLoss(mrl, precision="int8", nesting_dims=[16]),
        precision="binary",
        nesting_dims=[8],
    )
    expected = (
        sum(_mnrl(y[..., :m]) for m in DIMS)
        + _mnrl(_int8_stack(y, 16))
        + _mnrl(_signs(y[..., :8]))
    )
    np.testing.assert_allclose(_np(both.call(None, y)), expected, rtol=1e-5)


def test_a_plain_loss_of_the_embedding_is_its_own_per_width_loss():
    y = _stack()
    loss = QuantizationAwareLoss(
        MultipleNegativesRankingLoss(), precision="binary", nesting_dims=[8]
    )
    np.testing.assert_allclose(
        _np(loss.call(None, y)),
        _mnrl(y) + _mnrl(_signs(y[..., :8])),
        rtol=1e-5,
    )


# --- Straight-through gradients --------------------------------------------


def _tensor(x):
    return keras.ops.convert_to_tensor(np.asarray(x, "float32"))


@pytest.mark.parametrize("precision", ["binary", "int8"])
def test_gradient_is_the_float_gradient_at_the_codes(precision):
    # Straight-through: the quantized term's gradient is that of the
    # inner loss at the codes, passed to the embedding unchanged, i.e.
    # the gradient of the float loss of an embedding shifted by the
    # (constant) quantization error.
    y = _stack(seed=3)
    m = 16
    loss = _loss(precision, dims=[m])
    mrl = MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)
    inner = MultipleNegativesRankingLoss()
    if precision == "binary":
        shift = _signs(y) - y

        def shifted(t):
            return inner(None, (t + _tensor(shift))[..., :m])

    else:
        prefixes = _normalize(y[..., :m])
        shift = _int8_stack(y, m) - prefixes

        def shifted(t):
            cut = keras_mrl.ops.truncate(t, dim=m)
            return inner(None, cut + _tensor(shift))

    expected = gradient(lambda t: mrl(None, t), y) + gradient(shifted, y)
    actual = gradient(lambda t: loss(None, t), y)
    assert np.abs(gradient(shifted, y)).max() > 1e-3
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)


def test_int8_gradient_is_zero_where_a_value_is_clipped():
    x = np.linspace(-2.0, 2.0, 12, dtype="float32").reshape(3, 4)
    ranges = np.array([[-1.0] * 4, [1.0] * 4], "float32")
    weights = np.arange(12, dtype="float32").reshape(3, 4)

    def total(t):
        values = int8_values(t, keras.ops.convert_to_tensor(ranges))
        return keras.ops.sum(values * _tensor(weights))

    inside = (x >= -1.0) & (x <= 1.0)
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(
        gradient(total, x), np.where(inside, weights, 0.0)
    )


def test_binary_gradient_is_the_identity():
    x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32") * 3
    weights = np.arange(32, dtype="float32").reshape(4, 8)
    grad = gradient(
        lambda t: keras.ops.sum(binary_codes(t) * _tensor(weights)), x
    )
    np.testing.assert_array_equal(grad, weights)


# --- Keras: fit with XLA, save, mixed precision ----------------------------


def _encoder():
    return keras.Sequential([keras.Input((3, 12)), keras.layers.Dense(16)])


def test_component():
    # Both precisions in one loss: a binary first stage, an int8 second.
    run_loss_test(
        QuantizationAwareLoss(
            _loss("int8", dims=[16]), precision="binary", nesting_dims=[8]
        ),
        _encoder,
        _stack(batch=8, width=12),
        None,
    )


def _pairs(n=16, seed=0):
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(n, 6)).astype("float32")
    return anchors, anchors + 0.3 * rng.normal(size=(n, 6)).astype("float32")


@pytest.mark.parametrize("precision", ["binary", "int8"])
def test_contrastive_model_fits_with_xla_and_reloads(precision, tmp_path):
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16)])
    model = ContrastiveModel(encoder)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=_loss(precision, dims=[8, 16]),
        jit_compile=jit_compile(),
    )
    data = _pairs()
    before = model.evaluate(data, batch_size=8, verbose=0)
    history = model.fit(data, batch_size=8, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.evaluate(data, batch_size=8, verbose=0) < before
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.loss, QuantizationAwareLoss)
    assert restored.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(
        restored.evaluate(data, batch_size=8, verbose=0),
        model.evaluate(data, batch_size=8, verbose=0),
        rtol=1e-5,
    )


def test_a_guide_reaches_the_inner_loss():
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16)])
    guide = keras.models.clone_model(encoder)
    guide.set_weights(encoder.get_weights())
    guided = MatryoshkaLoss(
        MultipleNegativesRankingLoss(guide_margin=0.0), nesting_dims=DIMS
    )
    loss = QuantizationAwareLoss(guided, precision="binary", nesting_dims=[16])
    assert loss.guide_margin == 0.0
    assert _loss("binary").guide_margin is None
    model = ContrastiveModel(encoder, guide=guide)
    model.compile(optimizer="sgd", loss=loss)
    history = model.fit(_pairs(), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_config_round_trip_with_ranges():
    ranges = [np.array([[-1.0] * 8, [1.0] * 8])]
    loss = _loss("int8", dims=[8], weight=0.25, ranges=ranges, name="qa")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.get_config() == loss.get_config()
    assert (restored.precision, restored.nesting_dims, restored.weight) == (
        "int8",
        [8],
        0.25,
    )
    assert restored.ranges == [[[-1.0] * 8, [1.0] * 8]]
    y = _stack()
    np.testing.assert_allclose(
        float(restored(None, y)), float(loss(None, y)), rtol=1e-6
    )


# --- Bad arguments and inputs ----------------------------------------------


def _mrl():
    return MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(precision="float32"), ValueError, "precision"),
        (dict(precision="ubinary"), ValueError, "precision"),
        (dict(precision=None), ValueError, "precision"),
        (dict(nesting_dims=[12]), ValueError, "multiple of 8"),
        (dict(nesting_dims=[]), ValueError, "at least one"),
        (dict(nesting_dims=[16, 8]), ValueError, "increasing"),
        (dict(nesting_dims=16), TypeError, "list of ints"),
        (dict(nesting_dims=[8.0]), TypeError, "ints"),
        (dict(weight=-1.0), ValueError, ">= 0"),
        (dict(weight=float("nan")), ValueError, ">= 0"),
        (dict(weight="1"), TypeError, "number"),
        (dict(ranges=[np.zeros((2, 16))]), ValueError, "int8"),
        (
            dict(precision="int8", ranges=np.zeros((2, 16))),
            TypeError,
            "one \\(2, m\\) array per width",
        ),
        (
            dict(precision="int8", ranges=[np.zeros((2, 16))] * 2),
            ValueError,
            "one \\(2, m\\) array per width",
        ),
        (
            dict(precision="int8", ranges=[np.zeros((2, 8))]),
            ValueError,
            "\\(2, 16\\)",
        ),
        (
            dict(precision="int8", ranges=[[["a"] * 16] * 2]),
            ValueError,
            "float array",
        ),
        (
            dict(precision="int8", ranges=[np.array([[1.0] * 16, [0.0] * 16])]),
            ValueError,
            "16 minimum\\(s\\) above",
        ),
        (
            dict(precision="int8", ranges=[np.full((2, 16), np.nan)]),
            ValueError,
            "finite",
        ),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, error, match):
    arguments = dict(precision="binary", nesting_dims=[16])
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        QuantizationAwareLoss(_mrl(), **arguments)


def test_arguments_after_the_loss_are_keyword_only():
    with pytest.raises(TypeError):
        QuantizationAwareLoss(_mrl(), "binary", [16])


def test_a_loss_class_or_a_stacked_matryoshka_loss_raises():
    with pytest.raises(TypeError, match="instance"):
        QuantizationAwareLoss(
            MultipleNegativesRankingLoss, precision="binary", nesting_dims=[8]
        )
    with pytest.raises(ValueError, match="stacked mode"):
        QuantizationAwareLoss(
            MatryoshkaLoss("mse"), precision="binary", nesting_dims=[8]
        )


def test_widths_wider_than_the_embedding_raise():
    with pytest.raises(ValueError, match="only 16 wide"):
        _loss("binary", dims=[24])(None, _stack())


def test_int8_needs_the_stack_of_anchors_and_candidates():
    loss = QuantizationAwareLoss(
        keras.losses.MeanSquaredError(), precision="int8", nesting_dims=[8]
    )
    y = np.ones((4, 16), "float32")
    with pytest.raises(ValueError, match="\\(batch, 2 \\+ n, D\\)"):
        loss(y, y)


def test_missing_targets_raise_for_a_loss_that_needs_them():
    loss = QuantizationAwareLoss(
        MatryoshkaLoss("mse", nesting_dims=[8]),
        precision="binary",
        nesting_dims=[8],
    )
    with pytest.raises(ValueError, match="needs targets"):
        loss(None, np.ones((4, 8), "float32"))
