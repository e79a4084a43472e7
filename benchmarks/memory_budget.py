"""Width, precision and shortlist against memory, on real MRL embeddings.

The table of docs/serving.md. Its input is the directory that
`benchmarks/text_finetune.py --models e --save-embeddings DIR` writes: the
MRL fine-tune of all-MiniLM-L6-v2 (`text_finetune.py`'s model (e)) embedding the
whole docstring corpus (`corpus.npy`, every document of the three splits),
the 1,485 scipy test queries (`queries.npy`) and each query's one relevant
document (`relevant.npy`).

Each row is a `keras_mrl.retrieval.FunnelIndex` over the corpus:

- one stage: the prefix of `m` dimensions in float32, int8 (ranges
  measured on the corpus) or binary (sign bits, Hamming distance), searched
  exactly;
- two stages: such a first stage shortlists candidates that are rescored
  at 384 dimensions in float32 or int8.

For each it prints the bytes per vector of the first stage (what must sit
in memory to be scanned) and of all stages (the rescoring store can live on
disk or in slower memory: it is read only for the shortlist), nDCG@10 and
recall@10 against the relevant documents, and the top-10 overlap with the
exact float32 384-d search.

    python benchmarks/memory_budget.py --embeddings DIR [--plot PATH]

The plot (default docs/memory_budget.png) draws nDCG@10 against the bytes
per vector the first stage scans, one line per precision for the one-stage
indexes and a point per funnel.
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "numpy")

import numpy as np  # noqa: E402
from funnel import overlap  # noqa: E402

from keras_mrl.retrieval import FunnelIndex  # noqa: E402

K = 10
FULL = 384
SINGLE = [
    (m, p)
    for p in ("float32", "int8", "binary")
    for m in (32, 64, 128, 256, 384)
]
# (first width, first precision, shortlist, rescoring precision at 384)
FUNNELS = [
    (64, "binary", 100, "float32"),
    (128, "binary", 100, "float32"),
    (256, "binary", 100, "float32"),
    (256, "binary", 100, "int8"),
    (256, "binary", 1000, "float32"),
    (32, "int8", 100, "float32"),
    (64, "int8", 100, "float32"),
    (64, "int8", 100, "int8"),
    (64, "float32", 100, "float32"),
]


def load(directory):
    arrays = {}
    for name in ("corpus", "queries", "relevant"):
        path = os.path.join(directory, f"{name}.npy")
        if not os.path.exists(path):
            sys.exit(
                f"{path} is missing: write the directory with "
                "benchmarks/text_finetune.py --models e "
                f"--save-embeddings {directory}"
            )
        arrays[name] = np.load(path)
    corpus, queries = arrays["corpus"], arrays["queries"]
    if (
        corpus.ndim != 2
        or corpus.shape[1] != FULL
        or queries.shape[1:] != (FULL,)
    ):
        sys.exit(
            f"expected (N, {FULL}) corpus and queries, got "
            f"{corpus.shape} and {queries.shape}"
        )
    return (
        corpus.astype(np.float32),
        queries.astype(np.float32),
        arrays["relevant"].astype(np.int64),
    )


def ranking_scores(ids, relevant):
    """nDCG@10 and recall@10 of one relevant id per query, in %."""
    hits = ids == relevant[:, None]
    ranks = np.argmax(hits, axis=1)
    found = hits.any(axis=1)
    ndcg = np.where(found, 1.0 / np.log2(ranks + 2.0), 0.0)
    return 100 * ndcg.mean(), 100 * found.mean()


def rows(corpus, queries, relevant):
    exact = FunnelIndex(corpus, stage_dims=(FULL,), shortlist=())
    exact_ids = exact.search(queries, k=K)[1]
    configs = [
        (f"{p} {m}", dict(stage_dims=(m,), shortlist=(), precisions=(p,)))
        for m, p in SINGLE
    ] + [
        (
            f"{p} {m} -> {p2} {FULL}, shortlist {s}",
            dict(stage_dims=(m, FULL), shortlist=(s,), precisions=(p, p2)),
        )
        for m, p, s, p2 in FUNNELS
    ]
    for label, options in configs:
        index = FunnelIndex(corpus, **options)
        ids = index.search(queries, k=K)[1]
        ndcg, recall = ranking_scores(ids, relevant)
        yield dict(
            label=label,
            first=index.bytes_per_vector[0],
            total=index.total_bytes_per_vector,
            ndcg=ndcg,
            recall=recall,
            overlap=overlap(ids, exact_ids),
        )


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for precision in ("float32", "int8", "binary"):
        line = [
            r
            for r in results
            if r["label"].startswith(precision) and "->" not in r["label"]
        ]
        axis.plot(
            [r["first"] for r in line],
            [r["ndcg"] for r in line],
            marker="o",
            label=f"{precision}, one stage (32 ... 384)",
        )
    funnels = [r for r in results if "->" in r["label"]]
    axis.scatter(
        [r["first"] for r in funnels],
        [r["ndcg"] for r in funnels],
        marker="*",
        s=90,
        color="black",
        zorder=3,
        label="funnels: first stage, rescored at 384",
    )
    axis.set_xscale("log", base=2)
    axis.set_xlabel("bytes per vector scanned (first stage)")
    axis.set_ylabel("nDCG@10 (%)")
    axis.set_title("MRL-fine-tuned all-MiniLM-L6-v2, 7,930 docstrings")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", required=True, metavar="DIR")
    parser.add_argument(
        "--plot",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)),
            "..",
            "docs",
            "memory_budget.png",
        ),
        help="'' for no plot",
    )
    args = parser.parse_args(argv)
    corpus, queries, relevant = load(args.embeddings)
    print(f"{len(corpus)} corpus vectors, {len(queries)} queries, top-{K}")
    print(
        "\n| index | first-stage bytes/vector | all stages bytes/vector | "
        "nDCG@10 | recall@10 | top-10 overlap with float32 384 |"
    )
    print("|---|---|---|---|---|---|")
    results = []
    for r in rows(corpus, queries, relevant):
        print(
            f"| {r['label']} | {r['first']} | {r['total']} | "
            f"{r['ndcg']:.1f} | {r['recall']:.1f} | {r['overlap']:.3f} |",
            flush=True,
        )
        results.append(r)
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
