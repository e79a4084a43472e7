"""keras_mrl.serving.export: each runtime gives Keras' own vectors.

One tiny KerasHub BERT per module, exported once per format, case and
backend: a ContrastiveModel with a Dense head cut to 4 dimensions, and the
bare embedder at its full 16 with a shorter sequence length (10). The
SavedModels are reloaded with `tf.saved_model.load` (token ids and raw
strings), the ONNX files run in onnxruntime and the LiteRT files in
ai_edge_litert's Interpreter, on 32 short sentences, within 1e-4 of the
Keras model's prefix of its output, L2-normalised.
"""

import os
import pathlib
import re

import keras
import numpy as np
import pytest

import keras_mrl
from keras_mrl.models import ContrastiveModel
from keras_mrl.serving import _export

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("tensorflow")

from _tiny_bert import pairs  # noqa: E402
from _tiny_bert import tiny_embedder  # noqa: E402

BACKEND = keras.backend.backend()
SUPPORTED = _export.BACKEND_FORMATS[BACKEND]
# A format every backend exports, for the checks that precede writing.
FORMAT = SUPPORTED[0]
TOLERANCE = 1e-4
# (model, dim, sequence_length) of each export.
CASES = {"head_dim4": ("contrastive", 4, None), "bare_dim16": ("bare", 16, 10)}


def _skip_unless(format):
    if format not in SUPPORTED:
        pytest.skip(
            f"format={format!r} is not exported under the {BACKEND} backend "
            f"(it exports {list(SUPPORTED)})"
        )


def _prefix(vectors, dim, normalize=True):
    prefix = np.asarray(vectors, "float64")[:, :dim]
    if normalize:
        prefix /= np.linalg.norm(prefix, axis=1, keepdims=True)
    return prefix


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The models, 32 sentences, their token ids and Keras' embeddings."""
    keras.utils.set_random_seed(0)
    embedder = tiny_embedder()
    head = keras.layers.Dense(24, name="head")
    contrastive = ContrastiveModel(embedder, head=head)
    queries, documents = pairs(16)
    texts = queries + documents
    tokens = {
        name: np.asarray(value).astype("int32")
        for name, value in embedder.preprocessor(texts).items()
    }
    # keras.Model's predict_on_batch: the KerasHub task's own would run the
    # preprocessor again on the token ids.
    embeddings = np.asarray(keras.Model.predict_on_batch(embedder, tokens))
    keras_outputs = {
        "bare": embeddings,
        "contrastive": keras.ops.convert_to_numpy(head(embeddings)),
    }
    return {
        "models": {"bare": embedder, "contrastive": contrastive},
        "texts": texts,
        "tokens": tokens,
        "keras": keras_outputs,
        "directory": tmp_path_factory.mktemp("exports"),
        "written": {},
    }


def _exported(setup, format, case, inputs="token_ids"):
    """The path of `case` exported to `format`, written once a module."""
    key = (format, case, inputs)
    if key not in setup["written"]:
        model, dim, length = CASES[case]
        suffix = {"saved_model": "", "onnx": ".onnx", "litert": ".tflite"}
        setup["written"][key] = keras_mrl.serving.export(
            setup["models"][model],
            path=setup["directory"]
            / f"{format}_{case}_{inputs}{suffix[format]}",
            dim=dim,
            format=format,
            inputs=inputs,
            sequence_length=length,
        )
    return setup["written"][key]


def _expected(setup, case):
    model, dim, length = CASES[case]
    tokens = setup["tokens"]
    # The sentences fit in 10 tokens: a shorter padding changes nothing.
    tokens = {k: v[:, : length or v.shape[1]] for k, v in tokens.items()}
    return tokens, _prefix(setup["keras"][model], dim)


def _close(actual, expected):
    actual = np.asarray(actual)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("case", sorted(CASES))
def test_saved_model_token_ids_and_strings_match_keras(setup, case):
    _skip_unless("saved_model")
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    path = _exported(setup, "saved_model", case, inputs="strings")
    tokens, expected = _expected(setup, case)
    loaded = tf.saved_model.load(path)
    _close(loaded.serve(tf.constant(setup["texts"])), expected)
    _close(loaded.serve_token_ids(tokens), expected)
    signature = loaded.signatures["serving_default"]
    (texts,) = signature.structured_input_signature[1].values()
    assert texts.dtype == tf.string


def test_saved_model_of_token_ids_without_normalisation(setup, tmp_path):
    _skip_unless("saved_model")
    import tensorflow as tf

    path = keras_mrl.serving.export(
        setup["models"]["bare"],
        path=tmp_path / "model",
        dim=8,
        normalize=False,
        format="saved_model",
    )
    loaded = tf.saved_model.load(path)
    expected = _prefix(setup["keras"]["bare"], 8, normalize=False)
    _close(loaded.serve(setup["tokens"]), expected)
    assert set(loaded.signatures) == {"serve", "serving_default"}


def test_strings_export_restores_the_preprocessor_length(setup):
    _skip_unless("saved_model")
    _exported(setup, "saved_model", "bare_dim16", inputs="strings")
    assert setup["models"]["bare"].preprocessor.sequence_length == 12


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnxruntime_matches_keras(setup, case):
    _skip_unless("onnx")
    import onnxruntime

    path = _exported(setup, "onnx", case)
    tokens, expected = _expected(setup, case)
    runtime = onnxruntime.InferenceSession(
        path, providers=["CPUExecutionProvider"]
    )
    assert {i.name for i in runtime.get_inputs()} == set(tokens)
    (vectors,) = runtime.run(None, tokens)
    _close(vectors, expected)
    # Any batch size, one text included.
    (one,) = runtime.run(None, {k: v[:1] for k, v in tokens.items()})
    _close(one, expected[:1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_litert_matches_keras_with_builtin_ops_only(setup, case):
    _skip_unless("litert")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    path = _exported(setup, "litert", case)
    with open(path, "rb") as file:
        flatbuffer = schema.Model.GetRootAsModel(file.read(), 0)
    codes = [
        flatbuffer.OperatorCodes(i)
        for i in range(flatbuffer.OperatorCodesLength())
    ]
    assert codes
    # A Flex (select TensorFlow) op or any custom op is a CUSTOM code.
    assert [c.CustomCode() for c in codes if c.CustomCode()] == []
    assert all(
        max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
        != schema.BuiltinOperator.CUSTOM
        for c in codes
    )
    tokens, expected = _expected(setup, case)
    runner = Interpreter(model_path=path).get_signature_runner()
    _close(runner(**tokens)["output_0"], expected)


# The checks before anything is written.


@pytest.fixture(scope="module")
def dense():
    """A tiny encoder of fixed-size float inputs (no sequence)."""
    return keras.Sequential(
        [keras.Input((8,), name="features"), keras.layers.Dense(16)]
    )


@pytest.mark.once
@pytest.mark.parametrize(
    "dim, error", [(2.0, TypeError), (True, TypeError), (0, ValueError)]
)
def test_dim_must_be_a_positive_int(dense, tmp_path, dim, error):
    with pytest.raises(error, match="`dim` must be"):
        keras_mrl.serving.export(
            dense, path=tmp_path / "m", dim=dim, format=FORMAT
        )


@pytest.mark.once
def test_dim_wider_than_the_embeddings_raises(setup, tmp_path):
    with pytest.raises(ValueError, match=r"`dim`=17 .* 16-dimensional"):
        keras_mrl.serving.export(
            setup["models"]["bare"], path=tmp_path / "m", dim=17, format=FORMAT
        )
    # The head's width counts for a ContrastiveModel.
    with pytest.raises(ValueError, match=r"`dim`=25 .* 24-dimensional"):
        keras_mrl.serving.export(
            setup["models"]["contrastive"],
            path=tmp_path / "m",
            dim=25,
            format=FORMAT,
        )
    assert not os.listdir(tmp_path)


@pytest.mark.once
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "tf_saved_model"}, r"`format` must be one of \["),
        ({"inputs": "texts"}, r"`inputs` must be one of \["),
        ({"normalize": "yes"}, "`normalize` must be True or False"),
        ({"overwrite": 1}, "`overwrite` must be True or False"),
        ({"sequence_length": 0}, "`sequence_length` must be a positive"),
    ],
)
def test_bad_arguments_raise(dense, tmp_path, kwargs, message):
    kwargs = {"format": FORMAT, **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        keras_mrl.serving.export(dense, path=tmp_path / "m", dim=4, **kwargs)


@pytest.mark.once
@pytest.mark.parametrize("format", ["onnx", "litert"])
def test_strings_in_a_format_without_a_tokenizer_raise(setup, tmp_path, format):
    with pytest.raises(ValueError, match=r"\['saved_model'\]"):
        keras_mrl.serving.export(
            setup["models"]["bare"],
            path=tmp_path / "m",
            dim=4,
            format=format,
            inputs="strings",
        )


# Strings are read by SavedModels, which torch does not write.
@pytest.mark.once(backends=("tensorflow", "jax"))
def test_strings_without_a_preprocessor_raise(dense, tmp_path):
    with pytest.raises(ValueError, match="has none"):
        keras_mrl.serving.export(
            dense, path=tmp_path / "m", dim=4, inputs="strings"
        )


@pytest.mark.parametrize("format", _export.FORMATS)
def test_a_format_the_backend_does_not_export_raises(dense, tmp_path, format):
    if format in SUPPORTED:
        pytest.skip(f"the {BACKEND} backend exports {format!r}")
    with pytest.raises(ValueError, match=f"under the {BACKEND} backend") as e:
        keras_mrl.serving.export(
            dense, path=tmp_path / "m", dim=4, format=format
        )
    works = [b for b, fs in _export.BACKEND_FORMATS.items() if format in fs]
    assert f"It works under {works}" in str(e.value)


@pytest.mark.once
def test_every_backend_and_format_cell_is_decided():
    for backend in ("tensorflow", "jax", "torch"):
        for format in _export.FORMATS:
            if format in _export.BACKEND_FORMATS[backend]:
                _export._check_cell(format, "token_ids", backend)
                continue
            with pytest.raises(ValueError, match=f"under the {backend} "):
                _export._check_cell(format, "token_ids", backend)
    assert _export.BACKEND_FORMATS == {
        "tensorflow": ("saved_model", "onnx", "litert"),
        "jax": ("saved_model",),
        "torch": ("onnx",),
    }


@pytest.mark.once
def test_a_missing_converter_raises_import_error_naming_it(monkeypatch):
    real = _export.importlib.util.find_spec
    monkeypatch.setattr(
        _export.importlib.util,
        "find_spec",
        lambda name: None if name == "tf2onnx" else real(name),
    )
    with pytest.raises(ImportError, match="pip install tf2onnx"):
        _export._check_cell("onnx", "token_ids", "tensorflow")


@pytest.mark.once
def test_a_model_that_is_not_keras_raises(tmp_path):
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        keras_mrl.serving.export(
            lambda x: x, path=tmp_path / "m", dim=4, format=FORMAT
        )


@pytest.mark.once
def test_a_model_without_known_inputs_raises(tmp_path):
    class Encoder(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="has no known inputs"):
        keras_mrl.serving.export(
            Encoder(), path=tmp_path / "m", dim=4, format=FORMAT
        )


@pytest.mark.once
def test_a_model_without_vector_outputs_raises(tmp_path):
    tokens = keras.Input((6,), dtype="int32")
    sequence = keras.Model(tokens, keras.layers.Embedding(10, 4)(tokens))
    with pytest.raises(ValueError, match=r"\(B, D\) embeddings"):
        keras_mrl.serving.export(
            sequence, path=tmp_path / "m", dim=2, format=FORMAT
        )


@pytest.mark.once
def test_an_unknown_sequence_length_raises(tmp_path):
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    pooled = keras.layers.GlobalAveragePooling1D()(
        keras.layers.Embedding(10, 4)(tokens)
    )
    model = keras.Model(tokens, pooled)
    with pytest.raises(ValueError, match="pass `sequence_length`"):
        keras_mrl.serving.export(
            model, path=tmp_path / "m", dim=2, format=FORMAT
        )


@pytest.mark.once
def test_a_sequence_beyond_the_position_embeddings_raises(setup, tmp_path):
    with pytest.raises(ValueError, match="13 exceeds the backbone's 12"):
        keras_mrl.serving.export(
            setup["models"]["bare"],
            path=tmp_path / "m",
            dim=4,
            format=FORMAT,
            sequence_length=13,
        )


@pytest.mark.once
def test_the_path_must_fit_the_format(dense, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "directory").mkdir()
    (tmp_path / "directory" / "x").write_text("x")
    # A SavedModel is a directory, the other formats one file.
    if FORMAT == "saved_model":
        wrong, right = "file", "directory"
    else:
        wrong, right = "directory", "file"
    with pytest.raises(ValueError, match=f"is a {wrong}, but"):
        keras_mrl.serving.export(
            dense, path=tmp_path / wrong, dim=4, format=FORMAT, overwrite=True
        )
    with pytest.raises(ValueError, match="exists; choose a new path"):
        keras_mrl.serving.export(
            dense, path=tmp_path / right, dim=4, format=FORMAT
        )
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.once
def test_overwrite_replaces_and_a_failed_write_leaves_the_old(
    dense, tmp_path, monkeypatch
):
    path = str(tmp_path / "m")
    assert (
        keras_mrl.serving.export(dense, path=path, dim=4, format=FORMAT) == path
    )
    first = os.path.getmtime(path)
    keras_mrl.serving.export(
        dense, path=path, dim=2, format=FORMAT, overwrite=True
    )
    assert os.listdir(tmp_path) == ["m"]

    def fail(*args):
        raise RuntimeError("converter failed")

    monkeypatch.setattr(_export, "_write", fail)
    second = os.path.getmtime(path)
    with pytest.raises(RuntimeError, match="converter failed"):
        keras_mrl.serving.export(
            dense, path=path, dim=4, format=FORMAT, overwrite=True
        )
    # No staging directory is left, and the last export is untouched.
    assert os.listdir(tmp_path) == ["m"]
    assert os.path.getmtime(path) == second >= first


def test_export_formats_benchmark_measures_every_format(setup, capsys):
    # The script's measurement of the files the tests above wrote, timed
    # once: a smoke run whose timings mean nothing.
    import importlib.util
    import pathlib

    script = (
        pathlib.Path(__file__).resolve().parents[1]
        / "benchmarks"
        / "export_formats.py"
    )
    spec = importlib.util.spec_from_file_location("export_formats", script)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    tokens, expected = _expected(setup, "head_dim4")
    rows, calls = [], {}
    for format in SUPPORTED:
        inputs = "strings" if format in _export.STRING_FORMATS else "token_ids"
        path = _exported(setup, format, "head_dim4", inputs=inputs)
        measured, more = benchmark.load_artifact(
            format, path, setup["texts"], tokens, expected
        )
        rows += measured
        calls.update(more)
    benchmark.fill_times(rows, calls, repeats=1)
    assert all(row["batch_ms"] > 0 and row["one_ms"] > 0 for row in rows)
    expected_formats = []
    for format in SUPPORTED:
        expected_formats.append(format)
        if format in _export.STRING_FORMATS:
            expected_formats.append(f"{format} (strings)")
    assert [row["format"] for row in rows] == expected_formats
    assert all(row["max_abs_diff"] <= TOLERANCE for row in rows)
    for row in rows:
        row.update(model="tiny", backend=BACKEND, dim=4)
    assert len(benchmark.table(rows).splitlines()) == 2 + len(rows)
    with pytest.raises(SystemExit) as exit:
        benchmark.main(["--help"])
    assert exit.value.code == 0
    assert "--sequence-length" in capsys.readouterr().out


def test_path_is_keyword_only(tmp_path):
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    with pytest.raises(TypeError, match="positional"):
        keras_mrl.serving.export(dense, tmp_path / "m", dim=2)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the guide's example exports the three formats, as TensorFlow does",
)
def test_deploy_guide_examples_run_as_written(tmp_path, monkeypatch):
    guide = pathlib.Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.DOTALL)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, str(guide), "exec"), namespace)
    assert namespace["vectors"].shape == (2, 8)
