"""A griffe extension: Keras-style examples render as code on the site.

keras_mrl writes its docstrings as Keras does, the doctests of the closing
`Example:` section flush with its heading:

    Example:

    >>> keras_mrl.nesting.default_nesting_dims(64)
    [8, 16, 32, 64]

Google style, as griffe parses it, names the section `Examples:` and wants
its body indented under the heading, with no blank line between; as
written, the doctests would render as nested block quotes. This rewrites
the section when the API reference is built; the source keeps the Keras
layout, which doctest runs the same.
"""

import re

import griffe

_EXAMPLES = re.compile(r"^Examples?:\s*$")


def indent_examples(text):
    """Returns `text` with its closing `Example:` section in griffe's layout.

    As in Keras, the example closes the docstring: everything after the
    heading, doctests and the prose between them, is its body.
    """
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if _EXAMPLES.match(line):
            body = "\n".join(lines[index + 1 :]).strip("\n").split("\n")
            indented = ["    " + row if row.strip() else "" for row in body]
            return "\n".join([*lines[:index], "Examples:", *indented])
    return text


class KerasExamples(griffe.Extension):
    """Rewrites the `Example:` sections of every docstring griffe reads."""

    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = indent_examples(obj.docstring.value)
