"""KerasHub's BERT tokenizer with Hugging Face's text normalisation.

`tokenizer_class()` builds `HuggingFaceBertTokenizer`, public as
`keras_mrl.integrations.sentence_transformers.HuggingFaceBertTokenizer`:
KerasHub's WordPiece on texts normalised the way Hugging Face's
`BertNormalizer` does, so that both libraries give the same token ids
(KerasHub's own normalisation differs on non-breaking spaces, zero-width
and other format characters, control characters, ligatures and full-width
letters). The class subclasses KerasHub's tokenizer, an optional
dependency, so it is built on first use.
"""

import functools
import json
import re
import unicodedata


def read_json(path):
    """Returns the JSON value in the file `path`; ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path!r} is not valid JSON: {error}.") from error


def read_json_object(path):
    value = read_json(path)
    if not isinstance(value, dict):
        raise ValueError(
            f"{path!r} must hold a JSON object, got a {type(value).__name__}."
        )
    return value


def wordpiece_vocabulary(tokenizer_json):
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
    >>> keras_mrl.integrations._st_tokenizer.wordpiece_vocabulary(path)
    ['[PAD]', 'a', 'b']
    """
    model = read_json_object(tokenizer_json).get("model")
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


def check_normalizer(normalizer):
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
def tokenizer_class():
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

        >>> from keras_mrl.integrations import sentence_transformers as st
        >>> tokenizer = st.HuggingFaceBertTokenizer(
        ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
        ...                 "odd", "space", "fi"],
        ...     normalizer={"type": "BertNormalizer", "lowercase": True})
        >>> [int(i) for i in tokenizer("Odd\\u00a0space \\ufb01 fi")]
        [5, 6, 1, 7]
        """

        def __init__(self, vocabulary=None, *, normalizer=None, **kwargs):
            normalizer = check_normalizer(normalizer)
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

    # Named by its public path, where users find it, not by this builder.
    HuggingFaceBertTokenizer.__qualname__ = "HuggingFaceBertTokenizer"
    HuggingFaceBertTokenizer.__module__ = (
        "keras_mrl.integrations.sentence_transformers"
    )
    return HuggingFaceBertTokenizer
