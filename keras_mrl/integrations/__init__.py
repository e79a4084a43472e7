"""Other libraries' model formats, read and written by keras_mrl.

`keras_mrl.integrations.sentence_transformers` loads sentence-transformers
BERT directories into KerasHub and exports KerasHub BERT embedders back to
them.
"""

from keras_mrl.integrations import sentence_transformers

__all__ = ["sentence_transformers"]
