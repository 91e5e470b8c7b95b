"""Figures drawn on images: maps over the image (Figure 1), the top-k pixels of each map (Figure 3) and CASE's
projection computed on one image (Figure 2).

Imports: :mod:`casekit.cam` (method names), :mod:`casekit.evaluation` (top-k sets, evidence),
:mod:`casekit.report.naming`, matplotlib.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ...cam.engine import DISPLAY_NAMES, canonical_method
from ...evaluation.metrics import topk_agreement, topk_mask, unique_evidence
from ..naming import METHOD_COLOURS

__all__ = ["saliency_grid", "masked_topk_grid", "case_projection"]


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
                ax.imshow(maps[key][b, t].detach().float().cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0,
                          vmax=1)
                name = _label(target_names[b][t]) if target_names is not None else f"target {t}"
                ax.set_title(f"{DISPLAY_NAMES[m]}\n{name}", fontsize=6)
                c += 1
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    # one colour scale for every map (all are scaled to [0, 1])
    scale = ScalarMappable(norm=Normalize(0, 1), cmap=cmap)
    fig.colorbar(scale, ax=axes[:, 1:].ravel().tolist(), fraction=0.025, pad=0.02, label="map value")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def masked_topk_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor], *, k: float = 0.05,
                     target_names: Sequence[Sequence[str]] | None = None, agreement: bool = True,
                     ties: str = "random", seed: int = 0, title: str | None = None) -> Figure:
    """Figure 3: per image (rows) the image and, for each method, the image showing only the top-k % pixels
    of the map for each target (the rest darkened), titled with the two maps' top-k agreement.

    The pixels are :func:`casekit.evaluation.metrics.topk_mask`'s (the same sets RQ1 scores); a constant map
    shows nothing ("no top-k set")."""
    fig, axes, ms, B, T = _image_grid(images, maps, (1.8, 2.2))
    for b in range(B):
        img = _as_hwc(images[b])
        c = 1
        for m, key in zip(ms, maps):
            mb = maps[key][b].detach().float().cpu()
            masks, valid = topk_mask(mb, k, ties, seed)
            agree = topk_agreement(mb[:1], mb[1:2], k, ties,
                                   seed)[0].item() if (agreement and T >= 2) else None
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


def _outline(ax: Any, masks: Mapping[str, torch.Tensor] | None, b: int) -> None:
    """Contours of the image's unique part (white, solid) and shared group part (black, dashed)."""
    if masks is None:
        return
    for part, colour, style in (("shared", "black", "--"), ("unique", "white", "-")):
        m = masks[part][b].detach().float().cpu().numpy()
        if m.any() and not m.all():
            ax.contour(m, levels=[0.5], colors=colour, linestyles=style, linewidths=1.0)


def case_projection(example: Mapping[str, Any], *, index: int = 0, target: int = 0, top: int = 12,
                    k: float = 0.05, title: str | None = None) -> Figure:
    """Figure 2, computed: CASE on one image and target (from :func:`casekit.study.examples.case_example`).

    Top: the channel weights ``w_u`` (target's pooled gradient = Grad-CAM's weights), ``w̄`` (mean of the
    contrast classes' pooled gradients) and ``w⊥ = w_u − (w_u·w̄)/‖w̄‖²·w̄`` (CASE's weights) for the ``top``
    channels with the largest ``max(|w_u|, |w⊥|)``.  Bottom: the image and the three maps ``ReLU(Σ_c w_c
    A_c)`` over it, with the image's unique part outlined in white and the shared group part dashed in black,
    each titled with the share of its top-k pixels on the unique part (when the data has part masks)."""
    # A little over 60 lines: the bar panel and the four map panels of one figure, drawn top to bottom.
    v = example["vectors"]
    B, T = v.targets.shape
    if not (0 <= index < B and 0 <= target < T):
        raise ValueError(f"index must be in 0..{B - 1} and target in 0..{T - 1}, got {index}, {target}")
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    w_u, w_bar, w_perp = (w[index,
                            target].detach().float().cpu().numpy() for w in (v.w_target, v.w_mean, v.w_perp))
    top = min(top, w_u.size)
    order = np.argsort(-np.maximum(np.abs(w_u), np.abs(w_perp)), kind="stable")[:top]
    masks = example.get("masks")
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[1.0, 1.15])
    ax = fig.add_subplot(grid[0, :])
    x = np.arange(top)
    width = 0.27
    for j, (w, label,
            colour) in enumerate(((w_u, "w_u: target (Grad-CAM weights)", METHOD_COLOURS["gradcam"]),
                                            (w_bar, "w̄: mean of the contrast classes", "#7f7f7f"),
                                            (w_perp, "w⊥: CASE's weights", METHOD_COLOURS["case"]))):
        ax.bar(x + (j - 1) * width, w[order], width=width, color=colour, label=label)
    ax.axhline(0, color="black", linewidth=0.6)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.35 * (hi - lo))  # room for the legend above the bars
    ax.set_xticks(x, [str(c) for c in order], fontsize=7)
    ax.set_xlabel(f"channel of {example.get('layer', 'the layer')} (the {top} largest of {w_u.size})",
                  fontsize=8)
    ax.set_ylabel("pooled gradient", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False, ncols=3, loc="upper right")
    contrast = ", ".join(example["contrast_names"][index][target])
    ax.set_title(f"{example['target_names'][index][target]}  ·  contrast: {contrast}  ·  "
                 f"cos(w_u, w̄) = {float(v.cosine[index, target]):.2f}, ‖w⊥‖/‖w_u‖ = "
                 f"{float(v.kept[index, target]):.2f}",
                 fontsize=8)
    img = _as_hwc(example["images"][index])
    panels = [("image", None), ("Grad-CAM map (w_u)", v.gradcam),
              ("shared direction (w̄)", v.contrast_gradcam),
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

