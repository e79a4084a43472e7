"""keras_mrl: Matryoshka Representation Learning for Keras 3."""

from keras_mrl import adaptive
from keras_mrl import callbacks
from keras_mrl import distribution
from keras_mrl import evaluation
from keras_mrl import hub
from keras_mrl import layers
from keras_mrl import losses
from keras_mrl import metrics
from keras_mrl import models
from keras_mrl import ops
from keras_mrl import retrieval
from keras_mrl import serving
from keras_mrl.layers import MatryoshkaDense
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.metrics import MatryoshkaMetric
from keras_mrl.nesting import default_nesting_dims
from keras_mrl.ops import truncate
from keras_mrl.serving import quantize

__version__ = "0.1.0"
