"""The figures of the book's own analyses: sparsity against class sensitivity (chapter 04), DenseNet's two
layers side by side (05), the paired fidelity differences (06), the contrast-set study (02) and where the maps
point on the demo benchmark's ground truth (03).

Imports: :mod:`casekit.study` (constants), :mod:`casekit.report.naming`, :mod:`.base`,
:mod:`.distributions`, matplotlib and seaborn.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ...study.config import STRATEGIES
from ..naming import DISPLAY_NAMES, LAYER_ORDER, METHOD_COLOURS, THRESHOLD_STYLE, model_colours, model_display
from .base import grid_shape, methods_in
from .distributions import active_channel_kde

__all__ = ["sparsity_sensitivity_plot", "layer_comparison_plot", "fidelity_difference_plot",
           "contrast_effect",
           "evidence_bars"]

_LAYER_MARKERS = {"final_conv": "o", "norm5": "s"}
_STRATEGY_STYLE = {"confusion": "-", "logits": "--"}
_STRATEGY_LABEL = {"confusion": "confusion matrix", "logits": "image's top logits"}


def sparsity_sensitivity_plot(frame: pd.DataFrame, *, fraction: bool = True, threshold: float = 0.5,
                              methods: Sequence[str] | None = None, ncols: int = 2,
                              title: str | None = None) -> Figure:
    """The relation the paper posits, one panel per method: each attribution layer's sparsity (median class;
    fraction of channels active, or the count with ``fraction=False``) against the method's median top-k
    agreement there with its bootstrap CI; a filled marker where the method rejects H0, hollow where not; the
    threshold as a red dashed line.  ``frame`` is :func:`casekit.report.analyses.sparsity_sensitivity`."""
    need = {"model", "layer", "method", "median", "ci_low", "ci_high", "reject", "median_fraction",
            "median_active"}
    if not need <= set(frame.columns):
        raise ValueError(f"frame lacks column(s) {sorted(need - set(frame.columns))}: pass "
                         "sparsity_sensitivity's table")
    ms = methods_in(frame, methods)
    colours = model_colours(frame["model"])
    x_col = "median_fraction" if fraction else "median_active"
    scale = 100 if fraction else 1
    nrows, ncols = grid_shape(len(ms), ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.1 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, m in zip(axes, ms):
        g = frame[frame["method"] == m]
        for r in g.itertuples():
            x, y = getattr(r, x_col) * scale, r.median * 100
            c = colours[r.model]
            lo, hi = (y - r.ci_low * 100, r.ci_high * 100 - y) if not math.isnan(r.ci_low) else (0, 0)
            ax.errorbar([x], [y], yerr=[[lo], [hi]], fmt="none", ecolor=c, elinewidth=1, capsize=2)
            ax.plot([x], [y], _LAYER_MARKERS.get(r.layer, "D"), color=c, markersize=7,
                    markerfacecolor=c if r.reject else "white", markeredgewidth=1.5)
        ax.axhline(threshold * 100, **THRESHOLD_STYLE)
        ax.set_ylim(-3, 103)
        ax.set_title(DISPLAY_NAMES[m], fontsize=9)
        ax.set_xlabel("channels active, % of layer (median class)" if fraction
                      else "active channels (median class)",
                      fontsize=8)
        ax.set_ylabel("median top-k agreement (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    xs = frame[x_col].to_numpy(float) * scale
    if np.isfinite(xs).any():
        pad = max(2.0, 0.08 * float(np.nanmax(xs) - np.nanmin(xs)))
        axes[0].set_xlim(max(0.0, float(np.nanmin(xs)) - pad), float(np.nanmax(xs)) + pad)
    for ax in axes[len(ms):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=model_display(m)) for m,
               c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=_LAYER_MARKERS.get(lyr, "D"), linestyle="", label=lyr)
                for lyr in sorted(dict.fromkeys(frame["layer"]),
                                  key=lambda lyr: (LAYER_ORDER + (lyr,)).index(lyr))]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="", markerfacecolor="white",
                       label="H0 not rejected")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title or "Sparsity of the attribution layer vs class sensitivity (filled: H0 rejected)",
                 fontsize=10)
    return fig


def layer_comparison_plot(full: pd.DataFrame, class_means: pd.DataFrame | None = None, *,
                          threshold: float = 0.5,
                          title: str | None = None) -> Figure:
    """Table II and Figure 5 side by side: (left) each method's median top-k agreement with its bootstrap CI
    at each layer, filled where H0 is rejected, the threshold as a red dashed line; (right, when
    ``class_means`` is given) the KDEs of the per-class fraction of active channels of the same layers.
    ``full`` is :func:`casekit.report.tables.table2_full`, ``class_means``
    :func:`casekit.report.analyses.class_active_channels`."""
    import seaborn as sns  # lazy: seaborn imports pyplot, which changes how notebooks show figures

    need = {"layer", "method", "median", "ci_low", "ci_high", "reject"}
    if not need <= set(full.columns):
        raise ValueError(f"full lacks column(s) {sorted(need - set(full.columns))}: pass table2_full's table")
    ms = methods_in(full, None)
    layers = sorted(dict.fromkeys(full["layer"]),
                    key=lambda lyr: LAYER_ORDER.index(lyr) if lyr in LAYER_ORDER else 99)
    fig = Figure(figsize=(10.5 if class_means is not None else 5.6, 3.8), layout="constrained")
    axes = fig.subplots(1, 2 if class_means is not None else 1, squeeze=False).ravel()
    ax = axes[0]
    palette = dict(zip(layers, sns.color_palette("colorblind", n_colors=len(layers))))
    offsets = np.linspace(-0.15, 0.15, len(layers)) if len(layers) > 1 else [0.0]
    for off, layer in zip(offsets, layers):
        g = full[full["layer"] == layer].set_index("method").reindex(ms)
        ys = np.arange(len(ms)) + off
        x = g["median"].to_numpy(float) * 100
        lo = np.nan_to_num(x - g["ci_low"].to_numpy(float) * 100)
        hi = np.nan_to_num(g["ci_high"].to_numpy(float) * 100 - x)
        c = palette[layer]
        ax.errorbar(x, ys, xerr=[lo, hi], fmt="none", ecolor=c, elinewidth=1, capsize=2)
        rej = g["reject"].fillna(False).to_numpy(bool)
        if rej.any():
            ax.plot(x[rej], ys[rej], _LAYER_MARKERS.get(layer, "D"), color=c, markersize=7,
                    label=f"{layer} (H0 rejected)")
        if (~rej).any():
            ax.plot(x[~rej], ys[~rej], _LAYER_MARKERS.get(layer, "D"), color=c, markersize=7,
                    markerfacecolor="white",
                    markeredgewidth=1.5, label=f"{layer} (not rejected)")
    ax.axvline(threshold * 100, **THRESHOLD_STYLE)
    ax.set_yticks(np.arange(len(ms)), [DISPLAY_NAMES[m] for m in ms], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-3, 103)
    ax.set_xlabel("median top-k agreement, top-1 vs top-2 (%)", fontsize=8)
    ax.set_title("class sensitivity per layer", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    if class_means is not None:
        active_channel_kde(class_means, hue="layer", fraction=True, ax=axes[1],
                           title="active channels (fraction of the layer)")
        axes[1].set_xlim(0, 1)
    model = full["model"].iloc[0] if "model" in full else ""
    fig.suptitle(title or f"{model_display(model)}: " + " vs ".join(layers), fontsize=10)
    return fig


def fidelity_difference_plot(diffs: pd.DataFrame, *, ncols: int = 2, title: str | None = None) -> Figure:
    """The paired comparisons behind Table III: per model (panel) and baseline (row) the mean of CASE − method
    of the confidence drop on the same images with its confidence interval; right of the grey zero line CASE's
    drop is higher.  ``diffs`` is :func:`casekit.report.analyses.fidelity_differences`."""
    need = {"model", "method", "mean_diff", "ci_low", "ci_high", "p_two_sided"}
    if not need <= set(diffs.columns):
        raise ValueError(f"diffs lacks column(s) {sorted(need - set(diffs.columns))}: pass "
                         "fidelity_differences' table")
    ms = methods_in(diffs, None)
    models = sorted(dict.fromkeys(diffs["model"]), key=model_display)
    nrows, ncols = grid_shape(len(models), ncols)
    fig = Figure(figsize=(3.0 * ncols, 0.35 * len(ms) * nrows + 1.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, model in zip(axes, models):
        g = diffs[diffs["model"] == model].set_index("method").reindex(ms)
        ys = np.arange(len(ms))
        x = g["mean_diff"].to_numpy(float)
        lo = np.nan_to_num(x - g["ci_low"].to_numpy(float))
        hi = np.nan_to_num(g["ci_high"].to_numpy(float) - x)
        sig = (g["p_two_sided"] < 0.05).to_numpy(bool)
        for i, m in enumerate(ms):
            c = METHOD_COLOURS.get(m, "#4c72b0")
            ax.errorbar([x[i]], [ys[i]], xerr=[[lo[i]], [hi[i]]], fmt="o", color=c, markersize=5, capsize=2,
                        markerfacecolor=c if sig[i] else "white")
        ax.axvline(0, color="grey", linewidth=1)
        ax.set_yticks(ys, [DISPLAY_NAMES[m] for m in ms], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(model_display(model), fontsize=9)
        ax.set_xlabel("CASE − method (mean drop)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[len(models):]:
        ax.set_visible(False)
    k = diffs["fidelity_k"].iloc[0] if "fidelity_k" in diffs else None
    drop = diffs["drop"].iloc[0] if "drop" in diffs else ""
    fig.suptitle(title or (f"Paired differences in the {drop} confidence drop"
                           + (f", top {k:.0%} blanked" if k is not None else "")
                           + " (95 % CI; filled: two-sided p < .05)"), fontsize=10)
    return fig


def contrast_effect(summary: pd.DataFrame, *, comparison: str = "top1_vs_top2", threshold: float = 0.5,
                    title: str | None = None) -> Figure:
    """The effect of K and of the contrast strategy on CASE (:func:`casekit.report.evidence.contrast_table`):
    left, the median top-k agreement (with its 95 % bootstrap CI) against K, the threshold dashed in red;
    right, the share of the top-1 map's top-k pixels on the true class's unique part (omitted without part
    masks). One colour per model, solid = confusion-matrix contrast, dashed = the image's own top logits."""
    need = {"model", "contrast_strategy", "contrast_k", "comparison", "median", "ci_low", "ci_high",
            "unique_top1"}
    if not need <= set(summary.columns):
        raise ValueError(f"summary lacks column(s) {sorted(need - set(summary.columns))}: pass "
                         "contrast_table(...)")
    s = summary[(summary["comparison"] == comparison) & (summary["method"] == "case")]
    if s.empty:
        raise ValueError(f"no CASE rows for comparison {comparison!r}")
    evidence = s["unique_top1"].notna().any()
    fig = Figure(figsize=(10 if evidence else 5.6, 3.6), layout="constrained")
    axes = fig.subplots(1, 2 if evidence else 1, squeeze=False)[0]
    colours = model_colours(list(s["model"]))
    ks = sorted(s["contrast_k"].unique())
    strategies = [st for st in STRATEGIES if st in set(s["contrast_strategy"])]
    shift = {st: (j - (len(strategies) - 1) / 2) * 0.08 for j, st in enumerate(strategies)}
    for model, colour in colours.items():
        for st in strategies:
            g = s[(s["model"] == model) & (s["contrast_strategy"] == st)].sort_values("contrast_k")
            if g.empty:
                continue
            x = g["contrast_k"].to_numpy(float) + shift[st]
            med = g["median"].to_numpy(float) * 100
            err = np.vstack([med - g["ci_low"].to_numpy(float) * 100,
                             g["ci_high"].to_numpy(float) * 100 - med])
            axes[0].errorbar(x, med, yerr=np.nan_to_num(err), color=colour, linestyle=_STRATEGY_STYLE[st],
                             marker="o", markersize=4, capsize=2, linewidth=1.3)
            if evidence:
                axes[1].plot(x, g["unique_top1"].to_numpy(float) * 100, color=colour,
                             linestyle=_STRATEGY_STYLE[st], marker="o", markersize=4, linewidth=1.3)
    axes[0].axhline(threshold * 100, **THRESHOLD_STYLE)
    axes[0].set_ylabel("median top-k agreement (%)", fontsize=8)
    axes[0].set_ylim(-2, 102)
    axes[0].set_title(f"CASE, {comparison.replace('_', ' ')}: agreement (lower = more class-specific)",
                      fontsize=9)
    if evidence:
        axes[1].set_ylabel("top-1 map's top-k on the unique part (%)", fontsize=8)
        axes[1].set_ylim(0, max(1.0, float(np.nanmax(s["unique_top1"].to_numpy(float))) * 100 * 1.15))
        axes[1].set_title("ground truth: top-1 map's precision on the unique part", fontsize=9)
    for a in axes:
        a.set_xticks(ks, [str(k) for k in ks])
        a.set_xlabel("K (contrast classes)", fontsize=8)
        a.tick_params(labelsize=7)
    handles = [Line2D([], [], color=c, marker="o", markersize=4, label=model_display(m)) for m,
               c in colours.items()]
    handles += [Line2D([], [], color="black", linestyle=_STRATEGY_STYLE[st],
                       label=_STRATEGY_LABEL[st] + " contrast")
                for st in strategies]
    axes[-1].legend(handles=handles, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def evidence_bars(evidence: pd.DataFrame, *, comparison: str = "top1_vs_top2", ncols: int = 2,
                  title: str | None = None) -> Figure:
    """The ground truth per method (:func:`casekit.report.evidence.evidence_comparison`): for each model a
    panel with, per method, the share of the top-1 (true-class) map's top-k pixels on the class's unique part
    (solid) and the same share for the other map of the comparison (hatched); with the columns
    ``unique_chance`` and ``unique_ceiling`` (``evidence_comparison(..., areas=...)``) the chance level
    (dotted) and the ceiling (dash-dotted) of the model's images.  An empty ``evidence`` (a profile without
    part masks) gives a figure that says so."""
    need = {"model", "method", "comparison", "unique_top1", "unique_other"}
    if not need <= set(evidence.columns):
        raise ValueError(f"evidence lacks column(s) {sorted(need - set(evidence.columns))}: pass "
                         "evidence_comparison(...)")
    if evidence.empty:  # no part masks (e.g. the paper profile): say so instead of failing the page
        fig = Figure(figsize=(6, 1.2), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no ground truth: the data of this profile has no part masks", ha="center",
                va="center")
        ax.set_axis_off()
        return fig
    e = evidence[evidence["comparison"] == comparison]
    if e.empty:
        raise ValueError(f"no evidence rows for comparison {comparison!r}; the data has "
                         f"{sorted(evidence['comparison'].unique())}")
    models = sorted(dict.fromkeys(e["model"]), key=model_display)
    ms = methods_in(e, None)
    nrows, ncols = grid_shape(len(models), ncols)
    fig = Figure(figsize=(2.9 * ncols, 2.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    other = "top-2" if comparison == "top1_vs_top2" else "sibling"
    x = np.arange(len(ms))
    refs = [c for c in ("unique_chance", "unique_ceiling") if c in e.columns and e[c].notna().any()]
    top = np.nanmax(e[["unique_top1", "unique_other", *refs]].to_numpy(float)) * 100
    for ax, model in zip(axes, models):
        g = e[e["model"] == model].set_index("method").reindex(ms)
        colours = [METHOD_COLOURS.get(m, "#4c72b0") for m in ms]
        ax.bar(x - 0.2, g["unique_top1"] * 100, width=0.4, color=colours)
        ax.bar(x + 0.2, g["unique_other"] * 100, width=0.4, color=colours, alpha=0.4, hatch="///",
               edgecolor="white")
        for col, style in (("unique_chance", ":"), ("unique_ceiling", "-.")):
            if col in refs:
                ax.axhline(float(g[col].mean()) * 100, color="#555555", linestyle=style, linewidth=1)
        ax.set_xticks(x, [DISPLAY_NAMES[m] for m in ms], rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, max(1.0, top * 1.12))
        ax.set_title(model_display(model), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("top-k pixels on the true class's\nunique part (%)", fontsize=8)
    handles = [Patch(facecolor="#888888", label="top-1 (true class) map"),
               Patch(facecolor="#888888", alpha=0.4, hatch="///", edgecolor="white", label=f"{other} map")]
    if "unique_chance" in refs:
        handles.append(Line2D([], [], color="#555555", linestyle=":", label="chance (random top-k set)"))
    if "unique_ceiling" in refs:
        handles.append(Line2D([], [], color="#555555", linestyle="-.", label="ceiling (unique part ⊂ top-k)"))
    fig.legend(handles=handles, fontsize=7, frameon=False, loc="outside lower center", ncols=len(handles))
    for ax in axes[len(models):]:
        ax.set_visible(False)
    fig.suptitle(title or f"Where the maps point: {comparison.replace('_', ' ')}", fontsize=10)
    return fig

