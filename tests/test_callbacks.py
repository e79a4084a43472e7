import warnings

import keras
import numpy as np
import pytest

from keras_mrl.callbacks import RetrievalEvaluator
from keras_mrl.evaluation import retrieval_metrics

JIT = keras.backend.backend() in ("tensorflow", "jax")
DIMS = [4, 8]


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    centers = rng.normal(size=(4, 12))
    x = centers[labels] + 0.8 * rng.normal(size=(n, 12))
    return x.astype("float32"), labels


def _compiled(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        jit_compile=True if JIT else "auto",
    )
    return model


def _expected_keys(k):
    return {
        f"val_{name}@{dim}"
        for dim in DIMS
        for name in ("top1", f"recall@{k}", f"map@{k}", f"ndcg@{k}")
    }


def _assert_last_epoch_matches(history, results):
    for dim, metrics in results.items():
        for name, value in metrics.items():
            if name == "queries_without_relevant":
                continue
            np.testing.assert_allclose(
                history[f"val_{name}@{dim}"][-1], value, rtol=1e-6
            )


def test_logs_reach_history_and_match_retrieval_metrics():
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = _compiled(
        keras.Sequential([keras.Input((12,)), keras.layers.Dense(8)])
    )
    evaluator = RetrievalEvaluator(x, y, nesting_dims=DIMS, k=5)
    seen = []
    later = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(set(logs))
    )
    history = model.fit(
        x,
        np.zeros((len(x), 8)),
        epochs=2,
        batch_size=16,
        callbacks=[evaluator, later],
        verbose=0,
    ).history
    assert _expected_keys(5) <= set(history)
    assert all(len(history[key]) == 2 for key in _expected_keys(5))
    # A callback listed after the evaluator (e.g. EarlyStopping) sees them.
    assert all(_expected_keys(5) <= keys for keys in seen)
    embeddings = model.predict(x, verbose=0)
    expected = retrieval_metrics(
        embeddings, y, embeddings, y, DIMS, k=5, exclude_self=True
    )
    _assert_last_epoch_matches(history, expected)
    assert evaluator.last_results == expected
    # Training moved the embeddings, so the two epochs are distinguishable.
    assert history["val_map@5@8"][0] != history["val_map@5@8"][1]


def test_encoder_and_separate_corpus():
    queries, query_labels = _data(n=20, seed=1)
    corpus, corpus_labels = _data(n=40, seed=2)
    keras.utils.set_random_seed(1)
    encoder = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(8)], name="encoder"
    )
    model = _compiled(
        keras.Sequential([encoder, keras.layers.Dense(3, name="head")])
    )
    evaluator = RetrievalEvaluator(
        queries,
        query_labels,
        corpus,
        corpus_labels,
        nesting_dims=DIMS,
        k=3,
        encoder=encoder,
        batch_size=7,
    )
    history = model.fit(
        corpus,
        np.zeros((40, 3)),
        epochs=2,
        callbacks=[evaluator],
        verbose=0,
    ).history
    assert evaluator.exclude_self is False
    expected = retrieval_metrics(
        encoder.predict(queries, verbose=0),
        query_labels,
        encoder.predict(corpus, verbose=0),
        corpus_labels,
        DIMS,
        k=3,
    )
    _assert_last_epoch_matches(history, expected)


def test_default_widths_and_prefix():
    x, y = _data(n=24)
    model = _compiled(
        keras.Sequential([keras.Input((12,)), keras.layers.Dense(16)])
    )
    evaluator = RetrievalEvaluator(x, y, k=2, prefix="ret_")
    history = model.fit(
        x, np.zeros((24, 16)), epochs=1, callbacks=[evaluator], verbose=0
    ).history
    assert {"ret_top1@8", "ret_map@2@16"} <= set(history)


def test_queries_without_relevant_warn_once():
    queries, _ = _data(n=8)
    corpus, corpus_labels = _data(n=12, seed=3)
    model = _compiled(
        keras.Sequential([keras.Input((12,)), keras.layers.Dense(8)])
    )
    evaluator = RetrievalEvaluator(
        queries, np.full(8, 99), corpus, corpus_labels, nesting_dims=DIMS
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            corpus,
            np.zeros((12, 8)),
            epochs=2,
            callbacks=[evaluator],
            verbose=0,
        )
    messages = [str(w.message) for w in caught if "RetrievalEvaluator" in
                str(w.message)]
    assert messages == [
        "RetrievalEvaluator: 8 queries have no relevant corpus item; they "
        "score 0 on every metric."
    ]
    assert evaluator.last_results[8]["map@10"] == 0.0


def test_corpus_data_without_labels_raises():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match="corpus_labels=None"):
        RetrievalEvaluator(x, y, corpus_data=x)


def test_no_corpus_with_exclude_self_false_raises():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match="exclude_self=False"):
        RetrievalEvaluator(x, y, exclude_self=False)


def test_bad_widths_raise_at_construction():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match="strictly increasing"):
        RetrievalEvaluator(x, y, nesting_dims=[8, 4])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"k": 0}, ValueError, "positive int, got k=0"),
        ({"k": 2.0}, TypeError, "`k` must be an int"),
        ({"batch_size": -1}, ValueError, "batch_size=-1"),
        ({"batch_size": "32"}, TypeError, "`batch_size` must be an int"),
        ({"chunk_size": 0}, ValueError, "chunk_size=0"),
        ({"chunk_size": 1.5}, TypeError, "`chunk_size` must be an int"),
    ],
)
def test_bad_counts_raise_at_construction(kwargs, error, match):
    x, y = _data(n=8)
    with pytest.raises(error, match=match):
        RetrievalEvaluator(x, y, **kwargs)


def test_label_lengths_are_checked_at_construction():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match=r"query_labels.*\(8,\).*\(7,\)"):
        RetrievalEvaluator(x, y[:7])
    with pytest.raises(ValueError, match=r"corpus_labels.*\(5,\).*\(8,\)"):
        RetrievalEvaluator(x, y, corpus_data=x[:5], corpus_labels=y)
    with pytest.raises(ValueError, match=r"query_labels.*\(8, 2\)"):
        RetrievalEvaluator(x, np.stack([y, y], axis=1))
    # Several inputs: their first array's rows; (n, 1) labels are fine.
    RetrievalEvaluator([x, x], y[:, None])


def test_non_embedding_output_raises():
    x, y = _data(n=8)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Reshape((3, 4))])
    evaluator = RetrievalEvaluator(x, y)
    evaluator.set_model(model)
    with pytest.raises(ValueError, match=r"\(8, 3, 4\).*encoder="):
        evaluator.on_epoch_end(0, {})
