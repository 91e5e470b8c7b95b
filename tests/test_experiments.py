"""casekit.study.experiments: the RQ1 / RQ2 / sparsity runners on tiny models whose answers are known.

The hand-checked model is ``x → Identity ("feat") → spatial mean → Linear(W = 10·I)``: the attribution layer
*is* the image, the logit of class c is 10·mean(x_c), so every gradient method's map for class c is the
image's channel c (min–max scaled), and agreement, evidence, confidence drops and active channels can be
written down with NumPy from the images alone.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import casekit as ck
from casekit.study.experiments import (
    MAP_KEY,
    RunConfig,
    Subject,
    agreement_rows,
    degenerate_maps,
    example_maps,
    fidelity_rows,
    k_suffix,
    layer_activations,
    load_results,
    logit_contrast,
    run,
    run_all,
)

REPO = Path(__file__).resolve().parents[1]
S = 16  # image side
N_TOP = 12  # ⌊0.05 · 256⌋


# --------------------------------------------------------------------------- the hand-checked model


class ChannelModel(nn.Module):
    """logits = 10 · spatial mean of each input channel (4 channels = 4 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.fc = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(10 * torch.eye(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.feat(x).mean(dim=(2, 3)))


def _block(rng: np.random.Generator, exclude: set[int] | None = None, overlap: np.ndarray | None = None,
           n_overlap: int = 0) -> np.ndarray:
    """12 distinct flat positions; ``n_overlap`` of them taken from ``overlap``."""
    chosen = list(rng.choice(overlap, n_overlap, replace=False)) if n_overlap else []
    rest = [p for p in rng.permutation(S * S) if p not in set(overlap if overlap is not None else [])]
    chosen += rest[: N_TOP - n_overlap]
    return np.array(chosen)


def channel_dataset(n: int = 8, seed: int = 0):
    """Images where class ``c1`` (block of 12 pixels ≈ 1.0) beats ``c2`` (block ≈ 0.9 sharing ``o`` pixels
    with it); other channels hold background noise only.  Returns items and the design per image."""
    rng = np.random.default_rng(seed)
    items, design = [], []
    # (top1, top2); some top2 ≠ sibling
    pairs = [(0, 1), (1, 0), (2, 3), (0, 2), (3, 1), (2, 0), (1, 3), (3, 2)]
    for i in range(n):
        c1, c2 = pairs[i % len(pairs)]
        x = rng.uniform(0.0, 0.05, size=(4, S * S))  # distinct background values
        b1 = _block(rng)
        o = int(rng.integers(0, N_TOP + 1))
        b2 = _block(rng, overlap=b1, n_overlap=o)
        x[c1, b1] = 1.0 - 0.001 * np.arange(N_TOP)  # distinct values: no ties decide any top-k set
        x[c2, b2] = 0.9 - 0.001 * np.arange(N_TOP)
        unique = np.zeros(S * S, bool)
        unique[rng.choice(S * S, 40, replace=False)] = True
        unique[b1[:5]] = True
        shared = ~unique
        img = torch.tensor(x.reshape(4, S, S), dtype=torch.float32)
        masks = {"unique": torch.tensor(unique.reshape(S, S)), "shared": torch.tensor(shared.reshape(S, S))}
        items.append((img, c1, masks))
        design.append({"c1": c1, "c2": c2, "x": img.numpy().reshape(4, -1).astype(np.float64),
                       "unique": unique,
                       "shared": shared})
    return items, design


def constant_item(masks: dict) -> tuple[torch.Tensor, int, dict]:
    """Class 2 wins with a *constant* channel (0.5 everywhere): its maps have no top-k set."""
    x = torch.zeros(4, S, S)
    x[2] = 0.5
    x[1, :2, :6] = 0.9  # class 1 second, with a 12-pixel block
    return x, 2, masks


GROUPS = [[0, 1], [2, 3]]
SIBLING = {0: 1, 1: 0, 2: 3, 3: 2}
CONFUSION = torch.tensor([[50, 5, 1, 0], [4, 50, 0, 2], [1, 0, 50, 6], [0, 3, 7, 50]])


def channel_subject(n: int = 8) -> tuple[Subject, list[dict]]:
    items, design = channel_dataset(n)
    items.append(constant_item(items[0][2]))  # image n: a degenerate top-1 map
    subject = Subject(ChannelModel().eval(), {"final_conv": "feat"}, items, CONFUSION, GROUPS,
                      fingerprint="channel")
    return subject, design


def top_set(values: np.ndarray, n: int) -> set[int]:
    """The n largest entries' positions (values are distinct where it matters)."""
    return set(np.argsort(-values, kind="stable")[:n].tolist())


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


GRAD_METHODS = ("gradcam", "gradcam++", "ablationcam", "layercam", "case")


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory):
    subject, design = channel_subject()
    cfg = RunConfig(model="channel", profile="custom", methods=GRAD_METHODS, n_images=9, batch_size=3,
                    tau=0.03)
    out = run(cfg, subject, results_dir=tmp_path_factory.mktemp("channel"), progress=False)
    return out, design, subject


def test_channel_run_rows_match_hand_computation(channel_run):
    out, design, _ = channel_run
    maps = out.maps
    assert len(maps) == 9 * len(GRAD_METHODS) * 3  # images × methods × (top1, top2, sibling)
    assert not maps.duplicated(list(MAP_KEY)).any()
    # the sample: all 9 images are classified correctly, in a seeded random order
    assert sorted(maps["image_id"].unique()) == list(range(9))
    for i, d in enumerate(design):
        x = d["x"]
        top1 = top_set(x[d["c1"]], N_TOP)
        assert top1 == set(np.flatnonzero(x[d["c1"]] > 0.95))
        for target, cls in (("top1", d["c1"]), ("top2", d["c2"]), ("sibling", SIBLING[d["c1"]])):
            expected_set = top_set(x[cls], N_TOP)
            rows = maps[(maps["image_id"] == i) & (maps["target"] == target)]
            assert len(rows) == len(GRAD_METHODS)
            assert (rows["target_class"] == cls).all() and (rows["label"] == d["c1"]).all()
            assert (~rows["constant"]).all()
            agreement = len(top1 & expected_set) / N_TOP
            if target == "top1":
                assert rows["agreement"].isna().all()
                assert (rows["comparison"] == "").all()
            else:
                np.testing.assert_allclose(rows["agreement"], agreement, err_msg=f"image {i} {target}")
            np.testing.assert_allclose(rows["unique_evidence"],
                                       len(expected_set & set(np.flatnonzero(d["unique"]))) / N_TOP)
            np.testing.assert_allclose(rows["shared_evidence"],
                                       len(expected_set & set(np.flatnonzero(d["shared"]))) / N_TOP)
            np.testing.assert_allclose(rows["prob"], softmax(10 * x.mean(1))[cls], rtol=1e-5)


def test_degenerate_top1_map_is_flagged_and_excluded(channel_run):
    out, _, _ = channel_run
    rows = out.maps[out.maps["image_id"] == 8].set_index(["method", "target"])
    for m in GRAD_METHODS:
        assert rows.loc[(m, "top1"), "constant"]  # channel 2 is constant: no top-k set
        assert not rows.loc[(m, "top2"), "constant"]
        assert math.isnan(rows.loc[(m, "top1"), "unique_evidence"])
        for t in ("top2", "sibling"):
            assert math.isnan(rows.loc[(m, t), "agreement"])  # excluded from the test, not scored 100 %
        # nothing is blanked for a map without a top-k set: p_after = p_before, drop 0
        assert rows.loc[(m, "top1"), "p_after"] == rows.loc[(m, "top1"), "p_before"]
        assert rows.loc[(m, "top1"), "relative_drop"] == 0
    agree = agreement_rows(out.maps)
    assert agree.loc[agree["image_id"] == 8, "degenerate"].all()
    assert agree.loc[agree["image_id"] != 8, "degenerate"].sum() == 0
    deg = degenerate_maps(out.maps).set_index(["method", "target"])
    assert (deg.xs("top1", level="target")["n_constant"] == 1).all()
    assert (deg.xs("top2", level="target")["n_constant"] == 0).all()
    # with the reference code's tie rule the same pair scores an agreement, as the reference did
    subject, _ = channel_subject()
    cfg = RunConfig(model="channel", profile="custom", methods=("gradcam",), n_images=9, batch_size=9,
                    ties="index", rq2=False)
    ex = example_maps(cfg, [8], subject)
    ref = ck.metrics.topk_agreement(ex["result"].maps["gradcam"][:, 0], ex["result"].maps["gradcam"][:, 1],
                                    0.05, "index")
    assert not math.isnan(ref.item())


def test_channel_run_fidelity_matches_hand_computation(channel_run):
    out, design, _ = channel_run
    fid = fidelity_rows(out.maps)
    assert len(fid) == 9 * len(GRAD_METHODS)
    for i, d in enumerate(design):
        x, c = d["x"], d["c1"]
        p_before = softmax(10 * x.mean(1))[c]
        rows = fid[fid["image_id"] == i]
        np.testing.assert_allclose(rows["p_before"], p_before, rtol=1e-5)
        for k in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
            n = int(math.floor(k * S * S + 1e-9))
            blank = np.zeros(S * S, bool)
            blank[list(top_set(x[c], n))] = True  # all values distinct: no ties
            p_after = softmax(10 * (x * ~blank).mean(1))[c]
            np.testing.assert_allclose(rows[f"p_after_{k_suffix(k)}"], p_after, rtol=1e-5,
                                       err_msg=f"image {i}, k {k}")
            np.testing.assert_allclose(rows[f"relative_drop_{k_suffix(k)}"],
                                       max(p_before - p_after, 0) / p_before,
                                       rtol=1e-4, atol=1e-7)
        # the headline numbers are the 5 % ones (fidelity_k default)
        np.testing.assert_allclose(rows["drop"], rows["p_before"] - rows["p_after_5"], rtol=1e-6)
        assert (rows["fidelity_k"] == 0.05).all()
    # every method's drops come from the same images: the pairing of Table III holds by construction
    ids = {m: tuple(g["image_id"]) for m, g in fid.groupby("method")}
    assert len(set(ids.values())) == 1


def test_channel_run_sparsity(channel_run):
    out, design, _ = channel_run
    sp = out.sparsity[out.sparsity["image_id"] < 8].set_index("image_id")
    assert len(out.sparsity) == 9 and len(sp) == 8
    assert (sp["layer"] == "final_conv").all() and (sp["n_channels"] == 4).all()
    for i, d in enumerate(design):
        assert sp.loc[i, "active_channels"] == int((d["x"].mean(1) > 0.03).sum())
        assert sp.loc[i, "label"] == d["c1"]
    assert set(out.sparsity["active_channels"]) == {2}  # the two block channels; backgrounds average ≈ 0.025


def test_views_agreement_and_degenerate(channel_run):
    out, design, _ = channel_run
    agree = agreement_rows(out.maps)
    assert set(agree["comparison"]) == {"top1_vs_top2", "true_vs_sibling"}
    assert len(agree) == 9 * len(GRAD_METHODS) * 2
    only = agreement_rows(out.maps, method="Grad-CAM", comparison="top1_vs_top2")
    assert len(only) == 9 and set(only["method"]) == {"gradcam"}
    assert (degenerate_maps(out.maps)["n_maps"] == 9).all()


# --------------------------------------------------------------------------- a small CNN for the mechanics


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 4, slow: float = 0.0) -> None:
        super().__init__()
        self.slow = slow
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU())
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.slow:
            time.sleep(self.slow)
        return self.fc(self.features(x).mean(dim=(2, 3)))


def tiny_subject(n: int = 30, slow: float = 0.0, seed: int = 0) -> Subject:
    """A seeded random CNN and images labelled with its own predictions (all correctly classified) and
    random part masks."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TinyCNN(slow=slow).eval()
    x = torch.randn(n, 3, S, S, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    masks = [{"unique": torch.rand(S, S, generator=g) > 0.8, "shared": torch.rand(S, S, generator=g) > 0.5}
             for _ in range(n)]
    items = [(x[i], int(y[i]), masks[i]) for i in range(n)]
    confusion = torch.full((4, 4), 2) + 20 * torch.eye(4, dtype=torch.long)
    confusion[0, 1] = confusion[2, 3] = 5
    return Subject(model, {"final_conv": "features.2", "first": "features.0"}, items, confusion, GROUPS,
                   fingerprint="tiny")


TINY = RunConfig(model="tiny", profile="custom", n_images=12, batch_size=4,
                 sparsity_layers=("final_conv", "first"),
                 perturbation_batch=64)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run(TINY, tiny_subject(), results_dir=tmp_path_factory.mktemp("tiny"), progress=False)


def test_same_seed_identical_tables_other_seed_other_sample(tiny_run, tmp_path):
    again = run(TINY, tiny_subject(), results_dir=tmp_path / "a", progress=False)
    pd.testing.assert_frame_equal(tiny_run.maps, again.maps)
    pd.testing.assert_frame_equal(tiny_run.sparsity, again.sparsity)
    other = run(TINY.replace(sample_seed=1), tiny_subject(), results_dir=tmp_path / "b", progress=False)
    assert set(other.maps["image_id"]) != set(tiny_run.maps["image_id"])


def test_tiny_run_covers_every_row_and_records_degenerate_maps(tiny_run):
    maps = tiny_run.maps
    assert len(maps) == 12 * 6 * 3
    assert list(maps.columns[:6]) == list(MAP_KEY)
    agree = agreement_rows(maps)
    assert (agree["agreement"].isna() == agree["degenerate"]).all()
    # the hook pass for the other layer equals the layer's output of a plain forward
    sp = tiny_run.sparsity
    assert set(sp["layer"]) == {"final_conv", "first"}
    subject = tiny_subject()
    ids = sorted(sp["image_id"].unique())
    x = torch.stack([subject.dataset[i][0] for i in ids])
    acts = layer_activations(subject.model, x, ["features.0", "features.2"])
    with torch.no_grad():
        first = subject.model.features[0](x)
    torch.testing.assert_close(acts["features.0"], first)
    expect = (first.mean(dim=(2, 3)) > 1e-3).sum(1).tolist()
    got = sp[sp["layer"] == "first"].set_index("image_id").loc[ids, "active_channels"].tolist()
    assert got == expect


def test_rows_equal_independent_engine_calls(tiny_run):
    """Maps of one image recomputed with ck.saliency, one method and one target at a time."""
    subject = tiny_subject()
    maps = tiny_run.maps
    i = int(maps["image_id"].iloc[0])
    x, label, masks = subject.dataset[i]
    sets = ck.contrast_sets(subject.confusion, 3)
    for method in ck.METHODS:
        rows = maps[(maps["image_id"] == i) & (maps["method"] == method)].set_index("target")
        per_target = {}
        for t in ("top1", "top2", "sibling"):
            cls = int(rows.loc[t, "target_class"])
            contrast = sets[[cls]][None] if method == "case" else None
            per_target[t] = ck.saliency(subject.model, x[None], "features.2", method, [[cls]], contrast)[0, 0]
        with torch.no_grad():
            top2 = subject.model(x[None]).topk(2).indices[0].tolist()
        assert [rows.loc["top1", "target_class"], rows.loc["top2", "target_class"]] == top2
        assert rows.loc["sibling", "target_class"] == SIBLING[label]
        for t in ("top2", "sibling"):
            a = ck.metrics.topk_agreement(per_target["top1"], per_target[t], 0.05, "random", 0).item()
            b = rows.loc[t, "agreement"]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), (method, t)
        u = ck.metrics.unique_evidence(per_target["top1"], masks["unique"]).item()
        stored = rows.loc["top1", "unique_evidence"]
        assert (math.isnan(u) and math.isnan(stored)) or u == pytest.approx(stored)


def test_store_config_refused_and_recompute(tmp_path):
    subject = tiny_subject()
    cfg = TINY.replace(n_images=4, methods=("gradcam", "case"), rq2=False)
    first = run(cfg, subject, results_dir=tmp_path, progress=False)
    again = run(cfg, subject, results_dir=tmp_path, progress=False)  # all done: nothing computed
    assert again.computed_batches == 0 and again.skipped_batches == 1
    with pytest.raises(ValueError, match="recompute=True"):
        run(cfg.replace(k=0.1), subject, results_dir=tmp_path, progress=False)
    fresh = run(cfg.replace(k=0.1), subject, results_dir=tmp_path, recompute=True, progress=False)
    assert fresh.computed_batches == 1
    stored = ck.store.ResultStore(fresh.path / "maps", MAP_KEY).run_config
    assert stored["run"]["k"] == 0.1 and stored["subject"] == "tiny"
    assert len(fresh.maps) == len(first.maps)  # the old rows are gone, not kept beside the new ones
    assert (fresh.maps["p_before"].isna()).all()  # rq2=False: no fidelity columns filled
    # another model's weights are another subject: refused too
    other = tiny_subject(seed=1)
    other.fingerprint = "tiny-other"
    with pytest.raises(ValueError, match="different run config"):
        run(cfg.replace(k=0.1), other, results_dir=tmp_path, progress=False)


def test_crash_between_the_two_stores_is_repaired(tiny_run, tmp_path):
    subject = tiny_subject()
    done = run(TINY, subject, results_dir=tmp_path, progress=False)
    parts = sorted((done.path / "sparsity").glob("part-*.parquet"))
    parts[-1].unlink()  # as if killed after the maps commit of the last batch, before its sparsity commit
    again = run(TINY, subject, results_dir=tmp_path, progress=False)
    assert again.computed_batches == 1
    pd.testing.assert_frame_equal(again.sparsity, tiny_run.sparsity)
    pd.testing.assert_frame_equal(again.maps, tiny_run.maps)


def test_run_all_and_load_results(tmp_path):
    subject = tiny_subject()
    a = TINY.replace(n_images=4, methods=("gradcam", "case"), sparsity_layers=None)
    b = a.replace(layer="first")
    res = run_all([a, b], results_dir=tmp_path, progress=False, subjects={a.name: subject, b.name: subject})
    assert set(res.maps["layer"]) == {"final_conv", "first"}
    assert len(res.maps) == 2 * 4 * 2 * 3
    loaded = load_results(tmp_path)
    pd.testing.assert_frame_equal(loaded.maps, res.maps)
    pd.testing.assert_frame_equal(loaded.sparsity, res.sparsity)
    assert set(res.timings()["run"]) == {a.name, b.name}
    # how each sample was drawn: 4 of the pool's 30 correctly classified images; read back from sample.json
    s = res.samples()
    cols = ["model", "layer", "n_images", "available", "pool", "scanned", "correct"]
    assert sorted(s[cols].values.tolist()) == [["tiny", "final_conv", 4, 30, 30, 30, 30],
                                               ["tiny", "first", 4, 30, 30, 30, 30]]
    pd.testing.assert_frame_equal(loaded.samples().sort_values("layer", ignore_index=True),
                                  s.sort_values("layer", ignore_index=True))
    every = run(a.replace(n_images="all", methods=("gradcam",), rq2=False, sparsity_layers=()), subject,
                results_dir=tmp_path / "all", progress=False)
    assert every.maps["image_id"].nunique() == 30 and every.sample["drawn"] == every.sample["available"] == 30
    for bad in ("some", 0, True):
        with pytest.raises((ValueError, TypeError), match="n_images"):
            RunConfig(model="m", n_images=bad)
    # counts "first" a second time
    c = b.replace(layer="final_conv", tag="overlap", sparsity_layers=("first",))
    with pytest.raises(ValueError, match="repeat a key"):
        run_all([b, c], results_dir=tmp_path, progress=False, subjects={b.name: subject, c.name: subject})
    with pytest.raises(ValueError, match="share a run name"):
        run_all([a, a], results_dir=tmp_path, subjects={a.name: subject})


def test_model_fingerprint_follows_the_weights():
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # BatchNorm: a 0-d int64 buffer

    a, b = net(), net()
    fp = ck.experiments.model_fingerprint
    assert fp(a) == fp(b) and len(fp(a)) == 16
    with torch.no_grad():
        b[0].weight[0, 0, 0, 0] += 1e-6
    assert fp(a) != fp(b)
    b = net()
    b[1].num_batches_tracked += 1
    assert fp(a) != fp(b)


def test_logit_contrast_and_config_errors():
    z = torch.tensor([[0.0, 5.0, 3.0, 4.0, 1.0]])
    t = torch.tensor([[1, 3]])
    c = logit_contrast(2)(t, z)
    assert c.tolist() == [[[3, 2], [1, 2]]]  # the two highest logits other than the target, in logit order
    with pytest.raises(ValueError, match="did you mean 0.05"):
        RunConfig(model="m", k=5)
    with pytest.raises(ValueError, match="unknown method"):
        RunConfig(model="m", methods=("gradcam", "gradcamm"))
    with pytest.raises(ValueError, match="contrast_strategy"):
        RunConfig(model="m", contrast_strategy="semantic")
    with pytest.raises(ValueError, match="nothing to do"):
        RunConfig(model="m", rq1=False, rq2=False, sparsity_layers=())
    with pytest.raises(ValueError, match="profile 'custom' needs a Subject"):
        run(RunConfig(model="m", profile="custom"), progress=False)
    paper = ck.experiments.study_configs("paper")
    assert [(c.model, c.layer, c.seed, c.rq2) for c in paper] == [
        ("resnet50", "final_conv", 0, True), ("vgg19_bn", "final_conv", 0, True),
        ("densenet201", "final_conv", 0, True),
        ("convnext_large", "final_conv", 0, True), ("densenet201", "norm5", 0, True),
        *[("densenet201-cifar100", "final_conv", s, False) for s in range(5)]]
    assert all(c.n_images == 1000 and c.profile == "paper" and c.methods == ck.METHODS for c in paper)
    demo = ck.experiments.study_configs("demo", n_images=5, device="cpu")
    assert len(demo) == 9 and {c.name for c in demo if c.sparsity} == {
        "resnet-seed0-final_conv", "vgg-seed0-final_conv", "densenet-seed0-final_conv",
        "convnext-seed0-final_conv", "densenet-seed0-norm5"}
    with pytest.raises(ValueError, match="profile must be"):
        ck.experiments.study_configs("custom")
    cfg = RunConfig(model="m", methods=("CASE", "Grad-CAM"), fidelity_k=0.3)
    assert cfg.methods == ("gradcam", "case") and 0.3 in cfg.curve_ks
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_logits_strategy_reaches_the_engine(tmp_path):
    subject = tiny_subject()
    cfg = TINY.replace(n_images=4, methods=("case",), contrast_strategy="logits", contrast_k=2)
    ex = example_maps(cfg, [0, 1], subject)
    res = ex["result"]
    z = res.logits
    for b in range(2):
        for t in range(res.targets.shape[1]):
            u = int(res.targets[b, t])
            order = [c for c in z[b].argsort(descending=True).tolist() if c != u][:2]
            assert res.contrast[b, t].tolist() == order
    direct = ck.saliency(subject.model, ex["images"], "features.2", "case", res.targets, res.contrast)
    torch.testing.assert_close(direct, res.maps["case"])
    assert ex["targets"] == ("top1", "top2", "sibling")
    assert ex["target_names"][1] == [f"{r}: class {int(c)}" for r, c in zip(ex["targets"], res.targets[1])]


def test_paper_profile_holds_out_the_confusion_images(tmp_path, monkeypatch):
    """The paper subject: the confusion matrix comes from a held-out split, the sample from the rest."""
    subject = tiny_subject(n=40)
    items = [(x, y) for x, y, _ in subject.dataset]  # ImageNet-like items: no masks
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ck.models, "load_paper_model", lambda name,
                        device="cpu": (subject.model, {"final_conv": "features.2"}, None))
    monkeypatch.setattr(ck.data, "imagenet_val", lambda: items)
    cfg = RunConfig(model="resnet50", profile="paper", n_images=8, heldout=20, batch_size=8,
                    methods=("gradcam", "case"))
    out = run(cfg, results_dir=tmp_path / "res", progress=False)
    heldout, pool = ck.data.split_indices(40, 20, 0)
    ids = set(out.maps["image_id"])
    assert len(ids) == 8 and ids <= set(pool.tolist()) and not ids & set(heldout.tolist())
    assert out.maps["unique_evidence"].isna().all() and set(out.maps["target"]) == {"top1", "top2"}
    cached = list((tmp_path / "cache" / "confusion").glob("*.pt"))
    assert len(cached) == 1
    expected = torch.zeros(4, 4, dtype=torch.long)
    with torch.no_grad():
        for i in heldout.tolist():
            expected[items[i][1], int(subject.model(items[i][0][None]).argmax())] += 1
    stored = torch.load(cached[0], weights_only=True)  # counts and mean softmax probabilities (the tiebreak)
    assert torch.equal(stored["counts"], expected)
    probs = torch.zeros(4, 4, dtype=torch.float64)  # mean softmax per true class; a class without images: 0
    with torch.no_grad():
        for i in heldout.tolist():
            probs[items[i][1]] += torch.softmax(subject.model(items[i][0][None]).double(), 1)[0]
    n = expected.sum(1, keepdim=True).double()
    probs = torch.where(n > 0, probs / n.clamp(min=1), probs)
    assert torch.allclose(stored["probs"], probs)
    with pytest.raises(ValueError, match="seed=0"):
        ck.experiments.load_subject(cfg.replace(seed=1))


# --------------------------------------------------------------------------- SIGKILL and resume

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_experiments import TINY, tiny_subject
    from casekit.study.experiments import run
    cfg = TINY.replace(n_images=24, batch_size=2, methods=("gradcam", "scorecam", "case"))
    print("started", flush=True)
    run(cfg, tiny_subject(slow={slow}), results_dir=sys.argv[1], progress=False)
    """
)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    script = tmp_path / "runner.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests"), slow=0.02))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(killed)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    parts = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            parts = list((killed / "tiny-seed0-final_conv" / "maps").glob("part-*.parquet"))
            if len(parts) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, (f"the run finished before it could be killed: "
                                     f"{proc.stderr.read()[-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    n_parts = len(list((killed / "tiny-seed0-final_conv" / "maps").glob("part-*.parquet")))
    n_sparsity = len(list((killed / "tiny-seed0-final_conv" / "sparsity").glob("part-*.parquet")))
    assert 3 <= n_parts < 12  # stopped part-way
    assert n_sparsity in (n_parts - 1, n_parts)  # each batch commits its maps rows, then its sparsity rows

    cfg = TINY.replace(n_images=24, batch_size=2, methods=("gradcam", "scorecam", "case"))
    resumed = run(cfg, tiny_subject(), results_dir=killed, progress=False)
    assert resumed.skipped_batches == n_sparsity and resumed.computed_batches == 12 - n_sparsity
    whole = run(cfg, tiny_subject(), results_dir=tmp_path / "whole", progress=False)
    pd.testing.assert_frame_equal(resumed.maps, whole.maps)
    pd.testing.assert_frame_equal(resumed.sparsity, whole.sparsity)
    assert len(whole.maps) == 24 * 3 * 3 and not whole.maps.duplicated(list(MAP_KEY)).any()


# --------------------------------------------------------------------------- the demo profile


def _demo_available() -> bool:
    return (REPO / "casekit" / "subjects" / "demo.py").exists()


@pytest.mark.slow
@pytest.mark.skipif(not _demo_available(),
                    reason="casekit/subjects/demo.py (the demo profile) is not in this checkout")
def test_run_demo_small(tmp_path):
    res = ck.experiments.run_demo(n_images=6, results_dir=tmp_path, progress=False, seeds=(0, 1),
                                  batch_size=6)
    maps = res.maps
    assert set(maps["model"]) == {"resnet", "vgg", "densenet", "convnext"}
    assert set(maps.loc[maps["model"] == "densenet", "layer"]) == {"final_conv", "norm5"}
    assert set(maps.loc[maps["model"] == "densenet", "seed"]) == {0, 1}
    seed1 = maps[maps["seed"] == 1]
    assert seed1["p_before"].isna().all()  # seeds other than 0: RQ1 only
    assert set(maps["target"]) == {"top1", "top2", "sibling"}
    assert maps["unique_evidence"].notna().any()
    assert set(res.sparsity["layer"]) == {"final_conv", "norm5"}
    again = ck.experiments.run_demo(n_images=6, results_dir=tmp_path, progress=False, seeds=(0, 1),
                                    batch_size=6)
    assert all(r.computed_batches == 0 for r in again.runs)
    pd.testing.assert_frame_equal(again.maps, maps)
