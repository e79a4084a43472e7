"""The confidence cascade: adaptive classification with a Matryoshka head.

A sample is answered by the narrowest granularity that is confident enough,
as in the adaptive classification of Matryoshka Representation Learning
(Kusupati et al., 2022). The module is numpy-only: it reads the stacked
logits `(N, G, C)` of `keras_mrl.layers.MatryoshkaDense`, from any backend.
"""

import math
import numbers
import warnings

import numpy as np

from keras_mrl._validation import check_finite
from keras_mrl._validation import validate_nesting_dims

__all__ = ["Cascade"]


def _max_softmax(logits):
    """Returns the max softmax probability and the argmax class."""
    logits = logits.astype(np.float64)
    # With the max subtracted the largest term is exp(0) = 1: nothing
    # overflows, and the max probability is 1 / sum(exp(logits - max)).
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return 1.0 / np.exp(shifted).sum(axis=-1), logits.argmax(axis=-1)


def _stops(confidence, thresholds):
    """The index of the first granularity whose confidence reaches its bar."""
    # The last threshold is 0 and a max softmax is at least 1 / C, so every
    # row has an accepting granularity and argmax finds the first one.
    return np.argmax(confidence >= thresholds, axis=1)


def _check_logits(logits, num_granularities, name):
    logits = np.asarray(logits)
    if logits.ndim != 3 or logits.shape[1] != num_granularities:
        raise ValueError(
            f"`{name}` must be stacked logits of shape (N, G, C) with "
            f"G={num_granularities} granularities, as MatryoshkaDense "
            f"returns them; got shape {logits.shape}."
        )
    if logits.shape[0] == 0:
        raise ValueError(f"`{name}` holds no samples (shape {logits.shape}).")
    if logits.shape[2] < 2:
        raise ValueError(
            f"`{name}` has {logits.shape[2]} class, but a softmax confidence "
            "needs at least 2 classes."
        )
    if not np.issubdtype(logits.dtype, np.number):
        raise ValueError(f"`{name}` must be numeric, got {logits.dtype}.")
    return check_finite(logits, name)


def _check_labels(labels, logits, name):
    labels = np.asarray(labels)
    num, _, classes = logits.shape
    if labels.shape != (num,):
        raise ValueError(
            f"`{name}` must be integer class ids of shape ({num},), one per "
            f"sample of the logits; got shape {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.number) or np.any(
        labels != np.round(labels)
    ):
        raise ValueError(
            f"`{name}` must hold integer class ids, got dtype {labels.dtype}."
        )
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(
            f"`{name}` must hold class ids in [0, {classes}), got values "
            f"from {labels.min()} to {labels.max()}."
        )
    return labels


def _check_thresholds(thresholds):
    # A string such as "0.9" would pass float(); a threshold is a number.
    if isinstance(thresholds, (str, bytes)) or not np.iterable(thresholds):
        raise TypeError(
            "`thresholds` must be a list of numbers, one per width, such as "
            f"[0.9, 0.0]; got {thresholds!r}."
        )
    thresholds = list(thresholds)
    if any(
        isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real)
        for t in thresholds
    ):
        raise TypeError(f"`thresholds` must hold numbers, got {thresholds!r}.")
    return tuple(float(t) for t in thresholds)


class Cascade:
    """Answers each sample at the first width confident enough.

    Granularity `g` accepts a sample when its max softmax probability is at
    least `thresholds[g]`; the sample takes the class of the first accepting
    granularity. The widest granularity accepts every sample that reaches it,
    so its threshold is 0. A threshold of `inf` switches a width off.

    `calibrate` picks the thresholds on validation data. The cascade reads
    the logits of every width at once; the saving it reports is the mean
    width of the representation each answer used, which a serving system
    spends by computing the wider prefixes only for the samples that need
    them.

    Args:
        nesting_dims: the strictly increasing widths of the granularities.
        thresholds: one float per width, each >= 0 (or `inf`); the last must
            be 0.0.

    Raises:
        TypeError: for `thresholds` that are not a list of numbers.
        ValueError: for bad widths, or thresholds of the wrong length,
            below 0, NaN, or with a last one other than 0.0.

    Example:

    >>> logits = np.array([[[4.0, 0.0], [0.0, 4.0]],
    ...                    [[0.1, 0.0], [0.0, 4.0]]])
    >>> cascade = keras_mrl.adaptive.Cascade([8, 64], thresholds=[0.9, 0.0])
    >>> classes, widths = cascade.predict(logits)
    >>> classes.tolist(), widths.tolist()
    ([0, 1], [8, 64])
    """

    def __init__(self, nesting_dims, *, thresholds):
        self.nesting_dims = validate_nesting_dims(nesting_dims)
        thresholds = _check_thresholds(thresholds)
        if len(thresholds) != len(self.nesting_dims):
            raise ValueError(
                f"`thresholds` {list(thresholds)} must hold one value per "
                f"width of {list(self.nesting_dims)}."
            )
        if any(not t >= 0.0 for t in thresholds):
            raise ValueError(
                f"`thresholds` must be >= 0 (or inf), got {list(thresholds)}."
            )
        if thresholds[-1] != 0.0:
            raise ValueError(
                f"The last threshold must be 0.0, got {thresholds[-1]}: the "
                "widest width answers every sample that reaches it."
            )
        self.thresholds = thresholds

    @classmethod
    def calibrate(
        cls,
        val_logits,
        *,
        val_labels,
        nesting_dims,
        tolerance=0.003,
        delta=None,
    ):
        """Chooses thresholds that lose at most `tolerance` on unseen data.

        The loss of a sample is 1 when the widest width answers it right
        and the cascade does not, else 0: its mean is an upper bound on the
        accuracy the cascade gives up against the widest width (a narrow
        width's lucky right answer is not credited). The thresholds are
        one value shared by every width but the widest, which orders the
        cascades from full width (`inf`, no loss) to the narrowest width
        (0.0, the most saving). The calibration keeps the most saving one
        whose loss on the validation samples passes a risk-control test:

        - `delta=None` (default): conformal risk control (Angelopoulos et
          al., 2022, arXiv 2208.02814, Theorem 1), which allows `k`
          validation losses out of `N` when `(k + 1) / (N + 1) <=
          tolerance`. The guarantee: over the draw of validation and test
          samples from the same distribution, the expected loss on a new
          sample is at most `tolerance`. It spends the budget on average.
        - `delta` in (0, 1): Learn-then-Test (Angelopoulos et al., 2021,
          arXiv 2110.01052) with the exact binomial tail p-value
          `P(Binomial(N, tolerance) <= k) <= delta` and fixed-sequence
          testing from full width. The guarantee: with probability at
          least `1 - delta` over the validation draw, the loss on new data
          is at most `tolerance`. It spends less than the budget, and
          needs `N >= log(1 / delta) / tolerance` validation samples to
          save anything.

        Both tests need a loss that can only grow as the threshold falls;
        a sample's loss is therefore counted at a threshold when the
        cascade loses it there or at any higher threshold (an upper bound
        of the cascade's loss). `tolerance=0.0` allows no loss and keeps
        every sample at the widest width; so does a positive tolerance
        that the validation samples are too few to certify (conformal risk
        control needs `N >= 1 / tolerance - 1`, 333 for the default
        0.003), with a warning. The threshold chosen sits halfway between
        the validation confidences around it, for a margin on unseen data;
        none below it is a threshold of 0.0.

        Args:
            val_logits: stacked validation logits `(N, G, C)`, drawn from
                the data the cascade will serve.
            val_labels: integer labels `(N,)`.
            nesting_dims: the `G` widths of the granularities.
            tolerance: float in [0, 1], the accuracy the cascade may give
                up against the widest width on unseen data; 0.003 (0.3 pt)
                by default.
            delta: None, or a float in (0, 1): the probability allowed for
                the loss on unseen data to exceed `tolerance`.

        Returns:
            A calibrated `Cascade`.

        Raises:
            TypeError: for a `tolerance` or `delta` that is not a real
                number.
            ValueError: for logits or labels of the wrong shape or values
                (NaN or infinite logits included), a `tolerance` outside
                [0, 1] or a `delta` outside (0, 1).

        Example:

        >>> logits = np.array([[[3.0, 0.0], [3.0, 0.0]],
        ...                    [[0.2, 0.0], [0.0, 3.0]]] * 10)
        >>> labels = np.array([0, 1] * 10)
        >>> cascade = keras_mrl.adaptive.Cascade.calibrate(
        ...     logits, val_labels=labels, nesting_dims=[8, 64],
        ...     tolerance=0.1,
        ... )
        >>> cascade.report(logits, labels=labels)["mean_width"]
        36.0
        """
        dims = validate_nesting_dims(nesting_dims)
        logits = _check_logits(val_logits, len(dims), "val_logits")
        labels = _check_labels(val_labels, logits, "val_labels")
        tolerance = _check_fraction(tolerance, "tolerance", 0.0, 1.0, True)
        if delta is not None:
            delta = _check_fraction(delta, "delta", 0.0, 1.0, False)
        confidence, predicted = _max_softmax(logits)
        correct = predicted == labels[:, None]
        lost = correct[:, -1:] & ~correct
        levels = _loss_levels(confidence, lost)
        allowed = _allowed_losses(len(labels), tolerance, delta)
        if allowed < 0 and tolerance > 0:
            warnings.warn(
                _too_few_samples(len(labels), tolerance, delta), stacklevel=3
            )
        value = _shared_threshold(levels, confidence[:, :-1], allowed)
        thresholds = np.full(len(dims), value)
        thresholds[-1] = 0.0
        return cls(dims, thresholds=thresholds.tolist())

    def _decide(self, logits):
        logits = _check_logits(logits, len(self.nesting_dims), "logits")
        confidence, predicted = _max_softmax(logits)
        stops = _stops(confidence, np.asarray(self.thresholds))
        rows = np.arange(len(stops))
        widths = np.asarray(self.nesting_dims)[stops]
        return predicted[rows, stops], widths, predicted[:, -1]

    def predict(self, logits):
        """Returns the cascade's answer for every sample.

        Args:
            logits: stacked logits `(N, G, C)`.

        Returns:
            `(classes, widths)`: int arrays `(N,)`, the class each sample
            gets and the width that answered it.
        """
        classes, widths, _ = self._decide(logits)
        return classes, widths

    def report(self, logits, *, labels):
        """Measures the cascade on labelled data.

        Args:
            logits: stacked logits `(N, G, C)`.
            labels: integer labels `(N,)`.

        Returns:
            A dict with `accuracy`, `full_width_accuracy` (the widest width
            alone), `mean_width`, `width_histogram` (`{width: samples}`) and
            `saving` (`nesting_dims[-1] / mean_width`).
        """
        classes, widths, full = self._decide(logits)
        labels = _check_labels(labels, np.asarray(logits), "labels")
        mean_width = float(widths.mean())
        return {
            "accuracy": float(np.mean(classes == labels)),
            "full_width_accuracy": float(np.mean(full == labels)),
            "mean_width": mean_width,
            "width_histogram": {
                d: int(np.sum(widths == d)) for d in self.nesting_dims
            },
            "saving": self.nesting_dims[-1] / mean_width,
        }

    def get_config(self):
        """Returns the constructor arguments; `inf` thresholds stay floats."""
        return {
            "nesting_dims": list(self.nesting_dims),
            "thresholds": list(self.thresholds),
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds a cascade from `get_config()`."""
        return cls(**config)


def _check_fraction(value, name, low, high, closed):
    """Returns `value` as a float in [low, high] (closed) or (low, high)."""
    bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Real
    ):
        raise TypeError(f"`{name}` must be a float in {bounds}, got {value!r}.")
    inside = low <= value <= high if closed else low < value < high
    if not inside:
        raise ValueError(
            f"`{name}` must be a float in {bounds}, got {value!r}."
        )
    return float(value)


def _loss_levels(confidence, lost):
    """The highest shared threshold at which each sample is lost.

    A shared threshold `t` stops a sample at the first width whose
    confidence reaches `t`: at narrow width `g` for `t` in (the max of its
    narrower confidences, its confidence at `g`]. The sample is lost at
    every threshold up to the top of the highest such interval where its
    answer is lost, `-inf` when there is none: `t <= level` is the
    monotone upper bound of its loss that the risk-control tests need.

    Args:
        confidence: `(N, G)` max softmax probabilities.
        lost: `(N, G)` bools, the widest width right and width `g` wrong.
    """
    narrow = confidence[:, :-1]
    below = np.maximum.accumulate(narrow, axis=1)
    below = np.concatenate(
        [np.full((len(narrow), 1), -np.inf), below[:, :-1]], axis=1
    )
    # A width whose confidence does not beat a narrower one never answers.
    answers = narrow > below
    return np.where(answers & lost[:, :-1], narrow, -np.inf).max(
        axis=1, initial=-np.inf
    )


def _too_few_samples(n, tolerance, delta):
    """The warning of a positive `tolerance` that `n` samples cannot test."""
    if delta is None:
        test = "conformal risk control"
        # No loss passes when 1 / (n + 1) > tolerance; the 1e-9 as in
        # `_allowed_losses`.
        needed = math.ceil(1.0 / tolerance - 1.0 - 1e-9)
    else:
        test = f"Learn-then-Test at delta={delta}"
        # No loss passes when P(Binomial(n, tolerance) = 0) > delta.
        needed = math.ceil(math.log(delta) / math.log1p(-tolerance))
    return (
        f"Cascade.calibrate got {n} validation samples, too few for "
        f"{test} to certify any loss at tolerance={tolerance}: it needs at "
        f"least {needed}. The cascade answers every sample at the widest "
        "width, saving nothing. Pass more validation samples or a larger "
        "`tolerance`."
    )


def _binomial_cdf(n, p):
    """`P(Binomial(n, p) <= k)` for k = 0 ... n, for 0 < p < 1."""
    k = np.arange(n)
    # log pmf(k + 1) - log pmf(k) = log((n - k) / (k + 1) * p / (1 - p)).
    steps = np.log((n - k) / (k + 1)) + np.log(p) - np.log1p(-p)
    log_pmf = n * np.log1p(-p) + np.concatenate([[0.0], np.cumsum(steps)])
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def _allowed_losses(n, tolerance, delta):
    """The most validation losses out of `n` that the test accepts, or -1.

    With `delta=None` conformal risk control: `(k + 1) / (n + 1) <=
    tolerance`. With a `delta`: the binomial tail `P(Binomial(n,
    tolerance) <= k) <= delta` of Learn-then-Test.
    """
    if tolerance >= 1.0:
        return n
    if delta is None:
        # The 1e-9 keeps a product such as 0.29 * 100 = 28.999999999999996
        # whole.
        return min(n, int(np.floor(tolerance * (n + 1) - 1 + 1e-9)))
    if tolerance <= 0.0:
        return -1
    cdf = _binomial_cdf(n, tolerance)
    return int(np.searchsorted(cdf, delta, side="right")) - 1


def _shared_threshold(levels, narrow, allowed):
    """The lowest shared threshold losing at most `allowed` samples.

    Args:
        levels: `(N,)` from `_loss_levels`.
        narrow: `(N, G - 1)` confidences of the narrow widths.
        allowed: the most losses accepted; -1 for none at all.
    """
    if allowed < 0:
        return np.inf
    ranked = np.sort(levels[np.isfinite(levels)])[::-1]
    if allowed >= len(ranked):
        return 0.0
    # Strictly above the level of the (allowed + 1)-th loss, halfway to
    # the next validation confidence, so that no validation sample changes
    # its stop anywhere in between.
    floor = ranked[allowed]
    above = narrow[narrow > floor]
    if not above.size:
        return np.inf
    return float((floor + above.min()) / 2.0)
