"""What every report plot must be, checked: labelled axes, readable tick labels, something drawn, rates on [0, 1].

Plot nodes build their figures with matplotlib and call :func:`no_data` for a panel that has nothing to show
(the panel then says why instead of staying empty). :func:`figure_problems` lists what is wrong with a figure;
the catalog's figure dataset (:class:`ru_rlhf.io.datasets.AtomicMatplotlibDataset`) logs them as warnings when
it saves, and ``tests/e2e`` renders every plot node of the smoke run and requires none.
"""

from __future__ import annotations

NO_DATA = "no data: "


def no_data(ax, why: str) -> None:
    """Mark ``ax`` as a panel with nothing to show, saying why (instead of an empty frame)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, NO_DATA + why, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)


def wrap_label(text: str, width: int = 28) -> str:
    """A long tick label on lines of at most ``width`` characters (split at ``/``, ``-`` or spaces)."""
    import re
    import textwrap

    parts = re.split(r"(?<=[/ ])|(?<=-vs-)", str(text))
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part) > width:
            lines.append(line.rstrip())
            line = ""
        line += part
    lines.append(line.rstrip())
    return "\n".join(x for piece in lines for x in textwrap.wrap(piece, width) or [""])


def _is_no_data(ax) -> bool:
    return any(t.get_text().startswith(NO_DATA) for t in ax.texts)


def _drawn(ax) -> bool:
    """Lines, collections or images, or bars / patches of non-zero size."""
    if ax.lines or ax.collections or ax.images:
        return True
    return any(abs(p.get_height()) > 0 and abs(p.get_width()) > 0 for p in ax.patches
               if hasattr(p, "get_height") and hasattr(p, "get_width"))


def _overlaps(labels, vertical: bool) -> int:
    """How many neighbouring visible tick labels overlap on screen."""
    boxes = sorted((lb.get_window_extent() for lb in labels if lb.get_visible() and lb.get_text()),
                   key=lambda b: b.y0 if vertical else b.x0)
    return sum(1 for a, b in zip(boxes, boxes[1:]) if (b.y0 < a.y1 - 0.5 if vertical else b.x0 < a.x1 - 0.5))


def figure_problems(fig, name: str = "figure", drawn: bool = False) -> list[str]:
    """What is wrong with ``fig`` for a report: per panel, a missing axis label, nothing drawn (and no
    :func:`no_data` note), overlapping or tiny tick labels, or a rate / share axis outside [0, 1].
    ``drawn``: the figure has just been drawn (saved), so its ticks and text are laid out already."""
    if not drawn:
        fig.canvas.draw()
    problems = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        where = f"{name}, panel {i + 1}"
        if _is_no_data(ax):
            continue
        if not _drawn(ax):
            problems.append(f"{where}: nothing is drawn (use figures.no_data to say why)")
        for axis, label in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())):
            shown = (ax.xaxis if axis == "x" else ax.yaxis).get_visible() and \
                any(t.get_visible() and t.get_text() for t in (ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()))
            if shown and not label.strip():
                problems.append(f"{where}: the {axis} axis has no label")
            low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
            if any(w in label.lower() for w in ("rate", "share", "accuracy")) and (min(low, high) < -1e-9 or max(low, high) > 1 + 1e-9):
                problems.append(f"{where}: the {axis} axis is a rate ({label!r}) but spans [{low:.2g}, {high:.2g}]")
        for axis, labels in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
            if any(lb.get_visible() and lb.get_text() and lb.get_fontsize() < 6 for lb in labels):
                problems.append(f"{where}: {axis} tick labels smaller than 6 pt")
            n = _overlaps(labels, vertical=(axis == "y"))
            if n:
                problems.append(f"{where}: {n} overlapping {axis} tick labels")
    return problems


__all__ = ["NO_DATA", "figure_problems", "no_data", "wrap_label"]
