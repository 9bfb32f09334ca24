"""The trainer's pictures: a PNG encoder checked by decoding it, the plots with and without matplotlib."""
import struct
import zlib

import numpy as np
import pytest

from nptransformer import plotting


def decode_png(data: bytes) -> np.ndarray:
    """The (H, W, 3) image of an 8-bit RGB PNG with unfiltered rows, every CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body), tag
        chunks.append((tag, body))
        pos += 12 + length
    assert [t for t, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    W, H, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[1][1]), dtype=np.uint8).reshape(H, 1 + 3 * W)
    assert (rows[:, 0] == 0).all()  # filter type "none" on every row
    return rows[:, 1:].reshape(H, W, 3)


def test_png_bytes_round_trip():
    image = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(plotting.png_bytes(image)), image)
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 array"):
        plotting.png_bytes(image.astype(np.float32))


def test_moving_average():
    np.testing.assert_allclose(plotting.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


def test_without_matplotlib_the_plots_are_drawn_into_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(plotting, "_matplotlib_figure", lambda: None)
    losses = list(np.exp(-np.arange(200) / 50.0) * 3 + 0.01)
    plotting.save_loss_curve(tmp_path / "loss.png", losses, [{"step": 100, "val_loss": 0.5}])
    image = decode_png((tmp_path / "loss.png").read_bytes())
    assert image.shape == (432, 720, 3)
    assert ((image == (31, 119, 180)).all(axis=-1)).sum() > 200  # the moving-average curve is drawn
    assert ((image == (214, 39, 40)).all(axis=-1)).sum() == 49  # one 7x7 validation marker

    weights = np.random.default_rng(0).random((2, 3, 5))
    plotting.save_attention_heatmap(tmp_path / "attention.png", weights, list("abcde"), list("xyz"))
    image = decode_png((tmp_path / "attention.png").read_bytes())
    assert image.shape == (12 + 3 * 14 + 18 + 12, 12 + 2 * 5 * 14 + 16 + 12, 3)
    brightest = np.unravel_index(np.argmax(weights), weights.shape)  # drawn yellow, the top of viridis
    h, t, s = brightest
    assert tuple(image[12 + t * 14 + 7, 12 + h * (5 * 14 + 16) + s * 14 + 7]) == (253, 231, 37)


def test_with_matplotlib_the_plots_are_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    plotting.save_loss_curve(tmp_path / "loss.png", [3.0, 2.0, 1.5, 1.0], [{"step": 2, "val_loss": 2.1}])
    plotting.save_attention_heatmap(tmp_path / "attention.png", np.full((3, 2, 4), 0.25), list("2021"), ["1", "<eos>"])
    for name in ("loss.png", "attention.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention.png", "loss.png"]  # no temporary files left
