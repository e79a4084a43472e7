"""Serving Matryoshka embeddings small: quantization (numpy)."""

from keras_mrl.serving._quantize import hamming_distance
from keras_mrl.serving._quantize import quantize

__all__ = ["hamming_distance", "quantize"]
