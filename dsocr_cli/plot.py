"""Precision against compression ratio, one line per mode: the paper's Table 2 as a picture.

matplotlib is an optional extra (`pip install 'dsocr[plot]'`); the figure is built without pyplot,
so no display or GUI backend is involved.
"""
from __future__ import annotations

import importlib.util

from .errors import DsocrError

INSTALL_HINT = "--plot needs matplotlib: pip install 'dsocr[plot]'"


def require_matplotlib() -> None:
    """Fail before any model run, not after it."""
    if importlib.util.find_spec("matplotlib") is None:
        raise DsocrError(INSTALL_HINT)


def curve(points: list[tuple[float, float]], max_points: int = 10) -> list[tuple[float, float]]:
    """(ratio, precision) points sorted by ratio; beyond max_points, averaged in equal-size groups
    of neighbours so the line shows the trend rather than page-to-page noise."""
    points = sorted(points)
    if len(points) <= max_points:
        return points
    import numpy as np

    return [tuple(group.mean(axis=0)) for group in np.array_split(np.array(points), max_points)]


def precision_figure(series: dict[str, list[tuple[float, float]]]):
    """One line per label through its (compression ratio, precision 0..1) points; pages as dots."""
    require_matplotlib()
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    for label, points in series.items():
        if not points:
            continue
        xs, ys = zip(*points)
        dots = axes.scatter(xs, [100 * y for y in ys], s=10, alpha=0.25)
        cx, cy = zip(*curve(points))
        axes.plot(cx, [100 * y for y in cy], marker="o", color=dots.get_facecolor()[0][:3], label=label)
    for ratio in (10, 20):
        axes.axvline(ratio, color="grey", linewidth=0.8, linestyle=":")
    axes.xaxis.set_major_formatter(lambda value, _: f"{value:g}x")
    axes.set_xlim(left=0)
    axes.set_ylim(0, 102)
    axes.set_xlabel("compression ratio (text tokens / vision tokens)")
    axes.set_ylabel("precision (%)")
    axes.set_title("OCR precision against optical compression")
    axes.grid(alpha=0.3)
    axes.legend(title="mode")
    return figure
