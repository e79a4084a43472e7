"""Where a train step's time goes: keras_mrl JAX against sentence-transformers.

The step of `vs_sentence_transformers.py` (all-MiniLM-L6-v2,
`MatryoshkaLoss(MNRL)` over 16 ... 384, AdamW, 32 docstring pairs at
their real lengths, each library with its own padding), profiled in one
worker process per library:

- keras_mrl under JAX: `jax.profiler` records every XLA operation
  (thunk) the compiled step runs; XLA's optimized HLO, dumped at compile
  time, says what each one computes.
- sentence-transformers: `torch.profiler` records every aten operator,
  by its own (self) time.

Both are sorted into the same kinds of work (dense matmuls, attention,
layer norm, GELU, the embedding tables, the optimizer, dropout, copies,
the rest) and printed as ms per step, next to the step's wall time with
and without the profiler. Kinds are read from operator names, so the
split is approximate where XLA fuses several kinds into one operation: a
fusion counts as the first kind of that list it holds. The first 6
batches share one shape, so the profile is of one compiled program.
`--top N` lists each library's N heaviest operations too.

    python benchmarks/step_profile.py [--steps 6] [--top N]
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vs_sentence_transformers as vs  # noqa: E402

KINDS = (
    "dense matmuls",
    "attention (scores, softmax, weighted sum)",
    "layer norm",
    "GELU",
    "embedding tables",
    "optimizer",
    "dropout",
    "copies and layout",
    "the rest",
)


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--top",
        type=int,
        default=0,
        help="also list each worker's N heaviest operations",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.top < 0:
        parser.error(f"--top must be at least 0, got {args.top}")
    return args


# --- kinds of work ------------------------------------------------------


def hlo_kind(opcodes):
    """The kind of an XLA operation, from the opcodes it runs (fused ones too).

    Args:
        opcodes: the set of HLO opcodes of the operation, with those of
            the computations it calls.

    Returns:
        One of `KINDS`.
    """
    if "batch-dot" in opcodes:
        return KINDS[1]
    if opcodes & {"dot", "convolution"}:
        return "dense matmuls"
    if opcodes & {"scatter", "gather"}:
        return "embedding tables"
    if (
        opcodes & {"rng-bit-generator", "rng"}
        or {"xor", "shift-right-logical"} <= opcodes
    ):
        return "dropout"
    if "exponential" in opcodes:
        return KINDS[1]
    if "rsqrt" in opcodes:
        return "layer norm"
    if opcodes & {"erf", "tanh"}:
        return "GELU"
    if "sqrt" in opcodes:
        return "optimizer"
    if opcodes and opcodes <= {
        "copy",
        "transpose",
        "bitcast",
        "reshape",
        "slice",
        "concatenate",
        "parameter",
        "tuple",
        "get-tuple-element",
        "dynamic-slice",
        "dynamic-update-slice",
        "pad",
        "broadcast",
        "constant",
    }:
        return "copies and layout"
    return "the rest"


def aten_kind(name):
    """The kind of a torch operator, from its name (e.g. `aten::addmm`)."""
    op = name.split("::")[-1]
    if op in {"bmm", "baddbmm"} or "softmax" in op or "attention" in op:
        return KINDS[1]
    if op in {"mm", "addmm", "matmul", "linear", "dot"}:
        return "dense matmuls"
    if "layer_norm" in op:
        return "layer norm"
    if "gelu" in op:
        return "GELU"
    if "embedding" in op or op in {"index_select", "index_add_", "index_put_"}:
        return "embedding tables"
    if "adam" in op or op.startswith("_foreach"):
        return "optimizer"
    if "dropout" in op or "bernoulli" in op:
        return "dropout"
    if op in {
        "copy_",
        "clone",
        "contiguous",
        "transpose",
        "t",
        "permute",
        "view",
        "reshape",
        "_unsafe_view",
        "expand",
        "as_strided",
        "empty",
        "empty_like",
        "zeros",
        "zero_",
        "fill_",
        "cat",
        "stack",
    }:
        return "copies and layout"
    return "the rest"


# --- HLO ----------------------------------------------------------------

_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%?([\w.\-]+) = [^=]*?\b([a-z][\w\-]*)\("
)
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")


def instruction_opcodes(hlo_text):
    """Maps each instruction name of an HLO module to the opcodes it runs.

    A fusion's opcodes are those of the computations it calls; a dot
    with batch dimensions (attention's per-head products) is `batch-dot`.
    """
    computations, calls, current = {}, {}, None
    instructions = {}
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header and "=" not in line.split("{")[0]:
            current = header.group(1)
            computations[current] = set()
            continue
        match = _INSTRUCTION.match(line)
        if match is None or current is None:
            continue
        name, opcode = match.groups()
        custom = re.search(r'custom_call_target="([^"]+)"', line)
        if opcode == "dot" and "lhs_batch_dims" in line:
            opcode = "batch-dot"  # attention's products, per head
        computations[current].add(custom.group(1) if custom else opcode)
        instructions[name] = (opcode, _CALLS.findall(line))
        calls.setdefault(current, []).append(name)

    def opcodes_of(computation, seen):
        if computation in seen or computation not in computations:
            return set()
        seen.add(computation)
        ops = set(computations[computation])
        for name in calls.get(computation, []):
            for callee in instructions[name][1]:
                ops |= opcodes_of(callee, seen)
        return ops

    opcodes = {}
    for name, (opcode, called) in instructions.items():
        ops = {opcode}
        for callee in called:
            ops |= opcodes_of(callee, set())
        opcodes[name] = ops
    return opcodes


def instruction_kinds(hlo_text):
    """Maps each instruction name of an HLO module to its kind."""
    return {
        name: hlo_kind(ops)
        for name, ops in instruction_opcodes(hlo_text).items()
    }


# --- workers ------------------------------------------------------------


def _steps(args):
    train, _ = vs._data(args.data)
    library = vs._library(
        argparse.Namespace(
            worker=args.worker, no_buckets=False, precision="float32"
        )
    )
    batches = vs._batches(train, 32, args.steps)
    features = library.tokenize(batches)
    for batch in features:  # every shape compiled
        library.step(batch)
    return library, features


def _wall_ms(library, features):
    start = time.perf_counter()
    for batch in features:
        library.step(batch)
    return 1000 * (time.perf_counter() - start) / len(features)


def jax_worker(args, dump):
    """`(step ms, profiled step ms, {operation: (kind, total ms, opcodes)})`."""
    import jax

    library, features = _steps(args)
    step_ms = _wall_ms(library, features)
    trace = tempfile.mkdtemp()
    with jax.profiler.trace(trace, create_perfetto_trace=True):
        profiled_ms = _wall_ms(library, features)
    opcodes = {}
    for module in glob.glob(os.path.join(dump, "*after_optimizations.txt")):
        with open(module) as f:
            opcodes.update(instruction_opcodes(f.read()))
    (path,) = glob.glob(
        os.path.join(trace, "**", "*perfetto_trace.json.gz"), recursive=True
    )
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    times = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in opcodes:
            times[event["name"]] += event.get("dur", 0) / 1000
    operations = {
        name: (hlo_kind(opcodes[name]), ms, " ".join(sorted(opcodes[name])))
        for name, ms in times.items()
    }
    return step_ms, profiled_ms, operations


def st_worker(args):
    """`(step ms, profiled step ms, {operator: (kind, self ms, "")})`."""
    import torch

    library, features = _steps(args)
    step_ms = _wall_ms(library, features)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]
    ) as profile:
        profiled_ms = _wall_ms(library, features)
    operations = {
        event.key: (aten_kind(event.key), event.self_cpu_time_total / 1000, "")
        for event in profile.key_averages()
        if event.key.startswith("aten::")
    }
    return step_ms, profiled_ms, operations


def _worker(args):
    if args.worker == "jax":
        step_ms, profiled_ms, operations = jax_worker(
            args, os.environ["STEP_PROFILE_DUMP"]
        )
    else:
        step_ms, profiled_ms, operations = st_worker(args)
    n = args.steps
    kinds = collections.Counter()
    for kind, ms, _ in operations.values():
        kinds[kind] += ms / n
    top = sorted(operations.items(), key=lambda item: -item[1][1])[: args.top]
    result = {
        "step_ms": step_ms,
        "profiled_step_ms": profiled_ms,
        "kinds": dict(kinds),
        "top": [[name, kind, ms / n, ops] for name, (kind, ms, ops) in top],
    }
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(worker, args):
    env = vs.worker_env(worker, args.threads)
    if worker == "jax":
        dump = tempfile.mkdtemp()
        env["STEP_PROFILE_DUMP"] = dump
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + f" --xla_dump_to={dump} --xla_dump_hlo_as_text"
            + " --xla_dump_hlo_module_re=.*train.*"
        )
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        worker,
        "--data",
        args.data,
        "--steps",
        str(args.steps),
        "--top",
        str(args.top),
    ]
    return vs.run_worker(command, env, worker)


def format_table(results):
    names = {
        "st": "sentence-transformers (torch)",
        "jax": "keras_mrl JAX (XLA)",
    }
    workers = list(results)
    lines = [
        "| ms per step | " + " | ".join(names[w] for w in workers) + " |",
        "|---" * (len(workers) + 1) + "|",
    ]
    for kind in KINDS:
        lines.append(
            f"| {kind} | "
            + " | ".join(
                f"{results[w]['kinds'].get(kind, 0):.0f}" for w in workers
            )
            + " |"
        )
    lines.append(
        "| sum of operations | "
        + " | ".join(
            f"{sum(results[w]['kinds'].values()):.0f}" for w in workers
        )
        + " |"
    )
    for label, key in (
        ("step, wall time", "step_ms"),
        ("step, wall time under the profiler", "profiled_step_ms"),
    ):
        lines.append(
            f"| {label} | "
            + " | ".join(f"{results[w][key]:.0f}" for w in workers)
            + " |"
        )
    for w in workers:
        if results[w]["top"]:
            lines += ["", f"{names[w]}: the heaviest operations, ms per step"]
            lines += [
                f"- {ms:.0f} {name} ({kind}){': ' + ops if ops else ''}"
                for name, kind, ms, ops in results[w]["top"]
            ]
    return "\n".join(lines)


def main(argv=None):
    args = _parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    from keras_mrl.datasets import docstring_pairs

    train, test = docstring_pairs.split_for(
        docstring_pairs.build_in_subprocess(), split="test"
    )
    args.data = os.path.join(tempfile.mkdtemp(), "pairs.json")
    with open(args.data, "w") as f:
        json.dump({"train": train, "test": test}, f)
    results = {worker: _spawn(worker, args) for worker in ("st", "jax")}
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
