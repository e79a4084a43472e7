"""Funnel retrieval against exact faiss search at full width.

Builds 200,000 x 1024 Matryoshka-like embeddings and 256 queries, and times
`keras_mrl.retrieval.FunnelIndex` against a faiss `IndexFlatIP` on the
full-width cosine, all in one process:

- (a) `dims=(32, 1024)`, `shortlist=(200,)`, flat first stage;
- (b) the same with an HNSW first stage;
- (c) the paper's five-stage funnel `dims=(8, 16, 32, 64, 1024)`,
  `shortlist=(200, 100, 50, 25)`, flat first stage;
- (d) (a) on the numpy first stage that serves when faiss is missing.

The data imitate what MRL training leaves: points scattered around 2,000
standard-normal cluster centres with standard-normal noise of scale
`--noise`, then dimension j scaled by `(1 + j) ** -decay`, so the leading
dimensions carry most of the energy (with the default decay 0.5 the variance
falls as 1 / (1 + j), and the first 32 dimensions hold 54% of it). Queries
are fresh points drawn from the same clusters. How well a short prefix
shortlists the full-width neighbours depends on these parameters; the
defaults were fixed before any run and were not tuned to the goals.

Search times are the median over repeats of one batched `search` of all
queries; index build times are reported apart.

Run: `KERAS_BACKEND=numpy python benchmarks/funnel.py [--quick]`.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "numpy")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from keras_mrl.retrieval import FunnelIndex  # noqa: E402

K = 10
# ef_search None: the beam is as wide as the shortlist, 200.
HNSW = {"hnsw_m": 32, "ef_construction": 100, "ef_search": None}
GOALS = {"a": (5.0, 0.98), "b": (15.0, 0.95)}


def matryoshka_like(rng, centres, num, noise, decay):
    """Points around random centres, dimension j scaled by (1 + j)**-decay."""
    dim = centres.shape[1]
    labels = rng.integers(0, len(centres), size=num)
    points = centres[labels]
    points += noise * rng.standard_normal((num, dim), dtype=np.float32)
    points *= (1.0 + np.arange(dim, dtype=np.float32)) ** -decay
    return points


def timed(fn, repeats):
    fn()  # warm-up: page faults and thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def overlap(ids, exact):
    hits = [len(set(a) & set(b)) for a, b in zip(ids, exact)]
    return float(np.mean(hits)) / exact.shape[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="20,000 x 1024 corpus and 64 queries")
    parser.add_argument("--threads", type=int, default=2,
                        help="faiss OpenMP threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=1.0,
                        help="within-cluster spread vs centre spread")
    parser.add_argument("--decay", type=float, default=0.5,
                        help="dimension j is scaled by (1 + j) ** -decay")
    parser.add_argument("--clusters", type=int, default=2_000)
    args = parser.parse_args()
    num, num_queries = (20_000, 64) if args.quick else (200_000, 256)
    dim = 1024

    faiss.omp_set_num_threads(args.threads)
    print(f"corpus {num} x {dim}, {num_queries} queries, top-{K}, "
          f"faiss {faiss.__version__} with {faiss.omp_get_max_threads()} "
          f"OpenMP threads, median of {args.repeats} searches; data: "
          f"{args.clusters} clusters, noise {args.noise}, decay "
          f"{args.decay}, seed {args.seed}")

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, dim), dtype=np.float32)
    corpus = matryoshka_like(rng, centres, num, args.noise, args.decay)
    queries = matryoshka_like(rng, centres, num_queries, args.noise,
                              args.decay)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    start = time.perf_counter()
    exact_index = faiss.IndexFlatIP(dim)
    exact_index.add(unit(corpus))
    exact_build = time.perf_counter() - start
    exact_time, (_, exact) = timed(
        lambda: exact_index.search(unit(queries), K), args.repeats
    )
    del exact_index
    print(f"\nexact IndexFlatIP @{dim}: build {exact_build:.2f} s, "
          f"search {exact_time * 1e3:.1f} ms "
          f"({exact_time / num_queries * 1e6:.0f} us/query)")

    configs = [
        ("a", "2-stage flat", (32, 1024), (200,), "flat", True),
        ("b", "2-stage hnsw", (32, 1024), (200,), "hnsw", True),
        ("c", "5-stage flat", (8, 16, 32, 64, 1024), (200, 100, 50, 25),
         "flat", True),
        ("d", "2-stage numpy", (32, 1024), (200,), "flat", False),
    ]
    rows, verdicts = [], []
    for key, label, dims, shortlist, kind, use_faiss in configs:
        start = time.perf_counter()
        index = FunnelIndex(corpus, dims, shortlist, index=kind,
                            use_faiss=use_faiss, **HNSW)
        build = time.perf_counter() - start
        seconds, (_, ids) = timed(lambda: index.search(queries, K),
                                  args.repeats)
        del index
        speedup, score = exact_time / seconds, overlap(ids, exact)
        rows.append((key, label, dims, shortlist, build, seconds, speedup,
                     score))
        if key in GOALS:
            min_speedup, min_overlap = GOALS[key]
            passed = speedup >= min_speedup and score >= min_overlap
            verdicts.append(
                f"({key}) goal >= {min_speedup:g}x at >= {min_overlap:g} "
                f"overlap: {'PASS' if passed else 'FAIL'}"
            )

    print(f"\nHNSW first stage: {HNSW}")
    print(f"| run | dims | shortlist | build s | search ms | speed-up | "
          f"top-{K} overlap |")
    print("|---|---|---|---|---|---|---|")
    for key, label, dims, shortlist, build, seconds, speedup, score in rows:
        print(f"| ({key}) {label} | {dims} | {shortlist} | {build:.2f} | "
              f"{seconds * 1e3:.1f} | {speedup:.1f}x | {score:.3f} |")
    print()
    for verdict in verdicts:
        print(verdict)

    print("\n| width | float32 bytes/vector | vs full width |")
    print("|---|---|---|")
    for width in (8, 16, 32, 64, 128, 256, 512, 1024):
        print(f"| {width} | {4 * width} | {width / dim:.4f} |")
    for dims in sorted({row[2] for row in rows}):
        print(f"a FunnelIndex with dims {dims} stores {4 * sum(dims)} "
              "bytes/vector of prefixes (an HNSW graph adds its links)")


if __name__ == "__main__":
    main()
