import keras

from keras_mrl.granularity import check_prefix
from keras_mrl.granularity import check_stacked
from keras_mrl.granularity import check_truncate_targets
from keras_mrl.granularity import cuts_targets_by_default
from keras_mrl.granularity import granularity_views
from keras_mrl.nesting import validate_nesting_dims


# Names whose meaning Keras' `compile` picks from the loss and the labels;
# a wrapped metric cannot see those, so it asks for an explicit name.
_AMBIGUOUS_NAMES = ("accuracy", "acc", "crossentropy", "ce")


def _as_metric(metric):
    if isinstance(metric, keras.metrics.Metric):
        return metric
    if isinstance(metric, str) and metric in _AMBIGUOUS_NAMES:
        raise ValueError(
            f"MatryoshkaMetric cannot resolve {metric!r}: Keras picks its "
            "meaning from the loss and the labels in `compile`. Name the "
            "metric, e.g. 'sparse_categorical_accuracy' for integer labels "
            "or 'categorical_accuracy' for one-hot labels."
        )
    if isinstance(metric, (str, dict)) or callable(metric):
        resolved = keras.metrics.get(metric)
        if isinstance(resolved, keras.metrics.Metric):
            return resolved
        return keras.metrics.MeanMetricWrapper(
            resolved, name=getattr(resolved, "__name__", str(metric))
        )
    raise TypeError(
        "`metric` must be a keras.metrics.Metric, a metric name such as "
        f"'sparse_categorical_accuracy', or a function; got {metric!r}."
    )


@keras.saving.register_keras_serializable(package="keras_mrl")
class MatryoshkaMetric(keras.metrics.Metric):
    """Reports any Keras metric once per granularity.

    `result()` is a dict `{"{name}@{dim}": value}`, which Keras puts into the
    `fit`/`evaluate` logs as `acc@8`, `acc@16`, ..., `val_acc@8`, ...

    The two modes read `y_pred` as `keras_mrl.MatryoshkaLoss` does, but the
    mode is chosen differently: a metric needs the widths for its log names,
    so `nesting_dims` is always required and `prefix` selects the mode.

    | | stacked mode | prefix mode |
    |---|---|---|
    | `MatryoshkaLoss` | `nesting_dims=None` | `nesting_dims=[...]` |
    | `MatryoshkaMetric` | `prefix=False` | `prefix=True` |

    In stacked mode `y_pred` is `(..., G, units)` with
    `G = len(nesting_dims)`; in prefix mode it is an embedding `(..., D)`
    cut to each width, and `y_true` is cut too when `truncate_targets` is
    True. Its default (None) follows `keras_mrl.MatryoshkaLoss`: the target
    is cut exactly for Keras' coordinate-by-coordinate metrics (MSE, MAE,
    MSLE, RMSE, cosine similarity, log-cosh), never because of tensor sizes.

    Args:
        metric: a `keras.metrics.Metric`, a metric name, or a function.
        nesting_dims: list of the widths, used for the log names and, in
            prefix mode, for the cuts.
        prefix: bool, whether `y_pred` is an embedding to cut.
        truncate_targets: optional bool, whether prefix mode also cuts
            `y_true`; see above for the default.
        name: optional name; defaults to the wrapped metric's name, which
            also prefixes every log key.
        **kwargs: other `keras.metrics.Metric` arguments.

    Example:

    >>> metric = keras_mrl.MatryoshkaMetric(
    ...     keras.metrics.SparseCategoricalAccuracy(name="acc"),
    ...     nesting_dims=[8, 16],
    ... )
    >>> y_pred = np.array([[[0.9, 0.1], [0.2, 0.8]]])  # (1, 2 widths, 2)
    >>> metric.update_state(np.array([1]), y_pred)
    >>> {k: float(v) for k, v in metric.result().items()}
    {'acc@8': 0.0, 'acc@16': 1.0}
    """

    def __init__(
        self,
        metric,
        nesting_dims,
        prefix=False,
        truncate_targets=None,
        name=None,
        **kwargs,
    ):
        metric = _as_metric(metric)
        super().__init__(name=name or metric.name, **kwargs)
        self.metric = metric
        self.nesting_dims = list(validate_nesting_dims(nesting_dims))
        self.prefix = bool(prefix)
        self.truncate_targets = check_truncate_targets(truncate_targets)
        # One independent copy per width, named for the logs.
        config = metric.get_config()
        self._granularity_metrics = [
            type(metric).from_config({**config, "name": f"{self.name}@{dim}"})
            for dim in self.nesting_dims
        ]

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.prefix:
            check_prefix(y_pred, self.nesting_dims, "MatryoshkaMetric")
        else:
            check_stacked(
                y_pred, len(self.nesting_dims), "MatryoshkaMetric"
            )
        truncate = self.truncate_targets
        if truncate is None:
            truncate = cuts_targets_by_default(self.metric)
        views = granularity_views(
            y_true, y_pred, self.nesting_dims, self.prefix, truncate
        )
        for metric, (target, pred) in zip(self._granularity_metrics, views):
            metric.update_state(target, pred, sample_weight=sample_weight)

    def result(self):
        return {m.name: m.result() for m in self._granularity_metrics}

    def reset_state(self):
        for metric in self._granularity_metrics:
            metric.reset_state()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "metric": keras.metrics.serialize(self.metric),
                "nesting_dims": self.nesting_dims,
                "prefix": self.prefix,
                "truncate_targets": self.truncate_targets,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["metric"] = keras.metrics.deserialize(config["metric"])
        return cls(**config)
