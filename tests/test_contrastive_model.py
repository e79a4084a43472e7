"""keras_mrl.models.ContrastiveModel on a tiny KerasHub BERT and on an MLP."""

import keras
import numpy as np
import pytest

from conftest import jit_compile
from keras_mrl.layers.orthogonal_projection import OrthogonalProjection
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.models import ContrastiveModel

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("tensorflow")

from _tiny_bert import pairs  # noqa: E402
from _tiny_bert import tiny_embedder  # noqa: E402

DIMS = [8, 16]


def _loss():
    return MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)


def _compiled(embedder, jit, head=None):
    model = ContrastiveModel(embedder, head=head)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=_loss(), jit_compile=jit
    )
    return model


@pytest.fixture(scope="module")
def trained():
    """A tiny embedder fine-tuned on raw strings, with its data."""
    keras.utils.set_random_seed(0)
    embedder = tiny_embedder()
    queries, documents = pairs(32)
    before = np.asarray(embedder.encode_text(queries, verbose=0))
    model = _compiled(embedder, jit_compile())
    history = model.fit(
        (queries, documents), batch_size=8, epochs=3, verbose=0
    )
    return model, queries, documents, before, history.history["loss"]


def test_raw_string_fit_trains_the_embedder_itself(trained):
    model, queries, documents, before, losses = trained
    assert losses[-1] < losses[0]
    after = np.asarray(model.embedder.encode_text(queries, verbose=0))
    assert np.abs(after - before).max() > 1e-3
    stacked = model.predict((queries, documents), verbose=0)
    np.testing.assert_allclose(stacked[:, 0], after, atol=1e-5)


def test_branches_share_the_embedder_weights(trained):
    model = trained[0]
    own = {id(v) for v in model.embedder.weights}
    assert {id(v) for v in model.weights} == own
    assert len(model.trainable_weights) == len(
        model.embedder.trainable_weights
    )


def test_output_stacks_anchor_positive_and_negatives(trained):
    model, queries, documents = trained[:3]
    negatives = documents[1:] + documents[:1]
    stacked = model.predict((queries, documents, negatives), verbose=0)
    assert stacked.shape == (32, 3, 16)
    expected = [model.embedder.encode_text(t, verbose=0)
                for t in (queries, documents, negatives)]
    for k in range(3):
        np.testing.assert_allclose(stacked[:, k], expected[k], atol=1e-5)
    as_dict = model.predict(
        {"anchor": queries, "positive": documents,
         "negative_1": negatives},
        verbose=0,
    )
    np.testing.assert_allclose(as_dict, stacked, atol=1e-6)


def test_keras_file_round_trip_gives_the_same_vectors(trained, tmp_path):
    model, queries, documents = trained[:3]
    path = str(tmp_path / "contrastive.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ContrastiveModel)
    np.testing.assert_allclose(
        loaded.predict((queries, documents), verbose=0),
        model.predict((queries, documents), verbose=0),
        atol=1e-6,
    )


def test_embedder_preset_round_trip_gives_the_same_vectors(trained,
                                                           tmp_path):
    model, queries = trained[:2]
    model.embedder.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_hub.models.TextEmbedder.from_preset(
        str(tmp_path / "preset")
    )
    np.testing.assert_allclose(
        loaded.encode_text(queries, verbose=0),
        model.embedder.encode_text(queries, verbose=0),
        atol=1e-6,
    )


@pytest.mark.skipif(not jit_compile(), reason="XLA runs on TF and JAX only")
def test_jit_compiled_fit_matches_eager_fit():
    queries, documents = pairs(16)
    weights = None
    results = []
    for jit in (True, False):
        keras.utils.set_random_seed(1)
        embedder = tiny_embedder()
        if weights is None:
            weights = embedder.get_weights()
        embedder.set_weights(weights)
        model = _compiled(embedder, jit)
        dataset = model.make_dataset((queries, documents), batch_size=8)
        model.fit(dataset, epochs=1, verbose=0)
        assert model.jit_compile is jit
        results.append(embedder.encode_text(queries, verbose=0))
    np.testing.assert_allclose(results[0], results[1], atol=1e-4)


def test_any_keras_encoder_trains_on_tensors():
    rng = np.random.default_rng(0)
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16)])
    model = _compiled(encoder, jit_compile())
    anchors = rng.normal(size=(32, 6)).astype("float32")
    positives = anchors + 0.05 * rng.normal(size=(32, 6)).astype("float32")
    history = model.fit((anchors, positives), batch_size=16, epochs=5,
                        verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    stacked = model.predict((anchors, positives), verbose=0)
    np.testing.assert_allclose(
        stacked[:, 1], encoder.predict(positives, verbose=0), atol=1e-5
    )


def test_head_is_applied_after_the_embedder_and_saved(tmp_path):
    rng = np.random.default_rng(0)
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16)])
    x = rng.normal(size=(40, 6)).astype("float32")
    head = OrthogonalProjection()
    head.adapt(encoder.predict(x, verbose=0))
    model = _compiled(encoder, False, head=head)
    expected = x @ encoder.get_weights()[0] + encoder.get_weights()[1]
    expected = expected @ keras.ops.convert_to_numpy(head.kernel)
    np.testing.assert_allclose(model.encode(x), expected, atol=1e-4)
    np.testing.assert_allclose(
        model.predict((x, x), verbose=0)[:, 0], expected, atol=1e-4
    )
    path = str(tmp_path / "with_head.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.encode(x), expected, atol=1e-4)


def test_a_single_input_raises():
    model = ContrastiveModel(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    )
    with pytest.raises(ValueError, match="at least 2 inputs"):
        model((np.ones((2, 4)),))


def test_a_dict_without_positive_raises():
    model = ContrastiveModel(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    )
    with pytest.raises(ValueError, match="'anchor' and 'positive'"):
        model({"anchor": np.ones((2, 4)), "doc": np.ones((2, 4))})


def test_badly_numbered_negatives_raise():
    model = ContrastiveModel(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    )
    x = np.ones((2, 4))
    with pytest.raises(ValueError, match="negative_1"):
        model({"anchor": x, "positive": x, "negative_2": x})


def test_embedder_that_is_not_a_model_raises():
    with pytest.raises(TypeError, match="keras.Model"):
        ContrastiveModel(keras.layers.Dense(4))


def test_head_that_is_not_a_layer_raises():
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    with pytest.raises(TypeError, match="`head`"):
        ContrastiveModel(encoder, head="pca")


def test_labels_with_raw_strings_raise(trained):
    model, queries, documents = trained[:3]
    with pytest.raises(ValueError, match="no labels"):
        model.fit((queries, documents), np.zeros(32), verbose=0)


def test_positional_head_raises():
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    with pytest.raises(TypeError, match="keyword"):
        ContrastiveModel(encoder, None)

