"""Measures the confidence cascade on held-out sklearn digits.

    KERAS_BACKEND=jax python benchmarks/cascade.py [--splits 10] [--json F]

For each split (random_state 0, 1, ...; see `benchmarks/digits.py`): train
the 64-d MLP embedding with an MRL head over widths 1 ... 64 on 1078
samples, calibrate a `tolerance=0.0` `keras_mrl.adaptive.Cascade` on 359
validation samples with each `search`, and report on the 360 test ones.
The issue's goal: >= 5x fewer dimensions on average at accuracy within
0.3 pt of full width. One split's test set is 360 samples, so one
sample is 0.28 pt; the pooled line averages the splits.
"""

import argparse
import json

import keras
import numpy as np

from digits import DIMS, load_split, train
from keras_mrl.adaptive import Cascade

SEARCHES = ("shared", "per_width")


def split_logits(split, epochs):
    """Trains on one split; returns validation and test logits and labels."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_split(split)
    model, _ = train(x_train, y_train, seed=split, epochs=epochs)
    predict = lambda x: model.predict(x, batch_size=512, verbose=0)
    return predict(x_val), y_val, predict(x_test), y_test


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    rows = {search: [] for search in SEARCHES}
    print(f"backend {keras.backend.backend()}, {args.splits} splits")
    print(f"{'search':<10} {'split':>5} {'val Δ pt':>9} {'test Δ pt':>10} "
          f"{'saving':>7}")
    for split in range(args.splits):
        val_logits, y_val, test_logits, y_test = split_logits(
            split, args.epochs
        )
        for search in SEARCHES:
            cascade = Cascade.calibrate(val_logits, y_val, DIMS, search=search)
            val = cascade.report(val_logits, y_val)
            test = cascade.report(test_logits, y_test)
            row = {
                "split": split,
                "thresholds": list(cascade.thresholds),
                "val_change_pt": 100 * (val["accuracy"]
                                        - val["full_width_accuracy"]),
                "change_pt": 100 * (test["accuracy"]
                                    - test["full_width_accuracy"]),
                "full_width_accuracy": test["full_width_accuracy"],
                "mean_width": test["mean_width"],
                "saving": test["saving"],
            }
            rows[search].append(row)
            print(f"{search:<10} {split:>5} {row['val_change_pt']:>+9.2f} "
                  f"{row['change_pt']:>+10.2f} {row['saving']:>6.1f}x")

    summary = {}
    for search, runs in rows.items():
        changes = [r["change_pt"] for r in runs]
        summary[search] = {
            "change_pt": float(np.mean(changes)),
            "worst_change_pt": float(np.min(changes)),
            # The mean width over all test samples, as one pooled set.
            "saving": DIMS[-1] / float(np.mean([r["mean_width"]
                                                for r in runs])),
            "splits": runs,
        }
        s = summary[search]
        print(f"pooled {search}: accuracy {s['change_pt']:+.2f} pt "
              f"(worst split {s['worst_change_pt']:+.2f}), "
              f"{s['saving']:.1f}x fewer dimensions; goal within 0.3 pt "
              f"at >= 5x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
