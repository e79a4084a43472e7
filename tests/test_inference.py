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
