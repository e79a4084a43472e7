"""keras_mrl.models.ContrastiveModel on a tiny KerasHub BERT and on an MLP."""

import keras
import numpy as np
import pytest
from conftest import jit_compile

from keras_mrl.layers._orthogonal_projection import OrthogonalProjection
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.models import ContrastiveModel

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("tensorflow")

from _tiny_bert import pairs  # noqa: E402
from _tiny_bert import tiny_embedder  # noqa: E402
from _trace_counter import TraceCounter  # noqa: E402

DIMS = [8, 16]


def _loss():
    return MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=DIMS)


def _compiled(embedder, jit="auto", head=None):
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
    model = _compiled(embedder)
    history = model.fit((queries, documents), batch_size=8, epochs=3, verbose=0)
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
    assert len(model.trainable_weights) == len(model.embedder.trainable_weights)


def test_output_stacks_anchor_positive_and_negatives(trained):
    model, queries, documents = trained[:3]
    negatives = documents[1:] + documents[:1]
    stacked = model.predict((queries, documents, negatives), verbose=0)
    assert stacked.shape == (32, 3, 16)
    expected = [
        model.embedder.encode_text(t, verbose=0)
        for t in (queries, documents, negatives)
    ]
    for k in range(3):
        np.testing.assert_allclose(stacked[:, k], expected[k], atol=1e-5)
    as_dict = model.predict(
        {"anchor": queries, "positive": documents, "negative_1": negatives},
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


def test_embedder_preset_round_trip_gives_the_same_vectors(trained, tmp_path):
    model, queries = trained[:2]
    model.embedder.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_hub.models.TextEmbedder.from_preset(str(tmp_path / "preset"))
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
        results.append(embedder.get_weights())
    # Two Adam steps at 1e-2 move every weight by about 1e-2.
    for compiled, eager in zip(*results):
        np.testing.assert_allclose(compiled, eager, atol=1e-4)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="only Keras under TensorFlow builds the optimizer in the trace",
)
def test_the_first_tensorflow_train_step_is_traced_once():
    head = TraceCounter()
    head.build((None, 16))
    model = _compiled(tiny_embedder(), True, head=head)
    model.fit(pairs(8), batch_size=8, verbose=0)
    # One call per branch (anchor, positive) in one trace; a trace that
    # created the optimizer's variables would be redone without them.
    assert head.traces == 2


def test_an_unbuilt_head_is_built_and_trained():
    head = keras.layers.Dense(16)
    model = _compiled(tiny_embedder(), head=head)
    queries, documents = pairs(16)
    model.fit((queries[:8], documents[:8]), batch_size=8, verbose=0)
    kernel = keras.ops.convert_to_numpy(head.kernel)
    model.fit((queries[8:], documents[8:]), batch_size=8, verbose=0)
    assert np.abs(keras.ops.convert_to_numpy(head.kernel) - kernel).max() > 0


def test_any_keras_encoder_trains_on_tensors():
    rng = np.random.default_rng(0)
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16)])
    model = _compiled(encoder)
    anchors = rng.normal(size=(32, 6)).astype("float32")
    positives = anchors + 0.05 * rng.normal(size=(32, 6)).astype("float32")
    history = model.fit(
        (anchors, positives), batch_size=16, epochs=5, verbose=0
    )
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
    with pytest.raises(TypeError, match="positional argument"):
        ContrastiveModel(encoder, None)


def _plain(width=16):
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(width)])
    return _compiled(encoder)


def _arrays(n=32, seed=0):
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(n, 6)).astype("float32")
    return anchors, anchors + 0.05 * rng.normal(size=(n, 6)).astype("f")


def _call(model, method, x, **kwargs):
    return getattr(model, method)(x, verbose=0, **kwargs)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
@pytest.mark.parametrize("batch_size", [0, -2])
def test_non_positive_batch_size_raises(trained, method, batch_size):
    model, queries, documents = trained[:3]
    for m, x in ((model, (queries, documents)), (_plain(), _arrays())):
        with pytest.raises(
            ValueError,
            match=rf"`batch_size` must be a "
            rf"positive int, got batch_size={batch_size}",
        ):
            _call(m, method, x, batch_size=batch_size)
    with pytest.raises(TypeError, match="`batch_size` must be an int"):
        _call(model, method, (queries, documents), batch_size=8.0)
    with pytest.raises(ValueError, match="batch_size=0"):
        model.encode(queries, batch_size=0)


def test_flags_of_make_dataset_and_fit_must_be_bools(trained):
    model, queries, documents = trained[:3]
    with pytest.raises(
        TypeError, match="`shuffle` must be True or False, got 'no'"
    ):
        model.make_dataset((queries, documents), shuffle="no")
    with pytest.raises(
        TypeError, match="`drop_remainder` must be True or False, got 1"
    ):
        model.make_dataset((queries, documents), drop_remainder=1)
    with pytest.raises(
        TypeError, match="`seed` must be None or an int, got '3'"
    ):
        model.make_dataset((queries, documents), shuffle=True, seed="3")
    for m, x in ((model, (queries, documents)), (_plain(), _arrays())):
        with pytest.raises(
            TypeError, match="`shuffle` must be True or False, got 'no'"
        ):
            m.fit(x, shuffle="no", verbose=0)


def test_make_dataset_takes_a_numpy_int_seed(trained):
    model, queries, documents = trained[:3]

    def first_batch(seed):
        dataset = model.make_dataset(
            (queries, documents), batch_size=32, shuffle=True, seed=seed
        )
        return next(iter(dataset))[0][0]["token_ids"].numpy()

    np.testing.assert_array_equal(first_batch(np.int64(3)), first_batch(3))


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_labels_raise_for_every_embedder(trained, method):
    model, queries, documents = trained[:3]
    for m, x in ((model, (queries, documents)), (_plain(), _arrays())):
        with pytest.raises(
            ValueError,
            match="ContrastiveModel needs no "
            "labels.*leave `y` None; got a `y` of type "
            "ndarray",
        ):
            getattr(m, method)(x, np.zeros(32), verbose=0)


@pytest.mark.parametrize(
    "make_inputs, error, match",
    [
        (
            lambda q, d: (q, d[:5]),
            ValueError,
            r"the same number, got Branch 0 \(`anchor`\) 32, Branch 1 "
            r"\(`positive`\) 5\.",
        ),
        (lambda q, d: ([], []), ValueError, "hold no rows"),
        (
            lambda q, d: q,
            ValueError,
            r"got a list of 32 strings, which is one branch.*"
            r"fit\(\(queries, documents\)\)",
        ),
        (
            lambda q, d: (q, [None] + d[1:]),
            ValueError,
            r"Branch 1 \(`positive`\) holds None at row 0",
        ),
        (
            lambda q, d: (q, d, d[:3] + [7] + d[4:]),
            TypeError,
            r"Branch 2 \(`negative_1`\) mixes strings with other values: row "
            r"3 is 7 of type int",
        ),
        (
            lambda q, d: (q, list(range(32))),
            TypeError,
            r"Branch 1 \(`positive`\) holds no strings while Branch 0 "
            r"\(`anchor`\) does",
        ),
        (
            lambda q, d: {"anchor": q, "positive": [None] * 32},
            ValueError,
            r"Branch 1 \(`positive`\) holds None",
        ),
        (
            lambda q, d: (q,),
            ValueError,
            r"at least 2 inputs.*got a tuple of 1 input\(s\)\.",
        ),
    ],
    ids=[
        "lengths",
        "empty",
        "bare_list",
        "none",
        "mixed",
        "ints",
        "dict_none",
        "one_branch",
    ],
)
@pytest.mark.parametrize(
    "method", ["fit", "evaluate", "predict", "make_dataset"]
)
def test_bad_raw_branches_raise(trained, make_inputs, error, match, method):
    model, queries, documents = trained[:3]
    x = make_inputs(list(queries), list(documents))
    with pytest.raises(error, match=match):
        if method == "make_dataset":
            model.make_dataset(x)
        else:
            _call(model, method, x)


def test_bad_array_branches_raise_as_strings_do():
    model = _plain()
    anchors, positives = _arrays()
    with pytest.raises(
        ValueError,
        match=r"the same number, got Branch 0 "
        r"\(`anchor`\) 32, Branch 1 \(`positive`\) 5\.",
    ):
        model.fit((anchors, positives[:5]), verbose=0)
    with pytest.raises(ValueError, match="hold no rows"):
        model.predict((anchors[:0], positives[:0]), verbose=0)
    with pytest.raises(ValueError, match=r"got a tuple of 1 input\(s\)\."):
        model.fit((anchors,), verbose=0)


def _tail(x, rows):
    return tuple(branch[-rows:] for branch in x)


@pytest.fixture(scope="module")
def hub_model():
    """A compiled tiny-BERT model that the validation tests share.

    They check what `fit` reports against `evaluate` on the same weights,
    which holds for any weights, so they share one model and its compiled
    train and test steps, at one batch size.
    """
    keras.utils.set_random_seed(0)
    return _compiled(tiny_embedder())


@pytest.mark.parametrize("embedder", ["hub", "plain"])
def test_validation_split_holds_out_the_last_rows(embedder, request):
    keras.utils.set_random_seed(0)
    if embedder == "hub":
        model = request.getfixturevalue("hub_model")
        x = tuple(np.asarray(t) for t in pairs(32))
    else:
        model, x = _plain(), _arrays()
    steps_before = int(model.optimizer.iterations.numpy())
    history = model.fit(
        x, validation_split=0.25, batch_size=8, epochs=2, verbose=0
    )
    assert len(history.history["val_loss"]) == 2
    # The last 8 rows, one batch: the loss of the final weights on them.
    expected = model.evaluate(_tail(x, 8), batch_size=8, verbose=0)
    np.testing.assert_allclose(
        history.history["val_loss"][-1], expected, rtol=1e-5
    )
    # The 24 training rows, in batches of 8.
    assert model.optimizer.iterations.numpy() - steps_before == 2 * 3


@pytest.mark.parametrize("embedder", ["hub", "plain"])
def test_validation_data_takes_branches_or_keras_packing(embedder, request):
    keras.utils.set_random_seed(0)
    if embedder == "hub":
        model = request.getfixturevalue("hub_model")
        x = tuple(np.asarray(t) for t in pairs(16))
    else:
        model, x = _plain(), _arrays(16)
    losses = []
    for validation_data in (x, (x,)):
        history = model.fit(
            x,
            validation_data=validation_data,
            batch_size=8,
            epochs=1,
            verbose=0,
        )
        losses.append(history.history["val_loss"][-1])
        np.testing.assert_allclose(
            losses[-1],
            model.evaluate(x, batch_size=8, verbose=0),
            rtol=1e-5,
        )
    with pytest.raises(ValueError, match="needs no labels"):
        model.fit(x, validation_data=(x, np.zeros(16)), verbose=0)


def test_validation_split_errors(trained):
    model, queries, documents = trained[:3]
    x = (queries, documents)
    with pytest.raises(ValueError, match="not both"):
        model.fit(x, validation_split=0.2, validation_data=x, verbose=0)
    dataset = model.make_dataset(x, batch_size=8)
    with pytest.raises(
        ValueError,
        match="not of a _OptionsDataset: pass `validation_data` instead",
    ):
        model.fit(dataset, validation_split=0.2, verbose=0)
    for bad, error in (
        (1.0, ValueError),
        (-0.1, ValueError),
        ("0.2", TypeError),
        (True, TypeError),
    ):
        with pytest.raises(
            error,
            match=r"`validation_split` must be a "
            r"float in \[0, 1\)",
        ):
            model.fit(x, validation_split=bad, verbose=0)
    with pytest.raises(
        ValueError,
        match=r"`validation_split`=0.99 of 32 "
        "rows leaves 0 for training and 32 for validation",
    ):
        model.fit(x, validation_split=0.99, verbose=0)


def test_encode_of_nothing_is_an_empty_float_array(trained):
    model = trained[0]
    for x in ([], np.array([], dtype=str)):
        empty = model.encode(x)
        assert empty.shape == (0, 16) and empty.dtype == np.float32
    head = OrthogonalProjection()
    plain = ContrastiveModel(
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)]),
        head=head,
    )
    empty = plain.encode(np.zeros((0, 6), "float32"))
    assert empty.shape == (0, 5)
    assert empty.dtype == plain.encode(_arrays(2)[0]).dtype == np.float32
