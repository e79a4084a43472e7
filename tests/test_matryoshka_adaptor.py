"""MatryoshkaAdaptor and its similarity-preservation loss."""

import os

import keras
import numpy as np
import pytest
from component_test import JIT
from component_test import run_loss_test

from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.losses import SimilarityPreservationLoss
from keras_mrl.models._matryoshka_adaptor import MatryoshkaAdaptor


def _cosines(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def _reference(target, pred, dims, top_k, topk_weight, pairwise_weight):
    """The per-example loss, written from the formula, one row at a time."""
    full = _cosines(target)
    total = np.zeros(len(target))
    for m in dims:
        gap = np.abs(full - _cosines(pred[:, :m]))
        for i in range(len(target)):
            others = np.delete(np.arange(len(target)), i)
            near = others[np.argsort(-full[i, others])[:top_k]]
            total[i] += topk_weight * gap[i, near].mean()
            total[i] += pairwise_weight * gap[i].mean()
    return total


def _convert(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("batch, top_k", [(7, 3), (4, 6)])
def test_loss_matches_the_numpy_reference(rng, batch, top_k):
    target = rng.normal(size=(batch, 8)).astype("float32")
    pred = rng.normal(size=(batch, 8)).astype("float32")
    inner = SimilarityPreservationLoss(
        top_k, topk_weight=0.7, pairwise_weight=0.3
    )
    nested = MatryoshkaLoss(inner, nesting_dims=[2, 4, 8])
    expected = _reference(target, pred, [2, 4, 8], top_k, 0.7, 0.3)
    np.testing.assert_allclose(
        _convert(nested.call(target, pred)), expected, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        float(nested(target, pred)), expected.mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        _convert(inner.call(target, pred)),
        _reference(target, pred, [8], top_k, 0.7, 0.3),
        rtol=1e-5,
        atol=1e-6,
    )


def test_loss_of_the_input_itself_at_full_width_is_zero(rng):
    x = rng.normal(size=(6, 8)).astype("float32")
    assert float(SimilarityPreservationLoss(top_k=2)(x, x)) < 1e-6


def test_loss_runs_in_a_compiled_fit_in_mixed_precision_and_saves(rng):
    x = rng.normal(size=(16, 8)).astype("float32")

    def model():
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])

    loss = MatryoshkaLoss(
        SimilarityPreservationLoss(3, pairwise_weight=0.5),
        nesting_dims=[4, 8],
    )
    run_loss_test(loss, model, x, x)


# --- The adaptor ---


def _spread_spectrum(rng, n=512, dim=32):
    """Unit vectors with a decaying spectrum, randomly rotated: every
    coordinate holds a share of every direction, so prefixes are poor."""
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    x = rng.normal(size=(n, dim)) * np.exp(-np.arange(dim) / 5.0)
    x = x @ rotation.T
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def _neighbours(x, k):
    scores = _cosines(x)
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :k]


def _overlap(x, width, reference, k=10):
    found = _neighbours(x[:, :width], k)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(found, reference)])


def _compiled(adaptor, learning_rate=1e-3):
    adaptor.compile(
        optimizer=keras.optimizers.Adam(learning_rate), jit_compile=JIT
    )
    return adaptor


def test_adaptor_is_the_identity_before_training(rng):
    x = rng.normal(size=(10, 16)).astype("float32")
    adaptor = MatryoshkaAdaptor(16, nesting_dims=[4, 16])
    np.testing.assert_array_equal(_convert(adaptor(x)), x)
    pair = _convert(adaptor((x, 2 * x)))
    assert pair.shape == (10, 2, 16)
    np.testing.assert_array_equal(pair[:, 1], 2 * x)


def test_unsupervised_fit_lowers_the_loss(rng):
    x = _spread_spectrum(rng, n=256)
    adaptor = _compiled(
        MatryoshkaAdaptor(32, nesting_dims=[4, 8, 32], top_k=5), 3e-3
    )
    before = adaptor.evaluate(x, batch_size=128, verbose=0)
    adaptor.fit(x, batch_size=128, epochs=10, verbose=0)
    after = adaptor.evaluate(x, batch_size=128, verbose=0)
    assert after < 0.8 * before, (before, after)


def test_unsupervised_fit_improves_the_neighbours_of_small_prefixes(rng):
    x = _spread_spectrum(rng)
    reference = _neighbours(x, 10)
    adaptor = _compiled(
        MatryoshkaAdaptor(32, nesting_dims=[4, 8, 16, 32], top_k=10), 3e-3
    )
    adaptor.fit(x, batch_size=128, epochs=30, verbose=0)
    adapted = adaptor.predict(x, verbose=0)
    for width in (4, 8):
        base, new = (
            _overlap(x, width, reference),
            _overlap(adapted, width, reference),
        )
        assert new > base + 0.2, (width, base, new)


def test_unsupervised_objective_is_the_nested_loss_plus_reconstruction(rng):
    x = rng.normal(size=(12, 8)).astype("float32")
    adaptor = _compiled(
        MatryoshkaAdaptor(
            8, nesting_dims=[2, 8], top_k=3, reconstruction_weight=2.0
        )
    )
    kernel = rng.normal(scale=0.3, size=(8, 8)).astype("float32")
    adaptor.residual.kernel.assign(kernel)
    adapted = _convert(adaptor(x))
    change = ((adapted - x) ** 2).sum(1) / (x**2).sum(1)
    expected = _reference(x, adapted, [2, 8], 3, 1.0, 1.0).mean()
    expected += 2.0 * change.mean()
    value = adaptor.evaluate(x, batch_size=12, verbose=0)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_supervised_objective_is_ranking_plus_preservation(rng):
    queries = rng.normal(size=(8, 8)).astype("float32")
    documents = queries + rng.normal(scale=0.5, size=(8, 8)).astype("float32")
    adaptor = _compiled(MatryoshkaAdaptor(8, nesting_dims=[4, 8], top_k=3))
    kernel = rng.normal(scale=0.3, size=(8, 8)).astype("float32")
    adaptor.residual.kernel.assign(kernel)
    stacked = _convert(adaptor((queries, documents)))
    ranking = MatryoshkaLoss(
        MultipleNegativesRankingLoss(), nesting_dims=[4, 8]
    )
    both = np.concatenate([queries, documents])
    adapted = np.concatenate([stacked[:, 0], stacked[:, 1]])
    expected = (
        float(ranking(None, stacked))
        + _reference(both, adapted, [4, 8], 3, 1.0, 1.0).mean()
    )
    value = adaptor.evaluate((queries, documents), batch_size=8, verbose=0)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_supervised_fit_lowers_the_ranking_loss(rng):
    queries = _spread_spectrum(rng, n=256)
    documents = queries + 0.05 * rng.normal(size=queries.shape).astype(
        "float32"
    )
    adaptor = _compiled(
        MatryoshkaAdaptor(
            32, nesting_dims=[4, 32], topk_weight=0.0, pairwise_weight=0.0
        ),
        3e-3,
    )
    before = adaptor.evaluate((queries, documents), batch_size=64, verbose=0)
    adaptor.fit((queries, documents), batch_size=64, epochs=5, verbose=0)
    after = adaptor.evaluate((queries, documents), batch_size=64, verbose=0)
    assert after < 0.9 * before, (before, after)


def test_fit_in_mixed_precision_keeps_float32_weights(rng):
    x = _spread_spectrum(rng, n=64)
    keras.config.set_dtype_policy("mixed_bfloat16")
    adaptor = _compiled(MatryoshkaAdaptor(32, nesting_dims=[8, 32], top_k=4))
    history = adaptor.fit(x, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(w.dtype == "float32" for w in adaptor.weights)


def test_save_and_load_keep_the_weights_config_and_training(rng, tmp_path):
    x = _spread_spectrum(rng, n=64)
    adaptor = _compiled(
        MatryoshkaAdaptor(
            32,
            nesting_dims=[8, 32],
            hidden_dim=16,
            activation="gelu",
            top_k=4,
            topk_weight=0.5,
            pairwise_weight=2.0,
            reconstruction_weight=0.1,
            scale=10.0,
        )
    )
    adaptor.fit(x, batch_size=32, epochs=2, verbose=0)
    path = os.path.join(tmp_path, "adaptor.keras")
    adaptor.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is MatryoshkaAdaptor
    assert restored.get_config() == adaptor.get_config()
    np.testing.assert_allclose(
        restored.predict(x, verbose=0),
        adaptor.predict(x, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        restored.evaluate(x, batch_size=32, verbose=0),
        adaptor.evaluate(x, batch_size=32, verbose=0),
        rtol=1e-5,
    )
    restored.fit(x, batch_size=32, epochs=1, verbose=0)


def test_config_defaults():
    config = MatryoshkaAdaptor(48).get_config()
    assert config["nesting_dims"] == [8, 16, 32, 48]
    assert config["hidden_dim"] == 48
    assert MatryoshkaAdaptor.from_config(config).get_config() == config


# --- Errors ---


def test_arguments_after_the_first_are_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        MatryoshkaAdaptor(16, [4, 16])
    with pytest.raises(TypeError, match="positional argument"):
        SimilarityPreservationLoss(10, 1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"nesting_dims": [4, 32]}, ValueError, "wider than"),
        ({"nesting_dims": [8, 4]}, ValueError, "strictly increasing"),
        ({"top_k": 0}, ValueError, "top_k"),
        ({"hidden_dim": 2.5}, TypeError, "hidden_dim"),
        ({"topk_weight": -1.0}, ValueError, "topk_weight"),
        ({"pairwise_weight": float("nan")}, ValueError, "pairwise_weight"),
        ({"reconstruction_weight": True}, TypeError, "reconstruction_weight"),
        ({"scale": 0.0}, ValueError, "scale"),
        ({"activation": "no_such_activation"}, ValueError, "activation"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        MatryoshkaAdaptor(16, **kwargs)


def test_loss_without_any_term_raises():
    with pytest.raises(ValueError, match="train nothing"):
        SimilarityPreservationLoss(topk_weight=0.0, pairwise_weight=0.0)


def test_loss_of_non_embeddings_raises(rng):
    x = rng.normal(size=(4, 2, 8)).astype("float32")
    with pytest.raises(ValueError, match=r"\(batch, D\) embeddings"):
        SimilarityPreservationLoss()(x, x)


def test_loss_without_targets_raises(rng):
    x = rng.normal(size=(4, 8)).astype("float32")
    with pytest.raises(ValueError, match="needs targets"):
        SimilarityPreservationLoss()(None, x)


def test_output_shapes():
    adaptor = MatryoshkaAdaptor(8)
    assert adaptor.compute_output_shape((None, 8)) == (None, 8)
    assert adaptor.compute_output_shape(((4, 8), (4, 8))) == (4, 2, 8)
    inputs = keras.Input((8,))
    assert tuple(adaptor(inputs).shape) == (None, 8)


def test_compile_with_a_loss_raises():
    with pytest.raises(ValueError, match="without `loss`"):
        MatryoshkaAdaptor(8).compile(optimizer="adam", loss="mse")


def test_fit_with_labels_raises(rng):
    x = rng.normal(size=(8, 8)).astype("float32")
    adaptor = _compiled(MatryoshkaAdaptor(8))
    with pytest.raises(ValueError, match="needs no labels"):
        adaptor.fit(x, x, verbose=0)


def test_unsupervised_fit_without_a_preservation_term_raises(rng):
    x = rng.normal(size=(8, 8)).astype("float32")
    adaptor = _compiled(
        MatryoshkaAdaptor(8, topk_weight=0.0, pairwise_weight=0.0)
    )
    with pytest.raises(ValueError, match="nothing to train"):
        adaptor.fit(x, verbose=0)


def test_inputs_of_the_wrong_shape_raise(rng):
    adaptor = MatryoshkaAdaptor(8)
    with pytest.raises(ValueError, match=r"shape \(batch, 8\)"):
        adaptor(rng.normal(size=(4, 6)).astype("float32"))
    x = rng.normal(size=(4, 8)).astype("float32")
    with pytest.raises(ValueError, match="got 3 inputs"):
        adaptor((x, x, x))


def _with_bad_rows(rng, rows, n=16, dim=8):
    x = rng.normal(size=(n, dim)).astype("float32")
    for i, row in enumerate(rows):
        x[row, i % dim] = (np.nan, np.inf, -np.inf)[i % 3]
    return x


@pytest.mark.parametrize("tensor", [False, True])
def test_fit_on_non_finite_embeddings_raises_counting_the_rows(rng, tensor):
    x = _with_bad_rows(rng, [2, 5, 11])
    adaptor = _compiled(MatryoshkaAdaptor(8, nesting_dims=[4, 8], top_k=3))
    weights = [w.copy() for w in adaptor.get_weights()]
    inputs = keras.ops.convert_to_tensor(x) if tensor else x
    with pytest.raises(
        ValueError,
        match=r"`x` has 3 of 16 rows holding NaN "
        r"or infinite values \(rows 2, 5, 11\)",
    ):
        adaptor.fit(inputs, batch_size=8, verbose=0)
    for before, after in zip(weights, adaptor.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_fit_on_non_finite_pairs_raises_naming_the_branch(rng):
    queries = rng.normal(size=(16, 8)).astype("float32")
    documents = _with_bad_rows(rng, [7])
    adaptor = _compiled(MatryoshkaAdaptor(8, nesting_dims=[4, 8], top_k=3))
    with pytest.raises(ValueError, match=r"`x\[1\]` has 1 of 16 rows"):
        adaptor.fit((queries, documents), batch_size=8, verbose=0)


def test_non_finite_validation_data_raises(rng):
    x = rng.normal(size=(16, 8)).astype("float32")
    adaptor = _compiled(MatryoshkaAdaptor(8, nesting_dims=[4, 8], top_k=3))
    with pytest.raises(ValueError, match=r"`validation_data` has 2 of 16"):
        adaptor.fit(
            x,
            validation_data=(_with_bad_rows(rng, [0, 1]),),
            batch_size=8,
            verbose=0,
        )


def test_evaluate_and_predict_on_non_finite_embeddings_raise(rng):
    x = _with_bad_rows(rng, [4, 9])
    adaptor = _compiled(MatryoshkaAdaptor(8, nesting_dims=[4, 8], top_k=3))
    with pytest.raises(ValueError, match="`x` has 2 of 16 rows"):
        adaptor.evaluate(x, verbose=0)
    with pytest.raises(ValueError, match="`x` has 2 of 16 rows"):
        adaptor.predict(x, verbose=0)
