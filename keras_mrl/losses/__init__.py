"""Keras losses of keras_mrl."""

from keras_mrl.losses._matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses._multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)
from keras_mrl.losses._nested_loss import NestedLoss
from keras_mrl.losses._quantization_aware_loss import QuantizationAwareLoss
from keras_mrl.losses._similarity_preservation_loss import (
    SimilarityPreservationLoss,
)
from keras_mrl.losses._supervised_contrastive_loss import (
    SupervisedContrastiveLoss,
)

__all__ = [
    "MatryoshkaLoss",
    "MultipleNegativesRankingLoss",
    "NestedLoss",
    "QuantizationAwareLoss",
    "SimilarityPreservationLoss",
    "SupervisedContrastiveLoss",
]
