"""The study of the chapter "What the diagnostic measures": per (model, layer) the study run's own images and
maps, scored per (method, image, k): the top-1/top-2 agreement, the chance agreement (top-1 maps of unrelated
images), whether the runner-up is a confusable class, the unique evidence (demo masks), the fidelity of the
top-1 map and CASE's geometry (‖w⊥‖/‖w_u‖, cos(w_u, w̄)) — :func:`diagnostic_study`.

**Every map is computed once.**  The rows come from the study run's store (:func:`casekit.study.runner.run`
on the same :class:`RunConfig`: the same sample, targets, contrast sets, ties and precision): its stored
raw maps (:func:`casekit.study.rows.stored_maps`) give every method's top-1 and top-2 map at any k, and its
deletion rows the confidence drop at ``fidelity_k``.  Only what the run did not compute is computed here,
in one engine call per batch: methods outside the run (the extensions, e.g. the plain contrastive
difference ``gradcam-diff``), CASE's geometry (one forward and backward), and drops the run has no deletion
value for.  Upsampling is deterministic and the tie order does not depend on the batch, so an agreement at
the run's k equals the run's stored one exactly.

The chance reference pairs images across batches, so a (model, layer) is computed and committed as a whole:
its store under ``<results_dir>/diagnostic/<model>-seed<seed>-<layer>/`` is either complete (skipped on the
next call) or empty; it records the study run's store config, so a changed study run is scored again.

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`.config`, :mod:`.profiles`, :mod:`.runner`,
:mod:`.rows`, :mod:`.subject`, :mod:`.store`.
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
from ..cam.engine import case_vectors, explain, finalize_maps
from ..cam.registry import METHODS, REGISTRY, canonical_method
from ..evaluation.diagnostic import DIAGNOSTIC_KS, chance_pairs, in_contrast_set
from ..evaluation.metrics import confidence_drop, topk_agreement, unique_evidence
from .batch import run_tiebreak
from .config import RunConfig, check_int, check_n_images, default_results_dir, k_suffix, tuple_of_str
from .profiles import profile_models, study_config
from .rows import stored_maps
from .runner import _open_store, read_sample, run, samples_frame
from .store import ResultStore
from .subject import Subject, load_batch, load_subject, sample_images

#: Sub-folder of a results folder that holds this study's stores.
DIAGNOSTIC_DIR = "diagnostic"
#: Sub-folder of a :func:`diagnostic_run` results folder for a study run of its own (no ``study_dir`` given).
STUDY_SUBDIR = "study"
#: Key of the study's rows.
DIAGNOSTIC_KEY: tuple[str, ...] = ("model", "seed", "layer", "method", "image_id", "k")
#: Methods of the study: the paper's six (read from the study run's stored maps) and the plain contrastive
#: difference (computed here: one gradient pass).
DIAGNOSTIC_METHODS: tuple[str, ...] = (*METHODS, "gradcam-diff")
DIAGNOSTIC_FORMAT = 2  # bump when the row schema changes (part of the store config); 2: the study's own maps


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


def _study_state(run_path: Path) -> dict[str, Any]:
    """What identifies the study run's stored maps: its store config and the names and sizes of its part
    files (written once, never changed)."""
    import json

    maps = run_path / "maps"
    meta = json.loads((maps / "store.json").read_text())
    parts = sorted((f.name, f.stat().st_size) for f in maps.glob("part-*.parquet"))
    return {"config": meta.get("config"), "parts": [list(x) for x in parts]}


def _study_arrays(study: pd.DataFrame, ids: list[int], methods: tuple[str, ...],
                  fidelity_k: float) -> dict[str, Any]:
    """The study run's rows → per method of the run: raw top-1/top-2 maps ``[N, 2, h, w]`` in ``ids`` order
    and the top-1 map's ``(p_before, p_after, relative_drop)`` at ``fidelity_k`` (None when the run has no
    deletion value there); the targets ``[N, 2]``, their probabilities and the input size."""
    rows = study[study["target"].isin(["top1", "top2"])]
    out: dict[str, Any] = {"raw": {}, "drops": {}}
    col = f"p_after_{k_suffix(fidelity_k)}"
    first = None
    for m in methods:
        g = rows[rows["method"] == m]
        if g.empty:
            continue
        index = pd.MultiIndex.from_product([ids, ["top1", "top2"]], names=["image_id", "target"])
        g = g.set_index(["image_id", "target"]).reindex(index)
        if g["raw_map"].isna().any():
            raise ValueError(f"the study run lacks the top-1/top-2 maps of some images for {m!r}")
        raw = stored_maps(g.reset_index())
        out["raw"][m] = raw.reshape(len(ids), 2, *raw.shape[-2:])
        top1 = g.xs("top1", level="target")
        if col in top1.columns and top1["p_before"].notna().all():
            pb = top1["p_before"].to_numpy(float)
            pa = top1[col].to_numpy(float)
            out["drops"][m] = (pb, pa, np.clip(pb - pa, 0, None) / pb)
        first = g
    if first is None:
        raise ValueError("the study run holds none of the diagnostic's methods")
    out["targets"] = first["target_class"].to_numpy(np.int64).reshape(len(ids), 2)
    out["probs"] = first["prob"].to_numpy(np.float64).reshape(len(ids), 2)
    out["size"] = (int(first["input_h"].iloc[0]), int(first["input_w"].iloc[0]))
    return out


def _explain_all(config: RunConfig, subject: Subject, ids: list[int], methods: tuple[str, ...],
                 sets: torch.Tensor, targets: torch.Tensor, stored: dict[str, torch.Tensor],
                 need_drop: Sequence[str], fidelity_k: float, progress: bool) -> dict[str, Any]:
    """What the study run did not compute, batch by batch (the run's batch size): one engine call for
    ``methods`` (their raw top-1/top-2 maps, with the run's targets and contrast sets), CASE's vectors (the
    geometry), and the confidence drop at ``fidelity_k`` of the top-1 maps of ``need_drop`` (maps of methods
    in ``stored`` come from the run's raw maps) → arrays over the whole sample."""
    layer = subject.layer_name(config.layer)
    parts: dict[str, list[Any]] = {"kept": [], "cosine": [], "masks": []}
    raw: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    drops: dict[str, list[tuple[torch.Tensor, ...]]] = {m: [] for m in need_drop}
    bar = tqdm(total=len(ids), unit="img", desc=f"diagnostic {config.model} {config.layer}",
               disable=not progress, dynamic_ncols=True)
    try:
        for i in range(0, len(ids), config.batch_size):
            b = ids[i: i + config.batch_size]
            images, _, masks = load_batch(subject.dataset, b, config.device)
            tgt = targets[i: i + len(b)].to(config.device)
            con = sets.to(config.device)[tgt]
            if methods:
                res = explain(subject.model, images, layer, methods, tgt,
                              con if any(REGISTRY[m].needs_contrast for m in methods) else None,
                              batch_size=config.perturbation_batch)
                for m in methods:
                    raw[m].append(res.raw[m].cpu())
            vec = case_vectors(subject.model, images, layer, tgt[:, :1], con[:, :1])
            parts["kept"].append(vec.kept[:, 0].detach().cpu())
            parts["cosine"].append(vec.cosine[:, 0].detach().cpu())
            parts["masks"].append(None if masks is None else masks["unique"].cpu())
            size = images.shape[-2:]
            for m in need_drop:
                r = (raw[m][-1] if m in raw else stored[m][i: i + len(b)])[:, :1].to(config.device)
                top1 = finalize_maps(r, tuple(size))[:, 0]
                d = confidence_drop(subject.model, images, top1, fidelity_k, config.fill, tgt[:, 0],
                                    ties=config.ties, seed=config.sample_seed,
                                    batch_size=config.perturbation_batch)
                drops[m].append((d.p_before.cpu(), d.p_after.cpu(), d.relative_drop.cpu()))
            bar.update(len(b))
    finally:
        bar.close()
    out: dict[str, Any] = {n: torch.cat(v) for n, v in parts.items() if n != "masks"}
    out["masks"] = None if any(m is None for m in parts["masks"]) else torch.cat(parts["masks"])
    out["raw"] = {m: torch.cat(v) for m, v in raw.items()}
    out["drops"] = {m: tuple(torch.cat([x[j] for x in v]).double().numpy() for j in range(3))
                    for m, v in drops.items()}
    return out


def _scores(raw: torch.Tensor, partner: np.ndarray, masks: torch.Tensor | None, size: tuple[int, int],
            ks: tuple[float, ...], config: RunConfig, chunk: int = 64) -> dict[str, np.ndarray]:
    """One method's raw top-1/top-2 maps ``[N, 2, h, w]`` → agreement, chance agreement (with the partner's
    top-1 map) and unique evidence ``[N, K]`` for every k, and the constant flags ``[N]``; the final maps are
    made chunk by chunk (never all at once)."""
    N = raw.shape[0]
    K = len(ks)
    agree, chance, uniq = (np.full((N, K), np.nan) for _ in range(3))
    const1, const2 = np.zeros(N, bool), np.zeros(N, bool)
    idx = torch.as_tensor(partner)
    for start in range(0, N, chunk):
        sl = slice(start, min(start + chunk, N))
        pair = finalize_maps(raw[sl], size)  # [n, 2, H, W]
        top1, top2 = pair[:, 0].contiguous(), pair[:, 1].contiguous()
        other = finalize_maps(raw[idx[sl], :1], size)[:, 0]
        flat1, flat2 = top1.flatten(-2), top2.flatten(-2)
        const1[sl] = (flat1.amax(-1) <= flat1.amin(-1)).numpy()
        const2[sl] = (flat2.amax(-1) <= flat2.amin(-1)).numpy()
        for j, k in enumerate(ks):
            agree[sl, j] = topk_agreement(top1, top2, k, config.ties, config.sample_seed).double().numpy()
            chance[sl, j] = topk_agreement(top1, other, k, config.ties, config.sample_seed).double().numpy()
            if masks is not None:
                uniq[sl, j] = unique_evidence(top1, masks[sl], k, config.ties,
                                              config.sample_seed).double().numpy()
    return {"agreement": agree, "chance": chance, "unique_evidence": uniq, "constant_top1": const1,
            "constant_top2": const2}


def _rows(config: RunConfig, ids: list[int], methods: tuple[str, ...], ks: tuple[float, ...],
          sets: torch.Tensor, a: dict[str, Any], fidelity_k: float, chance_seed: int) -> pd.DataFrame:
    """The sample's arrays → one row per (method, image, k)."""
    N, M = len(ids), len(methods)
    tgt, probs = a["targets"], a["probs"]
    partner, other_class = _chance_partner(tgt[:, 0], chance_seed)
    in_set = in_contrast_set(tgt[:, 0], tgt[:, 1], sets)
    h, w = next(iter(a["raw"].values())).shape[-2:]
    H, W = a["size"]
    per = {m: _scores(a["raw"][m], partner, a["masks"], (H, W), ks, config) for m in methods}

    def stack(name: str, j: int | None = None) -> np.ndarray:  # [N, M] in (image, method) order
        return np.stack([per[m][name] if j is None else per[m][name][:, j] for m in methods], axis=1)

    drops = [np.stack([a["drops"][m][i] for m in methods], axis=1).reshape(-1) for i in range(3)]
    rep = lambda v: np.repeat(np.asarray(v), M)  # noqa: E731  per image → per (image, method)
    ids_np = np.asarray(ids, dtype=np.int64)
    frames = []
    for j, k in enumerate(ks):
        const1 = stack("constant_top1")
        frames.append(pd.DataFrame({
            "model": np.repeat(config.model, N * M).astype(object),
            "seed": np.full(N * M, config.seed, dtype=np.int64),
            "layer": np.repeat(config.layer, N * M).astype(object),
            "method": np.tile(np.array(methods, dtype=object), N),
            "image_id": rep(ids_np),
            "k": np.full(N * M, k),
            "label": rep(tgt[:, 0]), "other_class": rep(tgt[:, 1]),
            "prob": rep(probs[:, 0]), "other_prob": rep(probs[:, 1]),
            "in_contrast": rep(in_set),
            "agreement": stack("agreement", j).reshape(-1),
            "chance": stack("chance", j).reshape(-1),
            "partner": rep(ids_np[partner]),
            "chance_other_class": np.full(N * M, other_class),
            "constant_top1": const1.reshape(-1), "constant_top2": stack("constant_top2").reshape(-1),
            "constant_partner": const1[partner].reshape(-1),
            "unique_evidence": stack("unique_evidence", j).reshape(-1),
            "fidelity_k": np.full(N * M, fidelity_k),
            "p_before": drops[0], "p_after": drops[1], "relative_drop": drops[2],
            "kept": rep(a["kept"].double().numpy()), "cosine": rep(a["cosine"].double().numpy()),
            "map_h": np.full(N * M, h, dtype=np.int64), "map_w": np.full(N * M, w, dtype=np.int64),
            "input_h": np.full(N * M, H, dtype=np.int64), "input_w": np.full(N * M, W, dtype=np.int64),
        }))
    return pd.concat(frames, ignore_index=True)


def diagnostic_run(config: RunConfig, subject: Subject | None = None, *, methods: Sequence[str] =
                   DIAGNOSTIC_METHODS, ks: Sequence[float] = DIAGNOSTIC_KS, fidelity_k: float = 0.05,
                   results_dir: str | os.PathLike | None = None, recompute: bool = False,
                   progress: bool = True, study_dir: str | os.PathLike | None = None,
                   chance_seed: int | None = None) -> pd.DataFrame:
    """One (model, seed, layer) of the study, on the images and maps of the study run ``config``
    (:func:`casekit.study.runner.run`, in ``study_dir``; computed or resumed first if needed).  Contrast sets:
    ``config.contrast_k`` most-confused classes; chance pairs seeded by ``chance_seed`` (default
    ``config.sample_seed``).  Stored in ``<results_dir>/<config.name>`` (``results_dir`` default
    ``<study_dir>/diagnostic``; ``study_dir`` default ``<results_dir>/study`` when ``results_dir`` is given,
    else the profile's results folder, whose study :func:`diagnostic_study` uses); a complete store of the
    same study state is read back, not computed.  Returns its rows (key :data:`DIAGNOSTIC_KEY`)."""
    methods, ks = _methods(methods), _ks(ks)
    if "case" not in methods:
        raise ValueError("the diagnostic study needs 'case' among the methods (its contrast and geometry)")
    if not config.rq1:
        raise ValueError("the diagnostic study reads the study run's top-1/top-2 maps: the run needs "
                         "rq1=True")
    subject = load_subject(config) if subject is None else subject
    if subject.confusion is None:
        raise ValueError("the diagnostic study needs the subject's held-out confusion matrix (contrast sets)")
    if study_dir is None:  # a study of its own beside the rows, or the profile's shared one
        study_dir = (Path(results_dir) / STUDY_SUBDIR if results_dir is not None
                     else default_results_dir(config.profile))
    root = Path(results_dir) if results_dir is not None else Path(study_dir) / DIAGNOSTIC_DIR
    chance_seed = config.sample_seed if chance_seed is None else check_int(chance_seed, "chance_seed", 0)
    subject.model.to(config.device)
    study = run(config, subject, results_dir=study_dir, progress=progress)
    tiebreak = run_tiebreak(config, subject)  # CASE's sets: held-out counts, ties broken as in a run
    decisions = decision_counts(contrast_decisions(subject.confusion, config.contrast_k, tiebreak))
    store_cfg = {"study": _study_state(study.path), "methods": list(methods), "ks": list(ks),
                 "fidelity_k": float(fidelity_k), "chance_seed": chance_seed, "format": DIAGNOSTIC_FORMAT,
                 "contrast_decisions": decisions}
    store: ResultStore = _open_store(root / config.name, DIAGNOSTIC_KEY, store_cfg, recompute)
    if len(store):
        return store.read()
    ids = sample_images(config, subject)
    if len(ids) < 2:
        raise ValueError("the chance reference needs at least two images")
    sets = contrast_sets(subject.confusion, config.contrast_k, tiebreak)
    arrays = _study_arrays(study.maps, ids, tuple(m for m in methods if m in config.methods), fidelity_k)
    missing = tuple(m for m in methods if m not in arrays["raw"])
    need_drop = [m for m in methods if m not in arrays["drops"]]
    extra = _explain_all(config, subject, ids, missing, sets, torch.tensor(arrays["targets"]),
                         arrays["raw"], need_drop, fidelity_k, progress)
    arrays["raw"].update(extra["raw"])
    arrays["drops"].update(extra["drops"])
    arrays.update(kept=extra["kept"], cosine=extra["cosine"], masks=extra["masks"])
    store.append(_rows(config, ids, methods, ks, sets, arrays, fidelity_k, chance_seed))
    return store.read()


def diagnostic_study(models: str | Sequence[str] | None = None, *, profile: str = "demo",
                     n_images: int | None = None, seed: int = 0, layer: str = "final_conv",
                     methods: Sequence[str] = DIAGNOSTIC_METHODS, ks: Sequence[float] = DIAGNOSTIC_KS,
                     fidelity_k: float = 0.05, results_dir: str | os.PathLike | None = None,
                     recompute: bool = False, progress: bool = True, **overrides: Any) -> pd.DataFrame:
    """Run (or resume, or load) the study on every model of ``profile`` (default
    :func:`~casekit.study.profiles.profile_models`) → all rows, sorted by :data:`DIAGNOSTIC_KEY`.

    Each model's rows are scored on its study run (:func:`~casekit.study.profiles.study_config` with
    ``n_images``, default the profile's study size, and ``overrides``, e.g. ``device``): the same images and
    maps as the book's other chapters.  ``seed`` seeds the unrelated-image pairs of the chance reference.
    Stores: the study runs in ``results_dir`` (default the profile's results folder), this study in its
    ``diagnostic/`` folder."""
    models = profile_models(profile) if models is None else tuple_of_str(models, "models")
    options: dict[str, Any] = dict(overrides)
    if n_images is not None:
        options["n_images"] = check_n_images(n_images, "n_images", 2)
    root = Path(results_dir) if results_dir is not None else default_results_dir(profile)
    frames = []
    for m in dict.fromkeys(models):
        cfg = study_config(profile, m, layer=layer, **options)
        frames.append(diagnostic_run(cfg, methods=methods, ks=ks, fidelity_k=fidelity_k,
                                     results_dir=root / DIAGNOSTIC_DIR, study_dir=root, recompute=recompute,
                                     progress=progress, chance_seed=seed))
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(list(DIAGNOSTIC_KEY), kind="mergesort").reset_index(drop=True)


def diagnostic_samples(models: str | Sequence[str] | None = None, *, profile: str = "demo",
                       n_images: int | None = None, layer: str = "final_conv",
                       results_dir: str | os.PathLike | None = None, **overrides: Any) -> pd.DataFrame:
    """How the study runs behind :func:`diagnostic_study` (same arguments) drew their samples: one
    :meth:`~casekit.study.runner.Results.samples` row per model, read from each run's ``sample.json``
    (nothing computed; a run without one is left out)."""
    models = profile_models(profile) if models is None else tuple_of_str(models, "models")
    options: dict[str, Any] = dict(overrides)
    if n_images is not None:
        options["n_images"] = check_n_images(n_images, "n_images", 2)
    root = Path(results_dir) if results_dir is not None else default_results_dir(profile)
    return samples_frame(read_sample(root / study_config(profile, m, layer=layer, **options).name)
                         for m in dict.fromkeys(models))


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
