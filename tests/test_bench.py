"""The benchmark compares like with like: its baselines reproduce casekit's maps (value checks, no timing)."""

from __future__ import annotations

import numpy as np
import pytest
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


# --- the paper-study bench (casekit.study.paper_bench) ------------------------------------------------------

def _tiny_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(6, 5)).eval()


def _tiny_study(n_images=2, amp="none"):
    from casekit.study import paper_bench as pb
    from casekit.study.config import RunConfig

    model = _tiny_cnn()
    subject = pb.synthetic_subject(model, {"final_conv": "2"}, n_images, size=16, seed=1)
    config = RunConfig(model="tiny", profile="custom", layer="final_conv", n_images=n_images,
                       batch_size=n_images, perturbation_batch=64)
    return pb.study_bench(configs=[config], subjects={"tiny": subject}, amp=amp), model


def test_study_bench_runs_the_real_runner_and_projects():
    from casekit.study import paper_bench as pb

    (t,), model = _tiny_study()
    assert tuple(t.method_s) == ck.METHODS
    assert t.channels == 6 and t.layer_name == "2" and t.n_images == 2
    assert sum(t.shares().values()) == pytest.approx(1.0)
    assert t.shares()["scorecam"] == pytest.approx(t.method_s["scorecam"] / t.total_s)
    proj = t.projected_s()
    for m, s in t.method_s.items():
        assert proj[m] == pytest.approx(s * 1000)
    assert proj["sparsity"] == pytest.approx(t.sparsity_s * 1000)
    assert proj["setup"] == pytest.approx(11_250 * t.forward_s)
    # the engine's maps came through the runner's batch: one [2, 2, 16, 16] stack per method, equal to the
    # engine's own maps of the model's top-1/top-2 classes
    assert t.maps["gradcam"].shape == (2, 2, 16, 16) and len(t.agreement["gradcam"]) == 2
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    direct = ck.saliency(model, images, "2", "gradcam", model(images).topk(2).indices)
    torch.testing.assert_close(t.maps["gradcam"], direct.float(), atol=1e-5, rtol=1e-4)
    assert model.training is False
    assert not any(p.grad is not None for p in model.parameters())
    report = pb.format_report([t])
    assert "projected paper profile" in report and "scorecam" in report


def test_synthetic_subject_labels_are_the_model_predictions():
    from casekit.study import paper_bench as pb

    model = _tiny_cnn()
    subj = pb.synthetic_subject(model, {"final_conv": "2"}, 3, size=16, seed=5)
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(subj.dataset[2][0], images[2])
    assert [subj.dataset[i][1] for i in range(3)] == model(images).argmax(1).tolist()


def test_floor_is_hand_checkable():
    from casekit.study.paper_bench import ModelTiming, floor_forwards

    t = ModelTiming("m", "final_conv", "x", channels=10, method_s={}, sparsity_s=0.0, forward_s=2.0,
                    backward_s=3.0, head_s=0.5, n_images=1, deletion_ks=6)
    assert floor_forwards("gradcam", t) == 2 + 3 + 12
    assert floor_forwards("scorecam", t) == 11 * 2 + 12
    assert floor_forwards("ablationcam", t) == 2 + 10 * 1.5 + 12
    with pytest.raises(ValueError, match="no floor"):
        floor_forwards("gradcam-diff", t)



def test_report_projects_methods_not_run_at_their_floor():
    from casekit.study.paper_bench import ModelTiming, format_report

    # 1 s/forward, 10 channels, 6 deletion ks: Score-CAM floor = (10 + 1 + 6) s per image → 17,000 s
    t = ModelTiming("m", "final_conv", "x", channels=10, method_s={"gradcam": 3.6}, sparsity_s=0.0,
                    forward_s=1.0, backward_s=2.0, head_s=0.5, n_images=1, deletion_ks=6)
    report = format_report([t])
    assert "projected paper profile (1000 images per run): 4.12 h" in report  # (3.6 + 0) × 1000 + 11,250 s
    assert "scorecam 4.72 h" in report  # 17,000 s
    assert "ablationcam 3.33 h" in report  # (1 + 10 × (1 − 0.5) + 6) × 1000 = 12,000 s


def test_pearson_per_map():
    from casekit.study.paper_bench import pearson

    a = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]]])
    b = torch.tensor([[[0.0, 2.0], [4.0, 6.0]], [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(pearson(a, b), [1.0, 1.0])
    np.testing.assert_allclose(pearson(a, -b), [-1.0, 1.0])
    np.testing.assert_allclose(pearson(a[:1], a[1:]), [0.0])


def test_study_bench_argument_validation():
    from casekit.study import paper_bench as pb

    with pytest.raises(ValueError, match="amp must be one of"):
        pb.study_bench(amp="int8")
    with pytest.raises(ValueError, match="n_images must be a positive int"):
        pb.paper_bench_configs(0)
    with pytest.raises(ValueError, match="unknown paper models"):
        pb.paper_bench_configs(2, models=["alexnet"])
    with pytest.raises(ValueError, match="amp must be one of"):
        with pb.engine_amp("fp8"):
            pass
    with pytest.raises(SystemExit):
        bench.main(["--study", "paper", "--amp", "int8"])
    with pytest.raises(SystemExit, match="--images must be >= 1"):
        bench.main(["--study", "paper", "--images", "0"])
    configs = pb.paper_bench_configs(3, methods=["gradcam"])
    assert [(c.model, c.layer) for c in configs] == [
        ("resnet50", "final_conv"), ("vgg19_bn", "final_conv"), ("densenet201", "final_conv"),
        ("convnext_large", "final_conv"), ("densenet201", "norm5")]
    assert all(c.methods == ("gradcam",) and c.n_images == 3 and c.batch_size == 3 for c in configs)


def test_engine_amp_restores_the_engine():
    from casekit.study import batch
    from casekit.study import paper_bench as pb

    before = batch.explain
    with pytest.raises(RuntimeError):
        with pb.engine_amp("bf16"):
            assert batch.explain is not before
            raise RuntimeError
    assert batch.explain is before
