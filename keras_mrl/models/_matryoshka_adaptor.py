"""Post-hoc Matryoshka embeddings: a residual adaptor on frozen embeddings.

Matryoshka-Adaptor (Yoon et al., 2024, arXiv 2407.20243) trains a small
residual MLP `f` on the embeddings of a frozen model (a black-box API
included) so that the prefixes of `e + f(e)` keep what the full-width `e`
knew: its pairwise similarities and its nearest neighbours. With
(query, document) pairs a ranking loss joins in.
"""

import keras
import numpy as np
from keras import ops

from keras_mrl._norms import inverse_norm
from keras_mrl._validation import check_finite_rows
from keras_mrl._validation import check_loss_weight
from keras_mrl._validation import check_positive_int
from keras_mrl._validation import validate_nesting_dims
from keras_mrl.losses._matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses._multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)
from keras_mrl.losses._similarity_preservation_loss import (
    SimilarityPreservationLoss,
)
from keras_mrl.nesting import default_nesting_dims


def _is_pair(x):
    return isinstance(x, (tuple, list))


def _check_finite_embeddings(x, name):
    """Raises when the embeddings `x` (or a pair of them) hold NaN or inf.

    A dataset or generator is not read ahead: its batches go unchecked.
    """
    if _is_pair(x):
        for i, part in enumerate(x):
            _check_finite_embeddings(part, f"{name}[{i}]")
    elif isinstance(x, np.ndarray) or keras.ops.is_tensor(x):
        check_finite_rows(x, name)


def _validation_inputs(validation_data):
    """The `x` of `fit`'s `validation_data`, a tuple `(x,)` or `(x, y)`."""
    if isinstance(validation_data, tuple) and validation_data:
        return validation_data[0]
    return validation_data


@keras.saving.register_keras_serializable(package="keras_mrl")
class MatryoshkaAdaptor(keras.Model):
    """Makes a frozen model's embeddings Matryoshka: `x + MLP(x)`.

    Matryoshka-Adaptor (Yoon et al., 2024, arXiv 2407.20243): a residual
    MLP trained on precomputed embeddings, so that their prefixes serve as
    smaller embeddings, with no access to the model that made them. The
    residual's last layer starts at zero: before training the adaptor is
    the identity.

    The objective is chosen by what `fit` gets, and needs no labels:

    - `fit(x)` with embeddings `x` `(N, D)` (unsupervised):
      `keras_mrl.losses.SimilarityPreservationLoss`
      summed over `nesting_dims`: every prefix of the adapted embeddings
      keeps the full-width input's in-batch cosines and top-k neighbours;
    - `fit((queries, documents))` with paired embeddings (supervised):
      `keras_mrl.losses.MatryoshkaLoss(MultipleNegativesRankingLoss(scale))` on
      the adapted pairs, plus the same preservation terms on the queries
      and documents together (the paper's regularizer; set `topk_weight`
      and `pairwise_weight` to 0 for the ranking loss alone).

    Both add `reconstruction_weight` times `|ê - e|^2 / |e|^2`, which keeps
    the adapted embeddings near the input. The objective is the model's
    own: `compile` takes no `loss`. `predict(x)` returns the adapted
    embeddings, to cut with `keras_mrl.ops.truncate` and search. `fit`,
    `evaluate` and `predict` reject arrays of embeddings with NaN or
    infinite rows (a `tf.data.Dataset` is not read ahead to check).

    Args:
        dim: int, the width `D` of the embeddings.
        nesting_dims: the prefix widths trained, default
            `keras_mrl.nesting.default_nesting_dims(dim)`.
        hidden_dim: int, the width of the MLP's hidden layer; default
            `dim`.
        activation: the hidden layer's activation.
        top_k: positive int, the neighbours kept by the top-k term.
        topk_weight: float >= 0, the weight of the top-k term.
        pairwise_weight: float >= 0, the weight of the all-pairs term.
        reconstruction_weight: float >= 0, the weight of the term keeping
            the adapted embeddings near the input.
        scale: positive float, the supervised ranking loss's inverse
            temperature.
        **kwargs: `keras.Model` arguments, such as `name` or `dtype`.

    Call arguments:
        inputs: embeddings `(B, D)`, or a `(queries, documents)` pair of
            them.

    Returns:
        The adapted embeddings `(B, D)`, or `(B, 2, D)` for a pair.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 16)).astype("float32")
    >>> adaptor = keras_mrl.models.MatryoshkaAdaptor(
    ...     16, nesting_dims=[4, 8, 16], top_k=5
    ... )
    >>> np.allclose(adaptor.predict(x, verbose=0), x)  # identity at first
    True
    >>> adaptor.compile(optimizer="adam")
    >>> history = adaptor.fit(x, batch_size=32, epochs=2, verbose=0)
    >>> small = keras_mrl.ops.truncate(adaptor.predict(x, verbose=0), dim=4)
    >>> tuple(small.shape)
    (64, 4)
    """

    def __init__(
        self,
        dim,
        *,
        nesting_dims=None,
        hidden_dim=None,
        activation="relu",
        top_k=10,
        topk_weight=1.0,
        pairwise_weight=1.0,
        reconstruction_weight=0.0,
        scale=20.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = check_positive_int(dim, "dim")
        if nesting_dims is None:
            nesting_dims = default_nesting_dims(self.dim)
        self.nesting_dims = list(
            validate_nesting_dims(nesting_dims, max_dim=self.dim)
        )
        self.hidden_dim = check_positive_int(
            self.dim if hidden_dim is None else hidden_dim, "hidden_dim"
        )
        self.activation = keras.activations.serialize(
            keras.activations.get(activation)
        )
        self.top_k = check_positive_int(top_k, "top_k")
        self.topk_weight = check_loss_weight(topk_weight, "topk_weight")
        self.pairwise_weight = check_loss_weight(
            pairwise_weight, "pairwise_weight"
        )
        self.reconstruction_weight = check_loss_weight(
            reconstruction_weight, "reconstruction_weight"
        )
        self._ranking = MatryoshkaLoss(
            MultipleNegativesRankingLoss(scale), nesting_dims=self.nesting_dims
        )
        self.scale = self._ranking.loss.scale
        self._preservation = None
        if self.topk_weight > 0 or self.pairwise_weight > 0:
            self._preservation = MatryoshkaLoss(
                SimilarityPreservationLoss(
                    self.top_k,
                    topk_weight=self.topk_weight,
                    pairwise_weight=self.pairwise_weight,
                ),
                nesting_dims=self.nesting_dims,
            )
        self.hidden = keras.layers.Dense(
            self.hidden_dim,
            activation=activation,
            dtype=self.dtype_policy,
            name="hidden",
        )
        self.residual = keras.layers.Dense(
            self.dim,
            kernel_initializer="zeros",
            dtype=self.dtype_policy,
            name="residual",
        )
        self.hidden.build((None, self.dim))
        self.residual.build((None, self.hidden_dim))
        self.built = True

    def adapt_embeddings(self, x, training=None):
        """Returns `x + MLP(x)` for embeddings `x` `(B, D)`."""
        shape = tuple(x.shape)
        if len(shape) != 2 or shape[-1] != self.dim:
            raise ValueError(
                f"MatryoshkaAdaptor(dim={self.dim}) takes embeddings of shape "
                f"(batch, {self.dim}), got shape {shape}."
            )
        x = ops.cast(x, self.compute_dtype)
        return x + self.residual(
            self.hidden(x, training=training), training=training
        )

    def call(self, inputs, training=None):
        if _is_pair(inputs):
            if len(inputs) != 2:
                raise ValueError(
                    "MatryoshkaAdaptor takes embeddings (B, D) or a "
                    f"(queries, documents) pair; got {len(inputs)} inputs."
                )
            return ops.stack(
                [self.adapt_embeddings(x, training) for x in inputs], axis=1
            )
        return self.adapt_embeddings(inputs, training)

    def compute_output_shape(self, input_shape):
        if _is_pair(input_shape) and _is_pair(input_shape[0]):
            return (input_shape[0][0], 2, self.dim)
        return (input_shape[0], self.dim)

    def compile(self, optimizer="adam", loss=None, **kwargs):
        """Configures training; the objective is the adaptor's own.

        Args:
            optimizer: the Keras optimizer.
            loss: must stay None: `fit(x)` and `fit((queries,
                documents))` choose the objective (see the class).
            **kwargs: other `keras.Model.compile` arguments, such as
                `jit_compile`.
        """
        if loss is not None:
            raise ValueError(
                "MatryoshkaAdaptor trains its own objective (similarity "
                "preservation for fit(x), plus ranking for fit((queries, "
                f"documents))); compile it without `loss`, got loss={loss!r}."
                " Set its weights in the constructor."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips a custom `compile` when loading unless this is
        # overridden; the saved config holds no loss, so ours takes it.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        _check_finite_embeddings(x, "x")
        _check_finite_embeddings(
            _validation_inputs(validation_data), "validation_data"
        )
        return super().fit(
            x, y, *args, validation_data=validation_data, **kwargs
        )

    def evaluate(self, x=None, *args, **kwargs):
        _check_finite_embeddings(x, "x")
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        _check_finite_embeddings(x, "x")
        return super().predict(x, *args, **kwargs)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if y is not None or sample_weight is not None:
            raise ValueError(
                "MatryoshkaAdaptor needs no labels or sample weights: call "
                "fit(embeddings) or fit((query_embeddings, "
                "document_embeddings))."
            )
        if _is_pair(x):
            inputs = ops.concatenate(list(x), axis=0)
            adapted = ops.concatenate([y_pred[:, 0], y_pred[:, 1]], axis=0)
            total = self._ranking(None, y_pred)
        else:
            if self._preservation is None:
                raise ValueError(
                    "MatryoshkaAdaptor was built with topk_weight=0 and "
                    "pairwise_weight=0, which leaves fit(x) without labels "
                    "nothing to train: give one a positive weight, or fit "
                    "(queries, documents) pairs."
                )
            inputs, adapted, total = x, y_pred, 0.0
        if self._preservation is not None:
            total = total + self._preservation(inputs, adapted)
        if self.reconstruction_weight > 0:
            total = total + self.reconstruction_weight * self._change(
                inputs, adapted
            )
        for loss in self.losses:
            total = total + ops.cast(ops.sum(loss), "float32")
        return total

    def _change(self, inputs, adapted):
        # |ê - e|^2 / |e|^2, the batch mean.
        inputs = ops.cast(inputs, "float32")
        adapted = ops.cast(adapted, "float32")
        squared = ops.sum(ops.square(adapted - inputs), axis=-1)
        scale = inverse_norm(ops.sum(ops.square(inputs), axis=-1), ops)
        return ops.mean(squared * ops.square(scale))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dim": self.dim,
                "nesting_dims": self.nesting_dims,
                "hidden_dim": self.hidden_dim,
                "activation": self.activation,
                "top_k": self.top_k,
                "topk_weight": self.topk_weight,
                "pairwise_weight": self.pairwise_weight,
                "reconstruction_weight": self.reconstruction_weight,
                "scale": self.scale,
            }
        )
        return config
