"""Text corpora: any plain-text file, and English that every Python install carries.

``TextFileDataset(path)`` reads a UTF-8 file of yours, with a one-line ``DataError`` when the file
is missing, empty or not UTF-8. ``stdlib_docstrings()`` collects the docstrings of the Python
standard library: a real English corpus, with no download. Nothing here touches the network.
"""
from __future__ import annotations

import ast
import os
import sysconfig

import numpy as np

from .files import DataError, read_text

_SKIPPED_FOLDERS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})


class TextFileDataset:
    """The text of one UTF-8 file, ready to tokenize and cut into training and validation parts.

    >>> data = TextFileDataset("my_notes.txt")                          # doctest: +SKIP
    >>> tokenizer = BPETokenizer.train(data.text, vocab_size=512)         # doctest: +SKIP
    >>> ids = data.encode(tokenizer)                                      # doctest: +SKIP
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.text = read_text(self.path, what="text file")
        if not self.text.strip():
            raise DataError(f"text file {self.path!r} is empty (it holds only whitespace)")

    def __len__(self) -> int:
        """Number of characters."""
        return len(self.text)

    def encode(self, tokenizer) -> np.ndarray:
        """The whole text as a 1-D int64 array of token ids."""
        return np.asarray(tokenizer.encode(self.text), dtype=np.int64)

    def split(self, val_fraction: float = 0.1) -> tuple[str, str]:
        """(training text, validation text): the last ``val_fraction`` of the characters is held
        out, in one piece, so no validation window overlaps a training one."""
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"TextFileDataset.split: val_fraction must be in (0, 1), got {val_fraction}")
        cut = len(self.text) - max(1, round(len(self.text) * val_fraction))
        return self.text[:cut], self.text[cut:]

    def __repr__(self):
        return f"TextFileDataset({self.path!r}, {len(self.text)} characters)"


def stdlib_source_files() -> list[str]:
    """Paths of the standard library's ``.py`` files, sorted by their path inside it.

    Folders of third-party packages (``site-packages``) and of the library's own tests are left out.
    """
    root = sysconfig.get_path("stdlib")
    if not root or not os.path.isdir(root):
        raise DataError(f"the standard library's source folder {root!r} does not exist on this Python")
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in _SKIPPED_FOLDERS]
        found.extend(os.path.join(folder, f) for f in files if f.endswith(".py"))
    return sorted(found, key=lambda p: os.path.relpath(p, root).replace(os.sep, "/"))


def _docstrings_in_source_order(tree: ast.AST):
    """Docstrings of the module, classes and functions in ``tree``, in the order they are written."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def stdlib_docstrings(limit: int | None = None) -> list[str]:
    """The docstrings of the Python standard library: module, class and function docstrings,
    file by file in sorted path order, each in source order (so the result is deterministic).

    Files are parsed with ``ast``, never imported, so no library code runs; files that do not
    parse are skipped. ``limit`` stops after that many docstrings (fast, for tests).

    Size with CPython 3.11.7 on Linux (the development machine): 734 files, 8,604 docstrings,
    1.79 million characters and about 270,000 words (1.80 million characters joined with
    blank lines); reading all of it takes about 6 s.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"stdlib_docstrings: limit must be a positive integer or None, got {limit!r}")
    docs = []
    for path in stdlib_source_files():
        with open(path, "rb") as f:
            source = f.read()
        try:
            tree = ast.parse(source, filename=path)
        except (SyntaxError, ValueError):
            continue
        for doc in _docstrings_in_source_order(tree):
            docs.append(doc)
            if limit is not None and len(docs) >= limit:
                return docs
    return docs
