import importlib
import inspect
import json
import pathlib
import re
import warnings

import numpy as np
import pytest

from keras_mrl.adaptive import Cascade
from keras_mrl.adaptive import _allowed_losses
from keras_mrl.adaptive import _binomial_cdf
from keras_mrl.adaptive import _loss_levels
from keras_mrl.adaptive import _too_few_samples

pytestmark = pytest.mark.once

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def two_class(a):
    """Logits (a, 0) per width: class 0 iff a > 0, confidence sigmoid(|a|)."""
    a = np.asarray(a, dtype="float32")
    return np.stack([a, np.zeros_like(a)], axis=-1)


# Six samples at widths [4, 16, 64]; each row is the logit margin `a` of
# class 0 per width, so the confidences are sigmoid(|a|):
# 3 -> 0.953, 2 -> 0.881, 1 -> 0.731, 0.5 -> 0.622.
HAND_DIMS = [4, 16, 64]
HAND_MARGINS = [
    [3.0, 3.0, 3.0],  # right everywhere, very confident
    [2.0, 3.0, 3.0],  # right everywhere
    [-2.0, 2.0, 3.0],  # confidently wrong at 4
    [1.0, -1.0, 2.0],  # wrong at 16
    [0.5, 0.5, 0.5],  # right, never confident
    [1.0, 1.0, 1.0],  # label 1: wrong everywhere
]
HAND_LABELS = np.array([0, 0, 0, 0, 0, 1])


def reference_softmax(logits):
    e = np.exp(logits.astype("float64"))
    return e / e.sum(axis=-1, keepdims=True)


def reference_predict(logits, dims, thresholds):
    """The cascade, one sample at a time."""
    probs = reference_softmax(logits)
    classes, widths = [], []
    for sample in probs:
        for g, p in enumerate(sample):
            if p.max() >= thresholds[g] or g == len(dims) - 1:
                classes.append(int(p.argmax()))
                widths.append(dims[g])
                break
    return np.array(classes), np.array(widths)


def sample_losses(logits, labels, dims, thresholds):
    """Per sample: the widest width right and the cascade wrong."""
    classes, _ = reference_predict(logits, dims, thresholds)
    full_right = logits[:, -1].argmax(-1) == labels
    return full_right & (classes != labels)


def test_hand_checked_calibration():
    logits = two_class(HAND_MARGINS)

    # Only sample 2 can be lost: at width 4 (0.881), where it stops for a
    # shared threshold <= 0.881. Sample 3 is wrong at 16 with the same
    # confidence as at 4, where it stops first. With N = 6 conformal risk
    # control allows k losses when (k + 1) / 7 <= tolerance.
    def calibrate(tolerance, delta=None):
        return Cascade.calibrate(
            logits,
            val_labels=HAND_LABELS,
            nesting_dims=HAND_DIMS,
            tolerance=tolerance,
            delta=delta,
        )

    # k = 0: just above 0.881, halfway to the next confidence, 0.953.
    shared = (sigmoid(2.0) + sigmoid(3.0)) / 2
    cascade = calibrate(1 / 7)
    np.testing.assert_allclose(cascade.thresholds, [shared, shared, 0.0])
    classes, widths = cascade.predict(logits)
    np.testing.assert_array_equal(widths, [4, 16, 64, 64, 64, 64])
    np.testing.assert_array_equal(classes, [0, 0, 0, 0, 0, 0])
    report = cascade.report(logits, labels=HAND_LABELS)
    assert report["accuracy"] == pytest.approx(5 / 6)
    assert report["mean_width"] == pytest.approx(46.0)
    # Just below 1 / 7 no loss is allowed: the widest width only.
    with pytest.warns(UserWarning, match="needs at least 7"):
        assert calibrate(1 / 7 - 1e-6).thresholds == (np.inf, np.inf, 0.0)
    # k = 1 covers every possible loss: all stop at the narrowest width.
    cascade = calibrate(2 / 7)
    assert cascade.thresholds == (0.0, 0.0, 0.0)
    report = cascade.report(logits, labels=HAND_LABELS)
    assert report["mean_width"] == 4.0
    assert report["accuracy"] == pytest.approx(4 / 6)
    # Learn-then-Test: P(Binomial(6, 0.5) <= 0) = 1 / 64 and <= 1 is
    # 7 / 64: delta 0.01 certifies nothing (full width), delta 0.1 zero
    # losses (as k = 0 above) and delta 0.11 one.
    with pytest.warns(UserWarning, match="needs at least 7"):
        assert calibrate(0.5, delta=0.01).thresholds == (np.inf, np.inf, 0.0)
    np.testing.assert_allclose(
        calibrate(0.5, delta=0.1).thresholds, [shared, shared, 0.0]
    )
    assert calibrate(0.5, delta=0.11).thresholds == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("delta", [None, 0.1])
def test_zero_tolerance_keeps_the_widest_width(delta):
    logits = two_class(HAND_MARGINS)
    cascade = Cascade.calibrate(
        logits,
        val_labels=HAND_LABELS,
        nesting_dims=HAND_DIMS,
        tolerance=0.0,
        delta=delta,
    )
    assert cascade.thresholds == (np.inf, np.inf, 0.0)
    assert cascade.report(logits, labels=HAND_LABELS)["mean_width"] == 64


@pytest.mark.parametrize("delta", [None, 0.1])
def test_full_tolerance_answers_at_the_narrowest_width(delta):
    logits = two_class(HAND_MARGINS)
    cascade = Cascade.calibrate(
        logits,
        val_labels=HAND_LABELS,
        nesting_dims=HAND_DIMS,
        tolerance=1.0,
        delta=delta,
    )
    assert cascade.thresholds == (0.0, 0.0, 0.0)


def test_lucky_narrow_answers_do_not_pay_for_losses():
    # Width 2 turns sample 0 wrong and sample 1 right, both confidently:
    # the same accuracy as width 8, but sample 0 is a loss.
    logits = two_class([[-3.0, 3.0], [3.0, -3.0]] * 5)
    labels = [0, 0] * 5
    # (k + 1) / 11 <= 0.09 allows none: both go to the widest width.
    with pytest.warns(UserWarning, match="needs at least 11"):
        cascade = Cascade.calibrate(
            logits, val_labels=labels, nesting_dims=[2, 8], tolerance=0.09
        )
    assert set(cascade.predict(logits)[1].tolist()) == {8}
    # Five losses allowed: everything stops at width 2.
    cascade = Cascade.calibrate(
        logits, val_labels=labels, nesting_dims=[2, 8], tolerance=6 / 11
    )
    assert set(cascade.predict(logits)[1].tolist()) == {2}


def test_predict_matches_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4, 5)).astype("float32") * 3
    dims, thresholds = [2, 4, 8, 16], [0.9, 0.7, np.inf, 0.0]
    classes, widths = Cascade(dims, thresholds=thresholds).predict(logits)
    ref_classes, ref_widths = reference_predict(logits, dims, thresholds)
    np.testing.assert_array_equal(classes, ref_classes)
    np.testing.assert_array_equal(widths, ref_widths)
    assert 8 not in widths  # an inf threshold switches a width off


def test_softmax_is_stable():
    logits = np.array([[[1000.0, 999.0], [-1000.0, -1001.0]]])
    cascade = Cascade([1, 2], thresholds=[sigmoid(1.0) - 1e-6, 0.0])
    classes, widths = cascade.predict(logits)
    assert classes.tolist() == [0] and widths.tolist() == [1]
    cascade = Cascade([1, 2], thresholds=[sigmoid(1.0) + 1e-6, 0.0])
    assert cascade.predict(logits)[1].tolist() == [2]


def random_problem(seed):
    rng = np.random.default_rng(seed)
    dims, n = [2, 8, 32], 40
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3, 3)) * 2
    logits[np.arange(n), :, labels] += np.array([1.0, 2.0, 4.0])
    # Repeated confidences, as a saturated softmax gives them.
    logits[:4] = logits[4:8]
    labels[:4] = labels[4:8]
    return logits, labels, dims


def candidate_thresholds(logits):
    """Every validation confidence and a value between each neighbour."""
    conf = np.unique(reference_softmax(logits)[:, :-1].max(-1))
    return np.concatenate([[0.0], conf, (conf[1:] + conf[:-1]) / 2])


def envelopes(logits, labels, dims, values):
    """Per value, per sample: lost at shared threshold `value` or at any
    higher candidate threshold."""
    candidates = np.sort(candidate_thresholds(logits))[::-1]
    lost = [
        sample_losses(logits, labels, dims, [t, t, 0.0]) for t in candidates
    ]
    # Row i: lost at any of the i + 1 highest candidates.
    lost_at_or_above = np.logical_or.accumulate(lost, axis=0)
    none_lost = np.zeros(len(labels), bool)
    return [
        lost_at_or_above[count - 1] if count else none_lost
        for count in ((candidates >= value).sum() for value in values)
    ]


def envelope(logits, labels, dims, value):
    return envelopes(logits, labels, dims, [value])[0]


@pytest.mark.parametrize("seed", range(5))
def test_loss_levels_match_brute_force(seed):
    logits, labels, dims = random_problem(seed)
    probs = reference_softmax(logits)
    correct = probs.argmax(-1) == labels[:, None]
    levels = _loss_levels(probs.max(-1), correct[:, -1:] & ~correct)
    values = candidate_thresholds(logits)
    for value, lost in zip(values, envelopes(logits, labels, dims, values)):
        np.testing.assert_array_equal(value <= levels, lost)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tolerance", [0.03, 0.1, 0.25])
@pytest.mark.parametrize("delta", [None, 0.2])
def test_calibration_is_the_lowest_accepted_threshold(seed, tolerance, delta):
    logits, labels, dims = random_problem(seed)
    allowed = reference_allowed(len(labels), tolerance, delta)
    # A warning exactly when the samples certify no loss.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cascade = Cascade.calibrate(
            logits,
            val_labels=labels,
            nesting_dims=dims,
            tolerance=tolerance,
            delta=delta,
        )
    assert len(caught) == (allowed < 0)
    value = cascade.thresholds[0]
    assert cascade.thresholds == (value, value, 0.0)
    losses = envelope(logits, labels, dims, value).sum()
    assert losses <= max(allowed, 0)
    assert (
        sample_losses(logits, labels, dims, cascade.thresholds).sum() <= losses
    )
    # Every lower candidate (the same midpoint rounded apart) loses more
    # than the test accepts.
    lower = [t for t in candidate_thresholds(logits) if t < value - 1e-12]
    for lost in envelopes(logits, labels, dims, lower):
        assert lost.sum() > allowed


def test_default_tolerance_is_0_003_and_saves_on_enough_samples():
    assert (
        inspect.signature(Cascade.calibrate).parameters["tolerance"].default
        == 0.003
    )
    rng = np.random.default_rng(0)
    dims, n = [2, 8, 32], 1000
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3, 3))
    logits[np.arange(n), :, labels] += np.array([3.0, 4.0, 6.0])
    default = Cascade.calibrate(logits, val_labels=labels, nesting_dims=dims)
    explicit = Cascade.calibrate(
        logits, val_labels=labels, nesting_dims=dims, tolerance=0.003
    )
    assert default.thresholds == explicit.thresholds
    # 1,000 samples allow (k + 1) / 1001 <= 0.003: 2 losses.
    assert reference_allowed(n, 0.003, None) == 2
    value = default.thresholds[0]
    assert np.isfinite(value)
    assert default.report(logits, labels=labels)["saving"] > 1.0
    assert sample_losses(logits, labels, dims, default.thresholds).sum() <= 2


def test_too_few_samples_for_the_tolerance_warn():
    logits = two_class(HAND_MARGINS)
    with pytest.warns(
        UserWarning,
        match=re.escape(
            "Cascade.calibrate got 6 validation samples, too few for conformal "
            "risk control to certify any loss at tolerance=0.003: it needs at "
            "least 333. The cascade answers every sample at the widest width"
        ),
    ):
        cascade = Cascade.calibrate(
            logits, val_labels=HAND_LABELS, nesting_dims=HAND_DIMS
        )
    assert cascade.thresholds == (np.inf, np.inf, 0.0)
    with pytest.warns(
        UserWarning,
        match=r"Learn-then-Test at delta=0.01 .*"
        r"tolerance=0.5: it needs at least 7\.",
    ):
        Cascade.calibrate(
            logits,
            val_labels=HAND_LABELS,
            nesting_dims=HAND_DIMS,
            tolerance=0.5,
            delta=0.01,
        )
    # No loss asked, or one certified: nothing to warn of.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for tolerance in (0.0, 1 / 7):
            Cascade.calibrate(
                logits,
                val_labels=HAND_LABELS,
                nesting_dims=HAND_DIMS,
                tolerance=tolerance,
            )


@pytest.mark.parametrize("tolerance", [0.003, 0.01, 1 / 7, 0.5])
@pytest.mark.parametrize("delta", [None, 0.01, 0.1])
def test_warning_names_the_fewest_samples_that_certify(tolerance, delta):
    needed = int(
        re.search(
            r"at least (\d+)\.", _too_few_samples(1, tolerance, delta)
        ).group(1)
    )
    assert reference_allowed(needed - 1, tolerance, delta) < 0
    assert reference_allowed(needed, tolerance, delta) >= 0


def reference_allowed(n, tolerance, delta):
    scipy_stats = pytest.importorskip("scipy.stats")
    ks = np.arange(-1, n + 1)
    if delta is None:
        ok = (ks + 1) / (n + 1) <= tolerance
    else:
        ok = scipy_stats.binom.cdf(ks, n, tolerance) <= delta
    ok[0] = True
    return int(ks[ok].max())


@pytest.mark.parametrize(
    "n, p",
    [
        (1, 0.5),
        (10, 0.3),
        (359, 0.003),
        (1392, 0.003),
        (5000, 0.01),
        (20000, 0.5),
    ],
)
def test_binomial_cdf_matches_scipy(n, p):
    scipy_stats = pytest.importorskip("scipy.stats")
    np.testing.assert_allclose(
        _binomial_cdf(n, p),
        scipy_stats.binom.cdf(np.arange(n + 1), n, p),
        rtol=1e-9,
        atol=1e-12,
    )


@pytest.mark.parametrize("n", [1, 6, 359, 1392, 5000])
@pytest.mark.parametrize("tolerance", [0.0, 0.003, 0.01, 1 / 7, 0.5, 1.0])
@pytest.mark.parametrize("delta", [None, 0.01, 0.1, 0.5])
def test_allowed_losses_match_reference(n, tolerance, delta):
    expected = reference_allowed(n, tolerance, delta)
    if tolerance == 1.0:
        expected = n  # every risk is <= 1
    assert _allowed_losses(n, tolerance, delta) == expected


def test_config_round_trip():
    cascade = Cascade([8, 16, 32], thresholds=[0.95, np.inf, 0.0])
    config = json.loads(json.dumps(cascade.get_config()))
    restored = Cascade.from_config(config)
    assert restored.thresholds == cascade.thresholds
    assert restored.nesting_dims == cascade.nesting_dims
    logits = np.random.default_rng(1).normal(size=(20, 3, 4))
    for a, b in zip(cascade.predict(logits), restored.predict(logits)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"thresholds": [0.9, 0.0]}, "one value per width"),
        ({"thresholds": [-0.1, 0.5, 0.0]}, ">= 0"),
        ({"thresholds": [np.nan, 0.5, 0.0]}, ">= 0"),
        ({"thresholds": [0.9, 0.5, 0.2]}, "last threshold must be 0.0"),
        ({"nesting_dims": [8, 8, 16]}, "strictly increasing"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = {"nesting_dims": [4, 8, 16], "thresholds": [0.9, 0.5, 0.0]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Cascade(**args)


@pytest.mark.parametrize(
    "logits, labels, tolerance, match",
    [
        (np.zeros((4, 3)), [0] * 4, 0.0, r"shape \(N, G, C\)"),
        (np.zeros((4, 2, 3)), [0] * 4, 0.0, "G=3"),
        (np.zeros((4, 3, 1)), [0] * 4, 0.0, "at least 2 classes"),
        (np.zeros((0, 3, 3)), [], 0.0, "no samples"),
        (np.full((4, 3, 3), np.nan), [0] * 4, 0.0, "36 NaN or infinite"),
        (np.full((4, 3, 3), np.inf), [0] * 4, 0.0, "36 NaN or infinite"),
        (np.zeros((4, 3, 3)), [0] * 3, 0.0, r"shape \(4,\)"),
        (np.zeros((4, 3, 3)), [0, 1, 2, 3], 0.0, r"in \[0, 3\)"),
        (np.zeros((4, 3, 3)), [0, 1, 2, -1], 0.0, r"in \[0, 3\)"),
        (np.zeros((4, 3, 3)), [0, 1, 2, 0.5], 0.0, "integer class ids"),
        (np.zeros((4, 3, 3)), [0] * 4, 1.5, "tolerance"),
        (np.zeros((4, 3, 3)), [0] * 4, -0.1, "tolerance"),
    ],
)
def test_calibrate_errors(logits, labels, tolerance, match):
    with pytest.raises(ValueError, match=match):
        Cascade.calibrate(
            logits,
            val_labels=labels,
            nesting_dims=[4, 8, 16],
            tolerance=tolerance,
        )


@pytest.mark.parametrize("tolerance", ["0.1", None, True])
def test_calibrate_rejects_a_non_number_tolerance(tolerance):
    with pytest.raises(TypeError, match="`tolerance` must be a float"):
        Cascade.calibrate(
            np.zeros((4, 3, 3)),
            val_labels=[0] * 4,
            nesting_dims=[4, 8, 16],
            tolerance=tolerance,
        )


@pytest.mark.parametrize("tolerance", [np.nan, -0.1, 1.5])
def test_calibrate_rejects_a_tolerance_outside_0_1(tolerance):
    match = r"`tolerance` must be a float in \[0.0, 1.0\]"
    with pytest.raises(ValueError, match=match):
        Cascade.calibrate(
            np.zeros((4, 3, 3)),
            val_labels=[0] * 4,
            nesting_dims=[4, 8, 16],
            tolerance=tolerance,
        )


@pytest.mark.parametrize("delta", ["0.1", True, [0.1]])
def test_calibrate_rejects_a_non_number_delta(delta):
    with pytest.raises(TypeError, match="`delta` must be a float"):
        Cascade.calibrate(
            np.zeros((4, 3, 3)),
            val_labels=[0] * 4,
            nesting_dims=[4, 8, 16],
            delta=delta,
        )


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.1, 1.5, np.nan, np.inf])
def test_calibrate_rejects_a_delta_outside_0_1(delta):
    match = r"`delta` must be a float in \(0.0, 1.0\), got"
    with pytest.raises(ValueError, match=match):
        Cascade.calibrate(
            np.zeros((4, 3, 3)),
            val_labels=[0] * 4,
            nesting_dims=[4, 8, 16],
            tolerance=0.1,
            delta=delta,
        )


@pytest.mark.parametrize("delta", [None, 0.1])
def test_calibrate_one_width(delta):
    logits = two_class(HAND_MARGINS)[:, 2:]
    cascade = Cascade.calibrate(
        logits,
        val_labels=HAND_LABELS,
        nesting_dims=[8],
        tolerance=0.5,
        delta=delta,
    )
    assert cascade.thresholds == (0.0,)
    report = cascade.report(logits, labels=HAND_LABELS)
    assert report["mean_width"] == 8.0
    assert report["accuracy"] == pytest.approx(5 / 6)


def test_report_checks_labels():
    cascade = Cascade([4, 8], thresholds=[0.5, 0.0])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        cascade.report(np.zeros((2, 2, 3)), labels=[0, 1, 2])


def test_predict_rejects_non_finite_logits():
    logits = np.zeros((2, 2, 3))
    logits[1, 0, 2] = -np.inf
    with pytest.raises(ValueError, match="`logits` holds 1 NaN or infinite"):
        Cascade([4, 8], thresholds=[0.5, 0.0]).predict(logits)


@pytest.mark.parametrize(
    "thresholds", ["0.9", 0.5, ["0.9", 0.0], [True, 0.0], [None, 0.0]]
)
def test_thresholds_must_be_numbers(thresholds):
    with pytest.raises(TypeError, match="`thresholds` must"):
        Cascade([4, 8], thresholds=thresholds)


def test_positional_arguments_raise():
    logits = two_class(HAND_MARGINS)
    with pytest.raises(TypeError, match="positional argument"):
        Cascade([4, 8], [0.5, 0.0])
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        Cascade.calibrate(logits, HAND_LABELS, HAND_DIMS)
    cascade = Cascade(HAND_DIMS, thresholds=[0.5, 0.5, 0.0])
    with pytest.raises(TypeError, match="positional argument"):
        cascade.report(logits, HAND_LABELS)


@pytest.fixture
def benchmark(monkeypatch):
    """`benchmarks/cascade.py` as a module; it imports its sibling digits."""
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("cascade")


# 20 validation samples certify no loss at the smaller tolerances.
@pytest.mark.filterwarnings("ignore:Cascade.calibrate got")
def test_benchmark_measures_and_pools_every_setting(benchmark):
    # Tiny logits instead of trained models: the code path between
    # training and the printed figures, not its goals.
    rng = np.random.default_rng(0)
    dims = [2, 4, 8]
    rows = []
    for split in range(2):
        labels = rng.integers(0, 3, 40)
        logits = rng.normal(size=(40, 3, 3))
        logits[np.arange(40), :, labels] += 3.0
        measured = benchmark.measure(
            split, dims, logits[:20], labels[:20], logits[20:], labels[20:]
        )
        settings = {(r["method"], r["tolerance"]) for r in measured}
        assert (
            len(settings)
            == len(measured)
            == (len(benchmark.DELTAS) * len(benchmark.TOLERANCES))
        )
        for row in measured:
            assert row["split"] == split
            assert len(row["thresholds"]) == len(dims)
            assert 2 <= row["mean_width"] <= 8
            assert row["oracle_mean_width"] == pytest.approx(
                reference_oracle_width(logits[20:], dims)
            )
        rows += measured
    summary = benchmark.summarize(rows, widest=8)
    assert len(summary) == len(benchmark.DELTAS) * len(benchmark.TOLERANCES)
    for pooled in summary.values():
        runs = [
            r
            for r in rows
            if r["method"] == pooled["method"]
            and r["tolerance"] == pooled["tolerance"]
        ]
        widths = [r["mean_width"] for r in runs]
        changes = [r["change_pt"] for r in runs]
        assert pooled["saving"] == pytest.approx(8 / np.mean(widths))
        assert pooled["change_pt"] == pytest.approx(np.mean(changes))
        assert pooled["worst_change_pt"] == min(changes)
        assert pooled["splits_within"] == sum(c >= -0.3 for c in changes)
    # JSON-friendly, as `--json` writes it.
    json.dumps(summary)


def reference_oracle_width(logits, dims):
    classes = logits.argmax(-1)
    widths = [
        dims[next(g for g in range(len(dims)) if row[g] == row[-1])]
        for row in classes
    ]
    return np.mean(widths)


def test_synthetic_task_is_imbalanced(benchmark):
    x, y = benchmark.synthetic_task(n=4000)
    assert x.shape == (4000, 32) and x.dtype == np.float32
    counts = np.bincount(y, minlength=8)
    priors = 0.6 ** np.arange(8)
    np.testing.assert_allclose(counts / 4000, priors / priors.sum(), atol=0.02)


def _summary(saving=7.0, change_pt=0.0, within=10):
    return {
        "default 0.003": {
            "saving": saving,
            "change_pt": change_pt,
            "splits_within": within,
        }
    }


@pytest.mark.parametrize(
    "summary, match",
    [
        (_summary(saving=4.9), "digits: saving 4.90x < 5.0x"),
        (_summary(change_pt=-0.31), "digits: pooled change -0.31 pt"),
        (_summary(within=8), "digits: 8 of 10 splits within 0.3 pt < 9"),
    ],
)
def test_benchmark_check_names_each_missed_goal(benchmark, summary, match):
    assert benchmark.missed_goals("digits", _summary(), 10) == []
    (missed,) = benchmark.missed_goals("digits", summary, 10)
    assert match in missed
