"""Every registered method that names an oracle (``MethodSpec.oracle``, a class of pytorch-grad-cam 1.5.7)
against it, map by map, on torchvision ResNet-18 / DenseNet-121 / VGG-11 (``weights=None``) and a real
CIFAR-10 network; and the registry's invariants (every method has a role, a colour, a formula and a display
name)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torchvision
from conftest import needs_shared_cifar10
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_oracle import FixedAblationLayer

import casekit as ck
from casekit.cam import registry as R

WITH_ORACLE = tuple(m for m in R.all_methods() if R.REGISTRY[m].oracle)
R_MIN = 0.9999


def oracle(method: str, model, layer_name: str, images: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """The oracle's maps ``[B, T, H, W]`` (one call per image and target where its API needs it)."""
    spec = R.REGISTRY[method]
    layer = dict(model.named_modules())[layer_name]
    cls = getattr(pgc, spec.oracle)
    out = np.zeros((targets.shape[0], targets.shape[1], *images.shape[-2:]), dtype=np.float32)
    clone = lambda a: a.clone()  # noqa: E731  the layer's true output (DenseNet's in-place ReLU)
    if method == "finercam":  # the library's own choice of the k closest logits: one image, one target a call
        cam = cls(model, [layer], reshape_transform=clone)
        for b in range(targets.shape[0]):
            for t in range(targets.shape[1]):
                out[b, t] = cam(images[b:b + 1], target_idx=int(targets[b, t]),
                                alpha=spec.params["alpha"])[0]
        return out
    kwargs = {"reshape_transform": clone}
    if method == "ablationcam":
        kwargs.update(ablation_layer=FixedAblationLayer(), batch_size=128)
    for t in range(targets.shape[1]):
        with cls(model=model, target_layers=[layer], **kwargs) as cam:
            if method == "scorecam":
                cam.batch_size = 128
            out[:, t] = cam(images, [ClassifierOutputTarget(int(c)) for c in targets[:, t]])
    return out


def min_r(ours: np.ndarray, ref: np.ndarray) -> float:
    rs = []
    flat = ours.shape[-2] * ours.shape[-1]
    for a, o in zip(ours.reshape(-1, flat), ref.reshape(-1, flat)):
        if a.max() == 0 or o.max() - o.min() < 1e-6:
            assert a.max() == 0 and o.max() < 1e-6, "one map is empty, the other not"
            continue
        rs.append(np.corrcoef(a, o)[0, 1])
    assert rs, "every map is empty in both: the comparison says nothing (choose another layer)"
    return float(min(rs))


MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=20), "layer4.1.conv2", 64),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None, num_classes=20), "features.norm5",
                    64),
    "vgg11": (lambda: torchvision.models.vgg11(weights=None, num_classes=20), "features.18", 64),
}


@pytest.fixture(scope="module")
def models():
    out = {}
    for name, (build, layer, size) in MODELS.items():
        torch.manual_seed(0)
        out[name] = (build().eval(), layer, size)
    return out


def _case(method: str, model, layer: str, images: torch.Tensor) -> None:
    targets = model(images).topk(2, dim=1).indices
    ours = ck.explain(model, images, layer, [method], targets).maps[method].numpy()
    r = min_r(ours, oracle(method, model, layer, images, targets))
    assert r >= R_MIN, f"{method} on {type(model).__name__}/{layer}: min Pearson r = {r:.6f} < {R_MIN}"


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", WITH_ORACLE)
def test_every_method_with_an_oracle_matches_it(models, name, method):
    model, layer, size = models[name]
    gradient_free = not R.REGISTRY[method].needs_gradients
    if gradient_free and name != "resnet18":
        pytest.skip("the gradient-free oracles cost one forward per channel and image: test_oracle.py runs "
                    "them on ResNet-18 and DenseNet-121 already")
    torch.manual_seed(1)
    _case(method, model, layer, torch.randn(1 if gradient_free else 2, 3, size, size))


@needs_shared_cifar10()
@pytest.mark.parametrize("method", [m for m in WITH_ORACLE if R.REGISTRY[m].needs_gradients])
def test_every_gradient_method_with_an_oracle_matches_it_on_a_real_cifar10_network(method):
    model, info = ck.reference.model("resnet20")
    raw, _ = ck.reference.images()
    images = ck.reference.normalize(raw[::400][:4], info)
    _case(method, model, info["layers"]["final_conv"], images)


def test_the_three_extensions_name_their_oracle():
    assert {R.REGISTRY[m].oracle for m in ("hirescam", "xgradcam", "finercam")} == {"HiResCAM", "XGradCAM",
                                                                                      "FinerCAM"}


def test_registry_invariants():
    names = R.all_methods()
    assert names[:6] == R.METHODS == ("gradcam", "gradcam++", "scorecam", "ablationcam", "layercam", "case")
    assert R.PAPER_BASELINES == tuple(m for m in R.METHODS if m != "case") and R.PROPOSED == ("case",)
    colours = []
    for m in names:
        s = R.REGISTRY[m]
        assert s.role in R.ROLES and s.display and s.formula, m
        assert re.fullmatch(r"#[0-9a-f]{6}", s.colour), (m, s.colour)
        assert s.paper == (m in R.METHODS)
        assert not (s.role == "extension" and s.paper)
        assert R.canonical_method(s.display) == m
        colours.append(s.colour)
    assert len(set(colours)) == len(colours), "two methods share a colour"
    assert R.EXTENSION_METHODS == tuple(m for m in names if m not in R.METHODS)
    assert R.GRADIENT_METHODS == {m for m in names if R.REGISTRY[m].needs_gradients}
    assert R.CONTRAST_METHODS == {m for m in names if R.REGISTRY[m].needs_contrast}
