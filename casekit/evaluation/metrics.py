"""Per-batch metrics of saliency maps: top-k agreement (RQ1), confidence drop and deletion curves (RQ2),
active channels (the sparsity ablation, paper eq. 10), and unique/shared evidence on the demo benchmark.

Everything takes and returns torch tensors on the caller's device and is meant to be called once per
batch by an experiment runner.  :func:`partly_degenerate` flags maps whose top-k set is partly decided by
tie-breaking (positive area below ``⌊k·H·W⌋``).  Maps are ``[..., H, W]`` (e.g. the engine's
``[B, T, H, W]``).

**Top-k selection.**  A map's top-k set holds ``n = ⌊k·H·W⌋`` pixels (``k`` a fraction in (0, 1], at the
map's own resolution): the pixels sorted by decreasing value, ties ordered by a *tie order* of pixel
positions:

* ``ties="random"`` (default): the tie order is a seeded random permutation of the ``H·W`` positions
  (``torch.randperm`` from a CPU generator seeded with a hash of ``(seed, stream)``), so it is the same
  for every map of that stream, on every device, and does not depend on the batch a map arrives in.  A
  **constant** map (e.g. all zero after ReLU) has no top-k set: its mask is all False and ``valid`` is False;
  agreement and evidence are NaN for it.  :func:`topk_agreement` ranks map ``a`` with stream 0 and map ``b``
  with stream 1, so ties in the two maps are broken *independently*: a shared order would pick the same tied
  pixels in both maps and score two nearly blank maps near 100 % (the reference code's defect, in a milder
  form).
* ``ties="index"`` reproduces the reference code, ``np.argsort(cam.flatten())[::-1][:n]``: among equal
  values the larger flat index (row-major) comes first, i.e. the reverse of a *stable* ascending sort.
  NumPy's default (quick)sort does not define the order of ties; it agrees with this rule when a map has
  no ties and for constant maps (NumPy 2.4: an all-zero 224×224 map gives indices 50175, 50174, …), and
  any position-only rule gives two constant maps the same set, hence 100 % agreement, as in the reference.
  Constant maps are valid under this rule.

``n`` is computed as ``⌊k·H·W + 1e-9⌋`` so that a k that is a decimal fraction is not cut by binary
rounding (``0.29·100`` is ``28.999…`` in floating point).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..cam.hooks import evaluation_mode

Ties = Literal["random", "index"]
Fill = Union[Literal["mean", "blur"], float, Sequence[float], torch.Tensor]

DELETION_KS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10, 0.20, 0.50)


# --------------------------------------------------------------------------- validation


def _check_maps(maps: object, name: str = "maps", min_dim: int = 2) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [..., H, W], got {type(maps).__name__}")
    if maps.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions [..., H, W], got shape "
                         f"{tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {maps.dtype}")
    if maps.shape[-1] == 0 or maps.shape[-2] == 0:
        raise ValueError(f"{name} has an empty spatial size {tuple(maps.shape[-2:])}")
    if maps.numel() and not bool(torch.isfinite(maps).all()):
        bad = ~torch.isfinite(maps)
        kind = "NaN" if bool(torch.isnan(maps).any()) else "Inf"
        where = bad.flatten(-2).any(-1).nonzero().tolist()[:5] if maps.dim() > 2 else []
        raise ValueError(f"{name} contain {kind} values"
                         + (f" (maps at leading index {where})" if where else ""))
    return maps


def _check_ties(ties: str) -> None:
    if ties not in ("random", "index"):
        raise ValueError("ties must be 'random' (seeded random tie-break) or 'index' (reference code), got "
                         f"{ties!r}")


def topk_count(k: float, height: int, width: int) -> int:
    """Number of top-k pixels ``n = ⌊k·H·W⌋`` for a fraction ``k`` in (0, 1]; raises if ``n = 0``."""
    if isinstance(k, bool) or not isinstance(k, (int, float, np.floating, np.integer)):
        raise TypeError(f"k must be a number (a fraction in (0, 1]), got {type(k).__name__}")
    k = float(k)
    if not (0.0 < k <= 1.0):
        hint = f" (did you mean {k / 100:g}? k is a fraction, not a percentage)" if 1.0 < k <= 100.0 else ""
        raise ValueError(f"k must be a fraction in (0, 1], got {k:g}{hint}")
    n = int(math.floor(k * height * width + 1e-9))
    if n == 0:
        raise ValueError(
            f"k = {k:g} selects no pixel of a {height}×{width} map (⌊k·H·W⌋ = 0); "
            f"use k ≥ {1 / (height * width):.3g}"
        )
    return n


# --------------------------------------------------------------------------- top-k selection


def _stream_seed(seed: int, stream: int) -> int:
    blob = f"casekit-ties:{int(seed)}:{int(stream)}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


@functools.lru_cache(maxsize=64)
def _tie_order_cpu(n_pixels: int, ties: str, seed: int, stream: int) -> torch.Tensor:
    if ties == "index":
        return torch.arange(n_pixels - 1, -1, -1)
    gen = torch.Generator().manual_seed(_stream_seed(seed, stream))
    return torch.randperm(n_pixels, generator=gen)


@functools.lru_cache(maxsize=64)
def _tie_rank_cpu(n_pixels: int, ties: str, seed: int, stream: int) -> torch.Tensor:
    perm = _tie_order_cpu(n_pixels, ties, seed, stream)
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(n_pixels)
    return rank


def _tie_rank(n_pixels: int, ties: str, seed: int, stream: int, device: torch.device) -> torch.Tensor:
    """Position of each flat pixel in :func:`tie_order` → ``LongTensor [N]``."""
    return _tie_rank_cpu(int(n_pixels), ties, int(seed), int(stream)).to(device)


def tie_order(n_pixels: int, ties: Ties = "random", seed: int = 0, stream: int = 0,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Preference order of flat pixel positions among equal values (first = chosen first) →
    ``LongTensor [N]``."""
    _check_ties(ties)
    return _tie_order_cpu(int(n_pixels), ties, int(seed), int(stream)).clone().to(device)


def saliency_order(maps: torch.Tensor, ties: Ties = "random", seed: int = 0,
                   stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat pixel indices of each map from most to least salient → ``(order [..., H·W], valid [...])``.

    Sorted by decreasing value, ties by :func:`tie_order`.  ``valid`` is False for constant maps when
    ``ties="random"`` (always True for ``ties="index"``).  ``order[..., :n]`` is the top-n set, so the
    sets of increasing k are nested.
    """
    _check_maps(maps)
    _check_ties(ties)
    lead = maps.shape[:-2]
    N = maps.shape[-2] * maps.shape[-1]
    flat = maps.reshape(-1, N) + 0.0  # + 0.0 turns -0.0 into +0.0 so that radix sorts see one zero
    perm = tie_order(N, ties, seed, stream, flat.device)
    # A stable descending sort of the values laid out in tie order keeps tied pixels in tie order.
    in_perm = torch.sort(flat[:, perm], dim=1, descending=True, stable=True).indices
    order = perm[in_perm]
    if ties == "random":
        valid = flat.amax(dim=1) > flat.amin(dim=1)
    else:
        valid = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
    return order.reshape(*lead, N), valid.reshape(lead)


def topk_mask(maps: torch.Tensor, k: float = 0.05, ties: Ties = "random", seed: int = 0,
              stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean mask of each map's top-k pixels (``n = ⌊k·H·W⌋``) → ``(mask [..., H, W], valid [...])``.

    A constant map has no top-k set under ``ties="random"``: its mask is all False and ``valid`` False.
    ``stream`` selects an independent tie order (see the module docstring).
    """
    _check_maps(maps)
    _check_ties(ties)
    n = topk_count(k, maps.shape[-2], maps.shape[-1])
    N = maps.shape[-2] * maps.shape[-1]
    flat = maps.reshape(-1, N) + 0.0
    if flat.shape[0] == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=maps.device), torch.zeros(
            maps.shape[:-2], dtype=torch.bool, device=maps.device)
    rank = _tie_rank(N, ties, seed, stream, flat.device)
    # Same set as saliency_order(...)[..., :n], without a full sort: every value above the n-th largest
    # value t is in; the remaining places go to the pixels equal to t that come first in the tie order.
    t = torch.topk(flat, n, dim=1).values[:, -1:]
    mask = flat > t
    need = n - mask.sum(dim=1, keepdim=True)  # >= 1: the n-th value itself equals t
    earliness = torch.where(flat == t, N - rank, torch.zeros_like(rank))  # > 0 exactly for tied pixels
    most = int(need.max())
    chosen = torch.topk(earliness, most, dim=1).indices
    pick = torch.zeros_like(mask)
    pick.scatter_(1, chosen, torch.arange(most, device=flat.device) < need)
    mask |= pick
    if ties == "random":
        valid = flat.amax(dim=1) > flat.amin(dim=1)
        mask &= valid[:, None]
    else:
        valid = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
    return mask.reshape(maps.shape), valid.reshape(maps.shape[:-2])


def topk_agreement(a: torch.Tensor, b: torch.Tensor, k: float = 0.05, ties: Ties = "random",
                   seed: int = 0) -> torch.Tensor:
    """Top-k agreement ``|A ∩ B| / n`` of maps ``a`` and ``b`` (same shape ``[..., H, W]``) → float32
    ``[...]``.

    ``A``, ``B``: the top-k sets (``n = ⌊k·H·W⌋`` pixels each).  NaN where either map is constant
    (``ties="random"``); count those with :func:`count_nan` and report them as excluded.
    """
    _check_maps(a, "a")
    _check_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape [..., H, W], got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"a is on {a.device} but b is on {b.device}")
    n = topk_count(k, a.shape[-2], a.shape[-1])
    ma, va = topk_mask(a, k, ties, seed, stream=0)
    mb, vb = topk_mask(b, k, ties, seed, stream=1)
    both = _fraction((ma & mb).flatten(-2).sum(-1), n)
    return torch.where(va & vb, both, torch.full_like(both, float("nan")))


def _fraction(count: torch.Tensor, n: int) -> torch.Tensor:
    """``count / n`` in float32, correctly rounded on every device (CUDA divides by a Python scalar
    through its reciprocal, which can be one ulp off)."""
    return count.float() / torch.full_like(count, n, dtype=torch.float32)


def count_nan(values: torch.Tensor | np.ndarray | pd.Series | Sequence[float]) -> int:
    """Number of NaN entries (e.g. agreements of constant maps, to report as "excluded: n")."""
    if isinstance(values, torch.Tensor):
        return int(torch.isnan(values).sum()) if values.is_floating_point() else 0
    arr = np.asarray(values, dtype=float)
    return int(np.isnan(arr).sum())


def positive_area(maps: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Number of pixels > 0 of each map ``[..., H, W]`` → integer ``[...]`` (the input's kind: torch or
    numpy)."""
    t = _check_maps(torch.as_tensor(maps) if isinstance(maps, np.ndarray) else maps)
    area = (t > 0).flatten(-2).sum(-1)
    return area.cpu().numpy() if isinstance(maps, np.ndarray) else area


def partly_degenerate(maps: torch.Tensor | np.ndarray, k: float = 0.05) -> torch.Tensor | np.ndarray:
    """Maps whose top-k set is partly chosen by tie-breaking → bool ``[...]`` (the input's kind).

    Rule: ``0 < positive area < n = ⌊k·H·W⌋`` and the map is not constant.  For maps ≥ 0 with zeros
    (casekit's maps: ReLU, min–max to [0, 1]) the top-k set then holds every positive pixel and
    ``n − positive area`` zero pixels picked by the tie order (random or index), so the top-k agreement of
    two such maps measures the tie rule, not the method.  Constant maps (no top-k set at all) are counted
    apart (not partly degenerate).  Maps with negative values are rejected (the rule is about the zeros).
    """
    t = _check_maps(torch.as_tensor(maps) if isinstance(maps, np.ndarray) else maps)
    if bool((t < 0).any()):
        raise ValueError("maps have negative values; partly_degenerate is defined for maps ≥ 0 (after ReLU)")
    n = topk_count(k, t.shape[-2], t.shape[-1])
    flat = t.flatten(-2)
    area = (flat > 0).sum(-1)
    out = (area < n) & (flat.amax(-1) > flat.amin(-1))
    return out.cpu().numpy() if isinstance(maps, np.ndarray) else out


def degenerate_counts(maps: torch.Tensor | np.ndarray, k: float = 0.05) -> dict[str, int]:
    """``{"n_maps", "n_constant", "n_partly_degenerate"}`` over maps ``[..., H, W]`` (see
    :func:`partly_degenerate`)."""
    t = _check_maps(torch.as_tensor(maps) if isinstance(maps, np.ndarray) else maps)
    flat = t.flatten(-2)
    constant = flat.amax(-1) <= flat.amin(-1)
    return {"n_maps": int(constant.numel()), "n_constant": int(constant.sum()),
            "n_partly_degenerate": int(partly_degenerate(t, k).sum())}


def _evidence(maps: torch.Tensor, masks: torch.Tensor, k: float, ties: Ties, seed: int,
              what: str) -> torch.Tensor:
    _check_maps(maps)
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{what} masks must be a torch.Tensor [..., H, W] of bool, got "
                        f"{type(masks).__name__}")
    if masks.dtype != torch.bool:
        raise TypeError(f"{what} masks must be boolean, got dtype {masks.dtype}")
    if masks.dim() < 2 or tuple(masks.shape[-2:]) != tuple(maps.shape[-2:]):
        raise ValueError(
            f"{what} masks have shape {tuple(masks.shape)} but the maps are {tuple(maps.shape)}: "
            "the spatial size [H, W] must match (no resizing is done)"
        )
    try:
        shape = torch.broadcast_shapes(masks.shape, maps.shape)
    except RuntimeError:
        shape = None
    if shape != maps.shape:
        raise ValueError(
            f"{what} masks of shape {tuple(masks.shape)} do not broadcast to the maps' shape "
            f"{tuple(maps.shape)}"
        )
    n = topk_count(k, maps.shape[-2], maps.shape[-1])
    top, valid = topk_mask(maps, k, ties, seed, stream=0)
    frac = _fraction((top & masks.to(maps.device)).flatten(-2).sum(-1), n)
    return torch.where(valid, frac, torch.full_like(frac, float("nan")))


def unique_evidence(maps: torch.Tensor, masks: torch.Tensor, k: float = 0.05, ties: Ties = "random",
                    seed: int = 0) -> torch.Tensor:
    """Fraction of each map's top-k pixels on the target class's unique part → float32 ``[...]``.

    ``masks``: bool ``[..., H, W]`` (the demo benchmark's ``masks["unique"]``), broadcastable to the maps.
    Same top-k set as map ``a`` in :func:`topk_agreement`; NaN for constant maps.
    """
    return _evidence(maps, masks, k, ties, seed, "unique")


def shared_evidence(maps: torch.Tensor, masks: torch.Tensor, k: float = 0.05, ties: Ties = "random",
                    seed: int = 0) -> torch.Tensor:
    """Fraction of each map's top-k pixels on the part shared with the class's group (``masks["shared"]``)."""
    return _evidence(maps, masks, k, ties, seed, "shared")


# --------------------------------------------------------------------------- fidelity


@dataclass
class ConfidenceDrop:
    """Per-map confidence before/after blanking (shapes ``maps.shape[:-2]``, plus ``[K]`` for curves).

    ``drop = p_before − p_after``; ``relative_drop = max(drop, 0) / p_before`` (the reference score);
    ``valid`` is False for maps without a top-k set (constant maps): nothing is blanked, so their drop is 0.
    """

    target: torch.Tensor
    p_before: torch.Tensor
    p_after: torch.Tensor
    drop: torch.Tensor
    relative_drop: torch.Tensor
    valid: torch.Tensor


@dataclass
class DeletionCurve(ConfidenceDrop):
    """:class:`ConfidenceDrop` at each k of ``ks`` (last dimension), and the curves' normalised areas.

    ``area = trapz(relative_drop, ks) / (ks[-1] − ks[0])`` — the mean relative drop over the k range, in
    [0, 1], higher = more faithful; ``area_prob`` the same for ``p_after`` (lower = more faithful).  With a
    single k the area is the value at that k.
    """

    ks: torch.Tensor | None = None
    area: torch.Tensor | None = None
    area_prob: torch.Tensor | None = None


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` (kernel radius ``⌈3σ⌉``, replicate padding)."""
    if sigma <= 0:
        raise ValueError(f"blur sigma must be positive, got {sigma}")
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    C = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def _fill_images(images: torch.Tensor, fill: Fill, blur_sigma: float | None) -> torch.Tensor:
    """The replacement image ``[B, C, H, W]`` for blanked pixels."""
    C, H, W = images.shape[1:]
    if isinstance(fill, str):
        if fill == "mean":
            return torch.zeros_like(images)
        if fill == "blur":
            sigma = blur_sigma if blur_sigma is not None else max(H, W) / 10
            return gaussian_blur(images, float(sigma))
        raise ValueError(f"fill must be 'mean', 'blur' or per-channel values, got {fill!r}")
    value = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    if value.dim() == 0:
        value = value.expand(C)
    if value.shape != (C,):
        raise ValueError(f"a fill value must be a number or one value per channel ({C}), got shape "
                         f"{tuple(value.shape)}")
    return value.view(1, C, 1, 1).expand_as(images)


def _blanked_probs(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, ks: Sequence[float],
                   fill: Fill, target: torch.Tensor | Sequence[int] | None, ties: Ties, seed: int,
                   batch_size: int, blur_sigma: float | None):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(
            "images must be a floating tensor [B, C, H, W], got "
            + (f"shape {tuple(images.shape)}, dtype {images.dtype}" if isinstance(images, torch.Tensor)
               else type(images).__name__)
        )
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or Inf values")
    _check_maps(maps, min_dim=3)
    B, C, H, W = images.shape
    if maps.dim() not in (3, 4) or maps.shape[0] != B or tuple(maps.shape[-2:]) != (H, W):
        raise ValueError(
            f"maps must be [B, H, W] or [B, T, H, W] matching images [B={B}, C, H={H}, W={W}], got "
            f"{tuple(maps.shape)}; maps must be at the input resolution (no resizing is done)"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ns = [topk_count(k, H, W) for k in ks]
    maps = maps.to(images.device)
    lead = maps.shape[:-2]  # (B,) or (B, T)
    T = 1 if maps.dim() == 3 else maps.shape[1]
    order, valid = saliency_order(maps.reshape(B, T, H, W), ties, seed, stream=0)  # [B, T, N], [B, T]
    rank = torch.empty_like(order)
    rank.scatter_(2, order, torch.arange(H * W, device=order.device).expand_as(order))
    K = len(ns)
    n_t = torch.tensor(ns, device=images.device)

    with evaluation_mode(model), torch.no_grad():
        logits = model(images)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != B:
            raise ValueError("the model must return logits [B, num_classes]")
        probs = torch.softmax(logits.float(), dim=1)
        if target is None:
            tgt = probs.argmax(dim=1)[:, None].expand(B, T)
        else:
            tgt = torch.as_tensor(target, device=images.device)
            if tgt.is_floating_point() or tgt.dtype == torch.bool:
                raise TypeError(f"target must hold integer class indices, got dtype {tgt.dtype}")
            if tuple(tgt.shape) != tuple(lead):
                raise ValueError(f"target must have the maps' leading shape {tuple(lead)}, got "
                                 f"{tuple(tgt.shape)}")
            tgt = tgt.long().reshape(B, T)
            if int(tgt.min()) < 0 or int(tgt.max()) >= probs.shape[1]:
                raise ValueError(f"target holds a class index outside 0..{probs.shape[1] - 1}")
        p_before = probs.gather(1, tgt)  # [B, T]
        replacement = _fill_images(images, fill, blur_sigma)

        rows = B * T * K  # one perturbed image per (image, map, k)
        p_after = torch.empty(rows, device=images.device, dtype=torch.float32)
        for start in range(0, rows, batch_size):
            r = torch.arange(start, min(start + batch_size, rows), device=images.device)
            b, t, j = r // (T * K), (r // K) % T, r % K
            blank = (rank[b, t] < n_t[j][:, None]) & valid[b, t][:, None]  # [r, N]; row-major (H, W) order
            blank = blank.view(-1, 1, H, W).to(images.dtype)
            x = images[b] * (1 - blank) + replacement[b] * blank
            out = torch.softmax(model(x).float(), dim=1)
            p_after[start : start + len(r)] = out.gather(1, tgt[b, t][:, None])[:, 0]
    p_after = p_after.view(B, T, K)
    drop = p_before[..., None] - p_after
    rel = drop.clamp_min(0) / p_before[..., None]
    shape = tuple(lead) + (K,)
    return (tgt.reshape(lead), p_before.reshape(lead), p_after.reshape(shape), drop.reshape(shape),
            rel.reshape(shape), valid.reshape(lead))


def confidence_drop(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, k: float = 0.05,
                    fill: Fill = "mean", target: torch.Tensor | Sequence[int] | None = None, *,
                    ties: Ties = "random", seed: int = 0, batch_size: int = 256,
                    blur_sigma: float | None = None) -> ConfidenceDrop:
    """Blank each map's top-k pixels in its image and measure the softmax probability of the target class.

    ``images [B, C, H, W]`` (normalised), ``maps [B, H, W]`` or ``[B, T, H, W]`` at the input resolution;
    results have the maps' leading shape.  Blanked pixels get ``fill``: ``"mean"`` = 0 (the dataset mean
    colour in normalised space, ``x·(1 − m)``), ``"blur"`` = a Gaussian-blurred copy of the image
    (σ = ``blur_sigma``, default max(H, W)/10), or a number / one value per channel.  ``target`` defaults
    to the predicted class.  ``p_before``/``p_after``: softmax probability of the target; ``drop = p_before −
    p_after``; ``relative_drop = max(drop, 0) / p_before``.  The model is run in eval mode under no_grad
    and its train/eval flags are restored; ``batch_size`` perturbed images go through one forward.
    """
    if isinstance(k, (list, tuple)):
        raise TypeError("confidence_drop takes one k; use deletion_curve for several")
    out = _blanked_probs(model, images, maps, [k], fill, target, ties, seed, batch_size, blur_sigma)
    tgt, pb, pa, d, rel, valid = out
    return ConfidenceDrop(tgt, pb, pa[..., 0], d[..., 0], rel[..., 0], valid)


def deletion_curve(model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
                   ks: Iterable[float] = DELETION_KS, fill: Fill = "mean",
                   target: torch.Tensor | Sequence[int] | None = None, *, ties: Ties = "random",
                   seed: int = 0, batch_size: int = 256, blur_sigma: float | None = None) -> DeletionCurve:
    """:func:`confidence_drop` at every k of ``ks`` (nested top-k sets), all ks batched into shared forwards.

    Returns ``p_after``, ``drop``, ``relative_drop`` with a last dimension ``[K]`` and the normalised
    areas (see :class:`DeletionCurve`).
    """
    ks = [float(k) for k in ks]
    if not ks:
        raise ValueError("ks is empty; give at least one fraction in (0, 1]")
    if any(b <= a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"ks must be strictly increasing, got {ks}")
    tgt, pb, pa, d, rel, valid = _blanked_probs(model, images, maps, ks, fill, target, ties, seed, batch_size,
                                                blur_sigma)
    kt = torch.tensor(ks, dtype=torch.float32, device=pa.device)
    if len(ks) == 1:
        area, area_prob = rel[..., 0], pa[..., 0]
    else:
        span = ks[-1] - ks[0]
        area = torch.trapezoid(rel, kt, dim=-1) / span
        area_prob = torch.trapezoid(pa, kt, dim=-1) / span
    return DeletionCurve(tgt, pb, pa, d, rel, valid, ks=kt, area=area, area_prob=area_prob)


# --------------------------------------------------------------------------- channel sparsity


def active_channels(activations: torch.Tensor, tau: float = 1e-3,
                    return_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Active channels per image (paper eq. 10): ``â_c = mean_{ij} A_c(i, j) > τ``.

    ``activations [B, C, h, w]`` → ``LongTensor [B]`` counts, and with ``return_mask=True`` also the
    ``bool [B, C]`` mask: ``(counts, mask)``.
    """
    if not isinstance(activations, torch.Tensor):
        raise TypeError(f"activations must be a torch.Tensor [B, C, h, w], got {type(activations).__name__}")
    if activations.dim() != 4:
        raise ValueError(f"activations must be 4-D [B, C, h, w], got shape {tuple(activations.shape)}")
    if not activations.is_floating_point():
        raise TypeError(f"activations must be floating, got dtype {activations.dtype}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
        raise ValueError(f"tau must be a finite number, got {tau!r}")
    if bool(torch.isnan(activations).any()):
        raise ValueError("activations contain NaN values")
    mask = activations.float().mean(dim=(2, 3)) > tau
    counts = mask.sum(dim=1)
    return (counts, mask) if return_mask else counts


def class_mean_active_channels(counts: torch.Tensor | np.ndarray | Sequence[int],
                               labels: torch.Tensor | np.ndarray | Sequence[int]) -> pd.DataFrame:
    """Per-class mean of active-channel counts → DataFrame ``label, n_images, mean_active_channels``
    (one row per label present, sorted by label)."""
    c = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if c.ndim != 1 or y.ndim != 1:
        raise ValueError(f"counts and labels must be 1-D, got shapes {c.shape} and {y.shape}")
    if len(c) != len(y):
        raise ValueError(f"counts has {len(c)} entries but labels has {len(y)}: one label per image")
    df = pd.DataFrame({"label": y, "active": c.astype(float)})
    out = df.groupby("label", sort=True)["active"].agg(["size", "mean"]).reset_index()
    return out.rename(columns={"size": "n_images", "mean": "mean_active_channels"})
