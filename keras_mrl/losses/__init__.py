"""Keras losses of keras_mrl."""

from keras_mrl.losses.matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses.multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)
from keras_mrl.losses.nested_loss import NestedLoss
from keras_mrl.losses.supervised_contrastive_loss import (
    SupervisedContrastiveLoss,
)
