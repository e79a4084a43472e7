"""Real, fixed text for the model tests: the docstring summaries of the
public callables of standard-library modules."""

import inspect


def first_lines(modules, count):
    """The first `count` distinct one-line summaries (over 20 characters)
    of the public callables of `modules`, in module and name order."""
    lines = []
    for module in modules:
        for name, value in sorted(vars(module).items()):
            doc = inspect.getdoc(value) if callable(value) else None
            if name.startswith("_") or not doc:
                continue
            line = doc.strip().splitlines()[0].strip()
            if len(line) > 20 and line not in lines:
                lines.append(line)
    assert len(lines) >= count
    return lines[:count]
