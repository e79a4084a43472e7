"""Serving Matryoshka embeddings small: quantization (numpy)."""

from keras_mrl.serving.quantize import hamming_distance
from keras_mrl.serving.quantize import quantize
from keras_mrl.serving.export import export_sentence_transformer
