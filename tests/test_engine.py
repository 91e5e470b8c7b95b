"""The engine's contract: batching invariances, the model left as found, clear errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

import casekit as ck
from casekit.cam import perturbation
from casekit.cam.perturbation import scorecam_blank_channels

ALL = list(ck.METHODS)
LAYER = "layer2"  # 128 channels, 6×6 at 48×48: the gradient-free methods need one forward per channel


def small_resnet(num_classes: int = 10) -> nn.Module:
    """A torchvision ResNet with one BasicBlock per stage (module names as in ResNet-18)."""
    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes).eval()


@pytest.fixture(scope="module")
def model():
    return small_resnet()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(5)
    return torch.randn(8, 3, 48, 48)


def contrast_for(targets: torch.Tensor, k: int = 2, num_classes: int = 10) -> torch.Tensor:
    """Deterministic contrast classes different from each target."""
    offs = torch.arange(1, k + 1)
    return (targets[..., None] + offs) % num_classes


def test_output_contract(model, images):
    t = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])
    res = ck.explain(model, images, LAYER, ALL, t, contrast_for(t[:, None]))
    for m in ALL:
        maps = res.maps[m]
        assert maps.shape == (8, 1, 48, 48) and maps.dtype == torch.float32
        assert maps.device == images.device
        assert float(maps.min()) >= 0 and float(maps.max()) <= 1
        assert not torch.isnan(maps).any()
        for b in range(8):  # every non-empty map is scaled to exactly [0, 1]
            if maps[b, 0].max() > 0:
                assert float(maps[b, 0].min()) == 0.0 and float(maps[b, 0].max()) == pytest.approx(1.0)
    assert res.targets.shape == (8, 1) and res.logits.shape == (8, 10)
    assert res.activations.shape == (8, 128, 6, 6)


@pytest.mark.parametrize("method", ALL)
def test_multi_target_equals_one_at_a_time(model, images, method):
    x = images[:3]
    t = model(x).topk(3).indices  # [3, 3]
    c = contrast_for(t) if method == "case" else None
    together = ck.saliency(model, x, LAYER, method, t, c)
    for j in range(3):
        alone = ck.saliency(model, x, LAYER, method, t[:, j], None if c is None else c[:, j : j + 1])
        torch.testing.assert_close(together[:, j : j + 1], alone, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ALL)
def test_batch_equals_single_images(model, images, method):
    t = model(images).topk(2).indices
    c = contrast_for(t) if method == "case" else None
    batch = ck.saliency(model, images, LAYER, method, t, c, batch_size=37)
    for b in range(8):
        single = ck.saliency(model, images[b : b + 1], LAYER, method, t[b : b + 1],
                             None if c is None else c[b : b + 1])
        # float noise of different batch shapes, amplified by (S − S_ablated)/S in Ablation-CAM
        torch.testing.assert_close(batch[b : b + 1], single, atol=1e-4, rtol=0)


def test_targets_from_logits_and_contrast_callable(model, images):
    sets = torch.stack([(torch.arange(10) + 1) % 10, (torch.arange(10) + 2) % 10], dim=1)  # [C, K]
    res = ck.explain(model, images, LAYER, ["gradcam", "case"], lambda z: z.topk(2).indices,
                     lambda t, z: sets[t])
    t = model(images).topk(2).indices
    assert torch.equal(res.targets, t)
    assert torch.equal(res.contrast, sets[t])
    direct = ck.saliency(model, images, LAYER, "case", t, sets[t])
    torch.testing.assert_close(res.maps["case"], direct, atol=0, rtol=0)


def test_deterministic(model, images):
    t = model(images).topk(2).indices
    a = ck.explain(model, images, LAYER, ALL, t, contrast_for(t))
    b = ck.explain(model, images, LAYER, ALL, t, contrast_for(t))
    for m in ALL:
        assert torch.equal(a.maps[m], b.maps[m])


def test_one_forward_pass_serves_all_targets_and_methods(model, images):
    calls = []
    h = model.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))
    t = model(images).topk(2).indices
    calls.clear()
    ck.explain(model, images, LAYER, ["gradcam", "gradcam++", "layercam", "case"], t, contrast_for(t, 3))
    h.remove()
    assert calls == [8]


def test_gradient_free_forwards_shared_across_targets(model, images):
    calls = []
    h = model.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))
    x = images[:2]
    res = ck.explain(model, x, LAYER, "scorecam", torch.tensor([[0, 1, 2], [3, 4, 5]]), batch_size=64)
    h.remove()
    # one forward, then one masked forward per (image, channel), except that the channels whose mask is
    # exactly 0 (all-zero after the ReLU) share one forward of the blank image (issue 12)
    blank = int(scorecam_blank_channels(res.activations, (48, 48)).sum())
    assert 0 < blank < 2 * 128
    assert sum(calls) == 2 + 2 * 128 - blank + 1


def test_scorecam_blank_channels_share_one_forward_with_the_same_maps(model, images, monkeypatch):
    """The shared blank-image forward gives the maps of one masked forward per channel."""
    x = images[:3]
    t = model(x).topk(2).indices
    shared = ck.explain(model, x, LAYER, "scorecam", t)
    assert int(scorecam_blank_channels(shared.activations, (48, 48)).sum()) > 0
    monkeypatch.setattr(perturbation, "scorecam_blank_channels",
                        lambda a, size: torch.zeros(a.shape[:2], dtype=torch.bool))
    one_each = ck.explain(model, x, LAYER, "scorecam", t)
    torch.testing.assert_close(shared.maps["scorecam"], one_each.maps["scorecam"], atol=1e-6, rtol=0)


def test_scorecam_blank_channels_by_hand():
    a = torch.zeros(1, 4, 3, 3)
    a[0, 1, 1, 1] = 2.0  # not constant
    a[0, 2] = 0.7  # constant, non-zero: its mask is 0 only if upsampling keeps it exactly constant
    a[0, 3] = -1.0
    blank = scorecam_blank_channels(a, (12, 12))
    masks = perturbation.scorecam_masks(a[0], (12, 12))
    assert blank[0].tolist() == [bool(m.max() == 0) for m in masks]
    assert blank[0, 0] and not blank[0, 1]


def _snapshot(m: nn.Module):
    return {
        "training": [(n, mod.training) for n, mod in m.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in m.named_parameters()],
        "grad": [(n, None if p.grad is None else p.grad.clone()) for n, p in m.named_parameters()],
        "hooks": [
            (n, len(mod._forward_hooks), len(mod._forward_pre_hooks), len(mod._backward_hooks))
            for n, mod in m.named_modules()
        ],
        "state": {k: v.clone() for k, v in m.state_dict().items()},
        "grad_mode": torch.is_grad_enabled(),
    }


def _assert_same(before, after):
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    assert before["grad_mode"] == after["grad_mode"]
    for (n, g0), (_, g1) in zip(before["grad"], after["grad"], strict=True):
        assert (g0 is None) == (g1 is None), n
        if g0 is not None:
            assert torch.equal(g0, g1), n
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k


def _messy_model():
    m = small_resnet()
    m.train()
    m.layer2.eval()  # a mixed mode, as after freezing some BN layers
    m.conv1.weight.requires_grad_(False)
    m.fc.weight.grad = torch.full_like(m.fc.weight, 0.5)  # a stale gradient must survive
    return m


@pytest.mark.parametrize("method", ALL)
def test_model_left_as_found(images, method):
    m = _messy_model()
    before = _snapshot(m)
    t = torch.arange(8) % 10
    ck.saliency(m, images, LAYER, method, t, contrast_for(t[:, None]) if method == "case" else None)
    _assert_same(before, _snapshot(m))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(layer=LAYER, targets=torch.full((8,), 10)),  # raises after the forward pass
        dict(layer="fc", targets=torch.zeros(8, dtype=torch.long)),  # raises inside the hook
        dict(layer=LAYER, targets=torch.zeros(8, dtype=torch.long), contrast=torch.full((8, 1, 2), -1),
             method="case"),
    ],
)
def test_model_left_as_found_after_exception(images, kwargs):
    m = _messy_model()
    before = _snapshot(m)
    with torch.no_grad():
        before["grad_mode"] = torch.is_grad_enabled()
        with pytest.raises(ValueError):
            ck.saliency(m, images, kwargs["layer"], kwargs.get("method", "gradcam"), kwargs["targets"],
                        kwargs.get("contrast"))
        after = _snapshot(m)
    _assert_same(before, after)


def test_inplace_ops_after_layer_vgg_and_densenet():
    """VGG's BN is followed by ReLU(inplace=True); DenseNet applies relu_ to norm5's output.

    (Ablation-CAM under an in-place ReLU is covered by the oracle test on ResNet's layer3.0.bn1.)
    """
    torch.manual_seed(0)
    vgg = torchvision.models.vgg11_bn(weights=None, num_classes=5).eval()
    dense = torchvision.models.densenet121(weights=None, num_classes=5).eval()
    cases = [(vgg, "features.26", ["gradcam", "layercam"]),
             (dense, "features.norm5", ["gradcam", "layercam"])]
    for model, layer, methods in cases:
        x = torch.randn(2, 3, 64, 64)
        module = dict(model.named_modules())[layer]
        seen = {}
        h = module.register_forward_hook(lambda m, i, o: seen.__setitem__("A", o.clone()))
        t = model(x).topk(2).indices
        h.remove()
        res = ck.explain(model, x, layer, methods, t)
        # the stored activations are the layer's true output, not the tensor rectified in place
        torch.testing.assert_close(res.activations, seen["A"], atol=1e-5, rtol=1e-5)
        assert float(res.activations.min()) < 0
        for maps in res.maps.values():
            assert torch.isfinite(maps).all() and maps.max() > 0


# ---------------------------------------------------------------- bad input


def _err(match, *args, exc=ValueError, **kw):
    with pytest.raises(exc, match=match):
        ck.saliency(*args, **kw)


def test_unknown_layer_lists_close_matches(model, images):
    with pytest.raises(ValueError,
                       match=r"unknown layer 'layer3\.0\.conv3'.*close matches.*'layer3\.0\.conv[12]'"):
        ck.saliency(model, images, "layer3.0.conv3", "gradcam", torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="not a submodule"):
        ck.saliency(model, images, nn.Conv2d(3, 3, 1), "gradcam", torch.zeros(8, dtype=torch.long))


def test_layer_output_not_4d(model, images):
    _err(r"layer 'fc' outputs shape \(8, 10\).*4-D", model, images, "fc", "gradcam",
         torch.zeros(8, dtype=torch.long))


def test_layer_not_run(images):
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.spare = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    _err("'spare' is not run", Unused(), images, "spare", "gradcam", torch.zeros(8, dtype=torch.long))


def test_targets_batch_mismatch_is_not_truncated(model, images):
    _err("targets has batch size 3 but images has 8", model, images, LAYER, "gradcam",
         torch.zeros(3, dtype=torch.long))
    _err("targets has batch size 9 but images has 8", model, images, LAYER, "gradcam",
         torch.zeros(9, 2, dtype=torch.long))


def test_class_index_out_of_range(model, images):
    _err(r"targets contains class index 10.*10 classes", model, images, LAYER, "gradcam",
         torch.full((8,), 10))
    _err(r"targets contains class index -1", model, images, LAYER, "layercam", torch.full((8,), -1))
    t = torch.zeros(8, dtype=torch.long)
    _err(r"contrast contains class index 12", model, images, LAYER, "case", t, torch.full((8, 1, 1), 12))


def test_case_needs_contrast_and_others_refuse_it(model, images):
    t = torch.zeros(8, dtype=torch.long)
    _err("method 'case' needs contrast", model, images, LAYER, "case", t)
    _err("contrast is only used by method 'case'", model, images, LAYER, "gradcam", t,
         torch.ones(8, 1, 1, dtype=torch.long))
    _err(r"contrast has shape \(8, 2, 1\) but targets is \[B=8, T=1\]", model, images, LAYER, "case", t,
         torch.ones(8, 2, 1, dtype=torch.long))
    _err("K = 0", model, images, LAYER, "case", t, torch.ones(8, 1, 0, dtype=torch.long))


def test_bad_images(model, images):
    t = torch.zeros(8, dtype=torch.long)
    _err(r"images must be 4-D.*got shape \(3, 48, 48\)", model, images[0], LAYER, "gradcam", t[:1])
    bad = images.clone()
    bad[2, 0, 1, 1] = float("nan")
    _err(r"images contain NaN values \(images at batch index \[2\]\)", model, bad, LAYER, "gradcam", t)
    bad = images.clone()
    bad[5, 1, 0, 0] = float("inf")
    _err(r"images contain Inf", model, bad, LAYER, "gradcam", t)
    _err("floating", model, images.to(torch.uint8), LAYER, "gradcam", t, exc=TypeError)


def test_model_output_not_2d(images):
    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    class Pair(Seg):
        def forward(self, x):
            y = self.conv(x).mean((2, 3))
            return y, y

    _err(r"model output must be 2-D logits \[B, num_classes\], got shape \(8, 4, 46, 46\)", Seg(), images,
         "conv", "gradcam", torch.zeros(8, dtype=torch.long))
    _err("returned tuple", Pair(), images, "conv", "gradcam", torch.zeros(8, dtype=torch.long), exc=TypeError)


def test_unknown_method(model, images):
    _err(r"unknown method 'gradcam\+'.*did you mean 'gradcam\+\+' or 'gradcam'", model, images, LAYER,
         "gradcam+", torch.zeros(8, dtype=torch.long))
    maps = ck.saliency(model, images, LAYER, "Grad-CAM++", torch.zeros(8, dtype=torch.long))
    assert maps.shape == (8, 1, 48, 48)


def test_float_targets_rejected(model, images):
    _err("integer class indices", model, images, LAYER, "gradcam", torch.zeros(8), exc=TypeError)


def test_bf16_autocast_for_gradient_free_methods(model, images):
    """autocast keeps Ablation-CAM's broadcast tail, and Score-CAM's maps stay close to float32."""
    x = images[:2]
    t = model(x).topk(2).indices
    full = ck.explain(model, x, LAYER, ["scorecam", "ablationcam"], t)
    half = ck.explain(model, x, LAYER, ["scorecam", "ablationcam"], t, amp_dtype=torch.bfloat16)
    assert full.ablation_mode == half.ablation_mode == "broadcast"
    a, b = full.maps["scorecam"].flatten(1), half.maps["scorecam"].flatten(1)
    r = torch.nn.functional.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), dim=1)
    assert float(r.min()) > 0.99
