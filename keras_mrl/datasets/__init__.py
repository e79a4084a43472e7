"""Data sets built offline from what is installed, for examples and
benchmarks.

`keras_mrl.datasets.docstring_pairs` builds (query, document) pairs from
the docstrings of installed packages, split by package.
"""

from keras_mrl.datasets import docstring_pairs

__all__ = ["docstring_pairs"]
