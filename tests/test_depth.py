"""2D Matryoshka: ContrastiveModel(depth_sampling=DepthSampling(...)) and
truncate_layers, on tiny KerasHub BERT (and XLM-RoBERTa) embedders."""

import keras
import numpy as np
import pytest
from conftest import jit_compile

from keras_mrl.layers import OrthogonalProjection
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.models import ContrastiveModel
from keras_mrl.models import DepthSampling
from keras_mrl.models import truncate_layers

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("tensorflow")

from _tiny_bert import pairs  # noqa: E402
from _tiny_bert import tiny_embedder  # noqa: E402

DIMS = [4, 8, 16]
FAMILIES = "BertTextEmbedder, keras_hub.models.XLMRobertaTextEmbedder"


def _loss():
    return MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _ids(embedder, texts):
    """The preprocessed batch of `texts`, as numpy arrays."""
    return {k: np.asarray(v) for k, v in embedder.preprocessor(texts).items()}


def _normalize(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _scores(stacked, scale):
    """`scale * cosine` of each anchor with every positive and negative."""
    y = _normalize(stacked)
    candidates = np.concatenate([y[:, k] for k in range(1, y.shape[1])])
    return scale * y[:, 0] @ candidates.T


def _matryoshka_mnrl(stacked):
    """MatryoshkaLoss(MNRL) over DIMS per example, in numpy."""
    total = 0.0
    for dim in DIMS:
        log_p = _log_softmax(_scores(stacked[..., :dim], 20.0))
        total = total - np.diag(log_p)
    return total


def _similarity_kl(full, shallow, temperature):
    """KL(full || shallow) per anchor, of softmax(cosine / temperature)."""
    p = _log_softmax(_scores(full, 1.0 / temperature))
    q = _log_softmax(_scores(shallow, 1.0 / temperature))
    return np.sum(np.exp(p) * (p - q), axis=1)


def _pooled_layer(embedder, ids, k):
    """Mean-pooled, normalised output of layer k, read off the full model."""
    backbone = embedder.backbone
    layer = backbone.transformer_layers[k - 1]
    sequence = _np(keras.Model(backbone.input, layer.output)(ids))
    mask = ids["padding_mask"][..., None].astype("float64")
    return _normalize((sequence * mask).sum(1) / mask.sum(1))


class _RecordDepth(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.depths = []

    def on_train_batch_end(self, batch, logs=None):
        depth = self.model.depth_sampling.depth
        self.depths.append(int(_np(depth)))


@pytest.fixture(scope="module")
def trained():
    """A 4-layer embedder trained 50 compiled steps with depth sampling."""
    keras.utils.set_random_seed(0)
    embedder = tiny_embedder(num_layers=4)
    queries, documents = pairs(100)
    model = ContrastiveModel(
        embedder, depth_sampling=DepthSampling(0.5, seed=3)
    )
    # Plain SGD: the cheapest update, in the compiled step and eagerly.
    model.compile(optimizer=keras.optimizers.SGD(1e-2), loss=_loss())
    branches = (_ids(embedder, queries), _ids(embedder, documents))
    record = _RecordDepth()
    model.fit(branches, batch_size=2, epochs=1, verbose=0, callbacks=[record])
    return model, branches, record.depths


def test_fifty_compiled_steps_train_every_shallower_depth(trained):
    model, _, depths = trained
    assert len(depths) == 50
    # A depth drawn in Python while tracing would be the same every step.
    assert set(depths) == {1, 2, 3}


def test_training_adds_the_compiled_loss_of_the_drawn_depth_by_hand(rng):
    embedder = tiny_embedder(num_layers=3)
    queries, documents = pairs(4)
    negatives = documents[2:] + documents[:2]
    branches = tuple(_ids(embedder, t) for t in (queries, documents, negatives))
    head = OrthogonalProjection()
    head.adapt(rng.normal(size=(64, 16)) * np.linspace(2.0, 0.1, 16))
    sampling = DepthSampling(0.5, kl_weight=0.25, kl_temperature=0.1, seed=7)
    model = ContrastiveModel(embedder, head=head, depth_sampling=sampling)
    model.compile(optimizer="adam", loss=_loss())

    kernel = _np(head.kernel).astype("float64")

    def stacked(model_at_depth):
        return np.stack(
            [_np(model_at_depth(b)) @ kernel for b in branches], axis=1
        )

    full = stacked(embedder)
    depths = []
    for weights in (None, np.array([1.0, 0.0, 2.0, 0.5])):
        y_pred = model(branches, training=True)
        total = model.compute_loss(branches, None, y_pred, weights)
        depth = int(_np(sampling.depth))
        depths.append(depth)
        np.testing.assert_allclose(_np(y_pred), full, atol=1e-5)
        shallow = stacked(truncate_layers(embedder, num_layers=depth))
        per_example = (
            _matryoshka_mnrl(full)
            + 0.5 * _matryoshka_mnrl(shallow)
            + 0.25 * _similarity_kl(full, shallow, 0.1)
        )
        if weights is not None:
            per_example = per_example * weights
        np.testing.assert_allclose(
            float(_np(total)), per_example.mean(), rtol=1e-4
        )
    assert set(depths) <= {1, 2}
    # Outside training there is only the full depth's loss.
    y_eval = model(branches, training=False)
    plain = model.compute_loss(branches, None, y_eval, training=False)
    np.testing.assert_allclose(
        float(_np(plain)), _matryoshka_mnrl(full).mean(), rtol=1e-4
    )


@pytest.mark.parametrize(
    "pooling_mode, normalize", [("mean", True), ("cls", False), ("max", True)]
)
def test_training_full_depth_is_the_embedder_output(pooling_mode, normalize):
    embedder = tiny_embedder(
        num_layers=2, pooling_mode=pooling_mode, normalize=normalize
    )
    queries, documents = pairs(4)
    branches = (_ids(embedder, queries), _ids(embedder, documents))
    model = ContrastiveModel(embedder, depth_sampling=DepthSampling(seed=0))
    np.testing.assert_allclose(
        _np(model(branches, training=True)),
        _np(model(branches, training=False)),
        atol=1e-6,
    )


def test_mixed_precision_embeds_in_half_and_sums_the_loss_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    embedder = tiny_embedder(num_layers=2)
    queries, documents = pairs(4)
    branches = (_ids(embedder, queries), _ids(embedder, documents))
    model = ContrastiveModel(
        embedder, depth_sampling=DepthSampling(kl_weight=0.5, seed=0)
    )
    model.compile(optimizer="adam", loss=_loss())
    y_pred = model(branches, training=True)
    assert keras.backend.standardize_dtype(y_pred.dtype) == "bfloat16"
    with_depth = model.compute_loss(branches, None, y_pred)
    assert keras.backend.standardize_dtype(with_depth.dtype) == "float32"
    y_eval = model(branches, training=False)
    full = model.compute_loss(branches, None, y_eval, training=False)
    # The shallow depth's loss is as large as the full depth's, give or
    # take: it was added, in float32, not lost to a half-precision sum.
    assert 1.5 < float(_np(with_depth)) / float(_np(full)) < 2.5


def test_keras_file_round_trip_keeps_the_depth_sampling(trained, tmp_path):
    model, branches, _ = trained
    path = str(tmp_path / "depth.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.depth_sampling, DepthSampling)
    assert (
        loaded.depth_sampling.get_config() == model.depth_sampling.get_config()
    )
    for ours, theirs in zip(
        model.depth_sampling.weights, loaded.depth_sampling.weights
    ):
        np.testing.assert_array_equal(_np(ours), _np(theirs))
    np.testing.assert_allclose(
        _np(loaded(branches, training=False)),
        _np(model(branches, training=False)),
        atol=1e-6,
    )


def test_get_config_round_trip(trained):
    sampling = DepthSampling(
        2.0, kl_weight=0.5, kl_temperature=0.2, seed=4, name="depths"
    )
    again = DepthSampling.from_config(sampling.get_config())
    assert (again.weight, again.kl_weight, again.kl_temperature) == (
        2.0,
        0.5,
        0.2,
    )
    assert (again.seed, again.name) == (4, "depths")
    model = trained[0]
    rebuilt = ContrastiveModel.from_config(model.get_config())
    assert (
        rebuilt.depth_sampling.get_config() == model.depth_sampling.get_config()
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"weight": -1.0}, ValueError, "weight=-1.0"),
        ({"weight": "1"}, TypeError, "`weight` must be a number"),
        ({"weight": 0.0}, ValueError, "weight=0 and kl_weight=0"),
        ({"kl_weight": float("nan")}, ValueError, "kl_weight=nan"),
        ({"kl_temperature": 0.0}, ValueError, "`kl_temperature`.*got 0.0"),
        ({"seed": 1.5}, TypeError, "`seed` must be None or an int, got 1.5"),
    ],
)
def test_bad_depth_sampling_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        DepthSampling(**kwargs)


def test_depth_sampling_with_cached_negatives_raises():
    with pytest.raises(ValueError, match="do not compose"):
        ContrastiveModel(
            tiny_embedder(num_layers=2),
            depth_sampling=DepthSampling(),
            mini_batch_size=4,
        )


def test_positional_kl_weight_raises():
    with pytest.raises(TypeError, match="positional"):
        DepthSampling(1.0, 0.5)


def test_the_layer_returns_a_shallower_depth_in_training_only():
    depths = [
        {"x": np.full((2, 3), float(k)), "y": np.full((2,), float(k))}
        for k in (1, 2, 3)
    ]
    sampling = DepthSampling(seed=5)
    full = sampling(depths, training=False)
    np.testing.assert_array_equal(_np(full["x"]), depths[2]["x"])
    drawn = []
    for _ in range(12):
        out = sampling(depths, training=True)
        k = int(_np(sampling.depth))
        np.testing.assert_array_equal(_np(out["x"]), depths[k - 1]["x"])
        np.testing.assert_array_equal(_np(out["y"]), depths[k - 1]["y"])
        drawn.append(k)
    assert set(drawn) == {1, 2}


def test_fewer_than_two_depths_raise():
    with pytest.raises(ValueError, match="got 1 depth"):
        DepthSampling()([np.zeros((2, 3))], training=True)


def test_depth_sampling_that_is_not_a_depth_sampling_raises():
    with pytest.raises(TypeError, match="DepthSampling, got float"):
        ContrastiveModel(tiny_embedder(num_layers=2), depth_sampling=0.5)


def _headless_embedder():
    """A KerasHub text embedder whose backbone shows no layers."""
    inputs = {"token_ids": keras.Input((None,), dtype="int32")}
    embedding = keras.layers.Embedding(10, 4)(inputs["token_ids"])
    backbone = keras.Model(inputs, keras.ops.mean(embedding, axis=1))

    class Pooled(keras_hub.models.TextEmbedder):
        def __init__(self, backbone):
            self.backbone = backbone
            super().__init__(inputs=backbone.input, outputs=backbone.output)

    return Pooled(backbone)


@pytest.mark.parametrize(
    "make", [_headless_embedder, lambda: keras.Sequential([keras.Input((3,))])]
)
def test_an_embedder_without_layers_raises_naming_the_families(make):
    embedder = make()
    with pytest.raises(TypeError, match=FAMILIES):
        ContrastiveModel(embedder, depth_sampling=DepthSampling())
    with pytest.raises(TypeError, match=FAMILIES):
        truncate_layers(embedder, num_layers=1)


def test_a_one_layer_embedder_raises():
    with pytest.raises(ValueError, match="num_layers=1: it needs at least 2"):
        ContrastiveModel(tiny_embedder(), depth_sampling=DepthSampling())


@pytest.mark.parametrize(
    "num_layers, error, match",
    [
        (0, ValueError, "num_layers=0"),
        (4, ValueError, "`num_layers`=4 exceeds the 3 transformer layers"),
        (2.0, TypeError, "`num_layers` must be an int, got 2.0"),
    ],
)
def test_bad_num_layers_raise(num_layers, error, match):
    with pytest.raises(error, match=match):
        truncate_layers(tiny_embedder(num_layers=3), num_layers=num_layers)


def test_positional_num_layers_raises():
    with pytest.raises(TypeError, match="positional"):
        truncate_layers(tiny_embedder(num_layers=2), 1)


@pytest.fixture(scope="module")
def three_layers():
    keras.utils.set_random_seed(1)
    embedder = tiny_embedder(num_layers=3)
    queries, _ = pairs(4)
    return embedder, queries, _ids(embedder, queries)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_truncated_model_is_the_first_k_layers(three_layers, k):
    embedder, queries, ids = three_layers
    cut = truncate_layers(embedder, num_layers=k)
    assert type(cut) is type(embedder)
    assert cut.backbone.num_layers == k
    assert cut.preprocessor is embedder.preprocessor
    assert not {id(v) for v in cut.weights} & {id(v) for v in embedder.weights}
    vectors = _np(cut(ids))
    assert vectors.shape == (4, 16)
    np.testing.assert_allclose(
        vectors, _pooled_layer(embedder, ids, k), atol=1e-5
    )
    np.testing.assert_allclose(
        cut.encode_text(queries, verbose=0), vectors, atol=1e-5
    )


def test_truncated_model_saves_and_loads(three_layers, tmp_path):
    embedder, queries, _ = three_layers
    cut = truncate_layers(embedder, num_layers=2)
    expected = cut.encode_text(queries, verbose=0)
    path = str(tmp_path / "cut.keras")
    cut.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.backbone.num_layers == 2
    np.testing.assert_allclose(
        loaded.encode_text(queries, verbose=0), expected, atol=1e-6
    )
    cut.save_to_preset(str(tmp_path / "preset"))
    preset = keras_hub.models.TextEmbedder.from_preset(str(tmp_path / "preset"))
    assert preset.backbone.num_layers == 2
    np.testing.assert_allclose(
        preset.encode_text(queries, verbose=0), expected, atol=1e-6
    )


@pytest.mark.skipif(not jit_compile(), reason="XLA runs on TF and JAX only")
def test_truncated_model_compiles_with_xla(three_layers):
    embedder, queries, ids = three_layers
    cut = truncate_layers(embedder, num_layers=2)
    cut.compile(jit_compile=True)
    np.testing.assert_allclose(
        cut.predict(queries, verbose=0),
        _pooled_layer(embedder, ids, 2),
        atol=1e-5,
    )
    assert cut.jit_compile is True


def test_xlm_roberta_embedder_trains_and_truncates_by_depth():
    # The shapes of the tiny BERT's tests (width 16, 12 tokens, batches
    # of 4), whose programs JAX has compiled already.
    backbone = keras_hub.models.XLMRobertaBackbone(
        vocabulary_size=20,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=12,
        dropout=0.0,
    )
    embedder = keras_hub.models.XLMRobertaTextEmbedder(backbone)
    rng = np.random.default_rng(0)
    mask = np.arange(12) < np.array([[12], [8], [4], [2]])

    def batch():
        return {
            "token_ids": rng.integers(3, 20, size=(4, 12)) * mask,
            "padding_mask": mask,
        }

    branches = (batch(), batch())
    model = ContrastiveModel(embedder, depth_sampling=DepthSampling(seed=0))
    model.compile(optimizer="adam", loss=_loss().loss)
    y_pred = model(branches, training=True)
    total = float(_np(model.compute_loss(branches, None, y_pred)))
    np.testing.assert_allclose(
        _np(y_pred), _np(model(branches, training=False)), atol=1e-6
    )
    shallow = np.stack(
        [_np(truncate_layers(embedder, num_layers=1)(b)) for b in branches],
        axis=1,
    )
    np.testing.assert_allclose(
        shallow[:, 0], _pooled_layer(embedder, branches[0], 1), atol=1e-5
    )
    log_full = _log_softmax(_scores(_np(y_pred), 20.0))
    log_shallow = _log_softmax(_scores(shallow, 20.0))
    expected = -np.mean(np.diag(log_full) + np.diag(log_shallow))
    np.testing.assert_allclose(total, expected, rtol=1e-4)
