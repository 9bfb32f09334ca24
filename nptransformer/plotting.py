"""The trainer's two pictures: the loss curve and an attention heatmap, written as PNG files.

With matplotlib installed they are ordinary labelled matplotlib figures. Without it (the package
needs only NumPy) the same pictures are drawn into a NumPy pixel array and written by a small PNG
encoder (``png_bytes``): axes, grid, curves and digits, no other text. Either way the file is
written atomically (a temporary file renamed over the target), like every file this package
writes. Matplotlib is used through ``matplotlib.figure.Figure`` directly, never ``pyplot``, so
plotting changes no global state (no backend switch, no open figures).
"""
from __future__ import annotations

import math
import struct
import warnings
import zlib

import numpy as np

from .serialization import _atomic_write


def _matplotlib_figure():
    """matplotlib's Figure class, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


# --------------------------------------------------------------------------- PNG without matplotlib
def png_bytes(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as the bytes of a PNG file (8-bit RGB, no interlacing).

    A PNG is a signature and three chunks, each ``length, tag, data, CRC-32 of tag + data``:
    IHDR (width, height, bit depth 8, colour type 2 = RGB), IDAT (the zlib-compressed rows, each
    preceded by its filter type, 0 = none) and IEND.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"png_bytes: expected an (H, W, 3) uint8 array, got shape {rgb.shape} and dtype {rgb.dtype}")
    H, W, _ = rgb.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = np.concatenate([np.zeros((H, 1), dtype=np.uint8), rgb.reshape(H, W * 3)], axis=1)  # filter byte 0
    header = struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b"")


# A 3x5 pixel font for the digits and the few letters the fallback plots write.
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
    ".": ("...", "...", "...", "...", ".#."), "-": ("...", "...", "###", "...", "..."),
    "e": (".#.", "#.#", "###", "#..", ".##"), "s": (".##", "#..", ".#.", "..#", "##."),
    "t": (".#.", "###", ".#.", ".#.", ".##"), "p": ("##.", "#.#", "##.", "#..", "#.."),
    "l": ("#..", "#..", "#..", "#..", ".##"), "o": ("...", ".#.", "#.#", "#.#", ".#."),
    "h": ("#..", "#..", "##.", "#.#", "#.#"), " ": ("...", "...", "...", "...", "..."),
}


def _text(canvas, x, y, text, color=(40, 40, 40), scale=2):
    """Write ``text`` with its top-left corner at pixel (x, y); characters outside the font are skipped."""
    for k, ch in enumerate(text):
        glyph = _GLYPHS.get(ch)
        if glyph is None:
            continue
        mask = np.array([[c == "#" for c in row] for row in glyph]).repeat(scale, 0).repeat(scale, 1)
        x0, y0 = max(x + k * 4 * scale, 0), max(y, 0)
        region = canvas[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        region[mask[: region.shape[0], : region.shape[1]]] = color


def _polyline(canvas, xs, ys, color, width=1):
    """Draw the segments between consecutive points (pixel coordinates) onto ``canvas``."""
    H, W, _ = canvas.shape
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:]):
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        px = np.rint(np.linspace(x0, x1, n)).astype(int)
        py = np.rint(np.linspace(y0, y1, n)).astype(int)
        for d in range(width):
            ok = (px >= 0) & (px < W) & (py + d >= 0) & (py + d < H)
            canvas[py[ok] + d, px[ok]] = color


def _nice_steps(n):
    """About five round tick positions (1, 2 or 5 times a power of ten) in [1, n]."""
    raw = max(n / 5, 1)
    base = 10 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    return [int(v) for v in np.arange(step, n + 1, step)]


def _fallback_loss_png(losses, evals, moving) -> bytes:
    W, H, left, right, top, bottom = 720, 432, 72, 20, 20, 44
    canvas = np.full((H, W, 3), 255, dtype=np.uint8)
    values = np.asarray(losses, dtype=np.float64)
    finite = values[np.isfinite(values) & (values > 0)]
    lo = math.floor(math.log10(finite.min())) if finite.size else -1
    hi = math.ceil(math.log10(finite.max())) if finite.size else 1
    hi = max(hi, lo + 1)
    n = max(len(values), 2)

    def px(step):
        return left + (np.asarray(step, dtype=np.float64) - 1) / (n - 1) * (W - left - right - 1)

    def py(loss):
        logs = np.log10(np.clip(np.asarray(loss, dtype=np.float64), 10.0**lo, 10.0**hi))
        return top + (hi - logs) / (hi - lo) * (H - top - bottom - 1)

    for decade in range(lo, hi + 1):  # horizontal grid at each power of ten, labelled 1e-2 etc.
        y = int(round(float(py(10.0**decade))))
        canvas[y, left : W - right] = (225, 225, 225)
        _text(canvas, 8, y - 5, f"1e{decade}")
    for step in _nice_steps(n):
        x = int(round(float(px(step))))
        canvas[top : H - bottom, x] = (225, 225, 225)
        _text(canvas, x - 4 * len(str(step)), H - bottom + 8, str(step))
    _text(canvas, W - right - 32, H - 14, "step")
    canvas[top : H - bottom, left] = canvas[H - bottom - 1, left : W - right] = (60, 60, 60)
    steps = np.arange(1, len(values) + 1)
    if len(values) > 1:
        _polyline(canvas, px(steps), py(values), (170, 200, 235))
        _polyline(canvas, px(steps), py(moving), (31, 119, 180), width=2)
    for e in evals:
        if e.get("val_loss") is not None and math.isfinite(e["val_loss"]):
            x, y = int(round(float(px(e["step"])))), int(round(float(py(e["val_loss"]))))
            canvas[max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4] = (214, 39, 40)
    return png_bytes(canvas)


_VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)


def _colormap(values):
    """Values in [0, 1] -> RGB (..., 3) uint8, interpolating five colours of viridis."""
    pos = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    i = np.minimum(pos.astype(int), len(_VIRIDIS) - 2)
    frac = (pos - i)[..., None]
    return np.rint(_VIRIDIS[i] * (1 - frac) + _VIRIDIS[i + 1] * frac).astype(np.uint8)


def _fallback_attention_png(weights) -> bytes:
    Hh, T, S = weights.shape
    cell, gap, pad, label = 14, 16, 12, 18
    tile_w = S * cell
    canvas = np.full((pad + T * cell + label + pad, pad + Hh * tile_w + (Hh - 1) * gap + pad, 3), 255, dtype=np.uint8)
    scaled = weights / max(float(weights.max()), 1e-12)
    for h in range(Hh):
        x0 = pad + h * (tile_w + gap)
        tile = _colormap(scaled[h]).repeat(cell, 0).repeat(cell, 1)  # (T, S, 3) -> (T*cell, S*cell, 3)
        canvas[pad : pad + T * cell, x0 : x0 + tile_w] = tile
        _text(canvas, x0, pad + T * cell + 6, f"h{h + 1}")
    return png_bytes(canvas)


# --------------------------------------------------------------------------- the two pictures
def moving_average(values, window):
    """The mean of the last ``window`` values at each position (fewer at the start)."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def _leading_digit(v) -> int:
    return int(round(v / 10 ** math.floor(math.log10(v)))) if v > 0 else 0


def save_loss_curve(path, losses, evals=(), title="training loss"):
    """The training loss per step (light), its moving average (dark) and the validation loss of
    each evaluation (red dots), on a logarithmic axis, as a PNG at ``path``."""
    evals = list(evals)
    moving = moving_average(losses, max(1, len(losses) // 50))
    Figure = _matplotlib_figure()
    if Figure is None:
        data = _fallback_loss_png(losses, evals, moving)
        _atomic_write(path, lambda f: f.write(data))
        return
    fig = Figure(figsize=(7.2, 4.3), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="#aac8eb", linewidth=0.8, label="training loss (per step)")
    ax.plot(steps, moving, color="#1f77b4", linewidth=1.8, label="moving average")
    points = [(e["step"], e["val_loss"]) for e in evals if e.get("val_loss") is not None]
    if points:
        ax.plot(*zip(*points), "o", color="#d62728", label="validation loss")
    if np.all(np.asarray(losses) > 0):
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, not 10^-1
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _leading_digit(v) in (2, 5) else ""))
    ax.set(xlabel="step", ylabel="cross-entropy", title=title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    _atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _label(token: str) -> str:
    """A tick label for a token: a space shows as a middle dot, so it is visible."""
    return token.replace(" ", "\u00b7")


def save_attention_heatmap(path, weights, source_tokens, target_tokens, title="cross-attention"):
    """Per-head attention weights (H, T, S) of one example as a row of heatmaps: row t is the
    t-th output token, column s the s-th source token, brighter = more attention."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 3:
        raise ValueError(f"save_attention_heatmap: expected weights (H, T, S), got shape {weights.shape}")
    Figure = _matplotlib_figure()
    if Figure is None:
        data = _fallback_attention_png(weights)
        _atomic_write(path, lambda f: f.write(data))
        return
    H, T, S = weights.shape
    cols = min(H, 2)
    rows = -(-H // cols)
    fig = Figure(figsize=(max(6.0, cols * (0.2 * S + 0.8)), rows * (0.2 * T + 0.9) + 0.5), dpi=100,
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for h, ax in enumerate(axes):
        if h >= H:
            ax.set_axis_off()
            continue
        ax.imshow(weights[h], cmap="viridis", vmin=0.0, aspect="equal")
        ax.set_xticks(range(S), [_label(t) for t in source_tokens], fontsize=8)
        ax.set_yticks(range(T), [_label(t) for t in target_tokens], fontsize=8)
        ax.set_title(f"head {h + 1}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    with warnings.catch_warnings():  # e.g. "Glyph 24180 missing from font": the tick shows a box
        warnings.simplefilter("ignore", UserWarning)
        _atomic_write(path, lambda f: fig.savefig(f, format="png"))
