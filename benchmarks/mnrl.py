"""Cost of MatryoshkaLoss(MultipleNegativesRankingLoss) over 8 widths.

Times one jit-compiled forward and backward pass of the loss with respect to
the embeddings, for:

- `full`: the plain full-width MultipleNegativesRankingLoss;
- `fused`: MatryoshkaLoss over the widths, which calls the loss's
  `call_prefixes` (one Gram matrix built from the blocks between widths);
- `sliced`: the same MatryoshkaLoss with the fused path bypassed, slicing
  each prefix and scoring it from scratch (what a generic wrapper does).

The goal of the issue is fused / full <= 1.3, on the best-of times. With
`--check` the script exits 1 when it is missed (on any backend, with
`--all-backends`), naming the goal and the margin; without it, it prints
the table and exits 0.

    KERAS_BACKEND=jax python benchmarks/mnrl.py [--check]
    python benchmarks/mnrl.py --all-backends
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

MAX_FUSED_RATIO = 1.3


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument(
        "--negatives", type=int, default=0, help="hard negatives per example"
    )
    parser.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=[8, 16, 32, 64, 128, 256, 512, 1024],
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--all-backends",
        action="store_true",
        help="run once per backend, each in its own process",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the goal is missed"
    )
    return parser.parse_args(argv)


def _gradient_step(loss_fn):
    """Returns a compiled `y -> (loss, dloss/dy)` on the current backend.

    Keras has no backend-neutral gradient op, so this is the one place that
    speaks each backend's autodiff and compiler.
    """
    import keras

    backend = keras.backend.backend()

    def targets(y):
        # The ranking loss ignores its targets; zeros stand in for labels so
        # that the sliced variant (a plain function) gets the same call.
        return keras.ops.zeros(keras.ops.shape(y)[:1])

    if backend == "jax":
        import jax

        return jax.jit(jax.value_and_grad(lambda y: loss_fn(targets(y), y)))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(y):
            with tf.GradientTape() as tape:
                tape.watch(y)
                value = loss_fn(targets(y), y)
            return value, tape.gradient(value, y)

        return step
    if backend == "torch":
        import torch

        # Eager, as Keras' torch backend trains by default: torch.compile
        # (jit_compile=True) needs a C++ toolchain at run time, took 27 s
        # here and sped the full loss up more than the fused one
        # (docs/benchmarks.md).
        def step(y):
            y = y.detach().requires_grad_(True)
            value = loss_fn(targets(y), y)
            (grad,) = torch.autograd.grad(value, y)
            return value, grad

        return step
    raise ValueError(f"Unsupported backend {backend!r}.")


def _block(outputs):
    import keras

    for x in outputs:
        keras.ops.convert_to_numpy(x)


def _time(steps, y, repeats):
    """Best-of and median seconds per step, the variants interleaved.

    Interleaving exposes every variant to the same load; the best-of time
    is the least disturbed by other processes on a shared machine.
    """
    for step in steps.values():
        _block(step(y))  # compile
        _block(step(y))
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            _block(step(y))
            times[name].append(time.perf_counter() - start)
    return {
        name: (min(values), statistics.median(values))
        for name, values in times.items()
    }


def run(args):
    import keras
    import numpy as np

    import keras_mrl

    mnrl = keras_mrl.losses.MultipleNegativesRankingLoss()
    losses = {
        "full": mnrl,
        "fused": keras_mrl.losses.MatryoshkaLoss(mnrl, nesting_dims=args.dims),
        # A plain function shares no work across prefixes, so
        # MatryoshkaLoss slices each prefix and calls it.
        "sliced": keras_mrl.losses.MatryoshkaLoss(
            lambda y_true, y_pred: mnrl.call(y_true, y_pred),
            nesting_dims=args.dims,
        ),
    }
    rng = np.random.default_rng(0)
    y = keras.ops.convert_to_tensor(
        rng.normal(size=(args.batch, 2 + args.negatives, args.dim)).astype(
            "float32"
        )
    )
    print(
        f"backend={keras.backend.backend()} batch={args.batch} "
        f"dim={args.dim} negatives={args.negatives} widths={args.dims} "
        f"{args.repeats} interleaved repeats"
    )
    seconds = _time(
        {name: _gradient_step(fn) for name, fn in losses.items()},
        y,
        args.repeats,
    )
    best = {name: values[0] for name, values in seconds.items()}
    for name, (fastest, median) in seconds.items():
        print(
            f"  {name:>6}: best {1000 * fastest:8.2f} ms "
            f"({fastest / best['full']:5.2f}x full), median "
            f"{1000 * median:8.2f} ms "
            f"({median / seconds['full'][1]:5.2f}x full)"
        )
    return best


def check_goal(best):
    """Returns `(fused / full, passed, margin)` of best-of seconds.

    The margin is how far the ratio is under the goal; negative when it is
    missed.
    """
    ratio = best["fused"] / best["full"]
    margin = MAX_FUSED_RATIO - ratio
    return ratio, margin >= 0, margin


def report(best, check):
    """Prints the goal's line; returns the exit status.

    Args:
        best: `{variant: best-of seconds}`.
        check: bool, whether a missed goal gives exit status 1.
    """
    ratio, passed, margin = check_goal(best)
    print(
        f"  best-of: fused / full = {ratio:.2f} (goal <= {MAX_FUSED_RATIO}: "
        f"{'met' if passed else 'NOT met'}, margin {margin:+.2f}); "
        f"sliced / fused = {best['sliced'] / best['fused']:.2f}"
    )
    if passed or not check:
        return 0
    print(
        f"mnrl.py: goal missed: fused / full = {ratio:.2f}, goal <= "
        f"{MAX_FUSED_RATIO}, missed by {-margin:.2f}",
        file=sys.stderr,
    )
    return 1


def main(argv=None):
    """Runs the benchmark; returns the exit status."""
    args = _parse_args(argv)
    if not args.all_backends:
        return report(run(args), args.check)
    argv = [
        a
        for a in (sys.argv[1:] if argv is None else argv)
        if a != "--all-backends"
    ]
    failed = []
    for backend in ("tensorflow", "jax", "torch"):
        env = dict(os.environ, KERAS_BACKEND=backend)
        done = subprocess.run([sys.executable, __file__, *argv], env=env)
        if done.returncode:
            failed.append(backend)
    if failed:
        print(f"mnrl.py: failed on {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
