"""README.md's "API at a glance" table against the signatures it quotes.

Every call the table shows, `keras_mrl.name(first, *, keyword=default)`,
must name a public callable whose signature has those parameters: the
leading positional ones (README may call them by a shorter name, so they
are matched by position), the keyword-only ones after `*` by name, and
every default the table states equal to the code's. A bare keyword has no
default in the code either. `…` stands for parameters the table leaves
out.
"""

import ast
import importlib
import inspect
import pathlib
import re

import pytest

pytestmark = pytest.mark.once

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
_CALL = re.compile(r"`(keras_mrl(?:\.\w+)+)(\(.*?\))?`")


def _api_rows():
    """First cells of the table whose header is `| name | what it does |`."""
    lines = README.read_text().splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if re.fullmatch(r"\|\s*name\s*\|\s*what it does\s*\|", line.strip())
    )
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1])
    return rows


def _quoted_calls():
    """`(dotted name, "(arguments)" or None)` of every call the table shows."""
    calls = [
        match.groups() for cell in _api_rows() for match in _CALL.finditer(cell)
    ]
    assert len(calls) >= 15, calls
    return calls


def _resolve(dotted):
    """The object `keras_mrl.a.b.C.f` names, imported module by module."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(dotted)


def _stated(arguments):
    """The table's `(a, *, b=1, …)` as an `ast.arguments`."""
    source = arguments.replace("…", "").strip()
    return ast.parse(f"def quoted{source}: pass").body[0].args


# A parameter the table shows without a default.
_REQUIRED = object()


def _defaults(names, defaults):
    """`{name: stated default or _REQUIRED}`; defaults align to the end."""
    padded = [None] * (len(names) - len(defaults)) + list(defaults)
    return {
        arg.arg: _REQUIRED if node is None else ast.literal_eval(node)
        for arg, node in zip(names, padded)
    }


def _check_default(call, name, stated, parameter):
    if stated is _REQUIRED:
        assert parameter.default is inspect.Parameter.empty, (
            f"README shows `{name}` of {call} without a default, the code "
            f"gives it {parameter.default!r}."
        )
        return
    assert parameter.default is not inspect.Parameter.empty, (
        f"README gives `{name}` of {call} the default {stated!r}; the code "
        "has none."
    )
    # 0 == 0.0 == False: the type is part of the documented default.
    assert (type(parameter.default), parameter.default) == (
        type(stated),
        stated,
    ), (
        f"README gives `{name}` of {call} the default {stated!r}, the code "
        f"{parameter.default!r}."
    )


@pytest.mark.parametrize(
    "dotted, arguments", _quoted_calls(), ids=[c[0] for c in _quoted_calls()]
)
def test_readme_api_table_matches_the_signatures(dotted, arguments):
    target = _resolve(dotted)
    assert callable(target), dotted
    if arguments is None:
        return
    parameters = inspect.signature(target).parameters
    positional = [
        p
        for p in parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    stated = _stated(arguments)
    leading = stated.posonlyargs + stated.args
    assert len(leading) <= len(positional), (
        f"README shows {len(leading)} positional parameters of {dotted}, "
        f"the code takes {len(positional)}."
    )
    for arg, parameter in zip(leading, positional):
        default = _defaults(leading, stated.defaults)[arg.arg]
        # One stated with a default is matched by name, the others (often
        # shortened, `q` for `query_embeddings`) by position.
        if default is not _REQUIRED:
            assert arg.arg in parameters, f"{dotted} has no `{arg.arg}`."
            parameter = parameters[arg.arg]
        _check_default(dotted, parameter.name, default, parameter)
    keywords = dict(
        zip(
            stated.kwonlyargs,
            (
                _REQUIRED if node is None else ast.literal_eval(node)
                for node in stated.kw_defaults
            ),
        )
    )
    for arg, default in keywords.items():
        assert arg.arg in parameters, f"{dotted} has no `{arg.arg}`."
        parameter = parameters[arg.arg]
        assert parameter.kind is parameter.KEYWORD_ONLY, (
            f"README shows `{arg.arg}` of {dotted} after `*`, but it is not "
            "keyword-only."
        )
        _check_default(dotted, arg.arg, default, parameter)


def test_the_table_states_the_cascade_tolerance():
    # The default that once differed between README and the code.
    calls = dict(_quoted_calls())
    assert "tolerance=0.003" in calls["keras_mrl.adaptive.Cascade.calibrate"]
