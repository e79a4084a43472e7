"""Keras callbacks of keras_mrl."""

import warnings

import keras

from keras_mrl._validation import label_vector
from keras_mrl.evaluation import retrieval_metrics
from keras_mrl._validation import check_positive_int
from keras_mrl.nesting import default_nesting_dims
from keras_mrl.nesting import validate_nesting_dims


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
            `keras_mrl.default_nesting_dims` of the embedding width.
        k: int, the ranking depth of recall, mAP and nDCG.
        encoder: the model that embeds the data, e.g. the encoder inside a
            training model; None uses the model being trained, whose output
            must then be the `(batch, D)` embedding.
        prefix: str put before every log key.
        batch_size: int, the `predict` batch size.
        exclude_self: bool or None; None means True when `corpus_data` is
            None and False otherwise. Passing False without a corpus raises,
            since every query would retrieve itself.
        chunk_size: optional int, passed to `retrieval_metrics`.

    Raises:
        TypeError: for a `k`, `batch_size` or `chunk_size` that is not an
            int.
        ValueError: for bad widths, a `k`, `batch_size` or `chunk_size`
            below 1, labels that are not one per sample of array-like data
            (a dataset or generator is checked after the first epoch), or
            a corpus without labels.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(40, 16))
    >>> y = np.arange(40) % 4
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> evaluator = keras_mrl.callbacks.RetrievalEvaluator(
    ...     x, y, nesting_dims=[4, 8], k=5
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
            query_labels, _num_samples(query_data), "query_labels",
            "query_data",
        )
        if corpus_data is not None:
            label_vector(
                corpus_labels, _num_samples(corpus_data), "corpus_labels",
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
            corpus_data is None if exclude_self is None else bool(exclude_self)
        )
        self.chunk_size = (
            None
            if chunk_size is None
            else check_positive_int(chunk_size, "chunk_size")
        )
        self.last_results = None
        self._warned = False

    def _embed(self, data):
        encoder = self.encoder if self.encoder is not None else self.model
        return encoder.predict(data, batch_size=self.batch_size, verbose=0)

    def evaluate(self):
        """Embeds the data and returns `retrieval_metrics`' dict."""
        queries = self._embed(self.query_data)
        if len(getattr(queries, "shape", ())) != 2:
            raise ValueError(
                "RetrievalEvaluator needs an encoder whose output is a "
                "(batch, D) embedding, got predictions of shape "
                f"{getattr(queries, 'shape', None)}. Pass `encoder=` the "
                "part of the model that outputs the embedding."
            )
        if self.corpus_data is None:
            corpus, corpus_labels = queries, self.query_labels
        else:
            corpus = self._embed(self.corpus_data)
            corpus_labels = self.corpus_labels
        nesting_dims = self.nesting_dims or default_nesting_dims(
            queries.shape[-1]
        )
        return retrieval_metrics(
            queries,
            self.query_labels,
            corpus,
            corpus_labels,
            nesting_dims,
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
