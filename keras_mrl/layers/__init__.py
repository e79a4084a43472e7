"""Keras layers of keras_mrl."""

from keras_mrl.layers.matryoshka_dense import MatryoshkaDense
from keras_mrl.layers.orthogonal_projection import OrthogonalProjection
from keras_mrl.layers.truncate import Truncate
from keras_mrl.layers.width_sampling import WidthSampling
