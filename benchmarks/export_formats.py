"""File size and latency of each format `keras_mrl.serving.export` writes.

Under the current backend (`KERAS_BACKEND`), for each model and each
format the backend exports (see docs/deploy.md), it exports the embedder
cut to `--dim` dimensions, then prints the seconds the export took, the
size of the file (or SavedModel directory), the seconds its runtime takes
to load it, the best milliseconds of `--repeats` calls on a batch of 32
texts and on one text (token ids padded to the sequence length, already
tokenized), and the largest difference from the Keras model's own
vectors. The calls of all the formats are timed in turn, round after
round, and the best of each kept: other jobs on a shared machine only
slow calls down, and then slow every format alike.
The first row of each model is Keras itself (`predict_on_batch`,
compiled, then cut with `keras_mrl.ops.truncate`). A SavedModel is
exported with raw strings: its `serve_token_ids` gives the token-id row
and `serve` (tokenization in the graph included) the "strings" row.

Runtimes: `tf.saved_model.load` (TensorFlow), onnxruntime's CPU provider,
ai_edge_litert's `Interpreter` with one thread per core.

Models: `tiny`, the random two-layer BERT of width 128 of
`tests/_tiny_bert.py`, cut to 64 dimensions, and `minilm`,
all-MiniLM-L6-v2 from its wheel (no download), cut to `--dim`.

    python benchmarks/export_formats.py                 # tiny and minilm
    python benchmarks/export_formats.py --model tiny --quick
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

SENTENCES = [
    "Return the sum of the array elements over a given axis.",
    "Sort a list of numbers in place and return it.",
    "Read the whole file and return its lines.",
    "Compute the mean of the values along the first axis.",
    "Open a file for writing, creating it if needed.",
    "Return the index of the last element that matches.",
    "Split a string at every comma into a list.",
    "Compute the matrix product of two arrays.",
]


def parse(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]),
    )
    parser.add_argument(
        "--model",
        choices=["tiny", "minilm", "both"],
        default="both",
        help="which model(s) to export (default both)",
    )
    parser.add_argument(
        "--dim",
        type=int,
        default=128,
        help="the width all-MiniLM-L6-v2 is cut to (default 128)",
    )
    parser.add_argument(
        "--sequence-length",
        type=int,
        default=64,
        help="tokens per text (default 64)",
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="texts per batch (default 32)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="timed calls per batch size after one warm-up, the best kept "
        "(default 10)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 timed calls: a smoke run, its timings mean nothing",
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    return args


def build(name, sequence_length):
    """`(embedder, dim)` of a model name."""
    if name == "minilm":
        from keras_mrl.integrations import sentence_transformers as st

        path = st.all_minilm_l6_v2_directory()
        return st.load(path, sequence_length=sequence_length), None
    sys.path.insert(
        0, os.path.join(os.path.dirname(__file__), os.pardir, "tests")
    )
    from _tiny_bert import tiny_embedder

    embedder = tiny_embedder(
        sequence_length=sequence_length, hidden_dim=128, num_layers=2
    )
    return embedder, 64


def _time_rounds(calls, repeats):
    """The best milliseconds of each call, timed in `repeats` rounds of all
    the calls in turn after one warm-up call each, so that other jobs on a
    shared machine slow every call alike."""
    for call in calls.values():
        call()  # warm-up: compilation, allocation
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            best[key] = min(best[key], time.perf_counter() - start)
    return {key: 1000 * seconds for key, seconds in best.items()}


def _size_mib(path):
    if os.path.isfile(path):
        return os.path.getsize(path) / 2**20
    total = 0
    for directory, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(directory, f)) for f in files)
    return total / 2**20


def _runner(format, path):
    """A function from a dict of token ids to vectors, for `format`."""
    if format == "saved_model":
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (the tokenizer's ops)

        loaded = tf.saved_model.load(path)
        return lambda tokens: loaded.serve_token_ids(tokens).numpy(), loaded
    if format == "onnx":
        import onnxruntime

        runtime = onnxruntime.InferenceSession(
            path, providers=["CPUExecutionProvider"]
        )
        return lambda tokens: runtime.run(None, tokens)[0], runtime
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
    runner = interpreter.get_signature_runner()
    return lambda tokens: runner(**tokens)["output_0"], runner


def load_artifact(format, path, texts, tokens, expected):
    """`(rows, calls)` of one exported file.

    The rows hold its size, load time and largest difference from
    `expected`; `calls` maps `(row format, "batch_ms" or "one_ms")` to a
    call to time (`fill_times`).

    Args:
        format: the format of `path`.
        path: the file or SavedModel directory.
        texts: the batch as strings (read by a SavedModel of strings).
        tokens: the batch as a dict of int32 token ids.
        expected: the Keras model's vectors of the batch.
    """
    start = time.perf_counter()
    run, handle = _runner(format, path)
    load_s = time.perf_counter() - start
    one = {k: v[:1] for k, v in tokens.items()}
    rows = [
        dict(
            format=format,
            size_mib=_size_mib(path),
            load_s=load_s,
            max_abs_diff=float(np.abs(run(tokens) - expected).max()),
        )
    ]
    calls = {
        (format, "batch_ms"): lambda: run(tokens),
        (format, "one_ms"): lambda: run(one),
    }
    if format == "saved_model" and hasattr(handle, "serve_token_ids"):
        import tensorflow as tf

        strings = tf.constant(texts)
        vectors = handle.serve(strings).numpy()
        name = "saved_model (strings)"
        rows.append(
            dict(
                format=name,
                max_abs_diff=float(np.abs(vectors - expected).max()),
            )
        )
        calls[(name, "batch_ms")] = lambda: handle.serve(strings)
        calls[(name, "one_ms")] = lambda: handle.serve(strings[:1])
    return rows, calls


def fill_times(rows, calls, repeats):
    """Times `calls` in interleaved rounds; returns `rows` with them."""
    times = _time_rounds(calls, repeats)
    for row in rows:
        for key in ("batch_ms", "one_ms"):
            row[key] = times[(row["format"], key)]
    return rows


def measure_model(name, args, directory):
    """The rows of one model under the current backend."""
    import keras

    import keras_mrl
    from keras_mrl.serving._export import BACKEND_FORMATS

    backend = keras.backend.backend()
    embedder, dim = build(name, args.sequence_length)
    dim = dim or args.dim
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(args.batch)]
    tokens = {
        k: np.asarray(v).astype("int32")
        for k, v in embedder.preprocessor(texts).items()
    }
    one = {k: v[:1] for k, v in tokens.items()}

    def keras_call(batch):
        vectors = keras.Model.predict_on_batch(embedder, batch)
        return keras.ops.convert_to_numpy(
            keras_mrl.ops.truncate(vectors, dim=dim)
        )

    expected = keras_call(tokens)
    rows = [dict(format="keras")]
    calls = {
        ("keras", "batch_ms"): lambda: keras_call(tokens),
        ("keras", "one_ms"): lambda: keras_call(one),
    }
    suffixes = {"saved_model": "", "onnx": ".onnx", "litert": ".tflite"}
    for format in BACKEND_FORMATS[backend]:
        path = os.path.join(
            directory, f"{name}_{backend}_{format}{suffixes[format]}"
        )
        start = time.perf_counter()
        keras_mrl.serving.export(
            embedder,
            path=path,
            dim=dim,
            format=format,
            inputs="strings" if format == "saved_model" else "token_ids",
        )
        export_s = time.perf_counter() - start
        measured, more = load_artifact(format, path, texts, tokens, expected)
        measured[0]["export_s"] = export_s
        rows += measured
        calls.update(more)
    fill_times(rows, calls, args.repeats)
    common = {"model": name, "backend": backend, "dim": dim}
    return [dict(common, **row) for row in rows]


def table(rows):
    """The rows as a Markdown table."""
    lines = [
        "| model | backend | format | dim | export s | size MiB | load s "
        "| batch ms | 1 text ms | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row, key, spec):
        return format(row[key], spec) if key in row else "—"

    for row in rows:
        lines.append(
            f"| {row['model']} | {row['backend']} | {row['format']} | "
            f"{row['dim']} | {cell(row, 'export_s', '.1f')} | "
            f"{cell(row, 'size_mib', '.2f')} | {cell(row, 'load_s', '.2f')} "
            f"| {cell(row, 'batch_ms', '.1f')} | {cell(row, 'one_ms', '.2f')} "
            f"| {cell(row, 'max_abs_diff', '.1e')} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse(argv)
    names = ["tiny", "minilm"] if args.model == "both" else [args.model]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            rows += measure_model(name, args, directory)
    print(f"{args.batch} texts a batch, {args.sequence_length} tokens each")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
