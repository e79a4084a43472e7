"""Keras losses of keras_mrl."""

from keras_mrl.losses.matryoshka_loss import MatryoshkaLoss
