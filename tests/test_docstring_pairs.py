"""benchmarks/docstring_pairs.py on a few standard-library modules (fast)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import docstring_pairs  # noqa: E402

# Pure Python: the builder never touches a backend.
pytestmark = pytest.mark.once

TRAIN = ("json", "textwrap", "shutil", "difflib")
VALIDATION = ("shutil",)
TEST = ("pathlib", "fractions")


@pytest.fixture(scope="module")
def splits():
    return docstring_pairs.build(TRAIN, VALIDATION, TEST, seed=0)


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
    summary, rest = docstring_pairs.split_docstring(
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
    again = docstring_pairs.build(TRAIN, VALIDATION, TEST, seed=0)
    assert again == splits
    other_seed = docstring_pairs.build(TRAIN, VALIDATION, TEST, seed=1)
    assert other_seed != splits
    assert sorted(p["query"] for p in other_seed["train"]) == sorted(
        p["query"] for p in splits["train"]
    )


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
    pairs = docstring_pairs.collect(["fake"])
    assert [p["name"] for p in pairs] == ["fake.first"]


def test_overlapping_packages_raise():
    with pytest.raises(ValueError, match="both train and test"):
        docstring_pairs.build(("json",), (), ("json",))


def test_validation_outside_train_raises():
    with pytest.raises(ValueError, match="not training packages"):
        docstring_pairs.build(("json",), ("csv",), ("textwrap",))


def test_unusable_docstrings_give_none():
    assert docstring_pairs.split_docstring(None) is None
    assert docstring_pairs.split_docstring("Short.") is None
    assert (
        docstring_pairs.split_docstring(
            "A summary line that is fine.\n\nbut rest too short"
        )
        is None
    )
