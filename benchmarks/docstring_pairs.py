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
- The script runs with PYTHONHASHSEED=0 (it restarts itself so), since
  some docstrings are formatted from sets at import time.
- The train/validation split is by package (`VALIDATION`), drawn from the
  training packages; the order of the training pairs is shuffled with a
  fixed seed. The output depends only on the installed versions, which
  requirements-dev.txt pins (Python's own for the standard library).

Run `python benchmarks/docstring_pairs.py --out DIR` to write
`train.jsonl`, `validation.jsonl` and `test.jsonl` (one
`{"query", "document", "package", "name"}` object per line), the input of
`keras-mrl finetune --pairs`.
"""

import argparse
import contextlib
import importlib
import inspect
import io
import json
import os
import pkgutil
import random
import subprocess
import sys
import tempfile
import warnings

SEED = 0
# Standard-library modules with many documented callables and no side
# effects on import.
STDLIB = (
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
TRAIN = ("numpy", "sklearn", "keras", "matplotlib", "jax") + STDLIB
# Held out from TRAIN to choose settings on: never the test split.
VALIDATION = ("matplotlib",)
TEST = ("scipy",)
# Subpackages that are private in all but name, import other frameworks, or
# hold tests.
SKIPPED = (
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
MIN_QUERY_CHARS = 12
MIN_DOCUMENT_CHARS = 40


def _private(name):
    parts = name.split(".")
    return any(
        p.startswith("_") or p in ("tests", "testing", "conftest")
        for p in parts
    ) or any(name == s or name.startswith(s + ".") for s in SKIPPED)


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


def split_docstring(doc):
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
        len(summary) < MIN_QUERY_CHARS
        or len(rest) < MIN_DOCUMENT_CHARS
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


def collect(packages):
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
                    parts = split_docstring(obj.__doc__)
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


def build(train=TRAIN, validation=VALIDATION, test=TEST, seed=SEED):
    """Returns `{"train", "validation", "test"}` lists of pairs.

    Args:
        train: the training packages (validation ones included).
        validation: packages of `train` held out for choosing settings.
        test: the test packages, disjoint from `train`.
        seed: int seed of the shuffle of each split.

    Raises:
        ValueError: when a package is in both `train` and `test`, or a
            validation package is not a training one.
    """
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(f"packages in both train and test: {overlap}")
    if not set(validation) <= set(train):
        raise ValueError(
            f"validation packages {sorted(set(validation) - set(train))} "
            "are not training packages"
        )
    pool = collect(train)
    held = set(validation)
    splits = {
        "train": [p for p in pool if p["package"] not in held],
        "validation": [p for p in pool if p["package"] in held],
    }
    known_queries = {p["query"] for p in pool}
    known_documents = {p["document"] for p in pool}
    splits["test"] = [
        p
        for p in collect(test)
        if p["query"] not in known_queries
        and p["document"] not in known_documents
    ]
    for name, pairs in splits.items():
        random.Random(f"{seed}-{name}").shuffle(pairs)
    return splits


def read_jsonl(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def write_jsonl(pairs, path):
    with open(path, "w", encoding="utf-8") as file:
        for pair in pairs:
            file.write(json.dumps(pair, ensure_ascii=False) + "\n")


def build_in_subprocess():
    """Returns `{"train", "validation", "test"}` pairs, built in a new process.

    Importing every module of the packages leaves side effects (backends,
    plotting) behind, so a benchmark builds the pairs in a fresh process.
    """
    with tempfile.TemporaryDirectory() as out:
        built = subprocess.run(
            [sys.executable, __file__, "--out", out],
            capture_output=True,
            text=True,
        )
        if built.returncode:
            sys.exit(f"docstring_pairs.py failed:\n{built.stderr}")
        return {
            name: read_jsonl(os.path.join(out, f"{name}.jsonl"))
            for name in ("train", "validation", "test")
        }


def split_for(splits, split):
    """`(train, evaluation)` pairs: validation, or test with train+val."""
    if split == "validation":
        return splits["train"], splits["validation"]
    return splits["train"] + splits["validation"], splits["test"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="directory for train/validation/test.jsonl",
    )
    args = parser.parse_args(argv)
    # Some docstrings are formatted from sets at import time (scipy's
    # deprecation notes), so their text follows the hash seed; keras'
    # public modules are the same under every backend, but one fixed
    # backend keeps even their import-time details identical.
    if (
        os.environ.get("PYTHONHASHSEED") != "0"
        or os.environ.get("KERAS_BACKEND") != "jax"
    ):
        env = dict(os.environ, PYTHONHASHSEED="0", KERAS_BACKEND="jax")
        return subprocess.call(
            [sys.executable, os.path.abspath(__file__), "--out", args.out],
            env=env,
        )
    splits = build()
    os.makedirs(args.out, exist_ok=True)
    for name, pairs in splits.items():
        write_jsonl(pairs, os.path.join(args.out, f"{name}.jsonl"))
        packages = sorted({p["package"] for p in pairs})
        print(f"{name}: {len(pairs)} pairs from {len(packages)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
