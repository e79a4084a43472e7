"""`keras-mrl finetune` on a tiny KerasHub BERT preset (no download)."""

import json
import os
import stat

import keras
import numpy as np
import pytest

from keras_mrl import cli

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("tensorflow")

from _tiny_bert import pairs  # noqa: E402
from _tiny_bert import tiny_embedder  # noqa: E402

# The command line: its Keras parts are checked under every backend elsewhere.
pytestmark = pytest.mark.once

WIDTH = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = str(tmp_path_factory.mktemp("tiny") / "preset")
    tiny_embedder(hidden_dim=WIDTH).save_to_preset(path)
    return path


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    queries, documents = pairs(40)
    path.write_text(
        "".join(
            json.dumps({"query": q, "document": d}) + "\n"
            for q, d in zip(queries, documents)
        )
    )
    return str(path)


def _run(model_dir, pairs_file, out, *extra):
    return cli.main(
        [
            "finetune",
            "--model",
            model_dir,
            "--pairs",
            pairs_file,
            "--nesting-dims",
            "8,16",
            "--out",
            str(out),
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--learning-rate",
            "1e-2",
            *extra,
        ]
    )


def _one_error_line(capsys, match):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err
    assert "Traceback" not in err


def test_finetune_writes_a_preset_that_reloads(
    model_dir, pairs_file, tmp_path, capsys
):
    out = tmp_path / "tuned"
    assert _run(model_dir, pairs_file, out) == 0
    printed = capsys.readouterr().out
    assert "| 8 |" in printed and "| 16 |" in printed
    assert "36 training pairs, 4 held out" in printed
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["finetuned"]) == ["16", "8"]
    tuned = keras_hub.models.TextEmbedder.from_preset(str(out))
    base = keras_hub.models.TextEmbedder.from_preset(model_dir)
    texts = pairs(4)[0]
    assert tuned.encode_text(texts, verbose=0).shape == (4, WIDTH)
    difference = np.abs(
        tuned.encode_text(texts, verbose=0) - base.encode_text(texts, verbose=0)
    ).max()
    assert difference > 1e-4  # it was trained
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_missing_model_directory_exits_2(pairs_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(str(tmp_path / "absent"), pairs_file, out) == 2
    _one_error_line(capsys, "is not a directory")
    assert not out.exists()


def test_missing_pairs_file_exits_2(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(model_dir, str(tmp_path / "absent.jsonl"), out) == 2
    _one_error_line(capsys, "is not a file")
    assert not out.exists()


@pytest.mark.parametrize(
    "line, match",
    [
        ("{not json", ":3 is not JSON"),
        (json.dumps({"query": "sum"}), ":3 must be an object"),
        (json.dumps({"query": "sum", "document": 3}), ":3 must be an object"),
        (json.dumps(["sum", "values"]), ":3 must be an object"),
    ],
)
def test_malformed_line_exits_2_naming_it(
    model_dir, tmp_path, capsys, line, match
):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"query": "a b", "document": "c d"})
    path.write_text(f"{good}\n{good}\n{line}\n{good}\n")
    out = tmp_path / "out"
    assert _run(model_dir, str(path), out) == 2
    _one_error_line(capsys, match)
    assert not out.exists()


def test_too_few_pairs_exit_2(model_dir, tmp_path, capsys):
    path = tmp_path / "few.jsonl"
    path.write_text(json.dumps({"query": "a b", "document": "c d"}) + "\n")
    assert _run(model_dir, str(path), tmp_path / "out") == 2
    _one_error_line(capsys, "at least 4")


def test_widths_wider_than_the_model_exit_2(
    model_dir, pairs_file, tmp_path, capsys
):
    out = tmp_path / "out"
    code = cli.main(
        [
            "finetune",
            "--model",
            model_dir,
            "--pairs",
            pairs_file,
            "--nesting-dims",
            "8,32",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    _one_error_line(capsys, "wider than the model")
    assert not out.exists()


def test_non_increasing_widths_exit_2(model_dir, pairs_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            [
                "finetune",
                "--model",
                model_dir,
                "--pairs",
                pairs_file,
                "--nesting-dims",
                "16,8",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    assert exit_info.value.code == 2
    _one_error_line(capsys, "strictly increasing")


def test_non_empty_out_exits_2_and_is_left_alone(
    model_dir, pairs_file, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _run(model_dir, pairs_file, out) == 2
    _one_error_line(capsys, "not an empty directory")
    assert os.listdir(out) == ["keep.txt"]


def test_unloadable_model_directory_exits_2(pairs_file, tmp_path, capsys):
    model = tmp_path / "junk"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "out"
    assert _run(str(model), pairs_file, out) == 2
    _one_error_line(capsys, "cannot be loaded")
    assert not out.exists()


def test_sequence_length_beyond_the_model_exits_2(
    model_dir, pairs_file, tmp_path, capsys
):
    out = tmp_path / "out"
    assert _run(model_dir, pairs_file, out, "--sequence-length", "13") == 2
    _one_error_line(capsys, "longer than the model's maximum, 12")
    assert not out.exists()


@pytest.mark.parametrize("length", ["1", "2"])
def test_sequence_length_without_room_for_text_exits_2(
    model_dir, pairs_file, tmp_path, capsys, length
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        _run(model_dir, pairs_file, out, "--sequence-length", length)
    assert exit_info.value.code == 2
    _one_error_line(
        capsys, f"at least 3 ([CLS], a token of text and [SEP]), got '{length}'"
    )
    assert not out.exists()


def test_batch_of_one_pair_exits_2(model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        _run(model_dir, pairs_file, out, "--batch-size", "1")
    assert exit_info.value.code == 2
    _one_error_line(capsys, "--batch-size: must be an int of at least 2")
    assert not out.exists()


@pytest.mark.parametrize("holdout, left", [("0.9", 0), ("0.7", 1)])
def test_holdout_leaving_too_few_training_pairs_exits_2(
    model_dir, tmp_path, capsys, holdout, left
):
    path = tmp_path / "four.jsonl"
    queries, documents = pairs(4)
    path.write_text(
        "".join(
            json.dumps({"query": q, "document": d}) + "\n"
            for q, d in zip(queries, documents)
        )
    )
    out = tmp_path / "out"
    assert _run(model_dir, str(path), out, "--holdout", holdout) == 2
    _one_error_line(capsys, f"which leaves {left} to train on; at least 2")
    assert not out.exists()


def test_out_gets_the_umask_permissions(tmp_path):
    out = tmp_path / "tuned"
    previous = os.umask(0o022)
    try:
        cli._write_preset(
            tiny_embedder(hidden_dim=WIDTH), str(out), {"dims": [8, 16]}
        )
    finally:
        os.umask(previous)
    assert json.loads((out / "results.json").read_text()) == {"dims": [8, 16]}
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    for root, dirs, files in os.walk(out):
        for name in dirs:
            mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            assert mode == 0o755, name
        for name in files:
            mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            assert mode == 0o644, name


@pytest.mark.parametrize(
    "backend, onednn, expected",
    [
        ("tensorflow", True, "auto"),
        ("tensorflow", False, True),
        ("jax", False, "auto"),
        ("torch", False, "auto"),
    ],
)
def test_the_train_step_compiles_with_xla_where_tensorflows_kernels_are_eigens(
    monkeypatch, backend, onednn, expected
):
    from tensorflow.python.util import _pywrap_util_port

    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    monkeypatch.setattr(_pywrap_util_port, "IsMklEnabled", lambda: onednn)
    assert cli._train_step_compile() == expected
