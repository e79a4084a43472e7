"""Serving Matryoshka embeddings small: quantization (numpy), and export of
an embedder cut to one width to SavedModel, ONNX or LiteRT."""

from keras_mrl.serving._export import export
from keras_mrl.serving._quantize import hamming_distance
from keras_mrl.serving._quantize import quantize

__all__ = ["export", "hamming_distance", "quantize"]
