"""Engine edge cases that used to give silent wrong maps (issue 15), and the method registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

import casekit as ck
from casekit.cam import engine, registry
from casekit.cam.hooks import channel_positions

LAYER_SIZES = range(1, 9)  # h
IMAGE_SIZES = (7, 8, 14, 16, 28, 32, 56, 64, 224)  # H: 8 × 9 = 72 (h, H) pairs


def _finalize_before_issue_15(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """finalize_maps as it was: constancy decided after upsampling (kept here to show the difference)."""
    cam = raw.float().clamp_min(0)
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    flat = cam.flatten(2)
    lo, hi = flat.amin(dim=2)[..., None, None], flat.amax(dim=2)[..., None, None]
    span = hi - lo
    ok = span > 0
    return torch.where(ok, (cam - lo) / torch.where(ok, span, torch.ones_like(span)), torch.zeros_like(cam))


# ---------------------------------------------------------------- 1. constant and 1×1 maps


def test_constant_maps_are_zero_for_every_layer_and_image_size():
    values = torch.tensor([0.3, 1.7, 123.456, 7e-4])
    noisy_before = 0
    for h in LAYER_SIZES:
        for H in IMAGE_SIZES:
            raw = values[None, :, None, None].expand(1, 4, h, h).contiguous()
            out = ck.finalize_maps(raw, (H, H))
            assert out.shape == (1, 4, H, H)
            assert torch.equal(out, torch.zeros_like(out)), f"h={h}, H={H}: a constant map is not all zero"
            noisy_before += int(_finalize_before_issue_15(raw, (H, H)).amax() > 0)
    assert noisy_before > 0  # the old rule stretched bilinear rounding to [0, 1] in some of these pairs


def test_non_constant_maps_unchanged():
    g = torch.Generator().manual_seed(0)
    for h in LAYER_SIZES:
        for H in IMAGE_SIZES:
            raw = torch.randn(2, 3, h, h, generator=g) * 5
            if h == 1:
                continue  # 1×1 maps are constant by definition
            raw[:, :, 0, 0] = raw.abs().amax() + 1  # at least one positive value, not constant after ReLU
            torch.testing.assert_close(ck.finalize_maps(raw, (H, H)), _finalize_before_issue_15(raw, (H, H)),
                                       atol=0, rtol=0)


def test_one_by_one_layer_warns_and_gives_zero_maps():
    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)  # layer4 is 1×1 at 32×32
    t = model(x).topk(2).indices
    with pytest.warns(RuntimeWarning, match=r"layer 'layer4' has a 1×1 feature map.*all zero"):
        res = ck.explain(model, x, "layer4", ["gradcam", "layercam", "gradcam++", "scorecam"], t)
    assert res.activations.shape[-2:] == (1, 1)
    for m, maps in res.maps.items():
        assert torch.equal(maps, torch.zeros_like(maps)), m


# ---------------------------------------------------------------- 2. Ablation-CAM under autocast


def _inplace_cases():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    dense = torchvision.models.densenet121(weights=None, num_classes=5).eval()
    vgg = torchvision.models.vgg11_bn(weights=None, num_classes=5).eval()
    # bn2 → out += identity; relu (in place) | norm5 → F.relu(inplace=True) | BN → ReLU(inplace=True)
    return [(resnet, "layer4.1.bn2"), (dense, "features.norm5"), (vgg, "features.26")]


@pytest.mark.parametrize("case", range(3),
                         ids=["resnet18-layer4.1.bn2", "densenet121-norm5", "vgg11bn-features.26"])
def test_ablationcam_activations_are_the_layer_output_with_and_without_autocast(case):
    model, layer = _inplace_cases()[case]
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    module = dict(model.named_modules())[layer]
    seen = {}
    h = module.register_forward_hook(lambda m, i, o: seen.__setitem__("A", o.clone()))
    t = model(x).topk(2).indices
    h.remove()
    results = {}
    for amp in (None, torch.bfloat16):
        res = ck.explain(model, x, layer, ["ablationcam", "gradcam"], t, amp_dtype=amp, batch_size=1024)
        torch.testing.assert_close(res.activations, seen["A"], atol=1e-5, rtol=1e-5)
        assert float(res.activations.min()) < 0  # not the tensor rectified in place
        results[amp] = res
    full, half = results[None].maps["ablationcam"], results[torch.bfloat16].maps["ablationcam"]
    for b in range(full.shape[0]):
        for j in range(full.shape[1]):
            if full[b, j].max() > 0:
                assert half[b, j].max() > 0, f"bf16 map b={b} t={j} is all zero where float32's is not"


# ---------------------------------------------------------------- 3. transformers and bad calls


class Tokens(nn.Module):
    """A tiny token network: conv patches → [B, 1 + h·w, C] with a class token → linear head on the tokens'
    mean."""

    def __init__(self, C: int = 6, classes: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, C, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, C))
        self.norm = nn.LayerNorm(C)
        self.mix = nn.Linear(C, C)
        self.head = nn.Linear(C, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tok = self.patch(x).flatten(2).transpose(1, 2)
        tok = torch.cat([self.cls.expand(x.shape[0], -1, -1), tok], dim=1)
        tok = self.norm(tok)
        return self.head(torch.relu(self.mix(tok)).mean(dim=1))


def _grid(t: torch.Tensor) -> torch.Tensor:
    side = int((t.shape[1] - 1) ** 0.5)
    return t[:, 1:, :].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)


def test_token_layer_without_transform_explains_reshape_transform():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"outputs shape \(2, 17, 6\).*reshape_transform=.*\[B, tokens, C\]"):
        ck.saliency(Tokens(), torch.randn(2, 3, 16, 16), "norm", "gradcam", torch.zeros(2, dtype=torch.long))


def test_reshape_transform_gradcam_by_hand():
    """Grad-CAM through the transform equals Grad-CAM computed from autograd on the token layout by hand."""
    torch.manual_seed(0)
    model = Tokens().eval()
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([[1, 3], [0, 2]])
    res = ck.explain(model, x, "norm", ["gradcam", "layercam"], t, reshape_transform=_grid)
    store = {}
    h = model.norm.register_forward_hook(lambda m, i, o: store.__setitem__("o", o))
    logits = model(x)
    h.remove()
    A = _grid(store["o"]).detach()
    torch.testing.assert_close(res.activations, A)
    for j in range(2):
        (g,) = torch.autograd.grad(logits.gather(1, t[:, j : j + 1]).sum(), store["o"], retain_graph=True)
        G = _grid(g)
        gc = ck.finalize_maps((G.mean((2, 3))[:, :, None, None] * A).sum(1, keepdim=True), (16, 16))
        lc = ck.finalize_maps((G.clamp_min(0) * A).sum(1, keepdim=True), (16, 16))
        torch.testing.assert_close(res.maps["gradcam"][:, j : j + 1], gc, atol=1e-5, rtol=0)
        torch.testing.assert_close(res.maps["layercam"][:, j : j + 1], lc, atol=1e-5, rtol=0)


def test_reshape_transform_ablation_by_hand():
    """Ablation-CAM on tokens ablates channel c in every token (class token included), as pytorch-grad-cam."""
    torch.manual_seed(0)
    model = Tokens().eval()
    x = torch.randn(1, 3, 16, 16)
    t = torch.tensor([[2]])
    res = ck.explain(model, x, "norm", "ablationcam", t, reshape_transform=_grid)
    out = model.norm(torch.cat([model.cls, model.patch(x).flatten(2).transpose(1, 2)], dim=1)).detach()
    value = out.min() - 1e7
    S = model(x)[0, 2]
    weights = []
    for c in range(6):
        ab = out.clone()
        ab[:, :, c] = value
        S_c = model.head(torch.relu(model.mix(ab)).mean(dim=1))[0, 2]
        weights.append((S - S_c) / S)
    assert float(torch.stack(weights).detach().std()) > 0  # the channels matter differently
    expected = ck.finalize_maps((torch.stack(weights)[None, :, None, None] * _grid(out)).sum(1, keepdim=True),
                                (16, 16))
    torch.testing.assert_close(res.maps["ablationcam"], expected.detach(), atol=1e-4, rtol=0)


def test_channel_positions_of_a_vit_transform():
    pos = channel_positions(_grid, torch.zeros(1, 17, 6), "tokens")
    assert pos.shape == (6, 17)  # all 17 tokens of each channel, the class token too
    assert pos[2].tolist() == [2 + 6 * k for k in range(17)]
    with pytest.raises(ValueError, match="only select and rearrange"):
        channel_positions(lambda t: _grid(t) * 0.5, torch.zeros(1, 17, 6), "tokens")


def test_bad_reshape_transform_output():
    torch.manual_seed(0)
    with pytest.raises(ValueError,
                       match=r"reshape_transform turned layer 'norm'.*\(2, 17, 6\) into \(2, 102\)"):
        ck.saliency(Tokens(), torch.randn(2, 3, 16, 16), "norm", "gradcam", torch.zeros(2, dtype=torch.long),
                    reshape_transform=lambda t: t.flatten(1))


def test_inference_mode_is_named():
    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"torch\.inference_mode\(\)"):
            ck.saliency(model, x, "layer3", "gradcam", torch.tensor([1]))
        assert torch.is_inference_mode_enabled()
    with torch.no_grad():  # no_grad is fine: the engine switches gradients on itself
        assert ck.saliency(model, x, "layer3", "gradcam", torch.tensor([1])).shape == (1, 1, 32, 32)


def test_images_dtype_must_match_the_model():
    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with pytest.raises(TypeError,
                       match=r"images are torch\.float64 but the model's 'conv1\.weight' is torch\.float32"):
        ck.saliency(model, x, "layer3", "gradcam", torch.tensor([1]))


# ---------------------------------------------------------------- the registry


def test_registry_derives_the_public_names():
    assert engine.METHODS == ck.METHODS == ("gradcam", "gradcam++", "scorecam", "ablationcam", "layercam",
                                            "case")
    # invariants, not pinned lists: the paper's six first, every other registered method an extension
    names = registry.all_methods()
    assert names[:6] == engine.METHODS and set(names) == set(registry.REGISTRY)
    assert registry.EXTENSION_METHODS == names[6:] and "gradcam-diff" in names[6:]
    assert all(registry.REGISTRY[m].role == "extension" for m in names[6:])
    assert registry.GRADIENT_METHODS == {m for m in names if registry.REGISTRY[m].needs_gradients}
    assert {"case", "gradcam-diff"} <= registry.CONTRAST_METHODS
    assert registry.CONTRAST_METHODS == {m for m in names if registry.REGISTRY[m].needs_contrast}
    assert {"scorecam", "ablationcam"}.isdisjoint(registry.GRADIENT_METHODS)
    assert engine.DISPLAY_NAMES["ablationcam"] == "AblationCAM"
    assert engine.DISPLAY_NAMES["gradcam-diff"] == "Grad-CAM (diff)"
    for name, spec in registry.REGISTRY.items():
        assert spec.name == name and callable(spec.raw_map)
        assert engine.canonical_method(spec.display) == name
    assert engine.canonical_method("Grad_CAM_diff") == "gradcam-diff"
    with pytest.raises(Exception):
        registry.REGISTRY["gradcam"].display = "x"  # frozen records


def test_contrast_rules_follow_the_registry():
    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10).eval()
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([1])
    with pytest.raises(ValueError, match="method 'gradcam-diff' needs contrast"):
        ck.saliency(model, x, "layer3", "gradcam-diff", t)
    with pytest.raises(ValueError, match="contrast is only used by method 'case' and 'gradcam-diff' and "
                                         "'finercam-contrast'"):
        ck.saliency(model, x, "layer3", "layercam", t, torch.tensor([[[2]]]))


# ---------------------------------------------------------------- Score-CAM in channels_last (issue 19)

def test_scorecam_channels_last_matches_contiguous_and_restores_the_model():
    """The masked forwards in channels_last give the contiguous-format scores (same arithmetic, another
    layout) and leave every parameter with its own storage, strides, requires_grad and .grad."""
    from casekit.cam.perturbation import scorecam

    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5).eval()
    model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
    model.fc.weight.requires_grad_(False)
    before = {n: (p.data_ptr(), p.stride(), p.requires_grad) for n, p in model.named_parameters()}
    x = torch.randn(2, 3, 32, 32)
    acts = torch.relu(torch.randn(2, 8, 4, 4))
    targets = torch.tensor([[0, 1], [2, 3]])
    last = scorecam(model, x, acts, targets, batch_size=5)
    plain = scorecam(model, x, acts, targets, batch_size=5, memory_format="contiguous")
    torch.testing.assert_close(last, plain, rtol=1e-4, atol=1e-5)
    assert not torch.equal(last, torch.zeros_like(last))
    after = {n: (p.data_ptr(), p.stride(), p.requires_grad) for n, p in model.named_parameters()}
    assert after == before
    assert torch.equal(model.conv1.weight.grad, torch.ones_like(model.conv1.weight))
    with pytest.raises(ValueError, match="memory_format"):
        scorecam(model, x, acts, targets, memory_format="nhwc")
