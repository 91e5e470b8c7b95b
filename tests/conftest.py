"""Shared fixtures: seeded tiny/untrained torchvision models and the optional ../shared folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CASEKIT_SHARED", REPO.parent / "shared"))
REFERENCE_CIFAR10 = SHARED / "reference" / "cifar10"

os.environ.setdefault("CASEKIT_CACHE", str(REPO / ".cache" / "casekit"))
os.environ.setdefault("MPLBACKEND", "Agg")
# The suite runs the demo profile on the tiny zoo (seconds to train, see casekit.subjects.demo.zoo_size);
# tests/test_demo.py checks the standard zoo's accuracy bar on one family (every family where it is cached).
os.environ["CASEKIT_DEMO_ZOO"] = "tiny"


def needs_shared_cifar10():
    """Skip marker for tests that use the real pretrained CIFAR-10 networks in ../shared."""
    return pytest.mark.skipif(
        not (REFERENCE_CIFAR10 / "resnet20-12fca82f.th").exists(),
        reason=f"reference CIFAR-10 networks not found at {REFERENCE_CIFAR10} (only present in the dev "
               "workspace)",
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
