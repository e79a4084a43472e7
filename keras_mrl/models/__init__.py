"""Keras models of keras_mrl."""

from keras_mrl.models._contrastive_model import ContrastiveModel
from keras_mrl.models._depth import DepthSampling
from keras_mrl.models._depth import truncate_layers
from keras_mrl.models._matryoshka_adaptor import MatryoshkaAdaptor

__all__ = [
    "ContrastiveModel",
    "DepthSampling",
    "MatryoshkaAdaptor",
    "truncate_layers",
]
