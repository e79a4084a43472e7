import warnings

import keras
import numpy as np
import pytest
from conftest import jit_compile

from keras_mrl.callbacks import RetrievalEvaluator
from keras_mrl.evaluation import retrieval_metrics

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
        jit_compile=jit_compile(),
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
    evaluator = RetrievalEvaluator(x, query_labels=y, nesting_dims=DIMS, k=5)
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
        embeddings,
        query_labels=y,
        corpus_embeddings=embeddings,
        corpus_labels=y,
        nesting_dims=DIMS,
        k=5,
        exclude_self=True,
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
        query_labels=query_labels,
        corpus_data=corpus,
        corpus_labels=corpus_labels,
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
        query_labels=query_labels,
        corpus_embeddings=encoder.predict(corpus, verbose=0),
        corpus_labels=corpus_labels,
        nesting_dims=DIMS,
        k=3,
    )
    _assert_last_epoch_matches(history, expected)


def test_default_widths_and_prefix():
    x, y = _data(n=24)
    model = _compiled(
        keras.Sequential([keras.Input((12,)), keras.layers.Dense(16)])
    )
    evaluator = RetrievalEvaluator(x, query_labels=y, k=2, prefix="ret_")
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
        queries,
        query_labels=np.full(8, 99),
        corpus_data=corpus,
        corpus_labels=corpus_labels,
        nesting_dims=DIMS,
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
    messages = [
        str(w.message) for w in caught if "RetrievalEvaluator" in str(w.message)
    ]
    assert messages == [
        "RetrievalEvaluator: 8 queries have no relevant corpus item; they "
        "score 0 on every metric."
    ]
    assert evaluator.last_results[8]["map@10"] == 0.0


def test_corpus_data_without_labels_raises():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match="corpus_labels=None"):
        RetrievalEvaluator(x, query_labels=y, corpus_data=x)


def test_no_corpus_with_exclude_self_false_raises():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match="exclude_self=False"):
        RetrievalEvaluator(x, query_labels=y, exclude_self=False)


def test_bad_widths_raise_at_construction():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match="strictly increasing"):
        RetrievalEvaluator(x, query_labels=y, nesting_dims=[8, 4])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"k": 0}, ValueError, "positive int, got k=0"),
        ({"k": 2.0}, TypeError, "`k` must be an int"),
        ({"batch_size": -1}, ValueError, "batch_size=-1"),
        ({"batch_size": "32"}, TypeError, "`batch_size` must be an int"),
        ({"chunk_size": 0}, ValueError, "chunk_size=0"),
        ({"chunk_size": 1.5}, TypeError, "`chunk_size` must be an int"),
        ({"prefix": None}, TypeError, "`prefix` must be a str"),
        ({"prefix": 1}, TypeError, "`prefix` must be a str"),
        ({"exclude_self": "no"}, TypeError, "`exclude_self` must be None"),
        ({"exclude_self": 0}, TypeError, "`exclude_self` must be None"),
        ({"encoder": "encoder"}, TypeError, "`encoder` must be a Keras"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, error, match):
    x, y = _data(n=8)
    with pytest.raises(error, match=match):
        RetrievalEvaluator(x, query_labels=y, **kwargs)


def test_label_lengths_are_checked_at_construction():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match=r"query_labels.*\(8,\).*\(7,\)"):
        RetrievalEvaluator(x, query_labels=y[:7])
    with pytest.raises(ValueError, match=r"corpus_labels.*\(5,\).*\(8,\)"):
        RetrievalEvaluator(
            x, query_labels=y, corpus_data=x[:5], corpus_labels=y
        )
    with pytest.raises(ValueError, match=r"query_labels.*\(8, 2\)"):
        RetrievalEvaluator(x, query_labels=np.stack([y, y], axis=1))
    # Several inputs: their first array's rows; (n, 1) labels are fine.
    RetrievalEvaluator([x, x], query_labels=y[:, None])


def test_non_embedding_output_raises():
    x, y = _data(n=8)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Reshape((3, 4))])
    evaluator = RetrievalEvaluator(x, query_labels=y)
    evaluator.set_model(model)
    with pytest.raises(ValueError, match=r"\(8, 3, 4\).*encoder="):
        evaluator.on_epoch_end(0, {})


def test_positional_arguments_raise():
    x, y = _data(n=8)
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        RetrievalEvaluator(x, y)


def _diverged(model):
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    return model


def test_diverged_model_stops_fit_at_epoch_end():
    x, y = _data(n=16)
    model = _diverged(
        _compiled(keras.Sequential([keras.Input((12,)), keras.layers.Dense(8)]))
    )
    evaluator = RetrievalEvaluator(x, query_labels=y, nesting_dims=DIMS)
    ends = []
    later = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: ends.append(epoch)
    )
    with pytest.raises(
        ValueError,
        match=r"model diverged, its embeddings are not finite.*"
        r"`embeddings of query_data` holds 128 NaN",
    ):
        model.fit(
            x,
            np.zeros((16, 8)),
            epochs=3,
            callbacks=[evaluator, later],
            verbose=0,
        )
    # It stopped at the end of the first epoch, before logging anything.
    assert ends == []
    assert evaluator.last_results is None


def test_non_finite_corpus_embeddings_raise():
    queries, query_labels = _data(n=8)
    corpus, corpus_labels = _data(n=12, seed=3)
    corpus[2, 0] = np.inf
    encoder = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8)])
    evaluator = RetrievalEvaluator(
        queries,
        query_labels=query_labels,
        corpus_data=corpus,
        corpus_labels=corpus_labels,
        encoder=encoder,
        nesting_dims=DIMS,
    )
    with pytest.raises(ValueError, match="`embeddings of corpus_data` holds"):
        evaluator.evaluate()


def test_evaluate_without_a_model_raises():
    x, y = _data(n=8)
    evaluator = RetrievalEvaluator(x, query_labels=y)
    with pytest.raises(ValueError, match=r"no model.*pass `encoder=`.*fit"):
        evaluator.evaluate()


def test_evaluate_with_an_encoder_outside_fit():
    x, y = _data(n=8)
    encoder = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8)])
    evaluator = RetrievalEvaluator(
        x, query_labels=y, encoder=encoder, nesting_dims=DIMS, k=3
    )
    embeddings = encoder.predict(x, batch_size=256, verbose=0)
    assert evaluator.evaluate() == retrieval_metrics(
        embeddings,
        query_labels=y,
        corpus_embeddings=embeddings,
        corpus_labels=y,
        nesting_dims=DIMS,
        k=3,
        exclude_self=True,
    )
