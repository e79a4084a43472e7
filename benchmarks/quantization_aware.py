"""Quantized after training against trained quantization-aware, served.

Compares two fine-tunes of all-MiniLM-L6-v2 by recipe (e) of
`benchmarks/text_finetune.py` in the setup of docs/benchmarks.md section 4
(the whole docstring corpus, 7,930 documents, searched with the 1,485
scipy test queries, each with its one relevant document; every index a
`keras_mrl.retrieval.FunnelIndex`):

- post-hoc: (e) as it is, its prefixes quantized by the index;
- quantization-aware: (e) trained with `--quantization-aware binary`,
  which adds the loss of the binary 256-bit prefixes
  (`keras_mrl.losses.QuantizationAwareLoss`).

Both inputs are directories that `text_finetune.py --save-embeddings`
writes:

    KERAS_BACKEND=jax python benchmarks/text_finetune.py --models e \\
        --save-embeddings emb
    KERAS_BACKEND=jax python benchmarks/text_finetune.py --models e \\
        --quantization-aware binary --save-embeddings emb_binary
    python benchmarks/quantization_aware.py --post-hoc emb \\
        --quantization-aware emb_binary [--check]

It prints, for each: the first stage alone (`--precision` at `--width`,
default binary 256) by nDCG@10 and recall@10; the funnel that stage ->
float32 384 with a shortlist of `--shortlist` (100), by its top-10 overlap
with the exact float32 384 search of the same embeddings and its nDCG@10;
and float32 nDCG@10 at every width from 16 to 384 in steps of 16. Each
difference (quantization-aware minus post-hoc) comes with a paired
bootstrap 95% interval over the queries.

Targets (`--check` exits 1 when one is missed, naming it and the margin):

- the first stage alone: quantization-aware >= post-hoc + 3 pt nDCG@10
  (binary; an int8 first stage, whose codes cost 0.1 pt, targets >=
  post-hoc);
- the funnel's top-10 overlap with exact float32 384 search >= 0.95;
- float32 nDCG@10 at every width: quantization-aware >= post-hoc - 0.5 pt.
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "numpy")

import numpy as np  # noqa: E402
from memory_budget import FULL  # noqa: E402
from memory_budget import K  # noqa: E402
from memory_budget import load  # noqa: E402
from per_query import BOOTSTRAP_SAMPLES  # noqa: E402
from per_query import paired_bootstrap  # noqa: E402
from per_query import per_query_ndcg  # noqa: E402

from keras_mrl.retrieval import FunnelIndex  # noqa: E402

WIDTHS = list(range(16, FULL + 1, 16))
FIRST_STAGE_GAIN = {"binary": 3.0, "int8": 0.0}
MIN_OVERLAP = 0.95
FLOAT_SLACK = 0.5


def per_query_recall(ids, relevant):
    """Whether the relevant id is in the top k, per query, in %."""
    return 100.0 * (ids == relevant[:, None]).any(axis=1)


def per_query_overlap(ids, exact):
    """The share of each query's exact top k that `ids` found."""
    found = (ids[:, :, None] == exact[:, None, :]).any(axis=1)
    return found.sum(axis=1) / exact.shape[1]


def measure(corpus, queries, relevant, *, precision, width, shortlist):
    """Per-query figures of one model's embeddings."""
    exact = FunnelIndex(corpus, stage_dims=(FULL,), shortlist=())
    exact_ids = exact.search(queries, k=K)[1]
    first = FunnelIndex(
        corpus, stage_dims=(width,), shortlist=(), precisions=(precision,)
    )
    first_ids = first.search(queries, k=K)[1]
    funnel = FunnelIndex(
        corpus,
        stage_dims=(width, FULL),
        shortlist=(shortlist,),
        precisions=(precision, "float32"),
    )
    funnel_ids = funnel.search(queries, k=K)[1]
    floats = {}
    for m in WIDTHS:
        ids = (
            exact_ids
            if m == FULL
            else FunnelIndex(corpus, stage_dims=(m,), shortlist=()).search(
                queries, k=K
            )[1]
        )
        floats[m] = per_query_ndcg(ids, relevant)
    return {
        "first_ndcg": per_query_ndcg(first_ids, relevant),
        "first_recall": per_query_recall(first_ids, relevant),
        "funnel_ndcg": per_query_ndcg(funnel_ids, relevant),
        "funnel_overlap": per_query_overlap(funnel_ids, exact_ids),
        "float_ndcg": floats,
    }


def compare(post_hoc, aware):
    """The summary of two `measure` results: means and paired intervals."""

    def row(key, m=None):
        a = post_hoc[key] if m is None else post_hoc[key][m]
        b = aware[key] if m is None else aware[key][m]
        diff, low, high = paired_bootstrap(a, b)
        return dict(
            post_hoc=float(np.mean(a)),
            aware=float(np.mean(b)),
            diff=diff,
            low=low,
            high=high,
        )

    return {
        "first_ndcg": row("first_ndcg"),
        "first_recall": row("first_recall"),
        "funnel_ndcg": row("funnel_ndcg"),
        "funnel_overlap": row("funnel_overlap"),
        "float_ndcg": {m: row("float_ndcg", m) for m in WIDTHS},
    }


def check_goals(summary, precision="binary"):
    """Returns `[(goal, passed, detail)]` for the targets."""
    gain = FIRST_STAGE_GAIN[precision]
    first = summary["first_ndcg"]
    goals = [
        (
            f"{precision} first stage alone: quantization-aware >= "
            f"post-hoc + {gain:g} pt nDCG@10",
            first["diff"] >= gain,
            f"{first['aware']:.1f} vs {first['post_hoc']:.1f}: "
            f"{first['diff']:+.1f} pt, margin {first['diff'] - gain:+.1f}",
        )
    ]
    overlap = summary["funnel_overlap"]["aware"]
    goals.append(
        (
            f"funnel top-{K} overlap with float32 {FULL} >= {MIN_OVERLAP}",
            overlap >= MIN_OVERLAP,
            f"{overlap:.3f} (post-hoc "
            f"{summary['funnel_overlap']['post_hoc']:.3f}), margin "
            f"{overlap - MIN_OVERLAP:+.3f}",
        )
    )
    floats = summary["float_ndcg"]
    worst = min(floats, key=lambda m: floats[m]["diff"])
    margin = floats[worst]["diff"] + FLOAT_SLACK
    goals.append(
        (
            f"float32 nDCG@10 at every width >= post-hoc - {FLOAT_SLACK} pt",
            margin >= 0,
            f"worst at {worst}: {floats[worst]['aware']:.1f} vs "
            f"{floats[worst]['post_hoc']:.1f}, "
            f"{floats[worst]['diff']:+.1f} pt, margin {margin:+.1f}",
        )
    )
    return goals


def _cells(r, digits=1):
    return (
        f"{r['post_hoc']:.{digits}f} | {r['aware']:.{digits}f} | "
        f"{r['diff']:+.{digits}f} [{r['low']:+.{digits}f}, "
        f"{r['high']:+.{digits}f}]"
    )


def format_tables(summary, *, precision, width, shortlist):
    head = (
        "| | post-hoc | quantization-aware | difference [95% interval] |\n"
        "|---|---|---|---|"
    )
    lines = [head]
    lines.append(
        f"| {precision} {width} alone, nDCG@10 | "
        f"{_cells(summary['first_ndcg'])} |"
    )
    lines.append(
        f"| {precision} {width} alone, recall@10 | "
        f"{_cells(summary['first_recall'])} |"
    )
    funnel = f"{precision} {width} -> float32 {FULL}, shortlist {shortlist}"
    lines.append(
        f"| {funnel}, top-{K} overlap with float32 {FULL} | "
        f"{_cells(summary['funnel_overlap'], 3)} |"
    )
    lines.append(f"| {funnel}, nDCG@10 | {_cells(summary['funnel_ndcg'])} |")
    lines += [
        "",
        "float32 nDCG@10 by width:",
        "",
        head.replace("| |", "| width |"),
    ]
    for m, r in summary["float_ndcg"].items():
        lines.append(f"| {m} | {_cells(r)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--post-hoc", required=True, metavar="DIR")
    parser.add_argument("--quantization-aware", required=True, metavar="DIR")
    parser.add_argument(
        "--precision", choices=("binary", "int8"), default="binary"
    )
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--shortlist", type=int, default=100)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    post_hoc = load(args.post_hoc)
    aware = load(args.quantization_aware)
    if len(post_hoc[0]) != len(aware[0]) or not np.array_equal(
        post_hoc[2], aware[2]
    ):
        sys.exit(
            "the two directories must embed the same corpus and queries: "
            f"{len(post_hoc[0])} and {len(aware[0])} corpus vectors"
        )
    options = dict(
        precision=args.precision, width=args.width, shortlist=args.shortlist
    )
    print(
        f"{len(post_hoc[0])} corpus vectors, {len(post_hoc[1])} queries, "
        f"top-{K}; paired bootstrap over queries, {BOOTSTRAP_SAMPLES} samples"
    )
    summary = compare(measure(*post_hoc, **options), measure(*aware, **options))
    print()
    print(format_tables(summary, **options))
    print()
    goals = check_goals(summary, args.precision)
    for goal, passed, detail in goals:
        print(f"{'PASS' if passed else 'FAIL'}  {goal}  ({detail})")
    if args.check and not all(passed for _, passed, _ in goals):
        missed = [goal for goal, passed, _ in goals if not passed]
        print(
            "quantization_aware.py: target missed: " + "; ".join(missed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
