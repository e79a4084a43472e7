"""ContrastiveModel(mini_batch_size=...): cached in-batch negatives.

A cached step must give the gradient of the uncached step on the same batch
(with dropout, of an uncached step that embeds the same mini-batches with
the same seeds, in order). Each check trains one step with SGD and a large
learning rate, so that the weights' change is the gradient times it, well
above the rounding of the weights.
"""

import os
import sys

import keras
import numpy as np
import pytest
from conftest import jit_compile

from keras_mrl.layers import OrthogonalProjection
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.models import ContrastiveModel

LEARNING_RATE = 1000.0
FEATURES = 6
BATCH = 12
BACKEND = keras.backend.backend()
WORKERS = os.path.join(os.path.dirname(__file__), "distributed")
TIMEOUT = 300

# The workers import each other by name, as scripts in one folder do.
sys.path.insert(0, WORKERS)
import launch  # noqa: E402
import negatives  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def devices_worker(tmp_path_factory):
    """Starts this backend's two-device worker before any test, so that it
    trains while the tests of this process run; `.wait` for its results."""
    script = {"tensorflow": "tf_negatives.py", "jax": "jax_negatives.py"}
    if BACKEND not in script:
        yield None
        return
    out = tmp_path_factory.mktemp("negatives") / "results.npz"
    flags = {"jax": {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}}
    env = launch.worker_env(BACKEND, **flags.get(BACKEND, {}))
    with launch.Workers([([script[BACKEND], str(out)], env)]) as workers:

        def wait():
            workers.wait(TIMEOUT)
            return negatives.load(out)

        yield wait


def _loss():
    return MatryoshkaLoss(
        MultipleNegativesRankingLoss(),
        nesting_dims=[2, 4, 8],
        weights=[1.0, 2.0, 0.5],
    )


def _encoder(dropout=0.0, **dense_kwargs):
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(16, activation="tanh", **dense_kwargs),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(8),
        ]
    )


def _model(mini_batch_size, *, model_class=ContrastiveModel, dropout=0.0):
    """The same initial weights and seeds for every call."""
    keras.utils.set_random_seed(0)
    model = model_class(
        _encoder(dropout),
        head=OrthogonalProjection(keep_orthogonal=False),
        mini_batch_size=mini_batch_size,
    )
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss=_loss())
    return model


def _branches(rows=BATCH, seed=0):
    """(anchor, positive, hard negative) feature batches."""
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(rows, FEATURES)).astype("float32")
    positives = anchors + 0.3 * rng.normal(size=anchors.shape)
    negatives = rng.normal(size=anchors.shape)
    return anchors, positives.astype("float32"), negatives.astype("float32")


def _one_step(model, x):
    """The gradient of one step on the batch `x`, and the loss logged."""
    before = [np.array(w) for w in model.get_weights()]
    history = model.fit(
        x, batch_size=len(x[0]), epochs=1, shuffle=False, verbose=0
    )
    after = model.get_weights()
    gradients = [(b - a) / LEARNING_RATE for b, a in zip(before, after)]
    return gradients, history.history["loss"][0]


def _assert_same_gradients(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        largest = np.abs(e).max()
        assert largest > 1e-4  # every weight is trained
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6 * largest)


@pytest.fixture(scope="module")
def uncached():
    return _one_step(_model(None), _branches())


@pytest.mark.parametrize(
    "mini_batch_size",
    [
        pytest.param(4, id="3_mini_batches"),
        pytest.param(5, id="not_dividing_the_batch"),
        pytest.param(64, id="larger_than_the_batch"),
    ],
)
def test_cached_step_equals_the_uncached_step(uncached, mini_batch_size):
    gradients, loss = _one_step(_model(mini_batch_size), _branches())
    expected_gradients, expected_loss = uncached
    _assert_same_gradients(gradients, expected_gradients)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)


class SequentialMiniBatches(ContrastiveModel):
    """Uncached: embeds the mini-batches of a batch one after the other
    with gradients, as the cached step's second embedding does."""

    def __init__(self, *args, chunk, rows, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk = chunk
        self.rows = rows

    def call(self, inputs, training=None):
        if not training:  # the symbolic build
            return super().call(inputs, training=training)
        parts = []
        for start in range(0, self.rows, self.chunk):
            part = keras.tree.map_structure(
                lambda t, s=start: t[s : s + self.chunk], list(inputs)
            )
            parts.append(super().call(part, training=training))
        return keras.ops.concatenate(parts, axis=0)


def _seed_states(model):
    weights = {id(w) for w in model.weights}
    return [np.array(v) for v in model.variables if id(v) not in weights]


def test_dropout_reuses_each_mini_batch_seed(uncached):
    # The dropout layer is unseeded, as KerasHub's are: on torch it draws
    # from torch's global generator, elsewhere from its SeedGenerator.
    x = _branches()
    cached = _model(4, dropout=0.5)
    gradients, loss = _one_step(cached, x)

    chunked = _model(
        None,
        dropout=0.5,
        model_class=lambda *a, **k: SequentialMiniBatches(
            *a, chunk=4, rows=BATCH, **k
        ),
    )
    expected, expected_loss = _one_step(chunked, x)
    _assert_same_gradients(gradients, expected)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    # The generators advanced as through the successive calls.
    for state, expected_state in zip(
        _seed_states(cached), _seed_states(chunked)
    ):
        np.testing.assert_array_equal(state, expected_state)
    # Dropout is on: the gradient is not the one without it.
    assert not np.allclose(gradients[0], uncached[0][0], rtol=1e-2)


def test_fit_over_batches_of_every_size_then_save_and_reload(tmp_path):
    # 10 rows in batches of 4: the last batch, of 2, is one mini-batch.
    x = _branches(rows=10)
    model = _model(3)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=_loss(),
        jit_compile=jit_compile(),
    )
    model.fit(x, batch_size=4, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "cached.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.mini_batch_size == 3
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    # The reloaded model goes on training as the original does (one batch:
    # each batch shape is one more compile of the cached step).
    batch = tuple(branch[:4] for branch in x)
    for m in (model, loaded):
        m.fit(batch, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    model = ContrastiveModel(_encoder(), mini_batch_size=7)
    config = model.get_config()
    assert config["mini_batch_size"] == 7
    again = ContrastiveModel.from_config(config)
    assert again.mini_batch_size == 7
    assert ContrastiveModel(_encoder()).get_config()["mini_batch_size"] is None


@pytest.mark.parametrize(
    "value, error, match",
    [
        (0, ValueError, "positive int, got mini_batch_size=0"),
        (-4, ValueError, "positive int, got mini_batch_size=-4"),
        (2.0, TypeError, "`mini_batch_size` must be an int, got 2.0"),
        ("8", TypeError, "must be an int, got '8'"),
        (True, TypeError, "must be an int, got True"),
    ],
)
def test_bad_mini_batch_size_raises(value, error, match):
    with pytest.raises(error, match=match):
        ContrastiveModel(_encoder(), mini_batch_size=value)


def test_mini_batch_size_is_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        ContrastiveModel(_encoder(), None, 8)


def _fit_cached(encoder):
    model = ContrastiveModel(encoder, mini_batch_size=4)
    model.compile(optimizer="sgd", loss=_loss(), jit_compile=False)
    model.fit(_branches(), batch_size=BATCH, verbose=0)


def _with_layer(layer):
    return keras.Sequential(
        [keras.Input((FEATURES,)), layer, keras.layers.Dense(8)]
    )


def test_weight_regularizer_raises():
    with pytest.raises(ValueError, match="regularizer.*weight_decay"):
        _fit_cached(_encoder(kernel_regularizer="l2"))


def test_activity_regularizer_raises():
    dense = keras.layers.Dense(8, activity_regularizer="l2")
    with pytest.raises(ValueError, match="adds losses while it embeds"):
        _fit_cached(_with_layer(dense))


def test_batch_normalization_raises():
    with pytest.raises(ValueError, match="moving_mean.*BatchNormalization"):
        _fit_cached(_with_layer(keras.layers.BatchNormalization()))


# --- Negatives from every device ------------------------------------------


def _assert_same_step(actual, expected):
    np.testing.assert_allclose(actual["loss"], expected["loss"], rtol=1e-5)
    gradients = sorted(k for k in expected if k.startswith("gradient"))
    assert gradients and sorted(k for k in actual if k != "loss") == gradients
    for key in gradients:
        largest = np.abs(expected[key]).max()
        assert largest > 1e-4
        np.testing.assert_allclose(
            actual[key], expected[key], rtol=1e-5, atol=1e-6 * largest
        )


def _halves(results):
    """The step of two devices that each see their own half only."""
    halves = results["half_0"], results["half_1"]
    return {k: (halves[0][k] + halves[1][k]) / 2 for k in halves[0]}


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute")
def test_mirrored_gather_across_replicas_equals_one_device(devices_worker):
    r = devices_worker()
    for tag in ("forward", "symmetric"):
        _assert_same_step(r[f"mirrored_gathered_{tag}"], r[f"one_device_{tag}"])
    _assert_same_step(
        r["mirrored_gathered_cached_symmetric"], r["one_device_symmetric"]
    )
    # Without the option each replica scores against its own half.
    _assert_same_step(r["mirrored_local_symmetric"], _halves(r))
    assert not np.isclose(
        r["mirrored_local_symmetric"]["loss"], r["one_device_symmetric"]["loss"]
    )


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution on JAX")
def test_jax_data_parallel_negatives_are_global(devices_worker):
    r = devices_worker()
    _assert_same_step(r["data_parallel"], r["one_device"])
    _assert_same_step(r["cached"], r["one_device"])
    assert not np.isclose(r["data_parallel"]["loss"], _halves(r)["loss"])


def test_gather_across_replicas_on_one_device_changes_nothing():
    y_pred = np.stack(_branches(), axis=1)
    for symmetric in (False, True):
        plain = MultipleNegativesRankingLoss(symmetric=symmetric)
        gathered = MultipleNegativesRankingLoss(
            symmetric=symmetric, gather_across_replicas=True
        )
        assert float(gathered(None, y_pred)) == float(plain(None, y_pred))


def test_gather_across_replicas_config_and_errors():
    loss = MultipleNegativesRankingLoss(gather_across_replicas=True)
    config = loss.get_config()
    assert config["gather_across_replicas"] is True
    again = MultipleNegativesRankingLoss.from_config(config)
    assert again.gather_across_replicas is True
    with pytest.raises(TypeError, match="gather_across_replicas"):
        MultipleNegativesRankingLoss(gather_across_replicas="yes")
    with pytest.raises(ValueError, match="do not compose"):
        MultipleNegativesRankingLoss(
            guide_margin=0.0, gather_across_replicas=True
        )
