"""casekit — CASE (Contrastive Activation for Saliency Estimation) and five CAM baselines.

>>> import casekit as ck
>>> maps = ck.saliency(model, images, "layer4.2.conv3", "case", targets, contrast)

Submodules load on first use: ``ck.demo``, ``ck.models``, ``ck.data``,
``ck.metrics``, ``ck.stats``, ``ck.experiments``, ``ck.widgets``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .contrast import confusion_matrix, contrast_sets, row_normalise
from .engine import DISPLAY_NAMES, GRADIENT_METHODS, METHODS, CAMResult, CASEVectors, case_vectors, explain, finalize_maps, saliency

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

_SUBMODULES = {"demo", "models", "data", "metrics", "stats", "experiments", "widgets", "synthetic", "zoo", "store", "tables", "bench", "finetune", "figures"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'casekit' has no attribute {name!r}")
