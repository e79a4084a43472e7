"""Post-hoc Matryoshka embeddings: a residual adaptor on frozen embeddings.

Matryoshka-Adaptor (Yoon et al., 2024, arXiv 2407.20243) trains a small
residual MLP `f` on the embeddings of a frozen model (a black-box API
included) so that the prefixes of `e + f(e)` keep what the full-width `e`
knew: its pairwise similarities and its nearest neighbours. With
(query, document) pairs a ranking loss joins in.
"""

import numbers

import keras
import numpy as np
from keras import ops

from keras_mrl._norms import inverse_norm
from keras_mrl._validation import check_finite_rows
from keras_mrl._validation import check_positive_int
from keras_mrl._validation import keyword_only
from keras_mrl.losses.matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses.multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)
from keras_mrl.losses.nested_loss import NestedLoss
from keras_mrl.losses.nested_loss import compute_dtype
from keras_mrl.losses.similarity import prefix_similarities
from keras_mrl.nesting import default_nesting_dims
from keras_mrl.nesting import validate_nesting_dims

# Below every cosine: ranks a batch's own row, then the padding, last.
_SELF = -3.0
_PAD = -4.0


def _check_weight(value, name):
    # A weight of 0 turns its term off; could move to _validation.py.
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Real
    ):
        raise TypeError(f"`{name}` must be a number >= 0, got {value!r}.")
    if not np.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0 (0 turns its term off), "
            f"got {name}={value}."
        )
    return float(value)


def _check_embeddings(y_true, y_pred):
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(true_shape) != 2 or len(pred_shape) != 2:
        raise ValueError(
            "SimilarityPreservationLoss compares (batch, D) embeddings: "
            "y_true the frozen input, y_pred the adapted one; got shapes "
            f"{true_shape} and {pred_shape}."
        )


@keras.saving.register_keras_serializable(package="keras_mrl")
class SimilarityPreservationLoss(NestedLoss):
    """Keeps each prefix's in-batch cosines those of the full input.

    The unsupervised objective of Matryoshka-Adaptor. For a batch of
    frozen embeddings `e` (`y_true`) and their adapted `ê` (`y_pred`), with
    `S_ij = cos(e_i, e_j)` at full width and `Ŝ_ij = cos(ê_i[:m], ê_j[:m])`
    at prefix width `m`, example `i`'s loss at width `m` is

        topk_weight * mean_{j in N_k(i)} |S_ij - Ŝ_ij|
        + pairwise_weight * mean_j |S_ij - Ŝ_ij|

    where `N_k(i)` are the `top_k` rows of the batch most similar to `i`
    by `S` (`i` itself excluded; a batch of at most `top_k` rows uses all
    the others). The first term keeps the neighbours a search would
    return, the second the global geometry. Inside
    `keras_mrl.MatryoshkaLoss(..., nesting_dims=...)` every width is
    computed in one pass; alone it is the full width.

    Args:
        top_k: positive int, the neighbours of the top-k term.
        topk_weight: float >= 0, the weight of the top-k term.
        pairwise_weight: float >= 0, the weight of the all-pairs term.
        reduction: the Keras reduction of the per-example values.
        name: the loss name.
        **kwargs: other `keras.losses.Loss` arguments, such as `dtype`.

    Call arguments:
        y_true: float tensor `(batch, D)`, the frozen embeddings.
        y_pred: float tensor `(batch, D')`, the adapted embeddings.

    Returns:
        The reduced loss; `call` returns the per-example values.

    Example:

    >>> loss = keras_mrl.models.matryoshka_adaptor.SimilarityPreservationLoss(
    ...     top_k=2
    ... )
    >>> e = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    >>> float(loss(e, e))
    0.0
    >>> nested = keras_mrl.MatryoshkaLoss(loss, nesting_dims=[2, 8])
    >>> float(nested(e, e)) > 0  # the 2-wide prefix loses similarities
    True
    """

    @keyword_only
    def __init__(
        self,
        top_k=10,
        *,
        topk_weight=1.0,
        pairwise_weight=1.0,
        reduction="sum_over_batch_size",
        name="similarity_preservation_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.top_k = check_positive_int(top_k, "top_k")
        self.topk_weight = _check_weight(topk_weight, "topk_weight")
        self.pairwise_weight = _check_weight(
            pairwise_weight, "pairwise_weight"
        )
        if self.topk_weight == 0 and self.pairwise_weight == 0:
            raise ValueError(
                "SimilarityPreservationLoss got topk_weight=0 and "
                "pairwise_weight=0: it would train nothing. Give one a "
                "positive weight."
            )

    def __call__(self, y_true, y_pred, sample_weight=None):
        # A missing y_true gets the base class's message instead.
        if y_true is not None:
            _check_embeddings(y_true, y_pred)
        return super().__call__(y_true, y_pred, sample_weight)

    def call_prefixes(self, y_true, y_pred, nesting_dims):
        """Returns the per-example losses of every prefix width.

        Args:
            y_true: float tensor `(batch, D)`, the frozen embeddings.
            y_pred: float tensor `(batch, D')`, the adapted embeddings.
            nesting_dims: the increasing prefix widths of `y_pred`, or
                None for its full width.

        Returns:
            A list with one `(batch,)` tensor per width.
        """
        _check_embeddings(y_true, y_pred)
        dtype = compute_dtype(self.dtype)
        target = ops.cast(y_true, dtype)
        ((_, (full,)),) = prefix_similarities(target, [target])
        if self.topk_weight > 0:
            neighbours, valid, count = self._neighbours(full)
            picked = ops.take_along_axis(self._pad(full), neighbours, axis=1)
        losses = []
        for _, (adapted,) in prefix_similarities(
            ops.cast(y_pred, dtype), [ops.cast(y_pred, dtype)], nesting_dims
        ):
            loss = 0.0
            if self.pairwise_weight > 0:
                pair = ops.mean(ops.abs(full - adapted), axis=1)
                loss = loss + self.pairwise_weight * pair
            if self.topk_weight > 0:
                near = ops.take_along_axis(
                    self._pad(adapted), neighbours, axis=1
                )
                gap = ops.sum(ops.abs(picked - near) * valid, axis=1)
                loss = loss + self.topk_weight * gap / count
            losses.append(loss)
        return losses

    def _pad(self, scores):
        # `top_k` columns of padding, so that a batch of at most `top_k`
        # rows still has `top_k` picks; `valid` zeroes those that land
        # there or on the row itself.
        return ops.pad(scores, [[0, 0], [0, self.top_k]],
                       constant_values=_PAD)

    def _neighbours(self, similarities):
        rows = ops.arange(ops.shape(similarities)[0])
        own = ops.expand_dims(rows, 1) == ops.expand_dims(rows, 0)
        ranked = self._pad(ops.where(own, _SELF, similarities))
        _, neighbours = ops.top_k(ranked, self.top_k)
        others = ops.cast(ops.logical_not(own), similarities.dtype)
        others = ops.pad(others, [[0, 0], [0, self.top_k]])
        valid = ops.take_along_axis(others, neighbours, axis=1)
        count = ops.maximum(ops.sum(valid, axis=1), 1.0)
        return neighbours, valid, count

    def get_config(self):
        config = super().get_config()
        config.update({
            "top_k": self.top_k,
            "topk_weight": self.topk_weight,
            "pairwise_weight": self.pairwise_weight,
        })
        return config


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
      `keras_mrl.models.matryoshka_adaptor.SimilarityPreservationLoss`
      summed over `nesting_dims`: every prefix of the adapted embeddings
      keeps the full-width input's in-batch cosines and top-k neighbours;
    - `fit((queries, documents))` with paired embeddings (supervised):
      `keras_mrl.MatryoshkaLoss(MultipleNegativesRankingLoss(scale))` on
      the adapted pairs, plus the same preservation terms on the queries
      and documents together (the paper's regularizer; set `topk_weight`
      and `pairwise_weight` to 0 for the ranking loss alone).

    Both add `reconstruction_weight` times `|ê - e|^2 / |e|^2`, which keeps
    the adapted embeddings near the input. The objective is the model's
    own: `compile` takes no `loss`. `predict(x)` returns the adapted
    embeddings, to cut with `keras_mrl.truncate` and search. `fit`,
    `evaluate` and `predict` reject arrays of embeddings with NaN or
    infinite rows (a `tf.data.Dataset` is not read ahead to check).

    Args:
        dim: int, the width `D` of the embeddings.
        nesting_dims: the prefix widths trained, default
            `keras_mrl.default_nesting_dims(dim)`.
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
    >>> small = keras_mrl.truncate(adaptor.predict(x, verbose=0), dim=4)
    >>> tuple(small.shape)
    (64, 4)
    """

    @keyword_only
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
        self.topk_weight = _check_weight(topk_weight, "topk_weight")
        self.pairwise_weight = _check_weight(
            pairwise_weight, "pairwise_weight"
        )
        self.reconstruction_weight = _check_weight(
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
                    self.top_k, topk_weight=self.topk_weight,
                    pairwise_weight=self.pairwise_weight,
                ),
                nesting_dims=self.nesting_dims,
            )
        self.hidden = keras.layers.Dense(
            self.hidden_dim, activation=activation, dtype=self.dtype_policy,
            name="hidden",
        )
        self.residual = keras.layers.Dense(
            self.dim, kernel_initializer="zeros", dtype=self.dtype_policy,
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
        return x + self.residual(self.hidden(x, training=training),
                                 training=training)

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

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
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
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
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
