"""Reading and writing the data layer's files, with one-line errors.

Every failure a user can cause with a path (it does not exist, it is a folder, it is empty, it is
not UTF-8, it is not the JSON we wrote) raises ``DataError`` with one line that names the file.
Writes are atomic: the text goes to a temporary file beside the target, is flushed to disk, and
then ``os.replace`` swaps it in, so a crash leaves either the old file or the new one, never half
of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile


class DataError(ValueError):
    """A data file is missing, empty, undecodable or malformed; the message names the file."""


def read_text(path, *, what: str = "text file") -> str:
    """The whole file at ``path`` decoded as UTF-8; ``DataError`` if that is impossible or empty.

    ``what`` names the kind of file in the message ("text file", "tokenizer file", ...).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{what} {name!r} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {name!r} is a directory, not a file") from None
    except OSError as err:
        raise DataError(f"{what} {name!r} cannot be read: {err.strerror}") from None
    if not data:
        raise DataError(f"{what} {name!r} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = data[err.start : err.start + 1].hex()
        raise DataError(f"{what} {name!r} is not UTF-8 text: byte 0x{bad} at offset {err.start}") from None


def read_json(path, *, what: str) -> dict:
    """The JSON object stored at ``path``; ``DataError`` naming the file if it is not one."""
    name = os.fspath(path)
    text = read_text(name, what=what)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{what} {name!r} is not valid JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{what} {name!r} holds a JSON {type(obj).__name__}, expected an object")
    return obj


def write_text_atomically(path, text: str, *, what: str = "file") -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and ``os.replace``."""
    name = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(name))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    except OSError as err:
        raise DataError(f"cannot write {what} {name!r}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise DataError(f"cannot write {what} {name!r}: {err.strerror}") from None
        raise
