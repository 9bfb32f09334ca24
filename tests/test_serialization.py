"""safetensors and npz: round trips, every way a file can lie or break, atomic saves, and
byte-for-byte agreement with the reference `safetensors` package (skipped when it is absent)."""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import numpy as np
import pytest

from nptransformer import serialization
from nptransformer.serialization import (
    CheckpointError,
    load_npz,
    load_safetensors,
    read_safetensors_metadata,
    save_npz,
    save_safetensors,
)

WRITABLE = ["float64", "float32", "float16", "int64", "int32", "int16", "int8",
            "uint64", "uint32", "uint16", "uint8", "bool"]


def sample(dtype, shape=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def mixed_tensors():
    t = {f"w.{d}": sample(d, seed=i) for i, d in enumerate(WRITABLE)}
    t["empty"] = np.zeros((0, 3), np.float32)
    t["scalar"] = np.array(2.5, np.float64)
    return t


def assert_same(loaded, expected):
    assert set(loaded) == set(expected)
    for name, a in expected.items():
        assert loaded[name].dtype == a.dtype, name
        assert loaded[name].shape == a.shape, name
        np.testing.assert_array_equal(loaded[name], a, err_msg=name)


def st_bytes(header: dict, data: bytes, pad=True) -> bytes:
    """A safetensors file written by hand, so that the header can say anything."""
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write(tmp_path, name, content: bytes):
    p = tmp_path / name
    p.write_bytes(content)
    return p


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", WRITABLE)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (2, 0, 4), (3, 1, 2, 2)])
def test_safetensors_round_trip_every_dtype_and_shape(tmp_path, dtype, shape):
    a = sample(dtype, shape)
    save_safetensors(tmp_path / "t.safetensors", {"a": a})
    assert_same(load_safetensors(tmp_path / "t.safetensors"), {"a": a})


@pytest.mark.parametrize("dtype", WRITABLE)
def test_npz_round_trip_every_dtype(tmp_path, dtype):
    t = {"a": sample(dtype), "b/nested.name": sample(dtype, (4,), seed=1), "s": sample(dtype, ())}
    save_npz(tmp_path / "t.npz", t)
    assert_same(load_npz(tmp_path / "t.npz"), t)
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:   # a plain NumPy npz
        assert_same(dict(z), t)


def test_safetensors_many_tensors_metadata_and_alignment(tmp_path):
    t = mixed_tensors()
    p = tmp_path / "m.safetensors"
    save_safetensors(p, t, metadata={"format": "np", "step": "12", "note": "héllo"})
    loaded = load_safetensors(p)
    assert_same(loaded, t)
    for a in loaded.values():
        assert a.flags.aligned and a.flags.writeable and a.flags.c_contiguous
    assert read_safetensors_metadata(p) == {"format": "np", "step": "12", "note": "héllo"}
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8 + n - 1:8 + n] in (b"}", b" ")
    header = json.loads(raw[8:8 + n])
    assert next(iter(header)) == "__metadata__"
    for name, info in header.items():
        if name != "__metadata__":          # every tensor starts at a multiple of its item size
            assert info["data_offsets"][0] % t[name].dtype.itemsize == 0


def test_non_contiguous_and_big_endian_inputs_are_stored_as_values(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = {"transposed": a.T, "strided": a[:, ::2], "big": a.astype(">f4"), "fortran": np.asfortranarray(a)}
    save_safetensors(tmp_path / "t.safetensors", t)
    loaded = load_safetensors(tmp_path / "t.safetensors")
    for name, v in t.items():
        np.testing.assert_array_equal(loaded[name], v)
        assert loaded[name].dtype == np.float32
    assert read_safetensors_metadata(tmp_path / "t.safetensors") == {}


def test_empty_dict_round_trips(tmp_path):
    save_safetensors(tmp_path / "e.safetensors", {})
    save_npz(tmp_path / "e.npz", {})
    assert load_safetensors(tmp_path / "e.safetensors") == {}
    assert load_npz(tmp_path / "e.npz") == {}
    assert (tmp_path / "e.safetensors").read_bytes() == b"\x08" + b"\x00" * 7 + b"{}      "


def test_bf16_is_decoded_to_float32(tmp_path):
    # bfloat16 keeps the top 16 bits of a float32: 1.0 = 0x3F80, -2.0 = 0xC000, 0.5 = 0x3F00,
    # 3.140625 = 0x4049 (pi rounded to 8 significant bits), +inf = 0x7F80, smallest normal 0x0080.
    bits = np.array([0x3F80, 0xC000, 0x3F00, 0x4049, 0x7F80, 0x0080], dtype="<u2")
    p = write(tmp_path, "bf16.safetensors",
              st_bytes({"x": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}, bits.tobytes()))
    x = load_safetensors(p)["x"]
    assert x.dtype == np.float32 and x.shape == (2, 3)
    np.testing.assert_array_equal(
        x.ravel(), np.array([1.0, -2.0, 0.5, 3.140625, np.inf, 2.0 ** -126], np.float32))


def test_unaligned_tensors_from_other_writers_are_read(tmp_path):
    # An int8 first puts the float32 at byte 1: legal, just not how the reference writes it.
    f = np.array([1.5, -2.0], "<f4")
    p = write(tmp_path, "u.safetensors", st_bytes(
        {"b": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]},
         "f": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]}}, b"\x07" + f.tobytes()))
    out = load_safetensors(p)
    np.testing.assert_array_equal(out["f"], f)
    assert out["f"].flags.aligned and out["b"][0] == 7


# --------------------------------------------------------------------------- bad input to save
@pytest.mark.parametrize("save", [save_safetensors, save_npz])
@pytest.mark.parametrize("tensors, words", [
    ({"a": np.array([object(), 1], dtype=object)}, "object"),
    ({3: np.zeros(2)}, "names"),
    ({"": np.zeros(2)}, "names"),
    ([np.zeros(2)], "dict"),
])
def test_save_refuses_what_it_cannot_store(tmp_path, save, tensors, words):
    with pytest.raises(CheckpointError, match=words) as e:
        save(tmp_path / "x", tensors)
    assert str(tmp_path / "x") in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tensors, metadata, words", [
    ({"c": np.zeros(2, np.complex64)}, None, "complex64"),
    ({"s": np.array(["a", "b"])}, None, "cannot store"),
    ({"__metadata__": np.zeros(2)}, None, "reserved"),
    ({"a": np.zeros(2)}, {"k": 1}, "str -> str"),
    ({"a": np.zeros(2)}, ["k"], "str -> str"),
])
def test_save_safetensors_refuses_bad_dtypes_and_metadata(tmp_path, tensors, metadata, words):
    with pytest.raises(CheckpointError, match=words):
        save_safetensors(tmp_path / "x.safetensors", tensors, metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_save_into_a_missing_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no-such-folder"):
        save_safetensors(tmp_path / "no-such-folder" / "x.safetensors", {"a": np.zeros(1)})


# --------------------------------------------------------------------------- files that lie
GOOD_DATA = np.arange(6, dtype="<f4").tobytes() + np.array([7, 8], "<i8").tobytes()
GOOD_HEADER = {"f": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
               "i": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}


def test_hand_written_reference_file_loads(tmp_path):
    out = load_safetensors(write(tmp_path, "ok.safetensors", st_bytes(GOOD_HEADER, GOOD_DATA)))
    np.testing.assert_array_equal(out["f"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(out["i"], [7, 8])
    # Header order does not matter; the offsets do.
    reordered = {"i": GOOD_HEADER["i"], "f": GOOD_HEADER["f"]}
    out2 = load_safetensors(write(tmp_path, "ok2.safetensors", st_bytes(reordered, GOOD_DATA, pad=False)))
    assert_same(out2, out)


def with_entry(name, **changes):
    h = json.loads(json.dumps(GOOD_HEADER))
    h[name].update(changes)
    return h


LIES = {
    "size does not match dtype x shape": (with_entry("f", shape=[2, 2]), GOOD_DATA, "16 bytes"),
    "dtype changes the size": (with_entry("i", dtype="I32"), GOOD_DATA, "8 bytes"),
    "overlapping tensors": ({"f": GOOD_HEADER["f"],
                             "g": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
                             "i": GOOD_HEADER["i"]}, GOOD_DATA, "overlaps"),
    "a gap between tensors": ({"f": {"dtype": "F32", "shape": [5], "data_offsets": [0, 20]},
                               "i": GOOD_HEADER["i"]}, GOOD_DATA, "gap"),
    "offsets beyond the file": (with_entry("i", shape=[3], data_offsets=[24, 48]), GOOD_DATA, "truncated"),
    "bytes no tensor owns": (GOOD_HEADER, GOOD_DATA + b"\0" * 8, "belong to no tensor"),
    "first tensor not at 0": ({"i": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}},
                              GOOD_DATA, "gap"),
    "begin after end": (with_entry("i", data_offsets=[40, 24]), GOOD_DATA, "data_offsets"),
    "three offsets": (with_entry("i", data_offsets=[24, 32, 40]), GOOD_DATA, "data_offsets"),
    "negative offset": (with_entry("f", data_offsets=[-8, 16]), GOOD_DATA, "data_offsets"),
    "string offsets": (with_entry("f", data_offsets=["0", "24"]), GOOD_DATA, "data_offsets"),
    "negative dimension": (with_entry("f", shape=[-2, -3]), GOOD_DATA, "shape"),
    "float dimension": (with_entry("f", shape=[2.0, 3]), GOOD_DATA, "shape"),
    "bool dimension": (with_entry("f", shape=[True, 6]), GOOD_DATA, "shape"),
    "unknown dtype": (with_entry("f", dtype="Q4_K"), GOOD_DATA, "Q4_K"),
    "fp8 dtype": (with_entry("f", dtype="F8_E4M3", shape=[24]), GOOD_DATA, "F8_E4M3"),
    "dtype not a string": (with_entry("f", dtype=["F32"]), GOOD_DATA, "dtype"),
    "missing shape": ({"f": {"dtype": "F32", "data_offsets": [0, 24]}}, GOOD_DATA[:24], "lacks"),
    "entry not an object": ({"f": [0, 24]}, GOOD_DATA[:24], "lacks"),
    "metadata not strings": ({"__metadata__": {"step": 3}, **GOOD_HEADER}, GOOD_DATA, "__metadata__"),
    "header is a list": ([1, 2], b"", "not an object"),
    "bool bytes other than 0/1": ({"b": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}},
                                  b"\x01\x02", "BOOL"),
}


@pytest.mark.parametrize("case", list(LIES))
def test_lying_headers_raise_one_clear_error(tmp_path, case):
    header, data, words = LIES[case]
    p = write(tmp_path, "lie.safetensors", st_bytes(header, data))
    with pytest.raises(CheckpointError, match=words) as e:
        load_safetensors(p)
    assert str(p) in str(e.value)


def test_duplicate_tensor_names_are_refused(tmp_path):
    h = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    p = write(tmp_path, "dup.safetensors", struct.pack("<Q", len(h)) + h + b"\x01")
    with pytest.raises(CheckpointError, match="appears twice"):
        load_safetensors(p)


def test_every_truncation_of_a_file_is_detected(tmp_path):
    save_safetensors(tmp_path / "full.safetensors", {"a": np.arange(5, dtype=np.int16), "b": np.ones(3)},
                     metadata={"k": "v"})
    full = (tmp_path / "full.safetensors").read_bytes()
    for cut in range(len(full)):
        p = write(tmp_path, "cut.safetensors", full[:cut])
        with pytest.raises(CheckpointError) as e:
            load_safetensors(p)
        assert str(p) in str(e.value), cut


@pytest.mark.parametrize("content, words", [
    (b"", "fewer than the 8-byte"),
    (b"\x10\x00\x00", "fewer than the 8-byte"),
    (struct.pack("<Q", 2 ** 40) + b"{}", "over the"),
    (struct.pack("<Q", 64) + b"{}      ", "only 8 bytes follow"),
    (struct.pack("<Q", 8) + b"\xff\xfe{}    ", "not UTF-8"),
    (struct.pack("<Q", 8) + b"{'a': 1}", "not a valid JSON"),
    (struct.pack("<Q", 8) + b"{}      " + b"x", "belong to no tensor"),
])
def test_broken_prefixes(tmp_path, content, words):
    p = write(tmp_path, "b.safetensors", content)
    with pytest.raises(CheckpointError, match=words):
        load_safetensors(p)


# --------------------------------------------------------------------------- foreign files
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 40
PICKLE = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94."


def npy_bytes():
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    return buf.getvalue()


@pytest.mark.parametrize("content", [PNG, PICKLE, b"hello, world\n" * 10, b"PK\x03\x04garbage", b"\x00" * 64],
                         ids=["png", "pickle", "text", "fake-zip", "zeros"])
def test_foreign_files_are_refused_by_both_loaders(tmp_path, content):
    p = write(tmp_path, "foreign.bin", content)
    for load in (load_safetensors, load_npz):
        with pytest.raises(CheckpointError) as e:
            load(p)
        assert str(p) in str(e.value)


def test_each_loader_refuses_the_other_format(tmp_path):
    save_npz(tmp_path / "a.npz", {"a": np.ones(3)})
    save_safetensors(tmp_path / "a.safetensors", {"a": np.ones(3)})
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_safetensors(tmp_path / "a.npz")
    with pytest.raises(CheckpointError, match="not an npz file"):
        load_npz(tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="not an npz file"):
        load_npz(write(tmp_path, "a.npy", npy_bytes()))


@pytest.mark.parametrize("load", [load_safetensors, load_npz, read_safetensors_metadata])
def test_missing_file_and_directory(tmp_path, load):
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="directory"):
        load(tmp_path)


# --------------------------------------------------------------------------- npz specifics
def test_npz_with_object_arrays_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:                            # unpickling this would create `marker`
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    p = tmp_path / "evil.npz"
    np.savez(p, ok=np.ones(2), evil=np.array([Payload()], dtype=object))
    with pytest.raises(CheckpointError, match="pickle") as e:
        load_npz(p)
    assert "evil.npy" in str(e.value) and str(p) in str(e.value)
    assert not marker.exists()
    np.load(p, allow_pickle=True)["evil"]     # the payload is live: pickle would have run it
    assert marker.exists()


def test_npz_damage(tmp_path):
    save_npz(tmp_path / "good.npz", {"a": np.arange(10.0), "b": np.ones((2, 2), np.int32)})
    full = (tmp_path / "good.npz").read_bytes()
    for cut in range(4, len(full), 7):        # every 7th truncation point
        with pytest.raises(CheckpointError):
            load_npz(write(tmp_path, "cut.npz", full[:cut]))
    flipped = bytearray(full)
    flipped[full.index(np.arange(10.0).tobytes()) + 3] ^= 0xFF   # a data byte: the CRC catches it
    with pytest.raises(CheckpointError, match="damaged"):
        load_npz(write(tmp_path, "flip.npz", bytes(flipped)))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.npy", npy_bytes())
        zf.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match="readme.txt"):
        load_npz(write(tmp_path, "extra.npz", buf.getvalue()))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.npy", b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(CheckpointError, match="a.npy"):
        load_npz(write(tmp_path, "badnpy.npz", buf.getvalue()))


def test_compressed_npz_from_numpy_loads(tmp_path):
    t = {"a": np.arange(100.0).reshape(10, 10), "m": np.tri(4, dtype=bool)}
    np.savez_compressed(tmp_path / "c.npz", **t)
    assert_same(load_npz(tmp_path / "c.npz"), t)


# --------------------------------------------------------------------------- atomic saves
OLD = {"w": np.arange(4, dtype=np.float32)}
NEW = {"w": np.full((1000,), 7.0, dtype=np.float32), "b": np.ones(3)}


def check_old_file_survived(tmp_path, name, load):
    assert sorted(os.listdir(tmp_path)) == [name]          # no temporary file left behind
    assert_same(load(tmp_path / name), OLD)


@pytest.mark.parametrize("save, load, name", [(save_safetensors, load_safetensors, "m.safetensors"),
                                              (save_npz, load_npz, "m.npz")])
def test_disk_full_in_the_middle_of_a_save_keeps_the_old_file(tmp_path, monkeypatch, save, load, name):
    save(tmp_path / name, OLD)
    real_open = open

    class FillsUp(io.FileIO):                 # the disk fills after 100 bytes
        def write(self, b):
            if self.tell() + len(memoryview(b).cast("B")) > 100:
                raise OSError(28, "No space left on device")
            return super().write(b)

    def fake_open(file, mode="r", *args, **kwargs):
        if mode == "xb":
            return io.BufferedWriter(FillsUp(file, "xb"), buffer_size=16)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(serialization, "open", fake_open, raising=False)
    with pytest.raises(CheckpointError, match="No space left") as e:
        save(tmp_path / name, NEW)
    assert str(tmp_path / name) in str(e.value)
    monkeypatch.undo()
    check_old_file_survived(tmp_path, name, load)


@pytest.mark.parametrize("save, load, name", [(save_safetensors, load_safetensors, "m.safetensors"),
                                              (save_npz, load_npz, "m.npz")])
def test_interrupt_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch, save, load, name):
    save(tmp_path / name, OLD)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):    # propagates unchanged
        save(tmp_path / name, NEW)
    monkeypatch.undo()
    check_old_file_survived(tmp_path, name, load)


def test_npz_interrupted_between_members_keeps_the_old_file(tmp_path, monkeypatch):
    save_npz(tmp_path / "m.npz", OLD)
    real = np.lib.format.write_array
    calls = []

    def second_member_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", second_member_fails)
    with pytest.raises(KeyboardInterrupt):
        save_npz(tmp_path / "m.npz", NEW)
    monkeypatch.undo()
    check_old_file_survived(tmp_path, "m.npz", load_npz)


def test_successful_save_replaces_the_file_with_ordinary_permissions(tmp_path):
    save_safetensors(tmp_path / "m.safetensors", OLD)
    save_safetensors(tmp_path / "m.safetensors", NEW)
    assert_same(load_safetensors(tmp_path / "m.safetensors"), NEW)
    (tmp_path / "plain").write_bytes(b"")
    assert os.stat(tmp_path / "m.safetensors").st_mode == os.stat(tmp_path / "plain").st_mode


# --------------------------------------------------------------------------- the reference package
@pytest.fixture
def st_numpy():
    return pytest.importorskip("safetensors.numpy")


def test_our_bytes_equal_the_reference_writer(tmp_path, st_numpy):
    t = mixed_tensors()
    t["ünïcode.name"] = np.ones((2, 2), np.float16)
    # One metadata key: the reference keeps metadata in a hash map, so with several keys its
    # order (and so its bytes) changes from run to run; ours keeps the caller's order.
    save_safetensors(tmp_path / "ours.safetensors", t, metadata={"format": "np"})
    assert (tmp_path / "ours.safetensors").read_bytes() == st_numpy.save(t, metadata={"format": "np"})
    save_safetensors(tmp_path / "nometa.safetensors", t)
    assert (tmp_path / "nometa.safetensors").read_bytes() == st_numpy.save(t)


def test_reference_and_ours_read_each_other(tmp_path, st_numpy):
    t = mixed_tensors()
    st_numpy.save_file(t, str(tmp_path / "ref.safetensors"), metadata={"k": "v"})
    assert_same(load_safetensors(tmp_path / "ref.safetensors"), t)
    assert read_safetensors_metadata(tmp_path / "ref.safetensors") == {"k": "v"}
    save_safetensors(tmp_path / "ours.safetensors", t)
    assert_same(st_numpy.load_file(str(tmp_path / "ours.safetensors")), t)


def test_reference_rejects_what_we_reject(tmp_path, st_numpy):
    """Our checks are no stricter than the format: the reference refuses the same lying files
    (the dtype/BOOL cases are ours alone: it reads unknown dtypes' bytes lazily, BOOL as is)."""
    for case in ["size does not match dtype x shape", "overlapping tensors", "a gap between tensors",
                 "offsets beyond the file", "bytes no tensor owns", "begin after end"]:
        header, data, _ = LIES[case]
        with pytest.raises(Exception):
            st_numpy.load(st_bytes(header, data))


def test_bf16_written_by_torch_through_the_reference(tmp_path, st_numpy):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    x = torch.tensor([[1.0, -2.5, 3.140625], [1e-3, 65504.0, -0.0]], dtype=torch.bfloat16)
    st_torch.save_file({"x": x, "y": torch.arange(3, dtype=torch.int16)}, str(tmp_path / "bf.safetensors"))
    out = load_safetensors(tmp_path / "bf.safetensors")
    assert out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"], x.float().numpy())
    np.testing.assert_array_equal(out["y"], [0, 1, 2])
