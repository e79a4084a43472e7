import importlib
import itertools
import json
import pathlib

import numpy as np
import pytest

from keras_mrl.adaptive import Cascade

pytestmark = pytest.mark.numpy_only

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


def test_hand_checked_shared_calibration():
    logits = two_class(HAND_MARGINS)
    cascade = Cascade.calibrate(
        logits, val_labels=HAND_LABELS, nesting_dims=HAND_DIMS
    )
    # One value for widths 4 and 16. At 0.881 sample 2 stops at 4, wrong;
    # at 0.953 only sample 0 stops at 4 and sample 1 at 16, both right.
    shared = (sigmoid(2.0) + sigmoid(3.0)) / 2
    np.testing.assert_allclose(cascade.thresholds, [shared, shared, 0.0])
    classes, widths = cascade.predict(logits)
    np.testing.assert_array_equal(widths, [4, 16, 64, 64, 64, 64])
    np.testing.assert_array_equal(classes, [0, 0, 0, 0, 0, 0])
    report = cascade.report(logits, labels=HAND_LABELS)
    assert report["accuracy"] == pytest.approx(5 / 6)
    assert report["mean_width"] == pytest.approx(46.0)


def test_hand_checked_per_width_calibration():
    logits = two_class(HAND_MARGINS)
    cascade = Cascade.calibrate(
        logits, val_labels=HAND_LABELS, nesting_dims=HAND_DIMS,
        search="per_width",
    )
    # Width 4 may stop only sample 0 (sample 2 is confidently wrong at the
    # same confidence as sample 1); width 16 stops samples 1 and 2 but not
    # sample 3 (wrong at 0.731). Samples 3, 4, 5 go to 64: 228 / 6 = 38.
    expected = [
        (sigmoid(2.0) + sigmoid(3.0)) / 2,
        (sigmoid(1.0) + sigmoid(2.0)) / 2,
        0.0,
    ]
    np.testing.assert_allclose(cascade.thresholds, expected, rtol=1e-6)
    classes, widths = cascade.predict(logits)
    np.testing.assert_array_equal(widths, [4, 16, 16, 64, 64, 64])
    np.testing.assert_array_equal(classes, [0, 0, 0, 0, 0, 0])
    report = cascade.report(logits, labels=HAND_LABELS)
    assert report["accuracy"] == pytest.approx(5 / 6)
    assert report["full_width_accuracy"] == pytest.approx(5 / 6)
    assert report["mean_width"] == pytest.approx(38.0)
    assert report["saving"] == pytest.approx(64 / 38)
    assert report["width_histogram"] == {4: 1, 16: 2, 64: 3}


@pytest.mark.parametrize("search", ["shared", "per_width"])
def test_tolerance_buys_width(search):
    logits = two_class(HAND_MARGINS)
    # One loss allowed: everything stops at 4, where only sample 2 of the
    # five the widest width gets right is lost.
    cascade = Cascade.calibrate(
        logits, val_labels=HAND_LABELS, nesting_dims=HAND_DIMS,
        tolerance=1 / 6, search=search,
    )
    report = cascade.report(logits, labels=HAND_LABELS)
    assert report["mean_width"] == 4.0
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert cascade.thresholds[0] == pytest.approx(sigmoid(0.5))


@pytest.mark.parametrize("search", ["shared", "per_width"])
def test_lucky_narrow_answers_do_not_pay_for_losses(search):
    # Width 2 turns sample 0 wrong and sample 1 right, both confidently:
    # the same accuracy as width 8 on validation, but a real loss.
    logits = two_class([[-3.0, 3.0], [3.0, -3.0]])
    cascade = Cascade.calibrate(
        logits, val_labels=[0, 0], nesting_dims=[2, 8], search=search
    )
    assert cascade.predict(logits)[0].tolist() == [0, 1]
    # With the loss allowed, both stop at width 2.
    cascade = Cascade.calibrate(
        logits, val_labels=[0, 0], nesting_dims=[2, 8], tolerance=0.5,
        search=search,
    )
    assert cascade.predict(logits)[1].tolist() == [2, 2]


def test_predict_matches_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4, 5)).astype("float32") * 3
    dims, thresholds = [2, 4, 8, 16], [0.9, 0.7, np.inf, 0.0]
    classes, widths = Cascade(dims, thresholds=thresholds).predict(
        logits
    )
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


def score(logits, labels, dims, thresholds):
    """Total width and the widest width's right answers the cascade keeps."""
    classes, widths = reference_predict(logits, dims, thresholds)
    full_right = logits[:, -1].argmax(-1) == labels
    return int(widths.sum()), int(((classes == labels) & full_right).sum())


def random_problem(seed):
    rng = np.random.default_rng(seed)
    dims, n = [2, 8, 32], 16
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3, 3)) * 2
    logits[np.arange(n), :, labels] += np.array([1.0, 2.0, 4.0])
    tolerance = [0.0, 0.1][seed % 2]
    full = int((logits[:, -1].argmax(-1) == labels).sum())
    need = np.ceil(full - tolerance * n - 1e-9)
    return logits, labels, dims, tolerance, need


@pytest.mark.parametrize("seed", range(10))
def test_shared_calibration_is_the_best_shared_threshold(seed):
    logits, labels, dims, tolerance, need = random_problem(seed)
    cascade = Cascade.calibrate(
        logits, val_labels=labels, nesting_dims=dims, tolerance=tolerance
    )
    value = cascade.thresholds[0]
    assert cascade.thresholds == (value, value, 0.0)
    width, kept = score(logits, labels, dims, cascade.thresholds)
    assert kept >= need
    conf = reference_softmax(logits).max(-1)
    for other in itertools.chain(conf[:, :-1].ravel(), [np.inf]):
        w, k = score(logits, labels, dims, [other, other, 0.0])
        assert not (k >= need and (w, -k) < (width, -kept))


@pytest.mark.parametrize("seed", range(10))
def test_per_width_calibration_is_feasible_and_locally_optimal(seed):
    logits, labels, dims, tolerance, need = random_problem(seed)
    cascade = Cascade.calibrate(
        logits, val_labels=labels, nesting_dims=dims, tolerance=tolerance,
        search="per_width",
    )
    width, kept = score(logits, labels, dims, cascade.thresholds)
    assert kept >= need
    # No single threshold, moved to any other split, does better.
    conf = reference_softmax(logits).max(-1)
    for g in range(len(dims) - 1):
        for value in itertools.chain(conf[:, g], [np.inf]):
            moved = list(cascade.thresholds)
            moved[g] = value
            w, k = score(logits, labels, dims, moved)
            assert not (k >= need and (w, -k) < (width, -kept))


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
            logits, val_labels=labels, nesting_dims=[4, 8, 16],
            tolerance=tolerance,
        )


@pytest.mark.parametrize("tolerance", ["0.1", None, True])
def test_calibrate_rejects_a_non_number_tolerance(tolerance):
    with pytest.raises(TypeError, match="tolerance"):
        Cascade.calibrate(
            np.zeros((4, 3, 3)), val_labels=[0] * 4, nesting_dims=[4, 8, 16],
            tolerance=tolerance,
        )


def test_calibrate_rejects_an_unknown_search():
    match = r"\['shared', 'per_width'\], got 'greedy'"
    with pytest.raises(ValueError, match=match):
        Cascade.calibrate(
            np.zeros((4, 3, 3)), val_labels=[0] * 4, nesting_dims=[4, 8, 16],
            search="greedy",
        )


@pytest.mark.parametrize("search", ["shared", "per_width"])
def test_calibrate_one_width(search):
    logits = two_class(HAND_MARGINS)[:, 2:]
    cascade = Cascade.calibrate(
        logits, val_labels=HAND_LABELS, nesting_dims=[8], tolerance=0.5,
        search=search,
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
    with pytest.raises(TypeError, match=r"Cascade\(\) takes `nesting_dims`"):
        Cascade([4, 8], [0.5, 0.0])
    with pytest.raises(
        TypeError, match=r"Cascade.calibrate\(\) takes `val_logits`.*"
        r"val_labels=\.\.\., nesting_dims=\.\.\."
    ):
        Cascade.calibrate(logits, HAND_LABELS, HAND_DIMS)
    cascade = Cascade(HAND_DIMS, thresholds=[0.5, 0.5, 0.0])
    with pytest.raises(TypeError, match=r"Cascade.report\(\).*labels=\.\.\."):
        cascade.report(logits, HAND_LABELS)


@pytest.fixture
def benchmark(monkeypatch):
    """`benchmarks/cascade.py` as a module; it imports its sibling digits."""
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("cascade")


def test_benchmark_measures_and_pools_every_search(benchmark):
    # Tiny logits instead of trained digits models: the code path between
    # training and the printed figures, not its goals.
    rng = np.random.default_rng(0)
    dims = [2, 4, 8]
    rows = {search: [] for search in benchmark.SEARCHES}
    for split in range(2):
        labels = rng.integers(0, 3, 40)
        logits = rng.normal(size=(40, 3, 3))
        logits[np.arange(40), :, labels] += 3.0
        measured = benchmark.measure(
            split, logits[:20], labels[:20], logits[20:], labels[20:], dims
        )
        assert set(measured) == {"shared", "per_width"}
        for search, row in measured.items():
            assert row["split"] == split
            assert len(row["thresholds"]) == len(dims)
            assert 2 <= row["mean_width"] <= 8
            rows[search].append(row)
    summary = benchmark.summarize(rows, widest=8)
    for search, pooled in summary.items():
        widths = [row["mean_width"] for row in rows[search]]
        assert pooled["saving"] == pytest.approx(8 / np.mean(widths))
        assert pooled["worst_change_pt"] <= pooled["change_pt"]
        assert pooled["splits"] == rows[search]
    # JSON-friendly, as `--json` writes it.
    json.dumps(summary)
    assert isinstance(benchmark.missed_goals(summary), list)


def _summary(saving=7.0, change_pt=0.0, full=0.98, val_change_pt=0.0):
    split = {"split": 0, "full_width_accuracy": full,
             "val_change_pt": val_change_pt}
    return {"shared": {"saving": saving, "change_pt": change_pt,
                       "splits": [split]}}


@pytest.mark.parametrize(
    "summary, match",
    [
        (_summary(saving=4.9), "saving 4.90x < 5.0x"),
        (_summary(change_pt=-0.31), "change -0.31 pt"),
        (_summary(full=0.95), "split 0: full-width"),
        (_summary(val_change_pt=-0.28), "split 0: validation"),
    ],
)
def test_benchmark_check_names_each_missed_goal(benchmark, summary, match):
    assert benchmark.missed_goals(_summary()) == []
    (missed,) = benchmark.missed_goals(summary)
    assert match in missed
