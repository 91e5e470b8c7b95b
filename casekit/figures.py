"""The paper's figures, drawn from the data of :mod:`casekit.tables` (matplotlib ``Figure`` objects, no pyplot
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

from .engine import DISPLAY_NAMES, canonical_method
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
    :func:`casekit.tables.agreement_histogram`."""
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
    ``class_means`` is :func:`casekit.tables.class_active_channels`; ``fraction=True`` plots the fraction of
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
    threshold as a red dashed line.  ``seed_frame`` is :func:`casekit.tables.seed_agreement`."""
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
    and one line per method (± 1 standard error).  ``curves`` is :func:`casekit.tables.deletion_curves`."""
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


def saliency_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor], *,
                  target_names: Sequence[Sequence[str]] | None = None, alpha: float = 0.5,
                  cmap: str = "jet", title: str | None = None) -> Figure:
    """Figure 1: per image (rows) the image and, for each method and target, the map over the image.

    ``images [B, 3, H, W]`` in [0, 1] (denormalised); ``maps``: ``{method: [B, T, H, W]}`` (e.g.
    ``CAMResult.maps``); ``target_names[b][t]`` labels each map (default "target t")."""
    B, T = _check_maps(images, maps)
    ms = [canonical_method(m) for m in maps]
    ncols = 1 + len(ms) * T
    fig = Figure(figsize=(1.9 * ncols, 2.3 * B), layout="constrained")
    axes = np.atleast_2d(fig.subplots(B, ncols, squeeze=False))
    for b in range(B):
        img = _as_hwc(images[b])
        axes[b, 0].imshow(img)
        axes[b, 0].set_title("image", fontsize=8)
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

    The pixels are :func:`casekit.metrics.topk_mask`'s (the same sets RQ1 scores); a constant map shows
    nothing ("no top-k set")."""
    from .metrics import topk_agreement, topk_mask

    B, T = _check_maps(images, maps)
    ms = [canonical_method(m) for m in maps]
    ncols = 1 + len(ms) * T
    fig = Figure(figsize=(1.8 * ncols, 2.2 * B), layout="constrained")
    axes = np.atleast_2d(fig.subplots(B, ncols, squeeze=False))
    for b in range(B):
        img = _as_hwc(images[b])
        axes[b, 0].imshow(img)
        axes[b, 0].set_title("image", fontsize=8)
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
