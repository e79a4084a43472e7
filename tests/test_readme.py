"""Runs README.md's Python examples as written and checks what they print.

The ```python blocks run in order in one namespace, as a reader would paste
them, with the `jit_compile=True` they show: on TensorFlow and JAX, which
compile the train step with XLA. A block marked ```python-online needs the
network and is not run; the offline block after it is its twin.

The README and docs/benchmarks.md link to the guides, the notebooks and the
sections of docs/benchmarks.md; those links are checked here too.
"""

import importlib.util
import pathlib
import re

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
# Pages whose links may point into docs/benchmarks.md.
LINKING_PAGES = [
    README,
    BENCHMARKS,
    *(
        ROOT / "docs" / name
        for name in (
            "text_finetune.md",
            "demo.md",
            "adaptive.md",
            "serving.md",
            "losses.md",
            "scaling.md",
            "embeddings.md",
        )
    ),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")

needs_hub = pytest.mark.skipif(
    any(
        importlib.util.find_spec(name) is None
        for name in ("keras_hub", "safetensors", "all_minilm_l6_v2")
    ),
    reason="Quickstart A needs keras-mrl[hub]",
)


def _python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def _local_links(path):
    """(target file, anchor or None) of every relative link in `path`."""
    links = []
    for target in LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        links.append((path.parent / file if file else path, anchor or None))
    return links


def _anchors(path):
    """GitHub's anchors of the headings of a markdown file."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        anchors.add(slug.replace(" ", "-"))
    return anchors


@pytest.mark.once
def test_python_blocks_are_found_and_online_ones_are_left_out():
    text = "```python\na = 1\n```\n```python-online\nb = 2\n```\n"
    assert _python_blocks(text) == ["a = 1\n"]


@pytest.mark.once
def test_anchors_follow_github_headings(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n## 1. Figure 2 of the paper\n"
        "## Post-hoc Matryoshka: `MatryoshkaAdaptor`\n"
    )
    assert _anchors(page) == {
        "title",
        "1-figure-2-of-the-paper",
        "post-hoc-matryoshka-matryoshkaadaptor",
    }


# The examples show jit_compile=True: XLA on JAX and TensorFlow, where
# torch would run torch.compile instead.
@pytest.mark.once(backends=("jax", "tensorflow"))
@needs_hub
def test_readme_examples_run_print_what_they_say_and_write_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # anything the examples wrote would land here
    blocks = _python_blocks(README.read_text())
    assert len(blocks) == 2, "Quickstart A (offline) and Quickstart B"
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4, printed
    assert printed[:2] == ["(8, 64)", "[0 1 2 3]"]
    assert printed[2] == "[8, 16, 32, 64, 128, 256]"
    assert "'acc@8'" in printed[3] and "'acc@256'" in printed[3]
    assert "'loss'" in printed[3]

    # Quickstart A: unit-length 64-d vectors of the fine-tuned embedder.
    vectors = keras.ops.convert_to_numpy(namespace["vectors"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert list(tmp_path.iterdir()) == []  # nothing written
    # Quickstart B: the exported head is a plain Dense on 64 features.
    assert namespace["small_head"].kernel.shape == (64, 10)


@pytest.mark.once
@pytest.mark.parametrize(
    "page", LINKING_PAGES, ids=[p.name for p in LINKING_PAGES]
)
def test_local_links_point_to_files_and_headings_that_exist(page):
    broken = []
    for target, anchor in _local_links(page):
        if not target.exists():
            broken.append(str(target))
        elif (
            anchor
            and target.suffix == ".md"
            and (anchor not in _anchors(target))
        ):
            broken.append(f"{target.name}#{anchor}")
    assert not broken, broken


@pytest.mark.once
def test_readme_lists_every_guide_and_notebook():
    listed = {target.resolve() for target, _ in _local_links(README)}
    shipped = {
        path.resolve()
        for pattern in ("docs/*.md", "notebooks/*.ipynb")
        for path in ROOT.glob(pattern)
    }
    assert not shipped - listed, sorted(
        str(p.relative_to(ROOT)) for p in shipped - listed
    )


@pytest.mark.once
def test_readme_fits_in_200_lines():
    assert len(README.read_text().splitlines()) <= 200
