"""(query, document) pairs from the docstrings of installed packages.

Real text, written by no one here, built offline: for every public callable
(function, class or method of a public class) with a docstring, the query
is its one-line summary and the document is the rest of the docstring.

- A callable belongs to the package that defines it (the first part of its
  `__module__`), wherever it is re-exported, so a split by package puts no
  package's text on both sides.
- Exact repeats are dropped: a query or a document that occurs twice keeps
  its first occurrence only (modules and members are visited in sorted
  order), so every query has one relevant document. Test pairs whose query
  or document also occurs in training are dropped too.
- Example outputs marked `# may vary` are dropped: scipy.stats writes
  random ones into some docstrings at import time.
- The train/validation split is by package (`VALIDATION`), drawn from the
  training packages; the order of each split is shuffled with a fixed
  seed. The output depends only on the installed versions, which
  requirements-dev.txt pins (Python's own for the standard library), and,
  since some docstrings are formatted from sets at import time, on the
  hash seed: `build_in_subprocess` fixes it (`PYTHONHASHSEED=0`), `build`
  runs in the calling process as it is.

`keras-mrl docstring-pairs --out DIR` writes the default splits as
`train.jsonl`, `validation.jsonl` and `test.jsonl` (one
`{"query", "document", "package", "name"}` object per line), the input of
`keras-mrl finetune --pairs`. The module imports nothing but the standard
library.
"""

import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import numbers
import os
import pkgutil
import random
import subprocess
import sys
import tempfile
import warnings

__all__ = [
    "SEED",
    "TEST",
    "TRAIN",
    "VALIDATION",
    "build",
    "build_in_subprocess",
    "split_for",
]

SEED = 0
"""The default seed of the shuffle of each split."""

# Standard-library modules with many documented callables and no side
# effects on import.
_STDLIB = (
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "concurrent",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http",
    "imaplib",
    "inspect",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "lzma",
    "mailbox",
    "math",
    "mimetypes",
    "multiprocessing",
    "netrc",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pickletools",
    "plistlib",
    "poplib",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "tomllib",
    "traceback",
    "types",
    "typing",
    "unittest",
    "urllib",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml",
    "zipfile",
    "zoneinfo",
)
TRAIN = ("numpy", "sklearn", "keras", "matplotlib", "jax") + _STDLIB
"""The default training packages, a tuple of names: numpy, scikit-learn,
keras, matplotlib, jax and 91 standard-library modules with many documented
callables and no side effects on import (the validation package
included)."""
VALIDATION = ("matplotlib",)
"""The default validation packages, held out of `TRAIN` to choose settings
on; never the test split."""
TEST = ("scipy",)
"""The default test packages, disjoint from `TRAIN`."""
# Subpackages that are private in all but name, import other frameworks, or
# hold tests.
_SKIPPED = (
    "keras.src",
    "matplotlib.backends",
    "matplotlib.testing",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
    "jax.experimental",
    "jax.extend",
    "jax.example_libraries",
    "sklearn.externals",
)
_MIN_QUERY_CHARS = 12
_MIN_DOCUMENT_CHARS = 40


def _private(name):
    parts = name.split(".")
    return any(
        p.startswith("_") or p in ("tests", "testing", "conftest")
        for p in parts
    ) or any(name == s or name.startswith(s + ".") for s in _SKIPPED)


def _walk(module):
    """Yields `module` and its public submodules, importing only those."""
    yield module
    path = getattr(module, "__path__", None)
    if path is None:
        return
    # Not pkgutil.walk_packages: it imports every package to descend into
    # it, private ones too, and such imports can rebind a framework's
    # internals (keras.src.backend.numpy replacing the active backend).
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        name = f"{module.__name__}.{info.name}"
        if _private(name):
            continue
        try:
            submodule = importlib.import_module(name)
        except Exception:
            continue
        yield from _walk(submodule)


def _modules(package):
    """Returns the public modules of `package` in sorted order."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        try:
            root = importlib.import_module(package)
        except Exception:
            return []
        modules = {m.__name__: m for m in _walk(root)}
    return [modules[name] for name in sorted(modules)]


def _split_docstring(doc):
    """Returns `(summary, rest)` of a docstring, or None when unusable.

    The summary is the first line of the cleaned docstring (the PEP 257
    one-line summary); the rest is what follows it, stripped.
    """
    doc = inspect.cleandoc(doc or "").strip()
    if not doc:
        return None
    # Some docstrings are made at import time with unseeded random example
    # outputs (scipy.stats' distributions), which numpydoc marks this way.
    lines = [line for line in doc.splitlines() if "# may vary" not in line]
    summary, rest = lines[0].strip(), "\n".join(lines[1:]).strip()
    # A wrapped summary or a signature line is no summary.
    if (
        len(summary) < _MIN_QUERY_CHARS
        or len(rest) < _MIN_DOCUMENT_CHARS
        or summary.endswith((",", "("))
        or " " not in summary
    ):
        return None
    return summary, rest


def _owner(obj):
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or module in ("builtins", ""):
        return None
    return module.split(".")[0]


def _callables(module):
    """Yields `(qualified name, object)` of a module's public callables."""
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        try:
            obj = getattr(module, name)
        except Exception:
            continue
        if inspect.ismodule(obj) or not callable(obj):
            continue
        yield f"{module.__name__}.{name}", obj
        if inspect.isclass(obj):
            for member in sorted(vars(obj)):
                if member.startswith("_"):
                    continue
                value = vars(obj)[member]
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if inspect.isfunction(value):
                    yield f"{module.__name__}.{name}.{member}", value


def _collect(packages):
    """Returns the pairs of `packages`, deduplicated, in visiting order.

    Args:
        packages: top-level package names; a callable is kept when it is
            defined in one of them.

    Returns:
        A list of dicts `{"query", "document", "package", "name"}`.
    """
    wanted = set(packages)
    seen_objects, seen_queries, seen_documents = set(), set(), set()
    pairs = []
    for package in sorted(wanted):
        for module in _modules(package):
            for name, obj in _callables(module):
                if id(obj) in seen_objects:
                    continue
                seen_objects.add(id(obj))
                owner = _owner(obj)
                if owner not in wanted:
                    continue
                try:
                    parts = _split_docstring(obj.__doc__)
                except Exception:
                    parts = None
                if parts is None:
                    continue
                query, document = parts
                if query in seen_queries or document in seen_documents:
                    continue
                seen_queries.add(query)
                seen_documents.add(document)
                pairs.append(
                    {
                        "query": query,
                        "document": document,
                        "package": owner,
                        "name": name,
                    }
                )
    return pairs


def _packages(packages, name):
    """Returns `packages` as a tuple of installed top-level package names."""
    if isinstance(packages, (str, bytes)) or not hasattr(packages, "__iter__"):
        raise TypeError(
            f"`{name}` must be a list of package names such as "
            f"['json', 'textwrap'], got {packages!r}."
        )
    packages = tuple(packages)
    for package in packages:
        if not isinstance(package, str) or not package.isidentifier():
            raise TypeError(
                f"`{name}` must hold top-level package names such as "
                f"'json', got {package!r} in {list(packages)}."
            )
    # A name that is not installed would give no pairs at all.
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ValueError(
            f"`{name}` names packages that are not installed: {missing}."
        )
    return packages


def _check(train, validation, test, seed):
    """Returns the checked `(train, validation, test, seed)`."""
    train = _packages(train, "train")
    validation = _packages(validation, "validation")
    test = _packages(test, "test")
    if not train:
        raise ValueError("`train` must name at least one package, got [].")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(
            f"The packages {overlap} are in both `train` and `test`; a "
            "package's text must be on one side only."
        )
    if not set(validation) <= set(train):
        raise ValueError(
            f"The validation packages "
            f"{sorted(set(validation) - set(train))} are not training "
            "packages; `validation` holds packages of `train` held out."
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be an int, got {seed!r}.")
    return train, validation, test, int(seed)


def _build(train, validation, test, seed):
    pool = _collect(train)
    held = set(validation)
    splits = {
        "train": [p for p in pool if p["package"] not in held],
        "validation": [p for p in pool if p["package"] in held],
    }
    known_queries = {p["query"] for p in pool}
    known_documents = {p["document"] for p in pool}
    splits["test"] = [
        p
        for p in _collect(test)
        if p["query"] not in known_queries
        and p["document"] not in known_documents
    ]
    for name, pairs in splits.items():
        random.Random(f"{seed}-{name}").shuffle(pairs)
    return splits


def build(train=TRAIN, *, validation=VALIDATION, test=TEST, seed=SEED):
    """Returns the train, validation and test pairs of installed packages.

    Every package named is imported, with its public submodules, in this
    process (their import side effects stay), and its docstrings are read
    as they are under this process' hash seed; `build_in_subprocess` gives
    the same pairs from a fresh interpreter with a fixed one.

    Args:
        train: the training packages, top-level names (validation ones
            included).
        validation: the packages of `train` held out for choosing
            settings.
        test: the test packages, none of them in `train`.
        seed: int, the seed of the shuffle of each split.

    Returns:
        A dict `{"train": [...], "validation": [...], "test": [...]}`;
            each pair is a dict `{"query", "document", "package",
            "name"}`, `name` the callable's public path.

    Raises:
        TypeError: when a package list is a string or holds something else
            than package names, or `seed` is not an int.
        ValueError: when `train` is empty, a package is not installed, a
            package is in both `train` and `test`, or a validation package
            is not a training one.

    Example:

    >>> from keras_mrl.datasets import docstring_pairs
    >>> splits = docstring_pairs.build(
    ...     ["json", "textwrap"], validation=["textwrap"], test=["difflib"])
    >>> {name: sorted({p["package"] for p in pairs})
    ...  for name, pairs in splits.items()}
    {'train': ['json'], 'validation': ['textwrap'], 'test': ['difflib']}
    >>> pair = next(
    ...     p for p in splits["train"] if p["name"] == "json.dumps")
    >>> pair["query"]
    'Serialize ``obj`` to a JSON formatted ``str``.'
    """
    return _build(*_check(train, validation, test, seed))


def _read_jsonl(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def _write_jsonl(pairs, path):
    with open(path, "w", encoding="utf-8") as file:
        for pair in pairs:
            file.write(json.dumps(pair, ensure_ascii=False) + "\n")


def build_in_subprocess(
    train=TRAIN, *, validation=VALIDATION, test=TEST, seed=SEED
):
    """Returns the pairs of `build`, built in a fresh Python process.

    Importing every module of the packages leaves side effects (backends,
    plotting) behind, and some docstrings are formatted from sets at import
    time; a new interpreter with `PYTHONHASHSEED=0` and `KERAS_BACKEND=jax`
    (keras' public modules are the same under every backend, but one fixed
    backend keeps even their import-time details identical) imports them
    instead, and nothing else, so that the pairs depend only on the
    installed versions. This is what `keras-mrl docstring-pairs` writes
    and what the benchmarks train on.

    Args:
        train: the training packages, top-level names (validation ones
            included).
        validation: the packages of `train` held out for choosing
            settings.
        test: the test packages, none of them in `train`.
        seed: int, the seed of the shuffle of each split.

    Returns:
        A dict `{"train": [...], "validation": [...], "test": [...]}` of
            pairs `{"query", "document", "package", "name"}`.

    Raises:
        TypeError: for the arguments, as `build`.
        ValueError: for the arguments, as `build`.
        RuntimeError: when the process fails, with what it wrote to
            stderr.

    Example:

    >>> from keras_mrl.datasets import docstring_pairs
    >>> splits = docstring_pairs.build_in_subprocess(
    ...     ["json", "textwrap"], validation=[], test=["difflib"])
    >>> splits == docstring_pairs.build(
    ...     ["json", "textwrap"], validation=[], test=["difflib"])
    True
    """
    train, validation, test, seed = _check(train, validation, test, seed)
    spec = {"train": train, "validation": validation, "test": test}
    spec["seed"] = seed
    env = dict(os.environ, PYTHONHASHSEED="0", KERAS_BACKEND="jax")
    with tempfile.TemporaryDirectory() as out:
        # This file as a script: the new process imports nothing of
        # keras_mrl (whose import would load keras first).
        built = subprocess.run(
            [sys.executable, __file__, out, json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
        )
        if built.returncode:
            raise RuntimeError(
                f"Building the docstring pairs failed (exit status "
                f"{built.returncode}):\n{built.stderr[-4000:]}"
            )
        return {
            name: _read_jsonl(os.path.join(out, f"{name}.jsonl"))
            for name in ("train", "validation", "test")
        }


def split_for(splits, *, split):
    """Returns the `(training, evaluation)` pairs of one evaluation split.

    Settings are chosen on the validation split, trained without it; the
    test split is read last, trained on everything else.

    Args:
        splits: the dict of `build` or `build_in_subprocess`.
        split: `"validation"` (train on the training packages without the
            validation ones, evaluate on those) or `"test"` (train on
            training and validation packages, evaluate on the test ones).

    Returns:
        A tuple `(training pairs, evaluation pairs)`, two lists.

    Raises:
        TypeError: when `splits` is not a dict.
        ValueError: for another `split`, or `splits` without the three
            splits.

    Example:

    >>> from keras_mrl.datasets import docstring_pairs
    >>> splits = {"train": ["a"], "validation": ["b"], "test": ["c"]}
    >>> docstring_pairs.split_for(splits, split="validation")
    (['a'], ['b'])
    >>> docstring_pairs.split_for(splits, split="test")
    (['a', 'b'], ['c'])
    """
    if split not in ("validation", "test"):
        raise ValueError(
            f"`split` must be 'validation' or 'test', got {split!r}."
        )
    if not isinstance(splits, dict):
        raise TypeError(
            "`splits` must be the dict of docstring_pairs.build, got "
            f"{type(splits).__name__}."
        )
    missing = [n for n in ("train", "validation", "test") if n not in splits]
    if missing:
        raise ValueError(
            f"`splits` lacks the splits {missing}; pass the dict of "
            "docstring_pairs.build."
        )
    if split == "validation":
        return splits["train"], splits["validation"]
    return splits["train"] + splits["validation"], splits["test"]


def _main(out, spec):
    """Writes the splits of `spec` (JSON) into `out` as JSON lines."""
    spec = json.loads(spec)
    splits = _build(
        spec["train"], spec["validation"], spec["test"], spec["seed"]
    )
    for name, pairs in splits.items():
        _write_jsonl(pairs, os.path.join(out, f"{name}.jsonl"))


if __name__ == "__main__":
    # Run by build_in_subprocess only.
    _main(*sys.argv[1:])
