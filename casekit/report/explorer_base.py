"""What the explorers share: a ``VBox`` whose display also carries a static HTML snapshot (figure and numbers)
for viewers without a widget manager (the built book), and the small formatters of their summaries.

Imports: ipywidgets only.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
from typing import Any, Mapping, Sequence

import ipywidgets as W
import numpy as np
import pandas as pd

LIVE_NOTE = "Static snapshot of an interactive explorer; open the notebook in JupyterLab to explore it live."


def render_snapshot(png: bytes, summary_html: str, alt: str) -> str:
    img = base64.b64encode(png).decode("ascii")
    return (
        '<div class="casekit-explorer-snapshot">'
        f'<img src="data:image/png;base64,{img}" alt="{html.escape(alt)}" style="max-width:100%"/>'
        f"{summary_html}"
        f'<p style="font-size:0.85em;color:#666"><em>{html.escape(LIVE_NOTE)}</em></p></div>'
    )


def table_html(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                   f"<td>{v}</td></tr>" for k, v in rows)
    return f'<table class="casekit-explorer-summary">{body}</table>'


class SnapshotBox(W.VBox):
    """A VBox whose rich display adds a static ``text/html`` snapshot to the widget view."""

    _png: bytes = b""
    _summary_html: str = ""

    def snapshot_html(self) -> str:
        """The current view as self-contained HTML (figure as a data-URI PNG, then the numbers)."""
        return render_snapshot(self._png, self._summary_html, type(self).__name__)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/html"] = self.snapshot_html()
        return bundle


# --------------------------------------------------------------------------- saliency explorer




def fmt_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "NaN"
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, (tuple, list)) and all(isinstance(v, (float, np.floating)) for v in value):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return str(value)


def result_as_dict(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if hasattr(result, "_asdict"):
        return dict(result._asdict())
    if isinstance(result, pd.Series):
        return result.to_dict()
    if isinstance(result, pd.DataFrame) and len(result) == 1:
        return result.iloc[0].to_dict()
    if isinstance(result, Mapping):
        return dict(result)
    raise TypeError(f"cannot read a test result of type {type(result).__name__}")

