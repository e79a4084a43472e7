"""Serving Matryoshka embeddings small: quantization (numpy)."""

from keras_mrl.serving._quantize import hamming_distance
from keras_mrl.serving._quantize import quantize
from keras_mrl.serving._export import export_sentence_transformer

__all__ = ["export_sentence_transformer", "hamming_distance", "quantize"]
