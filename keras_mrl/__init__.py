"""keras_mrl: Matryoshka Representation Learning for Keras 3."""

from keras_mrl.layers import MatryoshkaDense
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.metrics import MatryoshkaMetric
from keras_mrl.nesting import default_nesting_dims

__version__ = "0.1.0"
