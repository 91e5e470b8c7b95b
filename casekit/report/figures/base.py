"""What every figure shares: which methods a frame holds in the paper's order, the panel grid, PNG bytes of a
``Figure`` (no pyplot state), and the IPython formatter that shows a returned ``Figure`` inline.

Imports: :mod:`casekit.cam` (method names), :mod:`casekit.report.naming`, matplotlib.
"""

from __future__ import annotations

import io
import math
import sys
from typing import Any, Sequence

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ...cam.engine import canonical_method
from ..naming import PAPER_METHOD_ORDER

__all__ = ["methods_in", "grid_shape", "figure_png", "show_figures_inline"]


def methods_in(df: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    """The methods to draw: ``methods`` (canonical names; each must have rows) or those of ``df`` in the
    paper's order."""
    present = set(df["method"])
    if methods is not None:
        wanted = [canonical_method(m) for m in methods]
        missing = [m for m in wanted if m not in present]
        if missing:
            raise ValueError(f"no rows for method(s) {missing}; the data has {sorted(present)}")
        return wanted
    return [m for m in PAPER_METHOD_ORDER if m in present]


def grid_shape(n: int, ncols: int) -> tuple[int, int]:
    """``(rows, columns)`` of a grid of ``n`` panels with at most ``ncols`` columns."""
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


#: The book's content column in inches (~730 px at 96 CSS px/in): a wider figure is shrunk on the page.
SHOWN_WIDTH_IN = 7.5
#: Smallest font size (points) of a figure as the book shows it.
MIN_FONT_PT = 9.0
#: Resolution of the PNGs the notebooks show.
SHOWN_DPI = 150


def fit_for_display(fig: Any, width: float = SHOWN_WIDTH_IN, min_pt: float = MIN_FONT_PT) -> Any:
    """Redraw ``fig`` for the width it is shown at: wider than ``width`` inches → resized to ``width`` (height
    scaled alike, so the page does not shrink it and its text), every text smaller than ``min_pt`` points
    raised to ``min_pt``.  Changes ``fig`` in place and returns it."""
    from matplotlib.text import Text

    w, h = fig.get_size_inches()
    if w > width:
        fig.set_size_inches(width, h * width / w)
    for text in fig.findobj(Text):
        if text.get_text() and text.get_fontsize() < min_pt:
            text.set_fontsize(min_pt)
    return fig


def book_png(fig: Any) -> bytes:
    """The PNG a notebook shows for a ``Figure``: :func:`fit_for_display`, then :data:`SHOWN_DPI` dpi."""
    return figure_png(fit_for_display(fig), dpi=SHOWN_DPI)


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib ``Figure`` (rendered with Agg, no pyplot state involved)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def show_figures_inline() -> bool:
    """In IPython / Jupyter, display a ``Figure`` returned by these functions as a PNG.

    The figures are built without pyplot, so unless pyplot was imported with the inline backend no formatter
    knows them and a notebook shows only ``<Figure size …>``.  Registers one (leaving an existing one in
    place); returns whether a formatter is now registered.  Called when :mod:`casekit.report.figures` is
    imported."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython  # only when IPython is already loaded: never import it for a script

    ip = get_ipython()
    formatters = getattr(getattr(ip, "display_formatter", None), "formatters", None)
    if not formatters or "image/png" not in formatters:
        return False
    png = formatters["image/png"]
    try:
        png.lookup_by_type(Figure)
    except KeyError:
        png.for_type(Figure, book_png)
    return True
