"""The study of the chapter "What the diagnostic measures": per (model, layer) one pass over a seeded sample
that stores, per (method, image, k), the top-1/top-2 agreement, the chance agreement (top-1 maps of unrelated
images), whether the runner-up is a confusable class, the unique evidence (demo masks), the fidelity of the
top-1 map and CASE's geometry (‖w⊥‖/‖w_u‖, cos(w_u, w̄)) — :func:`diagnostic_study`.

One engine call per batch gives every method's top-1 and top-2 maps; every k is scored from those same maps
(no extra forwards).  The chance reference pairs images across batches, so a (model, layer) is computed and
committed as a whole: its store under ``<results_dir>/diagnostic/<model>-seed<seed>-<layer>/`` is either
complete (skipped on the next call) or empty.

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`.config`, :mod:`.profiles`, :mod:`.runner`,
:mod:`.subject`, :mod:`.store`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..cam.contrast import contrast_decisions, contrast_sets, decision_counts
from ..cam.engine import case_vectors, explain
from ..cam.registry import canonical_method
from ..evaluation.diagnostic import DIAGNOSTIC_KS, chance_pairs, in_contrast_set
from ..evaluation.metrics import confidence_drop, topk_agreement, unique_evidence
from .batch import run_tiebreak
from .config import RunConfig, check_int, default_results_dir, tuple_of_str
from .profiles import profile_models
from .runner import _open_store
from .store import ResultStore
from .subject import Subject, load_batch, load_subject, sample_images

#: Sub-folder of a results folder that holds this study's stores.
DIAGNOSTIC_DIR = "diagnostic"
#: Key of the study's rows.
DIAGNOSTIC_KEY: tuple[str, ...] = ("model", "seed", "layer", "method", "image_id", "k")
#: Methods of the study: the gradient methods and the plain contrastive difference.  Score-CAM and
#: Ablation-CAM (one masked forward per channel and image) are left out to keep the study within budget:
#: no quantity of the chapter needs all six methods.
DIAGNOSTIC_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "layercam", "case", "gradcam-diff")
#: Images per (model, layer) of the demo profile's diagnostic study.
DIAGNOSTIC_N_IMAGES = 120
DIAGNOSTIC_FORMAT = 1  # bump when the row schema changes (part of the store config)


def _methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(canonical_method(m) for m in tuple_of_str(methods, "methods")))
    if not out:
        raise ValueError("methods is empty")
    return out


def _ks(ks: Sequence[float]) -> tuple[float, ...]:
    out = tuple(sorted({float(k) for k in ks}))
    if not out or any(not 0 < k <= 1 for k in out):
        raise ValueError(f"ks must be fractions in (0, 1], got {tuple(ks)}")
    return out


def _chance_partner(top1: np.ndarray, seed: int) -> tuple[np.ndarray, bool]:
    """Partners of another top-1 class where possible (every class ≤ n/2), else any other image."""
    try:
        return chance_pairs(top1.size, seed, labels=top1), True
    except ValueError:
        return chance_pairs(top1.size, seed), False


def _explain_all(config: RunConfig, subject: Subject, ids: list[int], methods: tuple[str, ...],
                 sets: torch.Tensor, fidelity_k: float, progress: bool) -> dict[str, Any]:
    """Every batch: one engine call (top-1, top-2 maps of all methods) + CASE's vectors + the top-1 maps'
    confidence drop at ``fidelity_k`` + unique evidence inputs → arrays over the whole sample."""
    layer = subject.layer_name(config.layer)
    contrast = lambda t, z: sets.to(z.device)[t]  # noqa: E731  V(u) from the confusion matrix
    top2 = lambda z: z.topk(2, dim=1).indices  # noqa: E731
    parts: dict[str, list[Any]] = {n: [] for n in ("maps", "logits", "targets", "masks", "kept", "cosine",
                                                   "p_before", "p_after", "rel", "hw")}
    bar = tqdm(total=len(ids), unit="img", desc=f"diagnostic {config.model} {config.layer}",
               disable=not progress, dynamic_ncols=True)
    try:
        for i in range(0, len(ids), config.batch_size):
            b = ids[i: i + config.batch_size]
            images, labels, masks = load_batch(subject.dataset, b, config.device)
            res = explain(subject.model, images, layer, methods, top2, contrast,
                          batch_size=config.perturbation_batch)
            maps = torch.stack([res.maps[m] for m in methods], dim=1)  # [B, M, 2, H, W]
            vec = case_vectors(subject.model, images, layer, res.targets[:, :1], res.contrast[:, :1])
            tgt = res.targets[:, :1].expand(len(b), len(methods))
            drop = confidence_drop(subject.model, images, maps[:, :, 0].contiguous(), fidelity_k, config.fill,
                                   tgt, ties=config.ties, seed=config.sample_seed,
                                   batch_size=config.perturbation_batch)
            parts["maps"].append(maps.cpu())
            parts["logits"].append(res.logits.detach().float().cpu())
            parts["targets"].append(res.targets.cpu())
            parts["masks"].append(None if masks is None else masks["unique"].cpu())
            parts["kept"].append(vec.kept[:, 0].detach().cpu())
            parts["cosine"].append(vec.cosine[:, 0].detach().cpu())
            parts["p_before"].append(drop.p_before.cpu())
            parts["p_after"].append(drop.p_after.cpu())
            parts["rel"].append(drop.relative_drop.cpu())
            parts["hw"].append(tuple(res.activations.shape[-2:]))
            bar.update(len(b))
    finally:
        bar.close()
    out = {n: torch.cat(v) for n, v in parts.items() if n not in ("masks", "hw")}
    out["masks"] = None if any(m is None for m in parts["masks"]) else torch.cat(parts["masks"])
    out["hw"] = parts["hw"][0]
    return out


def _rows(config: RunConfig, ids: list[int], methods: tuple[str, ...], ks: tuple[float, ...],
          sets: torch.Tensor, a: dict[str, Any], fidelity_k: float) -> pd.DataFrame:
    """The sample's arrays → one row per (method, image, k)."""
    maps = a["maps"]  # [N, M, 2, H, W]
    N, M = maps.shape[:2]
    H, W = maps.shape[-2:]
    top1, top2 = maps[:, :, 0].contiguous(), maps[:, :, 1].contiguous()
    flat = top1.flatten(-2)
    const1 = (flat.amax(-1) <= flat.amin(-1)).numpy()
    flat2 = top2.flatten(-2)
    const2 = (flat2.amax(-1) <= flat2.amin(-1)).numpy()
    tgt = a["targets"].numpy().astype(np.int64)
    probs = torch.softmax(a["logits"], dim=1).gather(1, a["targets"]).numpy().astype(np.float64)
    partner, other_class = _chance_partner(tgt[:, 0], config.sample_seed)
    idx = torch.as_tensor(partner)
    in_set = in_contrast_set(tgt[:, 0], tgt[:, 1], sets)
    frames = []
    for k in ks:
        agree = topk_agreement(top1, top2, k, config.ties, config.sample_seed).numpy()
        chance = topk_agreement(top1, top1[idx], k, config.ties, config.sample_seed).numpy()
        uniq = np.full((N, M), np.nan)
        if a["masks"] is not None:
            uniq = unique_evidence(top1, a["masks"][:, None], k, config.ties, config.sample_seed)
            uniq = uniq.double().numpy()
        rep = lambda v: np.repeat(np.asarray(v), M)  # noqa: E731  per image → per (image, method)
        frames.append(pd.DataFrame({
            "model": np.repeat(config.model, N * M).astype(object),
            "seed": np.full(N * M, config.seed, dtype=np.int64),
            "layer": np.repeat(config.layer, N * M).astype(object),
            "method": np.tile(np.array(methods, dtype=object), N),
            "image_id": rep(np.asarray(ids, dtype=np.int64)),
            "k": np.full(N * M, k),
            "label": rep(tgt[:, 0]), "other_class": rep(tgt[:, 1]),
            "prob": rep(probs[:, 0]), "other_prob": rep(probs[:, 1]),
            "in_contrast": rep(in_set),
            "agreement": agree.astype(np.float64).reshape(-1),
            "chance": chance.astype(np.float64).reshape(-1),
            "partner": rep(np.asarray(ids, dtype=np.int64)[partner]),
            "chance_other_class": np.full(N * M, other_class),
            "constant_top1": const1.reshape(-1), "constant_top2": const2.reshape(-1),
            "constant_partner": const1[partner].reshape(-1),
            "unique_evidence": uniq.reshape(-1),
            "fidelity_k": np.full(N * M, fidelity_k),
            "p_before": a["p_before"].double().numpy().reshape(-1),
            "p_after": a["p_after"].double().numpy().reshape(-1),
            "relative_drop": a["rel"].double().numpy().reshape(-1),
            "kept": rep(a["kept"].double().numpy()), "cosine": rep(a["cosine"].double().numpy()),
            "map_h": np.full(N * M, a["hw"][0], dtype=np.int64),
            "map_w": np.full(N * M, a["hw"][1], dtype=np.int64),
            "input_h": np.full(N * M, H, dtype=np.int64), "input_w": np.full(N * M, W, dtype=np.int64),
        }))
    return pd.concat(frames, ignore_index=True)


def diagnostic_run(config: RunConfig, subject: Subject | None = None, *, methods: Sequence[str] =
                   DIAGNOSTIC_METHODS, ks: Sequence[float] = DIAGNOSTIC_KS, fidelity_k: float = 0.05,
                   results_dir: str | os.PathLike | None = None, recompute: bool = False,
                   progress: bool = True) -> pd.DataFrame:
    """One (model, seed, layer) of the study (sample: ``config``'s ``n_images``, ``sample_seed``; contrast:
    ``config.contrast_k`` most-confused classes).  Stored in ``<results_dir>/<config.name>``; a complete
    store is read back, not computed.  Returns its rows (key :data:`DIAGNOSTIC_KEY`)."""
    methods, ks = _methods(methods), _ks(ks)
    if "case" not in methods:
        raise ValueError("the diagnostic study needs 'case' among the methods (its contrast and geometry)")
    subject = load_subject(config) if subject is None else subject
    if subject.confusion is None:
        raise ValueError("the diagnostic study needs the subject's held-out confusion matrix (contrast sets)")
    root = (Path(results_dir) if results_dir is not None
            else default_results_dir(config.profile) / DIAGNOSTIC_DIR)
    run_cfg = config.to_dict()
    run_cfg.pop("device")
    tiebreak = run_tiebreak(config, subject)  # CASE's sets: held-out counts, ties broken as in a run
    decisions = decision_counts(contrast_decisions(subject.confusion, config.contrast_k, tiebreak))
    store_cfg = {"run": run_cfg, "methods": list(methods), "ks": list(ks), "fidelity_k": float(fidelity_k),
                 "subject": subject.fingerprint, "format": DIAGNOSTIC_FORMAT, "contrast_decisions": decisions}
    store: ResultStore = _open_store(root / config.name, DIAGNOSTIC_KEY, store_cfg, recompute)
    if len(store):
        return store.read()
    subject.model.to(config.device)
    ids = sample_images(config, subject)
    if len(ids) < 2:
        raise ValueError("the chance reference needs at least two images")
    sets = contrast_sets(subject.confusion, config.contrast_k, tiebreak)
    arrays = _explain_all(config, subject, ids, methods, sets, fidelity_k, progress)
    store.append(_rows(config, ids, methods, ks, sets, arrays, fidelity_k))
    return store.read()


def diagnostic_study(models: str | Sequence[str] | None = None, *, profile: str = "demo",
                     n_images: int = DIAGNOSTIC_N_IMAGES, seed: int = 0, layer: str = "final_conv",
                     methods: Sequence[str] = DIAGNOSTIC_METHODS, ks: Sequence[float] = DIAGNOSTIC_KS,
                     fidelity_k: float = 0.05, results_dir: str | os.PathLike | None = None,
                     recompute: bool = False, progress: bool = True, **overrides: Any) -> pd.DataFrame:
    """Run (or resume, or load) the study on every model of ``profile`` (default
    :func:`~casekit.study.profiles.profile_models`) → all rows, sorted by :data:`DIAGNOSTIC_KEY`.

    ``seed`` seeds the image sample, the chance pairs and the random tie-break (the models are training seed
    0).  Stores: ``<results_dir>/diagnostic/`` (``results_dir`` default the profile's results folder).
    ``overrides`` go to each :class:`RunConfig` (e.g. ``device``, ``batch_size``, ``contrast_k``)."""
    models = profile_models(profile) if models is None else tuple_of_str(models, "models")
    n_images = check_int(n_images, "n_images", 2)
    root = (Path(results_dir) if results_dir is not None else default_results_dir(profile)) / DIAGNOSTIC_DIR
    frames = []
    for m in dict.fromkeys(models):
        cfg = RunConfig(model=m, profile=profile, layer=layer, n_images=n_images, sample_seed=seed,
                        methods=("case",), rq2=False, sparsity_layers=(), siblings=False, **overrides)
        frames.append(diagnostic_run(cfg, methods=methods, ks=ks, fidelity_k=fidelity_k, results_dir=root,
                                     recompute=recompute, progress=progress))
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(list(DIAGNOSTIC_KEY), kind="mergesort").reset_index(drop=True)


def load_diagnostic(results_dir: str | os.PathLike) -> pd.DataFrame | None:
    """Every diagnostic-study row stored under ``<results_dir>/diagnostic/`` (no computing), sorted by
    :data:`DIAGNOSTIC_KEY`; None when that folder holds no store (the study was not run)."""
    root = Path(results_dir) / DIAGNOSTIC_DIR
    stores = sorted(p.parent for p in root.glob("*/store.json")) if root.is_dir() else []
    frames = [ResultStore(p, DIAGNOSTIC_KEY).read() for p in stores]
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(list(DIAGNOSTIC_KEY), kind="mergesort").reset_index(drop=True)
