"""The order in which `make test` hands its files to the workers."""

import pathlib
import types

import pytest
from conftest import LONGEST_FIRST
from conftest import sort_longest_first

pytestmark = pytest.mark.once

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_longest_first_entry_is_a_file_of_the_suite():
    missing = [path for path in LONGEST_FIRST if not (ROOT / path).is_file()]
    assert not missing, f"renamed or removed: {missing}"


def test_longest_first_names_each_file_once():
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)


def test_listed_files_come_first_and_the_rest_keep_their_order():
    first, second = LONGEST_FIRST[:2]
    nodeids = [
        "tests/test_a.py::test_1",
        f"{second}::test_1",
        "tests/test_b.py::test_1",
        f"{first}::test_2",
        "tests/test_a.py::test_2",
        f"{first}::test_1",
    ]
    items = [types.SimpleNamespace(nodeid=n) for n in nodeids]
    sort_longest_first(items)
    assert [item.nodeid for item in items] == [
        f"{first}::test_2",
        f"{first}::test_1",
        f"{second}::test_1",
        "tests/test_a.py::test_1",
        "tests/test_b.py::test_1",
        "tests/test_a.py::test_2",
    ]
