"""keras_mrl with every KerasHub TextEmbedder family.

BERT, XLM-RoBERTa, Gemma3 (EmbeddingGemma's pooling inside the backbone)
and Qwen3, each a tiny random-weight embedder whose tokenizer is built
here (`_tiny_families`): raw-string `fit` of a `ContrastiveModel` with an
`OrthogonalProjection` head and `MatryoshkaLoss` (XLA on TensorFlow and
JAX), `encode` at a served width, `.keras` and preset round trips, every
pooling under length buckets, and the sentence-transformers export of the
families it writes. What does not depend on the backend (serialisation,
pooling and trimming, the export) runs once.
"""

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
# The families' trained fixtures: Gemma3 pools inside its backbone, as
# EmbeddingGemma does; the others pool as their embedder does by default.
POOLING = {"gemma3": "backbone"}
# Exported to sentence-transformers: the families `export` writes.
EXPORTED = ("bert", "xlm_roberta")


def _loss():
    return MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)


def _fresh(model):
    """`model`, its SentencePiece tokenizer (XLM-RoBERTa, Gemma3) made
    again: `keras.utils.set_random_seed`, which every test calls first,
    clears TensorFlow's kernels and with them the tokenizer's resource,
    which a new `tf.data` pipeline then misses (a KerasHub embedder's own
    `predict` fails the same way)."""
    tokenizer = model.embedder.preprocessor.tokenizer
    if isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer):
        tokenizer.set_proto(tokenizer.proto)
    return model


def _eager(model, texts):
    """The embedder and head on full padding, outside `encode`."""
    x = model.embedder.preprocessor(texts)
    embeddings = model.embedder(x, training=False)
    return keras.ops.convert_to_numpy(model.head(embeddings))


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request):
    """`(family, model, weights before fit, losses, encoded texts)`: a
    ContrastiveModel with an orthogonal head, fit 2 steps on raw strings."""
    family = request.param
    keras.utils.set_random_seed(0)
    embedder = tiny_family_embedder(family, pooling_mode=POOLING.get(family))
    model = ContrastiveModel(embedder, head=OrthogonalProjection())
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=_loss(),
        jit_compile=jit_compile(),
    )
    before = [keras.ops.convert_to_numpy(v) for v in embedder.weights]
    history = model.fit((QUERIES, DOCUMENTS), batch_size=4, verbose=0)
    encoded = model.encode(QUERIES + DOCUMENTS)
    return family, model, before, history.history["loss"], encoded


def test_raw_string_fit_trains_the_embedder_and_the_head(trained):
    family, model, before, losses, _ = trained
    assert type(model.embedder).__name__ == EMBEDDERS[family]
    assert model.jit_compile is jit_compile()
    assert np.isfinite(losses).all()
    after = [keras.ops.convert_to_numpy(v) for v in model.embedder.weights]
    assert max(np.abs(a - b).max() for a, b in zip(after, before)) > 1e-4
    kernel = keras.ops.convert_to_numpy(model.head.kernel)
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(16), atol=1e-4)


def test_encode_gives_the_full_padding_vectors_and_unit_prefixes(trained):
    _, model, _, _, encoded = trained
    assert encoded.shape == (16, 16)
    np.testing.assert_allclose(
        encoded[:8], _eager(model, QUERIES), atol=1e-5
    )
    # The batch shape of the fixture's `encode`: nothing is compiled again.
    served = _fresh(model).encode(QUERIES + DOCUMENTS, dim=8)
    assert served.shape == (16, 8)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1, atol=1e-5)
    prefix = encoded[:, :8]
    np.testing.assert_allclose(
        served,
        prefix / np.linalg.norm(prefix, axis=1, keepdims=True),
        atol=1e-5,
    )


def test_retrieval_metrics_read_the_encoded_widths(trained):
    encoded = trained[4]
    labels = np.arange(8)
    results = keras_mrl.evaluation.retrieval_metrics(
        encoded[:8],
        query_labels=labels,
        corpus_embeddings=encoded[8:],
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
    family, model = trained[:2]
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.embedder).__name__ == EMBEDDERS[family]
    assert isinstance(loaded.head, OrthogonalProjection)
    np.testing.assert_allclose(
        loaded.encode(QUERIES), trained[4][:8], atol=1e-6
    )


@pytest.mark.once
def test_embedder_preset_round_trip_gives_the_same_vectors(trained, tmp_path):
    family, model = trained[:2]
    model.embedder.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_hub.models.TextEmbedder.from_preset(
        str(tmp_path / "preset")
    )
    assert type(loaded).__name__ == EMBEDDERS[family]
    x = model.embedder.preprocessor(QUERIES)
    y = loaded.preprocessor(QUERIES)
    for key in x:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(y[key]),
            keras.ops.convert_to_numpy(x[key]),
        )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(model.embedder(x)),
        atol=1e-6,
    )


@pytest.mark.once
@pytest.mark.parametrize(
    "family, pooling_mode",
    [(family, mode) for family in FAMILIES for mode in POOLINGS[family]],
)
def test_every_pooling_is_exact_under_length_buckets(family, pooling_mode):
    # Right padding cut after the last used column: mean, max, cls and
    # last-token pooling (which finds the last unmasked token) all see
    # the tokens they saw at full padding.
    embedder = tiny_family_embedder(family, pooling_mode=pooling_mode)
    x = embedder.preprocessor(QUERIES[:4])
    cut = trim(x, resolve_buckets([4, 6], 8))
    assert cut["token_ids"].shape[1] < 8
    full = keras.ops.convert_to_numpy(embedder(x))
    bucketed = keras.ops.convert_to_numpy(embedder(cut))
    np.testing.assert_allclose(bucketed, full, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1, atol=1e-5)


@pytest.mark.once
@pytest.mark.parametrize("family", FAMILIES)
def test_embedder_normalisation_leaves_the_matryoshka_loss_unchanged(family):
    # The loss normalises every prefix (cosine): the embedder's own
    # normalisation of the full vector is a positive scale per row.
    normalised = tiny_family_embedder(family)
    raw = tiny_family_embedder(family, normalize=False)
    raw.set_weights(normalised.get_weights())
    x = [normalised.preprocessor(t) for t in (QUERIES, DOCUMENTS)]
    stacked = [
        keras.ops.stack([e(x[0]), e(x[1])], axis=1) for e in (normalised, raw)
    ]
    norms = np.linalg.norm(keras.ops.convert_to_numpy(stacked[1]), axis=-1)
    assert np.abs(norms - 1).max() > 1e-2
    losses = [float(_loss()(None, s)) for s in stacked]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


@pytest.mark.once
@pytest.mark.parametrize("family", ["gemma3", "qwen3"])
def test_depth_sampling_refuses_decoder_families(family):
    embedder = tiny_family_embedder(family)
    with pytest.raises(TypeError, match="XLMRobertaTextEmbedder"):
        ContrastiveModel(embedder, depth_sampling=DepthSampling())


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
    head = OrthogonalProjection()
    model = ContrastiveModel(embedder, head=head)
    texts = QUERIES + DOCUMENTS + ["an unknown word", "the"]
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
    assert np.abs(served - model.encode(texts, dim=8)).max() <= 1e-4
