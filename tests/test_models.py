"""casekit.subjects.models: the paper's four models and their layers, offline weight handling, the CIFAR-10
reference ResNets."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from conftest import REFERENCE_CIFAR10, needs_shared_cifar10
from PIL import Image

import casekit as ck
from casekit.subjects import models as M

# The attribution layers' output shapes [C, h, w] at 224×224 (reference-implementation notes).
PAPER_SHAPES = {
    "resnet50": {"final_conv": (2048, 7, 7)},
    "vgg19_bn": {"final_conv": (512, 14, 14)},
    "densenet201": {"final_conv": (32, 7, 7), "norm5": (1920, 7, 7)},
    "convnext_large": {"final_conv": (1536, 7, 7)},
}


def _layer_shapes(model: torch.nn.Module, layers: dict[str, str], size: int,
                  device: str) -> tuple[dict, torch.Tensor]:
    named = dict(model.named_modules())
    shapes: dict[str, tuple] = {}
    handles = [
        named[name].register_forward_hook(
            lambda m, i, o, role=role: shapes.__setitem__(role, tuple(o.shape[1:])))
        for role, name in layers.items()
    ]
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    return shapes, out


@pytest.fixture
def no_download(monkeypatch):
    """Fail loudly if torch.hub tries to download (reading its cache is fine)."""

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a download was attempted: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A seeded untrained ResNet-50 state dict on disk, named like torchvision's IMAGENET1K_V1 file."""
    torch.manual_seed(123)
    model = torchvision.models.resnet50()
    path = tmp_path_factory.mktemp("weights") / "resnet50-0676ba61.pth"
    torch.save(model.state_dict(), path)
    return path, {k: model.state_dict()[k].clone() for k in ("conv1.weight", "layer4.2.conv3.weight",
                                                             "fc.weight")}


@pytest.mark.parametrize("name", list(PAPER_SHAPES))
def test_paper_layers_resolve_with_the_papers_shapes(name):
    model, layers, _ = M.load_paper_model(name, weights=None, device="meta")
    assert layers == M.PAPER_MODELS[name].layers and set(layers) == set(PAPER_SHAPES[name])
    assert not model.training
    shapes, out = _layer_shapes(model, layers, 224, "meta")
    assert shapes == PAPER_SHAPES[name]
    assert tuple(out.shape) == (1, 1000)


def test_paper_table_entries():
    assert M.PAPER_MODELS["densenet201"].layers == {
        "final_conv": "features.denseblock4.denselayer32.conv2",
        "norm5": "features.norm5",
    }
    assert {k: v.builder for k, v in M.PAPER_MODELS.items()} == {
        "resnet50": "resnet50",
        "vgg19_bn": "vgg19_bn",
        "densenet201": "densenet201",
        "convnext_large": "convnext_large",
    }
    assert M.paper_model_spec("ResNet-50")[0] == "resnet50"
    assert M.paper_model_spec("VGG-19")[0] == "vgg19_bn"
    assert M.paper_model_spec("convnext-large")[0] == "convnext_large"


@pytest.mark.parametrize("name", list(PAPER_SHAPES))
def test_timm_equivalents_resolve_with_the_same_shapes(name):
    model, layers, _ = M.load_paper_model(name, weights=None, device="meta", source="timm")
    assert set(layers) == set(PAPER_SHAPES[name])
    shapes, _ = _layer_shapes(model, layers, 224, "meta")
    assert shapes == PAPER_SHAPES[name]


def test_preprocess_is_resize256_centercrop224_imagenet_normalisation():
    _, _, preprocess = M.load_paper_model("resnet50", weights=None, device="meta")
    image = Image.new("RGB", (400, 300), (255, 0, 128))
    x = preprocess(image)
    assert x.shape == (3, 224, 224)
    expected = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225])
    torch.testing.assert_close(x.mean(dim=(1, 2)), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(x.amax(dim=(1, 2)), x.amin(dim=(1, 2)))
    # Resize(256) scales the shorter side: a 300x400 image becomes 256x341, then the centre 224x224 is kept.
    ramp = Image.fromarray((torch.arange(400).repeat(300, 1) % 256).to(torch.uint8).numpy()).convert("RGB")
    assert preprocess(ramp).shape == (3, 224, 224)


@pytest.mark.parametrize("name", list(PAPER_SHAPES))
def test_missing_weights_raise_one_clear_error_without_downloading(name, tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CASEKIT_OFFLINE", "1")  # downloads off: casekit must not even try
    entry, path = M.torchvision_weights_file(M.PAPER_MODELS[name].builder)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(entry.url)
    with pytest.raises(M.MissingWeightsError) as info:
        M.load_paper_model(name)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for needle in (path.name, str(path.parent), entry.url, "TORCH_HOME", "weights=None", "did not download",
                   "CASEKIT_OFFLINE", str(tmp_path / "data" / "torchvision")):
        assert needle in msg, needle
    assert not path.exists()


def test_offline_machine_gets_the_clear_message(tmp_path, monkeypatch, no_download):
    """No network at all (every outbound connection fails): the same clear message, naming why, no
    download."""
    import socket

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("CASEKIT_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(M.MissingWeightsError) as info:
        M.load_paper_model("resnet50")
    msg = str(info.value)
    for needle in ("resnet50-0676ba61.pth", "download.pytorch.org", "did not download", "offline",
                   "Network is unreachable"):
        assert needle in msg, needle
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth").exists()


def test_online_uses_torchvisions_download_with_its_hash_check(tmp_path, monkeypatch, resnet50_file):
    import torchvision.models._api as api

    from casekit.subjects import fetch

    source, expected = resnet50_file
    calls = []

    def fake_download(url, *args, **kwargs):  # stands in for torch.hub.load_state_dict_from_url
        calls.append((url, kwargs))
        return torch.load(source, weights_only=True)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("CASEKIT_OFFLINE", raising=False)
    monkeypatch.setattr(fetch, "reachable", lambda url, timeout=10.0: None)
    monkeypatch.setattr(api, "load_state_dict_from_url", fake_download)
    model, _, _ = M.load_paper_model("resnet50")
    assert [c[0] for c in calls] == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]
    assert calls[0][1].get("check_hash") is True
    torch.testing.assert_close(model.fc.weight, expected["fc.weight"], rtol=0, atol=0)

    def failing(url, *args, **kwargs):
        raise RuntimeError('invalid hash value (expected "0676ba61", got "deadbeef")')

    monkeypatch.setattr(api, "load_state_dict_from_url", failing)
    with pytest.raises(M.MissingWeightsError, match="invalid hash value"):
        M.load_paper_model("resnet50")


def test_weights_copied_into_the_data_folder_are_hash_checked(tmp_path, monkeypatch, no_download,
                                                              resnet50_file):
    source, _ = resnet50_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    (tmp_path / "data" / "torchvision").mkdir(parents=True)
    os.symlink(source, tmp_path / "data" / "torchvision" / source.name)
    # the seeded stand-in is not torchvision's file: its sha256 does not start with the name's 0676ba61
    with pytest.raises(ValueError, match="0676ba61"):
        M.load_paper_model("resnet50")


def test_weights_found_in_the_torch_hub_cache(tmp_path, monkeypatch, no_download, resnet50_file):
    source, expected = resnet50_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / source.name
    target.parent.mkdir(parents=True)
    os.symlink(source, target)
    model, layers, _ = M.load_paper_model("resnet50",
                                          weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V1)
    assert not model.training and layers == {"final_conv": "layer4.2.conv3"}
    with pytest.raises(ValueError, match="not weights of torchvision's resnet50"):
        M.load_paper_model("resnet50", weights=torchvision.models.VGG19_BN_Weights.IMAGENET1K_V1)
    for key, value in expected.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_weights_from_a_local_checkpoint_path(resnet50_file, no_download, tmp_path):
    source, expected = resnet50_file
    model, _, _ = M.load_paper_model("ResNet-50", weights=source)
    torch.testing.assert_close(model.fc.weight, expected["fc.weight"], rtol=0, atol=0)
    # a DataParallel-wrapped {"state_dict": {"module.…": …}} file loads too
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in torch.load(source, weights_only=True).items()}},
               wrapped)
    model2, _, _ = M.load_paper_model("resnet50", weights=str(wrapped))
    torch.testing.assert_close(model2.layer4[2].conv3.weight, expected["layer4.2.conv3.weight"], rtol=0,
                               atol=0)
    with pytest.raises(M.MissingWeightsError, match="does not exist"):
        M.load_paper_model("resnet50", weights=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="does not fit torchvision's vgg19_bn"):
        M.load_paper_model("vgg19_bn", weights=source)


def test_timm_weights_from_a_local_file_and_the_hf_cache(resnet50_file, tmp_path, monkeypatch):
    import huggingface_hub.constants

    source, expected = resnet50_file  # timm's resnet50 uses torchvision's parameter names
    model, layers, _ = M.load_paper_model("resnet50", weights=source, source="timm")
    assert type(model).__module__.startswith("timm.") and not model.training
    torch.testing.assert_close(model.fc.weight, expected["fc.weight"], rtol=0, atol=0)
    assert layers == {"final_conv": "layer4.2.conv3"}
    shapes, out = _layer_shapes(model, layers, 64, "cpu")  # the role resolves on the real timm model
    assert shapes == {"final_conv": (2048, 2, 2)} and out.shape == (1, 1000)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(M.MissingWeightsError) as info:
        M.load_paper_model("resnet50", source="timm")
    assert "timm/resnet50.tv_in1k" in str(info.value) and str(tmp_path / "hf") in str(info.value)
    snapshot = tmp_path / "hf" / "models--timm--resnet50.tv_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    os.symlink(source, snapshot / "pytorch_model.bin")
    model, _, _ = M.load_paper_model("resnet50", source="timm")
    torch.testing.assert_close(model.conv1.weight, expected["conv1.weight"], rtol=0, atol=0)


def test_densenet_legacy_key_names_are_renamed():
    old = "features.denseblock1.denselayer1.norm.1.weight"
    match = M._DENSENET_OLD_KEY.match(old)
    assert match and match.group(1) + match.group(2) == "features.denseblock1.denselayer1.norm1.weight"
    assert M._DENSENET_OLD_KEY.match("features.denseblock1.denselayer1.norm1.weight") is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown paper model 'resnet18'"):
        M.load_paper_model("resnet18", weights=None)
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        M.load_paper_model("resnet50", weights="IMAGENET1K_V9")
    with pytest.raises(TypeError, match="weights"):
        M.load_paper_model("resnet50", weights=3)
    with pytest.raises(ValueError, match="meta"):
        M.load_paper_model("resnet50", device="meta")
    with pytest.raises(ValueError, match="source"):
        M.load_paper_model("resnet50", weights=None, source="hub")


# --------------------------------------------------------------------------- CIFAR-10 reference ResNets


def test_cifar_resnet_structure_and_parameter_count():
    model = M.cifar_resnet(20)
    # He et al.'s ResNet-20 has 269,722 parameters: convs 3·16·9 + 6·16·16·9 + 16·32·9 + 5·32·32·9 + 32·64·9
    # + 5·64·64·9, BN 2·(16·7 + 32·6 + 64·6), linear 64·10 + 10; the option-A shortcut has none.
    assert sum(p.numel() for p in model.parameters()) == 269_722
    assert sum(p.numel() for p in M.cifar_resnet(56).parameters()) == 853_018
    names = dict(model.named_children())
    assert list(names) == ["conv1", "bn1", "layer1", "layer2", "layer3", "linear"]
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert {n for n, _ in model.layer3[2].named_children()} >= {"conv1", "bn1", "conv2", "bn2"}
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert M.cifar_resnet(20, num_classes=100).linear.out_features == 100
    for bad in (21, 2, "20"):
        with pytest.raises(ValueError):
            M.cifar_resnet(bad)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = M.cifar_resnet(20).layer2[0]
    x = torch.arange(16 * 4 * 4, dtype=torch.float32).view(1, 16, 4, 4)
    y = block.shortcut(x)
    assert y.shape == (1, 32, 2, 2)
    assert torch.equal(y[:, :8], torch.zeros(1, 8, 2, 2)) and torch.equal(y[:, 24:], torch.zeros(1, 8, 2, 2))
    assert torch.equal(y[0, 8:24], x[0, :, ::2, ::2])
    assert y[0, 8, 1, 1] == x[0, 0, 2, 2] == 10.0


@needs_shared_cifar10()
@pytest.mark.parametrize("depth, expected, final_conv",
                         [(20, 0.813, "layer3.2.conv2"), (56, 0.831, "layer3.8.conv2")])
def test_reference_cifar10_accuracy(depth, expected, final_conv):
    model, layers = M.load_reference_cifar10(depth)
    assert layers == {"final_conv": final_conv, "layer3": "layer3"} and not model.training
    images, labels, classes = ck.data.reference_cifar10_images()
    with torch.inference_mode():
        predictions = torch.cat([model(x).argmax(1) for x in images.split(500)])
    accuracy = (predictions == labels).double().mean().item()
    print(f"ResNet-{depth} top-1 on the 2,000 shared CIFAR-10 images: {accuracy:.2%}")
    assert abs(accuracy - expected) <= 0.01


@needs_shared_cifar10()
def test_reference_root_from_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_SHARED", str(REFERENCE_CIFAR10.parents[1]))
    _, layers = M.load_reference_cifar10(20)
    assert layers["final_conv"] == "layer3.2.conv2"
    M.load_reference_cifar10(20, root=REFERENCE_CIFAR10)


def test_reference_cifar10_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CASEKIT_OFFLINE", "1")
    with pytest.raises(M.MissingWeightsError) as info:
        M.load_reference_cifar10(56)
    msg = str(info.value)
    assert "resnet56-4bfd9763.th" in msg and str(tmp_path / "nowhere" / "reference" / "cifar10") in msg
    assert "CASEKIT_SHARED" in msg
    with pytest.raises(ValueError, match="depth"):
        M.load_reference_cifar10(32, root=tmp_path)
