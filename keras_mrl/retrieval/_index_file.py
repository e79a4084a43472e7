"""The file a FunnelIndex is saved to: one `.npz` with a format marker.

The archive holds `header`, a JSON string with the format name and version,
the corpus width and size and the index's configuration; `prefix_{d}`, what
the stage at width `d` stores (float32 prefixes, uint8 int8 codes or packed
sign bits, by the configuration's `precisions`); `ranges_{d}`, the float32
`(2, d)` minima and maxima of an int8 stage; and optionally
`first_stage_state`, the bytes a first stage saves beside its vectors (an
HNSW graph). Reading checks each of them, so a file `save` did not write
fails here with a ValueError that names the path and what is wrong, not
deep in numpy or faiss.
"""

import collections
import json
import os
import zipfile

import numpy as np

from keras_mrl._validation import validate_nesting_dims
from keras_mrl.retrieval._codes import check_precisions
from keras_mrl.retrieval._codes import stored_layout

FORMAT = "keras_mrl.retrieval.FunnelIndex"
VERSION = 1
_STATE = "first_stage_state"

# The prefixes of a saved index, passed to `FunnelIndex` in place of the
# embeddings so that a loaded index goes through the constructor's checks.
SavedCorpus = collections.namedtuple(
    "SavedCorpus", ["width", "prefixes", "ranges", "state"]
)


class _Unreadable(Exception):
    """What is wrong with a file; `read` adds the path."""


def npz_path(path):
    """`path` as a str, with `.npz` appended when missing, as `np.savez`."""
    path = os.fsdecode(path)
    return path if path.endswith(".npz") else path + ".npz"


def write(path, *, config, width, prefixes, ranges, state):
    """Writes the file; returns the path written (`.npz` appended).

    Args:
        path: the path given to `save`.
        config: the index's `get_config()`, JSON-serialisable.
        width: the corpus width.
        prefixes: what each stage stores, one array per width of
            `config["stage_dims"]`.
        ranges: one `(2, d)` array per int8 stage, None for the others.
        state: the first stage's saved bytes, or None.
    """
    header = {
        "format": FORMAT,
        "version": VERSION,
        "width": width,
        "size": len(prefixes[0]),
        "config": config,
    }
    arrays = {f"prefix_{d}": p for d, p in zip(config["stage_dims"], prefixes)}
    for d, r in zip(config["stage_dims"], ranges):
        if r is not None:
            arrays[f"ranges_{d}"] = r
    if state is not None:
        arrays[_STATE] = state
    path = npz_path(path)
    np.savez(path, header=np.array(json.dumps(header)), **arrays)
    return path


def read(path):
    """Reads a file `write` wrote.

    Args:
        path: the file, or the path given to `save`: when no file has that
            name and it does not end in `.npz`, `.npz` is appended.

    Returns:
        `(path, config, saved)`: the path read, the saved configuration (a
        dict) and a `SavedCorpus`.

    Raises:
        FileNotFoundError: when neither path names a file.
        ValueError: for any file `write` did not write, naming the path.
    """
    given = os.fsdecode(path)
    path = given if os.path.exists(given) else npz_path(given)
    if not os.path.exists(path):
        names = given if path == given else f"{given} or {path}"
        raise FileNotFoundError(f"No FunnelIndex file at {names}.")
    try:
        return (path, *_read(path))
    except _Unreadable as error:
        raise ValueError(
            f"Cannot load a FunnelIndex from {path!r}: {error}"
        ) from None


def _read(path):
    # numpy reads anything else than an archive as a pickle or an .npy
    # array; its messages would then point at `allow_pickle`.
    if not zipfile.is_zipfile(path):
        raise _Unreadable(
            "it is not an .npz archive (it is truncated, or a file of "
            "another kind); FunnelIndex.save writes one."
        )
    with np.load(path, allow_pickle=False) as data:
        header = _header(data)
        stage_dims = _dims(header)
        precisions = _precisions(header, stage_dims)
        size, width = header["size"], header["width"]
        prefixes, ranges = [], []
        for d, precision in zip(stage_dims, precisions):
            prefixes.append(_prefix(data, d, precision, size))
            ranges.append(_ranges(data, d) if precision == "int8" else None)
        state = None
        if _STATE in data.files:
            state = _entry(data, _STATE)
            if state.dtype != np.uint8 or state.ndim != 1:
                raise _Unreadable(
                    f"`{_STATE}` must hold 1-D uint8 bytes, got a "
                    f"{state.dtype} array of shape {state.shape}."
                )
    return header["config"], SavedCorpus(
        width, tuple(prefixes), tuple(ranges), state
    )


def _prefix(data, d, precision, size):
    prefix = _entry(data, f"prefix_{d}")
    dtype, columns = stored_layout(precision, d)
    if prefix.dtype != dtype or prefix.shape != (size, columns):
        raise _Unreadable(
            f"`prefix_{d}` holds a {prefix.dtype} array of shape "
            f"{prefix.shape}, not the {dtype} ({size}, {columns}) its "
            f"header announces for a {precision} stage."
        )
    if precision == "float32" and not np.isfinite(prefix).all():
        raise _Unreadable(f"`prefix_{d}` holds NaN or inf values.")
    return prefix


def _ranges(data, d):
    ranges = _entry(data, f"ranges_{d}")
    if ranges.dtype != np.float32 or ranges.shape != (2, d):
        raise _Unreadable(
            f"`ranges_{d}` holds a {ranges.dtype} array of shape "
            f"{ranges.shape}, not the float32 (2, {d}) minima and maxima "
            "of an int8 stage."
        )
    if not np.isfinite(ranges).all() or (ranges[0] > ranges[1]).any():
        raise _Unreadable(
            f"`ranges_{d}` must hold finite minima (row 0) no greater than "
            "their maxima (row 1)."
        )
    return ranges


def _entry(data, key):
    """The array `key` of the archive, or `_Unreadable`."""
    if key not in data.files:
        raise _Unreadable(
            f"it has no `{key}` entry (entries: {sorted(data.files)})."
        )
    try:
        return data[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # A zlib error or a bad CRC comes as one of these; numpy's message
        # would name `allow_pickle` for an object array.
        raise _Unreadable(
            f"its `{key}` entry cannot be read ({type(error).__name__}): "
            "the file is corrupt, or was not written by FunnelIndex.save."
        ) from None


def _header(data):
    if "header" not in data.files:
        raise _Unreadable(
            f"it has no `header` entry, so it was not written by "
            f"FunnelIndex.save (entries: {sorted(data.files)})."
        )
    raw = _entry(data, "header")
    try:
        header = json.loads(str(raw)) if raw.dtype.kind == "U" else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _Unreadable(
            f"its `header` does not carry the format marker {FORMAT!r}, "
            "so it was not written by FunnelIndex.save."
        )
    if header.get("version") != VERSION:
        raise _Unreadable(
            f"it has format version {header.get('version')!r}; this "
            f"keras_mrl reads version {VERSION}. "
            "Save the index again with the keras_mrl that loads it."
        )
    for key, kind in (("width", int), ("size", int), ("config", dict)):
        value = header.get(key)
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or (kind is int and value < 1)
        ):
            raise _Unreadable(f"its header's `{key}` is {value!r}.")
    return header


def _precisions(header, stage_dims):
    config = header["config"]
    try:
        return check_precisions(
            config.get("precisions"), stage_dims, config.get("index")
        )
    except (TypeError, ValueError) as error:
        raise _Unreadable(f"its header's configuration: {error}") from None


def _dims(header):
    try:
        return validate_nesting_dims(
            header["config"].get("stage_dims"),
            max_dim=header["width"],
            name="stage_dims",
        )
    except (TypeError, ValueError) as error:
        raise _Unreadable(f"its header's configuration: {error}") from None
