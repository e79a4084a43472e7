"""Per-query retrieval scores and paired bootstrap intervals.

Two models evaluated on the same queries differ by a mean over those
queries; `paired_bootstrap` puts a 95% interval on that difference by
resampling the queries, keeping each query's two scores together.

    python benchmarks/per_query.py --before def.json "(d) MRL" \
        --after e.json "(e) MRL+PCA"

compares two models of `text_finetune.py --json` runs.
"""

import numpy as np

BOOTSTRAP_SAMPLES = 2000
SEED = 0


def per_query_ndcg(ids, relevant):
    """nDCG@k of one relevant id per query, per query, in %.

    `ids` holds each query's top-k corpus rows, best first; `relevant`
    each query's one relevant row.
    """
    hits = ids == relevant[:, None]
    ranks = np.argmax(hits, axis=1)
    return 100 * np.where(hits.any(axis=1), 1.0 / np.log2(ranks + 2.0), 0.0)


def prefix_top_k(queries, corpus, width, k):
    """Each query's top `k` corpus rows by cosine of the first `width`
    features, best first."""
    q = queries[:, :width]
    c = corpus[:, :width]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    scores = q @ c.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def paired_bootstrap(before, after, *, samples=BOOTSTRAP_SAMPLES, seed=SEED):
    """`(mean, low, high)` of `after - before`, per-query paired values,
    with the 2.5th and 97.5th percentiles of the mean over `samples`
    resamplings of the queries (with replacement)."""
    diff = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 100):
        rows = rng.integers(
            0, len(diff), size=(min(100, samples - start), len(diff))
        )
        means[start : start + len(rows)] = diff[rows].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def main(argv=None):
    """Prints `after - before` per width, with paired bootstrap intervals,
    for two models of `text_finetune.py --json` runs (the same queries)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    for side in ("before", "after"):
        parser.add_argument(
            f"--{side}",
            nargs=2,
            required=True,
            metavar=("JSON", "LABEL"),
            help=f"the {side} model: a --json file and its model's label",
        )
    args = parser.parse_args(argv)
    scores = []
    for path, label in (args.before, args.after):
        with open(path) as file:
            results = json.load(file)["results"]
        if label not in results:
            parser.error(f"{path} has no model {label!r}: {sorted(results)}")
        scores.append(results[label]["per_query_ndcg@10"])
    before, after = scores
    print(f"nDCG@10 of {args.after[1]!r} minus {args.before[1]!r}:")
    for width in before:
        mean, low, high = paired_bootstrap(before[width], after[width])
        interval = f"95% interval {low:+.1f} to {high:+.1f}"
        print(f"  {width}: {mean:+.1f} pt ({interval})")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
