"""The agreement explorer: for one model, layer and method of a results table, the histogram of the top-k
agreement in 5 % bins with the threshold line and the class-sensitivity test, live.

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`.figures`, :mod:`.naming`,
:mod:`.explorer_base`.
"""

from __future__ import annotations

import html
import math
from typing import Any, Mapping

import ipywidgets as W
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..cam.engine import DISPLAY_NAMES, canonical_method
from ..evaluation import stats
from ..evaluation.stats import format_p
from .explorer_base import SnapshotBox, fmt_value, result_as_dict, table_html
from .figures.base import figure_png
from .naming import pct

EXTRA_FACETS = ("comparison", "dataset", "seed", "k")


class AgreementExplorer(SnapshotBox):
    """Histogram of top-k agreement (5 % bins, red dashed line at the threshold) and the class-sensitivity
    test for one (model, layer, method) of a results table.

    ``results``: one row per image and selection, with at least the columns ``model``, ``layer``,
    ``method`` (casekit names, e.g. ``"gradcam++"``), ``image_id`` and ``agreement`` (a fraction in [0, 1];
    NaN for constant maps — excluded from the test and counted), e.g. ``ck.experiments``'
    ``Results.agreement()`` (pass that table, not the per-target maps table).  Any of the columns
    ``comparison``, ``dataset``, ``seed``, ``k`` that holds more than one value gets its own menu, so two
    distributions are never pooled.  A selection with a repeated ``image_id`` raises ``ValueError``.
    The test is ``ck.stats.class_sensitivity_test(agreement, threshold=threshold)``; its result is kept in
    ``self.result`` and the selected rows in ``self.selection``.
    """

    REQUIRED = ("model", "layer", "method", "image_id", "agreement")

    def __init__(self, results: pd.DataFrame, *, threshold: float = 0.5, bin_width: float = 0.05,
                 model: str | None = None, layer: str | None = None, method: str | None = None) -> None:
        # A little over 60 lines: argument checks, then the control panel in the order a reader sees it.
        if not isinstance(results, pd.DataFrame):
            raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}")
        missing = [c for c in self.REQUIRED if c not in results.columns]
        if missing:
            raise ValueError(f"results lacks column(s) {missing}; it needs {list(self.REQUIRED)} "
                             f"(has {list(results.columns)})")
        if results.empty:
            raise ValueError("results is empty")
        values = pd.to_numeric(results["agreement"], errors="coerce")
        if values.isna().sum() != results["agreement"].isna().sum():
            raise ValueError("results['agreement'] holds non-numeric values")
        if ((values < 0) | (values > 1)).any():
            raise ValueError("results['agreement'] must be fractions in [0, 1] (NaN for constant maps)")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be a fraction in (0, 1), got {threshold}")
        n_bins = round(1 / bin_width)
        if not math.isclose(n_bins * bin_width, 1.0):
            raise ValueError(f"bin_width must divide 1 (e.g. 0.05), got {bin_width}")
        self.results = results
        self.threshold, self.bins = float(threshold), np.linspace(0.0, 1.0, n_bins + 1)
        self.facets = ["model", "layer", "method"] + [c for c in EXTRA_FACETS
                                                      if c in results.columns and results[c].nunique() > 1]
        dup = results.duplicated(subset=[*self.facets, "image_id"])
        if dup.any():
            row = results.loc[dup, [*self.facets, "image_id"]].iloc[0].to_dict()
            raise ValueError(f"results has {int(dup.sum())} repeated rows per (selection, image_id), e.g. "
                             f"{row}; "
                             "one agreement per image and selection is expected")
        style = {"description_width": "initial"}
        self.menus: dict[str, W.Dropdown] = {}
        for col in self.facets:
            opts = list(pd.unique(results[col]))
            labels = [(DISPLAY_NAMES.get(v, str(v)) if col == "method" else str(v), v) for v in opts]
            self.menus[col] = W.Dropdown(options=labels, description=col, style=style)
        for col, value in (("model", model), ("layer", layer), ("method", method)):
            if value is None:
                continue
            value = canonical_method(value) if col == "method" else value
            if value not in set(results[col]):
                raise ValueError(f"{col}={value!r} is not in the results (has "
                                 f"{list(pd.unique(results[col]))})")
            self.menus[col].value = value
        self.model, self.layer, self.method = self.menus["model"], self.menus["layer"], self.menus["method"]
        self.figure = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.summary = W.HTML()
        super().__init__(children=[W.HBox(list(self.menus.values())), self.figure, self.summary])
        self.selection = results.iloc[:0]
        self.result: Any = None
        self.counts = np.zeros(n_bins, dtype=int)
        self.error: str | None = None
        self._updating = False
        for menu in self.menus.values():
            menu.observe(self._on_change, names="value")
        self._restrict_menus()
        for col, value in (("model", model), ("layer", layer), ("method", method)):
            if value is not None and self.menus[col].value != (canonical_method(value) if col == "method"
                                                               else value):
                raise ValueError(f"the results have no rows for {col}={value!r} together with the other "
                                 f"choices ({self._title()})")
        self.refresh()

    def _restrict_menus(self) -> None:
        """Offer only the layers (and other choices) that exist for the chosen model, so no choice is
        empty."""
        self._updating = True
        try:
            rows = self.results
            for col in self.facets:
                menu = self.menus[col]
                opts = list(pd.unique(rows[col]))
                current = menu.value
                labels = [(DISPLAY_NAMES.get(v, str(v)) if col == "method" else str(v), v) for v in opts]
                if [v for _, v in menu.options] != opts:
                    menu.options = labels
                    menu.value = current if current in opts else opts[0]
                rows = rows[rows[col] == menu.value]
        finally:
            self._updating = False

    def _on_change(self, change: Mapping[str, Any]) -> None:
        if self._updating:
            return
        self._restrict_menus()
        self.refresh()

    def refresh(self) -> None:
        """Recompute the histogram and the test for the current selection."""
        try:
            self._update()
            self.error = None
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"
            self.summary.value = (f'<p style="color:#b00"><b>Cannot show this choice</b>: '
                                  f'{html.escape(self.error)}</p>')
            self._summary_html = self.summary.value

    def _update(self) -> None:
        sel = self.results
        for col, menu in self.menus.items():
            sel = sel[sel[col] == menu.value]
        self.selection = sel
        agreement = sel["agreement"].to_numpy(dtype=float)
        self.result = stats.class_sensitivity_test(agreement, threshold=self.threshold)
        finite = agreement[~np.isnan(agreement)]
        self.counts = np.histogram(finite, bins=self.bins)[0]
        self._png = figure_png(self._figure(finite, int(np.isnan(agreement).sum())))
        self.figure.value = self._png
        self._summary_html = self._summary()
        self.summary.value = self._summary_html

    def result_dict(self) -> dict[str, Any]:
        """The current test result as a plain dict (dataclass, named tuple, mapping or Series)."""
        return result_as_dict(self.result)

    def _title(self) -> str:
        parts = [f"{self.model.value}", f"{self.layer.value}",
                 DISPLAY_NAMES.get(self.method.value, self.method.value)]
        parts += [f"{c} = {self.menus[c].value}" for c in self.facets[3:]]
        return " · ".join(parts)

    def _figure(self, finite: np.ndarray, excluded: int):
        fig = Figure(figsize=(6.4, 3.2))
        ax = fig.subplots()
        ax.hist(finite * 100, bins=self.bins * 100, color="#4c72b0", edgecolor="white")
        ax.axvline(self.threshold * 100, color="red", linestyle="--", linewidth=1.5,
                   label=f"{self.threshold:.0%} threshold")
        ax.set_xlim(0, 100)
        note = f", {excluded} undefined (excluded)" if excluded else ""
        ax.set_xlabel(f"top-k agreement (%): {len(finite)} images{note}")
        ax.set_ylabel("images")
        ax.set_title(self._title(), fontsize=10)
        ax.legend(loc="upper left", fontsize=8, frameon=False)
        return fig

    def verdict(self) -> str:
        """One line: what the test says about the current selection."""
        r = self.result_dict()
        if r.get("reason"):
            return f"no test: {r['reason']}"
        thr = f"{r.get('threshold', self.threshold):.0%}"
        alpha = r.get("alpha", 0.05)
        if r.get("reject"):
            return f"class-sensitive: median agreement significantly below {thr} (p < {alpha:g})"
        return f"not shown class-sensitive: agreement not significantly below {thr} (α = {alpha:g})"

    def _summary(self) -> str:
        r = self.result_dict()
        known = {"n", "n_excluded", "n_zero", "median", "ci_low", "ci_high", "p", "method", "alternative"}
        rows = [("selection", html.escape(self._title()))]
        if known <= set(r):
            rows += [
                ("images in the test",
                 f"{r['n']} (excluded: {r['n_excluded']} constant maps with no top-k set; "
                                       f"{r['n_zero']} exactly at the threshold)"),
                ("median agreement",
                 f"{pct(r['median'])} (95 % bootstrap CI {pct(r['ci_low'])} – {pct(r['ci_high'])})"),
                (f"Wilcoxon p ({r['alternative']})",
                 html.escape(format_p(r["p"])) + (f" ({r['method']})" if r["method"] else "")),
                ("verdict", f"<b>{html.escape(self.verdict())}</b>"),
            ]
        else:
            rows += [(k, html.escape(fmt_value(v))) for k, v in r.items()]
        return table_html(rows)

    def __repr__(self) -> str:
        return f"AgreementExplorer({self._title()}, n={len(self.selection)})"


