"""ck.reference: the pretrained CIFAR-10 networks (architectures, layers, accuracies, safe loading), the
CIFAR-10 test images, and the engine against pytorch-grad-cam on the DenseNet-BC-40 and the ShuffleNetV2."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE_CIFAR10, needs_shared_cifar10
from test_oracle import GRADIENT_BASED, GRADIENT_FREE, _check_all

import casekit as ck
from casekit.subjects import cifar_nets as N
from casekit.subjects import reference as R
from casekit.subjects.data import MissingDataError

# role → output shape [C, h, w] at 32×32 (shared/reference/cifar10/README.md)
SHAPES = {
    "resnet20": {"final_conv": (64, 8, 8)},
    "resnet56": {"final_conv": (64, 8, 8)},
    "densenet40": {"final_conv": (132, 8, 8), "norm5": (132, 8, 8)},
    "shufflenet": {"final_conv": (1024, 4, 4), "norm5": (1024, 4, 4)},
    "lenet": {"final_conv": (16, 10, 10)},
}
# parameters: ResNets 0.27 M / 0.85 M, DenseNet-BC-40-12 0.18 M, ShuffleNetV2 ×0.5 0.35 M, LeNet 62 k
PARAMETERS = {"resnet20": 269_722, "resnet56": 853_018, "densenet40": 176_122, "shufflenet": 352_042,
              "lenet": 62_006}


def _shapes(model, layers):
    named, out = dict(model.named_modules()), {}
    handles = [named[n].register_forward_hook(lambda m, i, o, r=r: out.__setitem__(r, tuple(o.shape[1:])))
               for r, n in layers.items()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("name", list(R.NETWORKS))
def test_architecture_layers_and_parameter_count(name):
    spec = R.NETWORKS[name]
    model = spec.build().eval()
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    assert _shapes(model, spec.layers) == SHAPES[name]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert N.channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_dense_layer_keeps_its_input_first_and_shufflenet_units_their_halves():
    torch.manual_seed(0)
    block = N.DenseNetBC().block1.eval()
    x = torch.randn(1, 24, 8, 8)
    out = block.layer[0](x)
    assert out.shape == (1, 36, 8, 8) and torch.equal(out[:, :24], x)
    # stride 1: the first half passes unchanged, then the shuffle
    unit = N.ShuffleNetV2Cifar().stage2[1].eval()
    y = torch.randn(1, 48, 4, 4)
    torch.testing.assert_close(unit(y)[:, 0::2], y[:, :24], rtol=0, atol=0)
    down = N.ShuffleNetV2Cifar().stage3[0].eval()
    assert down(torch.randn(1, 48, 16, 16)).shape == (1, 96, 8, 8)


def test_densenet_head_is_cam_exact_on_block3():
    """logits = fc(mean over h, w of relu(bn1(A))) with A the block3 output: CAM with the fc weights is
    exact."""
    torch.manual_seed(1)
    model = N.DenseNetBC().eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = model.block3(model.trans2(model.block2(model.trans1(model.block1(model.conv1(x))))))
        cam = torch.einsum("kc,bchw->bkhw", model.fc.weight, F.relu(model.bn1(a)))
        torch.testing.assert_close(cam.mean(dim=(2, 3)) + model.fc.bias, model(x), rtol=1e-5, atol=1e-5)


def test_bad_names_and_inputs():
    with pytest.raises(ValueError, match="unknown reference network 'vgg'"):
        R.model("vgg")
    with pytest.raises(TypeError):
        R.model(3)
    with pytest.raises(ValueError, match="source"):
        R.images("imagenet")
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        R.normalize(torch.zeros(3, 32, 32), "resnet20")
    assert R._spec("DenseNet-BC-40")[0] == "densenet40" and R._spec("ShuffleNetV2")[0] == "shufflenet"


def test_normalize_uses_each_networks_statistics():
    x = torch.full((1, 3, 2, 2), 0.5)
    for name, spec in R.NETWORKS.items():
        expected = (0.5 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
        torch.testing.assert_close(R.normalize(x, name)[0, :, 0, 0], expected)
    assert R.NETWORKS["densenet40"].mean == pytest.approx((0.4914, 0.4824, 0.4467), abs=1e-4)


def test_stratified_split_holds_out_half_of_every_class():
    labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 3)
    held, pool = R.stratified_split(labels, seed=3)
    assert torch.bincount(labels[held], minlength=3).tolist() == [3, 2, 1]
    assert (sorted(held.tolist() + pool.tolist()) == list(range(13))
            and not set(held.tolist()) & set(pool.tolist()))
    assert torch.equal(R.stratified_split(labels, seed=3)[0], held)  # same seed, same split
    assert not torch.equal(R.stratified_split(labels, seed=4)[0], held)
    assert torch.bincount(labels[R.stratified_split(labels, 1)[0]]).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="class 2 has 3 images"):
        R.stratified_split(labels, 4)


# ------------------------------------------------------------------------- the official test set (a fake one)


def _fake_cifar_archive(path, n=20, seed=0):
    rng = np.random.default_rng(seed)
    batch = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             "labels": [i % 10 for i in range(n)]}
    blob = pickle.dumps(batch)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    return batch, blob


def test_official_test_set_is_read_from_the_archive(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CASEKIT_SHARED", str(tmp_path / "no-shared"))  # no 2,000-image file either
    monkeypatch.setenv("CASEKIT_OFFLINE", "1")
    with pytest.raises(MissingDataError) as info:
        R.images()
    msg = str(info.value)
    assert "cifar10_test_jpeg_2000.npz" in msg and "cifar-10-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    archive = tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz"
    batch, blob = _fake_cifar_archive(archive)
    real = ck.subjects.fetch.manifest()
    with pytest.raises(ck.subjects.fetch.ChecksumError, match="size 61888 bytes, expected 170498071"):
        R.images("test10000")  # a local copy is checked against the manifest
    fake = {**real,
            "files": [dict(f, sha256=None, md5=None, size=None) if f["name"] == "cifar-10-python.tar.gz"
                      else f
                      for f in real["files"]]}
    monkeypatch.setattr(ck.subjects.fetch, "manifest", lambda path=None: fake)
    with pytest.raises(ck.subjects.fetch.ChecksumError, match="40351d587109b95175f43aff81a1287e"):
        R.images("test10000")  # not the official test_batch: refused before unpickling
    monkeypatch.setattr(R, "_TEST_BATCH_MD5", hashlib.md5(blob).hexdigest())
    x, y = result = R.images()
    assert result.info["set"] == "test10000" and result.info["n"] == 20
    assert x.shape == (20, 3, 32, 32) and y.tolist() == batch["labels"]
    # pixel (row 5, column 9) of image 3: CIFAR stores the red plane, then green, then blue, row-major
    expected = [batch["data"][3, c * 1024 + 5 * 32 + 9] / 255 for c in range(3)]
    torch.testing.assert_close(x[3, :, 5, 9], torch.tensor(expected, dtype=torch.float32))
    again = pickle.loads(pickle.dumps(result))
    assert again.info == result.info and torch.equal(again.labels, y)
    archive.unlink()  # the test_batch was kept extracted: no archive needed any more
    assert torch.equal(R.images("test10000")[0], x)


# --------------------------------------------------------------------------- the real networks


@pytest.fixture(scope="module")
def shared_images():
    result = R.images("jpeg2000")
    assert result.info["set"] == "jpeg2000"
    return result


@needs_shared_cifar10()
def test_shared_images(shared_images):
    x, y = shared_images
    assert x.shape == (2000, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [200] * 10 and shared_images.info["classes"][0] == "airplane"
    with np.load(REFERENCE_CIFAR10 / "cifar10_test_jpeg_2000.npz") as npz:
        assert torch.equal((x[17, :, 5, 9] * 255).round().to(torch.uint8),
                           torch.from_numpy(npz["images"][17, 5, 9]))


@needs_shared_cifar10()
@pytest.mark.parametrize("name", list(R.NETWORKS))
def test_reference_accuracy_matches_the_readme(name, shared_images, monkeypatch):
    loads = []
    original = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model, info = R.model(name)
    assert loads == [True]  # every file, old pickles included, is read with weights_only=True
    assert not model.training and info["layers"] == R.NETWORKS[name].layers and info["sha256"]
    x, y = shared_images
    with torch.inference_mode():
        predicted = torch.cat([model(R.normalize(b, info)).argmax(1) for b in x.split(1000)])
    accuracy = (predicted == y).double().mean().item()
    print(f"{info['display']}: {accuracy:.2%} on the 2,000 shared images (README "
          f"{info['accuracy_readme']:.2%})")
    assert abs(accuracy - info["accuracy_readme"]) <= 0.003


@needs_shared_cifar10()
@pytest.mark.parametrize("name, role", [("densenet40", "final_conv"), ("densenet40", "norm5"),
                                        ("shufflenet", "final_conv"), ("shufflenet", "norm5")])
def test_oracle_on_real_networks(name, role, shared_images):
    """All five baselines against pytorch-grad-cam on real pretrained networks: Pearson r >= 0.99 per map."""
    model, info = R.model(name)
    x = R.normalize(shared_images[0][::500][:4], info)  # one image each of classes 0, 2, 5, 7
    _check_all(model, info["layers"][role], x, GRADIENT_BASED)
    # the gradient-free oracles cost one forward pass per channel (132, or 1024 on the ShuffleNet) and target;
    # ShuffleNet's conv5.1 has the same 1024 channels as conv5.0, checked above, so it is left out here
    if role == "final_conv" or name == "densenet40":
        _check_all(model, info["layers"][role], x[1:2], GRADIENT_FREE,
                   n_targets=2 if role == "final_conv" else 1)


def test_missing_lists_every_file_of_the_profile_in_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CASEKIT_SHARED", str(tmp_path / "no-shared"))
    problems = R.missing()  # download=False: only looks
    assert len(problems) == 1
    for name in R.NAMES:
        assert R.NETWORKS[name].file in problems[0]
    assert ("cifar10_test_jpeg_2000.npz" in problems[0]
            and str(tmp_path / "data" / "reference" / "cifar10") in problems[0])
    assert R.files(["lenet"], "test10000") == ["cifar_torchvision.pt", "cifar-10-python.tar.gz"]
    if REFERENCE_CIFAR10.is_dir():
        monkeypatch.setenv("CASEKIT_SHARED", str(REFERENCE_CIFAR10.parents[1]))
        assert R.missing() == []
