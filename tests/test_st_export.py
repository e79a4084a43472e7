"""keras_mrl.integrations.sentence_transformers.export against
sentence-transformers.

The reference is the Keras model itself: the exported directory, loaded by
`sentence_transformers.SentenceTransformer`, must encode texts to the
vectors the embedder (and its head) computes. The tiny BERT has every
weight drawn at random, so that a bias or a norm mapped to the wrong place
changes the vectors; the real all-MiniLM-L6-v2 is exported too. Texts
that KerasHub's own normalisation splits otherwise than Hugging Face's
(`UNICODE_TEXTS`) encode alike on both sides when the Keras tokenizer is a
`keras_mrl.integrations.sentence_transformers.HuggingFaceBertTokenizer`,
as a loaded directory's is.
"""

import functools
import inspect
import itertools
import json
import os
import random
import string

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("safetensors")

from _docstring_lines import first_lines  # noqa: E402
from _tiny_bert import VOCABULARY  # noqa: E402
from _tiny_bert import pairs  # noqa: E402
from _tiny_bert import tiny_embedder  # noqa: E402
from _tiny_families import tiny_family_embedder  # noqa: E402

import keras_mrl  # noqa: E402
from keras_mrl.integrations import sentence_transformers as st  # noqa: E402

# What an export writes and how sentence-transformers reads it are the same
# under every backend: the round trips, the real MiniLM's included, run once.
pytestmark = pytest.mark.once

# An accented word and its plain form: KerasHub keeps accents, Hugging
# Face's BERT tokenizer strips them by default when it lowercases. The
# other words are those of UNICODE_TEXTS, whole and as continuations, so
# that a text split otherwise gives other ids.
TINY_VOCABULARY = VOCABULARY + [
    "café",
    "cafe",
    "odd",
    "space",
    "zero",
    "width",
    "##width",
    "soft",
    "hyphen",
    "##hyphen",
    "fi",
    "##ne",
    "ne",
    "full",
    "ctrl",
    "char",
    "##char",
    "σ",
    "##σ",
    "ο",
    "##ο",
    "δ",
    "##δ",
    "中",
    "文",
]
TEXTS = pairs(12)[0] + pairs(12)[1] + ["the Café of the array", "VALUES"]
# Texts that KerasHub's own normalisation splits otherwise than Hugging
# Face's BertNormalizer: other spaces, format and control characters,
# ligatures and full-width letters, accents, a final sigma, CJK, special
# tokens written out.
UNICODE_TEXTS = [
    "odd\u00a0space",
    "zero\u200bwidth zero\u200dwidth \ufeffzero width",
    "soft\u00adhyphen",
    "\ufb01ne fine",
    "ＦＵＬＬ width",
    "ctrl\x07char ctrl\x00char ctrl\ufffdchar",
    "tab\tspace\nnewline\u2028space\u3000width",
    "Café CAFÉ cafe\u0301",
    "ΟΔΟΣ οδος",
    "中文 the文",
    "the [SEP] array [UNK] [MASK]",
    "private\ue000use",
]
SEQUENCE_LENGTH = 12
POSITIONS = 16


def _tiny(pooling_mode="mean", normalize=True, normalizer=None):
    """The tiny BERT with random weights; with a Hugging Face `normalizer`,
    its tokenizer is a HuggingFaceBertTokenizer."""
    embedder = tiny_embedder(
        SEQUENCE_LENGTH,
        vocabulary=TINY_VOCABULARY,
        num_layers=2,
        max_sequence_length=POSITIONS,
        pooling_mode=pooling_mode,
        normalize=normalize,
    )
    if normalizer is not None:
        tokenizer = st.HuggingFaceBertTokenizer(
            TINY_VOCABULARY, normalizer=normalizer
        )
        embedder = keras_hub.models.BertTextEmbedder(
            embedder.backbone,
            keras_hub.models.BertTextEmbedderPreprocessor(
                tokenizer, sequence_length=SEQUENCE_LENGTH
            ),
            pooling_mode=pooling_mode,
            normalize=normalize,
        )
    rng = np.random.default_rng(1)
    for variable in embedder.backbone.weights:
        variable.assign(
            rng.normal(size=variable.shape, scale=0.3).astype("float32")
            + (1.0 if "gamma" in variable.path else 0.0)
        )
    return embedder


def _keras(embedder, head=None, normalize=True, texts=TEXTS):
    x = keras.ops.convert_to_numpy(embedder.predict(texts, verbose=0))
    if head is not None:
        x = keras.ops.convert_to_numpy(head(x))
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _sentence_transformer(path, **kwargs):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    pytest.importorskip("torch")
    return sentence_transformers.SentenceTransformer(
        path, device="cpu", **kwargs
    )


def _module_types(path):
    with open(os.path.join(path, "modules.json"), encoding="utf-8") as f:
        return [m["type"].rsplit(".", 1)[-1] for m in json.load(f)]


def _read_json(path, name):
    with open(os.path.join(path, name), encoding="utf-8") as file:
        return json.load(file)


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


def test_round_trip_encodes_the_keras_vectors(tiny, tmp_path):
    path = st.export(tiny, path=tmp_path / "model")
    assert sorted(os.listdir(path)) == sorted(
        [
            "1_Pooling",
            "2_Normalize",
            "README.md",
            "config.json",
            "config_sentence_transformers.json",
            "model.safetensors",
            "modules.json",
            "sentence_bert_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]
    )
    assert _module_types(path) == ["Transformer", "Pooling", "Normalize"]
    assert (
        _read_json(path, "sentence_bert_config.json")["max_seq_length"]
        == SEQUENCE_LENGTH
    )
    ours = _keras(tiny)
    theirs = _sentence_transformer(path).encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1, atol=1e-5)
    assert np.abs(theirs - ours).max() <= 1e-5


def test_exported_tokenizer_gives_the_keras_token_ids(tiny, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    path = st.export(tiny, path=tmp_path / "model")
    hf = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    keras_ids = keras.ops.convert_to_numpy(
        tiny.preprocessor(TEXTS)["token_ids"]
    )
    for text, row in zip(TEXTS, keras_ids):
        assert hf.encode(text).ids == [int(i) for i in row if i != 0]
    accented = hf.encode("café").ids[1]
    assert accented == TINY_VOCABULARY.index("café")
    with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as file:
        assert file.read().splitlines() == TINY_VOCABULARY


def test_round_trip_encodes_unicode_texts_alike(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    embedder = _tiny(
        normalizer={
            "type": "BertNormalizer",
            "lowercase": True,
            "strip_accents": False,
        }
    )
    path = st.export(embedder, path=tmp_path / "model")
    tokenizer = embedder.preprocessor.tokenizer
    normalizer = _read_json(path, "tokenizer.json")["normalizer"]
    assert normalizer == tokenizer.normalizer
    hf = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    assert tokenizer(UNICODE_TEXTS) == [
        hf.encode(text, add_special_tokens=False).ids for text in UNICODE_TEXTS
    ]
    ours = _keras(embedder, texts=UNICODE_TEXTS)
    assert (
        np.abs(_sentence_transformer(path).encode(UNICODE_TEXTS) - ours).max()
        <= 1e-5
    )


def test_loaded_export_encodes_unicode_texts_as_sentence_transformers(
    tiny, tmp_path
):
    path = st.export(tiny, path=tmp_path / "model")
    loaded = st.load(path)
    ours = _keras(loaded, texts=UNICODE_TEXTS)
    assert (
        np.abs(_sentence_transformer(path).encode(UNICODE_TEXTS) - ours).max()
        <= 1e-5
    )


@pytest.mark.parametrize("pooling_mode", ["cls", "max"])
def test_other_poolings_without_normalisation(pooling_mode, tmp_path):
    embedder = _tiny(pooling_mode=pooling_mode, normalize=False)
    path = st.export(embedder, path=tmp_path / "model", normalize=False)
    assert _module_types(path) == ["Transformer", "Pooling"]
    pooling = _read_json(path, "1_Pooling/config.json")
    assert pooling[
        f"pooling_mode_{pooling_mode}_token"
        + ("" if pooling_mode == "cls" else "s")
    ]
    ours = _keras(embedder, normalize=False)
    theirs = _sentence_transformer(path).encode(TEXTS)
    assert np.abs(np.linalg.norm(theirs, axis=1) - 1).max() > 0.1
    assert np.abs(theirs - ours).max() <= 1e-4


def test_orthogonal_head_is_a_dense_module_and_truncates(tiny, tmp_path):
    head = keras_mrl.layers.OrthogonalProjection()
    head.adapt(_keras(tiny))
    path = st.export(
        tiny, path=tmp_path / "model", head=head, nesting_dims=[4, 8, 16]
    )
    assert _module_types(path) == [
        "Transformer",
        "Pooling",
        "Normalize",
        "Dense",
        "Normalize",
    ]
    assert _read_json(path, "3_Dense/config.json")["bias"] is False
    ours = _keras(tiny, head)
    assert (
        np.abs(_sentence_transformer(path).encode(TEXTS) - ours).max() <= 1e-5
    )
    short = _sentence_transformer(path, truncate_dim=4).encode(
        TEXTS, normalize_embeddings=True
    )
    prefix = ours[:, :4] / np.linalg.norm(ours[:, :4], axis=1, keepdims=True)
    assert short.shape == (len(TEXTS), 4)
    assert np.abs(short - prefix).max() <= 1e-5


def test_contrastive_model_exports_its_dense_head_with_bias(tiny, tmp_path):
    head = keras.layers.Dense(8)
    head.build((None, 16))
    head.bias.assign(np.linspace(-1, 1, 8).astype("float32"))
    model = keras_mrl.models.ContrastiveModel(tiny, head=head)
    path = st.export(model, path=tmp_path / "model", nesting_dims=[4, 8])
    assert _read_json(path, "3_Dense/config.json")["bias"] is True
    theirs = _sentence_transformer(path).encode(TEXTS)
    assert theirs.shape == (len(TEXTS), 8)
    assert np.abs(theirs - _keras(tiny, head)).max() <= 1e-5


def test_nesting_dims_are_recorded(tiny, tmp_path):
    path = st.export(tiny, path=tmp_path / "model", nesting_dims=[4, 8, 16])
    assert _read_json(path, "config.json")["matryoshka_dimensions"] == [
        4,
        8,
        16,
    ]
    assert _read_json(path, "config_sentence_transformers.json")[
        "matryoshka_dimensions"
    ] == [4, 8, 16]
    with open(os.path.join(path, "README.md"), encoding="utf-8") as file:
        assert "matryoshka_dimensions: [4, 8, 16]" in file.read()
    plain = st.export(tiny, path=tmp_path / "plain")
    assert "matryoshka_dimensions" not in _read_json(plain, "config.json")


def test_export_loads_back_into_keras(tiny, tmp_path):
    path = st.export(tiny, path=tmp_path / "model")
    again = st.load(path)
    assert again.preprocessor.sequence_length == SEQUENCE_LENGTH
    assert np.abs(_keras(again) - _keras(tiny)).max() <= 1e-6


def test_embedder_without_preprocessor_takes_a_tokenizer(tiny, tmp_path):
    bare = keras_hub.models.BertTextEmbedder(tiny.backbone)
    with pytest.raises(ValueError, match="tokenizer"):
        st.export(bare, path=tmp_path / "a")
    path = st.export(
        bare, path=tmp_path / "b", tokenizer=tiny.preprocessor.tokenizer
    )
    # Without a preprocessor the backbone's length is the limit.
    assert _read_json(path, "sentence_bert_config.json")["max_seq_length"] == 16


def test_overwrite_replaces_and_otherwise_refuses(tiny, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="overwrite=True"):
        st.export(tiny, path=target)
    assert os.listdir(target) == ["old.txt"]
    st.export(tiny, path=target, overwrite=True)
    assert "old.txt" not in os.listdir(target)
    assert os.listdir(tmp_path) == ["model"]  # no staging directory left


def test_empty_directory_is_filled(tiny, tmp_path):
    (tmp_path / "model").mkdir()
    path = st.export(tiny, path=tmp_path / "model")
    assert "model.safetensors" in os.listdir(path)


def test_failed_export_leaves_nothing(tiny, tmp_path, monkeypatch):
    import safetensors.numpy

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        st.export(tiny, path=tmp_path / "model")
    assert os.listdir(tmp_path) == []


def test_path_that_is_a_file_raises(tiny, tmp_path):
    (tmp_path / "model").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        st.export(tiny, path=tmp_path / "model", overwrite=True)


def test_non_bert_embedder_raises(tmp_path):
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="BertTextEmbedder"):
        st.export(encoder, path=tmp_path / "model")


def test_other_text_embedder_families_raise_naming_the_supported_ones(
    tmp_path,
):
    embedder = tiny_family_embedder("gemma3")
    with pytest.raises(ValueError) as error:
        st.export(embedder, path=tmp_path / "model")
    message = str(error.value)
    assert "\n" not in message
    for name in (
        "BertTextEmbedder",
        "XLMRobertaTextEmbedder",
        "Qwen3TextEmbedder",
        "got a Gemma3TextEmbedder",
    ):
        assert name in message
    assert not (tmp_path / "model").exists()


def test_qwen3_and_xlm_roberta_errors_name_their_parts(tmp_path):
    path = tmp_path / "model"
    qwen3 = tiny_family_embedder("qwen3")
    bare = keras_hub.models.Qwen3TextEmbedder(qwen3.backbone, None)
    with pytest.raises(ValueError, match="Qwen3TextEmbedderPreprocessor"):
        st.export(bare, path=path)
    tokenizer = qwen3.preprocessor.tokenizer
    window = qwen3.backbone.sliding_window_size
    # Without a preprocessor, KerasHub's attention window bounds the texts;
    # without a window, nothing does.
    qwen3.backbone.sliding_window_size = None
    with pytest.raises(ValueError, match="needs a `sequence_length`"):
        st.export(bare, path=path, tokenizer=tokenizer)
    qwen3.backbone.sliding_window_size = window
    with pytest.raises(ValueError, match="at least 2.*<\\|im_end\\|>.*got 1"):
        st.export(qwen3, path=path, sequence_length=1)
    with pytest.raises(ValueError, match=f"{window} attention window"):
        st.export(qwen3, path=path, sequence_length=window + 1)
    xlm_roberta = tiny_family_embedder("xlm_roberta")
    with pytest.raises(ValueError, match="at least 3.*</s>.*got 2"):
        st.export(xlm_roberta, path=path, sequence_length=2)
    with pytest.raises(ValueError, match="8 position embeddings"):
        st.export(xlm_roberta, path=path, sequence_length=9)
    assert not path.exists()


def test_widths_wider_than_the_output_raise(tiny, tmp_path):
    with pytest.raises(ValueError, match="wider than"):
        st.export(tiny, path=tmp_path / "model", nesting_dims=[8, 32])
    head = keras.layers.Dense(8)
    head.build((None, 16))
    with pytest.raises(ValueError, match="wider than"):
        st.export(
            tiny,
            path=tmp_path / "model",
            head=head,
            nesting_dims=[8, 16],
        )
    assert not (tmp_path / "model").exists()


def test_bad_heads_raise(tiny, tmp_path):
    path = tmp_path / "model"
    narrow = keras.layers.Dense(4)
    narrow.build((None, 8))
    with pytest.raises(ValueError, match="width 8"):
        st.export(tiny, path=path, head=narrow)
    relu = keras.layers.Dense(4, activation="relu")
    relu.build((None, 16))
    with pytest.raises(ValueError, match="'relu'"):
        st.export(tiny, path=path, head=relu)
    with pytest.raises(TypeError, match="OrthogonalProjection"):
        st.export(tiny, path=path, head=keras.layers.ReLU())
    with pytest.raises(ValueError, match="not built"):
        st.export(tiny, path=path, head=keras.layers.Dense(4))
    model = keras_mrl.models.ContrastiveModel(tiny)
    with pytest.raises(ValueError, match="its own head"):
        st.export(model, path=path, head=narrow)


def test_bad_scalars_raise(tiny, tmp_path):
    path = tmp_path / "model"
    with pytest.raises(TypeError, match="normalize"):
        st.export(tiny, path=path, normalize="yes")
    with pytest.raises(TypeError, match="overwrite"):
        st.export(tiny, path=path, overwrite=1)
    with pytest.raises(ValueError, match="position embeddings"):
        st.export(tiny, path=path, sequence_length=17)
    with pytest.raises(ValueError, match="sequence_length"):
        st.export(tiny, path=path, sequence_length=0)
    with pytest.raises(ValueError, match="at least 3.*got 2"):
        st.export(tiny, path=path, sequence_length=2)


def test_path_is_keyword_only(tiny, tmp_path):
    with pytest.raises(TypeError, match="positional argument"):
        st.export(tiny, str(tmp_path / "model"))


# --- The real model. ---


def test_all_minilm_l6_v2_round_trip(tmp_path):
    try:
        source = st.all_minilm_l6_v2_directory(
            cache_dir=str(tmp_path / "models")
        )
    except ImportError as error:
        pytest.skip(f"the offline model wheel is not installed: {error}")
    sentences = first_lines((functools, inspect, itertools, random, string), 24)
    embedder = st.load(source, sequence_length=64)
    ours = keras.ops.convert_to_numpy(
        embedder.encode_text(sentences, verbose=0)
    )
    path = st.export(
        embedder,
        path=tmp_path / "model",
        nesting_dims=[32, 64, 128, 256, 384],
    )
    model = _sentence_transformer(path)
    assert model.max_seq_length == 64
    theirs = model.encode(sentences)
    assert theirs.shape == (24, 384)
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1, atol=1e-5)
    assert np.abs(theirs - ours).max() <= 1e-3
    model.truncate_dim = 64
    short = model.encode(sentences, normalize_embeddings=True)
    prefix = ours[:, :64] / np.linalg.norm(ours[:, :64], axis=1, keepdims=True)
    assert np.abs(short - prefix).max() <= 1e-3


def test_load_refuses_a_directory_with_a_dense_head(tiny, tmp_path):
    # KerasHub's converter would skip the head and give other vectors.
    head = keras.layers.Dense(8, use_bias=False)
    head.build((None, 16))
    path = st.export(tiny, path=tmp_path / "model", head=head)
    with pytest.raises(ValueError, match="'Dense' module"):
        st.load(path)
