"""The contrast-set study of chapter 02: CASE-only RQ1 runs per (model, contrast strategy, K), stored apart
from the shared study (:func:`contrast_configs`, :func:`contrast_study`).

Imports: :mod:`.config`, :mod:`.profiles`, :mod:`.runner`, :mod:`.subject`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .config import MAP_KEY, STRATEGIES, RunConfig, check_int, default_results_dir, tuple_of_str
from .profiles import default_n_images, profile_models
from .runner import run
from .subject import Subject, load_subject

#: Sub-folder of a results folder that holds the contrast-set study's runs (kept apart from the shared study,
#: whose rows have the same (model, seed, layer, method, image, target) keys).
CONTRAST_STUDY_DIR = "contrast_study"
#: Key of the contrast study's rows: the map key of one run, per contrast strategy and K.
CONTRAST_KEY: tuple[str, ...] = ("contrast_strategy", "contrast_k", *MAP_KEY)
#: Run fields that :func:`contrast_configs` sets itself (passing them as overrides is an error).
_CONTRAST_FIXED = ("methods", "rq1", "rq2", "sparsity_layers", "tag", "contrast_k", "contrast_strategy",
                   "model",
                   "profile", "n_images", "layer", "seed")




def _check_ks(ks: Any) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = (ks,)
    if not isinstance(ks, Iterable):
        raise TypeError(f"ks must be a sequence of contrast sizes K (ints >= 1), got {type(ks).__name__}")
    out = tuple(check_int(k, "each K of ks", 1) for k in ks)
    if not out:
        raise ValueError("ks is empty; give contrast sizes such as (1, 2, 3, 5)")
    if len(set(out)) != len(out):
        raise ValueError(f"ks repeats a value: {out}")
    return tuple(sorted(out))


def contrast_configs(models: str | Sequence[str] | None = None, ks: Sequence[int] = (1, 2, 3, 5),
                     strategies: str | Sequence[str] = STRATEGIES, *, profile: str = "demo",
                     n_images: int | None = None, layer: str = "final_conv", seed: int = 0,
                     **overrides: Any) -> list[RunConfig]:
    """One CASE-only RQ1 run per (model, strategy, K): ``RunConfig(model, contrast_k=K,
    contrast_strategy=strategy, methods=("case",), rq2=False, sparsity_layers=(), tag=f"K{K}-{strategy}")``.

    ``models``: default the profile's models (:func:`profile_models`); ``n_images``: default the study's
    (300 demo images, 1000 paper images), so the runs explain the study's own sample (same sample seed).
    ``overrides`` go to every config (e.g. ``device``, ``batch_size``, ``k``); the fields this study sets are
    refused."""
    bad = sorted(set(overrides) & set(_CONTRAST_FIXED))
    if bad:
        raise ValueError(f"contrast_configs sets {bad} itself; pass them as its own arguments (models, ks, "
                         "strategies, profile, n_images, layer, seed) or not at all")
    models = profile_models(profile) if models is None else tuple_of_str(models, "models")
    if not models:
        raise ValueError("models is empty")
    ks = _check_ks(ks)
    strategies = tuple_of_str(strategies, "strategies")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies must be distinct values of {STRATEGIES}, got {strategies}")
    n = default_n_images(profile) if n_images is None else n_images
    return [RunConfig(model=m, profile=profile, seed=seed, layer=layer, n_images=n, methods=("case",),
                      rq2=False,
                      sparsity_layers=(), contrast_k=K, contrast_strategy=s, tag=f"K{K}-{s}", **overrides)
            for m in dict.fromkeys(models) for s in strategies for K in ks]


def contrast_study(models: str | Sequence[str] | None = None, ks: Sequence[int] = (1, 2, 3, 5),
                   strategies: str | Sequence[str] = STRATEGIES, *, profile: str = "demo",
                   n_images: int | None = None, results_dir: str | os.PathLike | None = None,
                   recompute: bool = False, progress: bool = True, layer: str = "final_conv", seed: int = 0,
                   **overrides: Any) -> pd.DataFrame:
    """The effect of CASE's contrast size K and contrast strategy (the confusion matrix vs the image's own top
    logits): run (or resume, or load) :func:`contrast_configs` and return their maps rows together, with the
    columns ``contrast_strategy`` and ``contrast_k`` added (key :data:`CONTRAST_KEY`).

    Runs are stored in ``<results_dir>/contrast_study/<run name>`` (``results_dir`` default
    :func:`default_results_dir`), apart from the shared study, and resume like every run.  CASE needs only
    gradients, so this costs about one backward pass per image and run.  Summarise with
    :func:`casekit.report.evidence.contrast_table`."""
    configs = contrast_configs(models, ks, strategies, profile=profile, n_images=n_images, layer=layer,
                               seed=seed,
                               **overrides)
    root = (Path(results_dir) if results_dir is not None
            else default_results_dir(profile)) / CONTRAST_STUDY_DIR
    subjects: dict[tuple[str, int], Subject] = {}
    frames = []
    for c in configs:
        if (c.model, c.seed) not in subjects:
            subjects[(c.model, c.seed)] = load_subject(c)
        r = run(c, subjects[(c.model, c.seed)], results_dir=root, recompute=recompute, progress=progress)
        frames.append(r.maps.assign(contrast_strategy=c.contrast_strategy, contrast_k=np.int64(c.contrast_k)))
    df = pd.concat(frames, ignore_index=True)
    front = list(CONTRAST_KEY)
    df = df[front + [c for c in df.columns if c not in front]]
    order = {s: i for i, s in enumerate(STRATEGIES)}
    df = df.sort_values(list(CONTRAST_KEY),
                        key=lambda s: s.map(order) if s.name == "contrast_strategy" else s,
                        kind="mergesort")
    return df.reset_index(drop=True)




#: Key of the projection study's rows: the map key of one run, per CASE projection.
PROJECTION_KEY: tuple[str, ...] = ("projection", *MAP_KEY)


def projection_study(models: str | Sequence[str] | None = None, *, profile: str = "demo",
                     n_images: int | None = None, results_dir: str | os.PathLike | None = None,
                     recompute: bool = False, progress: bool = True, layer: str = "final_conv", seed: int = 0,
                     subjects: dict[str, Subject] | None = None, **overrides: Any) -> pd.DataFrame:
    """CASE with the paper's text's projection of the full gradient maps (``"full"``) against the reference
    code's projection of the pooled vectors (``"pooled"``), on the same images and targets: one CASE-only RQ1
    run per (model, projection), tag ``proj-<projection>``, stored with the contrast study
    (``<results_dir>/contrast_study``); their maps rows together with a ``projection`` column (key
    :data:`PROJECTION_KEY`).  ``subjects``: model name → :class:`Subject` (else loaded per profile);
    ``overrides`` go to every config (e.g. ``contrast_k``, ``device``)."""
    bad = sorted(set(overrides) & {"methods", "rq1", "rq2", "sparsity_layers", "tag", "projection", "model",
                                   "profile", "n_images", "layer", "seed"})
    if bad:
        raise ValueError(f"projection_study sets {bad} itself")
    models = profile_models(profile) if models is None else tuple_of_str(models, "models")
    n = default_n_images(profile) if n_images is None else n_images
    root = (Path(results_dir) if results_dir is not None
            else default_results_dir(profile)) / CONTRAST_STUDY_DIR
    frames = []
    for m in dict.fromkeys(models):
        subject = (subjects or {}).get(m)
        for projection in ("pooled", "full"):
            c = RunConfig(model=m, profile=profile, seed=seed, layer=layer, n_images=n, methods=("case",),
                          rq2=False, sparsity_layers=(), projection=projection, tag=f"proj-{projection}",
                          **overrides)
            subject = subject if subject is not None else load_subject(c)
            r = run(c, subject, results_dir=root, recompute=recompute, progress=progress)
            frames.append(r.maps.assign(projection=projection))
    df = pd.concat(frames, ignore_index=True)
    df = df[list(PROJECTION_KEY) + [c for c in df.columns if c not in PROJECTION_KEY]]
    return df.reset_index(drop=True)
