"""The paper's experiments as resumable runs (RQ1 class sensitivity, RQ2 fidelity, channel sparsity): the
public names of :mod:`casekit.study` in one place, so that ``ck.experiments.run_study(...)`` and friends keep
working.  Where each lives:

- :mod:`.config` — :class:`RunConfig` and the shared constants (row keys, targets, comparisons, seeds);
- :mod:`.subject` — :class:`Subject`, :func:`load_subject`, the image sample;
- :mod:`.batch` — one batch: one engine call → maps → metrics → rows; CASE's logit contrast;
- :mod:`.runner` — :func:`run`, :func:`run_all`, :class:`RunResult`, :class:`Results`;
- :mod:`.profiles` — the demo and paper studies, :func:`run_study`, :func:`missing_inputs`,
:func:`load_results`;
- :mod:`.rows` — :func:`agreement_rows`, :func:`fidelity_rows`, :func:`degenerate_maps`;
- :mod:`.examples` and :mod:`.contrast_study` — the inputs of chapters 01–03.

Profiles: ``"demo"`` (the embedded benchmark and model zoo, :mod:`casekit.demo`), ``"paper"`` (ImageNet models
of :mod:`casekit.subjects.models`, or the CIFAR-100 DenseNet-201 of :mod:`casekit.subjects.finetune`), or
``"custom"`` (pass a :class:`Subject`).
"""

from __future__ import annotations

from .batch import logit_contrast, logit_contrast_sets
from .config import (
    COMPARISONS,
    DEMO_N_IMAGES,
    MAP_KEY,
    PAPER_N_IMAGES,
    PAPER_STUDY_MODELS,
    PROFILES,
    SPARSITY_KEY,
    STRATEGIES,
    STUDY_SEEDS,
    TARGETS,
    RunConfig,
    default_results_dir,
    k_suffix,
)
from .contrast_study import (
    CONTRAST_KEY,
    CONTRAST_STUDY_DIR,
    contrast_configs,
    contrast_study,
    projection_study,
)
from .examples import (
    case_example,
    denormalizer,
    example_maps,
    explorer_contrast,
    explorer_images,
    part_areas,
    representative_images,
)
from .profiles import (
    CIFAR10_N_IMAGES,
    CIFAR10_NOTE,
    CIFAR10_STUDY_MODELS,
    cifar10_configs,
    demo_configs,
    load_results,
    missing_inputs,
    paper_configs,
    profile_models,
    run_demo,
    run_study,
    study_config,
    study_configs,
)
from .rows import agreement_rows, degenerate_maps, fidelity_rows
from .runner import Results, RunResult, run, run_all
from .subject import Subject, layer_activations, load_subject, model_fingerprint, sample_images

__all__ = [
    "RunConfig", "Subject", "RunResult", "Results",
    "MAP_KEY", "SPARSITY_KEY", "TARGETS", "COMPARISONS", "PROFILES", "STRATEGIES", "STUDY_SEEDS",
    "DEMO_N_IMAGES", "PAPER_N_IMAGES", "PAPER_STUDY_MODELS", "k_suffix", "default_results_dir",
    "run", "run_all", "demo_configs", "run_demo", "paper_configs", "study_configs", "run_study",
           "missing_inputs",
    "load_results", "load_subject", "model_fingerprint", "sample_images", "logit_contrast",
           "logit_contrast_sets",
    "layer_activations", "agreement_rows", "fidelity_rows", "degenerate_maps", "example_maps",
    "CONTRAST_STUDY_DIR", "CONTRAST_KEY", "profile_models", "study_config", "contrast_configs",
           "contrast_study", "projection_study",
    "representative_images", "denormalizer", "case_example", "part_areas", "explorer_images",
           "explorer_contrast",
    "cifar10_configs", "CIFAR10_N_IMAGES", "CIFAR10_NOTE", "CIFAR10_STUDY_MODELS",
]
