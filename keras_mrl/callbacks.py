"""Keras callbacks of keras_mrl."""

import warnings

import keras

from keras_mrl._validation import check_finite
from keras_mrl._validation import check_optional_bool
from keras_mrl._validation import check_optional_positive_int
from keras_mrl._validation import check_positive_int
from keras_mrl._validation import label_vector
from keras_mrl._validation import validate_nesting_dims
from keras_mrl.evaluation import retrieval_metrics
from keras_mrl.nesting import default_nesting_dims

__all__ = ["RetrievalEvaluator"]


class RetrievalEvaluator(keras.callbacks.Callback):
    """Logs per-width retrieval metrics at the end of every epoch.

    After each epoch the queries (and the corpus) are embedded with
    `predict`, then scored with `keras_mrl.evaluation.retrieval_metrics`
    at every width. Each value goes into the epoch logs under

        f"{prefix}{metric}@{dim}"

    where `metric` is one of `top1`, `recall@{k}`, `map@{k}`, `ndcg@{k}`,
    so with the defaults and `k=10`: `val_top1@64`, `val_recall@10@64`,
    `val_map@10@64`, `val_ndcg@10@64`. The last `@` always separates the
    width. These keys reach `History` (and so `fit`'s return value), and
    `EarlyStopping`/`ModelCheckpoint` can monitor them when they come after
    this callback in the `callbacks` list: Keras calls callbacks in list
    order and appends its own `History` and progress bar at the end.

    Embeddings that hold NaN or inf (a diverged model) raise a ValueError at
    the end of the epoch, which stops `fit`: scoring them would log a
    chance-level figure next to `loss: nan` for `EarlyStopping` to act on.

    The number of queries without any relevant corpus item does not change
    between epochs, so it is not logged; it is in `last_results` (the full
    `retrieval_metrics` output of the latest epoch) and triggers one warning
    when nonzero.

    Args:
        query_data: the query inputs, anything `predict` accepts.
        query_labels: `(Q,)` labels of the queries.
        corpus_data: the corpus inputs, or None to use the queries as the
            corpus (each query is then left out of its own ranking).
        corpus_labels: `(N,)` labels of the corpus; required exactly when
            `corpus_data` is given.
        nesting_dims: the widths to evaluate; None for
            `keras_mrl.nesting.default_nesting_dims` of the embedding width.
        k: int, the ranking depth of recall, mAP and nDCG.
        encoder: the Keras model that embeds the data, e.g. the encoder
            inside a training model; None uses the model being trained,
            whose output must then be the `(batch, D)` embedding. Calling
            `evaluate()` outside `fit` needs it.
        prefix: str put before every log key.
        batch_size: int, the `predict` batch size.
        exclude_self: bool or None; None means True when `corpus_data` is
            None and False otherwise. Passing False without a corpus raises,
            since every query would retrieve itself.
        chunk_size: optional int, passed to `retrieval_metrics`.

    Raises:
        TypeError: for a `k`, `batch_size` or `chunk_size` that is not an
            int, a `prefix` that is not a str, an `exclude_self` that is not
            None or a bool, or an `encoder` without `predict`.
        ValueError: for bad widths, a `k`, `batch_size` or `chunk_size`
            below 1, labels that are not one per sample of array-like data
            (a dataset or generator is checked after the first epoch), or
            a corpus without labels; at the end of an epoch, for embeddings
            that are not finite.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(40, 16))
    >>> y = np.arange(40) % 4
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> evaluator = keras_mrl.callbacks.RetrievalEvaluator(
    ...     x, query_labels=y, nesting_dims=[4, 8], k=5
    ... )
    >>> history = model.fit(
    ...     x, np.zeros((40, 8)), epochs=1, callbacks=[evaluator], verbose=0
    ... )
    >>> [key for key in sorted(history.history) if key.endswith("@8")]
    ['val_map@5@8', 'val_ndcg@5@8', 'val_recall@5@8', 'val_top1@8']
    """

    def __init__(
        self,
        query_data,
        *,
        query_labels,
        corpus_data=None,
        corpus_labels=None,
        nesting_dims=None,
        k=10,
        encoder=None,
        prefix="val_",
        batch_size=256,
        exclude_self=None,
        chunk_size=None,
    ):
        super().__init__()
        exclude_self = check_optional_bool(exclude_self, "exclude_self")
        if not isinstance(prefix, str):
            raise TypeError(
                f"`prefix` must be a str put before every log key, such as "
                f"'val_', got {prefix!r}."
            )
        if encoder is not None and not callable(
            getattr(encoder, "predict", None)
        ):
            raise TypeError(
                "`encoder` must be a Keras model that embeds the data (it "
                f"needs `predict`), or None for the model being trained; got "
                f"{encoder!r}."
            )
        if (corpus_data is None) != (corpus_labels is None):
            raise ValueError(
                "Pass `corpus_data` and `corpus_labels` together, or neither "
                "to use the queries as the corpus; got corpus_data="
                f"{_describe(corpus_data)} and corpus_labels="
                f"{_describe(corpus_labels)}."
            )
        if corpus_data is None and exclude_self is False:
            raise ValueError(
                "Without `corpus_data` the queries are the corpus, and with "
                "exclude_self=False every query would retrieve itself. Leave "
                "exclude_self as None (or True), or pass a corpus."
            )
        # The data is embedded only at the end of an epoch; checking what
        # can be checked now saves a wasted epoch.
        label_vector(
            query_labels,
            _num_samples(query_data),
            "query_labels",
            "query_data",
        )
        if corpus_data is not None:
            label_vector(
                corpus_labels,
                _num_samples(corpus_data),
                "corpus_labels",
                "corpus_data",
            )
        self.query_data = query_data
        self.query_labels = query_labels
        self.corpus_data = corpus_data
        self.corpus_labels = corpus_labels
        self.nesting_dims = (
            None
            if nesting_dims is None
            else list(validate_nesting_dims(nesting_dims))
        )
        self.k = check_positive_int(k, "k")
        self.encoder = encoder
        self.prefix = prefix
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.exclude_self = (
            corpus_data is None if exclude_self is None else exclude_self
        )
        self.chunk_size = check_optional_positive_int(chunk_size, "chunk_size")
        self.last_results = None
        self._warned = False

    def _embed(self, data, name):
        encoder = self.encoder if self.encoder is not None else self.model
        embeddings = encoder.predict(
            data, batch_size=self.batch_size, verbose=0
        )
        if len(getattr(embeddings, "shape", ())) != 2:
            raise ValueError(
                "RetrievalEvaluator needs an encoder whose output is a "
                "(batch, D) embedding, got predictions of shape "
                f"{getattr(embeddings, 'shape', None)}. Pass `encoder=` the "
                "part of the model that outputs the embedding."
            )
        try:
            check_finite(embeddings, f"embeddings of {name}")
        except ValueError as error:
            raise ValueError(
                "RetrievalEvaluator: the model diverged, its embeddings are "
                "not finite (or the data holds NaN or inf). Their retrieval "
                "metrics would be chance-level "
                "figures next to `loss: nan`, so none is logged and `fit` "
                f"stops here. {error}"
            ) from None
        return embeddings

    def evaluate(self):
        """Embeds the data and returns `retrieval_metrics`' dict.

        Returns:
            `keras_mrl.evaluation.retrieval_metrics`' dict of the current
            weights: `{dim: {metric: value}}`.

        Raises:
            ValueError: when there is no model to embed the data with (no
                `encoder=` and not attached to `fit`), when its output is
                not a `(batch, D)` embedding, or when the embeddings hold
                NaN or inf.
        """
        if self.encoder is None and self.model is None:
            raise ValueError(
                "RetrievalEvaluator.evaluate() has no model to embed the data "
                "with: pass `encoder=` the model that outputs the embedding, "
                "or use the evaluator in `model.fit(..., callbacks=[...])`, "
                "which attaches the model being trained."
            )
        queries = self._embed(self.query_data, "query_data")
        if self.corpus_data is None:
            corpus, corpus_labels = queries, self.query_labels
        else:
            corpus = self._embed(self.corpus_data, "corpus_data")
            corpus_labels = self.corpus_labels
        nesting_dims = self.nesting_dims or default_nesting_dims(
            queries.shape[-1]
        )
        return retrieval_metrics(
            queries,
            query_labels=self.query_labels,
            corpus_embeddings=corpus,
            corpus_labels=corpus_labels,
            nesting_dims=nesting_dims,
            k=self.k,
            exclude_self=self.exclude_self,
            chunk_size=self.chunk_size,
        )

    def on_epoch_end(self, epoch, logs=None):
        results = self.evaluate()
        self.last_results = results
        if logs is not None:
            for dim, metrics in results.items():
                for name, value in metrics.items():
                    if name != "queries_without_relevant":
                        logs[f"{self.prefix}{name}@{dim}"] = value
        without = next(iter(results.values()))["queries_without_relevant"]
        if without and not self._warned:
            self._warned = True
            warnings.warn(
                f"RetrievalEvaluator: {without} queries have no relevant "
                "corpus item; they score 0 on every metric.",
                stacklevel=2,
            )


def _num_samples(data):
    """The sample count of array-like `data`, or None when unknown.

    A dataset, generator or `PyDataset` has no `shape`: its length is only
    known once `predict` has run.
    """
    leaves = (
        keras.tree.flatten(data)
        if isinstance(data, (list, tuple, dict))
        else [data]
    )
    shapes = [getattr(leaf, "shape", None) for leaf in leaves]
    if not shapes or any(shape is None or len(shape) == 0 for shape in shapes):
        return None
    return shapes[0][0]


def _describe(value):
    return "None" if value is None else f"a {type(value).__name__}"
