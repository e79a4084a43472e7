"""keras_mrl: Matryoshka Representation Learning for Keras 3.

Each public symbol has one path, in the module of its kind:
`keras_mrl.layers.MatryoshkaDense`, `keras_mrl.losses.MatryoshkaLoss`,
`keras_mrl.metrics.MatryoshkaMetric`, `keras_mrl.ops.truncate`,
`keras_mrl.serving.quantize`, ...
"""

from keras_mrl import adaptive
from keras_mrl import callbacks
from keras_mrl import datasets
from keras_mrl import distribution
from keras_mrl import evaluation
from keras_mrl import integrations
from keras_mrl import layers
from keras_mrl import losses
from keras_mrl import metrics
from keras_mrl import models
from keras_mrl import nesting
from keras_mrl import ops
from keras_mrl import retrieval
from keras_mrl import serving

__all__ = [
    "adaptive",
    "callbacks",
    "datasets",
    "distribution",
    "evaluation",
    "integrations",
    "layers",
    "losses",
    "metrics",
    "models",
    "nesting",
    "ops",
    "retrieval",
    "serving",
]

__version__ = "0.1.0"
