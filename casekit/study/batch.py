"""One batch of a run, each arrow in one place (:func:`explain_batch`):

images → **one** engine call (:func:`casekit.explain`: the maps of every method for every target the metrics
need, plus the layer's activations) → metrics from those maps only (top-k agreement with the top-1 map,
unique/shared evidence, constant maps, RQ2's deletion curve of the top-1 map) → result rows; active channels
from the recorded activations (other layers through one hooked forward pass).

Also the two contrast strategies of CASE (:func:`logit_contrast`: the image's own next-highest logits) and the
sibling-target rule of the demo benchmark.

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`.config`, :mod:`.subject`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..cam.contrast import contrast_decisions, contrast_sets, decision_counts
from ..cam.engine import CAMResult, explain
from ..cam.registry import REGISTRY
from ..evaluation.metrics import (
    active_channels,
    deletion_curve,
    partly_degenerate,
    shared_evidence,
    topk_agreement,
    topk_count,
    unique_evidence,
)
from .config import COMPARISONS, TARGETS, RunConfig, k_suffix
from .subject import Subject, layer_activations, load_batch


def run_tiebreak(config: RunConfig, subject: Subject) -> torch.Tensor | None:
    """How a run orders classes with equal held-out confusion counts: the subject's held-out mean softmax
    probabilities when ``config.contrast_tiebreak == "probs"`` (then class index), else None (class index)."""
    return subject.tiebreak if config.contrast_tiebreak == "probs" else None


def logit_contrast_sets(targets: torch.Tensor, logits: torch.Tensor, k: int) -> torch.Tensor:
    """Contrast classes from the image's own logits: for each target u, the k highest-logit classes ≠ u, in
    decreasing logit order.  ``targets [B, T]`` (long), ``logits [B, C]`` → ``[B, T, k]`` (long)."""
    if k + 1 > logits.shape[1]:
        raise ValueError(f"contrast_k={k} needs at least {k + 1} classes, the model has {logits.shape[1]}")
    cand = logits.topk(k + 1, dim=1).indices[:, None, :].expand(*targets.shape, k + 1)  # [B, T, k+1]
    other = cand != targets[..., None]
    pick = torch.argsort((~other).to(torch.int8), dim=-1, stable=True)[..., :k]  # first k classes ≠ u
    return cand.gather(-1, pick)


def logit_contrast(k: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """:func:`logit_contrast_sets` as the ``contrast`` argument of :func:`casekit.explain`: a function
    ``(targets [B, T], logits [B, C]) -> [B, T, k]``."""
    def contrast(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logit_contrast_sets(targets, logits, k)
    return contrast


def _sibling_table(groups: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    """``bool [C, C]``: ``S[u, v]`` iff v ≠ u is in u's sibling group; every class needs a sibling."""
    table = torch.zeros(num_classes, num_classes, dtype=torch.bool)
    for g in groups:
        g = [int(c) for c in g]
        for u in g:
            if not 0 <= u < num_classes:
                raise ValueError(f"sibling group {g} holds class {u}, outside 0..{num_classes - 1}")
            for v in g:
                if v != u:
                    table[u, v] = True
    lonely = (~table.any(dim=1)).nonzero().flatten().tolist()
    if lonely:
        raise ValueError(f"classes {lonely[:10]} have no sibling in the groups; the true-vs-sibling "
                         "comparison needs groups of at least two classes (or run with siblings=False)")
    return table


@dataclass
class BatchContext:
    """What every batch of a run shares: the config and subject, the layer names, the target roles, the
    contrast of CASE and the sibling table (demo benchmark)."""

    config: RunConfig
    subject: Subject
    layer_name: str
    sparsity_names: dict[str, str]  # role/name → dotted name
    targets: tuple[str, ...]
    contrast: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    siblings: torch.Tensor | None  # bool [C, C]
    #: How the contrast slots were decided ({"counts", "tiebreak", "index"} → slots), None without confusion
    decisions: dict[str, int] | None = None
    #: The autocast dtype of each method (the run's precision decision); None: every method in float32
    amp: dict[str, torch.dtype | None] | None = None


def batch_context(config: RunConfig, subject: Subject) -> BatchContext:
    """Resolve a run's layers, targets (top-1, top-2 and, with sibling groups, the true class's sibling) and
    CASE's contrast (the confusion matrix's K most-confused classes, ties broken by the subject's
    ``tiebreak`` with ``contrast_tiebreak="probs"`` when it has one, then by index; or the image's own
    logits) and how its slots were decided (:func:`casekit.cam.contrast.contrast_decisions`)."""
    layer_name = subject.layer_name(config.layer)
    sparsity = {role: subject.layer_name(role) for role in config.sparsity}
    sib = None
    targets: tuple[str, ...] = ("top1",)
    if config.rq1:
        targets = ("top1", "top2")
        if config.siblings and subject.groups:
            num_classes = max(int(c) for g in subject.groups for c in g) + 1
            sib = _sibling_table(subject.groups, num_classes)
            targets = TARGETS
    contrast, decisions = None, None
    if any(REGISTRY[m].needs_contrast for m in config.methods):
        if config.contrast_strategy == "confusion":
            if subject.confusion is None:
                raise ValueError("CASE with contrast_strategy='confusion' needs the subject's held-out "
                                 "confusion matrix")
            tiebreak = run_tiebreak(config, subject)
            sets = contrast_sets(subject.confusion, config.contrast_k, tiebreak).to(config.device)
            decisions = decision_counts(contrast_decisions(subject.confusion, config.contrast_k, tiebreak))

            def contrast(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
                return sets[t]  # V(u) depends on the target class only
        else:
            contrast = logit_contrast(config.contrast_k)
    return BatchContext(config, subject, layer_name, sparsity, targets, contrast, sib, decisions)


def target_fn(ctx: BatchContext, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The engine's target rule of a run: logits ``[B, C]`` → target classes ``[B, T]`` (top-1, top-2, and the
    most likely sibling of the true class ``labels [B]``)."""
    def targets(logits: torch.Tensor) -> torch.Tensor:
        if len(ctx.targets) == 1:
            return logits.argmax(dim=1, keepdim=True)
        top = logits.topk(2, dim=1).indices
        if ctx.siblings is None:
            return top
        if ctx.siblings.shape[0] != logits.shape[1]:
            raise ValueError(f"the sibling groups cover {ctx.siblings.shape[0]} classes, the model has "
                             f"{logits.shape[1]}")
        allowed = ctx.siblings.to(logits.device)[labels]  # [B, C]: siblings of the true class
        # the most likely sibling
        sib = logits.masked_fill(~allowed, float("-inf")).argmax(dim=1, keepdim=True)
        return torch.cat([top, sib], dim=1)
    return targets


def raw_map_columns(raw: torch.Tensor, size: Sequence[int]) -> dict[str, Any]:
    """Row columns of the raw maps ``[B, M, T, h, w]`` (the layer-resolution maps before ReLU, upsampling and
    scaling): ``raw_map`` (the ``h·w`` float32 values as bytes, row-major), ``map_h``, ``map_w`` and the input
    size ``input_h``, ``input_w`` that :func:`casekit.finalize_maps` upsamples to — so that every map of a run
    is computed once and any later analysis (another k, another pairing) reads it back exactly
    (:func:`casekit.study.rows.stored_maps`)."""
    h, w = raw.shape[-2:]
    flat = raw.detach().float().cpu().contiguous().reshape(-1, h * w).numpy()
    n = flat.shape[0]
    return {"raw_map": np.array([row.tobytes() for row in flat], dtype=object),
            "map_h": np.full(n, h, dtype=np.int64), "map_w": np.full(n, w, dtype=np.int64),
            "input_h": np.full(n, int(size[0]), dtype=np.int64),
            "input_w": np.full(n, int(size[1]), dtype=np.int64)}


_FIDELITY_COLUMNS = ("p_before", "p_after", "drop", "relative_drop", "deletion_area", "deletion_area_prob")


def _map_metrics(ctx: BatchContext, maps: torch.Tensor,
                 masks: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """Metrics of the maps ``[B, M, T, H, W]`` alone: constant maps, agreement of each target's map with the
    top-1 map, unique/shared evidence → ``{name: [B, M, T]}``."""
    cfg = ctx.config
    B, M, T, H, W = maps.shape
    topk_count(cfg.k, H, W)  # a k too small for the maps raises here, naming the sizes
    flat = maps.flatten(-2)
    nan = torch.full((B, M, T), float("nan"), device=maps.device)
    agreement = nan.clone()
    if T > 1:
        first = maps[:, :, :1].expand(B, M, T - 1, H, W)
        agreement[:, :, 1:] = topk_agreement(first, maps[:, :, 1:], cfg.k, cfg.ties, cfg.sample_seed)
    uniq, shared = nan.clone(), nan.clone()
    if masks is not None:
        uniq = unique_evidence(maps, masks["unique"][:, None, None], cfg.k, cfg.ties, cfg.sample_seed)
        shared = shared_evidence(maps, masks["shared"][:, None, None], cfg.k, cfg.ties, cfg.sample_seed)
    return {"constant": flat.amax(-1) <= flat.amin(-1),  # a degenerate map (e.g. all zero)
            # top-k set partly picked by the tie order (0 < positive area < ⌊k·H·W⌋)
            "partly_degenerate": partly_degenerate(maps.clamp(min=0), cfg.k),
            "agreement": agreement, "unique_evidence": uniq, "shared_evidence": shared}


def _fidelity(ctx: BatchContext, images: torch.Tensor, maps: torch.Tensor,
              res: CAMResult) -> dict[str, np.ndarray]:
    """RQ2 columns ``{name: [B, M, T]}``: the deletion curve of each method's top-1 map (NaN for the other
    targets, and everywhere when the run skips RQ2)."""
    cfg = ctx.config
    B, M, T = maps.shape[:3]
    ks = cfg.curve_ks
    fid = {name: np.full((B, M, T), np.nan) for name in
           [*_FIDELITY_COLUMNS, *(f"p_after_{k_suffix(k)}" for k in ks),
            *(f"relative_drop_{k_suffix(k)}" for k in ks)]}
    if not cfg.rq2:
        return fid
    # The top-1 (predicted) class's maps of all methods, blanked on the same images: one call.
    curve = deletion_curve(ctx.subject.model, images, maps[:, :, 0].contiguous(), ks, cfg.fill,
                           res.targets[:, :1].expand(B, M), ties=cfg.ties, seed=cfg.sample_seed,
                           batch_size=cfg.perturbation_batch)
    j = ks.index(cfg.fidelity_k)
    values = {"p_before": curve.p_before, "p_after": curve.p_after[..., j], "drop": curve.drop[..., j],
              "relative_drop": curve.relative_drop[..., j], "deletion_area": curve.area,
              "deletion_area_prob": curve.area_prob}
    for i, k in enumerate(ks):
        values[f"p_after_{k_suffix(k)}"] = curve.p_after[..., i]
        values[f"relative_drop_{k_suffix(k)}"] = curve.relative_drop[..., i]
    for name, v in values.items():
        fid[name][:, :, 0] = v.cpu().double().numpy()
    return fid


def _map_rows(ctx: BatchContext, ids: Sequence[int], images: torch.Tensor, labels: torch.Tensor,
              masks: dict[str, torch.Tensor] | None) -> tuple[pd.DataFrame, torch.Tensor]:
    """One engine call → one row per (image, method, target) → ``(rows, the layer's activations)``."""
    cfg, subj = ctx.config, ctx.subject
    res = explain(subj.model, images, ctx.layer_name, cfg.methods, target_fn(ctx, labels), ctx.contrast,
                  projection=cfg.projection, batch_size=cfg.perturbation_batch, amp_dtype=ctx.amp)
    wrong = (res.targets[:, 0] != labels).nonzero().flatten().tolist()
    if wrong:  # the sample holds correctly classified images; a batch-size-dependent near tie can flip one
        warnings.warn(f"images {[ids[j] for j in wrong]} are no longer classified correctly in this batch; "
                      "their top-1 map is not the true class's", RuntimeWarning, stacklevel=3)
    B, M, T = len(ids), len(cfg.methods), len(ctx.targets)
    n = B * M * T
    maps = torch.stack([res.maps[m] for m in cfg.methods], dim=1)  # [B, M, T, H, W]
    metrics = _map_metrics(ctx, maps, masks)
    tgt = res.targets  # [B, T]
    probs = torch.softmax(res.logits.float(), dim=1).gather(1, tgt)  # [B, T]
    cols: dict[str, Any] = {
        "model": np.repeat(cfg.model, n).astype(object),
        "seed": np.full(n, cfg.seed, dtype=np.int64),
        "layer": np.repeat(cfg.layer, n).astype(object),
        "method": np.tile(np.repeat(np.array(cfg.methods, dtype=object), T), B),
        "image_id": np.repeat(np.asarray(ids, dtype=np.int64), M * T),
        "target": np.tile(np.array(ctx.targets, dtype=object), B * M),
        "layer_name": np.repeat(ctx.layer_name, n).astype(object),
        "label": np.repeat(labels.cpu().numpy().astype(np.int64), M * T),
        "target_class": tgt.cpu().numpy().astype(np.int64)[:, None, :].repeat(M, 1).reshape(-1),
        "prob": probs.cpu().numpy().astype(np.float64)[:, None, :].repeat(M, 1).reshape(-1),
        "comparison": np.tile(np.array([COMPARISONS.get(t, "") for t in ctx.targets], dtype=object), B * M),
        "constant": metrics["constant"].cpu().numpy().reshape(-1),
        "partly_degenerate": metrics["partly_degenerate"].cpu().numpy().reshape(-1),
    }
    for name in ("agreement", "unique_evidence", "shared_evidence"):
        cols[name] = metrics[name].cpu().numpy().astype(np.float64).reshape(-1)
    cols.update(raw_map_columns(torch.stack([res.raw[m] for m in cfg.methods], dim=1), images.shape[-2:]))
    cols["fidelity_k"] = np.full(n, cfg.fidelity_k if cfg.rq2 else np.nan)
    cols.update({name: v.reshape(-1) for name, v in _fidelity(ctx, images, maps, res).items()})
    return pd.DataFrame(cols), res.activations


def _sparsity_rows(ctx: BatchContext, ids: Sequence[int], images: torch.Tensor, labels: torch.Tensor,
                   acts: dict[str, torch.Tensor]) -> pd.DataFrame:
    """One row per (layer role, image): the active channels of the layer (τ of the run)."""
    cfg = ctx.config
    missing = [n for n in ctx.sparsity_names.values() if n not in acts]
    if missing:
        acts = {**acts, **layer_activations(ctx.subject.model, images, missing)}
    parts = []
    for role, name in ctx.sparsity_names.items():
        A = acts[name]
        counts = active_channels(A, cfg.tau)
        parts.append(pd.DataFrame({
            "model": cfg.model, "seed": np.int64(cfg.seed), "layer": role,
            "image_id": np.asarray(ids, dtype=np.int64), "layer_name": name,
            "label": labels.cpu().numpy().astype(np.int64),
            "active_channels": counts.cpu().numpy().astype(np.int64),
            "n_channels": np.int64(A.shape[1]), "tau": cfg.tau,
        }))
    return pd.concat(parts, ignore_index=True)


def explain_batch(ctx: BatchContext, ids: Sequence[int], need_maps: bool,
                  need_sparsity: bool) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Images ``ids`` → one engine call → maps of all methods and targets → metrics → ``(map rows, sparsity
    rows)`` (each None when not needed)."""
    images, labels, masks = load_batch(ctx.subject.dataset, ids, ctx.config.device)
    acts: dict[str, torch.Tensor] = {}
    map_rows = None
    if need_maps:
        map_rows, acts[ctx.layer_name] = _map_rows(ctx, ids, images, labels, masks)
    sparsity_rows = _sparsity_rows(ctx, ids, images, labels, acts) if need_sparsity else None
    return map_rows, sparsity_rows
