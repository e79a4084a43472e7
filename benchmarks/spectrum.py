"""Measures how MRL training spreads a real embedding over its dimensions.

    KERAS_BACKEND=jax python benchmarks/spectrum.py [--splits 3]

`benchmarks/funnel.py` draws its synthetic corpus from two numbers, and
this script measures both on held-out embeddings of the digits model of
`benchmarks/digits.py` (64-d embedding, 10 classes), trained with an MRL
head and, for contrast, with a plain Dense head:

- `decay`: the standard deviation of dimension j falls as (1 + j)**-decay;
  least squares of log variance on log(1 + j), halved;
- `noise`: the within-class spread against the spread of the class means,
  sqrt(sum_j within_j / sum_j between_j).

The dimensions are taken as the embedding layer emits them (the funnel
compares raw prefixes), centred on the test mean.
"""

import argparse

import numpy as np
from digits import load_split
from digits import train


def fit(embeddings, labels):
    """Returns `(decay, noise)` of one set of embeddings."""
    embeddings = embeddings.astype(np.float64)
    embeddings -= embeddings.mean(axis=0)
    classes = np.unique(labels)
    between = np.stack(
        [embeddings[labels == c].mean(axis=0) for c in classes]
    ).var(axis=0)
    within = np.mean(
        [embeddings[labels == c].var(axis=0) for c in classes], axis=0
    )
    index = np.log1p(np.arange(embeddings.shape[1]))
    slope = np.polyfit(index, np.log(between + within), 1)[0]
    return -slope / 2.0, float(np.sqrt(within.sum() / between.sum()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)

    print("| head | split | decay | noise |")
    print("|---|---|---|---|")
    fits = {"MRL": [], "plain": []}
    for split in range(args.splits):
        (x_train, y_train), _, (x_test, y_test) = load_split(split)
        for name, matryoshka in (("MRL", True), ("plain", False)):
            _, embed = train(
                x_train,
                y_train,
                seed=split,
                epochs=args.epochs,
                matryoshka=matryoshka,
            )
            decay, noise = fit(embed.predict(x_test, verbose=0), y_test)
            fits[name].append((decay, noise))
            print(f"| {name} | {split} | {decay:.3f} | {noise:.3f} |")
    for name, rows in fits.items():
        decay, noise = np.mean(rows, axis=0)
        print(
            f"{name} head, mean over {args.splits} splits: decay "
            f"{decay:.2f}, noise {noise:.2f}"
        )


if __name__ == "__main__":
    main()
