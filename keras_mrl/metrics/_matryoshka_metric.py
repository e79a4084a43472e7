import keras
from keras import ops

from keras_mrl._modes import check_prefix
from keras_mrl._modes import check_stacked
from keras_mrl._modes import cuts_targets
from keras_mrl._modes import granularity_views
from keras_mrl._modes import keras_mask
from keras_mrl._validation import check_optional_bool
from keras_mrl._validation import validate_nesting_dims

# Names whose meaning Keras' `compile` picks from the loss and the labels;
# a wrapped metric cannot see those, so it asks for an explicit name.
_AMBIGUOUS_NAMES = ("accuracy", "acc", "crossentropy", "ce")


def _as_metric(metric):
    """Returns `(copy, name)` for a metric argument.

    `copy(name)` builds an independent metric of that name, and `name` is
    the metric's own. A function (or a name that resolves to one) is
    wrapped in a `MeanMetricWrapper`.
    """
    if isinstance(metric, type):
        raise TypeError(
            f"`metric` must be a metric instance, got the class "
            f"{metric.__name__}. Write {metric.__name__}(...)."
        )
    if isinstance(metric, str) and metric in _AMBIGUOUS_NAMES:
        raise ValueError(
            f"MatryoshkaMetric cannot resolve {metric!r}: Keras picks its "
            "meaning from the loss and the labels in `compile`. Name the "
            "metric, e.g. 'sparse_categorical_accuracy' for integer labels "
            "or 'categorical_accuracy' for one-hot labels."
        )
    if isinstance(metric, (str, dict)) or (
        callable(metric) and not isinstance(metric, keras.metrics.Metric)
    ):
        metric = keras.metrics.get(metric)
    if isinstance(metric, keras.metrics.Metric):
        config = metric.get_config()

        def copy(name):
            return type(metric).from_config({**config, "name": name})

        return copy, metric.name
    if callable(metric):
        # A plain function (registered or not, a lambda too) is wrapped
        # anew for every width, as Keras' `compile` wraps it.
        def copy(name):
            return keras.metrics.MeanMetricWrapper(metric, name=name)

        name = getattr(metric, "__name__", "metric")
        return copy, name
    raise TypeError(
        "`metric` must be a keras.metrics.Metric, a metric name such as "
        f"'sparse_categorical_accuracy', or a function; got {metric!r}."
    )


def _check_head_nesting_dims(head_nesting_dims):
    """The stacked head's widths, which name the metric's values."""
    if isinstance(head_nesting_dims, keras.layers.Layer):
        raise TypeError(
            "`head_nesting_dims` takes the widths of the head whose stacked "
            f"output the metric reads, not the layer {head_nesting_dims.name!r}"
            ": pass its widths, head_nesting_dims=head.nesting_dims (for a "
            "model, model.get_layer(NAME).nesting_dims)."
        )
    return list(
        validate_nesting_dims(head_nesting_dims, name="head_nesting_dims")
    )


@keras.saving.register_keras_serializable(package="keras_mrl")
class MatryoshkaMetric(keras.metrics.Metric):
    """Reports any Keras metric once per granularity.

    `result()` is a dict `{"{name}@{width}": value}`, which Keras puts into
    the `fit`/`evaluate` logs as `acc@8`, `acc@16`, ..., `val_acc@8`, ...,
    one per width. Keras sorts the keys of its logs as strings, so `fit`'s
    history and `evaluate` list `acc@16` before `acc@8`: read the values by
    key (`evaluate(..., return_dict=True)`), not by position.

    The mode follows the same rule as `keras_mrl.losses.MatryoshkaLoss`,
    and the wrapped metric gets the same `y_true_g`:

    - stacked mode (`head_nesting_dims`, the `nesting_dims` of the
      `keras_mrl.layers.MatryoshkaDense` whose output the metric reads):
      `y_pred` is the stacked `(batch, ..., G, units)`, granularity `g` is
      `y_pred[..., g, :]` against `y_true` itself, and the head's widths
      name the logs. Another `G` raises;
    - prefix mode (`nesting_dims=[...]`): `y_pred` is an embedding
      `(..., D)`, cut to each width. `y_true` is cut too when it is as wide
      as the embedding (the rank of `y_pred` and the same static last
      dimension), and passed whole otherwise (class ids, a column of
      labels). A target of `y_pred`'s rank that is wider than the
      embedding, or whose width is unknown, raises and asks for
      `truncate_targets`, which overrides the rule both ways.

    A Keras mask on `y_pred` (MatryoshkaDense propagates its input's mask)
    weights every granularity's update, as it does a plain metric's.

    Args:
        metric: a `keras.metrics.Metric` instance, a metric name, or a
            function.
        nesting_dims: the widths of prefix mode; None for stacked mode.
        head_nesting_dims: stacked mode only: the widths of the head whose
            stacked output the metric reads, its `head.nesting_dims`.
        truncate_targets: optional bool, whether prefix mode also cuts
            `y_true`; None (the default) follows the shapes, as above.
        name: optional name; defaults to the wrapped metric's name, which
            also prefixes every log key.
        **kwargs: other `keras.metrics.Metric` arguments.

    Example:

    >>> head = keras_mrl.layers.MatryoshkaDense(2, nesting_dims=[8, 16])
    >>> metric = keras_mrl.metrics.MatryoshkaMetric(
    ...     keras.metrics.SparseCategoricalAccuracy(name="acc"),
    ...     head_nesting_dims=head.nesting_dims,
    ... )
    >>> y_pred = np.array([[[0.9, 0.1], [0.2, 0.8]]])  # (1, 2 widths, 2)
    >>> metric.update_state(np.array([1]), y_pred)
    >>> {k: float(v) for k, v in metric.result().items()}
    {'acc@8': 0.0, 'acc@16': 1.0}
    """

    def __init__(
        self,
        metric,
        *,
        nesting_dims=None,
        head_nesting_dims=None,
        truncate_targets=None,
        name=None,
        **kwargs,
    ):
        copy, default_name = _as_metric(metric)
        super().__init__(name=name or default_name, **kwargs)
        if (nesting_dims is None) == (head_nesting_dims is None):
            raise ValueError(
                "MatryoshkaMetric reads either a MatryoshkaDense head's "
                "stacked output (pass `head_nesting_dims=` the head's "
                "nesting_dims) or an embedding cut into prefixes (pass "
                "`nesting_dims=`), exactly one of them; got "
                f"nesting_dims={nesting_dims!r} and "
                f"head_nesting_dims={head_nesting_dims!r}. A head built "
                "with the default widths has nesting_dims None until it is "
                "built: build the model first (e.g. start it with "
                "keras.Input)."
            )
        self.nesting_dims = (
            None
            if nesting_dims is None
            else list(validate_nesting_dims(nesting_dims))
        )
        self.head_nesting_dims = (
            None
            if head_nesting_dims is None
            else _check_head_nesting_dims(head_nesting_dims)
        )
        self.truncate_targets = check_optional_bool(
            truncate_targets, "truncate_targets"
        )
        if truncate_targets is not None and self.nesting_dims is None:
            raise ValueError(
                f"MatryoshkaMetric got truncate_targets={truncate_targets} "
                "with `head_nesting_dims`: stacked mode passes y_true whole "
                "to every granularity, and only prefix mode (`nesting_dims`) "
                "cuts it. Leave truncate_targets out."
            )
        self._copy, self._default_name = copy, default_name
        # One independent copy per width, named for the logs. The metric
        # passed is not kept: its variables would sit unused in the state.
        self._granularity_metrics = [
            copy(f"{self.name}@{w}") for w in self.widths
        ]

    @property
    def widths(self):
        """The widths whose values the metric reports, in order."""
        return self.nesting_dims or self.head_nesting_dims

    @property
    def metric(self):
        """A fresh copy of the wrapped metric, as it was passed."""
        return self._copy(self._default_name)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        dims = self.nesting_dims
        cut = False
        if dims is None:
            check_stacked(
                y_pred, len(self.head_nesting_dims), "MatryoshkaMetric"
            )
        else:
            check_prefix(y_pred, dims, "MatryoshkaMetric")
            y_true = ops.convert_to_tensor(y_true)
            cut = cuts_targets(
                y_true, y_pred, dims, self.truncate_targets, "MatryoshkaMetric"
            )
        mask = keras_mask(y_pred)
        if mask is not None:
            mask = ops.cast(mask, self.dtype)
            if sample_weight is None:
                sample_weight = mask
            else:
                sample_weight = ops.cast(sample_weight, self.dtype)
                while len(sample_weight.shape) < len(mask.shape):
                    sample_weight = ops.expand_dims(sample_weight, -1)
                sample_weight = sample_weight * mask
        views = granularity_views(y_true, y_pred, dims, len(self.widths), cut)
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
                "head_nesting_dims": self.head_nesting_dims,
                "truncate_targets": self.truncate_targets,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        others = {k: v for k, v in config.items() if k != "metric"}
        return cls(keras.metrics.deserialize(config["metric"]), **others)
