"""Times an XLA train step of five classification heads on the same features.

    KERAS_BACKEND=tensorflow python benchmarks/head.py [--quick] [--check]

Heads (batch 256, D = 2048, 1000 classes, widths 8 ... 2048):
- plain: one Dense(1000) and one loss;
- tied: MatryoshkaDense(tied=True) (MRL-E);
- untied: MatryoshkaDense (MRL);
- floor: one Dense whose logits are copied to every granularity, scored by
  the same fused loss: the matmuls of one Dense plus the G losses, which
  every Matryoshka head pays;
- naive: a tied kernel computing x[:, :m] @ W[:m] for every width m.

All heads share one optimizer and loss; the Matryoshka ones use
MatryoshkaLoss. Goals: tied/plain <= 1.15, untied/plain <= 2.1
(its matmuls are sum(m_g) / D = 2.0 times one Dense's), and the tied head
well under the naive one (naive/tied >= 1.4). floor/plain,
tied/floor and untied/naive are printed with them. Each head is timed in
several interleaved rounds and the median is kept, since the machine is
shared and noisy. With `--check` the script exits 1 when a goal is missed,
naming the goal and the margin; without it, it prints the table and exits 0.
`benchmarks/head_variants.py` times the alternatives behind these heads.
"""

import argparse
import statistics
import sys
import time

import keras
import numpy as np
from keras import ops

import keras_mrl

# (ratio, numerator head, denominator head, "<=" or ">=", target).
GOALS = (
    ("tied/plain", "tied", "plain", "<=", 1.15),
    ("untied/plain", "untied", "plain", "<=", 2.1),
    ("naive/tied", "naive", "tied", ">=", 1.4),
)
# Ratios printed for information, with no goal.
INFO = (
    ("floor/plain", "floor", "plain"),
    ("tied/floor", "tied", "floor"),
    ("untied/naive", "untied", "naive"),
)


class CopiedDense(keras.layers.Layer):
    """The floor: one Dense's logits repeated for every granularity."""

    def __init__(self, units, granularities, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units)
        self.granularities = granularities

    def call(self, x):
        logits = self.dense(x)
        return ops.stack([logits] * self.granularities, axis=-2)


class NaiveTiedDense(keras.layers.Layer):
    """A tied head that multiplies every prefix from scratch."""

    def __init__(self, units, nesting_dims, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.nesting_dims = nesting_dims

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(self.nesting_dims[-1], self.units), name="kernel"
        )
        self.bias = self.add_weight(
            shape=(self.units,), initializer="zeros", name="bias"
        )

    def call(self, x):
        return ops.stack(
            [x[:, :m] @ self.kernel[:m] + self.bias for m in self.nesting_dims],
            axis=-2,
        )


def build_heads(dim, classes):
    dims = keras_mrl.nesting.default_nesting_dims(dim)
    return {
        "plain": keras.layers.Dense(classes),
        "tied": keras_mrl.layers.MatryoshkaDense(
            classes, nesting_dims=dims, tied=True
        ),
        "untied": keras_mrl.layers.MatryoshkaDense(classes, nesting_dims=dims),
        "floor": CopiedDense(classes, len(dims)),
        "naive": NaiveTiedDense(classes, dims),
    }


def compile_model(head, dim):
    inputs = keras.Input((dim,))
    model = keras.Model(inputs, head(inputs))
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # Stacked mode: every head but the plain one emits (batch, G, classes).
    plain = isinstance(head, keras.layers.Dense)
    loss = ce if plain else keras_mrl.losses.MatryoshkaLoss(ce)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=loss,
        jit_compile=keras.backend.backend() != "torch",
    )
    return model


def time_steps(model, x, y, steps):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    # The last step's loss forces the pending device work to finish.
    float(model.evaluate(x[:8], y[:8], verbose=0))
    return (time.perf_counter() - start) / steps


def measure(args):
    """Returns `{head: median ms per train step}` for the heads of `args`."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.dim)).astype("float32")
    y = rng.integers(0, args.classes, size=args.batch)
    models = {
        name: compile_model(head, args.dim)
        for name, head in build_heads(args.dim, args.classes).items()
    }
    for model in models.values():
        model.train_on_batch(x, y)  # compile
        model.train_on_batch(x, y)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(time_steps(model, x, y, args.steps))
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def check_goals(ms):
    """Returns `[(ratio name, ratio, op, target, passed, margin)]`.

    The margin is how far the ratio is on the good side of its target;
    negative when the goal is missed.
    """
    checks = []
    for label, numerator, denominator, op, target in GOALS:
        ratio = ms[numerator] / ms[denominator]
        margin = target - ratio if op == "<=" else ratio - target
        checks.append((label, ratio, op, target, margin >= 0, margin))
    return checks


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help="a small case that runs in seconds"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a goal is missed"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.dim, args.classes = 32, 64, 10
        args.steps, args.rounds = 3, 2
    return args


def main(argv=None):
    """Prints the table and the goals; returns the exit status."""
    args = parse_args(argv)
    ms = measure(args)
    print(
        f"backend={keras.backend.backend()} batch={args.batch} "
        f"D={args.dim} classes={args.classes} "
        f"widths={keras_mrl.nesting.default_nesting_dims(args.dim)}"
    )
    print(f"{'head':<8} {'ms/step':>9}")
    for name, value in ms.items():
        print(f"{name:<8} {value:>9.2f}")
    checks = check_goals(ms)
    for label, ratio, op, target, passed, margin in checks:
        print(
            f"{label:<13} {ratio:6.2f}  goal {op} {target}  "
            f"{'PASS' if passed else 'FAIL'} (margin {margin:+.2f})"
        )
    for label, numerator, denominator in INFO:
        print(f"{label:<13} {ms[numerator] / ms[denominator]:6.2f}")
    missed = [check for check in checks if not check[4]]
    if not args.check or not missed:
        return 0
    for label, ratio, op, target, _, margin in missed:
        print(
            f"head.py: goal missed: {label} = {ratio:.2f}, goal {op} "
            f"{target}, missed by {-margin:.2f}",
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
