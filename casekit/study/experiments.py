"""The paper's experiments as resumable runs: RQ1 (class sensitivity), RQ2 (fidelity) and channel sparsity.

One run = one :class:`RunConfig` = one model, one attribution layer.  Data flows one way, each arrow in one
place (:func:`_explain_batch`):

1. a fixed batch of the run's image sample (a seeded random sample of correctly classified images);
2. **one** engine call (:func:`casekit.explain`) → the maps of every method for every target the metrics
   need: the top-1 and top-2 predicted classes and, on a benchmark with sibling groups, the true class's
   sibling (``[B, T, H, W]`` per method), plus the layer's activations;
3. metrics from those maps only: top-k agreement of each map with the top-1 map, unique/shared evidence,
   whether a map is constant, and (RQ2) the confidence drop and deletion curve of the top-1 map — the same
   maps, the same images for every method;
4. active channels of the layer from the activations the engine already recorded (other layers through one
   forward pass with hooks);
5. result rows → two :class:`casekit.study.store.ResultStore` folders (``maps/``: one row per
   ``(model, seed, layer, method, image_id, target)``; ``sparsity/``: one row per
   ``(model, seed, layer, image_id)``), committed batch by batch.

A run killed at any moment and started again skips the committed batches and ends with the same tables as an
uninterrupted run (batches are fixed slices of the sample, so every batch is computed exactly as it would
have been).  Same config → same tables.

Profiles: ``"demo"`` (the embedded benchmark and model zoo, :mod:`casekit.demo`), ``"paper"`` (ImageNet
models of :mod:`casekit.subjects.models`, or the CIFAR-100 DenseNet-201 of :mod:`casekit.subjects.finetune`), or ``"custom"``
(pass a :class:`Subject`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..cam.checks import resolve_layer
from .._io import atomic_path, cache_dir
from ..cam.contrast import confusion_matrix, contrast_sets
from ..cam.engine import METHODS, canonical_method, explain
from ..cam.hooks import LayerCapture, evaluation_mode
from ..evaluation.metrics import DELETION_KS, active_channels, deletion_curve, topk_agreement, topk_count, unique_evidence, shared_evidence
from .store import ResultStore

__all__ = [
    "RunConfig",
    "Subject",
    "RunResult",
    "Results",
    "MAP_KEY",
    "SPARSITY_KEY",
    "TARGETS",
    "COMPARISONS",
    "PROFILES",
    "STRATEGIES",
    "kcol",
    "run",
    "run_all",
    "DEMO_N_IMAGES",
    "demo_configs",
    "run_demo",
    "paper_configs",
    "study_configs",
    "run_study",
    "load_results",
    "load_subject",
    "sample_images",
    "logit_contrast",
    "layer_activations",
    "agreement_rows",
    "fidelity_rows",
    "degenerate_maps",
    "example_maps",
    "default_results_dir",
]

PROFILES = ("demo", "paper", "custom")
STRATEGIES = ("confusion", "logits")
MAP_KEY: tuple[str, ...] = ("model", "seed", "layer", "method", "image_id", "target")
SPARSITY_KEY: tuple[str, ...] = ("model", "seed", "layer", "image_id")
#: Targets of the maps of one image: the top-1 and top-2 predicted classes and the true class's sibling.
TARGETS: tuple[str, ...] = ("top1", "top2", "sibling")
#: The comparison a target's agreement (with the top-1 map) stands for.  The sample holds correctly
#: classified images only, so the top-1 class is the true class.
COMPARISONS: dict[str, str] = {"top2": "top1_vs_top2", "sibling": "true_vs_sibling"}
ROW_FORMAT = 1  # bump when the row schema changes (part of the store config)


def kcol(k: float) -> str:
    """Column suffix of a top-k fraction: ``0.05 → "5"``, ``0.5 → "50"``, ``0.025 → "2.5"`` (percent)."""
    return f"{round(float(k) * 100, 6):g}"


def default_results_dir(profile: str) -> Path:
    """``$CASEKIT_RESULTS/<profile>`` if set, else ``<checkout>/results/<profile>`` from a source checkout,
    else ``<user cache>/casekit/results/<profile>``; never the current directory
    (:func:`casekit._io.results_dir`)."""
    from .._io import results_dir

    return results_dir(profile)


# ----------------------------------------------------------------------------------------------- config


def _tuple_of_str(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a string or a sequence of strings, got {type(value).__name__}")
    out = tuple(value)
    if not all(isinstance(v, str) and v for v in out):
        raise TypeError(f"{name} must hold non-empty strings, got {out!r}")
    return out


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a fraction in (0, 1], got {value!r}")
    if not 0 < float(value) <= 1:
        hint = f" (did you mean {value / 100:g}? it is a fraction, not a percentage)" if 1 < value <= 100 else ""
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value}{hint}")
    return float(value)


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


@dataclass(frozen=True)
class RunConfig:
    """One experiment run: one model (and seed), one attribution layer, a seeded image sample.

    - ``profile``: ``"demo"`` | ``"paper"`` | ``"custom"`` (pass a :class:`Subject` to :func:`run`).
    - ``model``: demo family (``"resnet"``, ``"vgg"``, ``"densenet"``, ``"convnext"``), a paper model
      (``"resnet50"``, ``"vgg19_bn"``, ``"densenet201"``, ``"convnext_large"``, or ``"densenet201-cifar100"`` for
      the fine-tuned seed-robustness models), or any name for a custom subject.  ``seed``: the model's
      training seed (zoo member / fine-tuning run).
    - ``layer``: a layer role (``"final_conv"``, ``"norm5"``) or a dotted module name.
    - ``methods``: any of :data:`casekit.METHODS` (default all six: CASE is part of RQ1, unlike the reference
      code's RQ1 script).
    - ``n_images``: size of the sample, drawn with ``sample_seed`` among correctly classified images
      (the paper's protocol).
    - ``k``: top-k fraction of RQ1's agreement and the evidence scores (default 0.05, the paper's 5 %).
    - ``fidelity_k``: the top-k fraction blanked for RQ2's headline confidence drop.  Default **0.05**: the
      paper's text speaks of minimally perturbing the top-k salient pixels and uses 5 % everywhere it names a
      number; the reference code's default is 50 %.  Both are reported: the deletion curve is measured at every
      k of ``deletion_ks`` (default 1, 2, 5, 10, 20, 50 %, which includes both) and ``fidelity_k`` is added to
      it if missing.
    - ``fill``: what blanked pixels become (``"mean"`` = 0 in normalised space, as the reference; ``"blur"``).
    - ``tau``: active-channel threshold (paper: 1e-3; the reference code's default was 0.1).
    - ``contrast_k``: CASE's contrast-set size K (the paper: 3 suffices); ``contrast_strategy``:
      ``"confusion"`` = the K most-confused classes of the target's row of the held-out confusion matrix (the
      paper), ``"logits"`` = the image's own K next-highest logits (the authors' unused variant).
    - ``ties``: ``"random"`` (seeded; constant maps → NaN agreement) or ``"index"`` (the reference code).
    - ``sample_seed``: seeds the image sample and the random tie-break.
    - ``rq1`` / ``rq2``: which metrics to compute (RQ1 needs the top-2 and sibling maps; RQ2 the deletion
      curves); ``sparsity_layers``: layers whose active channels are counted (default: the run's layer;
      ``()`` for none).  ``siblings``: add the true-vs-sibling comparison where the data has sibling groups.
    - ``batch_size``: images per engine call and per committed batch; ``perturbation_batch``: forwards per
      call of the Score-CAM / Ablation-CAM / deletion passes.  ``device``: where the model runs.
    - ``heldout``: (paper profile) images of the validation set kept apart for the confusion matrix.
    - ``tag``: names a variant run (e.g. ``"K1"``) so that it gets its own store folder.
    """

    model: str
    profile: str = "demo"
    seed: int = 0
    layer: str = "final_conv"
    methods: tuple[str, ...] = METHODS
    n_images: int = 200
    k: float = 0.05
    fidelity_k: float = 0.05
    deletion_ks: tuple[float, ...] = DELETION_KS
    fill: str = "mean"
    tau: float = 1e-3
    contrast_k: int = 3
    contrast_strategy: str = "confusion"
    ties: str = "random"
    sample_seed: int = 0
    rq1: bool = True
    rq2: bool = True
    sparsity_layers: tuple[str, ...] | None = None
    siblings: bool = True
    batch_size: int = 25
    perturbation_batch: int = 512
    device: str = "cpu"
    heldout: int = 10_000
    tag: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if not isinstance(self.model, str) or not self.model:
            raise TypeError(f"model must be a non-empty string, got {self.model!r}")
        set_(self, "seed", _check_int(self.seed, "seed", 0))
        if not isinstance(self.layer, str) or not self.layer:
            raise TypeError(f"layer must be a layer role or a dotted module name, got {self.layer!r}")
        methods = _tuple_of_str(self.methods, "methods")
        if not methods:
            raise ValueError("methods is empty; choose from " + ", ".join(METHODS))
        methods = tuple(dict.fromkeys(canonical_method(m) for m in methods))
        set_(self, "methods", tuple(m for m in METHODS if m in methods))  # the canonical order
        set_(self, "n_images", _check_int(self.n_images, "n_images", 1))
        set_(self, "k", _check_fraction(self.k, "k"))
        set_(self, "fidelity_k", _check_fraction(self.fidelity_k, "fidelity_k"))
        ks = tuple(_check_fraction(k, "deletion_ks") for k in self.deletion_ks)
        if any(b <= a for a, b in zip(ks, ks[1:])):
            raise ValueError(f"deletion_ks must be strictly increasing, got {ks}")
        set_(self, "deletion_ks", ks)
        if self.fill not in ("mean", "blur"):
            raise ValueError(f"fill must be 'mean' or 'blur', got {self.fill!r}")
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not math.isfinite(self.tau):
            raise TypeError(f"tau must be a finite number, got {self.tau!r}")
        set_(self, "tau", float(self.tau))
        set_(self, "contrast_k", _check_int(self.contrast_k, "contrast_k", 1))
        if self.contrast_strategy not in STRATEGIES:
            raise ValueError(f"contrast_strategy must be one of {STRATEGIES}, got {self.contrast_strategy!r}")
        if self.ties not in ("random", "index"):
            raise ValueError(f"ties must be 'random' or 'index', got {self.ties!r}")
        set_(self, "sample_seed", _check_int(self.sample_seed, "sample_seed", 0))
        for name in ("rq1", "rq2", "siblings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.sparsity_layers is not None:  # None stays None (= the run's layer, also after replace(layer=...))
            set_(self, "sparsity_layers", tuple(dict.fromkeys(_tuple_of_str(self.sparsity_layers, "sparsity_layers"))))
        if not (self.rq1 or self.rq2 or self.sparsity):
            raise ValueError("nothing to do: rq1 and rq2 are False and sparsity_layers is empty")
        set_(self, "batch_size", _check_int(self.batch_size, "batch_size", 1))
        set_(self, "perturbation_batch", _check_int(self.perturbation_batch, "perturbation_batch", 1))
        if not isinstance(self.device, str):
            set_(self, "device", str(self.device))
        set_(self, "heldout", _check_int(self.heldout, "heldout", 1))
        if not isinstance(self.tag, str) or any(c in self.tag for c in "/\\ "):
            raise ValueError(f"tag must be a string without slashes or spaces, got {self.tag!r}")

    @property
    def sparsity(self) -> tuple[str, ...]:
        """Layers whose active channels are counted: ``sparsity_layers``, or the run's layer when it is None."""
        return (self.layer,) if self.sparsity_layers is None else self.sparsity_layers

    @property
    def curve_ks(self) -> tuple[float, ...]:
        """The deletion-curve ks with ``fidelity_k`` included."""
        return tuple(sorted(set(self.deletion_ks) | {self.fidelity_k}))

    @property
    def name(self) -> str:
        """Folder name of the run: ``<model>-seed<seed>-<layer>[-<tag>]``."""
        layer = self.layer.replace("/", "_")
        return f"{self.model}-seed{self.seed}-{layer}" + (f"-{self.tag}" if self.tag else "")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------------- subject


@dataclass
class Subject:
    """What a run explains: a model, its layer roles, a dataset and the held-out confusion matrix.

    ``dataset[i]`` gives ``(image [3, H, W] normalised, label)`` or ``(image, label, masks)`` with ``masks``
    a dict of bool ``[H, W]`` tensors under ``"unique"`` and ``"shared"``.  ``groups``: sibling groups of
    classes (lists of class indices), for the true-vs-sibling comparison.  ``pool``: dataset indices the sample
    may use (e.g. those not held out for the confusion matrix).  ``fingerprint``: identifies the weights and
    data; part of the store config, so that results of another model are never resumed into.
    """

    model: nn.Module
    layers: dict[str, str]
    dataset: Dataset
    confusion: torch.Tensor | None = None
    groups: list[list[int]] | None = None
    pool: Sequence[int] | torch.Tensor | None = None
    fingerprint: str = ""
    class_names: list[str] | None = None

    def layer_name(self, layer: str) -> str:
        """The dotted module name of a role (or of a name given directly)."""
        name = self.layers.get(layer, layer)
        resolve_layer(self.model, name)  # raises with close matches when unknown
        return name


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the model's parameters and buffers, by name, shape, dtype and bytes."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _demo_subject(config: RunConfig) -> Subject:
    from ..subjects import demo

    model, layers = demo.model(config.model, seed=config.seed)
    dataset = demo.dataset(split="test", seed=0)
    confusion = demo.confusion(config.model, seed=config.seed)
    groups = getattr(dataset, "groups", None)
    names = getattr(dataset, "class_names", None)
    model.to(config.device)
    return Subject(model, dict(layers), dataset, confusion, groups, None,
                   f"{model_fingerprint(model)}:{len(dataset)}", names)


def _confusion_cached(model: nn.Module, dataset: Dataset, heldout: torch.Tensor, key: str, device: str) -> torch.Tensor:
    from ..subjects.data import subset_loader

    path = cache_dir("confusion") / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # unreadable: compute it again
            pass
    counts = confusion_matrix(model, subset_loader(dataset, heldout, batch_size=64), device=device)
    with atomic_path(path) as tmp:
        torch.save(counts, tmp)
    return counts


def _paper_subject(config: RunConfig) -> Subject:
    from ..subjects import data
    from ..subjects import finetune
    from ..subjects import models

    if config.model.lower() in ("densenet201-cifar100", "densenet201_cifar100"):
        model, layers = finetune.load_finetuned(finetune.checkpoint_path(cache_dir("finetune"), config.seed),
                                                device=config.device)
        dataset = data.cifar100(train=False)
    else:
        if config.seed != 0:
            raise ValueError("the paper's ImageNet models are the torchvision IMAGENET1K_V1 weights: use seed=0")
        model, layers, _ = models.load_paper_model(config.model, device=config.device)
        dataset = data.imagenet_val()
    if config.heldout >= len(dataset):
        raise ValueError(f"heldout={config.heldout} leaves no images of the {len(dataset)} to evaluate")
    heldout, pool = data.split_indices(len(dataset), config.heldout, config.sample_seed)
    fp = model_fingerprint(model)
    key = f"{config.model}-seed{config.seed}-{fp}-n{len(dataset)}-h{config.heldout}-s{config.sample_seed}"
    confusion = _confusion_cached(model, dataset, heldout, key, config.device)
    return Subject(model, dict(layers), dataset, confusion, None, pool, f"{fp}:{len(dataset)}")


def load_subject(config: RunConfig) -> Subject:
    """The model, layers, data and confusion matrix of a demo or paper run."""
    if config.profile == "demo":
        return _demo_subject(config)
    if config.profile == "paper":
        return _paper_subject(config)
    raise ValueError("profile 'custom' needs a Subject: run(config, subject=Subject(model, layers, dataset, ...))")


# ----------------------------------------------------------------------------------------------- helpers


def sample_images(config: RunConfig, subject: Subject, progress: bool = False) -> list[int]:
    """The run's sample: ``n_images`` dataset indices, a seeded random draw among correctly classified images."""
    from ..subjects.data import correct_sample

    ids = correct_sample(subject.model, subject.dataset, config.n_images, config.sample_seed,
                         batch_size=max(64, config.batch_size), device=config.device, pool=subject.pool,
                         progress=progress)
    return [int(i) for i in ids]


def logit_contrast(k: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Contrast classes from the image's own logits: for each target u, the k highest-logit classes ≠ u
    → a function ``(targets [B, T], logits [B, C]) -> [B, T, k]`` for :func:`casekit.explain`."""
    def contrast(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if k + 1 > logits.shape[1]:
            raise ValueError(f"contrast_k={k} needs at least {k + 1} classes, the model has {logits.shape[1]}")
        cand = logits.topk(k + 1, dim=1).indices[:, None, :].expand(*targets.shape, k + 1)  # [B, T, k+1]
        other = cand != targets[..., None]
        pick = torch.argsort((~other).to(torch.int8), dim=-1, stable=True)[..., :k]  # first k classes ≠ u
        return cand.gather(-1, pick)
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
        raise ValueError(f"classes {lonely[:10]} have no sibling in the groups; the true-vs-sibling comparison "
                         "needs groups of at least two classes (or run with siblings=False)")
    return table


def layer_activations(model: nn.Module, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of several layers from one forward pass without autograd → ``{name: [B, C, h, w]}``.

    Uses the engine's own capture, so the values equal :attr:`casekit.CAMResult.activations` for that layer
    (e.g. the output of DenseNet's ``norm5`` before the in-place ReLU that follows it)."""
    captures = [LayerCapture(resolve_layer(model, name)[1], name, grad_from_layer=False) for name in layers]
    with evaluation_mode(model), torch.no_grad():
        handles = [c.module.register_forward_hook(c) for c in captures]
        try:
            model(images)
        finally:
            for h in handles:
                h.remove()
    out = {}
    for c in captures:
        if c.activations is None:
            raise ValueError(f"layer {c.name!r} is not run by the model's forward pass")
        out[c.name] = c.activations
    return out


def _load_batch(dataset: Dataset, ids: Sequence[int], device: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    images, labels, masks = [], [], []
    for i in ids:
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError("dataset items must be (image, label) or (image, label, masks) tuples")
        images.append(torch.as_tensor(item[0]))
        labels.append(int(item[1]))
        m = item[2] if len(item) > 2 else None
        masks.append(m if isinstance(m, Mapping) else None)
    has = [m is not None and "unique" in m and "shared" in m for m in masks]
    if any(has) and not all(has):
        raise ValueError("some dataset items carry masks and others do not")
    out_masks = None
    if all(has):
        out_masks = {part: torch.stack([torch.as_tensor(m[part]).bool() for m in masks]).to(device)
                     for part in ("unique", "shared")}
    return torch.stack(images).float().to(device), torch.tensor(labels, device=device), out_masks


# ----------------------------------------------------------------------------------------------- one batch


@dataclass
class _Context:
    config: RunConfig
    subject: Subject
    layer_name: str
    sparsity_names: dict[str, str]  # role/name → dotted name
    targets: tuple[str, ...]
    contrast: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    siblings: torch.Tensor | None  # bool [C, C]


def _context(config: RunConfig, subject: Subject) -> _Context:
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
    contrast = None
    if "case" in config.methods:
        if config.contrast_strategy == "confusion":
            if subject.confusion is None:
                raise ValueError("CASE with contrast_strategy='confusion' needs the subject's held-out confusion matrix")
            sets = contrast_sets(subject.confusion, config.contrast_k).to(config.device)
            contrast = lambda t, z: sets[t]  # noqa: E731 — V(u) depends on the target class only
        else:
            contrast = logit_contrast(config.contrast_k)
    return _Context(config, subject, layer_name, sparsity, targets, contrast, sib)


def _target_fn(ctx: _Context, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def targets(logits: torch.Tensor) -> torch.Tensor:
        if len(ctx.targets) == 1:
            return logits.argmax(dim=1, keepdim=True)
        top = logits.topk(2, dim=1).indices
        if ctx.siblings is None:
            return top
        if ctx.siblings.shape[0] != logits.shape[1]:
            raise ValueError(f"the sibling groups cover {ctx.siblings.shape[0]} classes, the model has {logits.shape[1]}")
        allowed = ctx.siblings.to(logits.device)[labels]  # [B, C]: siblings of the true class
        sib = logits.masked_fill(~allowed, float("-inf")).argmax(dim=1, keepdim=True)  # the most likely sibling
        return torch.cat([top, sib], dim=1)
    return targets


def _explain_batch(ctx: _Context, ids: Sequence[int], need_maps: bool, need_sparsity: bool) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Images → one engine call → maps of all methods and targets → metrics → rows (see the module docstring)."""
    cfg, subj = ctx.config, ctx.subject
    images, labels, masks = _load_batch(subj.dataset, ids, cfg.device)
    B = len(ids)
    acts: dict[str, torch.Tensor] = {}
    map_rows = None
    if need_maps:
        res = explain(subj.model, images, ctx.layer_name, cfg.methods, _target_fn(ctx, labels), ctx.contrast,
                      batch_size=cfg.perturbation_batch)
        acts[ctx.layer_name] = res.activations
        wrong = (res.targets[:, 0] != labels).nonzero().flatten().tolist()
        if wrong:  # the sample holds correctly classified images; a batch-size-dependent near tie can flip one
            warnings.warn(f"images {[ids[j] for j in wrong]} are no longer classified correctly in this batch; "
                          "their top-1 map is not the true class's", RuntimeWarning, stacklevel=2)
        M, T = len(cfg.methods), len(ctx.targets)
        maps = torch.stack([res.maps[m] for m in cfg.methods], dim=1)  # [B, M, T, H, W]
        H, W = maps.shape[-2:]
        topk_count(cfg.k, H, W)  # a k too small for the maps raises here, naming the sizes
        flat = maps.flatten(-2)
        constant = flat.amax(-1) <= flat.amin(-1)  # [B, M, T]: a degenerate map (e.g. all zero)
        tgt = res.targets  # [B, T]
        probs = torch.softmax(res.logits.float(), dim=1).gather(1, tgt)  # [B, T]
        nan = torch.full((B, M, T), float("nan"), device=maps.device)
        agreement = nan.clone()
        if T > 1:
            first = maps[:, :, :1].expand(B, M, T - 1, H, W)
            agreement[:, :, 1:] = topk_agreement(first, maps[:, :, 1:], cfg.k, cfg.ties, cfg.sample_seed)
        uniq, shared = nan.clone(), nan.clone()
        if masks is not None:
            uniq = unique_evidence(maps, masks["unique"][:, None, None], cfg.k, cfg.ties, cfg.sample_seed)
            shared = shared_evidence(maps, masks["shared"][:, None, None], cfg.k, cfg.ties, cfg.sample_seed)
        cols: dict[str, Any] = {
            "model": np.repeat(cfg.model, B * M * T).astype(object),
            "seed": np.full(B * M * T, cfg.seed, dtype=np.int64),
            "layer": np.repeat(cfg.layer, B * M * T).astype(object),
            "method": np.tile(np.repeat(np.array(cfg.methods, dtype=object), T), B),
            "image_id": np.repeat(np.asarray(ids, dtype=np.int64), M * T),
            "target": np.tile(np.array(ctx.targets, dtype=object), B * M),
            "layer_name": np.repeat(ctx.layer_name, B * M * T).astype(object),
            "label": np.repeat(labels.cpu().numpy().astype(np.int64), M * T),
            "target_class": tgt.cpu().numpy().astype(np.int64)[:, None, :].repeat(M, 1).reshape(-1),
            "prob": probs.cpu().numpy().astype(np.float64)[:, None, :].repeat(M, 1).reshape(-1),
            "comparison": np.tile(np.array([COMPARISONS.get(t, "") for t in ctx.targets], dtype=object), B * M),
            "constant": constant.cpu().numpy().reshape(-1),
            "agreement": agreement.cpu().numpy().astype(np.float64).reshape(-1),
            "unique_evidence": uniq.cpu().numpy().astype(np.float64).reshape(-1),
            "shared_evidence": shared.cpu().numpy().astype(np.float64).reshape(-1),
        }
        ks = cfg.curve_ks
        fid = {name: np.full((B, M, T), np.nan) for name in
               ["p_before", "p_after", "drop", "relative_drop", "deletion_area", "deletion_area_prob"]
               + [f"p_after_{kcol(k)}" for k in ks] + [f"relative_drop_{kcol(k)}" for k in ks]}
        if cfg.rq2:
            # The top-1 (predicted) class's maps of all methods, blanked on the same images: one call.
            curve = deletion_curve(subj.model, images, maps[:, :, 0].contiguous(), ks, cfg.fill,
                                   tgt[:, :1].expand(B, M), ties=cfg.ties, seed=cfg.sample_seed,
                                   batch_size=cfg.perturbation_batch)
            j = ks.index(cfg.fidelity_k)
            put = lambda name, v: fid[name].__setitem__((slice(None), slice(None), 0), v.cpu().double().numpy())  # noqa: E731
            put("p_before", curve.p_before)
            put("p_after", curve.p_after[..., j])
            put("drop", curve.drop[..., j])
            put("relative_drop", curve.relative_drop[..., j])
            put("deletion_area", curve.area)
            put("deletion_area_prob", curve.area_prob)
            for i, k in enumerate(ks):
                put(f"p_after_{kcol(k)}", curve.p_after[..., i])
                put(f"relative_drop_{kcol(k)}", curve.relative_drop[..., i])
        cols["fidelity_k"] = np.full(B * M * T, cfg.fidelity_k if cfg.rq2 else np.nan)
        cols.update({name: v.reshape(-1) for name, v in fid.items()})
        map_rows = pd.DataFrame(cols)
    sparsity_rows = None
    if need_sparsity:
        missing = [n for n in ctx.sparsity_names.values() if n not in acts]
        if missing:
            acts.update(layer_activations(subj.model, images, missing))
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
        sparsity_rows = pd.concat(parts, ignore_index=True)
    return map_rows, sparsity_rows


# ----------------------------------------------------------------------------------------------- a run


@dataclass
class RunResult:
    """What :func:`run` produced: the config, the two result tables, where they live, and timings (s)."""

    config: RunConfig
    maps: pd.DataFrame
    sparsity: pd.DataFrame
    path: Path
    seconds: dict[str, float] = field(default_factory=dict)
    computed_batches: int = 0
    skipped_batches: int = 0


def _store_config(config: RunConfig, subject: Subject) -> dict[str, Any]:
    d = config.to_dict()
    d.pop("device")  # where it ran is not what it is
    return {"run": d, "subject": subject.fingerprint, "row_format": ROW_FORMAT}


def _open_store(path: Path, key: tuple[str, ...], config: dict[str, Any], recompute: bool) -> ResultStore:
    if recompute and path.exists():
        if not (path / "store.json").exists():
            raise ValueError(f"recompute=True would delete {path}, which is not a result store; remove it yourself")
        shutil.rmtree(path)
    try:
        return ResultStore(path, key=key, config=config)
    except ValueError as err:
        if "different run config" in str(err):
            raise ValueError(f"{err} (or pass recompute=True to start this run's store afresh)") from None
        raise


def run(config: RunConfig, subject: Subject | None = None, *, results_dir: str | os.PathLike | None = None,
        recompute: bool = False, progress: bool = True) -> RunResult:
    """Run (or resume) one experiment and return its tables.

    Stores live in ``results_dir / config.name / {maps, sparsity}`` (``results_dir`` default
    :func:`default_results_dir`).  Committed batches are skipped; ``recompute=True`` deletes this run's stores
    first.  Resuming with a different config (or another model's weights) is refused.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    if subject is None:
        subject = load_subject(config)
    elif not isinstance(subject, Subject):
        raise TypeError(f"subject must be a casekit.experiments.Subject, got {type(subject).__name__}")
    subject.model.to(config.device)
    seconds["load"] = time.perf_counter() - t0
    root = Path(results_dir) if results_dir is not None else default_results_dir(config.profile)
    path = root / config.name
    store_cfg = _store_config(config, subject)
    maps_store = _open_store(path / "maps", MAP_KEY, store_cfg, recompute) if (config.rq1 or config.rq2) else None
    sp_store = _open_store(path / "sparsity", SPARSITY_KEY, store_cfg, recompute) if config.sparsity else None

    t = time.perf_counter()
    ids = sample_images(config, subject, progress=False)
    seconds["sample"] = time.perf_counter() - t
    ctx = _context(config, subject)
    batches = [ids[i : i + config.batch_size] for i in range(0, len(ids), config.batch_size)]
    done_maps = maps_store.done_keys() if maps_store is not None else set()
    done_sp = sp_store.done_keys() if sp_store is not None else set()

    def status(batch: list[int], store: ResultStore | None, done: set, keys: Callable[[int], list[tuple]]) -> bool:
        """True when the batch still needs computing for this store (all of its rows absent)."""
        if store is None:
            return False
        expected = [key for i in batch for key in keys(i)]
        present = sum(key in done for key in expected)
        if present == len(expected):
            return False
        if present:
            raise ValueError(f"the store {store.path} holds {present} of the {len(expected)} rows of one batch; "
                             "it was not written by this runner's batches. Use recompute=True.")
        return True

    map_keys = lambda i: [(config.model, config.seed, config.layer, m, i, t) for m in config.methods for t in ctx.targets]  # noqa: E731
    sp_keys = lambda i: [(config.model, config.seed, role, i) for role in config.sparsity]  # noqa: E731
    plan = [(b, status(b, maps_store, done_maps, map_keys), status(b, sp_store, done_sp, sp_keys)) for b in batches]
    todo = [(b, nm, ns) for b, nm, ns in plan if nm or ns]
    skipped = len(batches) - len(todo)
    bar = tqdm(total=len(ids), initial=sum(len(b) for b, nm, ns in plan if not (nm or ns)), unit="img",
               desc=f"{config.model} seed {config.seed} {config.layer}" + (f" [{config.tag}]" if config.tag else ""),
               disable=not progress, dynamic_ncols=True)
    t = time.perf_counter()
    try:
        for batch, need_maps, need_sp in todo:
            rows, sp_rows = _explain_batch(ctx, batch, need_maps, need_sp)
            if rows is not None:
                maps_store.append(rows)
            if sp_rows is not None:
                sp_store.append(sp_rows)
            bar.update(len(batch))
    finally:
        bar.close()
    seconds["compute"] = time.perf_counter() - t
    maps_df = maps_store.read() if maps_store is not None else pd.DataFrame(columns=list(MAP_KEY))
    sp_df = sp_store.read() if sp_store is not None else pd.DataFrame(columns=list(SPARSITY_KEY))
    seconds["total"] = time.perf_counter() - t0
    return RunResult(config, maps_df, sp_df, path, seconds, len(todo), skipped)


# ----------------------------------------------------------------------------------------------- many runs


@dataclass
class Results:
    """Tables of several runs: ``maps`` (one row per model, seed, layer, method, image, target) and
    ``sparsity`` (one row per model, seed, layer, image), and the runs' configs and timings."""

    maps: pd.DataFrame
    sparsity: pd.DataFrame
    runs: list[RunResult] = field(default_factory=list)

    def agreement(self, **filters: Any) -> pd.DataFrame:
        """One row per (model, seed, layer, method, image, comparison): see :func:`agreement_rows`."""
        return agreement_rows(self.maps, **filters)

    def fidelity(self, k: float | None = None, **filters: Any) -> pd.DataFrame:
        """The top-1 maps' confidence drops: see :func:`fidelity_rows`."""
        return fidelity_rows(self.maps, k=k, **filters)

    def timings(self) -> pd.DataFrame:
        """Seconds per run (load, sample, compute, total) and computed/skipped batches."""
        return pd.DataFrame([{"run": r.config.name, **r.seconds, "computed_batches": r.computed_batches,
                              "skipped_batches": r.skipped_batches} for r in self.runs])


def _concat(frames: list[pd.DataFrame], key: tuple[str, ...]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(key))
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(subset=list(key))
    if dup.any():
        raise ValueError(f"{int(dup.sum())} rows repeat a key {key} across runs, e.g. "
                         f"{df.loc[dup, list(key)].iloc[0].to_dict()}: two runs describe the same model, seed and "
                         "layer (give variant runs a tag and keep them in separate results folders)")
    return df.sort_values(list(key), kind="mergesort").reset_index(drop=True)


def run_all(configs: Sequence[RunConfig], *, results_dir: str | os.PathLike | None = None, recompute: bool = False,
            progress: bool = True, subjects: Mapping[str, Subject] | None = None) -> Results:
    """Run (or resume) every config in order and return all their rows together.

    ``subjects`` maps a config's ``name`` to its :class:`Subject` (required for profile ``"custom"``); the demo
    and paper subjects are loaded once per (model, seed) and shared by that model's runs.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"two configs share a run name (model-seed-layer-tag): {sorted({n for n in names if names.count(n) > 1})}")
    cache: dict[tuple, Subject] = {}
    runs = []
    for c in configs:
        subject = (subjects or {}).get(c.name)
        if subject is None:
            key = (c.profile, c.model, c.seed, c.device, c.heldout, c.sample_seed if c.profile == "paper" else 0)
            if key not in cache:
                cache[key] = load_subject(c)
            subject = cache[key]
        runs.append(run(c, subject, results_dir=results_dir, recompute=recompute, progress=progress))
    return Results(_concat([r.maps for r in runs], MAP_KEY), _concat([r.sparsity for r in runs], SPARSITY_KEY), runs)


#: Images per demo run.  The whole demo study (9 runs: 4 families, DenseNet's norm5, 4 more DenseNet seeds)
#: on 300 images each took 124 s on this project's idle 2-core CPU (219 s on one core with the other busy):
#: about half of it Score-CAM's masked forwards (one per channel and image), a third the deletion curves'
#: blanked forwards (6 ks × 6 methods per image), VGG the most expensive model (a third of the total).
DEMO_N_IMAGES = 300


def demo_configs(n_images: int = DEMO_N_IMAGES, seeds: Sequence[int] = (0, 1, 2, 3, 4), families: Sequence[str] | None = None,
                 norm5: bool = True, **overrides: Any) -> list[RunConfig]:
    """The demo study: RQ1 + RQ2 + sparsity on every family's final conv; DenseNet also on ``norm5``;
    DenseNet seeds other than 0 with RQ1 only (Figure 4's seed robustness).  ``overrides`` go to every config."""
    from ..subjects.zoo import FAMILIES

    families = tuple(FAMILIES if families is None else families)
    configs = [RunConfig(model=f, profile="demo", n_images=n_images, **overrides) for f in families]
    if "densenet" in families:
        if norm5:
            configs.append(RunConfig(model="densenet", profile="demo", layer="norm5", n_images=n_images, **overrides))
        for s in seeds:
            if s != 0:
                configs.append(RunConfig(model="densenet", profile="demo", seed=s, n_images=n_images, rq2=False,
                                         sparsity_layers=(), **overrides))
    return configs


def run_demo(n_images: int = DEMO_N_IMAGES, *, results_dir: str | os.PathLike | None = None, recompute: bool = False,
             progress: bool = True, seeds: Sequence[int] = (0, 1, 2, 3, 4), families: Sequence[str] | None = None,
             norm5: bool = True, **overrides: Any) -> Results:
    """:func:`run_all` of :func:`demo_configs` (results in ``results/demo/`` unless ``results_dir`` is given)."""
    configs = demo_configs(n_images, seeds, families, norm5, **overrides)
    return run_all(configs, results_dir=results_dir, recompute=recompute, progress=progress)


PAPER_MODELS: tuple[str, ...] = ("resnet50", "vgg19_bn", "densenet201", "convnext_large")


def paper_configs(n_images: int = 1000, seeds: Sequence[int] = (0, 1, 2, 3, 4), models: Sequence[str] | None = None,
                  norm5: bool = True, seed_study: bool = True, **overrides: Any) -> list[RunConfig]:
    """The paper's study: RQ1 + RQ2 + sparsity on the four ImageNet models' attribution layers (1000 correctly
    classified validation images each), DenseNet-201 also at ``norm5``, and RQ1 on the five CIFAR-100
    DenseNet-201 seeds (``densenet201-cifar100``, checkpoints of :mod:`casekit.subjects.finetune`)."""
    models = tuple(PAPER_MODELS if models is None else models)
    configs = [RunConfig(model=m, profile="paper", n_images=n_images, **overrides) for m in models]
    if "densenet201" in models and norm5:
        configs.append(RunConfig(model="densenet201", profile="paper", layer="norm5", n_images=n_images, **overrides))
    if seed_study:
        for s in seeds:
            configs.append(RunConfig(model="densenet201-cifar100", profile="paper", seed=s, n_images=n_images,
                                     rq2=False, sparsity_layers=(), **overrides))
    return configs


def study_configs(profile: str = "demo", **options: Any) -> list[RunConfig]:
    """:func:`demo_configs` or :func:`paper_configs` by profile name (what ``make book PROFILE=...`` runs)."""
    if profile == "demo":
        return demo_configs(**options)
    if profile == "paper":
        return paper_configs(**options)
    raise ValueError(f"profile must be 'demo' or 'paper', got {profile!r}")


def missing_inputs(profile: str = "demo", configs: Sequence[RunConfig] | None = None) -> list[str]:
    """What a profile's study needs from disk but does not find: one message per missing item (pretrained
    weights, ImageNet validation folder, CIFAR-100, fine-tuned checkpoints), each saying where casekit looked and
    how to provide it.  Empty when everything is there; always empty on the demo profile (it makes its own data).

    Cheap: it checks files and folders, it loads no weights.  ``configs`` default :func:`study_configs`."""
    configs = study_configs(profile) if configs is None else list(configs)
    if all(c.profile == "demo" for c in configs):
        return []
    from ..subjects import data
    from ..subjects import finetune
    from ..subjects import models

    problems: list[str] = []
    imagenet = cifar = False
    seeds_missing: list[int] = []
    folder = cache_dir("finetune")
    for c in configs:
        if c.profile != "paper":
            continue
        if c.model.lower() in ("densenet201-cifar100", "densenet201_cifar100"):
            cifar = True
            if not finetune.checkpoint_path(folder, c.seed).is_file() and c.seed not in seeds_missing:
                seeds_missing.append(c.seed)
            continue
        imagenet = True
        _, spec = models.paper_model_spec(c.model)
        entry, path = models.torchvision_weights_file(spec.builder)
        if not path.is_file():
            problems.append(str(models._missing_torchvision_weights(spec.display, spec.builder, entry.name,
                                                                    entry.url, path)))
    if seeds_missing:
        seeds = " ".join(str(x) for x in seeds_missing)
        problems.append(
            f"casekit: the fine-tuned DenseNet-201 (CIFAR-100) checkpoints of seed(s) {seeds} do not exist.\n"
            f"  missing: {', '.join(finetune.checkpoint_path(folder, x).name for x in seeds_missing)}\n"
            f"  looked in: {folder} ($CASEKIT_CACHE/finetune)\n"
            f"  to provide them: run  python -m casekit.subjects.finetune --seed {seeds}  (with CIFAR-100 in place; a GPU is "
            "advisable, see the book's 'Profiles' page), which writes them there, or copy them there.")
    for needed, load in ((imagenet, data.imagenet_val), (cifar, lambda: data.cifar100(train=False))):
        if needed:
            try:
                load()
            except data.MissingDataError as err:
                problems.append(str(err))
    return list(dict.fromkeys(problems))


def run_study(profile: str = "demo", *, results_dir: str | os.PathLike | None = None, recompute: bool = False,
              progress: bool = True, **options: Any) -> Results:
    """Run (or resume, or just load) the whole study of a profile; ``options`` go to :func:`study_configs`
    (e.g. ``n_images``, ``seeds``, ``families``/``models``, and any :class:`RunConfig` field such as ``device``)."""
    return run_all(study_configs(profile, **options), results_dir=results_dir, recompute=recompute, progress=progress)


def load_results(results_dir: str | os.PathLike) -> Results:
    """Read every run stored under ``results_dir`` (no computing)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no results folder {root}; run the experiments first (casekit.experiments.run_demo)")
    maps, sparsity = [], []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if (run_dir / "maps" / "store.json").exists():
            maps.append(ResultStore(run_dir / "maps", MAP_KEY).read())
        if (run_dir / "sparsity" / "store.json").exists():
            sparsity.append(ResultStore(run_dir / "sparsity", SPARSITY_KEY).read())
    if not maps and not sparsity:
        raise FileNotFoundError(f"{root} holds no result stores")
    return Results(_concat(maps, MAP_KEY), _concat(sparsity, SPARSITY_KEY))


# ----------------------------------------------------------------------------------------------- views


def _filter(df: pd.DataFrame, filters: Mapping[str, Any]) -> pd.DataFrame:
    for col, value in filters.items():
        if value is None:
            continue
        if col not in df.columns:
            raise ValueError(f"cannot filter on {col!r}: the table has columns {list(df.columns)}")
        values = value if isinstance(value, (list, tuple, set)) else [value]
        if col == "method":
            values = [canonical_method(v) for v in values]
        df = df[df[col].isin(values)]
    return df


def agreement_rows(maps: pd.DataFrame, **filters: Any) -> pd.DataFrame:
    """One row per (model, seed, layer, method, image_id, comparison) with the agreement of the two maps
    (``top1_vs_top2``: the paper's RQ1; ``true_vs_sibling``: the demo benchmark's) and whether either map
    was constant.  ``filters``: column = value (or list of values), e.g. ``layer="final_conv"``."""
    need = {"target", "agreement", "comparison", "constant"}
    if not need <= set(maps.columns):
        raise ValueError(f"maps lacks column(s) {sorted(need - set(maps.columns))}: pass the maps table of a run")
    second = maps[maps["target"] != "top1"]
    top1 = maps[maps["target"] == "top1"].set_index(["model", "seed", "layer", "method", "image_id"])
    idx = pd.MultiIndex.from_frame(second[["model", "seed", "layer", "method", "image_id"]])
    first_const = top1["constant"].reindex(idx).to_numpy()
    out = second.assign(constant_top1=first_const.astype(bool), constant_other=second["constant"].to_numpy())
    out["degenerate"] = out["constant_top1"] | out["constant_other"]
    keep = ["model", "seed", "layer", "layer_name", "method", "image_id", "comparison", "label", "target_class",
            "agreement", "degenerate", "constant_top1", "constant_other", "unique_evidence", "shared_evidence"]
    out = out[[c for c in keep if c in out.columns]].rename(columns={"target_class": "other_class",
                                                                      "unique_evidence": "other_unique_evidence",
                                                                      "shared_evidence": "other_shared_evidence"})
    out = _filter(out, filters)
    return out.sort_values(["model", "seed", "layer", "method", "comparison", "image_id"], kind="mergesort").reset_index(drop=True)


def fidelity_rows(maps: pd.DataFrame, k: float | None = None, **filters: Any) -> pd.DataFrame:
    """The top-1 maps' fidelity rows (one per model, seed, layer, method, image) with ``drop`` and
    ``relative_drop`` at ``k`` (default: each run's ``fidelity_k``; else one of the deletion-curve ks)."""
    if "p_before" not in maps.columns:
        raise ValueError("maps lacks the fidelity columns: pass the maps table of a run")
    out = maps[(maps["target"] == "top1") & maps["p_before"].notna()].copy()
    if k is not None:
        col = f"p_after_{kcol(k)}"
        if col not in out.columns:
            have = sorted(float(c.removeprefix("p_after_")) / 100 for c in out.columns
                          if c.startswith("p_after_"))
            raise ValueError(f"no deletion-curve value at k={k:g}; the runs measured k in {have}")
        out["p_after"] = out[col]
        out["drop"] = out["p_before"] - out["p_after"]
        out["relative_drop"] = out["drop"].clip(lower=0) / out["p_before"]
        out["fidelity_k"] = float(k)
    out = _filter(out, filters)
    return out.sort_values(["model", "seed", "layer", "method", "image_id"], kind="mergesort").reset_index(drop=True)


def degenerate_maps(maps: pd.DataFrame, **filters: Any) -> pd.DataFrame:
    """How often maps are constant (no top-k set), per model, layer, method and target:
    ``n_maps, n_constant, fraction_constant``."""
    df = _filter(maps, filters)
    g = df.groupby(["model", "seed", "layer", "method", "target"], sort=True)["constant"]
    out = g.agg(n_maps="size", n_constant="sum").reset_index()
    out["n_constant"] = out["n_constant"].astype(int)
    out["fraction_constant"] = out["n_constant"] / out["n_maps"]
    return out


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
    ctx = _context(config, subject)
    images, labels, masks = _load_batch(subject.dataset, [int(i) for i in image_ids], config.device)
    res = explain(subject.model, images, ctx.layer_name, config.methods, _target_fn(ctx, labels), ctx.contrast,
                  batch_size=config.perturbation_batch)
    names = subject.class_names
    target_names = [[f"{role}: {names[c] if names is not None else f'class {c}'}"
                     for role, c in zip(ctx.targets, row)] for row in res.targets.tolist()]
    return {"images": images, "labels": labels, "masks": masks, "result": res, "targets": ctx.targets,
            "target_names": target_names}


# =============================================================================================== book: notebooks 01–03
# The contrast-set study (effect of K and of the contrast strategy on CASE) and the inputs of the figures of
# notebooks 01–03 (Figures 1–3).  Everything below is additive; the runs above are used unchanged.

#: Sub-folder of a results folder that holds the contrast-set study's runs (kept apart from the shared study,
#: whose rows have the same (model, seed, layer, method, image, target) keys).
CONTRAST_STUDY_DIR = "contrast_study"
#: Key of the contrast study's rows: the map key of one run, per contrast strategy and K.
CONTRAST_KEY: tuple[str, ...] = ("contrast_strategy", "contrast_k", *MAP_KEY)
#: Run fields that :func:`contrast_configs` sets itself (passing them as overrides is an error).
_CONTRAST_FIXED = ("methods", "rq1", "rq2", "sparsity_layers", "tag", "contrast_k", "contrast_strategy", "model",
                   "profile", "n_images", "layer", "seed")


def profile_models(profile: str) -> tuple[str, ...]:
    """The models of a profile's study: the demo families, or the paper's four ImageNet models."""
    if profile == "demo":
        from ..subjects.zoo import FAMILIES

        return tuple(FAMILIES)
    if profile == "paper":
        return PAPER_MODELS
    raise ValueError(f"profile must be 'demo' or 'paper', got {profile!r}")


def _default_n_images(profile: str) -> int:
    return DEMO_N_IMAGES if profile == "demo" else 1000


def study_config(profile: str = "demo", model: str | None = None, *, layer: str = "final_conv", seed: int = 0,
                 **options: Any) -> RunConfig:
    """The :class:`RunConfig` that :func:`run_study` ``(profile, **options)`` uses for one model, layer and seed
    (default: the profile's first model), so that figures explain images exactly as the study did."""
    model = profile_models(profile)[0] if model is None else model
    configs = study_configs(profile, **options)
    found = [c for c in configs if c.model == model and c.layer == layer and c.seed == seed]
    if not found:
        have = ", ".join(f"{c.model}/seed {c.seed}/{c.layer}" for c in configs)
        raise ValueError(f"the {profile} study has no run for model={model!r}, layer={layer!r}, seed={seed} "
                         f"(it has {have})")
    return found[0]


def _check_ks(ks: Any) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = (ks,)
    if not isinstance(ks, Iterable):
        raise TypeError(f"ks must be a sequence of contrast sizes K (ints >= 1), got {type(ks).__name__}")
    out = tuple(_check_int(k, "each K of ks", 1) for k in ks)
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
    models = profile_models(profile) if models is None else _tuple_of_str(models, "models")
    if not models:
        raise ValueError("models is empty")
    ks = _check_ks(ks)
    strategies = _tuple_of_str(strategies, "strategies")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies must be distinct values of {STRATEGIES}, got {strategies}")
    n = _default_n_images(profile) if n_images is None else n_images
    return [RunConfig(model=m, profile=profile, seed=seed, layer=layer, n_images=n, methods=("case",), rq2=False,
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
    :func:`casekit.report.tables.contrast_table`."""
    configs = contrast_configs(models, ks, strategies, profile=profile, n_images=n_images, layer=layer, seed=seed,
                               **overrides)
    root = (Path(results_dir) if results_dir is not None else default_results_dir(profile)) / CONTRAST_STUDY_DIR
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
    df = df.sort_values(list(CONTRAST_KEY), key=lambda s: s.map(order) if s.name == "contrast_strategy" else s,
                        kind="mergesort")
    return df.reset_index(drop=True)


def representative_images(data: Any, *, model: str, method: str = "gradcam", n: int = 3, layer: str = "final_conv",
                          seed: int = 0, comparison: str = "top1_vs_top2") -> list[int]:
    """``n`` image ids whose top-k agreement for ``method`` is closest to that method's median over the run
    (ties by image id): typical images for a figure, chosen by a fixed rule rather than by eye.  Images with
    an undefined agreement (a constant map) come last."""
    maps = data.maps if isinstance(data, Results) else data
    if not isinstance(maps, pd.DataFrame):
        raise TypeError(f"data must be a Results or the maps DataFrame of a run, got {type(data).__name__}")
    n = _check_int(n, "n", 1)
    agree = agreement_rows(maps, model=model, method=method, layer=layer, seed=seed, comparison=comparison)
    if agree.empty:
        raise ValueError(f"no agreement rows for model={model!r}, method={method!r}, layer={layer!r}, seed={seed}, "
                         f"{comparison}")
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
    displayable images (demo benchmark, ImageNet, or CIFAR-100 statistics by model)."""
    if config.profile == "demo":
        from ..subjects.synthetic import denormalize

        return denormalize
    if config.profile != "paper":
        raise ValueError(f"no known normalisation for profile {config.profile!r}; denormalise the images yourself")
    from ..subjects import data as _data

    cifar = "cifar" in config.model.lower()
    mean = _data.CIFAR100_MEAN if cifar else _data.IMAGENET_MEAN
    std = _data.CIFAR100_STD if cifar else _data.IMAGENET_STD

    def denormalize(images: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
        return (images.float() * s + m).clamp(0, 1)

    return denormalize


def case_example(config: RunConfig, image_ids: Sequence[int], subject: Subject | None = None) -> dict[str, Any]:
    """CASE's projection on a few images, with the run's targets and contrast sets (Figure 2's data).

    Returns ``{"vectors": CASEVectors`` (:func:`casekit.case_vectors`: ``w_target, w_contrast, w_mean, w_perp,
    cosine, kept`` and the Grad-CAM, contrast-mean and CASE maps), ``"images"``: displayable ``[B, 3, H, W]``,
    ``"masks"``: ``{"unique", "shared"}`` bool ``[B, H, W]`` or None, ``"labels"``, ``"targets"``: the target
    roles, ``"target_names"[b][t]``, ``"contrast_names"[b][t]`` (the K contrast classes), ``"image_ids"``,
    ``"layer"``}."""
    from ..cam.engine import case_vectors

    subject = subject if subject is not None else load_subject(config)
    ids = [int(i) for i in image_ids]
    if not ids:
        raise ValueError("image_ids is empty")
    ctx = _context(config.replace(methods=("case",)), subject)
    images, labels, masks = _load_batch(subject.dataset, ids, config.device)
    vec = case_vectors(subject.model, images, ctx.layer_name, _target_fn(ctx, labels), ctx.contrast)
    names = subject.class_names

    def name(c: int) -> str:
        return names[c] if names is not None else f"class {c}"

    target_names = [[f"{role}: {name(c)}" for role, c in zip(ctx.targets, row)] for row in vec.targets.tolist()]
    contrast_names = [[[name(c) for c in con] for con in row] for row in vec.contrast.tolist()]
    return {"vectors": vec, "images": denormalizer(config)(images).cpu(), "image_ids": ids, "labels": labels.cpu(),
            "masks": None if masks is None else {k: v.cpu() for k, v in masks.items()}, "targets": ctx.targets,
            "target_names": target_names, "contrast_names": contrast_names, "layer": ctx.layer_name}


def part_areas(profile: str = "demo", image_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """The share of each test image's pixels on the true class's unique part and on its group's shared part
    (``image_id, unique_area, shared_area``), for the chance level and the ceiling of the evidence scores.

    A random top-k set lands on the unique part with expected precision ``unique_area``; no top-k set can
    exceed ``min(1, unique_area / k)``.  Empty (with these columns) for a profile without part masks."""
    cols = ["image_id", "unique_area", "shared_area"]
    if profile == "paper":
        return pd.DataFrame(columns=cols)
    if profile != "demo":
        raise ValueError(f"profile must be 'demo' or 'paper', got {profile!r}")
    from ..subjects import demo

    parts = demo.dataset(split="test", seed=0, progress=False).parts  # uint8 [N, H, W]: 1 shared, 2 unique
    ids = np.arange(parts.shape[0]) if image_ids is None else np.asarray([int(i) for i in image_ids], dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= parts.shape[0]):
        raise ValueError(f"image_ids must lie in 0..{parts.shape[0] - 1}")
    p = parts[torch.as_tensor(ids, dtype=torch.long)].flatten(1)
    return pd.DataFrame({"image_id": ids.astype(np.int64), "unique_area": (p == 2).double().mean(1).numpy(),
                         "shared_area": (p == 1).double().mean(1).numpy()})


__all__ += ["missing_inputs", "CONTRAST_STUDY_DIR", "CONTRAST_KEY", "profile_models", "study_config", "contrast_configs",
            "contrast_study", "representative_images", "denormalizer", "case_example", "part_areas"]
