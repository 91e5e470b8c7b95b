"""CASE on networks small enough to compute the expected maps by hand."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import casekit as ck
from casekit.cam import methods as M


class GapLinear(nn.Module):
    """logits = W · mean_ij(f(A)) with A = the input itself (layer "features" = identity).

    With f(A) = A the gradient ∂S_k/∂A_c(i,j) = W[k,c] / (h·w) is constant in space;
    with f(A) = A²/2 it is W[k,c] · A_c(i,j) / (h·w).
    """

    def __init__(self, W: torch.Tensor, quadratic: bool = False) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(W.shape[1], W.shape[0], bias=False)
        self.quadratic = quadratic
        with torch.no_grad():
            self.fc.weight.copy_(W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        if self.quadratic:
            a = a * a / 2
        return self.fc(a.mean(dim=(2, 3)))


# A: 3 channels of 2×2
A = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0]],
        [[4.0, 0.0], [0.0, 0.0]],
        [[0.0, 1.0], [1.0, 0.0]],
    ]
)[None]


def test_case_pooled_by_hand():
    # class 0: W0 = (2, 1, 0); class 1 (contrast): W1 = (0, 1, 0); class 2: W2 = (0, 0, 1)
    W = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    model = GapLinear(W)
    # pooled gradients: w_u = W0/4 = (.5, .25, 0), w̄ = W1/4 = (0, .25, 0)
    # w⊥ = w_u − (w_u·w̄)/(‖w̄‖² + 1e-8) w̄ = (.5, .25·1e-8/(.0625+1e-8), 0) ≈ (.5, 4e-8, 0)
    # map = ReLU(.5·A0 + 4e-8·A1) = .5·[[1,2],[3,4]] (+ ≤1.6e-7); min-max → [[0,1/3],[2/3,1]]
    maps = ck.saliency(model, A, "features", "case", torch.tensor([0]), torch.tensor([[[1]]]))
    expected = torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]])
    torch.testing.assert_close(maps[0, 0], expected, atol=1e-6, rtol=0)
    # Grad-CAM for comparison: ReLU(.5·A0 + .25·A1) = [[1.5, 1], [1.5, 2]] → [[.5, 0], [.5, 1]]
    gc = ck.saliency(model, A, "features", "gradcam", torch.tensor([0]))
    torch.testing.assert_close(gc[0, 0], torch.tensor([[0.5, 0.0], [0.5, 1.0]]), atol=1e-6, rtol=0)


def test_case_two_contrast_classes_by_hand():
    # target 0: W0 = (1, 1, 1); contrasts 1, 2: W1 = (1, 0, 0), W2 = (0, 1, 0)
    W = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    model = GapLinear(W)
    # w_u = (1,1,1)/4, w̄ = ((1,0,0)+(0,1,0))/2/4 = (.125,.125,0); w_u·w̄ = .0625, ‖w̄‖² = .03125
    # w⊥ = (.25,.25,.25) − 2·(.125,.125,0) = (0, 0, .25)  → map = .25·A2 = [[0,.25],[.25,0]] → [[0,1],[1,0]]
    maps = ck.saliency(model, A, "features", "case", torch.tensor([0]), torch.tensor([[[1, 2]]]))
    torch.testing.assert_close(maps[0, 0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]), atol=1e-6, rtol=0)


def test_case_full_projection_by_hand():
    # quadratic head: g_k,c(i,j) = W[k,c]·A_c(i,j)/4
    W = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    model = GapLinear(W, quadratic=True)
    # g_u = (A0, A1, 0)/4, ḡ = (A0, 0, 0)/4 over the flattened 12 entries
    # g_u·ḡ = ‖A0‖²/16 = ‖ḡ‖²  → g⊥ ≈ g_u − ḡ = (0, A1/4, 0) (up to the 1e-8 term)
    # w⊥ = pooled g⊥ = (0, mean(A1)/4, 0) = (0, .25, 0)  → map = .25·A1 = [[1,0],[0,0]]
    maps = ck.saliency(model, A, "features", "case", torch.tensor([0]), torch.tensor([[[1]]]),
                       projection="full")
    torch.testing.assert_close(maps[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]), atol=1e-6, rtol=0)


def test_full_and_pooled_projections_differ_by_hand():
    # quadratic head, target W0 = (1, 1, 0), contrast W1 = (1, 0, 1); g_k,c = W[k,c]·A_c/4
    W = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    model = GapLinear(W, quadratic=True)
    t, c = torch.tensor([0]), torch.tensor([[[1]]])
    # pooled: w_u = (2.5, 1, 0)/4, w̄ = (2.5, 0, .5)/4, coef = 6.25/6.5 = 25/26
    #   w⊥ ∝ (2.5/26, 1, −12.5/26): map ∝ [[2.5/26 + 4, <0], [<0, 10/26]] → (1,1) = 10/106.5
    pooled = ck.saliency(model, A, "features", "case", t, c)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([[1.0, 0.0], [0.0, 10 / 106.5]]), atol=1e-6, rtol=0)
    # full: flattened g_u·ḡ = ‖A0‖²/16 = 30/16, ‖ḡ‖² = (‖A0‖² + ‖A2‖²)/16 = 32/16, coef = 15/16
    #   w⊥ = pooled(g_u − 15/16 ḡ) ∝ (2.5/16, 1, −7.5/16): map ∝ [[4.15625, <0], [0, .625]]
    full = ck.saliency(model, A, "features", "case", t, c, projection="full")
    torch.testing.assert_close(full[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.625 / 4.15625]]), atol=1e-6,
                               rtol=0)


def test_orthogonal_contrast_equals_gradcam():
    W = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])  # W0 ⟂ W1
    model = GapLinear(W)
    case = ck.saliency(model, A, "features", "case", torch.tensor([0]), torch.tensor([[[1]]]))
    gc = ck.saliency(model, A, "features", "gradcam", torch.tensor([0]))
    torch.testing.assert_close(case, gc, atol=0, rtol=0)


def test_contrast_equal_to_target_gives_zero_map():
    W = torch.tensor([[2.0, 1.0, 0.5], [0.0, 1.0, 0.0]])
    model = GapLinear(W)
    maps = ck.saliency(model, A, "features", "case", torch.tensor([0]), torch.tensor([[[0]]]))
    assert torch.equal(maps, torch.zeros_like(maps))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=12).eval()


def test_contrast_equal_to_target_zero_on_resnet(resnet):
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    t = resnet(x).topk(2).indices
    contrast = t[:, :, None].repeat(1, 1, 2)  # K = 2, both the target itself
    maps = ck.saliency(resnet, x, "layer4.1.conv2", "case", t, contrast)
    assert torch.equal(maps, torch.zeros_like(maps))


def test_projection_is_orthogonal_to_contrast_mean(resnet):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    res = ck.explain(resnet, x, "layer4.1.conv2", "gradcam", torch.arange(12).repeat(2, 1))
    # gradients for all 12 classes via the engine's own batched backward
    from casekit.cam.engine import class_gradients
    from casekit.cam.hooks import LayerCapture, evaluation_mode

    with evaluation_mode(resnet):
        cap = LayerCapture(resnet.layer4[1].conv2, "layer4.1.conv2", grad_from_layer=True)
        with cap.attached():
            torch.set_grad_enabled(False)
            logits = resnet(x)
        G = class_gradients(logits, cap.activations, torch.arange(12).repeat(2, 1))  # [2, 12, C, h, w]
    G = G.detach()
    target, contrast = G[:, :1], G[:, 1:4][:, None]  # class 0 vs classes 1-3
    for projection in ("pooled", "full"):
        w_perp = M.case_weights(target, contrast, projection)  # [B, 1, C]
        if projection == "pooled":
            w_bar = contrast.mean(dim=(-2, -1)).mean(dim=2)
            cos = (w_perp * w_bar).sum(-1) / (w_perp.norm(dim=-1) * w_bar.norm(dim=-1))
            assert float(cos.abs().max()) < 1e-4
        assert w_perp.abs().max() > 0
    assert res.maps["gradcam"].shape == (2, 12, 64, 64)


def test_case_matches_reference_formula_on_resnet(resnet):
    """Engine output equals ReLU(Σ w⊥ A) built from explicitly computed per-class gradients."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 64, 64)
    layer = resnet.layer4[1].conv2
    t = torch.tensor([[3], [5]])
    contrast = torch.tensor([[[1, 7]], [[0, 2]]])
    maps = ck.saliency(resnet, x, "layer4.1.conv2", "case", t, contrast)
    # reference: the authors' 1+K separate passes, one image at a time
    for b in range(2):
        acts = {}
        h = layer.register_forward_hook(lambda m, i, o: acts.__setitem__("A", o))
        grads = []
        for cls in [t[b, 0], *contrast[b, 0]]:
            xb = x[b : b + 1].clone().requires_grad_(True)
            out = resnet(xb)
            (g,) = torch.autograd.grad(out[0, cls], acts["A"])
            grads.append(g[0].mean(dim=(1, 2)))
        h.remove()
        A_b = acts["A"][0].detach()
        w_u, w_bar = grads[0], torch.stack(grads[1:]).mean(0)
        w_perp = w_u - (w_u @ w_bar) / (w_bar @ w_bar + 1e-8) * w_bar
        cam = torch.relu(torch.einsum("c,chw->hw", w_perp, A_b))[None, None]
        cam = torch.nn.functional.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        torch.testing.assert_close(maps[b, 0], cam, atol=2e-5, rtol=0)


def test_case_vectors_by_hand():
    W = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    model = GapLinear(W)
    v = ck.case_vectors(model, A, "features", torch.tensor([0]), torch.tensor([[[1, 2]]]))
    # w_u = (2,1,0)/4; w_v = (0,1,0)/4 and (0,0,1)/4; w̄ = (0, .125, .125)
    torch.testing.assert_close(v.w_target[0, 0], torch.tensor([0.5, 0.25, 0.0]))
    torch.testing.assert_close(v.w_contrast[0, 0], torch.tensor([[0.0, 0.25, 0.0], [0.0, 0.0, 0.25]]))
    torch.testing.assert_close(v.w_mean[0, 0], torch.tensor([0.0, 0.125, 0.125]))
    # w_u·w̄ = 1/32, ‖w̄‖² = 1/32 → w⊥ = w_u − w̄ = (.5, .125, −.125)
    torch.testing.assert_close(v.w_perp[0, 0], torch.tensor([0.5, 0.125, -0.125]), atol=1e-6, rtol=0)
    # cos(w_u, w̄) = (1/32) / (√(5/16)·√(1/32)); kept = ‖w⊥‖/‖w_u‖ = √(.28125)/√(.3125)
    torch.testing.assert_close(v.cosine[0, 0], torch.tensor((1 / 32) / ((5 / 16) ** 0.5 * (1 / 32) ** 0.5)))
    torch.testing.assert_close(v.kept[0, 0], torch.tensor((0.28125 / 0.3125) ** 0.5))
    assert float((v.w_perp * v.w_mean).sum()) == pytest.approx(0.0, abs=1e-7)
    # maps agree with the engine
    torch.testing.assert_close(v.case,
                               ck.saliency(model, A, "features", "case", torch.tensor([0]),
                                           torch.tensor([[[1, 2]]])))
    torch.testing.assert_close(v.gradcam, ck.saliency(model, A, "features", "gradcam", torch.tensor([0])))
    # the removed direction: ReLU(.125·A1 + .125·A2) = .125·[[4,1],[1,0]] → [[1, .25], [.25, 0]]
    torch.testing.assert_close(v.contrast_gradcam[0, 0], torch.tensor([[1.0, 0.25], [0.25, 0.0]]))


# --------------------------------------------------------------- Grad-CAM of the logit difference (extension)


def test_gradcam_diff_by_hand():
    W = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    model = GapLinear(W)
    # w_u − w̄ = (.5, .25, 0) − (0, .25, 0) = (.5, 0, 0) → map .5·A0 → [[0, 1/3], [2/3, 1]]
    maps = ck.saliency(model, A, "features", "gradcam-diff", torch.tensor([0]), torch.tensor([[[1]]]))
    torch.testing.assert_close(maps[0, 0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]), atol=1e-6, rtol=0)
    # two contrast classes: w̄ = (0, .125, .125) → w_u − w̄ = (.5, .125, −.125)
    # map = .5·A0 + .125·A1 − .125·A2 = [[1, .875], [1.375, 2]] → (m − .875)/1.125 = [[1/9, 0], [4/9, 1]]
    maps = ck.saliency(model, A, "features", "Grad-CAM (diff)", torch.tensor([0]), torch.tensor([[[1, 2]]]))
    torch.testing.assert_close(maps[0, 0], torch.tensor([[1 / 9, 0.0], [4 / 9, 1.0]]), atol=1e-6, rtol=0)


class _DifferenceLogits(nn.Module):
    """Wraps a classifier: output column u is ``S_u − mean_{v ∈ V[u]} S_v`` for a contrast table
    ``V [classes, K]``."""

    def __init__(self, base: nn.Module, table: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = self.base(x)
        return S - S[:, self.table].mean(dim=-1)


def test_gradcam_diff_equals_gradcam_of_the_difference_logit():
    torch.manual_seed(0)
    base = nn.Sequential()
    base.add_module("stem", nn.Conv2d(3, 4, 3, padding=1))
    base.add_module("features", nn.Conv2d(4, 6, 3, padding=1))
    base.add_module("act", nn.Softplus())  # spatially varying gradients
    base.add_module("pool", nn.AdaptiveAvgPool2d(2))
    base.add_module("flat", nn.Flatten())
    base.add_module("fc", nn.Linear(24, 5))
    base.eval()
    table = torch.tensor([[1, 2], [2, 3], [3, 4], [4, 0], [0, 1]])
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([[0, 3], [2, 4], [1, 0]])
    ours = ck.explain(base, x, "features", ["gradcam-diff", "gradcam", "case"], t, table[t])
    ref = ck.saliency(_DifferenceLogits(base, table), x, "base.features", "gradcam", t)
    torch.testing.assert_close(ours.maps["gradcam-diff"], ref, atol=1e-5, rtol=0)
    assert (ours.maps["gradcam-diff"] - ours.maps["gradcam"]).abs().max() > 0.05  # not Grad-CAM in disguise
    assert (ours.maps["gradcam-diff"] - ours.maps["case"]).abs().max() > 0.05  # nor CASE


def test_gradcam_diff_shares_the_single_forward_pass():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=12).eval()
    x = torch.randn(2, 3, 64, 64)
    t = model(x).topk(2).indices
    c = (t[..., None] + torch.tensor([1, 2])) % 12
    calls = []
    h = model.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))
    res = ck.explain(model, x, "layer3", ["case", "gradcam-diff"], t, c)
    h.remove()
    assert calls == [2]
    v = ck.case_vectors(model, x, "layer3", t, c)
    expected = ck.finalize_maps(torch.einsum("btc,bchw->bthw", v.w_target - v.w_mean, res.activations),
                                (64, 64))
    torch.testing.assert_close(res.maps["gradcam-diff"], expected, atol=1e-5, rtol=0)


def test_case_geometry_by_hand():
    w_u = torch.tensor([[[3.0, 4.0, 0.0]], [[1.0, 0.0, 0.0]]])  # [B=2, T=1, C=3]
    w_bar = torch.tensor([[[1.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]]])
    kept, cosine = M.case_geometry(w_u, w_bar)
    # image 0: w⊥ = (0, 4, 0): kept = 4/5, cos = 3/5; image 1: w_u ∥ w̄: kept = 0, cos = 1
    torch.testing.assert_close(kept, torch.tensor([[0.8], [0.0]]))
    torch.testing.assert_close(cosine, torch.tensor([[0.6], [1.0]]))
