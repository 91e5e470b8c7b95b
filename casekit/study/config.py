"""Run configuration: one :class:`RunConfig` = one model (and training seed), one attribution layer, one
seeded image sample; the constants every study module shares (row keys, targets, comparisons, profiles,
seeds).

Imports: :mod:`casekit.cam` (method names), :mod:`casekit.evaluation` (deletion ks),
:mod:`casekit.subjects.seeds`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .._io import results_dir
from ..cam.registry import METHODS, all_methods, canonical_method
from ..evaluation.metrics import DELETION_KS
from ..subjects.seeds import TRAINING_SEEDS

PROFILES = ("demo", "paper", "cifar10", "custom")
STRATEGIES = ("confusion", "logits")
#: How ties in the held-out confusion counts are broken when CASE's contrast sets are chosen: by the mean
#: softmax probabilities of the same held-out images, then by index (``"probs"``), or by index only
#: (``"none"``, the reference code's rule).
TIEBREAKS = ("probs", "none")
#: CASE's projection: of the pooled gradient vectors (the reference code) or of the full gradient maps.
PROJECTIONS = ("pooled", "full")
#: Which methods may run under bfloat16 (each after the run's exactness check): see :mod:`.precision`.
PRECISIONS = ("auto", "bf16", "fp32")
MAP_KEY: tuple[str, ...] = ("model", "seed", "layer", "method", "image_id", "target")
SPARSITY_KEY: tuple[str, ...] = ("model", "seed", "layer", "image_id")
#: Targets of the maps of one image: the top-1 and top-2 predicted classes and the true class's sibling.
TARGETS: tuple[str, ...] = ("top1", "top2", "sibling")
#: The comparison a target's agreement (with the top-1 map) stands for.  The sample holds correctly
#: classified images only, so the top-1 class is the true class.
COMPARISONS: dict[str, str] = {"top2": "top1_vs_top2", "sibling": "true_vs_sibling"}
ROW_FORMAT = 3  # bump when the row schema changes (part of the store config); 3: the raw maps
#: Training seeds of the seed-robustness study (Figure 4): the demo zoo's DenseNets, the fine-tuned
# DenseNet-201s.
STUDY_SEEDS: tuple[int, ...] = TRAINING_SEEDS
#: The paper's four ImageNet models, in the order of its tables' columns (model names of the paper profile).
PAPER_STUDY_MODELS: tuple[str, ...] = ("resnet50", "vgg19_bn", "densenet201", "convnext_large")
#: Sizes of the paper profile's evaluation sets: the ImageNet validation set and the CIFAR-100 test set.
PAPER_DATASET_SIZES: dict[str, int] = {"imagenet": 50_000, "cifar100": 10_000}
#: CIFAR-100 test images held out (stratified: 50 per class) for the fine-tuned DenseNets' confusion
#: matrices; the other 5,000 are evaluated.  (ImageNet keeps RunConfig's default 10,000 of 50,000.)
CIFAR100_HELDOUT = 5_000
#: Model names of the fine-tuned CIFAR-100 DenseNet-201s (the seed study).
CIFAR100_MODELS: tuple[str, ...] = ("densenet201-cifar100", "densenet201_cifar100")
#: Images per paper run (the paper's 1000 correctly classified validation images).
PAPER_N_IMAGES = 1000
#: Images per demo run.  The whole demo study (9 runs: 4 families, DenseNet's norm5, 4 more DenseNet seeds)
#: on 300 images each took 124 s on this project's idle 2-core CPU (219 s on one core with the other busy):
#: about half of it Score-CAM's masked forwards (one per channel and image), a third the deletion curves'
#: blanked forwards (6 ks × 6 methods per image), VGG the most expensive model (a third of the total).
DEMO_N_IMAGES = 300


def k_suffix(k: float) -> str:
    """Column suffix of a top-k fraction (``p_after_<suffix>``, ``relative_drop_<suffix>``): ``0.05 → "5"``,
    ``0.5 → "50"``, ``0.025 → "2.5"`` (percent)."""
    return f"{round(float(k) * 100, 6):g}"


def default_results_dir(profile: str) -> Path:
    """``$CASEKIT_RESULTS/<profile>`` if set, else ``<checkout>/results/<profile>`` from a source checkout,
    else ``<user cache>/casekit/results/<profile>``; never the current directory
    (:func:`casekit._io.results_dir`)."""
    return results_dir(profile)


def tuple_of_str(value: Any, name: str) -> tuple[str, ...]:
    """A string or a sequence of non-empty strings → a tuple of strings (``name`` names it in errors)."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a string or a sequence of strings, got {type(value).__name__}")
    out = tuple(value)
    if not all(isinstance(v, str) and v for v in out):
        raise TypeError(f"{name} must hold non-empty strings, got {out!r}")
    return out


def check_fraction(value: Any, name: str) -> float:
    """A number in (0, 1] as a float; a percentage by mistake gets a hint."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a fraction in (0, 1], got {value!r}")
    if not 0 < float(value) <= 1:
        hint = ""
        if 1 < value <= 100:
            hint = f" (did you mean {value / 100:g}? it is a fraction, not a percentage)"
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value}{hint}")
    return float(value)


def check_int(value: Any, name: str, low: int) -> int:
    """An int (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


#: ``n_images`` of a run that keeps every correctly classified image of its pool.
ALL_IMAGES = "all"


def check_n_images(value: Any, name: str = "n_images", low: int = 1) -> int | str:
    """An int of at least ``low``, or ``"all"`` (every correctly classified image of the pool)."""
    if isinstance(value, str):
        if value.strip().lower() != ALL_IMAGES:
            raise ValueError(f"{name} must be an int >= {low} or {ALL_IMAGES!r}, got {value!r}")
        return ALL_IMAGES
    return check_int(value, name, low)


@dataclass(frozen=True)
class RunConfig:
    """One experiment run: one model (and seed), one attribution layer, a seeded image sample.

    - ``profile``: ``"demo"`` | ``"paper"`` | ``"custom"`` (pass a :class:`Subject` to :func:`run`).
    - ``model``: demo family (``"resnet"``, ``"vgg"``, ``"densenet"``, ``"convnext"``), a paper model
      (``"resnet50"``, ``"vgg19_bn"``, ``"densenet201"``, ``"convnext_large"``, or ``"densenet201-cifar100"``
      for the fine-tuned seed-robustness models), or any name for a custom subject.  ``seed``: the model's
      training seed (zoo member / fine-tuning run).
    - ``layer``: a layer role (``"final_conv"``, ``"norm5"``) or a dotted module name.
    - ``methods``: any registered methods (:func:`casekit.cam.registry.all_methods`; default the paper's six,
      :data:`casekit.METHODS`: CASE is part of RQ1, unlike the reference code's RQ1 script), kept in the
      registry's order; an unknown or empty selection is refused by name.
    - ``n_images``: size of the sample, drawn with ``sample_seed`` among correctly classified images
      (the paper's protocol); ``"all"`` takes every correctly classified image of the pool (the full scale).
    - ``k``: top-k fraction of RQ1's agreement and the evidence scores (default 0.05, the paper's 5 %).
    - ``fidelity_k``: the top-k fraction blanked for RQ2's headline confidence drop.  Default **0.05**: the
      paper's text speaks of minimally perturbing the top-k salient pixels and uses 5 % everywhere it names a
      number; the reference code's default is 50 %.  Both are reported: the deletion curve is measured at
      every k of ``deletion_ks`` (default 1, 2, 5, 10, 20, 50 %, which includes both) and ``fidelity_k`` is
      added to it if missing.
    - ``fill``: what blanked pixels become (``"mean"`` = 0 in normalised space, as the reference; ``"blur"``).
    - ``tau``: active-channel threshold (paper: 1e-3; the reference code's default was 0.1).
    - ``contrast_k``: CASE's contrast-set size K (the paper: 3 suffices); ``contrast_strategy``:
      ``"confusion"`` = the K most-confused classes of the target's row of the held-out confusion matrix (the
      paper), ``"logits"`` = the image's own K next-highest logits (the authors' unused variant).
      ``contrast_tiebreak``: ``"probs"`` (default) breaks ties of the confusion counts by the held-out mean
      softmax probabilities (:func:`casekit.contrast_sets` ``tiebreak=``), ``"none"`` by class index only.
    - ``projection``: CASE's projection of the pooled gradient vectors (``"pooled"``, the reference code) or
      of the full gradient maps (``"full"``, the paper's text).
    - ``ties``: ``"random"`` (seeded; constant maps → NaN agreement) or ``"index"`` (the reference code).
    - ``sample_seed``: seeds the image sample and the random tie-break.
    - ``rq1`` / ``rq2``: which metrics to compute (RQ1 needs the top-2 and sibling maps; RQ2 the deletion
      curves); ``sparsity_layers``: layers whose active channels are counted (default: the run's layer;
      ``()`` for none).  ``siblings``: add the true-vs-sibling comparison where the data has sibling groups.
    - ``batch_size``: images per engine call and per committed batch; ``perturbation_batch``: forwards per
      call of the Score-CAM / Ablation-CAM / deletion passes.  ``device``: where the model runs.
    - ``precision``: ``"auto"`` (default), ``"bf16"`` or ``"fp32"`` — which methods may run under bfloat16
      autocast, each kept only after the run's exactness check against float32 (:mod:`.precision`);
      Ablation-CAM and the deletion curves always run in float32.
    - ``heldout``: (paper profile) images of the evaluation set kept apart for the confusion matrix (a seeded
      draw; stratified by class for CIFAR-100, whose study uses :data:`CIFAR100_HELDOUT`).
    - ``tag``: names a variant run (e.g. ``"K1"``) so that it gets its own store folder.
    """

    model: str
    profile: str = "demo"
    seed: int = 0
    layer: str = "final_conv"
    methods: tuple[str, ...] = METHODS
    n_images: int | str = 200
    k: float = 0.05
    fidelity_k: float = 0.05
    deletion_ks: tuple[float, ...] = DELETION_KS
    fill: str = "mean"
    tau: float = 1e-3
    contrast_k: int = 3
    contrast_strategy: str = "confusion"
    contrast_tiebreak: str = "probs"
    projection: str = "pooled"
    ties: str = "random"
    sample_seed: int = 0
    rq1: bool = True
    rq2: bool = True
    sparsity_layers: tuple[str, ...] | None = None
    siblings: bool = True
    batch_size: int = 25
    perturbation_batch: int = 512
    device: str = "cpu"
    precision: str = "auto"
    heldout: int = 10_000
    tag: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if not isinstance(self.model, str) or not self.model:
            raise TypeError(f"model must be a non-empty string, got {self.model!r}")
        set_(self, "seed", check_int(self.seed, "seed", 0))
        if not isinstance(self.layer, str) or not self.layer:
            raise TypeError(f"layer must be a layer role or a dotted module name, got {self.layer!r}")
        methods = tuple_of_str(self.methods, "methods")
        if not methods:
            raise ValueError("methods is empty; choose from " + ", ".join(all_methods()))
        methods = tuple(dict.fromkeys(canonical_method(m) for m in methods))  # an unknown one: by name
        set_(self, "methods", tuple(m for m in all_methods() if m in methods))  # the registry's order
        set_(self, "n_images", check_n_images(self.n_images))
        set_(self, "k", check_fraction(self.k, "k"))
        set_(self, "fidelity_k", check_fraction(self.fidelity_k, "fidelity_k"))
        ks = tuple(check_fraction(k, "deletion_ks") for k in self.deletion_ks)
        if any(b <= a for a, b in zip(ks, ks[1:])):
            raise ValueError(f"deletion_ks must be strictly increasing, got {ks}")
        set_(self, "deletion_ks", ks)
        if self.fill not in ("mean", "blur"):
            raise ValueError(f"fill must be 'mean' or 'blur', got {self.fill!r}")
        if isinstance(self.tau, bool) or not isinstance(self.tau,
                                                        (int, float)) or not math.isfinite(self.tau):
            raise TypeError(f"tau must be a finite number, got {self.tau!r}")
        set_(self, "tau", float(self.tau))
        set_(self, "contrast_k", check_int(self.contrast_k, "contrast_k", 1))
        if self.contrast_strategy not in STRATEGIES:
            raise ValueError(f"contrast_strategy must be one of {STRATEGIES}, got {self.contrast_strategy!r}")
        if self.contrast_tiebreak not in TIEBREAKS:
            raise ValueError(f"contrast_tiebreak must be one of {TIEBREAKS}, got {self.contrast_tiebreak!r}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.ties not in ("random", "index"):
            raise ValueError(f"ties must be 'random' or 'index', got {self.ties!r}")
        set_(self, "sample_seed", check_int(self.sample_seed, "sample_seed", 0))
        for name in ("rq1", "rq2", "siblings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        # None stays None (= the run's layer, also after replace(layer=...))
        if self.sparsity_layers is not None:
            set_(self, "sparsity_layers",
                 tuple(dict.fromkeys(tuple_of_str(self.sparsity_layers, "sparsity_layers"))))
        if not (self.rq1 or self.rq2 or self.sparsity):
            raise ValueError("nothing to do: rq1 and rq2 are False and sparsity_layers is empty")
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", 1))
        set_(self, "perturbation_batch", check_int(self.perturbation_batch, "perturbation_batch", 1))
        if not isinstance(self.device, str):
            set_(self, "device", str(self.device))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        set_(self, "heldout", check_int(self.heldout, "heldout", 1))
        if not isinstance(self.tag, str) or any(c in self.tag for c in "/\\ "):
            raise ValueError(f"tag must be a string without slashes or spaces, got {self.tag!r}")

    @property
    def sparsity(self) -> tuple[str, ...]:
        """Layers whose active channels are counted: ``sparsity_layers``, or the run's layer when it is
        None."""
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

