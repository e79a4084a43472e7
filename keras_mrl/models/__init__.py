"""Keras models of keras_mrl."""

from keras_mrl.models.contrastive_model import ContrastiveModel
from keras_mrl.models.matryoshka_adaptor import MatryoshkaAdaptor
