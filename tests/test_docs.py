"""Runs the Python examples of docs/ exactly as written.

Each file's ```python blocks run in order in one namespace, as a reader
would paste them, with the `jit_compile=True` they show: on TensorFlow and
JAX, which compile the train step with XLA (torch runs the same code
eagerly in the component tests). Two files are run elsewhere:
docs/scaling.md's recipes need several devices or processes, and
`tests/test_distribution.py` runs them in worker processes against one
device; docs/text_finetune.md fine-tunes all-MiniLM-L6-v2, which notebook
05 does with the same calls under `make test`. README.md's examples run in
tests/test_readme.py.
"""

import pathlib
import re
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [
    "docs/losses.md",
    "docs/hard_negatives.md",
    "docs/large_batches.md",
    "docs/embeddings.md",
    "docs/depth.md",
    "docs/adaptive.md",
    "docs/serving.md",
]

# Examples: their Keras parts are checked per backend elsewhere. They show
# jit_compile=True: XLA on JAX and TensorFlow, where torch would run
# torch.compile instead.
pytestmark = pytest.mark.once(backends=("jax", "tensorflow"))


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
