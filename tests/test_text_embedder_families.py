"""keras_mrl with every KerasHub TextEmbedder family.

BERT, XLM-RoBERTa, Gemma3 (EmbeddingGemma's pooling inside the backbone)
and Qwen3, each a tiny random-weight embedder whose tokenizer is built
here (`_tiny_families`): raw-string `fit` of a `ContrastiveModel` with an
`OrthogonalProjection` head and `MatryoshkaLoss` (XLA on TensorFlow and
JAX), `encode` at a served width, `.keras` and preset round trips, every
pooling under length buckets, and the sentence-transformers export of the
families it writes. Gemma3's fit runs under every backend; what does not
depend on the backend (serialisation, pooling and trimming, the export)
and the other families' fits run once.
"""

from types import SimpleNamespace

import keras
import numpy as np
import pytest
from conftest import jit_compile

import keras_mrl
from keras_mrl.layers import OrthogonalProjection
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.models import ContrastiveModel
from keras_mrl.models import DepthSampling
from keras_mrl.models._length_buckets import resolve_buckets
from keras_mrl.models._length_buckets import trim

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("tensorflow")
pytest.importorskip("sentencepiece")

from _tiny_bert import pairs  # noqa: E402
from _tiny_families import EMBEDDERS  # noqa: E402
from _tiny_families import FAMILIES  # noqa: E402
from _tiny_families import POOLINGS  # noqa: E402
from _tiny_families import tiny_family_embedder  # noqa: E402

DIMS = [4, 8, 16]
QUERIES, DOCUMENTS = pairs(8)
TEXTS = QUERIES + DOCUMENTS
# The families' trained fixtures: Gemma3 pools inside its backbone, as
# EmbeddingGemma does; the others pool as their embedder does by default.
POOLING = {"gemma3": "backbone"}
# Exported to sentence-transformers: the families `export` writes besides
# BERT, whose round trips test_st_export.py checks.
EXPORTED = ("xlm_roberta", "qwen3")


def _loss():
    return MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# The family fitted under XLA on every backend: Gemma3, a decoder that pools
# inside its backbone, is the one least like the tiny BERT, whose
# raw-string fit test_contrastive_model.py runs on every backend. The
# others are KerasHub layers under the same ContrastiveModel code: once.
EVERY_BACKEND = ("gemma3",)


@pytest.fixture(
    scope="module",
    params=[
        f if f in EVERY_BACKEND else pytest.param(f, marks=pytest.mark.once)
        for f in FAMILIES
    ],
)
def trained(request):
    """A ContrastiveModel with an orthogonal head, fit 2 steps on raw
    strings, and what the tests read of it: the weights before `fit`, the
    losses, `encode(TEXTS, dim=8)` and the full vectors of `TEXTS`."""
    family = request.param
    keras.utils.set_random_seed(0)
    embedder = tiny_family_embedder(family, pooling_mode=POOLING.get(family))
    model = ContrastiveModel(embedder, head=OrthogonalProjection())
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=_loss(),
        jit_compile=jit_compile(),
    )
    before = [_numpy(v) for v in embedder.weights]
    history = model.fit((QUERIES, DOCUMENTS), batch_size=4, verbose=0)
    served = model.encode(TEXTS, dim=8)
    # The program `encode` compiled, on the texts in order and padded to
    # the sequence length.
    x = embedder.preprocessor(TEXTS)
    full = _numpy(model.head(keras.Model.predict_on_batch(model.embedder, x)))
    return SimpleNamespace(
        family=family,
        model=model,
        before=before,
        losses=history.history["loss"],
        served=served,
        full=full,
    )


def test_raw_string_fit_trains_the_embedder_and_the_head(trained):
    model = trained.model
    assert type(model.embedder).__name__ == EMBEDDERS[trained.family]
    assert model.jit_compile is jit_compile()
    assert len(trained.losses) == 1 and np.isfinite(trained.losses[0])
    after = [_numpy(v) for v in model.embedder.weights]
    moved = max(np.abs(a - b).max() for a, b in zip(after, trained.before))
    assert moved > 1e-3
    kernel = _numpy(model.head.kernel)
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(16), atol=1e-4)


def test_encode_serves_unit_prefixes_in_input_order(trained):
    assert trained.served.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(
        np.linalg.norm(trained.served, axis=1), 1, atol=1e-5
    )
    np.testing.assert_allclose(
        trained.served, _unit(trained.full[:, :8]), atol=1e-5
    )


def test_retrieval_metrics_score_every_width(trained):
    labels = np.arange(len(QUERIES))
    results = keras_mrl.evaluation.retrieval_metrics(
        trained.full[: len(QUERIES)],
        query_labels=labels,
        corpus_embeddings=trained.full[len(QUERIES) :],
        corpus_labels=labels,
        nesting_dims=DIMS,
        k=4,
    )
    assert sorted(results) == DIMS
    for scores in results.values():
        assert 0 <= scores["ndcg@4"] <= 1
        assert scores["queries_without_relevant"] == 0


@pytest.mark.once
def test_keras_file_round_trip_gives_the_same_vectors(trained, tmp_path):
    path = str(tmp_path / "model.keras")
    trained.model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.embedder).__name__ == EMBEDDERS[trained.family]
    assert isinstance(loaded.head, OrthogonalProjection)
    np.testing.assert_allclose(
        loaded.encode(TEXTS, dim=8), trained.served, atol=1e-6
    )


@pytest.mark.once
def test_embedder_preset_round_trip_keeps_weights_and_tokens(trained, tmp_path):
    embedder = trained.model.embedder
    embedder.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_hub.models.TextEmbedder.from_preset(str(tmp_path / "preset"))
    assert type(loaded) is type(embedder)
    assert loaded.get_config() == embedder.get_config()
    for got, expected in zip(loaded.get_weights(), embedder.get_weights()):
        np.testing.assert_array_equal(got, expected)
    x, y = embedder.preprocessor(TEXTS), loaded.preprocessor(TEXTS)
    for key in x:
        np.testing.assert_array_equal(_numpy(y[key]), _numpy(x[key]))


def _with_pooling(embedder, **options):
    """Another embedder of the same class on `embedder`'s backbone."""
    return type(embedder)(embedder.backbone, embedder.preprocessor, **options)


@pytest.fixture(scope="module")
def pooled(trained):
    """`{name: (queries at full padding, queries in a length bucket,
    documents)}` for every pooling of the family, normalised or not.

    One model computes them all (the embedders share the fixture's
    backbone; Gemma3's last-token and mean pooling need one that does not
    pool itself), so that each input shape compiles once.
    """
    base = trained.model.embedder
    embedders = {}
    if trained.family == "gemma3":
        embedders["backbone"] = base  # EmbeddingGemma's pooling
        base = tiny_family_embedder("gemma3")
    for mode in POOLINGS[trained.family]:
        if mode != "backbone":
            embedders[mode] = _with_pooling(base, pooling_mode=mode)
    embedders["raw"] = _with_pooling(
        base, pooling_mode=base.pooling_mode, normalize=False
    )
    embedders["normalised"] = _with_pooling(
        base, pooling_mode=base.pooling_mode
    )
    inputs = {
        key: keras.Input((None,), dtype=value.dtype, name=key)
        for key, value in base.backbone.input.items()
    }
    model = keras.Model(inputs, [e(inputs) for e in embedders.values()])
    queries = base.preprocessor(QUERIES)
    cut = trim(queries, resolve_buckets([4, 6], 8))
    assert cut["token_ids"].shape[1] < 8

    def run(x):
        outputs = keras.Model.predict_on_batch(model, x)
        return [_numpy(output) for output in outputs]

    return {
        name: outputs
        for name, outputs in zip(
            embedders,
            zip(
                run(queries),
                run(cut),
                run(base.preprocessor(DOCUMENTS)),
            ),
        )
    }


@pytest.mark.once
def test_every_pooling_is_exact_under_length_buckets(trained, pooled):
    # Right padding cut after the last used column: mean, max, cls and
    # last-token pooling (which finds the last unmasked token) all see
    # the tokens they saw at full padding.
    assert set(POOLINGS[trained.family]) <= set(pooled)
    for name in POOLINGS[trained.family]:
        full, cut, _ = pooled[name]
        np.testing.assert_allclose(cut, full, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1, atol=1e-5)


@pytest.mark.once
def test_embedder_normalisation_leaves_the_matryoshka_loss_unchanged(pooled):
    # The loss normalises every prefix (cosine): the embedder's own
    # normalisation of the full vector is a positive scale per row.
    raw, normalised = pooled["raw"], pooled["normalised"]
    norms = np.linalg.norm(raw[0], axis=-1)
    assert np.abs(norms - 1).max() > 1e-2
    losses = [
        float(_loss()(None, np.stack([queries, documents], axis=1)))
        for queries, _, documents in (raw, normalised)
    ]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


@pytest.mark.once
def test_depth_sampling_takes_the_encoder_families_only(trained):
    if trained.family in ("bert", "xlm_roberta"):
        # Supported; the tiny backbone has one layer, and depth sampling
        # needs a shallower depth to train.
        error, match = ValueError, "at least 2 layers"
    else:
        error, match = TypeError, "XLMRobertaTextEmbedder"
    with pytest.raises(error, match=match):
        ContrastiveModel(trained.model.embedder, depth_sampling=DepthSampling())


@pytest.mark.once
def test_encode_dim_is_checked():
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    model = ContrastiveModel(encoder)
    x = np.ones((3, 6), "float32")
    assert model.encode(np.zeros((0, 6), "float32"), dim=2).shape == (0, 2)
    with pytest.raises(ValueError, match="dim"):
        model.encode(x, dim=0)
    with pytest.raises(TypeError, match="dim"):
        model.encode(x, dim=2.0)
    with pytest.raises(ValueError, match="dim <= 4"):
        model.encode(x, dim=5)
    with pytest.raises(ValueError, match="dim <= 4"):
        model.encode(np.zeros((0, 6), "float32"), dim=5)


# --- sentence-transformers export: the families it writes, then parity. ---


@pytest.mark.once
@pytest.mark.parametrize("family", EXPORTED)
def test_export_encodes_the_keras_vectors_in_sentence_transformers(
    family, tmp_path
):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    pytest.importorskip("torch")
    from keras_mrl.integrations import sentence_transformers as st

    keras.utils.set_random_seed(1)
    embedder = tiny_family_embedder(family)
    # Weights far from their initial values, so that a weight mapped to
    # the wrong place shows.
    rng = np.random.default_rng(1)
    for variable in embedder.backbone.weights:
        variable.assign(
            rng.normal(size=variable.shape, scale=0.3).astype("float32")
            + (1.0 if "gamma" in variable.path else 0.0)
        )
    model = ContrastiveModel(embedder, head=OrthogonalProjection())
    rotation = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    model.head.kernel.assign(rotation.astype("float32"))
    # Unknown words, spaces to normalise, full-width and accented letters,
    # SentencePiece's own space mark.
    texts = TEXTS + [
        "an unknown word",
        "the",
        "  the   sum\tof  ",
        "Ｆull CAFÉ café 中文",
        "▁the",
    ]
    ours = model.encode(texts)
    path = st.export(model, path=tmp_path / "model", nesting_dims=DIMS)
    reference = sentence_transformers.SentenceTransformer(path, device="cpu")
    ids = reference.tokenize(texts)["input_ids"].numpy()
    keras_ids = keras.ops.convert_to_numpy(
        embedder.preprocessor(texts)["token_ids"]
    )
    np.testing.assert_array_equal(ids, keras_ids[:, : ids.shape[1]])
    theirs = reference.encode(texts)
    assert np.abs(theirs - ours).max() <= 1e-4
    reference.truncate_dim = 8
    served = reference.encode(texts, normalize_embeddings=True)
    assert np.abs(served - _unit(ours[:, :8])).max() <= 1e-4
