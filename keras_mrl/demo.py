"""The main job: the paper's Figure 2 comparison on scikit-learn's digits.

One MLP backbone with a 64-d embedding is trained four ways, and each is
scored by test accuracy at the widths 2, 4, ..., 64:

- `mrl`: one model, an untied `keras_mrl.layers.MatryoshkaDense` head summed
  over
  the widths by a stacked `keras_mrl.losses.MatryoshkaLoss`;
- `mrl_e`: the same with a tied head (MRL-E);
- `ff`: fixed features, one model per width `m` whose embedding is a plain
  `Dense(m)` under a `Dense(10)` classifier;
- `truncated`: the widest FF model's embedding cut to its first `m`
  dimensions and re-probed by a fresh linear classifier.

The truncated probe is scikit-learn's `LogisticRegression`: a convex problem
solved to its optimum, so the baseline is the best any linear probe can do
with those features and not an under-trained classifier.

scikit-learn and matplotlib are imported here only, never by the library.
"""

import dataclasses
import json
import os
import platform
import time

import keras
import numpy as np

import keras_mrl
from keras_mrl._validation import check_bool
from keras_mrl._validation import check_positive_int
from keras_mrl.evaluation import retrieval_metrics

DIMS = (2, 4, 8, 16, 32, 64)
METHODS = ("mrl", "mrl_e", "ff", "truncated")
LABELS = {
    "mrl": "MRL",
    "mrl_e": "MRL-E",
    "ff": "FF",
    "truncated": "FF-64 truncated",
}
NUM_CLASSES = 10
# The split is fixed once, so that no setting is tuned on the test rows.
TEST_SIZE = 0.3
SPLIT_SEED = 0

RETRIEVAL = ("top1", "map@10")
# Train steps per compiled call: fewer round trips to Python per model.
STEPS_PER_EXECUTION = 50


@dataclasses.dataclass(frozen=True)
class Config:
    """Training settings, the same for every method.

    The full run's values were chosen on a validation split carved out of
    the training part (dropout made every method better); the test part was
    not looked at.

    Args:
        epochs: passes over the training set.
        hidden: width of the backbone's two hidden layers.
        dropout: dropout rate after each hidden layer.
        batch_size: examples per step.
        learning_rate: Adam's learning rate.
    """

    epochs: int = 60
    hidden: int = 128
    dropout: float = 0.2
    batch_size: int = 128
    learning_rate: float = 3e-3


FULL = Config()
QUICK = Config(epochs=5)


def load_data():
    """Returns the standardised digits `(x_train, y_train, x_test, y_test)`.

    A stratified 70/30 split with a fixed `random_state`; the scaler is fit
    on the training part only.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype("float32"),
        y_train.astype("int32"),
        scaler.transform(x_test).astype("float32"),
        y_test.astype("int32"),
    )


def _compile_options():
    # The one place the backends differ: XLA and several steps per compiled
    # call exist on tensorflow and jax; torch keeps its defaults (it refuses
    # steps_per_execution > 1).
    if keras.backend.backend() in ("tensorflow", "jax"):
        return {"jit_compile": True, "steps_per_execution": STEPS_PER_EXECUTION}
    return {}


def _build(width, head, config):
    """The shared backbone: two hidden ReLU layers and a linear embedding.

    The embedding is linear so that a width-2 model cannot lose a unit to a
    dead ReLU; every method sees the same backbone.
    """
    inputs = keras.Input((64,))
    x = inputs
    for _ in range(2):
        x = keras.layers.Dense(config.hidden, activation="relu")(x)
        x = keras.layers.Dropout(config.dropout)(x)
    embedding = keras.layers.Dense(width, name="embedding")(x)
    model = keras.Model(inputs, head(embedding))
    encoder = keras.Model(inputs, embedding)
    return model, encoder


def _fit(model, loss, data, config, seed):
    x_train, y_train = data[0], data[1]
    # One pass over `epochs` reshuffled copies of the training set gives the
    # batches of `epochs` shuffled epochs without Keras' per-epoch set-up,
    # which costs more than an epoch of these small models.
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(len(x_train)) for _ in range(config.epochs)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=loss,
        **_compile_options(),
    )
    model.fit(
        x_train[order],
        y_train[order],
        batch_size=config.batch_size,
        shuffle=False,
        verbose=0,
    )


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def train_mrl(data, tied, config, seed):
    """Trains one MRL (or MRL-E) model.

    Returns:
        `(accuracy per width, train embeddings, test embeddings)`.
    """
    keras.utils.set_random_seed(seed)
    head = keras_mrl.layers.MatryoshkaDense(
        NUM_CLASSES, nesting_dims=DIMS, tied=tied
    )
    model, encoder = _build(DIMS[-1], head, config)
    loss = keras_mrl.losses.MatryoshkaLoss(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    _fit(model, loss, data, config, seed)
    logits = _predict(model, data[2])  # (N, G, classes)
    accuracy = (logits.argmax(-1) == data[3][:, None]).mean(0)
    return accuracy, _predict(encoder, data[0]), _predict(encoder, data[2])


def train_ff(data, width, config, seed):
    """Trains one fixed-feature model with a `width`-d embedding.

    Returns:
        `(accuracy, train embeddings, test embeddings)`.
    """
    keras.utils.set_random_seed(seed)
    model, encoder = _build(width, keras.layers.Dense(NUM_CLASSES), config)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _fit(model, loss, data, config, seed)
    logits = _predict(model, data[2])
    accuracy = float((logits.argmax(-1) == data[3]).mean())
    return accuracy, _predict(encoder, data[0]), _predict(encoder, data[2])


def probe_truncated(train_embeddings, y_train, test_embeddings, y_test):
    """Re-probes the first `m` dimensions of an embedding for every width."""
    from sklearn.linear_model import LogisticRegression

    accuracy = []
    for m in DIMS:
        probe = LogisticRegression(max_iter=2000)
        probe.fit(train_embeddings[:, :m], y_train)
        accuracy.append(probe.score(test_embeddings[:, :m], y_test))
    return np.array(accuracy)


def _retrieval(embeddings, y_train, y_test, dims):
    """1-NN accuracy and mAP@10 of test queries against the train corpus."""
    train_embeddings, test_embeddings = embeddings
    scores = retrieval_metrics(
        test_embeddings,
        query_labels=y_test,
        corpus_embeddings=train_embeddings,
        corpus_labels=y_train,
        nesting_dims=dims,
        k=10,
    )
    return {key: [float(scores[m][key]) for m in dims] for key in RETRIEVAL}


def _fmt(accuracy):
    return " ".join(f"{100 * a:5.1f}" for a in np.atleast_1d(accuracy))


def _run_seed(data, config, seed, tag, log):
    """Trains every method once; returns `(accuracy, retrieval)` dicts."""
    x_train, y_train, _, y_test = data
    accuracy, embeddings = {}, {}
    for name, tied in (("mrl", False), ("mrl_e", True)):
        t0 = time.perf_counter()
        acc, emb_train, emb_test = train_mrl(data, tied, config, seed)
        accuracy[name], embeddings[name] = acc, (emb_train, emb_test)
        log(
            f"{tag}  {LABELS[name]:<6} acc% @ {list(DIMS)}: {_fmt(acc)}"
            f"  ({time.perf_counter() - t0:.1f} s)"
        )
    accuracy["ff"] = []
    for m in DIMS:
        t0 = time.perf_counter()
        acc, emb_train, emb_test = train_ff(data, m, config, seed)
        accuracy["ff"].append(acc)
        embeddings[f"ff-{m}"] = (emb_train, emb_test)
        log(
            f"{tag}  FF-{m:<3}  acc%: {_fmt(acc)}"
            f"  ({time.perf_counter() - t0:.1f} s)"
        )
    widest = embeddings[f"ff-{DIMS[-1]}"]
    t0 = time.perf_counter()
    accuracy["truncated"] = probe_truncated(
        widest[0], y_train, widest[1], y_test
    )
    log(
        f"{tag}  FF-{DIMS[-1]} truncated, linear probes, acc%: "
        f"{_fmt(accuracy['truncated'])}  ({time.perf_counter() - t0:.1f} s)"
    )
    per_width_ff = [
        _retrieval(embeddings[f"ff-{m}"], y_train, y_test, [m]) for m in DIMS
    ]
    retrieval = {
        "mrl": _retrieval(embeddings["mrl"], y_train, y_test, DIMS),
        "ff": {key: [r[key][0] for r in per_width_ff] for key in RETRIEVAL},
        "truncated": _retrieval(widest, y_train, y_test, DIMS),
    }
    return accuracy, retrieval


def run(out_dir, *, seeds=None, quick=False, log=print):
    """Trains every method, writes `results.json` and `accuracy.png`.

    Args:
        out_dir: an existing, writable directory.
        seeds: int >= 1, the number of seeds to average; None for 2, or 1
            with `quick=True`.
        quick: bool, few epochs and one seed, for smoke tests.
        log: a function that prints one progress line.

    Returns:
        The results dict that was written to `results.json`.

    Raises:
        TypeError: when `seeds` is not an int or `quick` not a bool.
        ValueError: when `seeds` is below 1, or not 1 with `quick=True`.
    """
    quick = check_bool(quick, "quick")
    if seeds is None:
        seeds = 1 if quick else 2
    seeds = check_positive_int(seeds, "seeds")
    if quick and seeds != 1:
        raise ValueError(
            f"`quick=True` runs one seed, got seeds={seeds}. Pass seeds=1 "
            "with quick=True, or quick=False to average several seeds."
        )
    start, cpu_start = time.perf_counter(), time.process_time()
    config = QUICK if quick else FULL
    data = load_data()
    runs = [
        _run_seed(data, config, s, f"seed {s + 1}/{seeds}", log)
        for s in range(seeds)
    ]
    accuracy = {
        name: np.array([acc[name] for acc, _ in runs]) for name in METHODS
    }
    results = {
        "dataset": "sklearn digits (1797 8x8 images, 10 classes), stratified "
        f"{round(100 * (1 - TEST_SIZE))}/{round(100 * TEST_SIZE)} split, "
        f"random_state={SPLIT_SEED}",
        "dims": list(DIMS),
        "seeds": seeds,
        "config": dataclasses.asdict(config),
        "accuracy": {k: v.mean(0).tolist() for k, v in accuracy.items()},
        "accuracy_per_seed": {k: v.tolist() for k, v in accuracy.items()},
    }
    results["retrieval"] = {
        method: {
            key: np.mean([r[method][key] for _, r in runs], 0).tolist()
            for key in RETRIEVAL
        }
        for method in runs[0][1]
    }
    results["seconds"] = time.perf_counter() - start
    # CPU time of all threads: what the run costs on an idle machine, when
    # the wall time is inflated by other processes sharing the cores.
    results["cpu_seconds"] = time.process_time() - cpu_start
    results["versions"] = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "numpy": np.__version__,
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot(results, os.path.join(out_dir, "accuracy.png"))
    return results


def format_table(results):
    """Returns the accuracy table: one row per method, one column per width."""
    lines = [
        f"{'test accuracy %':<16}" + "".join(f"{m:>7}" for m in results["dims"])
    ]
    for name in METHODS:
        lines.append(
            f"{LABELS[name]:<16}"
            + "".join(f"{100 * a:7.1f}" for a in results["accuracy"][name])
        )
    return "\n".join(lines)


def format_retrieval(results):
    """Returns the retrieval table, or None when it was not measured."""
    if "retrieval" not in results:
        return None
    lines = []
    for key, title in (("top1", "1-NN accuracy %"), ("map@10", "mAP@10 %")):
        lines.append(
            f"{title:<16}" + "".join(f"{m:>7}" for m in results["dims"])
        )
        for method, scores in results["retrieval"].items():
            lines.append(
                f"{LABELS[method]:<16}"
                + "".join(f"{100 * a:7.1f}" for a in scores[key])
            )
    return "\n".join(lines)


def plot(results, path):
    """Draws accuracy against width on a log-2 axis, as the paper's Figure 2."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    styles = {"mrl": "o-", "mrl_e": "s--", "ff": "^-", "truncated": "v:"}
    for name in METHODS:
        axes.plot(
            results["dims"],
            100 * np.array(results["accuracy"][name]),
            styles[name],
            label=LABELS[name],
        )
    axes.set_xscale("log", base=2)
    axes.set_xticks(results["dims"], [str(m) for m in results["dims"]])
    axes.set_xlabel("representation size (dims)")
    axes.set_ylabel("test accuracy (%)")
    seeds = results["seeds"]
    axes.set_title(f"digits, mean of {seeds} seed{'s' if seeds > 1 else ''}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
