import keras
import numpy as np
import pytest
from component_test import run_layer_test
from keras import ops

import keras_mrl

DIMS = [2, 4, 8, 16]


def _numpy_reference(layer, x):
    """The paper's head: granularity g = x[:, :m_g] @ W_g + b_g."""
    outputs = []
    for g, m in enumerate(layer.nesting_dims):
        if layer.tied:
            kernel = ops.convert_to_numpy(layer.kernel)[:m]
            bias = ops.convert_to_numpy(layer.bias)
        else:
            kernel = ops.convert_to_numpy(layer.kernels[g])
            bias = ops.convert_to_numpy(layer.biases[g])
        outputs.append(x[:, :m] @ kernel + bias)
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("tied", [False, True])
def test_component(rng, tied):
    run_layer_test(
        keras_mrl.layers.MatryoshkaDense,
        {"units": 3, "nesting_dims": [4, 8], "tied": tied},
        rng.normal(size=(4, 8)).astype("float32"),
        (4, 2, 3),
    )


@pytest.mark.parametrize("tied", [False, True])
def test_matches_numpy_reference(rng, tied):
    layer = keras_mrl.layers.MatryoshkaDense(
        5, nesting_dims=DIMS, tied=tied, bias_initializer="random_normal"
    )
    x = rng.normal(size=(7, 16)).astype("float32")
    out = ops.convert_to_numpy(layer(x))
    assert out.shape == (7, 4, 5)
    np.testing.assert_allclose(out, _numpy_reference(layer, x), atol=1e-5)


@pytest.mark.parametrize("tied", [False, True])
def test_granularity_reads_only_its_prefix(rng, tied):
    layer = keras_mrl.layers.MatryoshkaDense(3, nesting_dims=DIMS, tied=tied)
    x = rng.normal(size=(4, 16)).astype("float32")
    changed = x.copy()
    changed[:, 8:] += 10.0
    a = ops.convert_to_numpy(layer(x))
    b = ops.convert_to_numpy(layer(changed))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert np.abs(a[:, 3] - b[:, 3]).max() > 1e-3


def test_variables_untied_and_tied():
    untied = keras_mrl.layers.MatryoshkaDense(5, nesting_dims=DIMS)
    untied.build((None, 16))
    assert [tuple(k.shape) for k in untied.kernels] == [(m, 5) for m in DIMS]
    assert len(untied.trainable_weights) == 2 * len(DIMS)
    tied = keras_mrl.layers.MatryoshkaDense(5, nesting_dims=DIMS, tied=True)
    tied.build((None, 16))
    # One variable per block of rows, and one bias: 16 rows in all.
    blocks = [(0, 2), (2, 4), (4, 8), (8, 16)]
    assert [w.name for w in tied.kernel_blocks] == [
        f"kernel_{a}_{b}" for a, b in blocks
    ]
    assert [tuple(w.shape) for w in tied.trainable_weights] == [
        (b - a, 5) for a, b in blocks
    ] + [(5,)]
    np.testing.assert_array_equal(
        ops.convert_to_numpy(tied.kernel),
        np.concatenate([ops.convert_to_numpy(w) for w in tied.kernel_blocks]),
    )
    # (torch's Module.__getattr__ replaces the message that names `kernels`.)
    with pytest.raises(AttributeError, match="kernel"):
        untied.kernel


def test_default_nesting_dims_and_narrower_widths(rng):
    layer = keras_mrl.layers.MatryoshkaDense(3)
    assert layer.nesting_dims is None
    assert layer.get_config()["nesting_dims"] is None
    layer(rng.normal(size=(2, 64)).astype("float32"))
    # After build the attribute and the config hold the widths in use.
    assert layer.nesting_dims == [8, 16, 32, 64]
    assert layer.get_config()["nesting_dims"] == [8, 16, 32, 64]
    # Widths may end below the input width: the extra features are unused.
    head = keras_mrl.layers.MatryoshkaDense(3, nesting_dims=[4, 8], tied=True)
    assert tuple(head(np.ones((2, 32), "float32")).shape) == (2, 2, 3)
    assert tuple(head.kernel.shape) == (8, 3)


def test_higher_rank_inputs_and_activation(rng):
    layer = keras_mrl.layers.MatryoshkaDense(
        3, nesting_dims=[4, 8], activation="relu"
    )
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    out = ops.convert_to_numpy(layer(x))
    assert out.shape == (2, 5, 2, 3)
    assert out.min() >= 0.0
    assert layer.compute_output_shape((None, 5, 8)) == (None, 5, 2, 3)


@pytest.mark.parametrize("tied", [False, True])
def test_export_reproduces_granularity(rng, tied):
    layer = keras_mrl.layers.MatryoshkaDense(
        5, nesting_dims=DIMS, tied=tied, bias_initializer="random_normal"
    )
    x = rng.normal(size=(6, 16)).astype("float32")
    full = ops.convert_to_numpy(layer(x))
    for g, m in enumerate(DIMS):
        dense = layer.export(m)
        assert isinstance(dense, keras.layers.Dense)
        assert tuple(dense.kernel.shape) == (m, 5)
        out = ops.convert_to_numpy(dense(x[:, :m]))
        np.testing.assert_allclose(out, full[:, g], atol=1e-5)


def test_tied_export_serves_widths_between_trained_ones(rng):
    layer = keras_mrl.layers.MatryoshkaDense(4, nesting_dims=DIMS, tied=True)
    x = rng.normal(size=(3, 16)).astype("float32")
    layer(x)
    kernel = ops.convert_to_numpy(layer.kernel)
    for dim in (1, 5, 11):
        out = ops.convert_to_numpy(layer.export(dim)(x[:, :dim]))
        expected = x[:, :dim] @ kernel[:dim] + ops.convert_to_numpy(layer.bias)
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_export_errors():
    untied = keras_mrl.layers.MatryoshkaDense(4, nesting_dims=DIMS)
    with pytest.raises(ValueError, match="built"):
        untied.export(4)
    untied.build((None, 16))
    with pytest.raises(ValueError, match=r"\[2, 4, 8, 16\], got dim=5"):
        untied.export(5)
    tied = keras_mrl.layers.MatryoshkaDense(4, nesting_dims=DIMS, tied=True)
    tied.build((None, 16))
    with pytest.raises(ValueError, match="dim=17"):
        tied.export(17)
    with pytest.raises(ValueError, match="dim=0"):
        tied.export(0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(units=0), ValueError, "units"),
        (dict(units=3, nesting_dims=[8, 4]), ValueError, "increasing"),
        (dict(units=3, nesting_dims=[0, 4]), ValueError, "positive"),
    ],
)
def test_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_mrl.layers.MatryoshkaDense(**kwargs)


def test_config_after_build_keeps_the_widths_as_passed():
    layer = keras_mrl.layers.MatryoshkaDense(3, nesting_dims=(4, 8))
    before = layer.get_config()
    layer.build((None, 16))
    assert layer.get_config() == before
    assert before["nesting_dims"] == [4, 8] and layer.nesting_dims == [4, 8]


def test_positional_nesting_dims_raise():
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        keras_mrl.layers.MatryoshkaDense(10, [8, 16])


@pytest.mark.parametrize("name, value", [("tied", "no"), ("use_bias", 1)])
def test_bool_arguments_take_bools_only(name, value):
    with pytest.raises(
        TypeError,
        match=rf"`{name}` must be True or False, "
        rf"got {value!r}",
    ):
        keras_mrl.layers.MatryoshkaDense(3, **{name: value})


def test_build_error_for_widths_wider_than_input():
    layer = keras_mrl.layers.MatryoshkaDense(3, nesting_dims=[8, 32])
    with pytest.raises(ValueError, match="32.*wider.*16"):
        layer.build((None, 16))


def test_config_round_trip():
    layer = keras_mrl.layers.MatryoshkaDense(
        7,
        nesting_dims=DIMS,
        tied=True,
        activation="softmax",
        use_bias=False,
        kernel_regularizer="l2",
        name="head",
    )
    config = layer.get_config()
    clone = keras_mrl.layers.MatryoshkaDense.from_config(config)
    assert clone.get_config() == config
    assert clone.tied and clone.units == 7 and clone.nesting_dims == DIMS
    assert not clone.use_bias


def _classifier(tied, dims=DIMS, classes=4):
    inputs = keras.Input((16,))
    features = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras_mrl.layers.MatryoshkaDense(
        classes, nesting_dims=dims, tied=tied, name="head"
    )(features)
    return keras.Model(inputs, outputs)


def _compile(model, jit):
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras_mrl.losses.MatryoshkaLoss(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        ),
        jit_compile=jit,
    )
    return model


@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="torch has no XLA path"
)
@pytest.mark.parametrize("tied", [False, True])
def test_jit_and_eager_training_agree(rng, tied):
    x = rng.normal(size=(16, 16)).astype("float32")
    y = rng.integers(0, 4, size=16)
    results = []
    for jit in (True, False):
        keras.utils.set_random_seed(1)
        model = _compile(_classifier(tied), jit=jit)
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        results.append((history.history["loss"], model.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("tied", [False, True])
def test_mixed_bfloat16_dtypes(rng, tied):
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = keras_mrl.layers.MatryoshkaDense(5, nesting_dims=DIMS, tied=tied)
    out = layer(rng.normal(size=(3, 16)).astype("float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert all(w.dtype == "float32" for w in layer.weights)
    assert layer.export(4).compute_dtype == "bfloat16"


def _max_overlap_correlation(weights):
    """Largest |correlation| between any two weights on their common rows."""
    weights = [ops.convert_to_numpy(w) for w in weights]
    largest = 0.0
    for i, a in enumerate(weights):
        for b in weights[i + 1 :]:
            rows = min(len(a), len(b))
            corr = np.corrcoef(a[:rows].ravel(), b[:rows].ravel())[0, 1]
            largest = max(largest, abs(corr))
    return largest


@pytest.mark.parametrize("tied", [False, True])
def test_no_two_initial_kernels_are_equal_or_proportional(tied):
    head = keras_mrl.layers.MatryoshkaDense(100, tied=tied)
    head.build((None, 2048))
    weights = head.kernel_blocks if tied else head.kernels
    assert len(weights) == 9
    assert _max_overlap_correlation(weights) < 0.5


def test_untied_random_biases_are_independent_draws():
    head = keras_mrl.layers.MatryoshkaDense(
        100, nesting_dims=[8, 16, 32], bias_initializer="random_normal"
    )
    head.build((None, 32))
    assert _max_overlap_correlation(head.biases) < 0.5


def test_tied_kernel_starts_with_the_statistics_of_a_dense_kernel():
    head = keras_mrl.layers.MatryoshkaDense(100, tied=True)
    head.build((None, 2048))
    dense = keras.layers.Dense(100)
    dense.build((None, 2048))
    kernel = ops.convert_to_numpy(head.kernel)
    reference = ops.convert_to_numpy(dense.kernel)
    # Glorot uniform over (2048, 100) has std sqrt(2 / (2048 + 100)); the
    # sample std of 204,800 draws is within 0.2% of it.
    assert abs(kernel.mean()) < 1e-3
    np.testing.assert_allclose(kernel.std(), reference.std(), rtol=0.01)
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / 2148), rtol=0.01)


def test_seeded_tied_head_starts_as_a_seeded_dense_split():
    head = keras_mrl.layers.MatryoshkaDense(
        7,
        nesting_dims=[2, 4, 8, 16],
        tied=True,
        kernel_initializer=keras.initializers.GlorotUniform(seed=3),
        bias_initializer=keras.initializers.RandomNormal(seed=4),
    )
    head.build((None, 16))
    dense = keras.layers.Dense(
        7,
        kernel_initializer=keras.initializers.GlorotUniform(seed=3),
        bias_initializer=keras.initializers.RandomNormal(seed=4),
    )
    dense.build((None, 16))
    expected = ops.convert_to_numpy(dense.kernel)
    for (start, end), block in zip(
        [(0, 2), (2, 4), (4, 8), (8, 16)], head.kernel_blocks
    ):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(block), expected[start:end]
        )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(head.bias), ops.convert_to_numpy(dense.bias)
    )


def test_seeded_untied_head_draws_each_width_with_its_own_fan_in():
    def build():
        head = keras_mrl.layers.MatryoshkaDense(
            50,
            nesting_dims=[8, 64, 512],
            kernel_initializer=keras.initializers.GlorotUniform(seed=5),
        )
        head.build((None, 512))
        return [ops.convert_to_numpy(k) for k in head.kernels]

    first, again = build(), build()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    dense = keras.layers.Dense(
        50, kernel_initializer=keras.initializers.GlorotUniform(seed=5)
    )
    dense.build((None, 8))
    np.testing.assert_array_equal(first[0], ops.convert_to_numpy(dense.kernel))
    for kernel, m in zip(first, [8, 64, 512]):
        np.testing.assert_allclose(
            kernel.std(), np.sqrt(2 / (m + 50)), rtol=0.1
        )
