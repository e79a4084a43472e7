"""keras_mrl.datasets.docstring_pairs on a few standard-library modules.

Pure Python: the builder never touches a backend. The full default build
(`keras-mrl docstring-pairs`) takes half a minute, so the command is
checked here on a stand-in build; docs/text_finetune.md states its counts.
"""

import json
import subprocess
import sys

import pytest

from keras_mrl import cli
from keras_mrl.datasets import docstring_pairs

# Pure Python: the builder never touches a backend.
pytestmark = pytest.mark.once

TRAIN = ("json", "textwrap", "shutil", "difflib")
VALIDATION = ("shutil",)
TEST = ("pathlib", "fractions")


@pytest.fixture(scope="module")
def splits():
    return docstring_pairs.build(
        TRAIN, validation=VALIDATION, test=TEST, seed=0
    )


def test_splits_share_no_package(splits):
    packages = {
        name: {p["package"] for p in pairs} for name, pairs in splits.items()
    }
    assert packages["train"] == {"json", "textwrap", "difflib"}
    assert packages["validation"] == {"shutil"}
    assert packages["test"] == {"pathlib", "fractions"}


def test_no_query_or_document_repeats_across_all_splits(splits):
    pairs = [p for split in splits.values() for p in split]
    queries = [p["query"] for p in pairs]
    documents = [p["document"] for p in pairs]
    assert len(set(queries)) == len(queries)
    assert len(set(documents)) == len(documents)


def test_query_is_the_summary_and_document_the_rest(splits):
    import difflib

    pair = next(
        p for p in splits["train"] if p["name"] == "difflib.get_close_matches"
    )
    summary, rest = docstring_pairs._split_docstring(
        difflib.get_close_matches.__doc__
    )
    assert (
        pair["query"]
        == summary
        == (
            'Use SequenceMatcher to return list of the best "good enough" '
            "matches."
        )
    )
    assert pair["document"] == rest
    assert summary not in rest


def test_build_is_deterministic(splits):
    again = docstring_pairs.build(
        TRAIN, validation=VALIDATION, test=TEST, seed=0
    )
    assert again == splits
    other_seed = docstring_pairs.build(
        TRAIN, validation=VALIDATION, test=TEST, seed=1
    )
    assert other_seed != splits
    assert sorted(p["query"] for p in other_seed["train"]) == sorted(
        p["query"] for p in splits["train"]
    )


def test_build_in_subprocess_gives_the_pairs_of_build(splits):
    assert (
        docstring_pairs.build_in_subprocess(
            TRAIN, validation=VALIDATION, test=TEST, seed=0
        )
        == splits
    )


def test_a_failed_subprocess_raises_with_its_stderr(monkeypatch):
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda *args, **kwargs: subprocess.CompletedProcess(
            args, 1, stdout="", stderr="ImportError: no module"
        ),
    )
    with pytest.raises(
        RuntimeError, match=r"(?s)exit status 1.*ImportError: no module"
    ):
        docstring_pairs.build_in_subprocess(["json"], validation=[], test=[])


def test_repeated_texts_keep_the_first_only(monkeypatch):
    def first():
        pass

    def second():
        pass

    first.__doc__ = second.__doc__ = (
        "Return the same summary twice.\n\nAnd the same long document "
        "text, which a copy of a function would carry."
    )
    first.__module__ = second.__module__ = "fake"

    class Module:
        __name__ = "fake"

    module = Module()
    module.first, module.second = first, second
    monkeypatch.setattr(docstring_pairs, "_modules", lambda name: [module])
    pairs = docstring_pairs._collect(["fake"])
    assert [p["name"] for p in pairs] == ["fake.first"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"test": ("json",)}, ValueError, r"\['json'\].*both `train` and"),
        ({"validation": ("csv",)}, ValueError, r"\['csv'\] are not training"),
        ({"test": ("not_a_package_here",)}, ValueError, "not installed"),
        ({"train": ()}, ValueError, "at least one package"),
        ({"train": "json"}, TypeError, "list of package names"),
        ({"test": ["json.tool"]}, TypeError, "'json.tool'"),
        ({"validation": [None]}, TypeError, "None"),
        ({"seed": 1.5}, TypeError, "`seed` must be an int"),
        ({"seed": True}, TypeError, "`seed` must be an int"),
    ],
)
def test_bad_arguments_raise_in_both_builders(kwargs, error, match):
    kwargs = {"train": ("json",), "validation": (), "test": (), **kwargs}
    train = kwargs.pop("train")
    with pytest.raises(error, match=match):
        docstring_pairs.build(train, **kwargs)
    with pytest.raises(error, match=match):
        docstring_pairs.build_in_subprocess(train, **kwargs)


def test_packages_after_the_first_are_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        docstring_pairs.build(("json",), (), ("textwrap",))


def test_split_for_picks_training_and_evaluation_pairs(splits):
    train, evaluation = docstring_pairs.split_for(splits, split="validation")
    assert (train, evaluation) == (splits["train"], splits["validation"])
    train, evaluation = docstring_pairs.split_for(splits, split="test")
    assert train == splits["train"] + splits["validation"]
    assert evaluation == splits["test"]


@pytest.mark.parametrize(
    "splits, split, error, match",
    [
        (
            {"train": [], "validation": [], "test": []},
            "tset",
            ValueError,
            "'validation' or 'test', got 'tset'",
        ),
        ({"train": [], "test": []}, "test", ValueError, "'validation'"),
        ([[], [], []], "test", TypeError, "list"),
    ],
)
def test_split_for_refuses_other_splits(splits, split, error, match):
    with pytest.raises(error, match=match):
        docstring_pairs.split_for(splits, split=split)


def test_unusable_docstrings_give_none():
    assert docstring_pairs._split_docstring(None) is None
    assert docstring_pairs._split_docstring("Short.") is None
    assert (
        docstring_pairs._split_docstring(
            "A summary line that is fine.\n\nbut rest too short"
        )
        is None
    )


def test_command_writes_the_three_splits(monkeypatch, tmp_path, capsys):
    built = {
        "train": [{"query": "q é", "document": "d", "package": "a"}] * 2,
        "validation": [{"query": "v", "document": "d", "package": "b"}],
        "test": [],
    }
    monkeypatch.setattr(docstring_pairs, "build_in_subprocess", lambda: built)
    out = tmp_path / "pairs"
    assert cli.main(["docstring-pairs", "--out", str(out)]) == 0
    for name, pairs in built.items():
        text = (out / f"{name}.jsonl").read_text(encoding="utf-8")
        assert [json.loads(line) for line in text.splitlines()] == pairs
    assert "q é" in (out / "train.jsonl").read_text(encoding="utf-8")
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"{out / 'train.jsonl'}: 2 pairs from 1 packages",
        f"{out / 'validation.jsonl'}: 1 pairs from 1 packages",
        f"{out / 'test.jsonl'}: 0 pairs from 0 packages",
    ]


def test_command_failure_is_one_line(monkeypatch, tmp_path, capsys):
    def fail():
        raise RuntimeError("Building the docstring pairs failed")

    monkeypatch.setattr(docstring_pairs, "build_in_subprocess", fail)
    status = cli.main(["docstring-pairs", "--out", str(tmp_path)])
    assert status == cli.EXIT_FAILURE
    assert capsys.readouterr().err == (
        "keras-mrl docstring-pairs: error: Building the docstring pairs "
        "failed\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_command_refuses_an_out_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    status = cli.main(["docstring-pairs", "--out", str(path)])
    assert status == cli.EXIT_USAGE
    assert "is not a writable directory" in capsys.readouterr().err


def test_the_module_file_runs_as_a_script_without_keras_mrl(tmp_path):
    # build_in_subprocess runs the file so; keras_mrl must stay unimported.
    spec = {"train": ["json"], "validation": [], "test": [], "seed": 0}
    code = (
        "import runpy, sys; "
        f"runpy.run_path({docstring_pairs.__file__!r}, run_name='__main__'); "
        "print(sorted(m for m in sys.modules if m.startswith('keras')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "train.jsonl").read_text().count("\n") > 5
