"""The `keras-mrl` command line (also `python -m keras_mrl`).

`keras-mrl demo [--out DIR] [--seeds N] [--quick]` runs the main job of
`keras_mrl.demo` and exits 1 when one of its goals fails, so it can gate a
pipeline. Bad options end with one line on stderr and a non-zero exit
status, never a traceback. The demo's heavy imports (scikit-learn,
matplotlib) wait until the options are known to be good, so `--help` and
option errors are quick.
"""

import argparse
import os
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
    return parser


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
        args.out, seeds=1 if args.quick else args.seeds or 2,
        quick=args.quick,
        log=lambda line: print(line, flush=True),
    )
    print()
    print(demo.format_table(results))
    retrieval = demo.format_retrieval(results)
    if retrieval is not None:
        print()
        print(retrieval)
    print()
    goals = demo.check_goals(results)
    for goal, passed, detail in goals:
        print(f"{'PASS' if passed else 'FAIL'}  {goal}  ({detail})")
    print(f"\nwrote {os.path.join(args.out, 'results.json')} and "
          f"{os.path.join(args.out, 'accuracy.png')}")
    failed = sum(not passed for _, passed, _ in goals)
    if failed:
        print(f"{prog}: {failed} goal(s) failed", file=sys.stderr)
        return EXIT_FAILURE
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
