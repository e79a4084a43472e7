"""A tiny KerasHub BERT text embedder built from a config (no download)."""

import keras_hub

WORDS = (
    "the a of to and sum mean array axis value return values matrix "
    "sort list file read write open close string number compute given "
    "elements over along first last index"
).split()
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def tiny_embedder(
    sequence_length=12,
    hidden_dim=16,
    *,
    vocabulary=VOCABULARY,
    num_layers=1,
    max_sequence_length=None,
    **embedder_kwargs,
):
    """Returns a BertTextEmbedder of width `hidden_dim`, `num_layers` deep.

    `max_sequence_length` (default `sequence_length`) sizes the position
    embeddings; `embedder_kwargs` go to `BertTextEmbedder` (`pooling_mode`,
    `normalize`).
    """
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=vocabulary, lowercase=True
    )
    preprocessor = keras_hub.models.BertTextEmbedderPreprocessor(
        tokenizer, sequence_length=sequence_length
    )
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=32,
        max_sequence_length=max_sequence_length or sequence_length,
        dropout=0.0,
    )
    return keras_hub.models.BertTextEmbedder(
        backbone, preprocessor, **embedder_kwargs
    )


def pairs(n):
    """`n` (query, document) pairs of the tiny vocabulary."""
    queries, documents = [], []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(3 * i + 1) % len(WORDS)]
        queries.append(f"{a} {b}")
        documents.append(f"return the {a} of {b} values")
    return queries, documents
