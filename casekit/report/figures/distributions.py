"""Figures of distributions over a run's images: agreement histograms (Figures 7–11, one per model and layer
for the appendix), KDEs of active channels (Figures 5–6), mean agreement per seed (Figure 4) and mean
deletion curves.

Imports: :mod:`casekit.study` (row views), :mod:`casekit.report.naming`, :mod:`casekit.report.analyses`,
:mod:`.base`, matplotlib and seaborn.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ...study.rows import agreement_rows
from ..analyses import agreement_histogram
from ..naming import (
    APPENDIX_ORDER,
    DISPLAY_NAMES,
    LAYER_ORDER,
    METHOD_COLOURS,
    THRESHOLD_STYLE,
    model_colours,
    model_display,
)
from .base import grid_shape, methods_in

__all__ = ["agreement_histograms", "appendix_histograms", "active_channel_kde", "active_channel_kdes",
           "seed_robustness_bars", "deletion_curve_plot"]


# ----------------------------------------------------------------------------------------------- Figs 7–11


def agreement_histograms(data: Any, *, model: str, layer: str = "final_conv", seed: int = 0,
                         comparison: str = "top1_vs_top2", methods: Sequence[str] | None = None,
                         threshold: float = 0.5, bin_width: float = 0.05, ncols: int = 2,
                         title: str | None = None) -> Figure:
    """Figures 7–11: one panel per method, the images' top-k agreement in ``bin_width`` bins (percent axis),
    a red dashed line at ``threshold``; each panel notes n and the constant maps left out.  Counts come from
    :func:`casekit.report.analyses.agreement_histogram`."""
    hist = agreement_histogram(data, bin_width=bin_width, comparison=comparison, model=model, layer=layer,
                               seed=seed)
    if hist.empty:
        raise ValueError(f"no agreement rows for model={model!r}, layer={layer!r}, seed={seed}, {comparison}")
    ms = methods_in(hist, methods)
    nrows, ncols = grid_shape(len(ms), ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.7 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    for ax, m in zip(axes, ms):
        h = hist[hist["method"] == m]
        ax.bar(h["bin_low"] * 100, h["count"], width=bin_width * 100, align="edge",
               color=METHOD_COLOURS.get(m, "#4c72b0"), edgecolor="white", linewidth=0.5)
        ax.axvline(threshold * 100, **THRESHOLD_STYLE)
        n, excl = int(h["count"].sum()), int(h["n_excluded"].iloc[0])
        ax.set_title(f"{DISPLAY_NAMES[m]}  (n = {n}" + (f", {excl} constant" if excl else "") + ")",
                     fontsize=9)
        ax.set_xlim(0, 100)
        ax.set_xlabel("top-k agreement (%)", fontsize=8)
        ax.set_ylabel("images", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(ms):]:
        ax.set_visible(False)
    fig.suptitle(title or f"{model_display(model)} · {layer} · {comparison.replace('_', ' ')}"
                 + (f" · seed {seed}" if seed else ""), fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------- Figs 5–6


def active_channel_kde(class_means: pd.DataFrame, *, hue: str = "Model", fraction: bool = False,
                       title: str | None = None, ax: Any = None) -> Figure:
    """Figures 5–6: kernel density estimates of the per-class mean number of active channels (one curve per
    ``hue`` value, e.g. ``"Model"`` for Figure 6 or ``"layer"`` for Figure 5), with the classes as a rug.
    ``class_means`` is :func:`casekit.report.analyses.class_active_channels`; ``fraction=True`` plots the
    fraction of the layer's channels instead of counts.  A group whose classes all have the same value gets a
    vertical line (a KDE needs spread)."""
    import seaborn as sns  # lazy: seaborn imports pyplot, which changes how notebooks show figures

    if hue not in class_means.columns:
        raise ValueError(f"hue {hue!r} is not a column of class_means ({list(class_means.columns)})")
    x = "fraction_active" if fraction else "mean_active_channels"
    fig = ax.figure if ax is not None else Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = ax if ax is not None else fig.subplots()
    groups = list(class_means.groupby(hue, sort=True))
    if hue in ("Model", "model") and "model" in class_means.columns:  # the book's colour of each model
        ids = dict(zip(class_means[hue], class_means["model"]))
        by_id = model_colours(ids.values())
        palette = [by_id[ids[name]] for name, _ in groups]
    else:
        palette = sns.color_palette("colorblind", n_colors=max(1, len(groups)))
    for colour, (name, g) in zip(palette, groups):
        v = g[x].to_numpy(float)
        label = f"{name} ({len(v)} classes)"
        if len(v) > 1 and np.ptp(v) > 0:
            sns.kdeplot(x=v, ax=ax, color=colour, fill=True, alpha=0.25, linewidth=1.5, label=label,
                        warn_singular=False)
        else:
            ax.axvline(v[0], color=colour, linewidth=2, label=label + " (no spread)")
        ax.plot(v, np.zeros_like(v), "|", color=colour, markersize=12)
    ax.set_xlabel("fraction of channels active (per-class mean)" if fraction
                  else "active channels (per-class mean)")
    ax.set_ylabel("density")
    ax.set_xlim(left=0)
    tau = class_means["tau"].iloc[0] if "tau" in class_means else None
    ax.set_title(title or ("Active channels per class" + (f" (τ = {tau:g})" if tau is not None else "")),
                 fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------------------------- Fig 4


def seed_robustness_bars(seed_frame: pd.DataFrame, *, threshold: float = 0.5,
                         title: str | None = None, statistic: str = "median") -> Figure:
    """Figure 4: top-k agreement per method, one bar per seed (lower = more class-distinct), the
    threshold as a red dashed line.  ``statistic``: ``"median"`` (default: the statistic the test is on,
    unlike the paper's figure of means) or ``"mean"``.  ``seed_frame`` is
    :func:`casekit.report.analyses.seed_agreement`."""
    import seaborn as sns  # lazy: seaborn imports pyplot, which changes how notebooks show figures

    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    need = {"seed", "method", statistic}
    if not need <= set(seed_frame.columns):
        raise ValueError(f"seed_frame lacks column(s) {sorted(need - set(seed_frame.columns))}")
    ms = methods_in(seed_frame, None)
    seeds = sorted(seed_frame["seed"].unique())
    fig = Figure(figsize=(7.2, 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(seeds)
    colours = sns.color_palette("Blues", n_colors=len(seeds) + 2)[2:]
    for j, s in enumerate(seeds):
        g = seed_frame[seed_frame["seed"] == s].set_index("method").reindex(ms)
        xs = np.arange(len(ms)) - 0.4 + width * (j + 0.5)
        ax.bar(xs, g[statistic] * 100, width=width, color=colours[j], label=f"seed {s}")
    ax.axhline(threshold * 100, **THRESHOLD_STYLE)
    ax.set_xticks(np.arange(len(ms)), [DISPLAY_NAMES[m] for m in ms], fontsize=9)
    ax.set_ylabel(f"{statistic} top-k agreement (%)", fontsize=9)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=9, ncols=min(5, len(seeds)), frameon=False, loc="upper left")
    ax.set_title(title or f"{statistic.capitalize()} agreement per method across seeds", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------- deletion


def deletion_curve_plot(curves: pd.DataFrame, *, methods: Sequence[str] | None = None, ncols: int = 2,
                        title: str | None = None) -> Figure:
    """Mean relative confidence drop after blanking the top-k % pixels, k on a log axis, one panel per model
    and one line per method (± 1 standard error).  ``curves`` is
    :func:`casekit.report.analyses.deletion_curves`."""
    need = {"model", "method", "k", "mean_relative_drop", "sem_relative_drop"}
    if not need <= set(curves.columns):
        raise ValueError(f"curves lacks column(s) {sorted(need - set(curves.columns))}")
    ms = methods_in(curves, methods)
    models = list(dict.fromkeys(curves.sort_values("model", key=lambda s: s.map(model_display))["model"]))
    nrows, ncols = grid_shape(len(models), ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, model in zip(axes, models):
        for m in ms:
            g = curves[(curves["model"] == model) & (curves["method"] == m)].sort_values("k")
            x, y, e = g["k"] * 100, g["mean_relative_drop"], g["sem_relative_drop"].fillna(0)
            ax.plot(x, y, marker="o", markersize=3, color=METHOD_COLOURS.get(m), label=DISPLAY_NAMES[m])
            ax.fill_between(x, y - e, y + e, color=METHOD_COLOURS.get(m), alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        ks = sorted(curves["k"].unique())
        ax.set_xticks([k * 100 for k in ks], [f"{k * 100:g}" for k in ks], fontsize=7)
        ax.set_xlabel("top-k blanked (%)", fontsize=8)
        ax.set_title(model_display(model), fontsize=9)
    axes[0].set_ylabel("mean relative confidence drop", fontsize=8)
    for ax in axes[len(models):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------- Figs 1, 3


def active_channel_kdes(class_means: pd.DataFrame, *, hue: str = "Model", title: str | None = None) -> Figure:
    """Figures 5–6 twice: the KDE of the per-class mean number of active channels (left, the paper's measure)
    and of the same as a fraction of the layer's channels (right), one curve per ``hue`` value (see
    :func:`active_channel_kde`)."""
    fig = Figure(figsize=(10.5, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    active_channel_kde(class_means, hue=hue, ax=left, title="active channels (count)")
    active_channel_kde(class_means, hue=hue, ax=right, fraction=True,
                       title="active channels (fraction of the layer)")
    right.set_xlim(0, 1)
    tau = class_means["tau"].iloc[0] if "tau" in class_means else None
    fig.suptitle(title or ("Per-class mean number of active channels"
                           + (f" (τ = {tau:g})" if tau is not None else "")),
                 fontsize=10)
    return fig


def appendix_histograms(data: Any, *, seed: int = 0, models: Sequence[str] | None = None,
                        methods: Sequence[str] | None = None, comparison: str = "top1_vs_top2",
                        threshold: float = 0.5, bin_width: float = 0.05) -> list[Figure]:
    """Figures 7–11: :func:`agreement_histograms` for every (model, layer) of the run at ``seed``, in the
    appendix's order (VGG, ResNet, ConvNeXt, DenseNet's final conv, DenseNet's ``norm5``, then any other
    model), each titled with the model, the layer role and the module name."""
    agree = agreement_rows(data.maps if hasattr(data, "maps") else data, seed=seed, comparison=comparison,
                           model=models)
    if agree.empty:
        raise ValueError(f"no agreement rows for seed {seed}, {comparison}"
                         + (f", models {list(models)}" if models else ""))
    pairs = agree.drop_duplicates(["model", "layer"])[["model", "layer", "layer_name"]]

    def rank(row: Any) -> tuple:
        name = model_display(row.model)
        fam = APPENDIX_ORDER.index(name) if name in APPENDIX_ORDER else len(APPENDIX_ORDER)
        lyr = LAYER_ORDER.index(row.layer) if row.layer in LAYER_ORDER else len(LAYER_ORDER)
        return fam, name, lyr, row.layer

    figs = []
    for r in sorted(pairs.itertuples(), key=rank):
        figs.append(agreement_histograms(
            data, model=r.model, layer=r.layer, seed=seed, comparison=comparison, methods=methods,
            threshold=threshold, bin_width=bin_width,
            title=f"{model_display(r.model)} · {r.layer} ({r.layer_name}) · {comparison.replace('_', ' ')}"))
    return figs

