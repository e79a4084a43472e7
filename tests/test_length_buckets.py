"""Length buckets of ContrastiveModel: exact, in order, few compiles."""

import keras
import numpy as np
import pytest
from _tiny_bert import WORDS
from _tiny_bert import tiny_embedder
from _trace_counter import TraceCounter
from conftest import jit_compile

from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.models import ContrastiveModel
from keras_mrl.models import _contrastive_model
from keras_mrl.models._length_buckets import resolve_buckets
from keras_mrl.models._length_buckets import trim

# Texts of 1 to 40 words: with [CLS] and [SEP], 3 to 42 tokens.
SEQUENCE_LENGTH = 48


def _texts(n, seed):
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(WORDS, size=int(rng.integers(1, 41))))
        for _ in range(n)
    ]


@pytest.mark.once
def test_auto_buckets_double_from_16_to_the_sequence_length():
    assert resolve_buckets("auto", 256) == (16, 32, 64, 128, 256)
    assert resolve_buckets("auto", 48) == (16, 32, 48)
    assert resolve_buckets("auto", 16) == (16,)
    assert resolve_buckets("auto", None) is None
    assert resolve_buckets(None, 64) is None


@pytest.mark.once
def test_given_buckets_are_sorted_and_end_at_the_sequence_length():
    assert resolve_buckets([24, 8], 64) == (8, 24, 64)
    assert resolve_buckets([8, 64], 64) == (8, 64)
    assert resolve_buckets((8,), None) == (8,)


@pytest.mark.once
@pytest.mark.parametrize(
    "value, error, match",
    [
        ("longest", ValueError, "'auto', None"),
        ([], TypeError, "non-empty list"),
        (16, TypeError, "non-empty list"),
        ([16, 2.5], TypeError, "2.5"),
        ([16, True], TypeError, "True"),
        ([0, 16], ValueError, "a length bucket"),
        ([16, 16], ValueError, "twice"),
        ([16, 128], ValueError, "sequence_length 64"),
    ],
)
def test_bad_buckets_raise_naming_the_value(value, error, match):
    with pytest.raises(error, match=match):
        resolve_buckets(value, 64)


@pytest.mark.once
def test_trim_cuts_trailing_padding_to_the_smallest_bucket_that_fits():
    mask = np.zeros((2, 12), bool)
    mask[0, :3] = True
    mask[1, :5] = True
    ids = np.arange(24).reshape(2, 12)
    cut = trim({"token_ids": ids, "padding_mask": mask}, (4, 8, 12))
    np.testing.assert_array_equal(cut["token_ids"], ids[:, :8])
    np.testing.assert_array_equal(cut["padding_mask"], mask[:, :8])
    # Left padding: the last column is used, nothing can be cut.
    left = mask[:, ::-1]
    kept = trim({"token_ids": ids, "padding_mask": left}, (4, 8, 12))
    np.testing.assert_array_equal(kept["token_ids"], ids)
    # Longer than every bucket: the full length stays.
    assert trim({"padding_mask": mask}, (2,))["padding_mask"].shape == (2, 12)
    # Not a KerasHub batch: untouched.
    assert trim(ids, (4,)) is ids


def _trained_weights(length_buckets, queries, documents):
    keras.utils.set_random_seed(0)
    embedder = tiny_embedder(SEQUENCE_LENGTH)
    model = ContrastiveModel(embedder, length_buckets=length_buckets)
    model.compile(
        keras.optimizers.SGD(0.5),
        MatryoshkaLoss(MultipleNegativesRankingLoss(), nesting_dims=[4, 16]),
    )
    history = model.fit(
        (queries, documents), batch_size=8, shuffle=False, verbose=0
    )
    return history.history["loss"][0], model.get_weights()


def test_bucketed_batches_give_the_loss_and_updates_of_full_padding():
    queries, documents = _texts(8, 0), _texts(8, 1)
    queries = [q[: len(q) // 3] or "sum" for q in queries]  # short queries
    loss, weights = _trained_weights([8, 16, 32], queries, documents)
    full_loss, full_weights = _trained_weights(None, queries, documents)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-5)
    for got, expected in zip(weights, full_weights):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_encode_returns_input_order_and_the_unbucketed_vectors():
    model = ContrastiveModel(tiny_embedder(SEQUENCE_LENGTH))
    texts = _texts(20, 2)
    # Sorted by length, the 20 texts make two batches of two buckets.
    encoded = model.encode(texts, batch_size=10)
    in_order = model.embedder.predict(texts, batch_size=20, verbose=0)
    np.testing.assert_allclose(encoded, in_order, atol=1e-5)


def _record_batch_shapes(monkeypatch):
    """Records the token ids' shape of each batch `encode` embeds."""
    shapes = []
    predict_batch = _contrastive_model.predict_batch

    def recorded(model, batch, rows=None):
        shapes.append(batch["token_ids"].shape)
        return predict_batch(model, batch, rows)

    monkeypatch.setattr(_contrastive_model, "predict_batch", recorded)
    return shapes


def test_encode_batches_texts_by_their_token_counts(monkeypatch):
    model = ContrastiveModel(
        tiny_embedder(SEQUENCE_LENGTH), length_buckets=[4, 8, 16]
    )
    shapes = _record_batch_shapes(monkeypatch)
    # Trailing spaces lengthen a text, not its tokens. By characters the
    # batches would be (60, 40) and (30, 21), 16 tokens each; by tokens
    # they are (14, 13) and (3, 3) tokens, cut to 16 and 4.
    texts = [
        "elements".ljust(60),  # 3 tokens, [CLS] and [SEP] included
        "a " * 12 + " " * 16,  # 14 tokens
        "sum".ljust(30),  # 3 tokens
        "a " * 10 + "a",  # 13 tokens
    ]
    encoded = model.encode(texts, batch_size=2)
    assert shapes == [(2, 16), (2, 4)]
    in_order = model.embedder.predict(texts, batch_size=4, verbose=0)
    np.testing.assert_allclose(encoded, in_order, atol=1e-5)


def test_encode_keeps_input_order_across_windows(monkeypatch):
    model = ContrastiveModel(tiny_embedder(SEQUENCE_LENGTH))
    monkeypatch.setattr(_contrastive_model, "_ENCODE_WINDOW_BATCHES", 2)
    texts = _texts(23, 7)  # windows of 8, 8 and 7 texts at batch size 4
    encoded = model.encode(texts, batch_size=4)
    in_order = model.embedder.predict(texts, batch_size=23, verbose=0)
    np.testing.assert_allclose(encoded, in_order, atol=1e-5)


def _count_tokenizer_traces(model):
    """Wraps the preprocessor's call to count its Python runs: traces."""
    preprocessor = model.preprocessor
    calls = []
    call = preprocessor.call

    def counted(*args, **kwargs):
        calls.append(1)
        return call(*args, **kwargs)

    preprocessor.call = counted
    return calls


@pytest.mark.once
def test_encode_and_datasets_trace_the_tokenizer_once():
    model = ContrastiveModel(tiny_embedder(SEQUENCE_LENGTH))
    traces = _count_tokenizer_traces(model)
    texts = _texts(12, 5)
    first = model.encode(texts, batch_size=8)
    model.encode(texts[:3], batch_size=8)
    for _ in model.make_dataset((texts, texts), batch_size=8):
        pass
    for _ in model.make_dataset((texts, texts), batch_size=8):
        pass
    # A trace for a batch of 8, one for other sizes; none afterwards.
    assert 1 <= len(traces) <= 2
    np.testing.assert_allclose(model.encode(texts, batch_size=8), first)


@pytest.mark.once
def test_a_new_sequence_length_is_traced_anew():
    model = ContrastiveModel(
        tiny_embedder(SEQUENCE_LENGTH), length_buckets=None
    )
    texts = _texts(4, 6)
    model.encode(texts)
    model.preprocessor.sequence_length = 8
    batch = next(iter(model.make_dataset((texts, texts), batch_size=4)))
    anchors = batch[0][0]
    assert anchors["token_ids"].shape == (4, 8)


@pytest.mark.skipif(
    not jit_compile(), reason="torch runs eagerly: nothing is compiled"
)
def test_fit_compiles_at_most_one_program_per_bucket_pair():
    counter = TraceCounter()
    model = ContrastiveModel(
        tiny_embedder(SEQUENCE_LENGTH), head=counter, length_buckets=[24]
    )
    model.compile("sgd", MultipleNegativesRankingLoss(), jit_compile=True)
    # 16 batches of random lengths, cut to their longest text, would make
    # about as many shapes; 2 buckets (24, 48) per branch make 4 at most.
    model.fit((_texts(32, 3), _texts(32, 4)), batch_size=2, verbose=0)
    # One call per branch per trace, and under JAX one more pair of calls
    # as Keras builds the train step's state on the first batch.
    assert 2 <= counter.traces <= 2 * (4 + 1)


def test_length_buckets_survive_the_config():
    model = ContrastiveModel(tiny_embedder(SEQUENCE_LENGTH), length_buckets=[8])
    restored = ContrastiveModel.from_config(model.get_config())
    assert restored.length_buckets == [8]
    assert restored._buckets == (8, SEQUENCE_LENGTH)
