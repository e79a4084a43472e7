"""Serving Matryoshka embeddings small: quantization (numpy)."""

from keras_mrl.serving._export import export_sentence_transformer
from keras_mrl.serving._quantize import hamming_distance
from keras_mrl.serving._quantize import quantize

__all__ = ["export_sentence_transformer", "hamming_distance", "quantize"]
