"""Ablation-CAM's closed form for separable tails (casekit.cam.perturbation._SeparableHead) against the
forward-per-channel tail runner, and the cases where it must not be used."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import casekit as ck
from casekit.cam.checks import resolve_layer
from casekit.cam.perturbation import ablationcam


def _ablation(model: nn.Module, layer: str, images: torch.Tensor, tail: str) -> tuple[torch.Tensor, str]:
    model.eval()
    res = ck.explain(model, images, layer, ["gradcam"], lambda z: z.topk(2).indices)
    modes: list[str] = []
    with torch.no_grad():
        raw = ablationcam(model, resolve_layer(model, layer)[1], images, res.activations, res.logits,
                          res.targets, 32, on_mode=modes.append, tail=tail)
    return raw, modes[0]


CASES = [  # (builder, layer, input size, the mode "auto" must choose)
    (lambda: torchvision.models.resnet18(weights=None, num_classes=12), "layer4.1.conv2", 64, "separable"),
    (lambda: torchvision.models.resnet18(weights=None, num_classes=12), "layer3.0.bn1", 64, "broadcast"),
    (lambda: torchvision.models.densenet121(weights=None, num_classes=12), "features.norm5", 64, "separable"),
    (lambda: torchvision.models.densenet121(weights=None, num_classes=12),
     "features.denseblock4.denselayer16.conv2", 64, "separable"),
    (lambda: torchvision.models.vgg11_bn(weights=None, num_classes=12), "features.25", 64, "separable"),
]


@pytest.mark.parametrize("build,layer,size,mode", CASES, ids=[c[1] for c in CASES])
def test_auto_tail_equals_one_forward_per_channel(build, layer, size, mode):
    torch.manual_seed(0)
    model = build()
    x = torch.randn(2, 3, size, size)
    auto, chosen = _ablation(model, layer, x, "auto")
    repeat, forced = _ablation(model, layer, x, "repeat")
    assert chosen == mode and forced == "repeat"
    scale = float(repeat.abs().max())
    assert scale > 0
    # the closed form reproduces one forward per channel to float rounding; the broadcast tail runs the
    # same network on another batch layout (its own check allows 1e-3)
    tol = 1e-5 if mode == "separable" else 1e-3
    torch.testing.assert_close(auto, repeat, rtol=tol, atol=tol * scale)


class _Mixing(nn.Module):
    """conv → (a 1×1 conv that mixes channels | two channels summed into one head input) → pool → fc."""

    def __init__(self, mix: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mix = mix
        self.post = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 if mix == "conv" else 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        a = self.post(a) if self.mix == "conv" else a[:, :2] + a[:, 2:]
        return self.fc(a.mean((2, 3)))


@pytest.mark.parametrize("mix", ["conv", "pairs"])
def test_a_tail_that_mixes_channels_is_not_taken_for_separable(mix):
    torch.manual_seed(1)
    model, x = _Mixing(mix).eval(), torch.randn(2, 3, 8, 8)
    auto, chosen = _ablation(model, "conv", x, "auto")
    repeat, _ = _ablation(model, "conv", x, "repeat")
    assert chosen == "broadcast"
    torch.testing.assert_close(auto, repeat, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="not separable: an entry of the head's input depends on several"):
        _ablation(model, "conv", x, "separable")


class _Scaled(nn.Module):
    """A separable tail whose output is computed after the head (``2 * fc(...)``): no module returns the
    model's output, so the closed form is not used."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.fc(self.conv(x).relu().mean((2, 3)))


def test_without_a_head_module_the_tail_runner_is_used():
    torch.manual_seed(2)
    model, x = _Scaled().eval(), torch.randn(1, 3, 8, 8)
    auto, chosen = _ablation(model, "conv", x, "auto")
    repeat, _ = _ablation(model, "conv", x, "repeat")
    assert chosen == "broadcast"
    torch.testing.assert_close(auto, repeat)
    with pytest.raises(ValueError, match="no head module returns the model's output"):
        _ablation(model, "conv", x, "separable")


def test_hand_computed_separable_ablation():
    """One channel per head input, identity ReLU-free tail: S = W·mean(A) + b, so ablating channel c to
    ``min A − 1e7`` gives ``S − W[:, c]·(mean A_c − value)``, and the weight is that difference over S."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1, bias=False)
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean((2, 3)))

    model = Net().eval()
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        model.fc.weight.copy_(torch.tensor([[2.0, 1.0], [0.5, -1.0]]))
        model.fc.bias.copy_(torch.tensor([1.0, 3.0]))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # A_0 = x (mean 2.5), A_1 = −x (mean −2.5), min −4
    res = ck.explain(model, x, "conv", ["ablationcam"], torch.tensor([[0]]))
    assert res.ablation_mode == "separable"
    value = -4.0 - 1e7
    S = 2 * 2.5 + 1 * -2.5 + 1.0  # 3.5
    w0 = (S - (2 * value + 1 * -2.5 + 1.0)) / S
    w1 = (S - (2 * 2.5 + 1 * value + 1.0)) / S
    raw = w0 * x[0, 0] + w1 * -x[0, 0]
    want = ck.finalize_maps(raw[None, None], (2, 2))
    torch.testing.assert_close(res.maps["ablationcam"], want)
