"""Guided in-batch negatives: MultipleNegativesRankingLoss(guide_margin=...)
and ContrastiveModel(embedder, guide=...)."""

import keras
import numpy as np
import pytest
from conftest import gradient
from conftest import jit_compile

from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.models import ContrastiveModel

DIMS = [4, 8, 32]


def _normalize(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _logsumexp(x, axis):
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def guide_masks(guide, margin):
    """`(forward, backward)` boolean masks, from the definition in float64.

    `forward[i, j]`: candidate `j` (the positives, then the hard negatives
    column by column) scores above anchor `i`'s positive minus the margin
    in the guide; `backward[j, i]`: anchor `j` does so for positive `i`.
    """
    g = _normalize(guide)
    batch = g.shape[0]
    anchors = g[:, 0]
    candidates = np.concatenate([g[:, k] for k in range(1, g.shape[1])])
    scores = anchors @ candidates.T
    positive = scores[np.arange(batch), np.arange(batch)]
    forward = scores > (positive - margin)[:, None]
    forward[np.arange(batch), np.arange(batch)] = False
    backward = scores[:, :batch] > (positive - margin)[None, :]
    backward[np.arange(batch), np.arange(batch)] = False
    return forward, backward


def reference(y_pred, masks=None, scale=20.0, symmetric=False):
    """Per-example MNRL with the masked logits left out of the softmax."""
    y = _normalize(y_pred)
    batch = y.shape[0]
    candidates = np.concatenate([y[:, k] for k in range(1, y.shape[1])])
    scores = scale * y[:, 0] @ candidates.T
    target = scores[np.arange(batch), np.arange(batch)]
    forward_scores = scores.copy()
    if masks is not None:
        forward_scores[masks[0]] = -np.inf
    forward = _logsumexp(forward_scores, axis=1) - target
    if not symmetric:
        return forward
    backward_scores = scores[:, :batch].copy()
    if masks is not None:
        backward_scores[masks[1]] = -np.inf
    backward = _logsumexp(backward_scores, axis=0) - target
    return (forward + backward) / 2


def _embeddings(batch=6, columns=3, width=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, columns, width)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _circle(degrees):
    radians = np.deg2rad(np.asarray(degrees, "float64"))
    return np.stack([np.cos(radians), np.sin(radians)], 1).astype("float32")


@pytest.mark.parametrize("symmetric", [False, True])
def test_masks_of_a_hand_made_guide(symmetric):
    # Guide anchors at 0, 4 and -6 degrees, their positives at 30, 10 and
    # 50: the pairs are 30, 6 and 56 degrees apart. Anchor 0 masks
    # positive 1 (10 degrees away); anchor 2 masks positives 0 (36) and
    # 1 (16); anchor 1 masks none.
    guide = np.stack([_circle([0, 4, -6]), _circle([30, 10, 50])], axis=1)
    forward = np.array(
        [[False, True, False], [False, False, False], [True, True, False]]
    )
    # Backwards, positive 0 masks anchor 1 (26 degrees away), and
    # positive 2 anchors 0 (50) and 1 (46); positive 1 none.
    backward = np.array(
        [[False, False, True], [True, False, True], [False, False, False]]
    )
    np.testing.assert_array_equal(guide_masks(guide, 0.0)[0], forward)
    np.testing.assert_array_equal(guide_masks(guide, 0.0)[1], backward)
    y_pred = _embeddings(batch=3, columns=2)
    loss = MultipleNegativesRankingLoss(guide_margin=0.0, symmetric=symmetric)
    np.testing.assert_allclose(
        _np(loss.call(guide, y_pred)),
        reference(y_pred, (forward, backward), symmetric=symmetric),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "columns, symmetric, scale, margin",
    [
        (2, False, 20.0, 0.0),
        (4, True, 20.0, 0.1),
        (4, False, 50.0, 0.1),
        (2, True, 50.0, 0.0),
    ],
)
def test_matches_numpy_masks(columns, symmetric, scale, margin):
    y_pred = _embeddings(batch=8, columns=columns)
    guide = _embeddings(batch=8, columns=columns, width=12, seed=1)
    masks = guide_masks(guide, margin)
    assert masks[0].any() and not masks[0].all()
    loss = MultipleNegativesRankingLoss(
        scale=scale, symmetric=symmetric, guide_margin=margin
    )
    expected = reference(y_pred, masks, scale=scale, symmetric=symmetric)
    np.testing.assert_allclose(
        _np(loss.call(guide, y_pred)), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        float(loss(guide, y_pred)), expected.mean(), rtol=1e-5
    )
    unguided = reference(y_pred, scale=scale, symmetric=symmetric)
    assert np.abs(expected - unguided).max() > 1e-3


def test_every_hard_negative_masked_leaves_a_finite_gradient():
    y_pred = _embeddings(batch=4, columns=3)
    # Guide anchors close together and each hard negative a copy of its
    # anchor: every anchor's guide puts every hard negative above its
    # positive. Scale 60 takes the log-sum-exp path of large scales.
    rng = np.random.default_rng(2)
    anchors = rng.normal(size=32) + 0.05 * rng.normal(size=(4, 32))
    guide = np.stack(
        [anchors, rng.normal(size=(4, 32)), anchors], axis=1
    ).astype("float32")
    masks = guide_masks(guide, 0.0)
    assert masks[0][:, 4:].all()
    loss = MultipleNegativesRankingLoss(scale=60.0, guide_margin=0.0)
    np.testing.assert_allclose(
        _np(loss.call(guide, y_pred)),
        reference(y_pred, masks, scale=60.0),
        rtol=1e-5,
        atol=1e-5,
    )
    grads = gradient(lambda x: loss(guide, x), y_pred)
    assert np.isfinite(grads).all()
    # The masked hard negatives get no gradient; the rest do.
    assert np.abs(grads[:, 2]).max() == 0
    assert np.abs(grads[:, :2]).max() > 0


@pytest.mark.parametrize("symmetric", [False, True])
def test_no_effect_when_the_guide_ranks_every_positive_first(symmetric):
    y_pred = _embeddings(batch=6, columns=3)
    # Guide anchor and positive i are both e_i; hard negative i is
    # e_i + e_{i+1}, at cosine 0.71: every positive is its anchor's first.
    eye = np.eye(6, 8, dtype="float32")
    guide = np.stack([eye, eye, eye + np.roll(eye, 1, axis=1)], axis=1)
    assert not guide_masks(guide, 0.0)[0].any()
    guided = MultipleNegativesRankingLoss(guide_margin=0.0, symmetric=symmetric)
    plain = MultipleNegativesRankingLoss(symmetric=symmetric)
    np.testing.assert_allclose(
        _np(guided.call(guide, y_pred)),
        _np(plain.call(None, y_pred)),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("symmetric", [False, True])
def test_matryoshka_loss_passes_the_guide_whole_to_every_width(symmetric):
    y_pred = _embeddings(batch=8, columns=3, width=32)
    # As wide as the embedding, as a frozen copy of the base model is.
    guide = _embeddings(batch=8, columns=3, width=32, seed=3)
    weights = [1.0, 0.5, 2.0]
    wrapped = MatryoshkaLoss(
        MultipleNegativesRankingLoss(guide_margin=0.05, symmetric=symmetric),
        nesting_dims=DIMS,
        weights=weights,
    )
    masks = guide_masks(guide, 0.05)
    expected = sum(
        w * reference(y_pred[..., :m], masks, symmetric=symmetric)
        for w, m in zip(weights, DIMS)
    )
    np.testing.assert_allclose(
        _np(wrapped.call(guide, y_pred)), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        float(wrapped(guide, y_pred)), expected.mean(), rtol=1e-5
    )
    # Guide masks cut to each prefix would give another loss.
    cut = sum(
        w
        * reference(
            y_pred[..., :m],
            guide_masks(guide[..., :m], 0.05),
            symmetric=symmetric,
        )
        for w, m in zip(weights, DIMS)
    )
    assert np.abs(expected - cut).max() > 1e-2


def test_guide_margin_survives_the_config_round_trip():
    loss = MatryoshkaLoss(
        MultipleNegativesRankingLoss(guide_margin=0.1), nesting_dims=DIMS
    )
    again = MatryoshkaLoss.from_config(loss.get_config())
    assert again.loss.guide_margin == 0.1
    assert MultipleNegativesRankingLoss().get_config()["guide_margin"] is None


@pytest.mark.parametrize(
    "margin, error",
    [(-0.1, ValueError), (np.inf, ValueError), ("0.1", TypeError)],
)
def test_bad_guide_margin_raises(margin, error):
    with pytest.raises(error, match="guide_margin"):
        MultipleNegativesRankingLoss(guide_margin=margin)
    with pytest.raises(TypeError, match="guide_margin"):
        MultipleNegativesRankingLoss(guide_margin=True)


@pytest.mark.parametrize(
    "y_true, shape",
    [(None, r"\(6,\)"), (np.zeros((6, 2, 4), "float32"), r"\(6, 2, 4\)")],
)
def test_guide_margin_without_guide_embeddings_raises(y_true, shape):
    loss = MultipleNegativesRankingLoss(guide_margin=0.0)
    with pytest.raises(ValueError, match=f"y_true of shape {shape}.*guide="):
        loss(y_true, _embeddings(batch=6, columns=3))


# --- ContrastiveModel(embedder, guide=...) ---------------------------------


def _encoder(seed, width=16):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(width)])


def _frozen_copy(encoder):
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    return copy


def _guided_loss(margin=0.0):
    return MatryoshkaLoss(
        MultipleNegativesRankingLoss(guide_margin=margin), nesting_dims=[8, 16]
    )


def _triplets(n=16, seed=0):
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(n, 6)).astype("float32")
    positives = anchors + 0.3 * rng.normal(size=(n, 6)).astype("float32")
    negatives = rng.normal(size=(n, 6)).astype("float32")
    return anchors, positives, negatives


def _guided_model(jit=False, margin=0.0):
    encoder = _encoder(0)
    guide = _encoder(1)
    model = ContrastiveModel(encoder, guide=guide)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=_guided_loss(margin),
        jit_compile=jit,
    )
    return model, encoder, guide


def test_the_loss_gets_the_frozen_guide_embeddings_of_every_branch():
    model, encoder, guide = _guided_model(jit=jit_compile(), margin=0.02)
    data = _triplets()
    guide_before = [w.copy() for w in guide.get_weights()]
    encoder_before = [w.copy() for w in encoder.get_weights()]
    y_pred = _np(model(data))
    guide_stack = np.stack([_np(guide(b)) for b in data], 1)
    expected = float(_guided_loss(0.02)(guide_stack, y_pred))
    unguided = MatryoshkaLoss(
        MultipleNegativesRankingLoss(), nesting_dims=[8, 16]
    )
    assert abs(expected - float(unguided(None, y_pred))) > 1e-3
    evaluated = model.evaluate(data, batch_size=16, verbose=0)
    np.testing.assert_allclose(evaluated, expected, rtol=1e-5)
    model.fit(data, batch_size=8, epochs=2, verbose=0)
    assert guide.trainable is False
    assert len(model.trainable_weights) == len(encoder.trainable_weights)
    for before, after in zip(guide_before, guide.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(
        np.abs(b - a).max() > 1e-4
        for b, a in zip(encoder_before, encoder.get_weights())
    )


@pytest.mark.skipif(not jit_compile(), reason="XLA runs on TF and JAX only")
def test_guided_fit_under_xla_matches_eager():
    data = _triplets()
    weights = []
    for jit in (True, False):
        model, encoder, _ = _guided_model(jit=jit)
        model.fit(data, batch_size=8, epochs=1, shuffle=False, verbose=0)
        assert model.jit_compile is jit
        weights.append(encoder.get_weights())
    for compiled, eager in zip(*weights):
        np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_keras_file_keeps_the_frozen_guide(tmp_path):
    model, encoder, guide = _guided_model(margin=0.1)
    data = _triplets()
    model.fit(data, batch_size=8, verbose=0)
    path = str(tmp_path / "guided.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.guide is not None and loaded.guide.trainable is False
    for saved, restored in zip(guide.get_weights(), loaded.guide.get_weights()):
        np.testing.assert_array_equal(saved, restored)
    assert loaded.loss.loss.guide_margin == 0.1
    np.testing.assert_allclose(
        loaded.evaluate(data, batch_size=16, verbose=0),
        model.evaluate(data, batch_size=16, verbose=0),
        rtol=1e-5,
    )
    assert len(loaded.trainable_weights) == len(encoder.trainable_weights)


@pytest.mark.parametrize(
    "loss",
    [
        MultipleNegativesRankingLoss(),
        MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=[8, 16]),
    ],
)
def test_a_loss_that_ignores_the_guide_raises(loss):
    encoder = _encoder(0)
    model = ContrastiveModel(encoder, guide=_frozen_copy(encoder))
    model.compile(optimizer="sgd", loss=loss)
    with pytest.raises(ValueError, match="does not read the guide"):
        model.fit(_triplets(), batch_size=8, verbose=0)


def test_bad_guides_raise():
    encoder = _encoder(0)
    with pytest.raises(TypeError, match="`guide` must be None or a keras"):
        ContrastiveModel(encoder, guide=keras.layers.Dense(4))
    with pytest.raises(ValueError, match="must not be the embedder"):
        ContrastiveModel(encoder, guide=encoder)
    with pytest.raises(ValueError, match="share its weights"):
        ContrastiveModel(encoder, guide=keras.Sequential([encoder]))
    with pytest.raises(TypeError):
        ContrastiveModel(encoder, None, _frozen_copy(encoder))


def test_a_text_guide_reads_the_token_ids_of_the_embedders_preprocessor():
    pytest.importorskip("keras_hub")
    pytest.importorskip("tensorflow")
    from _tiny_bert import VOCABULARY
    from _tiny_bert import pairs
    from _tiny_bert import tiny_embedder

    keras.utils.set_random_seed(0)
    embedder = tiny_embedder()
    # Another BERT with the embedder's tokenizer and longer positions.
    guide = tiny_embedder(max_sequence_length=16)
    model = ContrastiveModel(embedder, guide=guide)
    model.compile(optimizer="adam", loss=_guided_loss())
    queries, documents = pairs(8)
    (x,) = next(iter(model.make_dataset((queries, documents), batch_size=8)))
    x = keras.tree.map_structure(
        lambda t: keras.ops.convert_to_tensor(t.numpy()), x
    )
    y_pred = model(x)
    embedded = guide.encode_text(queries + documents, verbose=0)
    guide_stack = np.stack([embedded[:8], embedded[8:]], axis=1)
    np.testing.assert_allclose(
        float(_np(model.compute_loss(x=x, y_pred=y_pred))),
        float(_np(_guided_loss()(guide_stack, y_pred))),
        rtol=1e-5,
    )
    other = tiny_embedder(vocabulary=VOCABULARY + ["extra"])
    with pytest.raises(ValueError, match="another tokenizer vocabulary"):
        ContrastiveModel(embedder, guide=other)
