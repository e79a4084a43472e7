"""Keras models of keras_mrl."""

from keras_mrl.models._contrastive_model import ContrastiveModel
from keras_mrl.models._matryoshka_adaptor import MatryoshkaAdaptor

__all__ = ["ContrastiveModel", "MatryoshkaAdaptor"]
