import keras
import numpy as np
from keras import ops

from keras_mrl import _quantizers
from keras_mrl._validation import check_choice
from keras_mrl._validation import check_loss_weight
from keras_mrl._validation import validate_nesting_dims
from keras_mrl.losses._matryoshka_loss import MatryoshkaLoss
from keras_mrl.losses._matryoshka_loss import _as_loss
from keras_mrl.losses._matryoshka_loss import _per_example
from keras_mrl.losses._nested_loss import compute_dtype
from keras_mrl.losses._nested_loss import fill_missing_targets
from keras_mrl.ops import truncate

PRECISIONS = ("binary", "int8")


def straight_through(quantized, x, mask=None):
    """`quantized` forward, the gradient of `x` backward.

    `x - stop_gradient(x)` is exactly 0 forward, so the forward value is
    `quantized` to the bit (`x + stop_gradient(quantized - x)` rounds);
    its gradient is 1. Where `mask` is False the gradient is 0.
    """
    through = x - ops.stop_gradient(x)
    if mask is not None:
        through = ops.where(mask, through, ops.zeros_like(through))
    return ops.stop_gradient(quantized) + through


def binary_codes(x):
    """The binary codes of `x` as +1 / -1, straight-through.

    Forward: `_quantizers.signs`, the sign bits a binary funnel stage
    stores, whose inner products are its scores `m - 2 * hamming`.
    Backward: the identity.
    """
    return straight_through(ops.cast(_quantizers.signs(x, ops), x.dtype), x)


def int8_values(prefixes, ranges):
    """The int8 codes of `prefixes` decoded, straight-through.

    Forward: `_quantizers.scalar_values` of `_quantizers.scalar_codes`,
    the value an int8 funnel stage scores each code as. Backward: the
    identity inside the range, 0 where a value is clipped.

    Args:
        prefixes: float tensor `(..., m)`.
        ranges: float tensor `(2, m)`, the minima and the maxima.
    """
    low, high = ops.stop_gradient(ranges[0]), ops.stop_gradient(ranges[1])
    codes = _quantizers.scalar_codes(prefixes, low, high, ops)
    values = _quantizers.scalar_values(codes, low, high, ops)
    inside = ops.logical_and(
        ops.greater_equal(prefixes, low), ops.less_equal(prefixes, high)
    )
    return straight_through(values, prefixes, inside)


def _per_width_loss(loss):
    """`(per-width loss, truncate_targets)` of the float loss: the inner
    loss of a `MatryoshkaLoss`, or the loss itself."""
    if isinstance(loss, QuantizationAwareLoss):
        return _per_width_loss(loss.loss)
    if isinstance(loss, MatryoshkaLoss):
        if loss.nesting_dims is None:
            raise ValueError(
                "QuantizationAwareLoss quantizes prefixes of an embedding, "
                "and its `loss` is a MatryoshkaLoss in stacked mode (no "
                "`nesting_dims`), which scores the granularities of a "
                "MatryoshkaDense head. Pass a MatryoshkaLoss with "
                "`nesting_dims`, or a loss of the embedding."
            )
        return loss.loss, loss.truncate_targets
    return loss, None


def _check_ranges(ranges, precision, nesting_dims):
    """Returns `ranges` as a list of `(2, m)` nested lists, or None."""
    if ranges is None:
        return None
    if precision != "int8":
        raise ValueError(
            "`ranges` sets the steps of int8 codes; binary codes have a "
            "fixed threshold (0). Leave `ranges` out, or pass "
            "precision='int8'."
        )
    if isinstance(ranges, (str, bytes, np.ndarray)) or not hasattr(
        ranges, "__iter__"
    ):
        raise TypeError(
            "`ranges` must be None or a list of one (2, m) array per width "
            f"of nesting_dims {list(nesting_dims)}; got {ranges!r}."
        )
    ranges = list(ranges)
    if len(ranges) != len(nesting_dims):
        raise ValueError(
            f"`ranges` must hold one (2, m) array per width of nesting_dims "
            f"{list(nesting_dims)}, {len(nesting_dims)}; got {len(ranges)}."
        )
    checked = []
    for i, (r, m) in enumerate(zip(ranges, nesting_dims)):
        r = np.asarray(r)
        if not np.issubdtype(r.dtype, np.number) or r.shape != (2, m):
            raise ValueError(
                f"`ranges[{i}]` must be a (2, {m}) float array, the minima "
                f"and the maxima of the {m}-wide normalised prefixes; got "
                f"shape {r.shape} and dtype {r.dtype}."
            )
        if not np.isfinite(r).all() or (r[0] > r[1]).any():
            raise ValueError(
                f"`ranges[{i}]` must be finite, with the minima in row 0 at "
                "most the maxima in row 1; got "
                f"{int((~np.isfinite(r)).sum())} non-finite value(s) and "
                f"{int((r[0] > r[1]).sum())} minimum(s) above the maximum."
            )
        checked.append(r.astype(np.float32).tolist())
    return checked


@keras.saving.register_keras_serializable(package="keras_mrl")
class QuantizationAwareLoss(keras.losses.Loss):
    """Adds the loss of binary or int8 prefixes to a float loss.

    Trains the prefixes that a quantized stage of
    `keras_mrl.retrieval.FunnelIndex` stores: per example,
    `loss(y_true, y_pred) + weight * sum_m loss_m(y_true, Q(y_pred)_m)`,
    where `loss_m` is the inner loss of `loss` (a
    `keras_mrl.losses.MatryoshkaLoss` in prefix mode, or the loss itself)
    at width `m` of `nesting_dims`, and `Q` quantizes as the index does,
    with straight-through gradients:

    - `"binary"`: the sign bits (`x > 0`) as +1 / -1. Their inner product
      at width `m` is the index's binary score `m - 2 * hamming`, and their
      cosine, which the in-batch losses score, is that divided by `m`.
      Backward the gradient passes unchanged: the embedder's scale is its
      own (its outputs are not normalised), so no fixed clip such as
      `|x| <= 1` would mean the same for every embedder.
      Queries and documents are both quantized, as the index quantizes
      both. Every width must be a multiple of 8, as the index packs 8
      bits to a byte.
    - `"int8"`: the L2-normalised prefix of width `m`, coded in 255 steps
      of each dimension's range and decoded to the middle of its step, as
      the index's int8 stage (normalising, the default) scores it; the
      gradient passes where the value is inside the range. The index
      scores a float query against the codes, so only the candidates are
      quantized: `y_pred` must be the `(batch, 2 + n, D)` stack of
      `keras_mrl.models.ContrastiveModel`, whose first branch (the
      anchors) stays float. The ranges are measured on the batch's
      candidates, as the index measures them on its corpus, unless
      `ranges` gives them. The in-batch losses score the cosine of the
      query with the decoded code, the index their inner product: the
      two differ by the decoded code's norm, 1 to within a step.

    The codes are computed by the functions that `keras_mrl.serving.quantize`
    and `FunnelIndex` use, so what the loss trains on is what the index
    stores and scores. It is a loss, not a layer, because the quantizer
    belongs to the objective only: a layer would put it into what the
    model returns (`encode`, `keras_mrl.serving.export`, the saved model),
    while the index takes float embeddings, quantizes them itself and
    rescores its shortlist in float. As a loss it leaves the embedder as it
    is, and the float loss stays in the objective for the widths served
    in float.

    Inside `keras_mrl.models.ContrastiveModel` with a guide, the loss reads
    the guide embeddings when its inner loss does (`guide_margin`).

    Args:
        loss: the float loss: a `keras_mrl.losses.MatryoshkaLoss` with
            `nesting_dims`, or any loss of the embedding, as
            `MatryoshkaLoss` takes it; or another `QuantizationAwareLoss`
            (a binary first stage and an int8 second one, say).
        precision: `"binary"` or `"int8"`, the precision of the index's
            stage.
        nesting_dims: the widths whose quantized prefixes are trained,
            strictly increasing (e.g. `[256]`, a binary first stage).
        weight: the weight of the quantized term, a finite number >= 0.
        ranges: int8 only: None to measure the ranges on each batch, or a
            list of one `(2, m)` array per width, the minima and maxima of
            the normalised prefixes (as the index measures them on its
            corpus).
        reduction: the Keras reduction of the per-example values.
        name: the loss name.
        **kwargs: other `keras.losses.Loss` arguments, such as `dtype`.

    Call arguments:
        y_true: the targets of `loss`; None when it ignores them.
        y_pred: the embeddings `(..., D)`; for int8 `(batch, 2 + n, D)`.

    Returns:
        The reduced loss; `call` returns the per-example values.

    Example:

    >>> mrl = keras_mrl.losses.MatryoshkaLoss(
    ...     keras_mrl.losses.MultipleNegativesRankingLoss(),
    ...     nesting_dims=[8, 16],
    ... )
    >>> loss = keras_mrl.losses.QuantizationAwareLoss(
    ...     mrl, precision="binary", nesting_dims=[16]
    ... )
    >>> y_pred = np.random.default_rng(0).normal(size=(4, 2, 16))
    >>> float(loss(None, y_pred)) > float(mrl(None, y_pred))
    True
    """

    def __init__(
        self,
        loss,
        *,
        precision,
        nesting_dims,
        weight=1.0,
        ranges=None,
        reduction="sum_over_batch_size",
        name="quantization_aware_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.loss = _as_loss(loss)
        self.precision = check_choice(precision, "precision", PRECISIONS)
        self.nesting_dims = list(validate_nesting_dims(nesting_dims))
        if self.precision == "binary":
            odd = [m for m in self.nesting_dims if m % 8]
            if odd:
                raise ValueError(
                    "A binary index packs 8 dimensions to a byte, so every "
                    "width of a binary QuantizationAwareLoss must be a "
                    f"multiple of 8; got {odd} in nesting_dims "
                    f"{self.nesting_dims}."
                )
        self.weight = check_loss_weight(weight, "weight")
        self.ranges = _check_ranges(ranges, self.precision, self.nesting_dims)
        inner, truncate_targets = _per_width_loss(self.loss)
        self._inner = inner
        # The quantized prefixes are scored by the inner loss, through a
        # MatryoshkaLoss: binary codes of every width at once (the signs of
        # a prefix are the prefix of the signs), int8 width by width (each
        # width is normalised and coded on its own).
        widths = (
            [self.nesting_dims]
            if self.precision == "binary"
            else [[m] for m in self.nesting_dims]
        )
        self._quantized = [
            MatryoshkaLoss(
                inner,
                nesting_dims=dims,
                truncate_targets=truncate_targets,
                dtype=self.dtype,
            )
            for dims in widths
        ]

    @property
    def guide_margin(self):
        """The inner loss's `guide_margin`: whether it reads a guide."""
        return getattr(self._inner, "guide_margin", None)

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true = fill_missing_targets(self._inner, y_true, y_pred, self.name)
        return super().__call__(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        shape = tuple(y_pred.shape)
        width = shape[-1] if shape else None
        if not shape or (width is not None and width < self.nesting_dims[-1]):
            raise ValueError(
                "QuantizationAwareLoss quantizes prefixes of widths "
                f"{self.nesting_dims}, but y_pred has shape {shape}, only "
                f"{width} wide."
            )
        dtype = compute_dtype(self.dtype)
        y_pred = ops.cast(y_pred, dtype)
        total = ops.cast(_per_example(self.loss, y_true, y_pred), dtype)
        if self.weight == 0:
            return total
        if self.precision == "binary":
            terms = [self._quantized[0].call(y_true, binary_codes(y_pred))]
        else:
            terms = [
                loss.call(y_true, self._int8_candidates(y_pred, i))
                for i, loss in enumerate(self._quantized)
            ]
        for term in terms:
            total = total + self.weight * ops.cast(term, dtype)
        return total

    def _int8_candidates(self, y_pred, i):
        """The normalised prefix of width `nesting_dims[i]`, its candidate
        branches (all but the first) int8 coded and decoded."""
        shape = tuple(y_pred.shape)
        if len(shape) != 3 or shape[1] is None or shape[1] < 2:
            raise ValueError(
                "An int8 QuantizationAwareLoss quantizes the candidates and "
                "keeps the anchors float, as the index scores a float query "
                "against int8 codes: y_pred must be (batch, 2 + n, D), "
                "anchors first, as keras_mrl.models.ContrastiveModel stacks "
                f"them; got shape {shape}."
            )
        m = self.nesting_dims[i]
        prefixes = truncate(y_pred, dim=m)
        anchors, candidates = prefixes[:, :1], prefixes[:, 1:]
        if self.ranges is None:
            ranges = _quantizers.measure_ranges(
                ops.reshape(candidates, (-1, m)), ops
            )
        else:
            ranges = ops.convert_to_tensor(self.ranges[i], prefixes.dtype)
        return ops.concatenate(
            [anchors, int8_values(candidates, ranges)], axis=1
        )

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.losses.serialize(self.loss),
            "precision": self.precision,
            "nesting_dims": self.nesting_dims,
            "weight": self.weight,
            "ranges": self.ranges,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)
