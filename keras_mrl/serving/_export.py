"""Export of an embedder, cut to one Matryoshka width, to a runtime file.

The artifact is written by Keras' own exporters (`keras.Model.export`,
`keras.export.ExportArchive`) but for ONNX under torch (see
`_write_torch_onnx`), into a new directory beside the target that is
renamed in at the end.
"""

import importlib.util
import os
import shutil
import warnings

import keras

from keras_mrl._files import new_directory
from keras_mrl._files import replace_directory
from keras_mrl._validation import check_bool
from keras_mrl._validation import check_choice
from keras_mrl._validation import check_optional_positive_int
from keras_mrl._validation import check_positive_int
from keras_mrl.layers import Truncate

FORMATS = ("saved_model", "onnx", "litert")
INPUTS = ("token_ids", "strings")
# The formats that tokenize raw strings inside the artifact: the KerasHub
# tokenizers are TensorFlow Text ops, which neither ONNX nor LiteRT's
# builtin ops have.
STRING_FORMATS = ("saved_model",)
# What Keras 3.15 exports under each backend with the packages keras-mrl
# installs; _UNSUPPORTED says why the other cells are missing.
BACKEND_FORMATS = {
    "tensorflow": ("saved_model", "onnx", "litert"),
    "jax": ("saved_model",),
    "torch": ("onnx",),
}
_UNSUPPORTED = {
    ("jax", "onnx"): (
        "Keras exports ONNX from JAX through jax2onnx, which keras-mrl does "
        "not install: its graph of a BERT fails on batches of more than one"
    ),
    ("jax", "litert"): (
        "Keras converts to LiteRT from the TensorFlow and torch backends only"
    ),
    ("torch", "saved_model"): (
        "Keras writes a SavedModel from torch through torch_xla, which has "
        "no CPU build for this torch"
    ),
    ("torch", "litert"): (
        "Keras converts torch to LiteRT through litert-torch, whose "
        "requirements downgrade packages keras-mrl runs with"
    ),
}
# The modules each (backend, format) imports, and the package of each.
_MODULES = {
    ("tensorflow", "saved_model"): ("tensorflow",),
    ("tensorflow", "onnx"): ("tensorflow", "tf2onnx", "onnx"),
    ("tensorflow", "litert"): ("tensorflow",),
    ("jax", "saved_model"): ("tensorflow",),
    ("torch", "onnx"): ("onnx", "onnxscript"),
}
_PACKAGES = {
    "tensorflow": "tensorflow-cpu",
    "tf2onnx": "tf2onnx",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "tensorflow_text": "tensorflow-text",
}
_SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}


def _check_cell(format, inputs, backend):
    """Raises a ValueError for a format or input kind `backend` cannot
    export; an ImportError for a missing package of one it can."""
    if inputs == "strings" and format not in STRING_FORMATS:
        raise ValueError(
            f"inputs='strings' needs a format that tokenizes inside the "
            f"artifact: {list(STRING_FORMATS)}; format={format!r} takes "
            "token ids only (tokenize with the embedder's preprocessor and "
            "pass inputs='token_ids')."
        )
    supported = BACKEND_FORMATS.get(backend, ())
    if format not in supported:
        backends = [b for b, fs in BACKEND_FORMATS.items() if format in fs]
        why = _UNSUPPORTED.get((backend, format), "")
        raise ValueError(
            f"format={format!r} is not exported under the {backend} backend"
            + (f" ({why})" if why else "")
            + f". It works under {backends}; under {backend} export writes "
            f"{list(supported)}. Load the model under another backend "
            "(KERAS_BACKEND=...; a .keras file loads under any) to export "
            "it."
        )
    modules = list(_MODULES[(backend, format)])
    if inputs == "strings":
        modules.append("tensorflow_text")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        packages = " ".join(_PACKAGES[m] for m in missing)
        raise ImportError(
            f"format={format!r} under the {backend} backend needs "
            f"{', '.join(missing)}: pip install {packages} (or "
            "keras-mrl[export])."
        )


def _split(model):
    """`(embedder, head)` of a ContrastiveModel or a bare Keras model."""
    from keras_mrl.models import ContrastiveModel

    if isinstance(model, ContrastiveModel):
        return model.embedder, model.head
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model mapping token inputs to (B, D) "
            "embeddings (e.g. a keras_hub.models.BertTextEmbedder) or a "
            "keras_mrl.models.ContrastiveModel, got "
            f"{type(model).__name__}."
        )
    return model, None


def _symbolic_inputs(embedder):
    # A functional model's `input` keeps the structure of its inputs (a
    # dict for KerasHub); a Sequential model has `inputs` only, a list.
    try:
        structure = embedder.input
    except (AttributeError, ValueError):
        structure = getattr(embedder, "inputs", None)
        if isinstance(structure, list) and len(structure) == 1:
            structure = structure[0]
    if structure is None or (
        isinstance(structure, (list, tuple, dict)) and not structure
    ):
        raise ValueError(
            f"The embedder {embedder.name!r} has no known inputs: export "
            "reads their names, shapes and dtypes from a functional model "
            "(a KerasHub TextEmbedder, a keras.Sequential that starts with "
            "keras.Input, or keras.Model(inputs, outputs))."
        )
    return structure


def _default_length(embedder, preprocessor):
    length = getattr(preprocessor, "sequence_length", None)
    if length is None:
        backbone = getattr(embedder, "backbone", None)
        length = getattr(backbone, "max_sequence_length", None)
    return length


def _input_specs(embedder, preprocessor, sequence_length):
    """The exported inputs: the embedder's own, with a free batch size and
    every other unknown size (the sequence) set to `sequence_length`."""
    structure = _symbolic_inputs(embedder)
    length = sequence_length
    if length is None:
        length = _default_length(embedder, preprocessor)
    max_length = getattr(
        getattr(embedder, "backbone", None), "max_sequence_length", None
    )
    if sequence_length is not None and max_length is not None:
        if sequence_length > max_length:
            raise ValueError(
                f"`sequence_length`={sequence_length} exceeds the backbone's "
                f"{max_length} position embeddings; use sequence_length <= "
                f"{max_length}."
            )

    def spec(tensor, name):
        shape = tuple(tensor.shape)[1:]
        if None in shape:
            if length is None:
                raise ValueError(
                    f"The input {name!r} of shape {tuple(tensor.shape)} has "
                    "an unknown size besides the batch, and the embedder "
                    "has no preprocessor or backbone that tells the "
                    "sequence length: pass `sequence_length`."
                )
            shape = tuple(length if size is None else size for size in shape)
        return keras.InputSpec(
            shape=(None,) + shape, dtype=tensor.dtype, name=name
        )

    if isinstance(structure, dict):
        return {name: spec(t, name) for name, t in structure.items()}
    return keras.tree.map_structure(lambda t: spec(t, t.name), structure)


def _serving_model(embedder, head, specs, dim, normalize):
    """A functional model: the embedder, its head, then `Truncate`."""
    tensors = keras.tree.map_structure(
        lambda s: keras.Input(batch_shape=s.shape, dtype=s.dtype, name=s.name),
        specs,
    )
    embeddings = embedder(tensors)
    if head is not None:
        embeddings = head(embeddings)
    shape = tuple(getattr(embeddings, "shape", ()))
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            "The model must map its inputs to (B, D) embeddings of a known "
            f"width D, but gives shape {shape}."
        )
    if dim > shape[-1]:
        raise ValueError(
            f"`dim`={dim} is wider than the model's {shape[-1]}-dimensional "
            f"embeddings; use 1 <= dim <= {shape[-1]}."
        )
    # float32 whatever the embedder's dtype policy: the runtimes and the
    # quantizers read float32 vectors.
    vectors = Truncate(
        dim, normalize=normalize, dtype="float32", name="matryoshka_prefix"
    )(embeddings)
    return keras.Model(tensors, vectors, name="matryoshka_embedder")


def _check_target(path, format, overwrite):
    try:
        path = os.path.abspath(os.fspath(path))
    except TypeError:
        raise TypeError(
            f"`path` must be a str or os.PathLike, got {type(path).__name__}."
        ) from None
    directory = format == "saved_model"
    if os.path.isdir(path) and not directory:
        raise ValueError(
            f"`path` {path!r} is a directory, but format={format!r} writes "
            "one file; choose a file path."
        )
    if os.path.lexists(path) and not os.path.isdir(path) and directory:
        raise ValueError(
            f"`path` {path!r} is a file, but a SavedModel is a directory; "
            "choose a directory path."
        )
    taken = os.path.isfile(path) or (
        os.path.isdir(path) and bool(os.listdir(path))
    )
    if taken and not overwrite:
        raise ValueError(
            f"`path` {path!r} exists; choose a new path or pass "
            "overwrite=True to replace it."
        )
    return path


def _write_strings_saved_model(serving, target, specs, preprocessor):
    """A SavedModel whose `serve` (and `serving_default`) tokenizes a batch
    of strings with `preprocessor`, then embeds; `serve_token_ids` embeds
    token ids."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    embed = archive.track_and_add_endpoint("serve_token_ids", serving, [specs])
    archive.track(preprocessor)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="texts")]
    )
    def serve(texts):
        tokens = preprocessor(texts)
        return embed(
            {name: tf.cast(tokens[name], s.dtype) for name, s in specs.items()}
        )

    archive.add_endpoint("serve", serve)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(target, verbose=False)


def _write_torch_onnx(serving, target, specs):
    """ONNX from torch through torch.onnx's dynamo exporter.

    Keras 3.15 exports a free batch size from torch with the TorchScript
    exporter, which fails on the layer normalisation of keras.ops (a BERT
    has several); the dynamo exporter traces it with a dynamic batch.
    """
    import torch

    flat = keras.tree.flatten(specs)

    class _FlatInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = serving

        def forward(self, *tensors):
            inputs = keras.tree.pack_sequence_as(specs, list(tensors))
            return self.model(inputs, training=False)

    module = _FlatInputs()
    module.eval()
    samples = tuple(
        keras.ops.ones((2,) + tuple(s.shape[1:]), dtype=s.dtype) for s in flat
    )
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        # Every input shares the one batch axis, which torch.onnx notes.
        warnings.filterwarnings("ignore", message=".*axis name: batch")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*deprecated")
        program = torch.onnx.export(
            module,
            samples,
            dynamo=True,
            input_names=[s.name for s in flat],
            output_names=["output_0"],
            # One entry: forward's *tensors, a tuple of one dict per input.
            dynamic_shapes=(tuple({0: batch} for _ in flat),),
            verbose=False,
        )
        program.optimize()
    program.save(target)


def _write(serving, target, format, inputs, specs, preprocessor):
    signature = [specs]
    if format == "saved_model" and inputs == "strings":
        _write_strings_saved_model(serving, target, specs, preprocessor)
    elif format == "saved_model":
        serving.export(
            target,
            format="tf_saved_model",
            input_signature=signature,
            verbose=False,
        )
    elif format == "onnx" and keras.backend.backend() == "torch":
        _write_torch_onnx(serving, target, specs)
    elif format == "onnx":
        serving.export(
            target, format="onnx", input_signature=signature, verbose=False
        )
    else:
        import tensorflow as tf

        # Builtin ops only: the file then runs on any LiteRT interpreter,
        # without the Flex (select TensorFlow ops) delegate that Keras
        # allows by default.
        serving.export(
            target,
            format="litert",
            input_signature=signature,
            verbose=False,
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
        )


def _check_preprocessor(preprocessor, specs):
    """Checks that `preprocessor` turns strings into the exported inputs."""
    if preprocessor is None:
        raise ValueError(
            "inputs='strings' tokenizes with the embedder's preprocessor, "
            "and this embedder has none. Give it one (e.g. a "
            "keras_hub.models.BertTextEmbedderPreprocessor) or pass "
            "inputs='token_ids'."
        )
    tokens = preprocessor(["a"])
    if not isinstance(specs, dict) or not isinstance(tokens, dict):
        raise ValueError(
            "inputs='strings' needs an embedder that takes a dict of token "
            "inputs and a preprocessor that returns one, as KerasHub's do."
        )
    missing = sorted(set(specs) - set(tokens))
    if missing:
        raise ValueError(
            f"The preprocessor gives {sorted(tokens)}, but the embedder "
            f"also takes {missing}."
        )


def export(
    model,
    *,
    path,
    dim,
    format="saved_model",
    inputs="token_ids",
    normalize=True,
    sequence_length=None,
    overwrite=False,
):
    """Writes an embedder, cut to its first `dim` dimensions, for a runtime.

    The artifact maps a batch to float32 vectors of width `dim`: the
    embedder's embeddings (then a `keras_mrl.models.ContrastiveModel`'s
    head), their first `dim` dimensions, L2-normalised after the cut
    unless `normalize=False` (`keras_mrl.layers.Truncate`). Keras writes
    it (`keras.Model.export`, `keras.export.ExportArchive`):

    - `"saved_model"`: a TensorFlow SavedModel directory, for
      `tf.saved_model.load(path).serve(...)` and TF Serving;
    - `"onnx"`: an ONNX file, for onnxruntime;
    - `"litert"`: a LiteRT (TFLite) flatbuffer of builtin ops only, for
      `ai_edge_litert.interpreter.Interpreter` on any LiteRT runtime.

    What each backend exports (Keras 3.15):

    | backend | `"saved_model"` | `"onnx"` | `"litert"` |
    |---|---|---|---|
    | tensorflow | yes | yes (tf2onnx) | yes |
    | jax | yes (jax2tf) | no | no |
    | torch | no | yes (torch.onnx) | no |

    With `inputs="token_ids"` the artifact takes the embedder's own
    inputs, by name (`token_ids`, `segment_ids` and `padding_mask` for a
    KerasHub BERT, int32), of shape `(batch, sequence_length)` for any
    batch size. With `inputs="strings"` (SavedModel only) `serve` takes a
    1-D batch of strings and tokenizes them in the graph with the
    embedder's preprocessor, padded to `sequence_length`; the token-id
    function is there too, as `serve_token_ids`. Loading it needs
    `import tensorflow_text` first, for the tokenizer's ops.

    The artifact is built in a new directory beside `path` and renamed in
    at the end, so an interrupted export leaves no half-written file.

    Args:
        model: the embedder, a `keras.Model` with known inputs (a KerasHub
            `TextEmbedder` such as `keras_hub.models.BertTextEmbedder`, or
            any functional or `keras.Sequential` model) mapping them to
            `(B, D)` embeddings, or a `keras_mrl.models.ContrastiveModel`,
            whose embedder and head are exported.
        path: the file (`"onnx"`, `"litert"`) or directory
            (`"saved_model"`) to write.
        dim: int, the width kept, at least 1 and at most `D`.
        format: `"saved_model"`, `"onnx"` or `"litert"`.
        inputs: `"token_ids"` or `"strings"`.
        normalize: bool, whether to L2-normalise the kept prefix.
        sequence_length: optional int, the length the token inputs are
            padded to; None takes the preprocessor's `sequence_length`,
            else the backbone's `max_sequence_length`. Inputs of a fixed
            size need none.
        overwrite: bool, whether to replace an existing `path`.

    Returns:
        The absolute path written, a str.

    Raises:
        TypeError: for a `model` that is not a Keras model, or a `dim`,
            `sequence_length` or flag of the wrong type.
        ValueError: for a `dim` below 1 or wider than the embeddings, an
            unknown `format` or `inputs`, strings in a format other than
            `"saved_model"`, a format the current backend does not export
            (the message names the backends that do), strings without a
            preprocessor, a `sequence_length` beyond the position
            embeddings, a model whose inputs or output width are unknown,
            or an existing `path` without `overwrite`.
        ImportError: when the format's converter is not installed
            (`pip install keras-mrl[export]`).

    Example:

    >>> import os, tempfile
    >>> encoder = keras.Sequential(
    ...     [keras.Input((8,)), keras.layers.Dense(16)]
    ... )
    >>> # torch exports ONNX, the other backends a SavedModel.
    >>> format = "onnx" if keras.backend.backend() == "torch" else (
    ...     "saved_model")
    >>> path = keras_mrl.serving.export(
    ...     encoder, path=os.path.join(tempfile.mkdtemp(), "encoder"), dim=4,
    ...     format=format)
    >>> os.path.exists(path)
    True
    >>> keras_mrl.serving.export(
    ...     encoder, path=path, dim=32, format=format, overwrite=True)
    Traceback (most recent call last):
    ...
    ValueError: `dim`=32 is wider than the model's 16-dimensional ...
    """
    dim = check_positive_int(dim, "dim")
    format = check_choice(format, "format", FORMATS)
    inputs = check_choice(inputs, "inputs", INPUTS)
    normalize = check_bool(normalize, "normalize")
    overwrite = check_bool(overwrite, "overwrite")
    sequence_length = check_optional_positive_int(
        sequence_length, "sequence_length"
    )
    embedder, head = _split(model)
    _check_cell(format, inputs, keras.backend.backend())
    preprocessor = getattr(embedder, "preprocessor", None)
    specs = _input_specs(embedder, preprocessor, sequence_length)
    serving = _serving_model(embedder, head, specs, dim, normalize)
    path = _check_target(path, format, overwrite)
    restore_length = None
    if inputs == "strings":
        _check_preprocessor(preprocessor, specs)
        length = keras.tree.flatten(specs)[0].shape[1]
        if length != preprocessor.sequence_length:
            # The strings pad to the exported length; the preprocessor
            # gets its own back once the graph is written.
            restore_length = preprocessor.sequence_length
            preprocessor.sequence_length = length
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    building = new_directory(parent, ".export-")
    try:
        if format == "saved_model":
            _write(serving, building, format, inputs, specs, preprocessor)
            replace_directory(building, path)
        else:
            target = os.path.join(building, "model" + _SUFFIXES[format])
            _write(serving, target, format, inputs, specs, preprocessor)
            os.replace(target, path)
    finally:
        if restore_length is not None:
            preprocessor.sequence_length = restore_length
        shutil.rmtree(building, ignore_errors=True)
    return path
