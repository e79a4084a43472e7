"""Keras metrics of keras_mrl."""

from keras_mrl.metrics.matryoshka_metric import MatryoshkaMetric
