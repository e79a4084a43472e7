"""The paper's Figure 2 on digits (`keras-mrl demo`), checked against targets.

Runs `keras_mrl.demo` as `keras-mrl demo` does, prints its tables and the
targets, and with `--check` exits 1 when one is missed:

- the whole run finishes in <= 240 s;
- MRL >= FF - 1.5 pt test accuracy at every width;
- MRL >= the truncated FF-64 + 10 pt at the smallest width.

Usage: `python benchmarks/figure2.py [--out DIR] [--seeds N] [--check]`.
"""

import argparse
import os
import sys

import numpy as np

MAX_SECONDS = 240.0
MRL_VS_FF_TOLERANCE = 1.5
MRL_VS_TRUNCATED_MARGIN = 10.0


def check_targets(results):
    """Returns `[(target, met, detail)]` for a `keras_mrl.demo.run` result."""
    acc = {k: 100 * np.array(v) for k, v in results["accuracy"].items()}
    gap = acc["mrl"] - acc["ff"]
    margin = acc["mrl"][0] - acc["truncated"][0]
    seconds = results["seconds"]
    return [
        (
            f"finishes in <= {MAX_SECONDS:.0f} s",
            seconds <= MAX_SECONDS,
            f"{seconds:.0f} s wall, {results['cpu_seconds']:.0f} s CPU",
        ),
        (
            f"MRL >= FF - {MRL_VS_FF_TOLERANCE} pt at every width",
            bool(np.all(gap >= -MRL_VS_FF_TOLERANCE)),
            "MRL - FF: " + " ".join(f"{g:+.1f}" for g in gap),
        ),
        (
            f"MRL >= truncated + {MRL_VS_TRUNCATED_MARGIN:.0f} pt at width "
            f"{results['dims'][0]}",
            bool(margin >= MRL_VS_TRUNCATED_MARGIN),
            f"{margin:+.1f} pt",
        ),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    from keras_mrl import demo

    os.makedirs(args.out, exist_ok=True)
    results = demo.run(args.out, seeds=args.seeds)
    print(demo.format_table(results))
    print()
    print(demo.format_retrieval(results))
    print()
    targets = check_targets(results)
    for target, met, detail in targets:
        print(f"{'met   ' if met else 'missed'}  {target}  ({detail})")
    missed = sum(not met for _, met, _ in targets)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
