"""The profiles page's computed facts: part areas against direct mask means, the gallery, feature map sizes
against shapes measured by hand, the model left as found, the cifar10 accuracies against the README's."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
from conftest import needs_shared_cifar10
from torch import nn

import casekit as ck
from casekit._io import cache_root
from casekit.report import profile_facts as pf
from casekit.subjects.data import MissingDataError


def test_demo_classes_areas_equal_direct_mask_means():
    df = pf.demo_classes("test")
    ds = ck.demo.dataset("test", progress=False)
    assert list(df["class"]) == list(range(10))
    assert list(df["name"]) == ck.demo.class_names()
    assert (df.loc[0, "group_part"], df.loc[0, "unique_part"]) == ("striped disk", "orange dot")
    assert (df.loc[7, "group_part"], df.loc[7, "unique_part"]) == ("plain diamond", "yellow plus")
    for c in (0, 7):
        idx = [i for i in range(len(ds)) if ds[i][1] == c]
        shared = torch.stack([ds[i][2]["shared"] for i in idx]).float().mean().item()
        unique = torch.stack([ds[i][2]["unique"] for i in idx]).float().mean().item()
        assert df.loc[c, "n_images"] == len(idx) == 100
        assert df.loc[c, "group_area"] == pytest.approx(shared, abs=1e-7)
        assert df.loc[c, "unique_area"] == pytest.approx(unique, abs=1e-7)
        assert 0 < unique < shared < 0.5


def test_gallery_has_one_titled_panel_per_class_with_both_outlines():
    fig = pf.demo_class_gallery("test")
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 10
    names = ck.demo.class_names()
    assert [ax.get_title().replace("\n", " ") for ax in panels] == names
    for ax in panels:
        assert ax.get_title().count("\n") == 1 and ax.title.get_fontsize() >= pf.MIN_FONT_PT
        colours = {tuple(c) for coll in ax.collections for c in coll.get_edgecolor()}
        assert len(colours) == 2  # a contour of each part (every test image shows both parts)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["group part", "unique part"]
    assert fig.get_size_inches()[0] <= pf.SHOWN_WIDTH_IN
    assert pf.book_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_feature_map_sizes_of_a_tiny_net_and_the_model_left_as_found():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(5, 2))
    net.train()
    net[2].eval()  # a mixed state must come back as it was
    net[0].weight.requires_grad_(False)
    sizes = pf.feature_map_sizes(net, {"final_conv": "2", "first": "0"}, torch.randn(1, 3, 20, 20))
    assert sizes == {"2": (5, 5), "0": (10, 10)}  # 20 → 10 → 5 (kernel 3, stride 2, padding 1)
    assert net.training and net[0].training and not net[2].training
    assert not net[0].weight.requires_grad and net[2].weight.requires_grad and net[2].weight.grad is None
    assert all(not m._forward_hooks for m in net.modules())
    assert torch.is_grad_enabled()


def test_feature_map_sizes_removes_hooks_after_an_exception():
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.conv(x)
            raise RuntimeError("boom")

    net = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        pf.feature_map_sizes(net, {"final_conv": "conv"}, torch.randn(1, 3, 8, 8))
    assert net.training and not net.conv._forward_hooks and torch.is_grad_enabled()
    with pytest.raises(AttributeError):
        pf.feature_map_sizes(net, {"final_conv": "nope"}, torch.randn(1, 3, 8, 8))


def test_demo_models_accuracy_layers_and_maps():
    df = pf.demo_models(seed=0)
    assert list(dict.fromkeys(df["model"])) == ["ResNet", "VGG", "DenseNet", "ConvNeXt"]
    t = ck.demo.trained("resnet", 0, progress=False)
    row = df[df["family"] == "resnet"].iloc[0]
    assert row["test_accuracy"] == t.test_accuracy and row["layer"] == t.layers["final_conv"]
    # independently: the ResNet's stages run by hand; layer4 has one block, so its output has layer4.0.conv2's
    # size
    m = t.model
    x = ck.demo.dataset("test", progress=False)[0][0].unsqueeze(0)
    with torch.no_grad():
        h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        h = m.layer4(m.layer3(m.layer2(m.layer1(h))))
    assert len(m.layer4) == 1 and (row["map_h"], row["map_w"]) == tuple(h.shape[-2:])
    dense = df[df["family"] == "densenet"]
    assert list(dense["role"]) == ["final_conv", "norm5"] and list(dense["layer"])[1] == "features.norm5"
    assert (df["n_test"] == 1000).all() and (df["train_seconds"] > 0).all()


def test_markdown_formats_hand_made_frames():
    classes = pd.DataFrame({"class": [0, 1], "name": ["a disk + b dot", "a disk + c plus"],
                            "group_part": ["a disk", "a disk"], "unique_part": ["b dot", "c plus"],
                            "group_area": [0.12666, 0.1], "unique_area": [0.0109, 0.0071],
                            "n_images": [100, 100]})
    md = pf.classes_markdown(classes, gallery=None, k=0.05)
    assert "| 0 | a disk + b dot | a disk | b dot | 12.7 % | 1.09 % |" in md
    assert "covers 0.90 % of an image on average (0.71 % to 1.09 % by class)" in md
    assert "at most 18.0 % (ceiling" in md and "100 test images" in md
    models = pd.DataFrame({"model": ["DenseNet", "DenseNet"], "family": "densenet", "seed": 0,
                           "test_accuracy": 0.966, "n_test": 1000, "train_seconds": 90.0,
                           "role": ["final_conv", "norm5"], "layer": ["f.conv2", "f.norm5"],
                           "map_h": 8, "map_w": 8})
    md = pf.demo_models_markdown(models)
    assert "| DenseNet | 96.6 % | `f.conv2` (final convolution), `f.norm5` (norm5) | 8 × 8 |" in md
    assert "Training these 1 models took 1.5 minutes" in md
    nets = pd.DataFrame({"model": ["A", "B"], "name": ["a", "b"], "accuracy": [0.8135, 0.80],
                         "accuracy_readme": [0.813, 0.80], "accuracy_published": [0.9178, 0.90],
                         "image_set": "jpeg2000", "image_description": "some images", "n_images": 2000,
                         "role": "final_conv", "layer": ["l1", "l2"], "map_h": [8, 4], "map_w": [8, 4]})
    md = pf.cifar10_markdown(nets)
    assert "| A | 81.3 % | 81.3 % | 91.8 % | `l1` (final convolution) | 8 × 8 |" in md
    assert "sit 10.2 points (mean over the networks)" in md  # (10.43 + 10.0) / 2


def test_pages_say_in_one_sentence_why_cifar10_numbers_are_missing(monkeypatch, tmp_path):
    pages = pf.profile_facts_pages(demo_built=False, cifar10=None, cifar10_reason="it was not built")
    assert pages[pf.CIFAR10_PAGE] == ("This build shows no numbers of the CIFAR-10 networks: "
                                      "it was not built.\n")
    assert "not listed" in pages[pf.DEMO_MODELS_PAGE]
    assert pages[pf.GALLERY_PNG][:4] == b"\x89PNG" and "| 9 |" in pages[pf.CLASSES_PAGE]

    def missing(**_):
        raise MissingDataError("casekit: /some/machine/path/resnet20.th is missing")

    monkeypatch.setattr(pf, "cifar10_models", missing)
    text = pf.profile_facts_pages(demo_built=False, cifar10=tmp_path)[pf.CIFAR10_PAGE]
    assert "were not found on this machine" in text and "/some" not in text


@needs_shared_cifar10()
def test_cifar10_models_match_the_readme_and_reuse_the_cache(tmp_path):
    # start from the accuracies the tiny book measured into the shared cache (the same function, keyed by the
    # checkpoints' and images' hashes): the suite measures each network once; a cold cache measures here
    shared = cache_root() / "reference" / pf.CACHE_FILE
    if shared.exists():
        shutil.copy(shared, tmp_path / pf.CACHE_FILE)
    df = pf.cifar10_models(cache_dir=tmp_path)
    first = df.groupby("name", sort=False).first()
    assert list(first.index) == list(ck.reference.NAMES)
    assert ((first["accuracy"] - first["accuracy_readme"]).abs() <= 0.003).all(), first
    assert (first["image_set"] == "jpeg2000").all() and (first["n_images"] == 2000).all()
    # 32 × 32 inputs: the ResNets' and DenseNet's last stage at stride 4, ShuffleNet's conv5 at stride 8
    sizes = {(r.name, r.role): (r.map_h, r.map_w) for r in df.itertuples()}
    assert sizes == {("resnet20", "final_conv"): (8, 8), ("resnet56", "final_conv"): (8, 8),
                     ("densenet40", "final_conv"): (8, 8), ("densenet40", "norm5"): (8, 8),
                     ("shufflenet", "final_conv"): (4, 4), ("shufflenet", "norm5"): (4, 4)}
    cache = tmp_path / pf.CACHE_FILE
    stored = json.loads(cache.read_text())
    sha = ck.reference.model("resnet20")[1]["sha256"]
    key = next(k for k in stored if k.startswith(f"{sha}/"))
    stored[key] = 0.5  # a reused cache shows this value
    cache.write_text(json.dumps(stored))
    again = pf.cifar10_models(["resnet20"], cache_dir=tmp_path)
    assert again["accuracy"].iloc[0] == 0.5
