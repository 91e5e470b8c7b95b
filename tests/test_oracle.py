"""casekit's five baselines against pytorch-grad-cam 1.5 (the library the paper used), map by map.

Two known defects of the oracle are neutralised so that the comparison is of
definitions, not of accidents:

* On the CPU, pytorch-grad-cam stores a layer's output by reference, so an
  in-place op after the layer (DenseNet applies ``relu_`` to ``norm5``)
  silently changes the stored activations.  A cloning ``reshape_transform``
  makes it store the layer's true output (test ``test_oracle_aliasing_on_cpu``
  shows the effect).
* Its ``AblationLayer`` lowers the ablation value by a further 1e7 for each row
  already ablated in the same batch when the activation minimum is not 0, so
  the weights depend on ``batch_size``.  ``FixedAblationLayer`` below applies
  the value as defined; ``test_oracle_ablation_drift`` demonstrates the drift.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision
from conftest import needs_shared_cifar10
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.ablation_layer import AblationLayerVit
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import casekit as ck
from casekit.bench import _pgc

ORACLES = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}


# pytorch-grad-cam's AblationLayer with the value computed once per image (0 if min A = 0, else min A − 1e7);
# shared with the benchmark so that both compare against the same oracle.
FixedAblationLayer = _pgc()[2]


class FixedAblationLayerVit(AblationLayerVit):
    """pytorch-grad-cam's token-layout ablation (channel c of every token) with the value computed once."""

    def __call__(self, x):
        output = self.activations.transpose(1, len(self.activations.shape) - 1)
        low = torch.min(output)
        value = 0.0 if low == 0 else low - 1e7
        for i in range(output.size(0)):
            output[i, self.indices[i], :] = value
        return output.transpose(len(output.shape) - 1, 1)


def oracle_maps(method: str, model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                reshape_transform=None, ablation_layer=FixedAblationLayer) -> np.ndarray:
    """pytorch-grad-cam maps [B, T, H, W], one call per target column (its one-target-per-image API)."""
    out = np.zeros((targets.shape[0], targets.shape[1], *images.shape[-2:]), dtype=np.float32)
    for t in range(targets.shape[1]):
        kwargs = {"reshape_transform": reshape_transform or (lambda a: a.clone())}
        if method == "ablationcam":
            kwargs.update(ablation_layer=ablation_layer(), batch_size=128)
        with ORACLES[method](model=model, target_layers=[layer], **kwargs) as cam:
            if method == "scorecam":
                cam.batch_size = 128
            out[:, t] = cam(images, [ClassifierOutputTarget(int(c)) for c in targets[:, t]])
    return out


def assert_maps_agree(ours: np.ndarray, ref: np.ndarray, label: str, r_min: float = 0.99) -> None:
    """Per image and target: Pearson r >= r_min; a map that is all zero must be all zero in both."""
    for b in range(ours.shape[0]):
        for t in range(ours.shape[1]):
            a, o = ours[b, t].ravel(), ref[b, t].ravel()
            if a.max() == 0 or o.max() - o.min() < 1e-6:
                assert a.max() == 0 and o.max() < 1e-6, (f"{label} b={b} t={t}: one map is empty, "
                                                         "the other not")
                continue
            r = np.corrcoef(a, o)[0, 1]
            assert r >= r_min, f"{label} b={b} t={t}: Pearson r = {r:.4f} < {r_min}"


GRADIENT_BASED = ("gradcam", "gradcam++", "layercam")
GRADIENT_FREE = ("scorecam", "ablationcam")


def _check_all(model, layer_name, images, methods=tuple(ORACLES), n_targets=2):
    model.eval()
    targets = model(images).topk(n_targets, dim=1).indices
    layer = dict(model.named_modules())[layer_name]
    result = ck.explain(model, images, layer_name, list(methods), targets)
    for m in methods:
        ours = result.maps[m].numpy()
        assert ours.shape == (images.shape[0], n_targets, *images.shape[-2:])
        assert_maps_agree(ours, oracle_maps(m, model, layer, images, targets),
                          f"{type(model).__name__}/{layer_name}/{m}")
    return result


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=20).eval()


@pytest.fixture(scope="module")
def densenet121():
    torch.manual_seed(0)
    return torchvision.models.densenet121(weights=None, num_classes=20).eval()


@pytest.mark.parametrize("layer", ["layer4", "layer4.1.conv2", "layer3.0.bn1"])
def test_oracle_resnet18_gradient_methods(resnet18, layer):
    torch.manual_seed(1)
    _check_all(resnet18, layer, torch.randn(2, 3, 96, 96), GRADIENT_BASED)


@pytest.mark.parametrize("layer,size", [("layer4", 64), ("layer3.0.bn1", 80)])
def test_oracle_resnet18_gradient_free(resnet18, layer, size):
    # one image: the oracle needs C full forward passes per image and target
    torch.manual_seed(1)
    result = _check_all(resnet18, layer, torch.randn(1, 3, size, size), GRADIENT_FREE)
    # layer4's output reaches fc through pooling only: closed form; after layer3.0.bn1 convolutions follow,
    # and the residual additions broadcast over the ablated batch
    assert result.ablation_mode == {"layer4": "separable", "layer3.0.bn1": "broadcast"}[layer]


def test_oracle_densenet121_conv2(densenet121):
    torch.manual_seed(2)
    images = torch.randn(2, 3, 96, 96)
    _check_all(densenet121, "features.denseblock4.denselayer16.conv2", images, GRADIENT_BASED)
    result = _check_all(densenet121, "features.denseblock4.denselayer16.conv2", images[:1], GRADIENT_FREE)
    assert result.ablation_mode == "separable"  # concatenated, then norm5, ReLU, pooling: channel by channel


def test_oracle_densenet121_norm5(densenet121):
    torch.manual_seed(3)
    images = torch.randn(2, 3, 64, 64)
    _check_all(densenet121, "features.norm5", images, GRADIENT_BASED)
    # the gradient-free methods cost 1024 forwards per image and target in the oracle: one of each
    result = _check_all(densenet121, "features.norm5", images[:1], GRADIENT_FREE, n_targets=1)
    assert result.ablation_mode == "separable"  # ReLU and pooling after norm5: channel by channel


@needs_shared_cifar10()
@pytest.mark.parametrize("layer", ["layer3", "layer3.2.conv2"])
def test_oracle_real_cifar10_resnet20(layer):
    model, _ = ck.models.load_reference_cifar10(depth=20)
    images, labels, _ = ck.data.reference_cifar10_images()
    images = images[::250][:8]
    _check_all(model, layer, images, GRADIENT_BASED)
    _check_all(model, layer, images[:2], GRADIENT_FREE)


def test_oracle_aliasing_on_cpu(densenet121):
    """Without the cloning transform, pytorch-grad-cam on the CPU reads norm5 after DenseNet's in-place
    ReLU."""
    torch.manual_seed(3)
    images = torch.randn(2, 3, 64, 64)
    targets = densenet121(images).topk(1).indices
    ours = ck.saliency(densenet121, images, "features.norm5", "gradcam", targets)
    with GradCAM(model=densenet121, target_layers=[densenet121.features.norm5]) as cam:
        stock = cam(images, [ClassifierOutputTarget(int(c)) for c in targets[:, 0]])
    stock_r = min(np.corrcoef(ours[b, 0].numpy().ravel(), stock[b].ravel())[0, 1] for b in range(2))
    assert stock_r < 0.999, "expected the stock oracle to differ (aliased post-ReLU activations)"
    # casekit's own activations are norm5's true output, negative values included
    res = ck.explain(densenet121, images, "features.norm5", "gradcam", targets)
    assert float(res.activations.min()) < 0


def test_oracle_ablation_drift():
    """Stock pytorch-grad-cam's Ablation-CAM depends on its batch_size when min A != 0; casekit's does not."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 40, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(40, 5)).eval()
    images = torch.randn(1, 3, 12, 12)
    target = [ClassifierOutputTarget(int(model(images).argmax()))]
    stock = {}
    for bs in (1, 32):
        with AblationCAM(model=model, target_layers=[model[0]], batch_size=bs) as cam:
            stock[bs] = cam(images, target)[0]
    assert np.corrcoef(stock[1].ravel(), stock[32].ravel())[0, 1] < 0.99
    t = torch.tensor([[target[0].category]])
    ours = {bs: ck.saliency(model, images, "0", "ablationcam", t, batch_size=bs)[0, 0] for bs in (1, 7, 64)}
    torch.testing.assert_close(ours[1], ours[64], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[7], ours[64], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours[1].numpy(), stock[1], atol=1e-4)  # batch 1: no drift in the oracle either


def vit_grid(tokens: torch.Tensor) -> torch.Tensor:
    """DeiT at 64×64 with 16×16 patches: drop the class token, patch tokens [B, 16, C] → [B, C, 4, 4]."""
    return tokens[:, 1:, :].reshape(tokens.size(0), 4, 4, tokens.size(2)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=20).eval()


@pytest.mark.parametrize("methods,n_images", [(GRADIENT_BASED, 2), (GRADIENT_FREE, 1)])
def test_oracle_vit_reshape_transform(deit, methods, n_images):
    """A transformer's token layer through ``reshape_transform``, map for map against pytorch-grad-cam's."""
    torch.manual_seed(6)
    images = torch.randn(n_images, 3, 64, 64)
    layer_name = "blocks.11.norm1"
    targets = deit(images).topk(2, dim=1).indices
    layer = dict(deit.named_modules())[layer_name]
    result = ck.explain(deit, images, layer_name, list(methods), targets, reshape_transform=vit_grid)
    assert result.activations.shape == (n_images, 192, 4, 4)
    for m in methods:
        ref = oracle_maps(m, deit, layer, images, targets, reshape_transform=vit_grid,
                          ablation_layer=FixedAblationLayerVit)
        ours = result.maps[m].numpy()
        assert ours.max() > 0
        assert_maps_agree(ours, ref, f"deit/{layer_name}/{m}")
