"""Tiny random-weight KerasHub text embedders of every family (no download).

`tiny_family_embedder(family)` builds a `TextEmbedder` of width 16, one
layer and two heads, for the four families of KerasHub 0.32: BERT (the
WordPiece vocabulary of `_tiny_bert`), XLM-RoBERTa and Gemma3 (a unigram
SentencePiece model trained in-process on the tiny corpus, once per
process) and Qwen3 (a byte-level BPE vocabulary and merges written here).
"""

import functools
import io

import keras_hub
from _tiny_bert import WORDS
from _tiny_bert import pairs
from _tiny_bert import tiny_embedder as tiny_bert_embedder

FAMILIES = ("bert", "xlm_roberta", "gemma3", "qwen3")
# The pooling modes each TextEmbedder offers; "backbone" is Gemma3's
# in-backbone pooling (EmbeddingGemma: mean, two projections, unit norm).
POOLINGS = {
    "bert": ("mean", "cls", "max"),
    "xlm_roberta": ("mean", "cls", "max"),
    "gemma3": ("last", "mean", "backbone"),
    "qwen3": ("last", "mean"),
}
EMBEDDERS = {
    "bert": "BertTextEmbedder",
    "xlm_roberta": "XLMRobertaTextEmbedder",
    "gemma3": "Gemma3TextEmbedder",
    "qwen3": "Qwen3TextEmbedder",
}
# The corpus the SentencePiece models learn their pieces from.
CORPUS = pairs(64)[0] + pairs(64)[1] + [" ".join(WORDS)]


@functools.cache
def _sentencepiece_proto(special):
    """A unigram SentencePiece model of the tiny corpus, as bytes.

    `special` orders the special pieces: XLM-RoBERTa's `<unk> <s> </s>`
    (its tokenizer shifts the ids by one for fairseq's `<pad>`), Gemma's
    `<pad> <eos> <bos> <unk>`.
    """
    import sentencepiece

    if special == "xlm_roberta":
        ids = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    else:
        ids = dict(
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            pad_piece="<pad>",
            eos_piece="<eos>",
            bos_piece="<bos>",
            unk_piece="<unk>",
        )
    model = io.BytesIO()
    # The corpus is too small for a fixed vocabulary size: the trainer
    # keeps what it finds (about 60 pieces).
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=128,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
        **ids,
    )
    return model.getvalue()


def _bytes_to_unicode():
    """GPT-2's map of the 256 bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters)))


def _bpe(word, ranks):
    """GPT-2's BPE of `word` (a string) under the merge `ranks`."""
    pieces = list(word)
    while len(pieces) > 1:
        pairs = [
            (ranks.get(p), i) for i, p in enumerate(zip(pieces, pieces[1:]))
        ]
        known = [(rank, i) for rank, i in pairs if rank is not None]
        if not known:
            break
        best = pieces[min(known)[1]], pieces[min(known)[1] + 1]
        merged, i = [], 0
        while i < len(pieces):
            if tuple(pieces[i : i + 2]) == best:
                merged.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
    return pieces


@functools.cache
def byte_level_bpe():
    """`(vocabulary, merges)` of a byte-level BPE over the tiny words.

    Every byte is a token, so any text encodes; each word, alone and after
    a space ("Ġ"), becomes one token: what BPE leaves of it is merged
    left to right by new merges, ranked after the older ones so that the
    words before still merge as they did.
    """
    characters = list(_bytes_to_unicode().values())
    vocabulary = {c: i for i, c in enumerate(characters)}
    ranks = {}
    for word in WORDS:
        for spelled in (word, "Ġ" + word):
            pieces = _bpe(spelled, ranks)
            while len(pieces) > 1:
                ranks[pieces[0], pieces[1]] = len(ranks)
                pieces = [pieces[0] + pieces[1]] + pieces[2:]
                vocabulary.setdefault(pieces[0], len(vocabulary))
    for special in ("<|endoftext|>", "<|im_end|>"):
        vocabulary[special] = len(vocabulary)
    merges = [
        f"{a} {b}" for (a, b), _ in sorted(ranks.items(), key=lambda x: x[1])
    ]
    return vocabulary, merges


def xlm_roberta_tokenizer():
    return keras_hub.models.XLMRobertaTokenizer(
        proto=_sentencepiece_proto("xlm_roberta")
    )


def gemma3_tokenizer():
    return keras_hub.models.Gemma3Tokenizer(
        proto=_sentencepiece_proto("gemma"), has_vision_tokens=False
    )


def qwen3_tokenizer():
    vocabulary, merges = byte_level_bpe()
    return keras_hub.models.Qwen3Tokenizer(
        vocabulary=dict(vocabulary), merges=list(merges)
    )


def tiny_family_embedder(
    family,
    *,
    pooling_mode=None,
    normalize=True,
    sequence_length=8,
    hidden_dim=16,
    num_layers=1,
):
    """A random-weight `TextEmbedder` of `family` (one of `FAMILIES`).

    `pooling_mode` None takes the family's default; Gemma3's "backbone"
    builds an EmbeddingGemma-style backbone that pools, projects
    (`hidden_dim` to `2 * hidden_dim` to `hidden_dim`) and normalises
    itself. Dropout is 0.
    """
    models = keras_hub.models
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    options = {"normalize": normalize}
    if pooling_mode is not None and pooling_mode != "backbone":
        options["pooling_mode"] = pooling_mode
    if family == "bert":
        return tiny_bert_embedder(
            sequence_length, hidden_dim, num_layers=num_layers, **options
        )
    if family == "xlm_roberta":
        tokenizer = xlm_roberta_tokenizer()
        backbone = models.XLMRobertaBackbone(
            vocabulary_size=tokenizer.vocabulary_size(),
            num_layers=num_layers,
            num_heads=2,
            hidden_dim=hidden_dim,
            intermediate_dim=2 * hidden_dim,
            dropout=0.0,
            max_sequence_length=sequence_length,
        )
        preprocessor = models.XLMRobertaTextEmbedderPreprocessor(
            tokenizer, sequence_length=sequence_length
        )
        return models.XLMRobertaTextEmbedder(backbone, preprocessor, **options)
    if family == "gemma3":
        tokenizer = gemma3_tokenizer()
        in_backbone = pooling_mode == "backbone"
        backbone = models.Gemma3Backbone(
            vocabulary_size=tokenizer.vocabulary_size(),
            image_size=16,
            num_layers=num_layers,
            num_query_heads=2,
            num_key_value_heads=1,
            hidden_dim=hidden_dim,
            intermediate_dim=2 * hidden_dim,
            head_dim=hidden_dim // 2,
            use_bidirectional_attention=True,
            is_embedding_model=in_backbone,
            pooling_intermediate_dim=2 * hidden_dim if in_backbone else None,
            embedding_dim=hidden_dim if in_backbone else None,
        )
        preprocessor = models.Gemma3TextEmbedderPreprocessor(
            tokenizer, sequence_length=sequence_length
        )
        return models.Gemma3TextEmbedder(backbone, preprocessor, **options)
    tokenizer = qwen3_tokenizer()
    backbone = models.Qwen3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=num_layers,
        num_query_heads=2,
        num_key_value_heads=1,
        head_dim=hidden_dim // 2,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
    )
    preprocessor = models.Qwen3TextEmbedderPreprocessor(
        tokenizer, sequence_length=sequence_length
    )
    return models.Qwen3TextEmbedder(backbone, preprocessor, **options)
