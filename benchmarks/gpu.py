"""What a Matryoshka head costs in a ResNet50 train step.

Trains ResNet50 (`weights=None`, `include_top=False`, `pooling="avg"`) on
synthetic 224x224 images, batch 256, compiled with XLA (on TensorFlow and
JAX; torch runs eagerly), under float32 and mixed_bfloat16, with three
heads on the 2048 pooled features:

- plain: `keras.layers.Dense(1000)`, sparse softmax cross-entropy;
- untied: `keras_mrl.layers.MatryoshkaDense(1000)` (MRL), widths 8 ... 2048,
  trained through a stacked `keras_mrl.losses.MatryoshkaLoss`;
- tied: the same with `tied=True` (MRL-E).

It prints images/s per head and the step-time overhead over the plain head;
the goals are at most 3% for the tied head and 5% for the untied one, and
`--check` makes the script exit 1 when one is missed.
Images arrive as uint8, as from a decoding input pipeline, and are rescaled
in the model. Each head trains one untimed epoch (compilation, warm-up),
then `--steps` timed steps.

Usage:
    KERAS_BACKEND=jax python benchmarks/gpu.py --check    # the GPU run
    KERAS_BACKEND=jax python benchmarks/gpu.py --tiny     # a CPU smoke run
"""

import argparse
import json
import sys
import time

import keras
import numpy as np

import keras_mrl

HEADS = ("plain", "untied", "tied")
PRECISIONS = ("float32", "mixed_bfloat16")
GOALS = {"untied": 5.0, "tied": 3.0}
CLASSES = 1000


def _backbone(name, image_size):
    if name == "resnet50":
        return keras.applications.ResNet50(
            weights=None,
            include_top=False,
            pooling="avg",
            input_shape=(image_size, image_size, 3),
        )
    # A few strided convolutions: the same model shape, compiled in seconds
    # on a CPU, for smoke runs.
    return keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(64, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="small",
    )


def _model(head, backbone, image_size):
    images = keras.Input((image_size, image_size, 3), dtype="uint8")
    features = _backbone(backbone, image_size)(
        keras.layers.Rescaling(1.0 / 255.0)(images)
    )
    if head == "plain":
        logits = keras.layers.Dense(CLASSES, name="head")(features)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        dims = keras_mrl.nesting.default_nesting_dims(features.shape[-1])
        logits = keras_mrl.layers.MatryoshkaDense(
            CLASSES, nesting_dims=dims, tied=head == "tied", name="head"
        )(features)
        loss = keras_mrl.losses.MatryoshkaLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
    model = keras.Model(images, logits)
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        loss,
        # torch's jit_compile means torch.compile, not XLA: left at default.
        jit_compile=keras.backend.backend() != "torch",
    )
    return model


class _Batches(keras.utils.PyDataset):
    """The same synthetic batch every step, so only the model is timed."""

    def __init__(self, image_size, batch, steps):
        super().__init__()
        rng = np.random.default_rng(0)
        self.batch = (
            rng.integers(0, 256, (batch, image_size, image_size, 3), "uint8"),
            rng.integers(0, CLASSES, (batch,), "int32"),
        )
        self.steps = steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batch


class _EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch; the epoch-end logs wait for the device."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def measure(head, precision, args):
    """Returns images/s of the timed steps of one head and precision."""
    keras.backend.clear_session()
    keras.config.set_dtype_policy(precision)
    try:
        model = _model(head, args.backbone, args.image_size)
        timer = _EpochTimer()
        model.fit(
            _Batches(args.image_size, args.batch, args.steps),
            epochs=2,
            callbacks=[timer],
            verbose=0,
        )
    finally:
        keras.config.set_dtype_policy("float32")
    return args.batch * args.steps / timer.seconds[1]


def _device_name():
    """The accelerator's name, asked the way each backend can."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].device_kind
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.config.experimental.get_device_details(gpus[0]).get(
                "device_name", "GPU"
            )
        return "cpu"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        return "cpu"
    return backend


def overhead(speeds, head):
    """The step-time overhead in percent of `head` over the plain head."""
    return 100.0 * (speeds["plain"] / speeds[head] - 1.0)


def missed_goals(results):
    """Returns one line per (precision, head) whose overhead misses its goal."""
    missed = []
    for precision, speeds in results["images_per_second"].items():
        for head, goal in GOALS.items():
            percent = overhead(speeds, head)
            if percent > goal:
                missed.append(
                    f"{precision} {head}: overhead {percent:+.1f}%, goal <= "
                    f"{goal:.0f}%, missed by {percent - goal:.1f} pt"
                )
    return missed


def report(results):
    """Formats `{precision: {head: images/s}}` as a table with overheads."""
    lines = [
        f"{'precision':<16}{'head':<8}{'images/s':>12}{'step ms':>10}"
        f"{'overhead':>10}  goal"
    ]
    for precision, speeds in results["images_per_second"].items():
        for head, speed in speeds.items():
            step_ms = 1000.0 * results["batch"] / speed
            if head == "plain":
                shown, goal = "", ""
            else:
                percent = overhead(speeds, head)
                met = "met" if percent <= GOALS[head] else "missed"
                shown = f"{percent:+.1f}%"
                goal = f"<= {GOALS[head]:.0f}% ({met})"
            lines.append(
                f"{precision:<16}{head:<8}{speed:>12.1f}{step_ms:>10.1f}"
                f"{shown:>10}  {goal}"
            )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--backbone", choices=("resnet50", "small"), default=None
    )
    parser.add_argument(
        "--precisions",
        default=",".join(PRECISIONS),
        help="comma-separated dtype policies",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="CPU smoke run: 32x32 images, batch 4, 2 steps, small backbone",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when an overhead goal is missed",
    )
    args = parser.parse_args(argv)
    full = {
        "image_size": 224,
        "batch": 256,
        "steps": 50,
        "backbone": "resnet50",
    }
    tiny = {"image_size": 32, "batch": 4, "steps": 2, "backbone": "small"}
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.precisions = [p for p in args.precisions.split(",") if p]
    return args


def main(argv=None):
    args = parse_args(argv)
    results = {
        "backend": keras.backend.backend(),
        "device": _device_name(),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "steps": args.steps,
        "images_per_second": {
            precision: {head: measure(head, precision, args) for head in HEADS}
            for precision in args.precisions
        },
    }
    print(
        f"backend {results['backend']} on {results['device']}: "
        f"{args.backbone} {args.image_size}x{args.image_size}, batch "
        f"{args.batch}, {args.steps} timed steps"
    )
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    missed = missed_goals(results)
    if args.check and missed:
        for line in missed:
            print(f"gpu.py: goal missed: {line}", file=sys.stderr)
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
