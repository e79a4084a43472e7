"""keras_mrl's ranking losses against sentence-transformers' on the same data.

sentence-transformers' losses embed their inputs with a model; a stand-in
module hands them precomputed embeddings instead, so nothing is downloaded.
Its `MatryoshkaLoss` patches the model's `forward` to cut (and re-normalise)
the embeddings, which the stand-in supports like a real model.
"""

import keras
import numpy as np
import pytest

from keras_mrl.losses._matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses._multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)

WIDTH = 64
DIMS = [8, 16, 32, 64]


@pytest.fixture(scope="module")
def st_loss():
    """`st_loss(y_pred, symmetric, dims=None, weights=None)`: the loss
    sentence-transformers computes on the embeddings `y_pred`.

    Imported here rather than at the top of the file: importing
    sentence-transformers takes seconds, and only the pytest worker that
    runs this file needs it.
    """
    torch = pytest.importorskip("torch")
    st_losses = pytest.importorskip(
        "sentence_transformers.sentence_transformer.losses"
    )

    class PrecomputedEmbeddings(torch.nn.Module):
        """A SentenceTransformer stand-in: the features are the embeddings."""

        def forward(self, features):
            # A fresh dict: MatryoshkaLoss overwrites the output's embedding.
            return {"sentence_embedding": features["embedding"]}

        def get_embedding_dimension(self):
            return WIDTH

    def loss_of(y_pred, symmetric, dims=None, weights=None):
        model = PrecomputedEmbeddings()
        directions = (
            ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
        )
        loss = st_losses.MultipleNegativesRankingLoss(
            model,
            scale=20.0,
            directions=directions,
            partition_mode="per_direction",
        )
        if dims is not None:
            loss = st_losses.MatryoshkaLoss(
                model, loss, matryoshka_dims=dims, matryoshka_weights=weights
            )
        columns = [
            {"embedding": torch.from_numpy(np.ascontiguousarray(y_pred[:, k]))}
            for k in range(y_pred.shape[1])
        ]
        with torch.no_grad():
            return float(loss(columns, None))

    return loss_of


def _embeddings(columns, seed):
    rng = np.random.default_rng(seed)
    # Correlated anchor and positive give losses far from log(batch).
    y = rng.normal(size=(16, columns, WIDTH))
    y[:, 1] = y[:, 0] + 0.7 * y[:, 1]
    return y.astype("float32")


@pytest.mark.parametrize("columns", [2, 3, 5])
@pytest.mark.parametrize("symmetric", [False, True])
def test_multiple_negatives_ranking_loss(columns, symmetric, st_loss):
    y_pred = _embeddings(columns, seed=columns)
    ours = MultipleNegativesRankingLoss(scale=20.0, symmetric=symmetric)
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(ours(None, y_pred))),
        st_loss(y_pred, symmetric),
        atol=1e-4,
        rtol=1e-5,
    )


@pytest.mark.parametrize("columns", [2, 4])
@pytest.mark.parametrize("weights", [None, [0.25, 0.5, 1.0, 2.0]])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matryoshka_loss(columns, weights, symmetric, st_loss):
    y_pred = _embeddings(columns, seed=10 + columns)
    ours = MatryoshkaLoss(
        MultipleNegativesRankingLoss(scale=20.0, symmetric=symmetric),
        nesting_dims=DIMS,
        weights=weights,
    )
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(ours(None, y_pred))),
        st_loss(y_pred, symmetric, DIMS, weights),
        atol=1e-4,
        rtol=1e-5,
    )


def test_matryoshka_loss_without_full_width(st_loss):
    # A subset of widths, unordered for sentence-transformers (it sorts).
    y_pred = _embeddings(3, seed=99)
    weights = [3.0, 1.0]
    ours = MatryoshkaLoss(
        MultipleNegativesRankingLoss(), nesting_dims=[8, 32], weights=weights
    )
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(ours(None, y_pred))),
        st_loss(y_pred, False, [32, 8], weights[::-1]),
        atol=1e-4,
        rtol=1e-5,
    )
