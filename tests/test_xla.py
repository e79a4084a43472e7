"""TPU readiness: the train step lowers to XLA and traces once per shape.

A TPU runs only what XLA compiles: shapes must be static, nothing may call
back into Python on the host, and a step retraced every batch would be
compiled every batch. Checked here on CPU for the two XLA backends, through
the Keras trainer's own train step, for a classifier (both heads, stacked
losses, per-step width sampling, a metric, a prefix-mode loss) and an
embedding model (the in-batch contrastive losses in prefix mode). Width
sampling draws from a `keras.random.SeedGenerator`, whose state the step
carries: it must lower to XLA's own random bits, not to a host call.
"""

import re

import keras
import numpy as np
import pytest
from _trace_counter import TraceCounter

import keras_mrl
from keras_mrl.losses._multiple_negatives_ranking_loss import (
    MultipleNegativesRankingLoss,
)
from keras_mrl.losses._supervised_contrastive_loss import (
    SupervisedContrastiveLoss,
)

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(
    BACKEND not in ("tensorflow", "jax"),
    reason="XLA lowering concerns the TF and JAX backends; torch runs "
    "eagerly by default",
)
DIMS = [4, 8, 16]
BATCH = 16


def _classifier():
    inputs = keras.Input((12,))
    embedding = keras.layers.Dense(16, activation="tanh")(inputs)
    embedding = TraceCounter(name="counter")(embedding)
    tied = keras_mrl.layers.MatryoshkaDense(
        6, nesting_dims=DIMS, tied=True, name="tied_head"
    )(embedding)
    outputs = {
        "head": keras_mrl.layers.MatryoshkaDense(
            6, nesting_dims=DIMS, name="head"
        )(embedding),
        "tied": keras_mrl.layers.WidthSampling(2, seed=0, name="tied")(tied),
        "embedding": keras.layers.Identity(name="embedding")(embedding),
    }
    model = keras.Model(inputs, outputs)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        keras.optimizers.Adam(0.01),
        {
            "head": keras_mrl.losses.MatryoshkaLoss(ce),
            "tied": keras_mrl.losses.MatryoshkaLoss(
                ce, weights=[1.0, 1.0, 1.0]
            ),
            "embedding": keras_mrl.losses.MatryoshkaLoss(
                keras.losses.MeanSquaredError(), nesting_dims=DIMS
            ),
        },
        metrics={
            "head": [
                keras_mrl.metrics.MatryoshkaMetric(
                    keras.metrics.SparseCategoricalAccuracy(name="acc"),
                    head_nesting_dims=DIMS,
                )
            ]
        },
        jit_compile=True,
    )
    return model


def _classifier_data(n):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12)).astype("float32")
    labels = rng.integers(0, 6, size=(n,)).astype("int32")
    teacher = rng.normal(size=(n, 16)).astype("float32")
    return x, {"head": labels, "tied": labels, "embedding": teacher}


def _embedder():
    inputs = keras.Input((2, 12))
    pairs = keras.layers.Dense(16)(inputs)
    pairs = TraceCounter(name="counter")(pairs)
    anchors = keras.layers.Lambda(lambda p: p[:, 0, :], name="anchors")(pairs)
    model = keras.Model(inputs, {"pairs": pairs, "anchors": anchors})
    model.compile(
        keras.optimizers.Adam(0.01),
        {
            "pairs": keras_mrl.losses.MatryoshkaLoss(
                MultipleNegativesRankingLoss(), nesting_dims=DIMS
            ),
            "anchors": keras_mrl.losses.MatryoshkaLoss(
                SupervisedContrastiveLoss(), nesting_dims=DIMS
            ),
        },
        jit_compile=True,
    )
    return model


def _embedder_data(n):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 2, 12)).astype("float32")
    labels = (np.arange(n) % 4).astype("int32")
    return x, {"pairs": np.zeros(n, "float32"), "anchors": labels}


MODELS = {
    "classifier": (_classifier, _classifier_data),
    "embedder": (_embedder, _embedder_data),
}


def _batch(data):
    x, y = data
    return x[:BATCH], {k: v[:BATCH] for k, v in y.items()}


# --- host callbacks -------------------------------------------------------

# What sends work to the host: Python callbacks (a custom call named after
# them), host transfers, and the send/recv/in/outfeed of a TPU program.
_HOST_TARGET = re.compile(r"callback|host|python|py_func", re.IGNORECASE)
_HOST_OP = re.compile(r"\b(send|recv|infeed|outfeed)(-done)?\(")


def _host_calls(hlo):
    """The host calls of an HLO or StableHLO module's text."""
    targets = re.findall(r'custom_call_target="([^"]+)"', hlo)
    targets += re.findall(r"custom_call\s*@([\w.]+)", hlo)
    calls = [t for t in targets if _HOST_TARGET.search(t)]
    return calls + [m.group(0) for m in _HOST_OP.finditer(hlo)]


def _jax_train_step_hlo(model, data):
    """StableHLO and compiled HLO of the Keras trainer's own train step."""
    import jax

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    lowered = jax.jit(model.train_step).lower(state, data)
    return lowered.as_text(), lowered.compile().as_text()


def _tf_train_step_hlo(model, data):
    """HLO of the Keras train step compiled with `jit_compile=True`."""
    import tensorflow as tf

    step = tf.function(model.train_step, jit_compile=True)
    data = tf.nest.map_structure(tf.constant, data)
    return step.experimental_get_compiler_ir(data)(stage="hlo")


@pytest.mark.skipif(BACKEND != "jax", reason="builds a JAX callback")
def test_host_call_detector_sees_a_python_callback():
    import jax

    def with_callback(x):
        shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return jax.pure_callback(lambda v: np.asarray(v) * 2, shape, x) + 1

    lowered = jax.jit(with_callback).lower(np.ones(3, "float32"))
    assert _host_calls(lowered.as_text())
    assert _host_calls(lowered.compile().as_text())


# --- the train step -----------------------------------------------------


class _EpochTraces(keras.callbacks.Callback):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.after_epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch.append(self.counter.traces)


# XLA's random bits: JAX's threefry, TensorFlow's stateless Philox.
_RANDOM_BITS = re.compile(r"threefry|rng-bit-generator")


def _assert_lowers_without_host_calls(model, data, samples_widths):
    if BACKEND == "jax":
        stablehlo, hlo = _jax_train_step_hlo(model, data)
        # Every tensor type is static: no "?" dimension.
        assert not re.search(r"tensor<[^>]*\?", stablehlo)
        assert _host_calls(stablehlo) == []
        text = stablehlo + hlo
    else:
        hlo = _tf_train_step_hlo(model, data)
        # Bounded dynamic dimensions print as "<=N".
        assert not re.search(r"\[[^\]]*<=", hlo)
        text = hlo
    assert "ENTRY" in hlo
    assert _host_calls(hlo) == []
    # WidthSampling's draw is compiled into the step, on the device.
    assert bool(_RANDOM_BITS.search(text)) == samples_widths


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_train_step_is_xla_ready(kind):
    """Traces once per batch shape, and lowers with static shapes and no
    host calls (one model per kind, as each compile takes seconds)."""
    make_model, make_data = MODELS[kind]
    model = make_model()
    counter = model.get_layer("counter")
    x, y = make_data(4 * BATCH)
    before = counter.traces
    traces = _EpochTraces(counter)
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=2,
        validation_data=(x, y),
        callbacks=[traces],
        verbose=0,
    )
    first, second = traces.after_epoch
    assert first > before  # the counter sees the traces of epoch 1
    assert second == first  # and epoch 2 adds none

    # A last batch of another size is another shape, traced once more
    # (why TPU input pipelines use drop_remainder=True), then reused.
    x, y = make_data(4 * BATCH + BATCH // 2)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    partial = counter.traces
    assert partial > second
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert counter.traces == partial

    # The Keras trainer's own step, with the optimizer and metric
    # variables that training built.
    _assert_lowers_without_host_calls(
        model, _batch((x, y)), samples_widths=kind == "classifier"
    )
