"""Runs the README's quickstart exactly as written."""

import pathlib
import re

import keras
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="one backend is enough for the README; the quickstart's "
    "components are tested on every backend elsewhere",
)
def test_quickstart_runs(capsys):
    (quickstart,) = [b for b in _python_blocks() if "ResNet50" in b]
    # XLA-compiling ResNet50's train step costs minutes of CPU time; the
    # components' XLA path is tested on small models in the other tests.
    assert "jit_compile=True" in quickstart
    quickstart = quickstart.replace("jit_compile=True", "jit_compile=False")
    namespace = {}
    exec(compile(quickstart, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "'acc@8'" in printed and "'acc@2048'" in printed
    assert namespace["small_head"].kernel.shape == (64, 10)
