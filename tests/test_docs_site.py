"""The documentation site documents the whole public API, and every guide
and notebook, once.

`make docs` builds the site (mkdocs.yml) with --strict; these checks read
its sources only. The API reference lives in docs/reference/, one page per
public package, each symbol a `::: keras_mrl.module.Name` directive (the
symbols of a public submodule, such as
`keras_mrl.integrations.sentence_transformers.load`, on their package's
page), except
`keras_mrl.integrations.sentence_transformers.HuggingFaceBertTokenizer`,
which is built at run time (it needs KerasHub) and is documented in prose
under its own heading.
"""

import collections
import importlib
import importlib.util
import pathlib
import re
import types

import griffe
import pytest
import yaml

import keras_mrl

pytestmark = pytest.mark.once

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
DIRECTIVE = re.compile(r"^::: *(\S+) *$", re.MULTILINE)
# Symbols that static analysis cannot see, each with the page and the
# heading that document it.
PROSE = {
    "keras_mrl.integrations.sentence_transformers.HuggingFaceBertTokenizer": (
        "integrations.md",
        "## HuggingFaceBertTokenizer",
    )
}


def _load(path):
    """Imports one of the site's code files in docs/, which is no package."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _public_symbols(path="keras_mrl"):
    """Every `keras_mrl.module.Name` of the public modules' `__all__`, and
    of the public submodules they list, at any depth."""
    module = importlib.import_module(path)
    symbols = set()
    for name in module.__all__:
        # vars(), not getattr(): a lazily built symbol stays unbuilt.
        if isinstance(vars(module).get(name), types.ModuleType):
            symbols |= _public_symbols(f"{path}.{name}")
        else:
            symbols.add(f"{path}.{name}")
    return symbols


def _documented(pages):
    """The symbols `pages` document, once per directive or prose heading."""
    found = []
    for page in pages:
        text = page.read_text()
        found += DIRECTIVE.findall(text)
        for symbol, (name, heading) in PROSE.items():
            if page.name == name:
                found += [symbol] * text.splitlines().count(heading)
    return found


def _problems(documented, public):
    counts = collections.Counter(documented)
    return {
        "missing": sorted(public - set(counts)),
        "twice": sorted(s for s, n in counts.items() if n > 1),
        "not public": sorted(set(counts) - public),
    }


def _nav_pages(nav):
    """Every page path in an mkdocs nav, at any depth."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return [p for item in nav for p in _nav_pages(item)]


def test_problems_name_missing_repeated_and_private_symbols():
    public = {"keras_mrl.a.X", "keras_mrl.a.Y", "keras_mrl.b.Z"}
    documented = ["keras_mrl.a.X", "keras_mrl.a.X", "keras_mrl.a._W"]
    documented += ["keras_mrl.b.Z"]
    assert _problems(documented, public) == {
        "missing": ["keras_mrl.a.Y"],
        "twice": ["keras_mrl.a.X"],
        "not public": ["keras_mrl.a._W"],
    }


def test_documented_reads_directives_and_the_prose_heading(tmp_path):
    (tmp_path / "integrations.md").write_text(
        "# keras_mrl.integrations\n\n"
        "::: keras_mrl.integrations.sentence_transformers.load\n\n"
        "## HuggingFaceBertTokenizer\n\nText naming ::: "
        "keras_mrl.integrations.sentence_transformers.export inline.\n"
    )
    (tmp_path / "ops.md").write_text(
        "::: keras_mrl.ops.truncate\n    options:\n      heading_level: 3\n"
    )
    pages = sorted(tmp_path.glob("*.md"))
    assert sorted(_documented(pages)) == [
        "keras_mrl.integrations.sentence_transformers.HuggingFaceBertTokenizer",
        "keras_mrl.integrations.sentence_transformers.load",
        "keras_mrl.ops.truncate",
    ]


def test_every_public_module_has_a_reference_page():
    pages = {page.stem for page in REFERENCE.glob("*.md")}
    assert pages == set(keras_mrl.__all__)


def test_every_public_symbol_is_documented_exactly_once():
    documented = _documented(sorted(REFERENCE.glob("*.md")))
    problems = _problems(documented, _public_symbols())
    assert not any(problems.values()), problems


def test_each_symbol_is_on_the_page_of_its_module():
    misplaced = []
    for page in REFERENCE.glob("*.md"):
        for symbol in _documented([page]):
            if symbol.split(".")[1] != page.stem:
                misplaced.append(f"{symbol} on {page.name}")
    assert not misplaced, misplaced


def test_nav_lists_every_guide_notebook_and_reference_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = _nav_pages(config["nav"])
    shipped = [
        *(p.name for p in (ROOT / "docs").glob("*.md")),
        *(f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")),
        *(f"reference/{p.name}" for p in REFERENCE.glob("*.md")),
    ]
    assert not set(shipped) - set(listed), sorted(set(shipped) - set(listed))
    assert not set(listed) - set(shipped), sorted(set(listed) - set(shipped))
    twice = [page for page, n in collections.Counter(listed).items() if n > 1]
    assert not twice, twice


def test_keras_examples_parse_as_an_examples_section_of_code():
    examples = _load(ROOT / "docs" / "_keras_examples.py")
    text = (
        "Doubles.\n\nArgs:\n    x: int.\n\nExample:\n\n>>> double(2)\n4\n\n"
        "Then:\n\n>>> double(3)\n6"
    )
    docstring = griffe.Docstring(examples.indent_examples(text))
    sections = docstring.parse("google")
    assert [s.kind.value for s in sections] == [
        "text",
        "parameters",
        "examples",
    ]
    assert sections[-1].value == [
        (griffe.DocstringSectionKind.examples, ">>> double(2)\n4"),
        (griffe.DocstringSectionKind.text, "Then:"),
        (griffe.DocstringSectionKind.examples, ">>> double(3)\n6"),
    ]


def test_links_to_notebooks_point_at_their_pages_on_the_site():
    hooks = _load(ROOT / "docs" / "_hooks.py")
    markdown = (
        "[a](../notebooks/01_quickstart.ipynb) [b](serving.md#int8) "
        "[c](../notebooks/03_embeddings_retrieval.ipynb#top)"
    )
    for src_uri, prefix in (
        ("demo.md", ""),
        ("reference/integrations.md", "../"),
    ):
        page = types.SimpleNamespace(
            file=types.SimpleNamespace(src_uri=src_uri)
        )
        assert hooks.on_page_markdown(markdown, page, None, None) == (
            f"[a]({prefix}notebooks/01_quickstart.ipynb) [b](serving.md#int8) "
            f"[c]({prefix}notebooks/03_embeddings_retrieval.ipynb#top)"
        )
