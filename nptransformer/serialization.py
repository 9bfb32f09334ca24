"""Named arrays to disk and back: safetensors and npz, written atomically, never through pickle.

Two formats, one promise.

* **safetensors** (the format Hugging Face ships weights in). A file is three parts::

      8 bytes   N, the header length, an unsigned 64-bit little-endian integer
      N bytes   a UTF-8 JSON object: {"__metadata__": {str: str},             (optional)
                                      "<name>": {"dtype": "F32", "shape": [2, 3],
                                                 "data_offsets": [begin, end]}, ...}
                padded with spaces so that N is a multiple of 8
      the rest  the tensors' raw little-endian C-order bytes; ``data_offsets`` count from the
                start of this part, and the tensors tile it exactly: no gap, no overlap, no
                byte left over

  The writer orders tensors by decreasing dtype alignment (8-byte types first), then by name,
  as the reference implementation does, so every tensor starts at a multiple of its item size
  and our files are byte-for-byte what the ``safetensors`` package writes.

* **npz**: NumPy's zip of ``.npy`` members, read and written with ``allow_pickle=False``.

The promise: a save writes a temporary file in the target's folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic), so an interrupted save leaves the last good
file in place and no temporary file behind. A load checks everything the file claims before it
trusts it and raises one ``CheckpointError`` that names the file and the problem: missing,
truncated, a header whose sizes or offsets do not add up, an unknown dtype, a file of another
format, or an npz that would need pickle. Nothing is ever unpickled.

This module imports only NumPy and the standard library, so every layer above may use it.
"""
from __future__ import annotations

import json
import math
import os
import struct
import uuid
import zipfile
import zlib
from collections.abc import Callable, Mapping

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint could not be saved or loaded; the message names the file and the reason."""


# --------------------------------------------------------------------------- safetensors dtypes
# safetensors dtype name -> how NumPy reads its bytes (always little-endian on disk).
# BF16 has no NumPy dtype: its 16 bits are the top half of a float32, so it is read as uint16
# and widened to float32 on load (see _decode).
_ST_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# NumPy dtype (by kind and size) -> safetensors name, for writing. BF16 is read-only here.
_NP_TO_ST = {
    ("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16",
    ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16", ("i", 1): "I8",
    ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8",
    ("b", 1): "BOOL",
}
# The reference writer sorts by this order, largest rank first (its Dtype enum order).
_ST_RANK = {name: rank for rank, name in enumerate(
    ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"])}
_MAX_HEADER = 100_000_000          # the reference implementation's limit on N
_METADATA_KEY = "__metadata__"


def _cannot_load(path, why: str) -> CheckpointError:
    return CheckpointError(f"cannot load '{os.fspath(path)}': {why}")


def _cannot_save(path, why: str) -> CheckpointError:
    return CheckpointError(f"cannot save '{os.fspath(path)}': {why}")


# --------------------------------------------------------------------------- atomic writes
def _atomic_write(path, write: Callable) -> None:
    """Call ``write(binary_file)`` on a fresh temporary file beside ``path``, then rename it over
    ``path``. On any exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())           # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):         # no such folder, disk full, no permission, ...
            raise _cannot_save(path, e.strerror or str(e)) from e
        raise
    if os.name == "posix":                 # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _open_for_reading(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise _cannot_load(path, "no such file") from None
    except IsADirectoryError:
        raise _cannot_load(path, "it is a directory, not a file") from None
    except OSError as e:
        raise _cannot_load(path, f"the file cannot be opened ({e.strerror})") from None


def _as_arrays(path, tensors) -> dict[str, np.ndarray]:
    """Check the names and turn every value into a NumPy array, before any file is touched."""
    if not isinstance(tensors, Mapping):
        raise _cannot_save(path, f"tensors must be a dict of name -> array, got {type(tensors).__name__}")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise _cannot_save(path, f"tensor names must be non-empty strings, got {name!r}")
        try:
            arrays[name] = np.asarray(value)
        except TypeError as e:             # e.g. a CuPy array: the caller must copy it to the host
            raise _cannot_save(path, f"tensor '{name}' ({type(value).__name__}) is not a host "
                                     f"(NumPy) array: {e}") from None
    return arrays


# --------------------------------------------------------------------------- safetensors: save
def save_safetensors(path, tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) to ``path`` in the safetensors format, atomically.

    Supported dtypes: float64/32/16, int64/32/16/8, uint64/32/16/8 and bool. ``metadata`` is an
    optional dict of str -> str stored under ``__metadata__`` (e.g. ``{"format": "np"}``).
    """
    arrays = _as_arrays(path, tensors)
    if _METADATA_KEY in arrays:
        raise _cannot_save(path, f"'{_METADATA_KEY}' is reserved for metadata; rename that tensor")
    header = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise _cannot_save(path, "metadata must be a dict of str -> str")
        header[_METADATA_KEY] = dict(metadata)

    dtypes = {}
    for name, a in arrays.items():
        st = _NP_TO_ST.get((a.dtype.kind, a.dtype.itemsize))
        if st is None:
            raise _cannot_save(path, f"tensor '{name}' has dtype {a.dtype}, which safetensors "
                                     f"cannot store (use a float, int, uint or bool dtype)")
        dtypes[name] = st
    order = sorted(arrays, key=lambda name: (-_ST_RANK[dtypes[name]], name))
    offset = 0
    for name in order:
        a = arrays[name]
        header[name] = {"dtype": dtypes[name], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)   # the data starts 8-byte aligned

    def write(f):
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name in order:                 # C order, little-endian, as the format requires
            a = arrays[name]
            f.write(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).data)

    _atomic_write(path, write)


# --------------------------------------------------------------------------- safetensors: load
def _reject_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key '{key}' appears twice")
        seen[key] = value
    return seen


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _read_header(f, path, file_size: int):
    """Read and check the header of an open safetensors file.

    Returns ``(entries, metadata)``: entries are ``(name, dtype, shape, begin, end)`` sorted by
    ``begin``, already checked to tile the data part of the file exactly.
    """
    if file_size < 8:
        raise _cannot_load(path, f"the file has {file_size} bytes, fewer than the 8-byte header "
                                 f"length every safetensors file starts with (truncated, or not "
                                 f"a safetensors file)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > _MAX_HEADER:
        raise _cannot_load(path, f"its first 8 bytes give a header length of {n} bytes, over the "
                                 f"{_MAX_HEADER}-byte limit: not a safetensors file, or corrupted")
    if 8 + n > file_size:
        raise _cannot_load(path, f"its first 8 bytes give a header length of {n} bytes but only "
                                 f"{file_size - 8} bytes follow (truncated, or not a safetensors file)")
    try:
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except UnicodeDecodeError:
        raise _cannot_load(path, "the header is not UTF-8 text: not a safetensors file") from None
    except (ValueError, RecursionError) as e:
        raise _cannot_load(path, f"the header is not a valid JSON object ({e}): not a "
                                 f"safetensors file, or corrupted") from None
    if not isinstance(header, dict):
        raise _cannot_load(path, f"the header is a JSON {type(header).__name__}, not an object")

    metadata = header.pop(_METADATA_KEY, None)
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(v, str) for v in metadata.values())):
        raise _cannot_load(path, f"'{_METADATA_KEY}' must map strings to strings")

    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise _cannot_load(path, f"tensor '{name}' lacks one of dtype, shape, data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
            raise _cannot_load(path, f"tensor '{name}' has dtype {dtype!r}, which this loader "
                                     f"does not read (it reads {', '.join(_ST_DTYPES)})")
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
            raise _cannot_load(path, f"tensor '{name}' has shape {shape!r}; expected a list of "
                                     f"non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
                and offsets[0] <= offsets[1]):
            raise _cannot_load(path, f"tensor '{name}' has data_offsets {offsets!r}; expected "
                                     f"[begin, end] with 0 <= begin <= end")
        begin, end = offsets
        nbytes = math.prod(shape) * _ST_DTYPES[dtype].itemsize
        if end - begin != nbytes:
            raise _cannot_load(path, f"tensor '{name}' is {dtype} of shape {shape} = {nbytes} "
                                     f"bytes, but its data_offsets [{begin}, {end}] span "
                                     f"{end - begin} bytes")
        entries.append((name, dtype, tuple(shape), begin, end))

    entries.sort(key=lambda e: (e[3], e[4]))
    covered, previous = 0, None
    for name, _, _, begin, end in entries:
        if begin < covered:
            raise _cannot_load(path, f"tensor '{name}' (bytes {begin}..{end}) overlaps tensor "
                                     f"'{previous}' (which ends at {covered})")
        if begin > covered:
            raise _cannot_load(path, f"{begin - covered} bytes before tensor '{name}' belong to "
                                     f"no tensor (a gap in the data offsets)")
        covered, previous = end, name
    data_size = file_size - 8 - n
    if covered > data_size:
        raise _cannot_load(path, f"the header describes {covered} bytes of tensor data but the "
                                 f"file holds only {data_size}: the file is truncated")
    if covered < data_size:
        raise _cannot_load(path, f"the last {data_size - covered} bytes of the file belong to no "
                                 f"tensor in the header")
    return entries, metadata


def _decode(path, name, dtype, shape, raw: np.ndarray) -> np.ndarray:
    """The raw bytes of one tensor (a uint8 view) as an array of its dtype and shape."""
    if dtype == "BOOL" and raw.size and raw.max() > 1:
        raise _cannot_load(path, f"tensor '{name}' is BOOL but holds bytes other than 0 and 1")
    a = raw.view(_ST_DTYPES[dtype])
    if not a.flags.aligned:                # a writer that did not sort by alignment
        a = a.copy()
    if dtype == "BF16":                    # bfloat16 = the high 16 bits of a float32
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.reshape(shape)


def load_safetensors(path) -> dict[str, np.ndarray]:
    """Read a safetensors file into a dict name -> NumPy array, in file order.

    Every header claim is checked first (see ``CheckpointError``). BF16 tensors come back as
    float32 (exactly: every bfloat16 is a float32). The arrays are writable and share one buffer
    read from the file; nothing stays open afterwards.
    """
    with _open_for_reading(path) as f:
        file_size = os.fstat(f.fileno()).st_size
        entries, _ = _read_header(f, path, file_size)
        data = np.empty(entries[-1][4] if entries else 0, dtype=np.uint8)
        if f.readinto(data) != data.size:
            raise _cannot_load(path, "the file shrank while it was being read")
    return {name: _decode(path, name, dtype, shape, data[begin:end])
            for name, dtype, shape, begin, end in entries}


def read_safetensors_metadata(path) -> dict[str, str]:
    """The ``__metadata__`` dict of a safetensors file ({} when absent), after the same header
    checks as ``load_safetensors`` but without reading the tensors."""
    with _open_for_reading(path) as f:
        _, metadata = _read_header(f, path, os.fstat(f.fileno()).st_size)
    return dict(metadata or {})


# --------------------------------------------------------------------------- npz
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")   # a zip with members / an empty zip


def save_npz(path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``tensors`` (name -> array) to ``path`` as an uncompressed ``.npz``, atomically.

    Object arrays are refused (they would need pickle); ``np.load(path)`` reads the result.
    """
    arrays = _as_arrays(path, tensors)
    for name, a in arrays.items():
        if a.dtype.hasobject:
            raise _cannot_save(path, f"tensor '{name}' holds Python objects (dtype {a.dtype}); "
                                     f"npz files are written without pickle")

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, a in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)

    _atomic_write(path, write)


def load_npz(path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` file into a dict name -> NumPy array, never unpickling anything."""
    with _open_for_reading(path) as f:
        if f.read(4) not in _ZIP_MAGICS:
            raise _cannot_load(path, "it does not start like a zip archive: not an npz file")
        arrays = {}
        try:
            with zipfile.ZipFile(f) as zf:
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        raise _cannot_load(path, f"member '{info.filename}' is not a .npy array")
                    name = info.filename[: -len(".npy")]
                    if name in arrays:
                        raise _cannot_load(path, f"member '{info.filename}' appears twice")
                    with zf.open(info) as member:
                        try:
                            arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                        except ValueError as e:
                            raise _cannot_load(path, f"member '{info.filename}': {e}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as e:
            raise _cannot_load(path, f"the zip archive is damaged or truncated ({e})") from None
    return arrays
