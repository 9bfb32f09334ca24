"""Figures for the experiments: matplotlib's ``Figure`` used directly (never ``pyplot``, so no
global state changes), written atomically like every file this package writes."""
from __future__ import annotations

from ..plotting import _matplotlib_figure
from ..serialization import _atomic_write


def figure(width: float, height: float):
    """A new constrained-layout Figure of ``width`` x ``height`` inches; a one-line error when
    matplotlib is missing (the experiments' plots need it; their numbers do not)."""
    Figure = _matplotlib_figure()
    if Figure is None:
        raise RuntimeError("the experiments' plots need matplotlib (pip install matplotlib); the numbers do not")
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save(fig, path) -> None:
    """Write ``fig`` to ``path`` as PNG, atomically."""
    _atomic_write(path, lambda f: fig.savefig(f, format="png"))
