"""The procedural benchmark: determinism, exact part masks, dataset format, sibling structure."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from casekit.subjects import synthetic as sy

CFG = sy.BenchmarkConfig()
CLUTTERED = sy.BenchmarkConfig(distractors=(6, 8))  # occlusions are common here


def test_same_seed_split_index_gives_the_same_image_and_masks():
    for split, index in [("train", 0), ("val", 7), ("test", 123)]:
        a, b = sy.render(CFG, 0, split, index), sy.render(CFG, 0, split, index)
        assert torch.equal(a.image, b.image) and a.label == b.label
        assert all(torch.equal(a.masks[k], b.masks[k]) for k in ("unique", "shared"))


def test_splits_and_seeds_give_different_images():
    base = sy.render(CFG, 0, "train", 5).image
    for other in [sy.render(CFG, 0, "val", 5), sy.render(CFG, 0, "test", 5), sy.render(CFG, 1, "train", 5)]:
        assert other.label == 5 % CFG.num_classes  # same class, different image
        assert (other.image - base).abs().mean() > 0.05
    seeds = {sy.image_seed(0, s, i) for s in sy.SPLITS for i in range(200)}
    assert len(seeds) == 600  # every (split, index) has its own generator


def test_an_image_does_not_depend_on_the_split_size_or_order():
    small = sy.generate(CFG, 0, "val", 3, progress=False)
    alone = sy.render(CFG, 0, "val", 2)
    assert torch.equal(small["images"][2], (alone.image * 255).round().to(torch.uint8))
    assert torch.equal(small["parts"][2] == 2, alone.masks["unique"])


@pytest.mark.parametrize("config", [CFG, CLUTTERED], ids=["default", "cluttered"])
def test_masks_are_exactly_the_visible_pixels_of_each_part(config):
    """Leave one part unpainted (same random draws): the pixels that change are exactly its mask."""
    for index in range(24):
        full = sy.render(config, 3, "test", index)
        u, s = full.masks["unique"], full.masks["shared"]
        assert u.dtype == torch.bool and u.shape == (config.size, config.size)
        assert u.sum() >= 5 and s.sum() >= 100
        assert not (u & s).any()
        for part, mask in (("unique", u), ("shared", s)):
            without = sy.render(config, 3, "test", index, omit=(part,))
            changed = (without.image != full.image).any(dim=0)
            assert torch.equal(changed, mask), f"image {index}: {part} mask differs from its drawn pixels"


def test_occluded_pixels_are_not_in_the_masks():
    """With the clutter left unpainted, each part's whole shape shows; the mask is that shape minus the
    clutter."""
    occluded = 0
    for index in range(40):
        full = sy.render(CLUTTERED, 0, "train", index)
        clean = sy.render(CLUTTERED, 0, "train", index, omit=("clutter",))
        clutter = (full.image != clean.image).any(dim=0)
        for part in ("unique", "shared"):
            bare = sy.render(CLUTTERED, 0, "train", index, omit=("clutter", part))
            whole = (clean.image != bare.image).any(dim=0)  # the part's complete shape
            assert torch.equal(full.masks[part], whole & ~clutter)
            occluded += int((whole & clutter).sum())
    assert occluded > 0  # some parts were really covered, and those pixels left the masks


def test_shape_rasteriser_by_hand():
    """A dot of radius 1 centred on a pixel covers that pixel and its 4 neighbours (centres at distance ≤
    1)."""
    yy, xx = np.mgrid[0:5, 0:5].astype(np.float32) + 0.5
    u, v = sy._frame(yy, xx, 2.5, 2.5, 0.0)
    dot = sy._unique_shape("dot", u, v, 1.0)
    expected = np.zeros((5, 5), dtype=bool)
    expected[2, 1:4] = expected[1:4, 2] = True
    assert np.array_equal(dot, expected)
    ring = sy._unique_shape("ring", u, v, 2.0)  # centres at distance in [1.1, 2]: 4 at √2 and 4 at 2
    expected = np.zeros((5, 5), dtype=bool)
    expected[[1, 1, 3, 3], [1, 3, 1, 3]] = True
    expected[[0, 4, 2, 2], [2, 2, 0, 4]] = True
    assert np.array_equal(ring, expected)
    assert sy._group_shape("square", u, v, 3.0 / 0.7).all()  # half side 3 covers the whole 5×5 block
    assert sy._group_shape("square", u, v, 1.5 / 0.7).sum() == 9  # half side 1.5: the central 3×3


def test_dataset_items_shapes_dtypes_and_normalisation(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path))
    ds = sy.SyntheticDataset("val", seed=0, size=30, progress=False)
    assert len(ds) == 30 and ds.num_classes == 10
    image, label, masks = ds[4]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert isinstance(label, int) and label == 4
    assert set(masks) == {"unique", "shared"} and all(m.dtype == torch.bool and m.shape == (64, 64)
                                                      for m in masks.values())
    raw = ds.raw(4)
    assert raw.min() >= 0 and raw.max() <= 1
    mean = torch.tensor(sy.MEAN).view(3, 1, 1)
    std = torch.tensor(sy.STD).view(3, 1, 1)
    assert torch.allclose(image, (raw - mean) / std, atol=1e-6)
    assert torch.allclose(sy.denormalize(image), raw, atol=1e-6)
    rendered = sy.render(ds.config, 0, "val", 4)
    assert (raw - rendered.image).abs().max() <= 0.5 / 255 + 1e-6  # uint8 storage
    assert torch.equal(masks["unique"],
                       rendered.masks["unique"]) and torch.equal(masks["shared"], rendered.masks["shared"])
    x, y = ds.tensors()
    assert x.shape == (30, 3, 64, 64) and torch.equal(y, torch.arange(30) % 10)
    assert torch.allclose(x[4], image)
    with pytest.raises(IndexError):
        ds[30]
    # a second dataset loads the cached file
    files = list((tmp_path / "synthetic").glob("val-*.pt"))
    assert len(files) == 1
    again = sy.SyntheticDataset("val", seed=0, size=30, progress=False)
    assert torch.equal(again.images_uint8, ds.images_uint8)


def test_normalisation_constants_match_the_training_split():
    data = sy.generate(CFG, 0, "train", 300, progress=False)
    x = data["images"].float() / 255
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(sy.MEAN), atol=0.015), mean
    assert torch.allclose(std, torch.tensor(sy.STD), atol=0.015), std


def test_no_image_is_shared_between_splits():
    digest = {s: {sy.render(CFG, 0, s, i).image.numpy().tobytes() for i in range(60)} for s in sy.SPLITS}
    assert (not (digest["train"] & digest["val"]) and not (digest["train"] & digest["test"])
            and not (digest["val"] & digest["test"]))


def test_sibling_structure_and_names():
    cfg = sy.BenchmarkConfig(groups=3, siblings=3)
    assert sy.group_members(cfg) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert sy.siblings(4, cfg) == [3, 5] and sy.siblings(torch.tensor(0), cfg) == [1, 2]
    assert sy.class_group(8, cfg) == 2
    names = sy.class_names(cfg)
    assert len(set(names)) == 9
    assert names[0].split(" + ")[0] == names[1].split(" + ")[0] != names[3].split(" + ")[0]
    styles = {sy.group_style(g) for g in range(sy.MAX_GROUPS)}
    assert len(styles) == sy.MAX_GROUPS  # every group looks different
    with pytest.raises(ValueError, match="label must lie in 0..8"):
        sy.siblings(9, cfg)
    with pytest.raises(TypeError, match="int class index"):
        sy.siblings(1.0, cfg)


def test_configurable_groups_and_siblings_draw_their_labels():
    cfg = sy.BenchmarkConfig(groups=2, siblings=4, size=48)
    r = sy.render(cfg, 0, "test", 7)
    assert r.label == 7 and r.image.shape == (3, 48, 48) and r.masks["unique"].any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"groups": 0}, "groups must be between 1"),
        ({"siblings": 1}, "siblings must be between 2"),
        ({"siblings": 5}, "siblings must be between 2 and 4"),
        ({"size": 16}, "size must be at least 32"),
        ({"unique_radius": (5.0, 3.0)}, "unique_radius must be a range"),
        ({"group_radius": (11.0, 40.0)}, "too large"),
        ({"unique_colours": "blue"}, "unique_colours must be"),
        ({"split_sizes": {"train": 10, "val": 10}}, "split_sizes must give"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sy.BenchmarkConfig(**kwargs)


def test_bad_split_and_index_are_refused():
    with pytest.raises(ValueError, match="unknown split 'validation'; choose one of train, val, test"):
        sy.render(CFG, 0, "validation", 0)
    with pytest.raises(ValueError, match="non-negative"):
        sy.render(CFG, 0, "train", -1)
    with pytest.raises(ValueError, match="omit may name 'unique', 'shared' and 'clutter'"):
        sy.render(CFG, 0, "train", 0, omit=("background",))


def test_generation_is_fast_enough():
    """About 1 ms per image on a quiet 2-core machine; 20 ms leaves room for a busy one."""
    t = time.perf_counter()
    sy.generate(CFG, 0, "test", 100, progress=False)
    assert (time.perf_counter() - t) / 100 < 0.02
