"""Keras metrics of keras_mrl."""

from keras_mrl.metrics._matryoshka_metric import MatryoshkaMetric

__all__ = ["MatryoshkaMetric"]
