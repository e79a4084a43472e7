"""Runs the Python examples of README.md and docs/ exactly as written.

Each file's ```python blocks run in order in one namespace, as a reader
would paste them, with the `jit_compile=True` they show: on TensorFlow and
JAX, which compile the train step with XLA (torch runs the same code
eagerly in the component tests). Two files are run elsewhere:
docs/scaling.md's recipes need several devices or processes, and
`tests/test_distribution.py` runs them in worker processes against one
device; docs/text_finetune.md fine-tunes all-MiniLM-L6-v2, which notebook
05 does with the same calls under `make test`.
"""

import pathlib
import re
import textwrap

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [
    "docs/losses.md",
    "docs/embeddings.md",
    "docs/adaptive.md",
    "docs/serving.md",
]

pytestmark = pytest.mark.skipif(
    keras.backend.backend() not in ("tensorflow", "jax"),
    reason="the examples show jit_compile=True, which torch does not take",
)


def _python_blocks(path):
    # A block inside a list item is indented as a whole.
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)
    return [textwrap.dedent(block) for block in blocks]


def _run(path):
    blocks = _python_blocks(path)
    assert blocks, f"{path.name} has no python example"
    namespace = {}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", DOCS)
def test_docs_examples_run_as_written(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what the examples save stays out of the repo
    _run(ROOT / name)


def test_readme_quickstart_runs_and_prints_what_it_says(capsys):
    namespace = _run(ROOT / "README.md")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "(8, 16, 32, 64, 128, 256, 512, 576)"
    assert "'acc@8'" in printed[1] and "'acc@576'" in printed[1]
    assert "'loss'" in printed[1]
    assert namespace["small_head"].kernel.shape == (64, 10)
