"""The confidence cascade: adaptive classification with a Matryoshka head.

A sample is answered by the narrowest granularity that is confident enough,
as in the adaptive classification of Matryoshka Representation Learning
(Kusupati et al., 2022). The module is numpy-only: it reads the stacked
logits `(N, G, C)` of `keras_mrl.MatryoshkaDense`, from any backend.
"""

import numbers

import numpy as np

from keras_mrl._validation import check_choice
from keras_mrl._validation import check_finite
from keras_mrl._validation import keyword_only
from keras_mrl.nesting import validate_nesting_dims


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
        raise TypeError(
            f"`thresholds` must hold numbers, got {thresholds!r}."
        )
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

    @keyword_only
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
    @keyword_only
    def calibrate(
        cls, val_logits, *, val_labels, nesting_dims, tolerance=0.0,
        search="shared",
    ):
        """Chooses the thresholds that save the most width on validation.

        The goal is the smallest mean width such that the cascade loses at
        most `tolerance * N` of the validation answers the widest width gets
        right. An answer the widest width gets wrong is not credited when a
        narrower width gets it right: such luck does not recur on new data,
        and trading it for real losses overfits. The cascade's validation
        accuracy is therefore at least the widest width's minus
        `tolerance`.

        `search` picks the family of thresholds searched:

        - `"shared"` (default): one value for every width but the widest,
          the exact best over all splits of the validation confidences.
          One free number barely overfits. On sklearn digits (359
          validation, 360 test samples, 10 random splits;
          `benchmarks/cascade.py`) it changed test accuracy against full
          width by -0.03 to -0.06 pt on average (worst split -0.28 pt) at
          7.0-7.3x fewer dimensions on TensorFlow and JAX, where
          `"per_width"` lost 0.78-0.83 pt.
        - `"per_width"`: a free threshold per width, by coordinate descent.
          A step takes one width, holds the other thresholds fixed, and
          tries every threshold that splits that width's validation
          confidences differently, keeping the best if it improves on the
          current cascade; sweeps repeat until one improves nothing. It runs
          from three starts and keeps the best: the full-width cascade (all
          thresholds `inf`) swept from the narrowest width, the same swept
          from the widest, and the best shared cascade. It saves more width
          on validation, so use it when the validation set is large enough
          that its per-width choices carry over.

        Ties go to more widest-width answers kept, then to the higher
        threshold. A chosen threshold sits halfway between neighbouring
        validation confidences, for a margin on unseen data; one that
        accepts every validation sample reaching its width has no lower
        neighbour and is the lowest of their confidences. With a single
        width the only cascade is that width, threshold 0.0.

        Args:
            val_logits: stacked validation logits `(N, G, C)`.
            val_labels: integer labels `(N,)`.
            nesting_dims: the `G` widths of the granularities.
            tolerance: float in [0, 1], the fraction of validation answers
                the cascade may lose against the widest width.
            search: `"shared"` or `"per_width"`, as above.

        Returns:
            A calibrated `Cascade`.

        Raises:
            TypeError: for a `tolerance` that is not a real number.
            ValueError: for logits or labels of the wrong shape or values
                (NaN or infinite logits included), a `tolerance` outside
                [0, 1], or an unknown `search`.

        Example:

        >>> logits = np.array([[[3.0, 0.0], [3.0, 0.0]],
        ...                    [[0.2, 0.0], [0.0, 3.0]]])
        >>> labels = np.array([0, 1])
        >>> cascade = keras_mrl.adaptive.Cascade.calibrate(
        ...     logits, val_labels=labels, nesting_dims=[8, 64]
        ... )
        >>> cascade.report(logits, labels=labels)["mean_width"]
        36.0
        """
        dims = validate_nesting_dims(nesting_dims)
        logits = _check_logits(val_logits, len(dims), "val_logits")
        labels = _check_labels(val_labels, logits, "val_labels")
        if isinstance(tolerance, bool) or not isinstance(
            tolerance, numbers.Real
        ):
            raise TypeError(
                f"`tolerance` must be a float in [0, 1], got {tolerance!r}."
            )
        if not 0.0 <= tolerance <= 1.0:
            raise ValueError(
                f"`tolerance` must be a float in [0, 1], got {tolerance!r}."
            )
        search = check_choice(search, "search", ("shared", "per_width"))
        confidence, predicted = _max_softmax(logits)
        correct = predicted == labels[:, None]
        # Only the answers the widest width gets right count (see above).
        kept = correct & correct[:, -1:]
        widths = np.asarray(dims)
        # Counts, not fractions, so that the constraint is exact; the 1e-9
        # keeps a tolerance such as 0.29 * 100 = 28.999999999999996 whole.
        need = int(np.ceil(kept[:, -1].sum() - tolerance * len(labels) - 1e-9))
        data = (confidence, kept, widths, need)
        shared = _best_shared(*data)
        if search == "shared":
            return cls(dims, thresholds=shared.tolist())
        full_width = np.full(len(dims), np.inf)
        full_width[-1] = 0.0
        narrow_first = range(len(dims) - 1)
        runs = [
            _descend(full_width, narrow_first, *data),
            _descend(full_width, reversed(narrow_first), *data),
            _descend(shared, narrow_first, *data),
        ]
        thresholds, _ = min(runs, key=lambda run: run[1])
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

    @keyword_only
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


def _score(thresholds, confidence, correct, widths):
    """`(total width, -correct answers)` of a cascade; smaller is better."""
    stops = _stops(confidence, thresholds)
    rows = np.arange(len(stops))
    return int(widths[stops].sum()), -int(correct[rows, stops].sum())


def _descend(thresholds, order, confidence, correct, widths, need):
    """Coordinate descent from a feasible cascade; returns it and its score."""
    thresholds = thresholds.copy()
    order = list(order)
    best = _score(thresholds, confidence, correct, widths)
    improved = True
    while improved:
        improved = False
        for g in order:
            value, score = _best_threshold(
                g, thresholds, confidence, correct, widths, need
            )
            # Strict improvement: the loop ends, as scores are finite ints.
            if score < best:
                thresholds[g], best, improved = value, score, True
    return thresholds, best


def _best_shared(confidence, correct, widths, need):
    """The best feasible cascade whose thresholds are all one value.

    A shared threshold `t` stops a sample at the first width whose
    confidence reaches `t`, so the sample stops at width `g` for every `t`
    in `(max of its narrower confidences, its confidence at g]`. One sweep
    over those intervals scores every candidate at once: each distinct
    narrow confidence, and `inf` (all at the widest width, always
    feasible; with a single width, the only candidate).
    """
    num_widths = confidence.shape[1]
    narrow = confidence[:, :-1]
    values = np.unique(narrow)
    # Differences over the candidates `values[k]`, then `inf` last.
    total_width = np.zeros(len(values) + 2, np.int64)
    total_correct = np.zeros(len(values) + 2, np.int64)
    below = np.full(len(confidence), -np.inf)
    for g in range(num_widths):
        if g < num_widths - 1:
            top = narrow[:, g]
            live = top > below
            end = np.searchsorted(values, top[live], "right")
        else:
            live = np.ones(len(confidence), bool)
            end = np.full(len(confidence), len(values) + 1)
        start = np.searchsorted(values, below[live], "right")
        hits = correct[live, g].astype(np.int64)
        np.add.at(total_width, start, widths[g])
        np.add.at(total_width, end, -widths[g])
        np.add.at(total_correct, start, hits)
        np.add.at(total_correct, end, -hits)
        if g < num_widths - 1:
            below = np.maximum(below, narrow[:, g])
    total_width = np.cumsum(total_width)[:-1]
    total_correct = np.cumsum(total_correct)[:-1]
    feasible = np.flatnonzero(total_correct >= need)
    # lexsort's last key is the primary one; ties go to the higher value.
    k = feasible[np.lexsort((-feasible, -total_correct[feasible],
                             total_width[feasible]))[0]]
    if k == len(values):
        value = np.inf
    elif k == 0:
        value = values[0]
    else:
        value = (values[k - 1] + values[k]) / 2.0
    thresholds = np.full(num_widths, value)
    thresholds[-1] = 0.0
    return thresholds


def _best_threshold(g, thresholds, confidence, correct, widths, need):
    """The best threshold of width `g`, the others fixed, and its score.

    The score is `(total width, -correct answers)`, smaller is better; a
    threshold that loses too much accuracy is never chosen.
    """
    stops = _stops(confidence, thresholds)
    before = stops < g
    # Where a sample that reaches `g` goes when `g` does not accept it.
    off = thresholds.copy()
    off[g] = np.inf
    fallback = _stops(confidence, off)
    rows = np.flatnonzero(before)
    fixed_correct = correct[rows, stops[rows]].sum()
    fixed_width = widths[stops[rows]].sum()

    rows = np.flatnonzero(~before)
    order = rows[np.argsort(-confidence[rows, g], kind="stable")]
    conf = confidence[order, g]
    # Stopping the j most confident at `g` and sending the rest on:
    zero = np.zeros(1, np.int64)
    stop_correct = np.concatenate([zero, np.cumsum(correct[order, g])])
    go_correct = correct[order, fallback[order]]
    go_correct = go_correct.sum() - np.concatenate(
        [zero, np.cumsum(go_correct)]
    )
    go_width = widths[fallback[order]]
    go_width = go_width.sum() - np.concatenate([zero, np.cumsum(go_width)])
    total_correct = fixed_correct + stop_correct + go_correct
    total_width = fixed_width + widths[g] * np.arange(len(order) + 1) + go_width

    # Only a j at the end of a run of equal confidences is a threshold.
    splits = np.ones(len(order) + 1, bool)
    splits[1:-1] = conf[:-1] > conf[1:]
    # Never empty: the current threshold is one of the splits, and the
    # cascade it belongs to is feasible.
    feasible = np.flatnonzero(splits & (total_correct >= need))
    # lexsort's last key is the primary one; ties go to the smaller j.
    j = feasible[np.lexsort((feasible, -total_correct[feasible],
                             total_width[feasible]))[0]]
    if j == 0:
        value = np.inf
    elif j == len(order):
        # Every sample reaching `g` stops: no lower confidence to split
        # from, so the lowest one is the threshold, without a margin.
        value = conf[-1]
    else:
        value = (conf[j - 1] + conf[j]) / 2.0
    return float(value), (int(total_width[j]), -int(total_correct[j]))
