"""Runs every `Example:` block in keras_mrl's docstrings."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_mrl

# The demo and the CLI print, plot and read data; their examples are the
# commands in the README, run by their own tests.
_SKIPPED = {"keras_mrl.__main__", "keras_mrl.cli", "keras_mrl.demo"}

# The examples show users the API; the Keras code under them is tested
# under every backend by the other files, so, like the README's and the
# guides' examples, they run once.
pytestmark = pytest.mark.once


def _modules():
    names = [
        info.name
        for info in pkgutil.walk_packages(keras_mrl.__path__, "keras_mrl.")
        if info.name not in _SKIPPED
    ]
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    )
    globs = {"np": np, "keras": keras, "keras_mrl": keras_mrl}
    for test in finder.find(module, name, globs=globs):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed"
