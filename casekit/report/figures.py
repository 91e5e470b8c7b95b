"""The paper's figures, drawn from the data of :mod:`casekit.report.tables` (matplotlib ``Figure`` objects, no pyplot
state: a notebook shows the returned figure once).

- :func:`saliency_grid` — Figure 1: an image and its maps for the top-1 and top-2 classes.
- :func:`masked_topk_grid` — Figure 3: the top-k % pixels of each method's maps for the two classes.
- :func:`seed_robustness_bars` — Figure 4: mean agreement per method and seed.
- :func:`active_channel_kde` — Figures 5–6: KDEs of the per-class mean number of active channels.
- :func:`agreement_histograms` — Figures 7–11: agreement histograms in 5 % bins with the red dashed 50 % line.
- :func:`deletion_curve_plot` — mean deletion curves per model and method.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..cam.engine import DISPLAY_NAMES, canonical_method
from .tables import PAPER_METHOD_ORDER, agreement_histogram, model_display

__all__ = [
    "METHOD_COLOURS",
    "agreement_histograms",
    "active_channel_kde",
    "seed_robustness_bars",
    "deletion_curve_plot",
    "saliency_grid",
    "masked_topk_grid",
]

#: One colour per method, the same in every figure (seaborn's "colorblind" palette).
METHOD_COLOURS: dict[str, str] = {
    "gradcam": "#0173b2", "gradcam++": "#de8f05", "scorecam": "#029e73",
    "ablationcam": "#d55e00", "layercam": "#cc78bc", "case": "#ca9161",
}
THRESHOLD_STYLE = {"color": "red", "linestyle": "--", "linewidth": 1.5}


def _methods_in(df: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    present = set(df["method"])
    if methods is not None:
        wanted = [canonical_method(m) for m in methods]
        missing = [m for m in wanted if m not in present]
        if missing:
            raise ValueError(f"no rows for method(s) {missing}; the data has {sorted(present)}")
        return wanted
    return [m for m in PAPER_METHOD_ORDER if m in present]


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


# ----------------------------------------------------------------------------------------------- Figs 7–11


def agreement_histograms(data: Any, *, model: str, layer: str = "final_conv", seed: int = 0,
                         comparison: str = "top1_vs_top2", methods: Sequence[str] | None = None,
                         threshold: float = 0.5, bin_width: float = 0.05, ncols: int = 3,
                         title: str | None = None) -> Figure:
    """Figures 7–11: one panel per method, the images' top-k agreement in ``bin_width`` bins (percent axis),
    a red dashed line at ``threshold``; each panel notes n and the constant maps left out.  Counts come from
    :func:`casekit.report.tables.agreement_histogram`."""
    hist = agreement_histogram(data, bin_width=bin_width, comparison=comparison, model=model, layer=layer, seed=seed)
    if hist.empty:
        raise ValueError(f"no agreement rows for model={model!r}, layer={layer!r}, seed={seed}, {comparison}")
    ms = _methods_in(hist, methods)
    nrows, ncols = _grid(len(ms), ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.7 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    for ax, m in zip(axes, ms):
        h = hist[hist["method"] == m]
        ax.bar(h["bin_low"] * 100, h["count"], width=bin_width * 100, align="edge",
               color=METHOD_COLOURS.get(m, "#4c72b0"), edgecolor="white", linewidth=0.5)
        ax.axvline(threshold * 100, **THRESHOLD_STYLE)
        n, excl = int(h["count"].sum()), int(h["n_excluded"].iloc[0])
        ax.set_title(f"{DISPLAY_NAMES[m]}  (n = {n}" + (f", {excl} constant" if excl else "") + ")", fontsize=9)
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
    ``class_means`` is :func:`casekit.report.tables.class_active_channels`; ``fraction=True`` plots the fraction of
    the layer's channels instead of counts.  A group whose classes all have the same value gets a vertical
    line (a KDE needs spread)."""
    import seaborn as sns

    if hue not in class_means.columns:
        raise ValueError(f"hue {hue!r} is not a column of class_means ({list(class_means.columns)})")
    x = "fraction_active" if fraction else "mean_active_channels"
    fig = ax.figure if ax is not None else Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = ax if ax is not None else fig.subplots()
    palette = sns.color_palette("colorblind", n_colors=max(1, class_means[hue].nunique()))
    for colour, (name, g) in zip(palette, class_means.groupby(hue, sort=True)):
        v = g[x].to_numpy(float)
        label = f"{name} ({len(v)} classes)"
        if len(v) > 1 and np.ptp(v) > 0:
            sns.kdeplot(x=v, ax=ax, color=colour, fill=True, alpha=0.25, linewidth=1.5, label=label, warn_singular=False)
        else:
            ax.axvline(v[0], color=colour, linewidth=2, label=label + " (no spread)")
        ax.plot(v, np.zeros_like(v), "|", color=colour, markersize=12)
    ax.set_xlabel("fraction of channels active (per-class mean)" if fraction else "active channels (per-class mean)")
    ax.set_ylabel("density")
    ax.set_xlim(left=0)
    tau = class_means["tau"].iloc[0] if "tau" in class_means else None
    ax.set_title(title or ("Active channels per class" + (f" (τ = {tau:g})" if tau is not None else "")), fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------------------------- Fig 4


def seed_robustness_bars(seed_frame: pd.DataFrame, *, threshold: float = 0.5, title: str | None = None) -> Figure:
    """Figure 4: mean top-k agreement per method, one bar per seed (lower = more class-distinct), the
    threshold as a red dashed line.  ``seed_frame`` is :func:`casekit.report.tables.seed_agreement`."""
    need = {"seed", "method", "mean"}
    if not need <= set(seed_frame.columns):
        raise ValueError(f"seed_frame lacks column(s) {sorted(need - set(seed_frame.columns))}")
    ms = _methods_in(seed_frame, None)
    seeds = sorted(seed_frame["seed"].unique())
    fig = Figure(figsize=(7.2, 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(seeds)
    import seaborn as sns

    colours = sns.color_palette("Blues", n_colors=len(seeds) + 2)[2:]
    for j, s in enumerate(seeds):
        g = seed_frame[seed_frame["seed"] == s].set_index("method").reindex(ms)
        xs = np.arange(len(ms)) - 0.4 + width * (j + 0.5)
        ax.bar(xs, g["mean"] * 100, width=width, color=colours[j], label=f"seed {s}")
    ax.axhline(threshold * 100, **THRESHOLD_STYLE)
    ax.set_xticks(np.arange(len(ms)), [DISPLAY_NAMES[m] for m in ms], fontsize=8)
    ax.set_ylabel("mean top-k agreement (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncols=min(5, len(seeds)), frameon=False, loc="upper left")
    ax.set_title(title or "Mean agreement per method across seeds", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------- deletion


def deletion_curve_plot(curves: pd.DataFrame, *, methods: Sequence[str] | None = None, ncols: int = 4,
                        title: str | None = None) -> Figure:
    """Mean relative confidence drop after blanking the top-k % pixels, k on a log axis, one panel per model
    and one line per method (± 1 standard error).  ``curves`` is :func:`casekit.report.tables.deletion_curves`."""
    need = {"model", "method", "k", "mean_relative_drop", "sem_relative_drop"}
    if not need <= set(curves.columns):
        raise ValueError(f"curves lacks column(s) {sorted(need - set(curves.columns))}")
    ms = _methods_in(curves, methods)
    models = list(dict.fromkeys(curves.sort_values("model", key=lambda s: s.map(model_display))["model"]))
    nrows, ncols = _grid(len(models), ncols)
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


def _as_hwc(image: torch.Tensor) -> np.ndarray:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"each image must be a tensor [3, H, W] (or [1, H, W]) in [0, 1], got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    arr = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return arr.repeat(3, axis=2) if arr.shape[2] == 1 else arr


def _check_maps(images: torch.Tensor, maps: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be a tensor [B, 3, H, W] in [0, 1] (denormalised for display)")
    if not maps:
        raise ValueError("maps is empty: give {method: [B, T, H, W]}")
    B, _, H, W = images.shape
    T = None
    for m, v in maps.items():
        if v.dim() != 4 or v.shape[0] != B or tuple(v.shape[-2:]) != (H, W):
            raise ValueError(f"maps[{m!r}] must be [B={B}, T, H={H}, W={W}], got {tuple(v.shape)}")
        if T is not None and v.shape[1] != T:
            raise ValueError("every method's maps must have the same number of targets T")
        T = v.shape[1]
    return B, T


def _label(text: str, width: int = 20) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _image_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor],
                cell: tuple[float, float]) -> tuple[Figure, np.ndarray, list[str], int, int]:
    """A grid with one row per image and ``1 + methods × targets`` columns, the image drawn in column 0."""
    B, T = _check_maps(images, maps)
    ms = [canonical_method(m) for m in maps]
    ncols = 1 + len(ms) * T
    fig = Figure(figsize=(cell[0] * ncols, cell[1] * B), layout="constrained")
    axes = np.atleast_2d(fig.subplots(B, ncols, squeeze=False))
    for b in range(B):
        axes[b, 0].imshow(_as_hwc(images[b]))
        axes[b, 0].set_title("image", fontsize=8)
    return fig, axes, ms, B, T


def saliency_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor], *,
                  target_names: Sequence[Sequence[str]] | None = None, alpha: float = 0.5,
                  cmap: str = "jet", title: str | None = None) -> Figure:
    """Figure 1: per image (rows) the image and, for each method and target, the map over the image.

    ``images [B, 3, H, W]`` in [0, 1] (denormalised); ``maps``: ``{method: [B, T, H, W]}`` (e.g.
    ``CAMResult.maps``); ``target_names[b][t]`` labels each map (default "target t")."""
    fig, axes, ms, B, T = _image_grid(images, maps, (1.9, 2.3))
    for b in range(B):
        img = _as_hwc(images[b])
        c = 1
        for m, key in zip(ms, maps):
            for t in range(T):
                ax = axes[b, c]
                ax.imshow(img)
                ax.imshow(maps[key][b, t].detach().float().cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
                name = _label(target_names[b][t]) if target_names is not None else f"target {t}"
                ax.set_title(f"{DISPLAY_NAMES[m]}\n{name}", fontsize=6)
                c += 1
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def masked_topk_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor], *, k: float = 0.05,
                     target_names: Sequence[Sequence[str]] | None = None, agreement: bool = True,
                     ties: str = "random", seed: int = 0, title: str | None = None) -> Figure:
    """Figure 3: per image (rows) the image and, for each method, the image showing only the top-k % pixels
    of the map for each target (the rest darkened), titled with the two maps' top-k agreement.

    The pixels are :func:`casekit.evaluation.metrics.topk_mask`'s (the same sets RQ1 scores); a constant map shows
    nothing ("no top-k set")."""
    from ..evaluation.metrics import topk_agreement, topk_mask

    fig, axes, ms, B, T = _image_grid(images, maps, (1.8, 2.2))
    for b in range(B):
        img = _as_hwc(images[b])
        c = 1
        for m, key in zip(ms, maps):
            mb = maps[key][b].detach().float().cpu()
            masks, valid = topk_mask(mb, k, ties, seed)
            agree = topk_agreement(mb[:1], mb[1:2], k, ties, seed)[0].item() if (agreement and T >= 2) else None
            for t in range(T):
                ax = axes[b, c]
                keep = masks[t].numpy()[..., None]
                ax.imshow(img * keep + img * (~keep) * 0.15)
                name = _label(target_names[b][t]) if target_names is not None else f"target {t}"
                head = DISPLAY_NAMES[m] if t == 0 else ""
                if t == 0 and agree is not None:
                    head += " (agr. " + ("n/a" if math.isnan(agree) else f"{agree:.0%}") + ")"
                ax.set_title(f"{head}\n{name}" + ("" if bool(valid[t]) else "\nno top-k set"), fontsize=6)
                c += 1
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"top {k:.0%} pixels of each map", fontsize=10)
    return fig


# =============================================================================================== notebooks 04–07
# Sparsity in counts and fractions, sparsity against class sensitivity, DenseNet's two layers side by side,
# the paired fidelity differences, and the appendix's histograms for every model and layer.  Additive block.

from .tables import APPENDIX_ORDER as _APPENDIX_ORDER  # noqa: E402
from .tables import LAYER_ORDER as _LAYER_ORDER  # noqa: E402

_LAYER_MARKERS = {"final_conv": "o", "norm5": "s"}


def active_channel_kdes(class_means: pd.DataFrame, *, hue: str = "Model", title: str | None = None) -> Figure:
    """Figures 5–6 twice: the KDE of the per-class mean number of active channels (left, the paper's measure)
    and of the same as a fraction of the layer's channels (right), one curve per ``hue`` value (see
    :func:`active_channel_kde`)."""
    fig = Figure(figsize=(10.5, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    active_channel_kde(class_means, hue=hue, ax=left, title="active channels (count)")
    active_channel_kde(class_means, hue=hue, ax=right, fraction=True, title="active channels (fraction of the layer)")
    right.set_xlim(0, 1)
    tau = class_means["tau"].iloc[0] if "tau" in class_means else None
    fig.suptitle(title or ("Per-class mean number of active channels" + (f" (τ = {tau:g})" if tau is not None else "")),
                 fontsize=10)
    return fig


def sparsity_sensitivity_plot(frame: pd.DataFrame, *, fraction: bool = True, threshold: float = 0.5,
                              methods: Sequence[str] | None = None, ncols: int = 3, title: str | None = None) -> Figure:
    """The relation the paper posits, one panel per method: each attribution layer's sparsity (median class;
    fraction of channels active, or the count with ``fraction=False``) against the method's median top-k
    agreement there with its bootstrap CI; a filled marker where the method rejects H0, hollow where not; the
    threshold as a red dashed line.  ``frame`` is :func:`casekit.report.tables.sparsity_sensitivity`."""
    need = {"model", "layer", "method", "median", "ci_low", "ci_high", "reject", "median_fraction", "median_active"}
    if not need <= set(frame.columns):
        raise ValueError(f"frame lacks column(s) {sorted(need - set(frame.columns))}: pass sparsity_sensitivity's table")
    ms = _methods_in(frame, methods)
    colours = _model_colours_04(frame["model"])
    x_col = "median_fraction" if fraction else "median_active"
    scale = 100 if fraction else 1
    nrows, ncols = _grid(len(ms), ncols)
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
        ax.set_xlabel("channels active, % of layer (median class)" if fraction else "active channels (median class)",
                      fontsize=8)
        ax.set_ylabel("median top-k agreement (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    xs = frame[x_col].to_numpy(float) * scale
    if np.isfinite(xs).any():
        pad = max(2.0, 0.08 * float(np.nanmax(xs) - np.nanmin(xs)))
        axes[0].set_xlim(max(0.0, float(np.nanmin(xs)) - pad), float(np.nanmax(xs)) + pad)
    for ax in axes[len(ms):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=model_display(m)) for m, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=_LAYER_MARKERS.get(l, "D"), linestyle="", label=l)
                for l in sorted(dict.fromkeys(frame["layer"]), key=lambda l: (_LAYER_ORDER + (l,)).index(l))]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="", markerfacecolor="white", label="H0 not rejected")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title or "Sparsity of the attribution layer vs class sensitivity (filled: H0 rejected)", fontsize=10)
    return fig


def _model_colours_04(models: Any) -> dict[str, Any]:
    import seaborn as sns

    order = sorted(dict.fromkeys(models), key=model_display)
    base = sns.color_palette("colorblind", n_colors=10)
    distinct = [base[i] for i in (0, 1, 2, 4, 6, 5, 7, 8, 9, 3)]  # orange and vermilion are too alike for 4 models
    return {m: distinct[i % len(distinct)] for i, m in enumerate(order)}


def layer_comparison_plot(full: pd.DataFrame, class_means: pd.DataFrame | None = None, *, threshold: float = 0.5,
                          title: str | None = None) -> Figure:
    """Table II and Figure 5 side by side: (left) each method's median top-k agreement with its bootstrap CI at
    each layer, filled where H0 is rejected, the threshold as a red dashed line; (right, when ``class_means`` is
    given) the KDEs of the per-class fraction of active channels of the same layers.  ``full`` is
    :func:`casekit.report.tables.table2_full`, ``class_means`` :func:`casekit.report.tables.class_active_channels`."""
    need = {"layer", "method", "median", "ci_low", "ci_high", "reject"}
    if not need <= set(full.columns):
        raise ValueError(f"full lacks column(s) {sorted(need - set(full.columns))}: pass table2_full's table")
    ms = _methods_in(full, None)
    layers = sorted(dict.fromkeys(full["layer"]), key=lambda l: _LAYER_ORDER.index(l) if l in _LAYER_ORDER else 99)
    fig = Figure(figsize=(10.5 if class_means is not None else 5.6, 3.8), layout="constrained")
    axes = fig.subplots(1, 2 if class_means is not None else 1, squeeze=False).ravel()
    ax = axes[0]
    import seaborn as sns

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
            ax.plot(x[~rej], ys[~rej], _LAYER_MARKERS.get(layer, "D"), color=c, markersize=7, markerfacecolor="white",
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


def fidelity_difference_plot(diffs: pd.DataFrame, *, ncols: int = 4, title: str | None = None) -> Figure:
    """The paired comparisons behind Table III: per model (panel) and baseline (row) the mean of CASE − method
    of the confidence drop on the same images with its confidence interval; right of the grey zero line CASE's
    drop is higher.  ``diffs`` is :func:`casekit.report.tables.fidelity_differences`."""
    need = {"model", "method", "mean_diff", "ci_low", "ci_high", "p_two_sided"}
    if not need <= set(diffs.columns):
        raise ValueError(f"diffs lacks column(s) {sorted(need - set(diffs.columns))}: pass fidelity_differences' table")
    ms = _methods_in(diffs, None)
    models = sorted(dict.fromkeys(diffs["model"]), key=model_display)
    nrows, ncols = _grid(len(models), ncols)
    fig = Figure(figsize=(3.0 * ncols, 0.35 * len(ms) * nrows + 1.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, model in zip(axes, models):
        g = diffs[diffs["model"] == model].set_index("method").reindex(ms)
        ys = np.arange(len(ms))
        x = g["mean_diff"].to_numpy(float)
        lo, hi = np.nan_to_num(x - g["ci_low"].to_numpy(float)), np.nan_to_num(g["ci_high"].to_numpy(float) - x)
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


def appendix_histograms(data: Any, *, seed: int = 0, models: Sequence[str] | None = None,
                        methods: Sequence[str] | None = None, comparison: str = "top1_vs_top2",
                        threshold: float = 0.5, bin_width: float = 0.05) -> list[Figure]:
    """Figures 7–11: :func:`agreement_histograms` for every (model, layer) of the run at ``seed``, in the
    appendix's order (VGG, ResNet, ConvNeXt, DenseNet's final conv, DenseNet's ``norm5``, then any other model),
    each titled with the model, the layer role and the module name."""
    from ..study.experiments import agreement_rows

    agree = agreement_rows(data.maps if hasattr(data, "maps") else data, seed=seed, comparison=comparison,
                           model=models)
    if agree.empty:
        raise ValueError(f"no agreement rows for seed {seed}, {comparison}" + (f", models {list(models)}" if models else ""))
    pairs = agree.drop_duplicates(["model", "layer"])[["model", "layer", "layer_name"]]

    def rank(row: Any) -> tuple:
        name = model_display(row.model)
        fam = _APPENDIX_ORDER.index(name) if name in _APPENDIX_ORDER else len(_APPENDIX_ORDER)
        lyr = _LAYER_ORDER.index(row.layer) if row.layer in _LAYER_ORDER else len(_LAYER_ORDER)
        return fam, name, lyr, row.layer

    figs = []
    for r in sorted(pairs.itertuples(), key=rank):
        figs.append(agreement_histograms(
            data, model=r.model, layer=r.layer, seed=seed, comparison=comparison, methods=methods,
            threshold=threshold, bin_width=bin_width,
            title=f"{model_display(r.model)} · {r.layer} ({r.layer_name}) · {comparison.replace('_', ' ')}"))
    return figs


def _figure_png(fig: Figure) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def show_figures_inline() -> bool:
    """In IPython / Jupyter, display a ``Figure`` returned by these functions as a PNG.

    The figures are built without pyplot, so unless pyplot was imported with the inline backend no formatter
    knows them and a notebook shows only ``<Figure size …>``.  Registers one (leaving an existing one in
    place); returns whether a formatter is now registered.  Called when :mod:`casekit.report.figures` is imported."""
    import sys

    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    ip = get_ipython()
    formatters = getattr(getattr(ip, "display_formatter", None), "formatters", None)
    if not formatters or "image/png" not in formatters:
        return False
    png = formatters["image/png"]
    try:
        png.lookup_by_type(Figure)
    except KeyError:
        png.for_type(Figure, _figure_png)
    return True


show_figures_inline()

__all__ += ["active_channel_kdes", "sparsity_sensitivity_plot", "layer_comparison_plot", "fidelity_difference_plot",
            "appendix_histograms", "show_figures_inline"]


# =============================================================================================== notebooks 01–03
# Figure 2 (CASE's projection, computed), the contrast-set study, and the ground-truth evidence.  Additive block.

from ..study.experiments import STRATEGIES as _STRATEGIES  # noqa: E402

_STRATEGY_STYLE = {"confusion": "-", "logits": "--"}
_STRATEGY_LABEL = {"confusion": "confusion matrix", "logits": "image's top logits"}


def _model_colours(models: Sequence[str]) -> dict[str, Any]:
    import seaborn as sns

    order = sorted(dict.fromkeys(models), key=model_display)
    return dict(zip(order, sns.color_palette("colorblind", n_colors=max(1, len(order)))))


def _outline(ax: Any, masks: Mapping[str, torch.Tensor] | None, b: int) -> None:
    """Contours of the image's unique part (white, solid) and shared group part (black, dashed)."""
    if masks is None:
        return
    for part, colour, style in (("shared", "black", "--"), ("unique", "white", "-")):
        m = masks[part][b].detach().float().cpu().numpy()
        if m.any() and not m.all():
            ax.contour(m, levels=[0.5], colors=colour, linestyles=style, linewidths=1.0)


def case_projection(example: Mapping[str, Any], *, index: int = 0, target: int = 0, top: int = 12, k: float = 0.05,
                    title: str | None = None) -> Figure:
    """Figure 2, computed: CASE on one image and target (from :func:`casekit.study.experiments.case_example`).

    Top: the channel weights ``w_u`` (target's pooled gradient = Grad-CAM's weights), ``w̄`` (mean of the
    contrast classes' pooled gradients) and ``w⊥ = w_u − (w_u·w̄)/‖w̄‖²·w̄`` (CASE's weights) for the ``top``
    channels with the largest ``max(|w_u|, |w⊥|)``.  Bottom: the image and the three maps ``ReLU(Σ_c w_c A_c)``
    over it, with the image's unique part outlined in white and the shared group part dashed in black, each
    titled with the share of its top-k pixels on the unique part (when the data has part masks)."""
    from ..evaluation.metrics import unique_evidence

    v = example["vectors"]
    B, T = v.targets.shape
    if not (0 <= index < B and 0 <= target < T):
        raise ValueError(f"index must be in 0..{B - 1} and target in 0..{T - 1}, got {index}, {target}")
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    w_u, w_bar, w_perp = (w[index, target].detach().float().cpu().numpy() for w in (v.w_target, v.w_mean, v.w_perp))
    top = min(top, w_u.size)
    order = np.argsort(-np.maximum(np.abs(w_u), np.abs(w_perp)), kind="stable")[:top]
    masks = example.get("masks")
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[1.0, 1.15])
    ax = fig.add_subplot(grid[0, :])
    x = np.arange(top)
    width = 0.27
    for j, (w, label, colour) in enumerate(((w_u, "w_u: target (Grad-CAM weights)", METHOD_COLOURS["gradcam"]),
                                            (w_bar, "w̄: mean of the contrast classes", "#7f7f7f"),
                                            (w_perp, "w⊥: CASE's weights", METHOD_COLOURS["case"]))):
        ax.bar(x + (j - 1) * width, w[order], width=width, color=colour, label=label)
    ax.axhline(0, color="black", linewidth=0.6)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.35 * (hi - lo))  # room for the legend above the bars
    ax.set_xticks(x, [str(c) for c in order], fontsize=7)
    ax.set_xlabel(f"channel of {example.get('layer', 'the layer')} (the {top} largest of {w_u.size})", fontsize=8)
    ax.set_ylabel("pooled gradient", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False, ncols=3, loc="upper right")
    contrast = ", ".join(example["contrast_names"][index][target])
    ax.set_title(f"{example['target_names'][index][target]}  ·  contrast: {contrast}  ·  "
                 f"cos(w_u, w̄) = {float(v.cosine[index, target]):.2f}, ‖w⊥‖/‖w_u‖ = {float(v.kept[index, target]):.2f}",
                 fontsize=8)
    img = _as_hwc(example["images"][index])
    panels = [("image", None), ("Grad-CAM map (w_u)", v.gradcam), ("shared direction (w̄)", v.contrast_gradcam),
              ("CASE map (w⊥)", v.case)]
    for col, (name, maps) in enumerate(panels):
        a = fig.add_subplot(grid[1, col])
        a.imshow(img)
        head = name
        if maps is not None:
            m = maps[index, target].detach().float().cpu()
            a.imshow(m.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if masks is not None:
                ev = unique_evidence(m[None], masks["unique"][index][None].to(m.device), k)[0].item()
                head += "\n" + ("constant map" if math.isnan(ev) else f"top {k:.0%} on unique part: {ev:.0%}")
        elif masks is not None:
            head += "\nunique part ─ white, shared part -- black"
        _outline(a, masks, index)
        a.set_title(head, fontsize=7)
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title or "CASE removes the direction shared with the contrast classes", fontsize=10)
    return fig


def contrast_effect(summary: pd.DataFrame, *, comparison: str = "top1_vs_top2", threshold: float = 0.5,
                    title: str | None = None) -> Figure:
    """The effect of K and of the contrast strategy on CASE (:func:`casekit.report.tables.contrast_table`): left, the
    median top-k agreement (with its 95 % bootstrap CI) against K, the threshold dashed in red; right, the
    share of the top-1 map's top-k pixels on the true class's unique part (omitted without part masks).
    One colour per model, solid = confusion-matrix contrast, dashed = the image's own top logits."""
    need = {"model", "contrast_strategy", "contrast_k", "comparison", "median", "ci_low", "ci_high", "unique_top1"}
    if not need <= set(summary.columns):
        raise ValueError(f"summary lacks column(s) {sorted(need - set(summary.columns))}: pass contrast_table(...)")
    s = summary[(summary["comparison"] == comparison) & (summary["method"] == "case")]
    if s.empty:
        raise ValueError(f"no CASE rows for comparison {comparison!r}")
    evidence = s["unique_top1"].notna().any()
    fig = Figure(figsize=(10 if evidence else 5.6, 3.6), layout="constrained")
    axes = fig.subplots(1, 2 if evidence else 1, squeeze=False)[0]
    colours = _model_colours(list(s["model"]))
    ks = sorted(s["contrast_k"].unique())
    strategies = [st for st in _STRATEGIES if st in set(s["contrast_strategy"])]
    shift = {st: (j - (len(strategies) - 1) / 2) * 0.08 for j, st in enumerate(strategies)}
    for model, colour in colours.items():
        for st in strategies:
            g = s[(s["model"] == model) & (s["contrast_strategy"] == st)].sort_values("contrast_k")
            if g.empty:
                continue
            x = g["contrast_k"].to_numpy(float) + shift[st]
            med = g["median"].to_numpy(float) * 100
            err = np.vstack([med - g["ci_low"].to_numpy(float) * 100, g["ci_high"].to_numpy(float) * 100 - med])
            axes[0].errorbar(x, med, yerr=np.nan_to_num(err), color=colour, linestyle=_STRATEGY_STYLE[st],
                             marker="o", markersize=4, capsize=2, linewidth=1.3)
            if evidence:
                axes[1].plot(x, g["unique_top1"].to_numpy(float) * 100, color=colour,
                             linestyle=_STRATEGY_STYLE[st], marker="o", markersize=4, linewidth=1.3)
    axes[0].axhline(threshold * 100, **THRESHOLD_STYLE)
    axes[0].set_ylabel("median top-k agreement (%)", fontsize=8)
    axes[0].set_ylim(-2, 102)
    axes[0].set_title(f"CASE, {comparison.replace('_', ' ')}: agreement (lower = more class-specific)", fontsize=9)
    if evidence:
        axes[1].set_ylabel("top-1 map's top-k on the unique part (%)", fontsize=8)
        axes[1].set_ylim(0, max(1.0, float(np.nanmax(s["unique_top1"].to_numpy(float))) * 100 * 1.15))
        axes[1].set_title("ground truth: top-1 map's precision on the unique part", fontsize=9)
    for a in axes:
        a.set_xticks(ks, [str(k) for k in ks])
        a.set_xlabel("K (contrast classes)", fontsize=8)
        a.tick_params(labelsize=7)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", markersize=4, label=model_display(m)) for m, c in colours.items()]
    handles += [Line2D([], [], color="black", linestyle=_STRATEGY_STYLE[st], label=_STRATEGY_LABEL[st] + " contrast")
                for st in strategies]
    axes[-1].legend(handles=handles, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def evidence_bars(evidence: pd.DataFrame, *, comparison: str = "top1_vs_top2", ncols: int = 4,
                  title: str | None = None) -> Figure:
    """The ground truth per method (:func:`casekit.report.tables.evidence_comparison`): for each model a panel with,
    per method, the share of the top-1 (true-class) map's top-k pixels on the class's unique part (solid) and
    the same share for the other map of the comparison (hatched); with the columns ``unique_chance`` and
    ``unique_ceiling`` (``evidence_comparison(..., areas=...)``) the chance level (dotted) and the ceiling
    (dash-dotted) of the model's images.  An empty ``evidence`` (a profile without part masks) gives a figure
    that says so."""
    need = {"model", "method", "comparison", "unique_top1", "unique_other"}
    if not need <= set(evidence.columns):
        raise ValueError(f"evidence lacks column(s) {sorted(need - set(evidence.columns))}: pass evidence_comparison(...)")
    if evidence.empty:  # no part masks (e.g. the paper profile): say so instead of failing the page
        fig = Figure(figsize=(6, 1.2), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no ground truth: the data of this profile has no part masks", ha="center", va="center")
        ax.set_axis_off()
        return fig
    e = evidence[evidence["comparison"] == comparison]
    if e.empty:
        raise ValueError(f"no evidence rows for comparison {comparison!r}; the data has "
                         f"{sorted(evidence['comparison'].unique())}")
    models = sorted(dict.fromkeys(e["model"]), key=model_display)
    ms = _methods_in(e, None)
    nrows, ncols = _grid(len(models), ncols)
    fig = Figure(figsize=(2.9 * ncols, 2.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    other = "top-2" if comparison == "top1_vs_top2" else "sibling"
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    x = np.arange(len(ms))
    refs = [c for c in ("unique_chance", "unique_ceiling") if c in e.columns and e[c].notna().any()]
    top = np.nanmax(e[["unique_top1", "unique_other", *refs]].to_numpy(float)) * 100
    for ax, model in zip(axes, models):
        g = e[e["model"] == model].set_index("method").reindex(ms)
        colours = [METHOD_COLOURS.get(m, "#4c72b0") for m in ms]
        ax.bar(x - 0.2, g["unique_top1"] * 100, width=0.4, color=colours)
        ax.bar(x + 0.2, g["unique_other"] * 100, width=0.4, color=colours, alpha=0.4, hatch="///", edgecolor="white")
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


__all__ += ["case_projection", "contrast_effect", "evidence_bars"]
