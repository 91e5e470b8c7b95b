"""casekit — CASE (Contrastive Activation for Saliency Estimation) and five CAM baselines.

>>> import casekit as ck
>>> maps = ck.saliency(model, images, "layer4.2.conv3", "case", targets, contrast)

The package is grouped in rooms by concern, imports going one way (down):
``cam`` (engine, methods, contrast sets) → ``evaluation`` (metrics, statistics) → ``subjects`` (models and
data) → ``study`` (run config, runner, studies per profile, store) → ``report`` (naming, tables, analyses,
evidence, claims, figures, explorers); ``book`` and ``bench`` are the command-line entry points.  Short names
load on first use: ``ck.demo``, ``ck.models``, ``ck.data``, ``ck.metrics``, ``ck.stats``, ``ck.experiments``,
``ck.tables``, ``ck.analyses``, ``ck.evidence``, ``ck.claims``, ``ck.naming``, ``ck.figures``, ``ck.widgets``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .cam.contrast import confusion_matrix, contrast_sets, row_normalise
from .cam.engine import (
    DISPLAY_NAMES,
    GRADIENT_METHODS,
    METHODS,
    CAMResult,
    CASEVectors,
    case_vectors,
    explain,
    finalize_maps,
    saliency,
)

__version__ = "0.1.0"

__all__ = [
    "saliency",
    "explain",
    "CAMResult",
    "case_vectors",
    "CASEVectors",
    "finalize_maps",
    "METHODS",
    "GRADIENT_METHODS",
    "DISPLAY_NAMES",
    "contrast_sets",
    "confusion_matrix",
    "row_normalise",
]

# Short public names (``ck.metrics``, ``ck.demo``, ...) for modules that live in the rooms below; loaded on
# first use.
_SUBMODULES = {
    "demo": "subjects.demo",
    "models": "subjects.models",
    "data": "subjects.data",
    "synthetic": "subjects.synthetic",
    "zoo": "subjects.zoo",
    "finetune": "subjects.finetune",
    "reference": "subjects.reference",
    "metrics": "evaluation.metrics",
    "stats": "evaluation.stats",
    "diagnostic": "evaluation.diagnostic",
    "experiments": "study.experiments",
    "store": "study.store",
    "naming": "report.naming",
    "tables": "report.tables",
    "analyses": "report.analyses",
    "evidence": "report.evidence",
    "claims": "report.claims",
    "figures": "report.figures",
    "widgets": "report.widgets",
    "bench": "bench",
    "book": "book",
    "cam": "cam",
    "evaluation": "evaluation",
    "subjects": "subjects",
    "study": "study",
    "report": "report",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{_SUBMODULES[name]}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'casekit' has no attribute {name!r}")
