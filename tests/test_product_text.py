"""The package, docs, notebooks, benchmarks and tests speak of the library.

Words about how the library was made (work items, their numbers, who ran
what when) mean nothing to a user, so none may appear in the shipped tree.
"""

import os
import pathlib
import re

import pytest

pytestmark = pytest.mark.once

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".xla_cache",
    ".pytest_cache",
    ".ruff_cache",
    "__pycache__",
    "build",
    "dist",
    "demo_out",
    "site",
}
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".ipynb",
    ".cfg",
    ".toml",
    ".txt",
    ".yml",
    ".yaml",
    "",
}
PROCESS_WORDS = re.compile(
    r"\b[Ii]ssues? #?[0-9]+|\b[Ss]essions?\b|this stop|last stop|the brief"
    r"|cheating"
)
# Code that really says these words, and other projects' issues
# (`owner/repo #123`).
ALLOWED = re.compile(
    r"clear_session|request\.session|start_new_session|InferenceSession"
    r'|scope="session"'
    r"|[\w.-]+/[\w.-]+ #[0-9]+"
)


def _shipped_files():
    # Prunes the skipped folders as it walks: the virtual environment alone
    # holds far more files than the tree.
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if name not in SKIPPED_DIRS and not name.endswith(".egg-info")
        )
        for name in sorted(files):
            path = pathlib.Path(folder, name)
            if path.suffix in TEXT_SUFFIXES:
                yield path


def _process_words(text):
    return [
        match.group()
        for line in text.splitlines()
        for match in PROCESS_WORDS.finditer(ALLOWED.sub("", line))
    ]


def test_the_pattern_finds_process_words_and_allows_code_words():
    assert _process_words("as issue 13 showed, in this session") == [
        "issue 13",
        "session",
    ]
    assert _process_words("keras.backend.clear_session()") == []
    assert _process_words('@pytest.fixture(scope="session")') == []
    assert _process_words("see RAIVNLab/MRL #23 and ort.InferenceSession") == []


def test_no_shipped_file_speaks_of_the_work_that_made_it():
    found = {}
    for path in _shipped_files():
        if path == pathlib.Path(__file__).resolve():
            continue
        words = _process_words(path.read_text(errors="replace"))
        if words:
            found[str(path.relative_to(ROOT))] = words
    assert not found, found
