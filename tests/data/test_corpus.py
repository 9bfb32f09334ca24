"""Text corpora: a user's text file (and its one-line errors), the standard library's docstrings."""
from __future__ import annotations

import ast
import sysconfig

import numpy as np
import pytest

from nptransformer.data import CharTokenizer, DataError, TextFileDataset, stdlib_docstrings, stdlib_source_files


def test_text_file_dataset_reads_encodes_and_splits(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("héllo wörld, 你好 🙂\n" * 10, encoding="utf-8")
    data = TextFileDataset(path)
    assert data.text == path.read_text(encoding="utf-8") and len(data) == len(data.text)
    ids = data.encode(CharTokenizer.from_text(data.text))
    assert ids.dtype == np.int64 and ids.shape == (len(data),)
    train, val = data.split(0.1)
    assert train + val == data.text and len(val) == round(0.1 * len(data))
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        data.split(1.0)


@pytest.mark.parametrize("name, content, message", [
    ("missing.txt", None, "does not exist"),
    ("empty.txt", b"", "is empty"),
    ("blank.txt", b" \n\t\n", "only whitespace"),
    ("latin1.txt", "caf\xe9 au lait".encode("latin-1"), "is not UTF-8 text: byte 0xe9 at offset 3"),
    ("folder", "dir", "is a directory"),
])
def test_bad_text_files_give_one_line_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        TextFileDataset(path)
    text = str(err.value)
    assert str(path) in text and "\n" not in text
    assert isinstance(err.value, ValueError)
    assert err.value.__context__ is None or err.value.__suppress_context__  # no chained traceback


@pytest.fixture
def fake_stdlib(tmp_path, monkeypatch):
    """A small stand-in for the standard library folder, with files that must be handled carefully."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text('"""Package docstring."""\n')
    (tmp_path / "alpha.py").write_text(
        '"""Alpha module."""\nraise SystemExit("importing this would stop Python")\n'
        'class A:\n    """Class A."""\n    def f(self):\n        """Method f."""\n'
        'async def g():\n    """Coroutine g."""\ndef h():\n    pass\n'
    )
    (tmp_path / "broken.py").write_text('"""Never read."""\ndef (:\n')
    (tmp_path / "zeta.py").write_bytes('# -*- coding: latin-1 -*-\n"""Z\xe9ta."""\n'.encode("latin-1"))
    for skipped in ("site-packages", "test", "__pycache__"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "m.py").write_text('"""Should be skipped."""\n')
    real_get_path = sysconfig.get_path

    def get_path(name, *args, **kwargs):
        return str(tmp_path) if name == "stdlib" else real_get_path(name, *args, **kwargs)

    monkeypatch.setattr(sysconfig, "get_path", get_path)
    return tmp_path


def test_docstrings_are_parsed_not_imported_in_sorted_source_order(fake_stdlib):
    relative = [p[len(str(fake_stdlib)) + 1 :] for p in stdlib_source_files()]
    assert relative == ["alpha.py", "broken.py", "pkg/__init__.py", "zeta.py"]
    # alpha.py would raise SystemExit if imported; broken.py does not parse and is skipped;
    # zeta.py declares latin-1, which ast honours.
    assert stdlib_docstrings() == ["Alpha module.", "Class A.", "Method f.", "Coroutine g.", "Package docstring.", "Zéta."]
    assert stdlib_docstrings(limit=2) == ["Alpha module.", "Class A."]


def test_missing_stdlib_folder_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="does not exist"):
        stdlib_docstrings()


def test_real_stdlib_docstrings_are_english_and_deterministic():
    docs = stdlib_docstrings(limit=40)
    assert len(docs) == 40 and docs == stdlib_docstrings(limit=40)
    assert all(isinstance(d, str) and d.strip() for d in docs)
    first_file = stdlib_source_files()[0]
    with open(first_file, "rb") as f:
        assert docs[0] == ast.get_docstring(ast.parse(f.read()))
    words = " ".join(docs).lower().split()
    assert words.count("the") > 20
    assert not any("site-packages" in p for p in stdlib_source_files())
    with pytest.raises(ValueError, match="positive integer"):
        stdlib_docstrings(limit=0)
