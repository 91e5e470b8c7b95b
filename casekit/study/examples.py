"""Inputs of the worked examples and figures of chapters 01–03: the maps of a few images exactly as a run
computes them (:func:`example_maps`), CASE's projection (:func:`case_example`), typical images chosen by a
fixed rule (:func:`representative_images`), displayable images (:func:`denormalizer`), the part areas of
the demo benchmark (:func:`part_areas`) and what a chapter's saliency explorer offers
(:func:`explorer_images`, :func:`explorer_contrast`).

Imports: :mod:`casekit.cam`, :mod:`casekit.subjects`, :mod:`.config`, :mod:`.subject`, :mod:`.batch`,
:mod:`.runner`, :mod:`.rows`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..cam.contrast import contrast_sets
from ..cam.engine import case_vectors, explain
from ..subjects import demo, reference
from ..subjects.data import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from ..subjects.synthetic import denormalize as demo_denormalize
from .batch import batch_context, run_tiebreak, target_fn
from .config import RunConfig, check_int
from .rows import agreement_rows
from .runner import Results
from .subject import Subject, load_batch, load_subject, sample_images


def example_maps(config: RunConfig, image_ids: Sequence[int], subject: Subject | None = None,
                 methods: Sequence[str] | None = None) -> dict[str, Any]:
    """Maps of a few images for figures (Figures 1 and 3): the same targets, contrast and layer as a run.

    Returns ``{"images": [B, 3, H, W] normalised, "labels": [B], "masks": dict | None, "result": CAMResult,
    "targets": the target roles ("top1", "top2", "sibling"), "target_names": [B][T] labels for figures}``
    (e.g. ``"top2: striped disk + ring"``; class indices when the subject has no class names).
    """
    subject = subject if subject is not None else load_subject(config)
    if methods is not None:
        config = config.replace(methods=tuple(methods))
    ctx = batch_context(config, subject)
    images, labels, masks = load_batch(subject.dataset, [int(i) for i in image_ids], config.device)
    res = explain(subject.model, images, ctx.layer_name, config.methods, target_fn(ctx, labels), ctx.contrast,
                  batch_size=config.perturbation_batch)
    names = subject.class_names
    target_names = [[f"{role}: {names[c] if names is not None else f'class {c}'}"
                     for role, c in zip(ctx.targets, row)] for row in res.targets.tolist()]
    return {"images": images, "labels": labels, "masks": masks, "result": res, "targets": ctx.targets,
            "target_names": target_names}




def explorer_images(config: RunConfig, subject: Subject, *, limit: int | None = None,
                    include: Sequence[int] = ()) -> list[int]:
    """The images a chapter's saliency explorer offers: the run's whole sample (:func:`sample_images`, the
    images every table of the chapter is computed on) in index order, or its first ``limit`` when given and
    smaller (a paper-size sample of 1,000 images at 224 px would make the page too heavy), together with
    ``include`` (e.g. the images of the chapter's figures)."""
    ids = sorted(sample_images(config, subject))
    if limit is not None:
        ids = ids[: check_int(limit, "limit", 1)]
    return sorted({*ids, *(int(i) for i in include)})


def explorer_contrast(config: RunConfig, subject: Subject, k_max: int = 5) -> torch.Tensor:
    """``LongTensor [C, k_max]``: the contrast sets a run would draw (:func:`casekit.contrast_sets` of the
    subject's held-out confusion counts, ties broken by its tiebreak when ``config.contrast_tiebreak`` is
    ``"probs"``); their first K columns are the run's sets for any K ≤ ``k_max``."""
    if subject.confusion is None:
        raise ValueError("the subject has no held-out confusion matrix, so it has no contrast sets")
    k_max = min(check_int(k_max, "k_max", 1), subject.confusion.shape[0] - 1)
    return contrast_sets(subject.confusion, k_max, run_tiebreak(config, subject))


def representative_images(data: Any, *, model: str, method: str = "gradcam", n: int = 3,
                          layer: str = "final_conv",
                          seed: int = 0, comparison: str = "top1_vs_top2") -> list[int]:
    """``n`` image ids whose top-k agreement for ``method`` is closest to that method's median over the run
    (ties by image id): typical images for a figure, chosen by a fixed rule rather than by eye.  Images with
    an undefined agreement (a constant map) come last."""
    maps = data.maps if isinstance(data, Results) else data
    if not isinstance(maps, pd.DataFrame):
        raise TypeError(f"data must be a Results or the maps DataFrame of a run, got {type(data).__name__}")
    n = check_int(n, "n", 1)
    agree = agreement_rows(maps, model=model, method=method, layer=layer, seed=seed, comparison=comparison)
    if agree.empty:
        raise ValueError(f"no agreement rows for model={model!r}, method={method!r}, layer={layer!r}, "
                         f"seed={seed}, {comparison}")
    v = agree["agreement"].to_numpy(float)
    finite = ~np.isnan(v)
    median = float(np.median(v[finite])) if finite.any() else 0.0
    # Rounded so that distances equal in exact arithmetic (e.g. 0.2 and 0.4 from the median 0.3) tie, and the
    # tie goes to the lower image id as documented, instead of to whichever side floating point favours.
    dist = np.where(finite, np.round(np.abs(v - median), 12), np.inf)
    order = np.lexsort((agree["image_id"].to_numpy(), dist))
    return [int(i) for i in agree["image_id"].to_numpy()[order[:n]]]


def denormalizer(config: RunConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The inverse of the run's input normalisation, clipped to [0, 1]: normalised ``[..., 3, H, W]`` →
    displayable images (demo benchmark, ImageNet, CIFAR-100 statistics by model, a cifar10 network's own)."""
    if config.profile == "demo":
        return demo_denormalize
    if config.profile == "cifar10":
        spec = reference.NETWORKS[reference.canonical_name(config.model)]
        mean, std = spec.mean, spec.std
    elif config.profile != "paper":
        raise ValueError(f"no known normalisation for profile {config.profile!r}; denormalise the images "
                         "yourself")
    else:
        cifar = "cifar" in config.model.lower()
        mean = CIFAR100_MEAN if cifar else IMAGENET_MEAN
        std = CIFAR100_STD if cifar else IMAGENET_STD

    def denormalize(images: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
        return (images.float() * s + m).clamp(0, 1)

    return denormalize


def case_example(config: RunConfig, image_ids: Sequence[int],
                 subject: Subject | None = None) -> dict[str, Any]:
    """CASE's projection on a few images, with the run's targets and contrast sets (Figure 2's data).

    Returns ``{"vectors": CASEVectors`` (:func:`casekit.case_vectors`: ``w_target, w_contrast, w_mean, w_perp,
    cosine, kept`` and the Grad-CAM, contrast-mean and CASE maps), ``"images"``: displayable ``[B, 3, H, W]``,
    ``"masks"``: ``{"unique", "shared"}`` bool ``[B, H, W]`` or None, ``"labels"``, ``"targets"``: the target
    roles, ``"target_names"[b][t]``, ``"contrast_names"[b][t]`` (the K contrast classes), ``"image_ids"``,
    ``"layer"``}."""
    subject = subject if subject is not None else load_subject(config)
    ids = [int(i) for i in image_ids]
    if not ids:
        raise ValueError("image_ids is empty")
    ctx = batch_context(config.replace(methods=("case",)), subject)
    images, labels, masks = load_batch(subject.dataset, ids, config.device)
    vec = case_vectors(subject.model, images, ctx.layer_name, target_fn(ctx, labels), ctx.contrast)
    names = subject.class_names

    def name(c: int) -> str:
        return names[c] if names is not None else f"class {c}"

    target_names = [[f"{role}: {name(c)}" for role,
                     c in zip(ctx.targets, row)] for row in vec.targets.tolist()]
    contrast_names = [[[name(c) for c in con] for con in row] for row in vec.contrast.tolist()]
    return {"vectors": vec, "images": denormalizer(config)(images).cpu(), "image_ids": ids,
            "labels": labels.cpu(),
            "masks": None if masks is None else {k: v.cpu() for k, v in masks.items()},
            "targets": ctx.targets,
            "target_names": target_names, "contrast_names": contrast_names, "layer": ctx.layer_name}


def part_areas(profile: str = "demo", image_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """The share of each test image's pixels on the true class's unique part and on its group's shared part
    (``image_id, unique_area, shared_area``), for the chance level and the ceiling of the evidence scores.

    A random top-k set lands on the unique part with expected precision ``unique_area``; no top-k set can
    exceed ``min(1, unique_area / k)``.  Empty (with these columns) for a profile without part masks."""
    cols = ["image_id", "unique_area", "shared_area"]
    if profile in ("paper", "cifar10"):
        return pd.DataFrame(columns=cols)
    if profile != "demo":
        raise ValueError(f"profile must be 'demo', 'paper' or 'cifar10', got {profile!r}")
    parts = demo.dataset(split="test", seed=0, progress=False).parts  # uint8 [N, H, W]: 1 shared, 2 unique
    if image_ids is None:
        ids = np.arange(parts.shape[0])
    else:
        ids = np.asarray([int(i) for i in image_ids], dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= parts.shape[0]):
        raise ValueError(f"image_ids must lie in 0..{parts.shape[0] - 1}")
    p = parts[torch.as_tensor(ids, dtype=torch.long)].flatten(1)
    return pd.DataFrame({"image_id": ids.astype(np.int64), "unique_area": (p == 2).double().mean(1).numpy(),
                         "shared_area": (p == 1).double().mean(1).numpy()})


