"""Where the Matryoshka head's train step spends its time, and alternatives.

    KERAS_BACKEND=jax python benchmarks/head_variants.py [--rounds 7]

The measurements behind the choices for `MatryoshkaDense` and
`MatryoshkaLoss`, on `benchmarks/head.py`'s case (batch 256, D 2048, 1000
classes, widths 8 ... 2048, SGD, one XLA-compiled `train_on_batch`), each
step's time as a ratio to the plain `Dense(1000)` with its cross-entropy,
median of interleaved rounds:

- `dense+mse`: the plain Dense trained on a squared error: its matmuls and
  update, with almost no loss work;
- `floor`: one Dense whose logits are copied G times, with
  `MatryoshkaLoss(SparseCategoricalCrossentropy(from_logits=True))` (what
  `head.py` calls the floor);
- the cross-entropy written three ways: Keras' own (the plain rows, and
  `MatryoshkaLoss` used to compute), `+lse` (`logsumexp(z) - z[label]`
  with a gather) and `+onehot` (`logsumexp(z) - <one_hot, z>`, what
  `MatryoshkaLoss` now computes for that loss, whatever the row's name);
- tied heads: the layer (`tied`: one `split` of `x` and of the kernel, a
  matmul per block, running sums, a stack), `tied/cumsum` (the block
  products stacked, then one `cumsum`), `tied/slices` (a slice per block
  instead of one split), `tied/block_weights` (one variable per block
  instead of one kernel split each step) and `tied/block_weights+cumsum`
  (both);
- untied heads: the layer (`untied`: a slice `x[:, :m]` per width) and
  `untied/blocks` (the product of each block of `x` with the rows of every
  kernel that reads it, one matmul per block, then running sums).

`--only` picks variants; the smallest sizes smoke-test the script.
"""

import argparse
import statistics
import sys
import time

import keras
import numpy as np
from head import CopiedDense  # the floor head of benchmarks/head.py
from keras import ops

import keras_mrl
from keras_mrl._blocks import block_bounds
from keras_mrl._blocks import running_sums
from keras_mrl._blocks import split_blocks


def lse_cross_entropy(y_true, y_pred):
    """Sparse softmax cross-entropy of logits, per example and granularity."""
    labels = ops.cast(y_true, "int32")[..., None]
    picked = ops.take_along_axis(y_pred, labels, axis=-1)[..., 0]
    return ops.logsumexp(y_pred, axis=-1) - picked


class OneHotCrossEntropy(keras.losses.Loss):
    """`logsumexp(z) - <one_hot(label), z>`, summed over the G axis when
    there is one: the softmax cross-entropy with no gather."""

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        if len(y_pred.shape) == 3:
            labels = ops.repeat(labels[:, None], y_pred.shape[1], axis=1)
        picked = ops.sum(ops.one_hot(labels, y_pred.shape[-1]) * y_pred, -1)
        values = ops.logsumexp(y_pred, axis=-1) - picked
        return ops.sum(values, -1) if len(y_pred.shape) == 3 else values


class TiedVariant(keras.layers.Layer):
    def __init__(self, units, widths, how, **kwargs):
        super().__init__(**kwargs)
        self.units, self.widths, self.how = units, widths, how

    def build(self, input_shape):
        if self.how.startswith("block_weights"):
            self.blocks = [
                self.add_weight(shape=(b - a, self.units), name=f"k{b}")
                for a, b in block_bounds(self.widths)
            ]
        else:
            self.kernel = self.add_weight(
                shape=(self.widths[-1], self.units), name="kernel"
            )
        self.bias = self.add_weight(
            shape=(self.units,), initializer="zeros", name="bias"
        )

    def call(self, x):
        if self.how.startswith("block_weights"):
            parts = [
                ops.matmul(a, w)
                for a, w in zip(split_blocks(x, self.widths), self.blocks)
            ]
        elif self.how == "slices":
            parts = [
                ops.matmul(x[:, a:b], self.kernel[a:b])
                for a, b in block_bounds(self.widths)
            ]
        else:
            parts = [
                ops.matmul(a, b)
                for a, b in zip(
                    split_blocks(x, self.widths),
                    split_blocks(self.kernel, self.widths, axis=0),
                )
            ]
        if self.how.endswith("cumsum"):
            out = ops.cumsum(ops.stack(parts, axis=-2), axis=-2)
        else:
            out = ops.stack(list(running_sums(parts)), axis=-2)
        return out + self.bias


class UntiedBlocks(keras.layers.Layer):
    """Untied kernels, multiplied block by block: block k of `x` meets the
    rows k of every kernel that reads it in one wider matmul."""

    def __init__(self, units, widths, **kwargs):
        super().__init__(**kwargs)
        self.units, self.widths = units, widths

    def build(self, input_shape):
        self.kernels = [
            self.add_weight(shape=(m, self.units), name=f"k{m}")
            for m in self.widths
        ]
        self.biases = [
            self.add_weight(
                shape=(self.units,), name=f"b{m}", initializer="zeros"
            )
            for m in self.widths
        ]

    def call(self, x):
        g_count = len(self.widths)
        blocks = split_blocks(x, self.widths)
        # rows[g][k]: kernel g's rows of block k (k <= g).
        rows = [
            split_blocks(kernel, self.widths[: g + 1], axis=0)
            for g, kernel in enumerate(self.kernels)
        ]
        sums = [None] * g_count
        for k, block in enumerate(blocks):
            wide = ops.concatenate(
                [rows[g][k] for g in range(k, g_count)], axis=-1
            )
            products = ops.split(ops.matmul(block, wide), g_count - k, axis=-1)
            for g, product in zip(range(k, g_count), products):
                sums[g] = product if sums[g] is None else sums[g] + product
        return ops.stack([s + b for s, b in zip(sums, self.biases)], axis=-2)


def variants(dim, classes):
    widths = keras_mrl.nesting.default_nesting_dims(dim)
    g = len(widths)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras_ce = keras_mrl.losses.MatryoshkaLoss(ce)
    lse = keras_mrl.losses.MatryoshkaLoss(lse_cross_entropy)
    onehot = OneHotCrossEntropy()
    return {
        "plain": (lambda: keras.layers.Dense(classes), ce),
        "plain+onehot": (lambda: keras.layers.Dense(classes), onehot),
        "floor+onehot": (lambda: CopiedDense(classes, g), onehot),
        "tied+onehot": (
            lambda: keras_mrl.layers.MatryoshkaDense(
                classes, nesting_dims=widths, tied=True
            ),
            onehot,
        ),
        "untied+onehot": (
            lambda: keras_mrl.layers.MatryoshkaDense(
                classes, nesting_dims=widths
            ),
            onehot,
        ),
        "dense+mse": (lambda: keras.layers.Dense(classes), "mse"),
        "floor": (lambda: CopiedDense(classes, g), keras_ce),
        "floor+lse": (lambda: CopiedDense(classes, g), lse),
        "tied": (
            lambda: keras_mrl.layers.MatryoshkaDense(
                classes, nesting_dims=widths, tied=True
            ),
            keras_ce,
        ),
        "tied+lse": (
            lambda: keras_mrl.layers.MatryoshkaDense(
                classes, nesting_dims=widths, tied=True
            ),
            lse,
        ),
        "tied/cumsum": (
            lambda: TiedVariant(classes, widths, "cumsum"),
            keras_ce,
        ),
        "tied/slices": (
            lambda: TiedVariant(classes, widths, "slices"),
            keras_ce,
        ),
        "tied/block_weights": (
            lambda: TiedVariant(classes, widths, "block_weights"),
            keras_ce,
        ),
        "tied/block_weights+cumsum": (
            lambda: TiedVariant(classes, widths, "block_weights+cumsum"),
            keras_ce,
        ),
        "untied": (
            lambda: keras_mrl.layers.MatryoshkaDense(
                classes, nesting_dims=widths
            ),
            keras_ce,
        ),
        "untied+lse": (
            lambda: keras_mrl.layers.MatryoshkaDense(
                classes, nesting_dims=widths
            ),
            lse,
        ),
        "untied/blocks": (lambda: UntiedBlocks(classes, widths), keras_ce),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated variants (plain is always in)",
    )
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.dim)).astype("float32")
    labels = rng.integers(0, args.classes, size=args.batch)
    chosen = variants(args.dim, args.classes)
    if args.only:
        names = ["plain"] + [n for n in args.only.split(",") if n != "plain"]
        chosen = {n: chosen[n] for n in names}
    models = {}
    for name, (make_head, loss) in chosen.items():
        inputs = keras.Input((args.dim,))
        model = keras.Model(inputs, make_head()(inputs))
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3),
            loss=loss,
            jit_compile=keras.backend.backend() != "torch",
        )
        y = (
            np.zeros((args.batch, args.classes), "float32")
            if loss == "mse"
            else labels
        )
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)
        models[name] = (model, y)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, (model, y) in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            float(model.evaluate(x[:8], y[:8], verbose=0))
            times[name].append((time.perf_counter() - start) / args.steps)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(
        f"backend={keras.backend.backend()} batch={args.batch} "
        f"D={args.dim} classes={args.classes} rounds={args.rounds}"
    )
    for name, value in ms.items():
        print(f"{name:<26} {value:8.2f} ms  {value / ms['plain']:5.2f}x plain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
