"""Writes a KerasHub text embedder as a sentence-transformers directory.

The directory is what `sentence_transformers.SentenceTransformer(path)`
loads: the transformer's weights under Hugging Face's names in
`model.safetensors` with its `config.json` (`BertModel`,
`XLMRobertaModel` or `Qwen3Model`), the tokenizer (`tokenizer.json`,
`tokenizer_config.json`, `special_tokens_map.json`, and BERT's
`vocab.txt` or XLM-RoBERTa's `sentencepiece.bpe.model`), then one module
per step of the Keras model in `modules.json`: pooling, normalisation, an
optional linear head (`Dense`), a final normalisation. Everything is
written with numpy, json, safetensors and the `tokenizers` and
`sentencepiece` packages KerasHub depends on: neither torch nor
sentence-transformers is needed to export.

Gemma3 embedders are not written. EmbeddingGemma's pooling inside the
backbone maps to sentence-transformers' mean pooling and two `Dense`
modules, and KerasHub converts its weights, but its tokenizer is a
SentencePiece BPE with byte fallback and its attention is bidirectional
within sliding windows: neither can be checked here against the vectors
of a real checkpoint offline, and a tiny random model would not exercise
them, so an export could give other vectors unnoticed.

For BERT, two details make sentence-transformers compute what Keras
computes: KerasHub's BERT uses the tanh approximation of GELU, so
`config.json` says `gelu_new`; and the tokenizer normalises texts as the
Keras one does. A `HuggingFaceBertTokenizer` (what `load` gives) is
written with its own `BertNormalizer`, and both sides give the same token
ids but for the few characters its docstring names. A plain KerasHub
`BertTokenizer` is written with its `lowercase` and `strip_accents`
explicit (Hugging Face's default strips accents whenever it lowercases,
KerasHub's does not), but KerasHub normalises some texts in ways no
Hugging Face normaliser repeats, so those still split differently:
KerasHub lowercases by Unicode case folding (ligatures and full-width
letters become ASCII letters, "ß" becomes "ss"), keeps a non-breaking
space inside a word (then unknown), splits words at zero-width,
soft-hyphen and control characters, which Hugging Face drops, and reads a
special token written in a text ("[SEP]") as plain text.

XLM-RoBERTa's position embeddings gain the two rows Hugging Face's
RoBERTa skips (it numbers positions from the padding id plus one), and
its SentencePiece model is written as a unigram `tokenizer.json` under
fairseq's ids with SentencePiece's own normalisation. Qwen3's byte-level
BPE splits texts with GPT-2's pattern, as KerasHub's tokenizer does in
`tf.data`, and ends them with `<|im_end|>`, as KerasHub's preprocessor
does; its last-token pooling is sentence-transformers' `lasttoken`.
"""

import json
import os
import shutil

import numpy as np

from keras_mrl._files import new_directory
from keras_mrl._files import replace_directory
from keras_mrl._validation import check_bool
from keras_mrl._validation import check_optional_positive_int
from keras_mrl._validation import validate_nesting_dims
from keras_mrl.integrations._st_tokenizer import tokenizer_class

_NAMES = {"bert": "BERT", "xlm_roberta": "XLM-RoBERTa", "qwen3": "Qwen3"}
# The families `export` writes: the KerasHub embedder, its tokenizer and
# preprocessor, the poolings sentence-transformers computes alike, and the
# fewest tokens that leave one of text.
_FAMILIES = {
    "bert": (
        "BertTextEmbedder",
        "BertTokenizer",
        "BertTextEmbedderPreprocessor",
        ("mean", "cls", "max"),
        3,
    ),
    "xlm_roberta": (
        "XLMRobertaTextEmbedder",
        "XLMRobertaTokenizer",
        "XLMRobertaTextEmbedderPreprocessor",
        ("mean", "cls", "max"),
        3,
    ),
    "qwen3": (
        "Qwen3TextEmbedder",
        "Qwen3Tokenizer",
        "Qwen3TextEmbedderPreprocessor",
        ("last", "mean"),
        2,
    ),
}
_SPECIAL = ("unk", "sep", "pad", "cls", "mask")


def _import_hub():
    try:
        import keras_hub
        import safetensors.numpy  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"Exporting to sentence-transformers needs keras-hub and "
            f"safetensors ({error}); install them with "
            "`pip install keras-mrl[hub]`."
        ) from error
    return keras_hub


def _numpy(variable):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _split_model(embedder, head):
    """Returns `(embedder, head)` of an embedder or a ContrastiveModel."""
    from keras_mrl.models import ContrastiveModel

    if isinstance(embedder, ContrastiveModel):
        if head is not None:
            raise ValueError(
                "`head` must be None when exporting a ContrastiveModel: its "
                "own head is exported. Pass the embedder itself to export "
                "another head."
            )
        return embedder.embedder, embedder.head
    return embedder, head


def _family(embedder, keras_hub):
    """`"bert"`, `"xlm_roberta"` or `"qwen3"`: a supported embedder's.

    Raises:
        TypeError: for an object that is no KerasHub `TextEmbedder`.
        ValueError: for a `TextEmbedder` of another family, or a pooling
            sentence-transformers does not compute.
    """
    families = {
        family: getattr(keras_hub.models, spec[0])
        for family, spec in _FAMILIES.items()
    }
    names = [f"keras_hub.models.{c.__name__}" for c in families.values()]
    family = next(
        (k for k, c in families.items() if isinstance(embedder, c)), None
    )
    if family is None and isinstance(embedder, keras_hub.models.TextEmbedder):
        raise ValueError(
            f"export writes {', '.join(names[:-1])} and {names[-1]} only, "
            f"got a {type(embedder).__name__}."
        )
    if family is None:
        raise TypeError(
            f"`embedder` must be a {', '.join(names[:-1])} or {names[-1]} (for "
            "instance from keras_mrl.integrations.sentence_transformers."
            "load) or a keras_mrl.models.ContrastiveModel around one, got "
            f"{type(embedder).__name__}."
        )
    poolings = _FAMILIES[family][3]
    if embedder.pooling_mode not in poolings:
        raise ValueError(
            f"The embedder's pooling_mode {embedder.pooling_mode!r} has no "
            f"sentence-transformers equivalent; use one of {poolings}."
        )
    return family


def _head_kernel(head, width):
    """Returns the head's `(kernel (in, out), bias or None)` in numpy."""
    import keras

    from keras_mrl.layers import OrthogonalProjection

    if not isinstance(head, (OrthogonalProjection, keras.layers.Dense)):
        raise TypeError(
            "`head` must be None, a keras_mrl.layers.OrthogonalProjection or "
            f"a linear keras.layers.Dense, got {type(head).__name__}."
        )
    if not head.built:
        raise ValueError(
            "`head` is not built; call it on embeddings (or train it) first."
        )
    if isinstance(head, OrthogonalProjection):
        kernel, bias = head.kernel, None
    else:
        if head.activation is not keras.activations.linear:
            raise ValueError(
                "A Dense `head` must have no activation (a linear map) to be "
                f"exported, got activation {head.activation.__name__!r}."
            )
        kernel, bias = head.kernel, head.bias
    kernel = _numpy(kernel)
    if kernel.shape[0] != width:
        raise ValueError(
            f"`head` takes inputs of width {kernel.shape[0]}, but the "
            f"embedder outputs {width} dimensions."
        )
    return kernel, None if bias is None else _numpy(bias)


def _check_target(path, overwrite):
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(
                f"`path` {path!r} exists and is not a directory; choose a "
                "new directory path."
            )
        if os.listdir(path) and not overwrite:
            raise ValueError(
                f"`path` {path!r} is a directory that is not empty; choose "
                "a new path or pass overwrite=True to replace it."
            )
    return path


def _backbone_weights(backbone, family):
    """Returns the encoder's weights under Hugging Face's names (numpy)."""
    dim = backbone.hidden_dim
    norm_layer = backbone.get_layer("embeddings_layer_norm")
    if family == "bert":
        weights = {
            "embeddings.word_embeddings.weight": backbone.get_layer(
                "token_embedding"
            ).embeddings,
            "embeddings.position_embeddings.weight": backbone.get_layer(
                "position_embedding"
            ).position_embeddings,
            "embeddings.token_type_embeddings.weight": backbone.get_layer(
                "segment_embedding"
            ).embeddings,
        }
        weights = {name: _numpy(v) for name, v in weights.items()}
    else:
        embeddings = backbone.embeddings
        positions = _numpy(embeddings.position_embedding.position_embeddings)
        weights = {
            "embeddings.word_embeddings.weight": _numpy(
                embeddings.token_embedding.embeddings
            ),
            # Hugging Face's RoBERTa numbers the positions of a text from
            # padding_idx + 1 = 2: rows 0 and 1 are never read for a token
            # of text (the padding's row 1 is masked).
            "embeddings.position_embeddings.weight": np.concatenate(
                [np.zeros((2, dim), np.float32), positions]
            ),
            # KerasHub's RoBERTa has no segment embedding: segment 0's row
            # adds nothing.
            "embeddings.token_type_embeddings.weight": np.zeros(
                (1, dim), np.float32
            ),
        }
    weights["embeddings.LayerNorm.weight"] = _numpy(norm_layer.gamma)
    weights["embeddings.LayerNorm.bias"] = _numpy(norm_layer.beta)

    def linear(prefix, kernel, bias):
        # Keras keeps (inputs, outputs), split per head in attention;
        # torch keeps (outputs, inputs).
        kernel = _numpy(kernel)
        if kernel.ndim == 3:
            kernel = kernel.reshape(dim, dim)
        weights[f"{prefix}.weight"] = np.ascontiguousarray(kernel.T)
        weights[f"{prefix}.bias"] = _numpy(bias).reshape(-1)

    def norm(prefix, layer):
        weights[f"{prefix}.weight"] = _numpy(layer.gamma)
        weights[f"{prefix}.bias"] = _numpy(layer.beta)

    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"transformer_layer_{i}")
        attention = block._self_attention_layer
        prefix = f"encoder.layer.{i}"
        for name, dense in (
            ("query", attention.query_dense),
            ("key", attention.key_dense),
            ("value", attention.value_dense),
        ):
            linear(f"{prefix}.attention.self.{name}", dense.kernel, dense.bias)
        linear(
            f"{prefix}.attention.output.dense",
            attention.output_dense.kernel,
            attention.output_dense.bias,
        )
        norm(
            f"{prefix}.attention.output.LayerNorm",
            block._self_attention_layer_norm,
        )
        linear(
            f"{prefix}.intermediate.dense",
            block._feedforward_intermediate_dense.kernel,
            block._feedforward_intermediate_dense.bias,
        )
        linear(
            f"{prefix}.output.dense",
            block._feedforward_output_dense.kernel,
            block._feedforward_output_dense.bias,
        )
        norm(f"{prefix}.output.LayerNorm", block._feedforward_layer_norm)
    if family == "bert":
        pooler = backbone.get_layer("pooled_dense")
        linear("pooler.dense", pooler.kernel, pooler.bias)
    else:
        # XLMRobertaModel has a pooler, which sentence-transformers never
        # reads; KerasHub's backbone has none. Zeros keep transformers from
        # initialising (and warning about) missing weights.
        weights["pooler.dense.weight"] = np.zeros((dim, dim), np.float32)
        weights["pooler.dense.bias"] = np.zeros((dim,), np.float32)
    return weights


def _bert_config(backbone, pad_token_id):
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_heads,
        "intermediate_size": backbone.intermediate_dim,
        # KerasHub's BERT computes the tanh approximation of GELU.
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": backbone.dropout,
        "attention_probs_dropout_prob": backbone.dropout,
        "max_position_embeddings": backbone.max_sequence_length,
        "type_vocab_size": backbone.num_segments,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }
    return config


def _xlm_roberta_config(backbone):
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_heads,
        "intermediate_size": backbone.intermediate_dim,
        # KerasHub's RoBERTa computes the exact (erf) GELU.
        "hidden_act": "gelu",
        "hidden_dropout_prob": backbone.dropout,
        "attention_probs_dropout_prob": backbone.dropout,
        # Two rows before the first position of a text (see the weights).
        "max_position_embeddings": backbone.max_sequence_length + 2,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }


def _qwen3_config(backbone, tokenizer, sequence_length):
    factor = backbone.rope_scaling_factor
    rope = {"rope_type": "default", "rope_theta": backbone.rope_max_wavelength}
    if factor != 1:
        # KerasHub divides the positions by the factor: linear scaling.
        rope.update(rope_type="linear", factor=factor)
    return {
        "architectures": ["Qwen3Model"],
        "model_type": "qwen3",
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        "intermediate_size": backbone.intermediate_dim,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_query_heads,
        "num_key_value_heads": backbone.num_key_value_heads,
        "head_dim": backbone.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": backbone.layer_norm_epsilon,
        "rope_theta": backbone.rope_max_wavelength,
        "rope_parameters": rope,
        "max_position_embeddings": max(sequence_length, 32768),
        "attention_bias": False,
        "attention_dropout": backbone.dropout,
        # Every text the export takes fits KerasHub's window.
        "use_sliding_window": False,
        "tie_word_embeddings": backbone.tie_word_embeddings,
        "eos_token_id": tokenizer.end_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "torch_dtype": "float32",
    }


def _qwen3_weights(backbone):
    """Returns the Qwen3 weights under `Qwen3Model`'s names (numpy)."""
    dim = backbone.hidden_dim

    def linear(kernel):
        # Keras keeps (inputs, outputs), split per head in attention
        # ((hidden, heads, head_dim) in, (heads, head_dim, hidden) out);
        # torch keeps (outputs, inputs).
        kernel = _numpy(kernel)
        if kernel.ndim == 3 and kernel.shape[0] == dim:
            kernel = kernel.reshape(dim, -1)
        elif kernel.ndim == 3:
            kernel = kernel.reshape(-1, dim)
        return np.ascontiguousarray(kernel.T)

    weights = {
        "embed_tokens.weight": _numpy(
            backbone.get_layer("token_embedding").embeddings
        ),
        "norm.weight": _numpy(
            backbone.get_layer("sequence_output_layernorm").scale
        ),
    }
    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"transformer_layer_{i}")
        attention = block._self_attention_layer
        prefix = f"layers.{i}"
        weights.update(
            {
                f"{prefix}.input_layernorm.weight": _numpy(
                    block._self_attention_layernorm.scale
                ),
                f"{prefix}.self_attn.q_proj.weight": linear(
                    attention._query_dense.kernel
                ),
                f"{prefix}.self_attn.q_norm.weight": _numpy(
                    attention._query_dense_layer_norm.scale
                ),
                f"{prefix}.self_attn.k_proj.weight": linear(
                    attention._key_dense.kernel
                ),
                f"{prefix}.self_attn.k_norm.weight": _numpy(
                    attention._key_dense_layer_norm.scale
                ),
                f"{prefix}.self_attn.v_proj.weight": linear(
                    attention._value_dense.kernel
                ),
                f"{prefix}.self_attn.o_proj.weight": linear(
                    attention._output_dense.kernel
                ),
                f"{prefix}.mlp.gate_proj.weight": linear(
                    block._feedforward_gate_dense.kernel
                ),
                f"{prefix}.mlp.up_proj.weight": linear(
                    block._feedforward_intermediate_dense.kernel
                ),
                f"{prefix}.mlp.down_proj.weight": linear(
                    block._feedforward_output_dense.kernel
                ),
                f"{prefix}.post_attention_layernorm.weight": _numpy(
                    block._feedforward_layernorm.scale
                ),
            }
        )
    return weights


def _model_config(family, backbone, tokenizer, sequence_length, nesting_dims):
    if family == "bert":
        config = _bert_config(backbone, tokenizer.pad_token_id)
    elif family == "xlm_roberta":
        config = _xlm_roberta_config(backbone)
    else:
        config = _qwen3_config(backbone, tokenizer, sequence_length)
    if nesting_dims is not None:
        # Read by vLLM to allow a `dimensions` request parameter.
        config["is_matryoshka"] = True
        config["matryoshka_dimensions"] = list(nesting_dims)
    return config


def _tokenizer_files(tokenizer, sequence_length):
    """Returns `{file name: text}` of the tokenizer's Hugging Face files."""
    vocabulary = list(tokenizer.get_vocabulary())
    ids = {token: i for i, token in enumerate(vocabulary)}
    special = {
        "unk": tokenizer.oov_token,
        "sep": tokenizer.sep_token,
        "pad": tokenizer.pad_token,
        "cls": tokenizer.cls_token,
        "mask": tokenizer.mask_token,
    }
    if isinstance(tokenizer, tokenizer_class()):
        normalizer = dict(tokenizer.normalizer)
    else:
        normalizer = {
            "type": "BertNormalizer",
            "clean_text": True,
            "handle_chinese_chars": bool(tokenizer.split_on_cjk),
            "strip_accents": bool(tokenizer.strip_accents),
            "lowercase": bool(tokenizer.lowercase),
        }
    lowercase = normalizer["lowercase"]
    strip_accents = normalizer["strip_accents"]
    cjk = normalizer["handle_chinese_chars"]
    special_map = {f"{k}_token": special[k] for k in _SPECIAL}
    tokenizer_config = dict(
        special_map,
        do_lower_case=lowercase,
        strip_accents=strip_accents,
        tokenize_chinese_chars=cjk,
        do_basic_tokenize=True,
        never_split=None,
        tokenizer_class="BertTokenizer",
        model_max_length=sequence_length,
    )

    def template(*parts):
        return [
            (
                {"SpecialToken": {"id": part, "type_id": type_id}}
                if part.startswith("[")
                else {"Sequence": {"id": part, "type_id": type_id}}
            )
            for part, type_id in parts
        ]

    cls, sep = special["cls"], special["sep"]
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": ids[token],
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for token in sorted(set(special.values()), key=ids.get)
        ],
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": template((cls, 0), ("A", 0), (sep, 0)),
            "pair": template((cls, 0), ("A", 0), (sep, 0), ("B", 1), (sep, 1)),
            "special_tokens": {
                token: {"id": token, "ids": [ids[token]], "tokens": [token]}
                for token in (cls, sep)
            },
        },
        "decoder": {
            "type": "WordPiece",
            "prefix": tokenizer.suffix_indicator,
            "cleanup": True,
        },
        "model": {
            "type": "WordPiece",
            "unk_token": special["unk"],
            "continuing_subword_prefix": tokenizer.suffix_indicator,
            "max_input_chars_per_word": 100,
            "vocab": ids,
        },
    }
    return {
        "vocab.txt": "".join(token + "\n" for token in vocabulary),
        "tokenizer.json": json.dumps(tokenizer_json, ensure_ascii=False),
        "tokenizer_config.json": _json(tokenizer_config),
        "special_tokens_map.json": _json(special_map),
    }


def _xlm_roberta_tokenizer_files(tokenizer, sequence_length):
    """Returns `{file name: text or bytes}` of an XLM-RoBERTa tokenizer.

    `tokenizer.json` is the SentencePiece unigram model under fairseq's
    ids, which KerasHub's `XLMRobertaTokenizer` uses too: `<s>`, `<pad>`,
    `</s>`, `<unk>` first, then every piece one place later than in the
    proto, then `<mask>`. The normaliser and pre-tokenizer are those
    SentencePiece applies (its precompiled character map, extra spaces
    removed, spaces as "▁" and one before the text), as transformers'
    own conversion writes them. `sentencepiece.bpe.model` is the proto
    itself, which KerasHub's loader reads.
    """
    import tokenizers
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex
    from tokenizers import decoders
    from tokenizers import normalizers
    from tokenizers import pre_tokenizers
    from tokenizers import processors

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.proto)
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    vocabulary = [(token, 0.0) for token in special]
    vocabulary += [(piece.piece, piece.score) for piece in proto.pieces[3:]]
    vocabulary.append(("<mask>", 0.0))
    hf = tokenizers.Tokenizer(
        tokenizers.models.Unigram(vocabulary, unk_id=3, byte_fallback=False)
    )
    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [
            normalizers.Replace(Regex(r"\A +| +\z"), ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:
        # Metaspace adds no "▁" before a text that starts with one;
        # SentencePiece does.
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
        hf.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="always", split=False
        )
    hf.normalizer = normalizers.Sequence(steps)
    hf.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    hf.add_special_tokens(special + ["<mask>"])
    hf.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    special_map = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    tokenizer_config = dict(
        special_map,
        tokenizer_class="XLMRobertaTokenizer",
        model_max_length=sequence_length,
    )
    return {
        "sentencepiece.bpe.model": bytes(tokenizer.proto),
        "tokenizer.json": hf.to_str(),
        "tokenizer_config.json": _json(tokenizer_config),
        "special_tokens_map.json": _json(special_map),
    }


def _qwen3_tokenizer_files(tokenizer, sequence_length):
    """Returns `{file name: text}` of a Qwen3 byte-level BPE tokenizer.

    The vocabulary and merges are KerasHub's; texts are split with GPT-2's
    pattern, which KerasHub's byte-pair tokenizer applies in `tf.data`
    (Qwen's own pattern differs on digits and punctuation), and end with
    `<|im_end|>`, which KerasHub's Qwen3 preprocessor appends.
    """
    import tokenizers
    from tokenizers import decoders
    from tokenizers import pre_tokenizers
    from tokenizers import processors

    merges = [
        tuple(merge.split(" "))
        for merge in tokenizer.merges
        if not merge.lstrip().startswith("#version:")
    ]
    hf = tokenizers.Tokenizer(
        tokenizers.models.BPE(vocab=dict(tokenizer.vocabulary), merges=merges)
    )
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=True
    )
    hf.decoder = decoders.ByteLevel()
    end, pad = tokenizer.end_token, tokenizer.pad_token
    special = list(tokenizer.unsplittable_tokens or [])
    hf.add_special_tokens(sorted(set(special + [end, pad])))
    hf.post_processor = processors.TemplateProcessing(
        single=f"$A {end}",
        pair=f"$A {end} $B:1 {end}:1",
        special_tokens=[(end, tokenizer.end_token_id)],
    )
    special_map = {"eos_token": end, "pad_token": pad}
    tokenizer_config = dict(
        special_map,
        tokenizer_class="PreTrainedTokenizerFast",
        model_max_length=sequence_length,
        padding_side="right",
    )
    return {
        "tokenizer.json": hf.to_str(),
        "tokenizer_config.json": _json(tokenizer_config),
        "special_tokens_map.json": _json(special_map),
    }


def _json(value):
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _model_card(name, width, sequence_length, nesting_dims):
    front = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags:",
        "- sentence-transformers",
        "- feature-extraction",
        "- sentence-similarity",
    ]
    if nesting_dims is not None:
        front += [
            "- matryoshka",
            f"matryoshka_dimensions: {list(nesting_dims)}",
        ]
    smallest = width if nesting_dims is None else nesting_dims[0]
    body = [
        "---",
        "",
        "# Sentence embedder exported by keras-mrl",
        "",
        f"{'An' if name[0] in 'AEIOUX' else 'A'} {name} sentence embedder "
        f"of {width} dimensions (inputs of up to "
        f"{sequence_length} tokens), fine-tuned in Keras and exported by "
        "`keras_mrl.integrations.sentence_transformers.export`.",
        "",
    ]
    if nesting_dims is not None:
        body += [
            "It was trained with Matryoshka Representation Learning: the "
            "first `m` dimensions of an embedding are an embedding of their "
            f"own for each `m` in {list(nesting_dims)}.",
            "",
        ]
    body += [
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f"model = SentenceTransformer(path, truncate_dim={smallest})",
        "embeddings = model.encode(texts, normalize_embeddings=True)",
        "```",
        "",
    ]
    return "\n".join(front + body)


def export(
    embedder,
    *,
    path,
    head=None,
    nesting_dims=None,
    normalize=True,
    tokenizer=None,
    sequence_length=None,
    overwrite=False,
):
    """Writes a KerasHub text embedder as a sentence-transformers directory.

    `sentence_transformers.SentenceTransformer(path)` then encodes texts to
    the vectors of the Keras model (up to float rounding): the embedder's
    transformer (BERT, XLM-RoBERTa or Qwen3), its pooling (mean, cls or
    max; Qwen3's last token or mean) and its own normalisation, then
    `head` (or a `ContrastiveModel`'s head) as a `Dense` module without
    bias (`OrthogonalProjection`) or with the `Dense` layer's bias, then,
    with `normalize`, an L2 normalisation. The widths `nesting_dims` are
    recorded in `config.json` (`matryoshka_dimensions`, which vLLM reads),
    `config_sentence_transformers.json` and the model card `README.md`;
    serve a prefix with `SentenceTransformer(path, truncate_dim=m)` and
    `encode(..., normalize_embeddings=True)`, which renormalises after
    cutting.

    The exported tokenizer gives the Keras tokenizer's ids: XLM-RoBERTa's
    SentencePiece and Qwen3's byte-level BPE on every text but one that
    writes out a special token ("<s>", "<|im_end|>"), BERT's on every text
    when it is a
    `keras_mrl.integrations.sentence_transformers.HuggingFaceBertTokenizer`
    (but for the characters its docstring names); a plain KerasHub
    `BertTokenizer` still splits some texts differently: KerasHub
    lowercases by Unicode case folding (ligatures and full-width letters
    become ASCII letters), keeps a non-breaking space inside a word,
    splits words at zero-width, soft-hyphen and control characters, which
    Hugging Face drops, and reads a special token written in a text
    ("[SEP]") as plain text.

    The directory is written next to `path` and renamed at the end, so an
    interrupted export leaves no half-written model; it gets the
    permissions the umask gives a new directory. A BERT directory without
    a `Dense` module loads back into Keras with
    `keras_mrl.integrations.sentence_transformers.load`. Gemma3 embedders
    raise: the module docstring says why.

    Args:
        embedder: a `keras_hub.models.BertTextEmbedder`,
            `keras_hub.models.XLMRobertaTextEmbedder` or
            `keras_hub.models.Qwen3TextEmbedder`, or a
            `keras_mrl.models.ContrastiveModel` around one (its head is
            exported too).
        path: the directory to write; it must not exist or be empty,
            unless `overwrite`.
        head: optional `keras_mrl.layers.OrthogonalProjection` or linear
            `keras.layers.Dense` applied after the embedder (the `head` of
            the `ContrastiveModel` it was trained in).
        nesting_dims: optional increasing widths the model was trained
            at, none wider than its output.
        normalize: bool, whether the exported model L2-normalises its
            output.
        tokenizer: the family's KerasHub tokenizer
            (`keras_hub.models.BertTokenizer`, `XLMRobertaTokenizer`,
            `Qwen3Tokenizer`) to export when the embedder has no
            preprocessor; None uses the preprocessor's.
        sequence_length: optional int, the `max_seq_length` of the exported
            model, at least 3 ([CLS], a token of text, [SEP]; Qwen3: 2, a
            token and `<|im_end|>`); None keeps the preprocessor's
            `sequence_length` (without a preprocessor, the backbone's
            `max_sequence_length`, or Qwen3's `sliding_window_size`).
        overwrite: bool, whether to replace a non-empty `path`.

    Returns:
        The absolute path of the written directory.

    Raises:
        TypeError: for an embedder that is no KerasHub `TextEmbedder`, or a
            head of another type.
        ValueError: for a `TextEmbedder` of another family (Gemma3), a
            `path` that is a file or a non-empty directory (without
            `overwrite`), widths wider than the output, a
            `sequence_length` too short or beyond the position embeddings
            (Qwen3: the attention window), or missing where nothing bounds
            it, a missing tokenizer, or a head whose input width is not
            the embedder's.
        ImportError: when keras-hub or safetensors is not installed.

    Example:

    >>> import os, tempfile
    >>> import keras_hub
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sum",
    ...               "of", "the", "array"]
    >>> tokenizer = keras_hub.models.BertTokenizer(
    ...     vocabulary=vocabulary, lowercase=True)
    >>> backbone = keras_hub.models.BertBackbone(
    ...     vocabulary_size=len(vocabulary), num_layers=1, num_heads=2,
    ...     hidden_dim=8, intermediate_dim=16, max_sequence_length=16)
    >>> embedder = keras_hub.models.BertTextEmbedder(
    ...     backbone, keras_hub.models.BertTextEmbedderPreprocessor(
    ...         tokenizer, sequence_length=16))
    >>> from keras_mrl.integrations import sentence_transformers as st
    >>> path = st.export(
    ...     embedder, path=os.path.join(tempfile.mkdtemp(), "model"),
    ...     nesting_dims=[4, 8])
    >>> sorted(os.listdir(path))[:4]
    ['1_Pooling', '2_Normalize', 'README.md', 'config.json']
    >>> from sentence_transformers import (
    ...     SentenceTransformer)  # doctest: +SKIP
    >>> SentenceTransformer(path, truncate_dim=4).encode(
    ...     ["the sum of the array"]).shape  # doctest: +SKIP
    (1, 4)
    """
    keras_hub = _import_hub()
    embedder, head = _split_model(embedder, head)
    family = _family(embedder, keras_hub)
    normalize = check_bool(normalize, "normalize")
    overwrite = check_bool(overwrite, "overwrite")
    sequence_length = check_optional_positive_int(
        sequence_length, "sequence_length"
    )
    backbone = embedder.backbone
    width = backbone.hidden_dim
    head_weights = None if head is None else _head_kernel(head, width)
    out_width = width if head_weights is None else head_weights[0].shape[1]
    if nesting_dims is not None:
        nesting_dims = validate_nesting_dims(
            nesting_dims, out_width, name="nesting_dims"
        )
    preprocessor = embedder.preprocessor
    if tokenizer is None and preprocessor is not None:
        tokenizer = preprocessor.tokenizer
    _, tokenizer_type, preprocessor_type, _, min_length = _FAMILIES[family]
    if not isinstance(tokenizer, getattr(keras_hub.models, tokenizer_type)):
        raise ValueError(
            "The export needs the embedder's tokenizer: give the embedder a "
            f"{preprocessor_type} or pass tokenizer=keras_hub.models."
            f"{tokenizer_type}(...); got {type(tokenizer).__name__}."
        )
    # Position embeddings (BERT, XLM-RoBERTa) or KerasHub's attention
    # window (Qwen3) bound the length.
    max_length = getattr(backbone, "max_sequence_length", None)
    if family == "qwen3":
        max_length = backbone.sliding_window_size
    if sequence_length is None:
        sequence_length = (
            max_length if preprocessor is None else preprocessor.sequence_length
        )
    if sequence_length is None:
        raise ValueError(
            "The export needs a `sequence_length` when the embedder has no "
            f"preprocessor: a {type(backbone).__name__} has no position "
            "embeddings to bound it."
        )
    if sequence_length < min_length:
        parts = {
            "bert": "[CLS], a token of text, [SEP]",
            "xlm_roberta": "<s>, a token of text, </s>",
            "qwen3": "a token of text, <|im_end|>",
        }[family]
        raise ValueError(
            f"`sequence_length` must be at least {min_length} ({parts}; "
            "with fewer every text has the same vector), got "
            f"{sequence_length}."
        )
    if max_length is not None and sequence_length > max_length:
        what = (
            "attention window" if family == "qwen3" else "position embeddings"
        )
        raise ValueError(
            f"`sequence_length` {sequence_length} exceeds the backbone's "
            f"{max_length} {what}."
        )
    path = _check_target(path, overwrite)

    modules = [("", "Transformer"), ("1_Pooling", "Pooling")]
    if embedder.normalize:
        modules.append(("2_Normalize", "Normalize"))
    if head_weights is not None:
        modules.append((f"{len(modules)}_Dense", "Dense"))
    if normalize and modules[-1][1] != "Normalize":
        modules.append((f"{len(modules)}_Normalize", "Normalize"))
    files = {
        "bert": _tokenizer_files,
        "xlm_roberta": _xlm_roberta_tokenizer_files,
        "qwen3": _qwen3_tokenizer_files,
    }[family](tokenizer, sequence_length)
    files["config.json"] = _json(
        _model_config(
            family, backbone, tokenizer, sequence_length, nesting_dims
        )
    )
    files["modules.json"] = _json(
        [
            {
                "idx": i,
                "name": str(i),
                "path": folder,
                "type": f"sentence_transformers.models.{kind}",
            }
            for i, (folder, kind) in enumerate(modules)
        ]
    )
    files["sentence_bert_config.json"] = _json(
        {"max_seq_length": sequence_length, "do_lower_case": False}
    )
    st_config = {
        "__version__": {},
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    if nesting_dims is not None:
        st_config["matryoshka_dimensions"] = list(nesting_dims)
    files["config_sentence_transformers.json"] = _json(st_config)
    files["README.md"] = _model_card(
        _NAMES[family], out_width, sequence_length, nesting_dims
    )
    pooling = embedder.pooling_mode
    files["1_Pooling/config.json"] = _json(
        {
            "word_embedding_dimension": width,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_lasttoken": pooling == "last",
        }
    )
    for folder, kind in modules:
        if kind == "Normalize":
            files[f"{folder}/config.json"] = _json({})
        elif kind == "Dense":
            files[f"{folder}/config.json"] = _json(
                {
                    "in_features": width,
                    "out_features": out_width,
                    "bias": head_weights[1] is not None,
                    "activation_function": "torch.nn.modules.linear.Identity",
                }
            )

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    building = new_directory(parent, ".export-")
    try:
        for name, content in files.items():
            os.makedirs(
                os.path.join(building, os.path.dirname(name)), exist_ok=True
            )
            if isinstance(content, bytes):
                with open(os.path.join(building, name), "wb") as file:
                    file.write(content)
                continue
            with open(
                os.path.join(building, name), "w", encoding="utf-8"
            ) as file:
                file.write(content)
        _save_tensors(
            (
                _qwen3_weights(backbone)
                if family == "qwen3"
                else _backbone_weights(backbone, family)
            ),
            os.path.join(building, "model.safetensors"),
        )
        if head_weights is not None:
            kernel, bias = head_weights
            tensors = {"linear.weight": np.ascontiguousarray(kernel.T)}
            if bias is not None:
                tensors["linear.bias"] = bias
            dense = next(f for f, kind in modules if kind == "Dense")
            _save_tensors(
                tensors, os.path.join(building, dense, "model.safetensors")
            )
        replace_directory(building, path)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return path


def _save_tensors(tensors, path):
    import safetensors.numpy

    # Written by Python, like the other files: safetensors' save_file makes
    # its files private (0600) whatever the umask.
    data = safetensors.numpy.save(tensors, metadata={"format": "pt"})
    with open(path, "wb") as file:
        file.write(data)
