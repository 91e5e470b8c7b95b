"""The benchmark compares like with like: its baselines reproduce casekit's maps (value checks, no timing)."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.models.resnet import BasicBlock, ResNet

import casekit as ck
from casekit import bench


def _model():
    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=12).eval()


def test_contrast_helper_excludes_target():
    logits = torch.tensor([[0.1, 3.0, 2.0, 1.0, -1.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    targets = logits.topk(2).indices  # [[1, 2], [0, 1]]
    c = bench._contrast(logits, targets, 2)
    assert c.tolist() == [[[2, 3], [3, 0]], [[1, 2], [2, 3]]]


def test_authors_loop_baseline_equals_casekit_case():
    model = _model()
    images = torch.randn(3, 3, 64, 64)
    logits = model(images)
    targets = logits.topk(2).indices
    contrast = bench._contrast(logits, targets, 3)
    ours = ck.saliency(model, images, "layer3", "case", targets, contrast).numpy()
    theirs = bench.pgc_case_loop(model, model.layer3, images, targets, contrast)
    assert bench._pearson_min(ours, theirs) > 0.999
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_pgc_maps_equal_casekit_gradcampp():
    model = _model()
    images = torch.randn(2, 3, 64, 64)
    targets = model(images).topk(2).indices
    ours = ck.saliency(model, images, "layer3", "gradcam++", targets).numpy()
    assert bench._pearson_min(ours, bench.pgc_maps("gradcam++", model, model.layer3, images, targets)) > 0.999
