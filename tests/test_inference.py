"""`predict_batch`: one batch through a model for inference, as `encode`
embeds its texts."""

import gc
import weakref

import keras
import numpy as np
from _tiny_bert import tiny_embedder

from keras_mrl.models import ContrastiveModel
from keras_mrl.models import _inference


def _token_ids(embedder, texts):
    batch = embedder.preprocessor(texts)
    return {k: keras.ops.convert_to_numpy(v) for k, v in batch.items()}


def test_predict_batch_is_the_models_forward_pass():
    embedder = tiny_embedder()
    batch = _token_ids(embedder, ["sum of an array", "sort a list"])
    expected = keras.ops.convert_to_numpy(embedder(batch, training=False))
    np.testing.assert_allclose(
        _inference.predict_batch(embedder, batch), expected, atol=1e-5
    )


def test_predict_batch_reads_the_weights_of_each_call():
    embedder = tiny_embedder()
    batch = _token_ids(embedder, ["sum of an array", "sort a list"])
    before = _inference.predict_batch(embedder, batch)
    embedder.set_weights([0.5 * w for w in embedder.get_weights()])
    after = _inference.predict_batch(embedder, batch)
    expected = keras.ops.convert_to_numpy(embedder(batch, training=False))
    assert not np.allclose(before, after, atol=1e-3)
    np.testing.assert_allclose(after, expected, atol=1e-5)


def test_tensorflow_and_jax_compile_their_own_forward_pass():
    embedder = tiny_embedder()
    batch = _token_ids(embedder, ["sum of an array"])
    _inference.predict_batch(embedder, batch)
    own = keras.backend.backend() in ("tensorflow", "jax")
    assert (embedder in _inference._forward_functions) is own


def test_one_program_per_batch_shape():
    embedder = tiny_embedder()
    short = _token_ids(embedder, ["sum of an array", "sort a list"])
    _inference.predict_batch(embedder, short)
    _inference.predict_batch(embedder, short)
    cut = {k: v[:, :4] for k, v in short.items()}
    _inference.predict_batch(embedder, cut)
    _inference.predict_batch(embedder, cut)
    forward = _inference._forward_functions.get(embedder)
    if keras.backend.backend() == "tensorflow":
        assert forward.experimental_get_tracing_count() == 2
    elif keras.backend.backend() == "jax":
        assert forward._cache_size() == 2
    else:
        assert forward is None


def test_encode_embeds_texts_as_the_forward_pass_does():
    embedder = tiny_embedder()
    texts = ["sort a list", "the sum of an array along an axis", "a"]
    model = ContrastiveModel(embedder, length_buckets=None)
    expected = keras.ops.convert_to_numpy(
        embedder(_token_ids(embedder, texts), training=False)
    )
    np.testing.assert_allclose(model.encode(texts), expected, atol=1e-5)


def test_predict_batch_lets_the_model_be_freed():
    def embed_once():
        embedder = tiny_embedder()
        batch = _token_ids(embedder, ["sort a list"])
        _inference.predict_batch(embedder, batch)
        return weakref.ref(embedder)

    # In a function of its own: tracing a tf.function reads the caller's
    # frame locals, whose snapshot keeps the model until that frame ends.
    freed = embed_once()
    gc.collect()
    assert freed() is None


def test_padded_rows_fill_the_batch_or_the_next_power_of_two():
    cases = [(1, 8, False), (3, 8, False), (5, 8, False), (8, 8, False)]
    cases += [(3, 8, True), (6, 6, True), (5, 6, False)]
    padded = [_inference.padded_rows(*case) for case in cases]
    if keras.backend.backend() == "torch":
        assert padded == [rows for rows, _, _ in cases]
    else:
        assert padded == [1, 4, 8, 8, 8, 6, 6]


def test_padded_batch_gives_the_outputs_of_its_own_rows():
    embedder = tiny_embedder()
    batch = _token_ids(embedder, ["sum of an array", "sort a list", "a"])
    expected = keras.ops.convert_to_numpy(embedder(batch, training=False))
    padded = _inference.predict_batch(embedder, batch, rows=8)
    assert padded.shape == expected.shape
    np.testing.assert_allclose(padded, expected, atol=1e-5)


def test_encode_compiles_one_program_per_padded_batch_size():
    embedder = tiny_embedder()
    # One length for every text: only the number of rows varies.
    model = ContrastiveModel(embedder, length_buckets=None)
    texts = [f"text number {i}" for i in range(11)]
    for count in range(1, 9):
        model.encode(texts[:count], batch_size=8)
    # 8 texts, then 3 padded to the 8 of the batch before them.
    encoded = model.encode(texts, batch_size=8)
    forward = _inference._forward_functions.get(embedder)
    if keras.backend.backend() == "tensorflow":
        assert forward.experimental_get_tracing_count() == 4  # 1, 2, 4, 8
    elif keras.backend.backend() == "jax":
        assert forward._cache_size() == 4
    else:
        assert forward is None
    expected = keras.ops.convert_to_numpy(
        embedder(_token_ids(embedder, texts), training=False)
    )
    np.testing.assert_allclose(encoded, expected, atol=1e-5)
