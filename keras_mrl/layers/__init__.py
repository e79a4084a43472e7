"""Keras layers of keras_mrl."""

from keras_mrl.layers._matryoshka_dense import MatryoshkaDense
from keras_mrl.layers._orthogonal_projection import OrthogonalProjection
from keras_mrl.layers._truncate import Truncate
from keras_mrl.layers._width_sampling import WidthSampling

__all__ = [
    "MatryoshkaDense",
    "OrthogonalProjection",
    "Truncate",
    "WidthSampling",
]
