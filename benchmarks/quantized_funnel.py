"""Quantized funnels: a binary or int8 first stage, float32 rescoring at 384.

Times `keras_mrl.retrieval.FunnelIndex` with a first stage in binary (sign
bits of the 64-, 128- or 256-d prefix, faiss `IndexBinaryFlat`, and
`IndexBinaryHNSW` at 256 bits) or int8 (the 32- or 64-d prefix, faiss'
8-bit scalar quantizer), rescoring its shortlist in float32 at the full
384 dims, against exact search: a faiss `IndexFlatIP` over the unit
384-d vectors. For each run it prints the first stage's bytes per vector,
the speed-up over exact search of the same queries and the top-10 overlap
with the exact answer (the fraction of the exact top 10 the funnel
returns). A float32 first stage at 32 dims is shown for comparison.

Speed is measured on 1,000,000 x 384 vectors and 128 queries (`--quick`:
20,000 and 32), as the median over rounds that each run one batched search
of every index, the exact one included (`funnel.py`'s `interleaved`), so
the drift of a shared machine falls on all alike. Index builds are timed
apart. The binary first stages shortlist 200 or 1,000 candidates, the int8
ones 200 or 1,000, the float32 one 200; the HNSW one 1,000, its beam
(`ef_search`) as wide.

The vectors: with `--embeddings FILE.npy` (real MRL embeddings, `(N, 384)`,
e.g. the docstring corpus embedded by `text_finetune.py`'s MRL fine-tune) the
overlap is measured on them too (queries: `--queries FILE.npy`, or 256
rows held out of the corpus), and the 1M vectors are drawn to match their
per-dimension means and standard deviations. Without it, the vectors are
the Matryoshka-like clusters of `benchmarks/funnel.py` (2,000 clusters,
noise 0.48, decay 0.39: what `benchmarks/spectrum.py` measures on an
MRL-trained embedding) and the overlap is measured on the 1M vectors.

Goals: a run whose first stage stores at most 32 bytes per
vector keeps a top-10 overlap of at least 0.95 (on the real embeddings
when given), and is at least 10x faster than exact search at 1M.
`--check` exits 1 when no run meets both.

Run: `python benchmarks/quantized_funnel.py [--quick] [--check]
[--embeddings FILE.npy [--queries FILE.npy]]`. On a machine shared with
other jobs, `OMP_WAIT_POLICY=PASSIVE` keeps faiss' OpenMP threads from
spinning against them: spinning slowed the funnels' many short parallel
regions (a 20,000-vector first stage took 10 ms passive, 650 ms active at
a load of 6 on 2 cores) far more than exact search's one long product.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "numpy")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from funnel import interleaved  # noqa: E402
from funnel import matryoshka_like  # noqa: E402
from funnel import overlap  # noqa: E402

from keras_mrl.retrieval import FunnelIndex  # noqa: E402

K = 10
DIM = 384
MAX_FIRST_BYTES = 32
MIN_OVERLAP = 0.95
MIN_SPEEDUP = 10.0

# (label, first width, first precision, index kind, shortlists)
FIRST_STAGES = [
    ("binary 64", 64, "binary", "flat", (200, 1000)),
    ("binary 128", 128, "binary", "flat", (200, 1000)),
    ("binary 256", 256, "binary", "flat", (200, 1000)),
    ("binary 256 HNSW", 256, "binary", "hnsw", (1000,)),
    ("int8 32", 32, "int8", "flat", (200, 1000)),
    ("int8 64", 64, "int8", "flat", (200, 1000)),
    ("float32 32", 32, "float32", "flat", (200,)),
]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top_k(corpus, queries):
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(unit(corpus))
    return index.search(unit(queries), K)[1]


def configs():
    for label, width, precision, kind, shortlists in FIRST_STAGES:
        for shortlist in shortlists:
            yield (
                label,
                shortlist,
                dict(
                    stage_dims=(width, DIM),
                    shortlist=(shortlist,),
                    precisions=(precision, "float32"),
                    index=kind,
                ),
            )


def real_data(args, rng):
    corpus = np.load(args.embeddings).astype(np.float32)
    if corpus.ndim != 2 or corpus.shape[1] != DIM:
        sys.exit(
            f"{args.embeddings}: expected (N, {DIM}) embeddings, got "
            f"{corpus.shape}"
        )
    if args.queries:
        queries = np.load(args.queries).astype(np.float32)
    else:
        held = rng.choice(len(corpus), size=256, replace=False)
        queries = corpus[held]
        corpus = np.delete(corpus, held, axis=0)
    return corpus, queries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="20,000 vectors and 32 queries"
    )
    parser.add_argument("--embeddings", default=None, metavar="FILE.npy")
    parser.add_argument("--queries", default=None, metavar="FILE.npy")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="faiss OpenMP threads (default 2)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when no run meets the goals",
    )
    args = parser.parse_args(argv)
    num, num_queries = (20_000, 32) if args.quick else (1_000_000, 128)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    real = None
    if args.embeddings:
        real = real_data(args, rng)
        mean, std = real[0].mean(axis=0), real[0].std(axis=0)

        def draw(n):
            return (mean + std * rng.standard_normal((n, DIM))).astype(
                np.float32
            )

        source = (
            f"drawn to match the per-dimension mean and std of "
            f"{args.embeddings}"
        )
    else:
        centres = rng.standard_normal((2_000, DIM), dtype=np.float32)

        def draw(n):
            return matryoshka_like(rng, centres, n, 0.48, 0.39)

        source = (
            "synthetic Matryoshka-like clusters (funnel.py: 2,000 "
            "clusters, noise 0.48, decay 0.39)"
        )
    corpus, queries = draw(num), draw(num_queries)
    print(
        f"speed: {num} x {DIM} vectors {source}; {num_queries} queries, "
        f"top-{K}, faiss {faiss.__version__} on "
        f"{faiss.omp_get_max_threads()} threads, median of {args.repeats} "
        f"interleaved rounds; load average at start "
        f"{os.getloadavg()[0]:.2f}"
    )
    if real is not None:
        real_exact = exact_top_k(*real)
        print(
            f"overlap also on {args.embeddings}: {real[0].shape[0]} "
            f"vectors, {len(real[1])} queries"
        )

    start = time.perf_counter()
    exact_index = faiss.IndexFlatIP(DIM)
    exact_index.add(unit(corpus))
    builds = {"exact": time.perf_counter() - start}
    unit_queries = unit(queries)
    searches = {"exact": lambda: exact_index.search(unit_queries, K)}
    indexes, real_overlaps, shared = {}, {}, None
    for label, shortlist, options in configs():
        name = (label, shortlist)
        start = time.perf_counter()
        index = FunnelIndex(corpus, **options)
        builds[name] = time.perf_counter() - start
        # Every run rescores the same unit 384-d prefixes: one copy serves
        # them all, so that 1M vectors fit in memory many times over.
        if shared is None:
            shared = index._views[-1]
        index._views[-1] = shared
        indexes[name] = index
        searches[name] = lambda index=index: index.search(queries, k=K)
        if real is not None:
            small = FunnelIndex(real[0], **options)
            real_overlaps[name] = overlap(
                small.search(real[1], k=K)[1], real_exact
            )
        print(
            f"  built {label}, shortlist {shortlist}: {builds[name]:.1f} s",
            flush=True,
        )
    del corpus
    seconds, results = interleaved(searches, args.repeats)
    exact_time, exact_ids = seconds["exact"], results["exact"][1]
    rows = []
    for name, index in indexes.items():
        rows.append(
            dict(
                label=name[0],
                shortlist=name[1],
                first_bytes=index.bytes_per_vector[0],
                total_bytes=index.total_bytes_per_vector,
                build=builds[name],
                ms=seconds[name] * 1e3,
                speedup=exact_time / seconds[name],
                overlap=overlap(results[name][1], exact_ids),
                real_overlap=real_overlaps.get(name),
            )
        )

    real_column = real is not None
    print(
        f"\n| first stage | shortlist | stage-0 bytes/vector | total "
        f"bytes/vector | build s | search ms | speed-up | top-{K} overlap"
        + (" | overlap, real |" if real_column else " |")
    )
    print("|---" * (9 if real_column else 8) + "|")
    for r in rows:
        line = (
            f"| {r['label']} | {r['shortlist']} | {r['first_bytes']} | "
            f"{r['total_bytes']} | {r['build']:.1f} | {r['ms']:.1f} | "
            f"{r['speedup']:.1f}x | {r['overlap']:.3f} |"
        )
        if real_column:
            line += f" {r['real_overlap']:.3f} |"
        print(line)
    print(
        f"\nexact IndexFlatIP @{DIM}: {4 * DIM} bytes/vector, build "
        f"{builds['exact']:.1f} s, search {exact_time * 1e3:.0f} ms; "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )

    key = "real_overlap" if real_column else "overlap"
    quality, both = check_goals(rows, key)

    def names(found):
        return ", ".join(f"{r['label']}/{r['shortlist']}" for r in found)

    print(
        f"goal: <= {MAX_FIRST_BYTES} bytes/vector in the first stage at "
        f">= {MIN_OVERLAP} overlap"
        + (" (real embeddings)" if real_column else " (synthetic)")
        + ": "
        + (f"PASS ({names(quality)})" if quality else "FAIL")
    )
    print(
        f"goal: that and >= {MIN_SPEEDUP:g}x faster than exact at "
        f"{num}: " + (f"PASS ({names(both)})" if both else "FAIL")
    )
    if not both:
        best = max(
            (r for r in rows if r["first_bytes"] <= MAX_FIRST_BYTES),
            key=lambda r: min(r[key] / MIN_OVERLAP, r["speedup"] / MIN_SPEEDUP),
        )
        print(
            f"closest: {best['label']}/{best['shortlist']} at "
            f"{best[key]:.3f} overlap, {best['speedup']:.1f}x"
        )
    if args.quick:
        print("(--quick: the goals are meant for the 1M run)")
    if args.check and not both:
        sys.exit(1)


def check_goals(rows, key="overlap"):
    """`(quality, both)`: the runs of `rows` whose first stage stores at
    most 32 bytes per vector at an overlap (`row[key]`) of at least 0.95,
    and those of them at least 10x faster than exact search."""
    quality = [
        r
        for r in rows
        if r["first_bytes"] <= MAX_FIRST_BYTES and r[key] >= MIN_OVERLAP
    ]
    return quality, [r for r in quality if r["speedup"] >= MIN_SPEEDUP]


if __name__ == "__main__":
    main()
