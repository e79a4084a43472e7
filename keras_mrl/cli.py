"""The `keras-mrl` command line (also `python -m keras_mrl`).

`keras-mrl demo [--out DIR] [--seeds N] [--quick]` runs the main job of
`keras_mrl.demo`: it prints the comparison and writes its files
(`benchmarks/figure2.py --check` judges the figures). Bad options end
with one line on stderr and a non-zero exit status, never a traceback.
The demo's heavy imports (scikit-learn, matplotlib) wait until the options
are known to be good, so `--help` and option errors are quick.

`keras-mrl finetune --model DIR --pairs PAIRS.jsonl --nesting-dims 32,64,...
--out OUT` fine-tunes a text embedder (a sentence-transformers BERT
directory or a KerasHub preset directory) into a Matryoshka embedder with
MatryoshkaLoss(MultipleNegativesRankingLoss) on (query, document) pairs,
one JSON object `{"query": ..., "document": ...}` per line. It holds out a
share of the pairs, prints the nDCG@10 and recall@10 of the base and the
fine-tuned model at each width on them, and writes the fine-tuned model
with `save_to_preset` (plus `results.json`) to OUT. The inputs are checked
before anything is trained and OUT is filled in a staging directory that
is renamed at the end, so a failed run leaves no OUT behind; OUT gets the
permissions the umask gives a new directory.

`keras-mrl docstring-pairs --out DIR` writes the (query, document) pairs
of `keras_mrl.datasets.docstring_pairs` (built from the docstrings of the
installed packages, in a fresh process) as `train.jsonl`,
`validation.jsonl` and `test.jsonl`, the input of `finetune --pairs`.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

# Exit statuses: 2 for bad options (argparse's convention), 1 for a run that
# cannot start or whose goals fail, 130 for Ctrl-C (the shell's convention
# for SIGINT).
EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, not usage plus a line."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive int, got {text!r}"
        )
    return value


def build_parser():
    """Returns the `keras-mrl` argument parser."""
    parser = _Parser(
        prog="keras-mrl",
        description="Matryoshka Representation Learning for Keras 3.",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    demo = commands.add_parser(
        "demo",
        help="reproduce the paper's Figure 2 comparison on digits",
        description=(
            "Train MRL, MRL-E, one fixed-feature model per width (FF) and "
            "the widest FF model truncated and re-probed, on scikit-learn's "
            "bundled digits; print the per-width accuracy table and the "
            "goals, and write results.json and accuracy.png to --out."
        ),
    )
    demo.add_argument(
        "--out",
        default="demo_out",
        metavar="DIR",
        help="directory for results.json and accuracy.png "
        "(created if missing; default: %(default)s)",
    )
    demo.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        metavar="N",
        help="number of seeds to average (default: 2)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="one seed and few epochs, for smoke tests (not with --seeds)",
    )
    demo.set_defaults(run=_run_demo)
    _add_finetune(commands)
    _add_docstring_pairs(commands)
    return parser


def _int_at_least(minimum, why):
    """An argparse type: an int of at least `minimum`, for the reason why."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be an int of at least {minimum} ({why}), got {text!r}"
            )
        return value

    return parse


_batch_size = _int_at_least(2, "the other pairs of a batch are its negatives")
_sequence_length = _int_at_least(3, "[CLS], a token of text and [SEP]")


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a positive number, got {text!r}"
        )
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a number between 0 and 1, got {text!r}"
        )
    return value


def _widths(text):
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        dims = None
    if (
        not dims
        or any(d < 1 for d in dims)
        or any(a >= b for a, b in zip(dims, dims[1:]))
    ):
        raise argparse.ArgumentTypeError(
            "must be strictly increasing positive ints separated by "
            f"commas, such as 32,64,128, got {text!r}"
        )
    return dims


def _add_finetune(commands):
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune a text embedder into a Matryoshka embedder",
        description=(
            "Fine-tune a sentence-transformers BERT directory or a KerasHub "
            "TextEmbedder preset on (query, document) pairs with "
            "MatryoshkaLoss(MultipleNegativesRankingLoss); print the "
            "per-width nDCG@10 and recall@10 of the base and the fine-tuned "
            "model on held-out pairs, and save the fine-tuned model to "
            "--out with save_to_preset."
        ),
    )
    finetune.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="sentence-transformers or KerasHub preset directory",
    )
    finetune.add_argument(
        "--pairs",
        required=True,
        metavar="PAIRS.jsonl",
        help='one {"query": ..., "document": ...} object per line',
    )
    finetune.add_argument(
        "--nesting-dims",
        required=True,
        type=_widths,
        metavar="M1,M2,...",
        help="the trained widths, e.g. 32,64,128,256,384",
    )
    finetune.add_argument(
        "--out",
        required=True,
        metavar="OUT",
        help="new directory for the fine-tuned preset",
    )
    finetune.add_argument(
        "--steps",
        type=_positive_int,
        default=200,
        help="training steps (default: %(default)s)",
    )
    finetune.add_argument(
        "--batch-size",
        type=_batch_size,
        default=32,
        help="pairs per step (default: %(default)s)",
    )
    finetune.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=5e-5,
        help="Adam's (default: %(default)s)",
    )
    finetune.add_argument(
        "--sequence-length",
        type=_sequence_length,
        default=None,
        help="tokens per text (default: 64, "
        "or the model's maximum when smaller)",
    )
    finetune.add_argument(
        "--holdout",
        type=_fraction,
        default=0.1,
        help="share of the pairs held out (default: %(default)s)",
    )
    finetune.add_argument(
        "--seed", type=int, default=0, help="seed of the split and the training"
    )
    finetune.set_defaults(run=_run_finetune)


def _add_docstring_pairs(commands):
    pairs = commands.add_parser(
        "docstring-pairs",
        help="write (query, document) pairs from installed docstrings",
        description=(
            "Build the (query, document) pairs of "
            "keras_mrl.datasets.docstring_pairs from the docstrings of the "
            "installed packages (train: numpy, scikit-learn, keras, jax and "
            "standard-library modules; validation: matplotlib; test: scipy) "
            "in a fresh process, and write train.jsonl, validation.jsonl "
            "and test.jsonl to --out, the input of `keras-mrl finetune "
            "--pairs`."
        ),
    )
    pairs.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="directory for the three .jsonl files (created if missing)",
    )
    pairs.set_defaults(run=_run_docstring_pairs)


def _run_docstring_pairs(args, prog):
    problem = _writable_dir(args.out)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from keras_mrl.datasets import docstring_pairs

    try:
        splits = docstring_pairs.build_in_subprocess()
    except (RuntimeError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    for name, pairs in splits.items():
        path = os.path.join(args.out, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as file:
            file.writelines(
                json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs
            )
        packages = len({pair["package"] for pair in pairs})
        print(f"{path}: {len(pairs)} pairs from {packages} packages")
    return 0


def _read_pairs(path):
    """Returns `(queries, documents)`, or raises ValueError with a line."""
    queries, documents = [], []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                pair = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{number} is not JSON ({error.msg})"
                ) from None
            if not isinstance(pair, dict) or not all(
                isinstance(pair.get(key), str) and pair[key].strip()
                for key in ("query", "document")
            ):
                raise ValueError(
                    f"{path}:{number} must be an object with non-empty "
                    'string "query" and "document" fields'
                )
            queries.append(pair["query"])
            documents.append(pair["document"])
    if len(queries) < 4:
        raise ValueError(
            f"{path} holds {len(queries)} pairs; at least 4 are needed "
            "(some are held out)"
        )
    return queries, documents


def _load_embedder(path):
    """Loads a sentence-transformers or KerasHub preset directory."""
    from keras_mrl.integrations import sentence_transformers as st

    if os.path.isfile(os.path.join(path, "metadata.json")):
        import keras_hub

        # A preset fine-tuned from a sentence-transformers directory holds
        # this tokenizer; reading the class registers it for loading.
        st.HuggingFaceBertTokenizer
        return keras_hub.models.TextEmbedder.from_preset(path)
    return st.load(path)


def _per_width(embedder, queries, documents, dims, batch_size):
    from keras_mrl.evaluation import retrieval_metrics_from_relevance

    q = embedder.encode_text(queries, batch_size=batch_size, verbose=0)
    d = embedder.encode_text(documents, batch_size=batch_size, verbose=0)
    return retrieval_metrics_from_relevance(
        q,
        corpus_embeddings=d,
        relevant_ids=[[i] for i in range(len(queries))],
        nesting_dims=dims,
        k=10,
    )


def _finetune_table(base, tuned, dims):
    lines = [
        "| width | base nDCG@10 | tuned nDCG@10 | base recall@10 | "
        "tuned recall@10 |",
        "|---|---|---|---|---|",
    ]
    for m in dims:
        lines.append(
            f"| {m} | {100 * base[m]['ndcg@10']:.1f} | "
            f"{100 * tuned[m]['ndcg@10']:.1f} | "
            f"{100 * base[m]['recall@10']:.1f} | "
            f"{100 * tuned[m]['recall@10']:.1f} |"
        )
    return "\n".join(lines)


def _check_finetune_paths(args):
    if not os.path.isdir(args.model):
        return f"--model {args.model!r} is not a directory"
    if not os.path.isfile(args.pairs):
        return f"--pairs {args.pairs!r} is not a file"
    if os.path.exists(args.out) and (
        not os.path.isdir(args.out) or os.listdir(args.out)
    ):
        return (
            f"--out {args.out!r} exists and is not an empty directory; "
            "choose a new one"
        )
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        return f"--out {args.out!r}: {parent!r} is not a writable directory"
    return None


def _run_finetune(args, prog):
    def fail(message):
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    problem = _check_finetune_paths(args)
    if problem:
        return fail(problem)
    try:
        queries, documents = _read_pairs(args.pairs)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return fail(str(error))
    held = max(1, int(round(args.holdout * len(queries))))
    if len(queries) - held < 2:
        return fail(
            f"--holdout {args.holdout} holds out {held} of the "
            f"{len(queries)} pairs, which leaves "
            f"{len(queries) - held} to train on; at least 2 are "
            "needed (lower --holdout or add pairs)"
        )
    try:
        import keras
        import numpy as np

        embedder = _load_embedder(args.model)
    except ImportError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:  # a directory KerasHub cannot read
        first = str(error).strip().splitlines()[0] if str(error) else ""
        return fail(
            f"--model {args.model!r} cannot be loaded: "
            f"{type(error).__name__}: {first}"
        )
    width = embedder.output.shape[-1]
    if args.nesting_dims[-1] > width:
        return fail(
            f"--nesting-dims {args.nesting_dims[-1]} is wider than the "
            "model, whose "
            f"embeddings have {width} dimensions"
        )
    longest = getattr(embedder.backbone, "max_sequence_length", None) or 64
    if args.sequence_length is not None and args.sequence_length > longest:
        return fail(
            f"--sequence-length {args.sequence_length} is longer "
            f"than the model's maximum, {longest}"
        )
    embedder.preprocessor.sequence_length = args.sequence_length or min(
        64, longest
    )

    from keras_mrl.losses import MatryoshkaLoss
    from keras_mrl.losses import MultipleNegativesRankingLoss
    from keras_mrl.models import ContrastiveModel

    order = np.random.default_rng(args.seed).permutation(len(queries))
    test, train = order[:held], order[held:]
    pick = lambda texts, rows: [texts[i] for i in rows]  # noqa: E731
    test_q, test_d = pick(queries, test), pick(documents, test)
    print(
        f"{len(train)} training pairs, {len(test)} held out; widths "
        f"{args.nesting_dims} of {width}",
        flush=True,
    )
    base = _per_width(
        embedder, test_q, test_d, args.nesting_dims, args.batch_size
    )

    keras.utils.set_random_seed(args.seed)
    model = ContrastiveModel(embedder)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=MatryoshkaLoss(
            MultipleNegativesRankingLoss(), nesting_dims=args.nesting_dims
        ),
        jit_compile=_train_step_compile(),
    )
    batch = min(args.batch_size, len(train))
    dataset = model.make_dataset(
        (pick(queries, train), pick(documents, train)),
        batch_size=batch,
        shuffle=True,
        seed=args.seed,
        drop_remainder=True,
    ).repeat()
    model.fit(
        dataset, epochs=1, steps_per_epoch=args.steps, verbose=1, shuffle=False
    )
    tuned = _per_width(
        embedder, test_q, test_d, args.nesting_dims, args.batch_size
    )
    print()
    print(_finetune_table(base, tuned, args.nesting_dims))

    _write_preset(
        embedder,
        args.out,
        {
            "nesting_dims": args.nesting_dims,
            "steps": args.steps,
            "num_train": int(len(train)),
            "num_heldout": int(held),
            "base": {str(m): base[m] for m in args.nesting_dims},
            "finetuned": {str(m): tuned[m] for m in args.nesting_dims},
        },
    )
    print(f"\nwrote the fine-tuned preset to {args.out}")
    return 0


def _train_step_compile():
    """The fine-tune's `jit_compile`: Keras' default, but for one case.

    Keras' "auto" compiles with XLA under JAX and under TensorFlow on an
    accelerator, and runs TensorFlow on a CPU on its own graph kernels.
    Those are oneDNN's where TensorFlow turns them on (by itself on CPUs
    with AVX-512 and the like, or with `TF_ENABLE_ONEDNN_OPTS=1`), and
    then beat XLA; without them XLA ran MiniLM's train step about 1.4x
    faster (docs/benchmarks.md, section 16), so it compiles there.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return "auto"
    # Private, but the one place TensorFlow says whether its oneDNN
    # kernels are on in this process.
    from tensorflow.python.util import _pywrap_util_port

    return "auto" if _pywrap_util_port.IsMklEnabled() else True


def _write_preset(embedder, out, results):
    """Writes the embedder's preset and `results.json` as the directory
    `out` (absent or empty), built beside it and renamed at the end."""
    from keras_mrl._files import new_directory

    staging = new_directory(
        os.path.dirname(os.path.abspath(out)), ".keras-mrl-finetune-"
    )
    try:
        embedder.save_to_preset(staging)
        with open(os.path.join(staging, "results.json"), "w") as file:
            json.dump(results, file, indent=1)
        if os.path.isdir(out):
            os.rmdir(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _writable_dir(path):
    """Creates `path` if needed; returns an error message or None."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        return f"--out {path!r} is not a writable directory: {reason}"
    return None


def _run_demo(args, prog):
    if args.quick and args.seeds is not None:
        print(
            f"{prog}: error: --quick runs one seed; drop --seeds "
            f"{args.seeds} or --quick (see --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    problem = _writable_dir(args.out)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from keras_mrl import demo
    except ImportError as error:
        print(
            f"{prog}: error: the demo needs scikit-learn and matplotlib "
            f"({error}); install them with `pip install keras-mrl[demo]`",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    results = demo.run(
        args.out,
        seeds=1 if args.quick else args.seeds or 2,
        quick=args.quick,
        log=lambda line: print(line, flush=True),
    )
    print()
    print(demo.format_table(results))
    retrieval = demo.format_retrieval(results)
    if retrieval is not None:
        print()
        print(retrieval)
    print(
        f"\nwrote {os.path.join(args.out, 'results.json')} and "
        f"{os.path.join(args.out, 'accuracy.png')}"
    )
    return 0


def main(argv=None):
    """Runs the command line and returns its exit status.

    Args:
        argv: the arguments without the program name; default
            `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, non-zero on any error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args, f"{parser.prog} {args.command}")
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
