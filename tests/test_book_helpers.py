"""casekit.study.experiments, "book: notebooks 01–03": the contrast-set study and the inputs of Figures 1–3.

Configs and hand-made result frames are checked against values written down here; the demo-zoo tests run one
tiny real study (one model, 4 images) and compare it with the plain runner, the benchmark's own masks and the
synthetic normalisation.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import casekit as ck
from casekit.cam.contrast import contrast_sets
from casekit.study import contrast_study as CS
from casekit.study import experiments as E
from casekit.study import runner
from casekit.subjects.synthetic import normalize

REPO = Path(__file__).resolve().parents[1]
DEMO_FAMILIES = ("resnet", "vgg", "densenet", "convnext")
PAPER_MODELS = ("resnet50", "vgg19_bn", "densenet201", "convnext_large")


# --------------------------------------------------------------------------- configs (no model is loaded)


def test_profile_models():
    assert E.profile_models("demo") == DEMO_FAMILIES
    assert E.profile_models("paper") == PAPER_MODELS
    for bad in ("custom", "Demo", ""):
        with pytest.raises(ValueError, match="profile must be one of demo, paper, cifar10"):
            E.profile_models(bad)


def test_study_config_picks_the_studys_run():
    first = E.study_config()
    assert (first.model, first.profile, first.layer, first.seed,
            first.n_images) == ("resnet", "demo", "final_conv", 0, 300)
    assert first == E.demo_configs()[0]
    assert first.rq2 and first.methods == ck.METHODS
    n5 = E.study_config("demo", "densenet", layer="norm5")
    assert (n5.model, n5.layer, n5.rq2) == ("densenet", "norm5", True)
    s2 = E.study_config("demo", "densenet", seed=2)
    assert (s2.seed, s2.rq2, s2.sparsity) == (2, False, ())  # the seed study's runs: RQ1 only
    opt = E.study_config("demo", "vgg", n_images=7, batch_size=5, k=0.1)
    assert (opt.model, opt.n_images, opt.batch_size, opt.k) == ("vgg", 7, 5, 0.1)
    paper = E.study_config("paper")
    assert (paper.model, paper.profile, paper.n_images) == ("resnet50", "paper", 1000)
    cifar = E.study_config("paper", "densenet201-cifar100", seed=4)
    assert (cifar.seed, cifar.rq2) == (4, False)


@pytest.mark.parametrize("profile, model, options, match", [
    ("demo", "vgg", {"layer": "norm5"}, "no run for model='vgg', layer='norm5', seed=0"),
    ("demo", "resnet", {"seed": 1}, "no run for model='resnet', layer='final_conv', seed=1"),
    ("demo", "densenet", {"seed": 3, "seeds": (0, 1)}, "seed=3"),
    ("demo", "resnet50", {}, "the demo study has no run"),
    ("paper", "resnet", {}, "the paper study has no run"),
])
def test_study_config_missing_run_raises(profile, model, options, match):
    with pytest.raises(ValueError, match=match):
        E.study_config(profile, model, **options)


def test_study_config_error_lists_the_runs():
    with pytest.raises(ValueError, match=r"it has resnet/seed 0/final_conv, vgg/seed 0/final_conv"):
        E.study_config("demo", "vgg", layer="norm5")
    with pytest.raises(ValueError, match="profile must be"):
        E.study_config("custom")


def test_contrast_configs_one_per_model_strategy_and_k():
    cs = E.contrast_configs(["resnet", "vgg"], ks=(3, 1), strategies=("logits", "confusion"))
    assert [(c.model, c.contrast_strategy, c.contrast_k) for c in cs] == list(
        itertools.product(["resnet", "vgg"], ["logits", "confusion"], [1, 3]))
    for c in cs:
        assert c.methods == ("case",) and c.rq1 and not c.rq2
        assert c.sparsity_layers == () and c.sparsity == ()
        assert (c.profile, c.layer, c.seed, c.n_images) == ("demo", "final_conv", 0, 300)
        assert c.tag == f"K{c.contrast_k}-{c.contrast_strategy}"
        assert c.name == f"{c.model}-seed0-final_conv-K{c.contrast_k}-{c.contrast_strategy}"
        assert c.sample_seed == E.study_config("demo", c.model).sample_seed  # the study's own sample
    assert len({c.name for c in cs}) == 8  # every run gets its own store folder

    every = E.contrast_configs()
    assert len(every) == 4 * 2 * 4
    assert list(dict.fromkeys(c.model for c in every)) == list(DEMO_FAMILIES)
    assert sorted({c.contrast_k for c in every}) == [1, 2, 3, 5]
    assert [c.contrast_strategy for c in every[:8]] == ["confusion"] * 4 + ["logits"] * 4

    paper = E.contrast_configs(profile="paper", ks=3)
    assert [c.model for c in paper] == [m for m in PAPER_MODELS for _ in range(2)]
    assert {(c.n_images, c.contrast_k, c.profile) for c in paper} == {(1000, 3, "paper")}


def test_contrast_configs_arguments_and_overrides():
    one = E.contrast_configs("densenet", ks=2, strategies="logits", layer="norm5", seed=2, n_images=9,
                             batch_size=7, k=0.1, device="cpu")
    assert len(one) == 1
    c = one[0]
    assert (c.model, c.layer, c.seed, c.n_images, c.contrast_k, c.contrast_strategy) == (
        "densenet", "norm5", 2, 9, 2, "logits")
    assert (c.batch_size, c.k, c.device) == (7, 0.1, "cpu")
    assert len(E.contrast_configs(["vgg", "vgg"], ks=(1,))) == 2  # a repeated model counts once


@pytest.mark.parametrize("field, value", [
    ("methods", ("case",)), ("rq1", True), ("rq2", True), ("sparsity_layers", ()), ("tag", "x"),
    ("contrast_k", 3), ("contrast_strategy", "logits"), ("model", "vgg"),
])
def test_contrast_configs_refuses_the_fields_it_sets(field, value):
    with pytest.raises(ValueError, match=f"contrast_configs sets \\['{field}'\\] itself"):
        E.contrast_configs("resnet", ks=(1,), **{field: value})


def test_contrast_configs_bad_models_and_strategies():
    with pytest.raises(ValueError, match="models is empty"):
        E.contrast_configs([], ks=(1,))
    with pytest.raises(ValueError, match="strategies must be distinct values"):
        E.contrast_configs("resnet", ks=(1,), strategies=("confusion", "confusion"))
    with pytest.raises(ValueError, match="strategies must be distinct values"):
        E.contrast_configs("resnet", ks=(1,), strategies="random")
    with pytest.raises(TypeError, match="models must"):
        E.contrast_configs(3, ks=(1,))


def test_check_ks():
    assert CS._check_ks((5, 1, 3)) == (1, 3, 5)  # sorted
    assert CS._check_ks(3) == (3,)
    assert CS._check_ks(np.int64(2)) == (2,)
    assert CS._check_ks([np.int32(4), 2]) == (2, 4)
    with pytest.raises(ValueError, match="ks is empty"):
        CS._check_ks(())
    with pytest.raises(ValueError, match=r"ks repeats a value: \(1, 3, 1\)"):
        CS._check_ks((1, 3, 1))
    with pytest.raises(TypeError, match="each K of ks must be an int, got float"):
        CS._check_ks((1, 2.0))
    with pytest.raises(TypeError, match="each K of ks must be an int, got bool"):
        CS._check_ks((True, 2))
    with pytest.raises(TypeError, match="ks must be a sequence"):
        CS._check_ks(2.5)
    with pytest.raises(TypeError, match="ks must be a sequence"):
        CS._check_ks(True)
    with pytest.raises(ValueError, match="each K of ks must be >= 1, got 0"):
        CS._check_ks((0, 1))
    with pytest.raises(ValueError, match="ks is empty"):  # through contrast_configs
        E.contrast_configs("resnet", ks=[])


# --------------------------------------------------------------------------- representative_images


def agreement_frame(values, method="gradcam", model="m", layer="final_conv", seed=0, sibling=None):
    """A maps table with one top-1 and one top-2 row per image (``values``: image id → top-2 agreement,
    NaN = a constant map) and, with ``sibling``, a sibling row per image."""
    rows = []
    for i, v in values.items():
        base = {"model": model, "seed": seed, "layer": layer, "method": method, "image_id": i,
                "layer_name": "x",
                "label": 0, "unique_evidence": np.nan, "shared_evidence": np.nan}
        rows.append({**base, "target": "top1", "target_class": 0, "comparison": "", "constant": False,
                     "agreement": np.nan})
        rows.append({**base, "target": "top2", "target_class": 1, "comparison": "top1_vs_top2",
                     "constant": bool(np.isnan(v)), "agreement": v})
        if sibling is not None:
            rows.append({**base, "target": "sibling", "target_class": 2, "comparison": "true_vs_sibling",
                         "constant": False, "agreement": sibling[i]})
    return pd.DataFrame(rows)


def test_representative_images_closest_to_the_median():
    values = {10: 0.25, 11: 0.75, 12: 0.5, 13: 1.0, 14: 0.0, 15: np.nan, 16: np.nan}
    # finite values 0.25, 0.75, 0.5, 1.0, 0.0 → median 0.5; distances 0.25, 0.25, 0, 0.5, 0.5, NaN last
    expected = [12, 10, 11, 13, 14, 15, 16]
    frame = agreement_frame(values)
    # rows of another method, layer, seed and model with other values must not change the answer
    noise = {i: 0.9 - 0.1 * (i - 10) for i in values}
    frame = pd.concat([agreement_frame(noise, method="case"), frame, agreement_frame(noise, layer="norm5"),
                       agreement_frame(noise, seed=1), agreement_frame(noise, model="other")],
                      ignore_index=True)
    frame = frame.sample(frac=1.0, random_state=0)  # row order must not matter
    assert E.representative_images(frame, model="m", n=3) == expected[:3]
    assert E.representative_images(frame, model="m", n=7) == expected
    assert E.representative_images(E.Results(frame, pd.DataFrame()), model="m", n=1) == [12]
    # the other method's own median: 0.9 … 0.3 → median 0.6, closest 13 (0.6), then 12 and 14 (tie by id)
    assert E.representative_images(frame, model="m", method="case", n=3) == [13, 12, 14]


def test_representative_images_ties_by_image_id():
    # Exact ties in real numbers: median 0.3 is 0.1 from images 0 and 1 and 0.2 from images 2 and 3.  In
    # floating point 0.4 − 0.3 and 0.3 − 0.2 differ in the last bit; the tie must still go to the lower id.
    assert E.representative_images(agreement_frame({0: 0.2, 1: 0.4, 2: 0.5, 3: 0.1}), model="m",
                                   n=4) == [0, 1, 2, 3]
    assert E.representative_images(agreement_frame({0: 0.4, 1: 0.2, 2: 0.1, 3: 0.5}), model="m",
                                   n=4) == [0, 1, 2, 3]
    # agreements as the runner writes them (top-k counts / 12): median 4/12, images 0 and 1 at 1/12 from it
    twelfths = {0: 3 / 12, 1: 5 / 12, 2: 7 / 12, 3: 1 / 12}
    assert E.representative_images(agreement_frame(twelfths), model="m", n=4) == [0, 1, 2, 3]
    assert E.representative_images(agreement_frame({5: 0.5, 3: 0.5, 4: 0.5}), model="m", n=2) == [3, 4]


def test_representative_images_all_nan_sibling_and_errors():
    assert E.representative_images(agreement_frame({7: np.nan, 2: np.nan, 5: np.nan}), model="m",
                                   n=3) == [2, 5, 7]
    frame = agreement_frame({0: 0.1, 1: 0.2, 2: 0.3}, sibling={0: 0.9, 1: 0.6, 2: 0.0})
    assert E.representative_images(frame, model="m", n=1) == [1]
    # 0.6; 0.3 off
    assert E.representative_images(frame, model="m", n=2, comparison="true_vs_sibling") == [1, 0]
    with pytest.raises(ValueError, match="no agreement rows for model='x'"):
        E.representative_images(frame, model="x")
    with pytest.raises(ValueError, match="no agreement rows"):
        E.representative_images(frame, model="m", layer="norm5")
    with pytest.raises(ValueError, match="n must be >= 1"):
        E.representative_images(frame, model="m", n=0)
    with pytest.raises(TypeError, match="data must be a Results or the maps DataFrame"):
        E.representative_images(frame.to_dict(), model="m")


# --------------------------------------------------------------------------- denormalizer


def test_denormalizer_demo_inverts_the_benchmarks_normalisation():
    x = torch.rand(2, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    show = E.denormalizer(E.RunConfig(model="resnet"))
    torch.testing.assert_close(show(normalize(x)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(show(normalize(x[0])), x[0], atol=1e-6, rtol=0)  # one image [3, H, W]
    # mean (0.50, 0.49, 0.48), std (0.19, 0.20, 0.20): z = 10 → clipped to 1, z = −10 → clipped to 0
    z = torch.zeros(3, 2, 2)
    z[:, 0, 0], z[:, 0, 1], z[:, 1, 0] = 1.0, 10.0, -10.0
    out = show(z)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.69, 0.69, 0.68]))
    torch.testing.assert_close(out[:, 1, 1], torch.tensor([0.50, 0.49, 0.48]))
    assert (out[:, 0, 1] == 1).all() and (out[:, 1, 0] == 0).all()


@pytest.mark.parametrize("model, mean, std", [
    ("resnet50", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet
    ("convnext_large", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("densenet201-cifar100", (0.509, 0.487, 0.442), (0.202, 0.200, 0.204)),  # CIFAR-100
])
def test_denormalizer_paper_statistics_by_model(model, mean, std):
    show = E.denormalizer(E.RunConfig(model=model, profile="paper"))
    images = torch.zeros(2, 3, 1, 2)
    images[:, :, 0, 1] = 1.0
    images[1, :, 0, 0] = -1.0
    out = show(images)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(mean))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor(mean) + torch.tensor(std))
    torch.testing.assert_close(out[1, :, 0, 0], torch.tensor(mean) - torch.tensor(std))
    torch.testing.assert_close(show(torch.full((3, 1, 1), -9.0)), torch.zeros(3, 1, 1))  # clipped


def test_denormalizer_unknown_profile_raises():
    with pytest.raises(ValueError, match="no known normalisation for profile 'custom'"):
        E.denormalizer(E.RunConfig(model="mine", profile="custom"))


def test_part_areas_paper_and_bad_ids():
    empty = E.part_areas("paper")
    assert empty.empty and list(empty.columns) == ["image_id", "unique_area", "shared_area"]
    assert E.part_areas("paper", [1, 2]).empty
    with pytest.raises(ValueError, match="profile must be 'demo', 'paper' or 'cifar10'"):
        E.part_areas("custom")


# --------------------------------------------------------------------------- the demo zoo

demo = pytest.mark.skipif(not (REPO / "casekit" / "subjects" / "demo.py").exists(),
                          reason="no demo profile in this checkout")


@pytest.fixture(scope="module")
def test_split():
    return ck.demo.dataset("test", progress=False)


@pytest.mark.slow
@demo
def test_part_areas_are_the_mask_means(test_split):
    ids = [0, 7, 123, 999]
    areas = E.part_areas("demo", ids)
    assert list(areas.columns) == ["image_id", "unique_area", "shared_area"]
    assert areas["image_id"].tolist() == ids and areas["image_id"].dtype == np.int64
    for row, i in zip(areas.itertuples(), ids):
        masks = test_split[i][2]
        assert row.unique_area == pytest.approx(masks["unique"].double().mean().item(), abs=1e-15)
        assert row.shared_area == pytest.approx(masks["shared"].double().mean().item(), abs=1e-15)
    every = E.part_areas()
    assert len(every) == len(test_split) and every["image_id"].tolist() == list(range(len(test_split)))
    assert ((every["unique_area"] + every["shared_area"]) <= 1).all()
    pd.testing.assert_frame_equal(every.iloc[ids].reset_index(drop=True), areas)
    assert E.part_areas("demo", []).empty
    for bad in ([-1], [0, len(test_split)]):
        with pytest.raises(ValueError, match="image_ids must lie in 0..999"):
            E.part_areas("demo", bad)


@pytest.fixture(scope="module")
def resnet_subject():
    return E.load_subject(E.study_config("demo", "resnet"))


@pytest.mark.slow
@demo
def test_case_example_projection_and_contrast_sets(resnet_subject, test_split):
    config = E.study_config("demo", "resnet")
    ids = [3, 11]
    ex = E.case_example(config, ids, resnet_subject)
    assert set(ex) == {"vectors", "images", "masks", "labels", "targets", "target_names", "contrast_names",
                       "image_ids", "layer"}
    v = ex["vectors"]
    B, T, K = 2, 3, 3
    C = v.w_target.shape[-1]
    assert ex["targets"] == ("top1", "top2", "sibling") and ex["image_ids"] == ids
    assert ex["layer"] == resnet_subject.layers["final_conv"]
    assert v.w_target.shape == v.w_mean.shape == v.w_perp.shape == (B, T, C)
    assert v.w_contrast.shape == (B, T, K, C) and v.contrast.shape == (B, T, K)
    assert v.gradcam.shape == v.case.shape == v.contrast_gradcam.shape == (B, T, 64, 64)
    assert ex["images"].shape == (B, 3, 64, 64)
    # displayable images: the benchmark's raw images; masks and labels: the dataset's
    torch.testing.assert_close(ex["images"], torch.stack([test_split.raw(i) for i in ids]), atol=1e-6, rtol=0)
    for b, i in enumerate(ids):
        _, label, masks = test_split[i]
        assert int(ex["labels"][b]) == label
        assert torch.equal(ex["masks"]["unique"][b],
                           masks["unique"]) and torch.equal(ex["masks"]["shared"][b], masks["shared"])
    # the projection: w̄ is the contrast mean, w⊥ ⟂ w̄, w_u − w⊥ ∥ w̄
    torch.testing.assert_close(v.w_mean, v.w_contrast.mean(dim=2))
    cos_perp = torch.nn.functional.cosine_similarity(v.w_perp, v.w_mean, dim=-1)
    assert cos_perp.abs().max() < 1e-3
    dot = (v.w_perp * v.w_mean).sum(-1)
    assert (dot.abs() <= 1e-3 * v.w_perp.norm(dim=-1) * v.w_mean.norm(dim=-1)).all()
    removed = v.w_target - v.w_perp
    assert torch.nn.functional.cosine_similarity(removed, v.w_mean, dim=-1).abs().min() > 0.999
    torch.testing.assert_close(v.cosine, torch.nn.functional.cosine_similarity(v.w_target, v.w_mean, dim=-1))
    torch.testing.assert_close(v.kept, v.w_perp.norm(dim=-1) / v.w_target.norm(dim=-1))
    # the run's targets and confusion-matrix contrast sets, named
    names = test_split.class_names
    # the study's rule: confusion counts, ties broken by the held-out mean probabilities, then by index
    sets = contrast_sets(resnet_subject.confusion, K, tiebreak=resnet_subject.tiebreak)
    for b in range(B):
        row = v.targets[b].tolist()
        assert row[0] == int(v.logits[b].argmax())
        assert row[1] == int(v.logits[b].topk(2).indices[1])
        assert row[2] in ck.demo.siblings(int(ex["labels"][b]))
        assert ex["target_names"][b] == [f"{role}: {names[c]}" for role, c in zip(ex["targets"], row)]
        for t in range(T):
            assert v.contrast[b, t].tolist() == sets[row[t]].tolist()
            assert len(ex["contrast_names"][b][t]) == K
            assert ex["contrast_names"][b][t] == [names[c] for c in sets[row[t]].tolist()]
    # CASE's and Grad-CAM's maps are the runner's (same targets, contrast and layer)
    run_maps = E.example_maps(config, ids, resnet_subject, methods=("case", "gradcam"))["result"].maps
    torch.testing.assert_close(v.case, run_maps["case"], atol=1e-6, rtol=0)
    torch.testing.assert_close(v.gradcam, run_maps["gradcam"], atol=1e-6, rtol=0)


@pytest.mark.slow
@demo
def test_case_example_k1_logits_and_errors(resnet_subject):
    config = E.study_config("demo", "resnet")
    one = E.case_example(config.replace(contrast_k=1), [3], resnet_subject)
    assert one["vectors"].w_contrast.shape[2] == 1
    assert all(len(names) == 1 for names in one["contrast_names"][0])
    # with a single contrast class w̄ is that class's pooled gradient
    torch.testing.assert_close(one["vectors"].w_mean, one["vectors"].w_contrast[:, :, 0])
    lg = E.case_example(config.replace(contrast_strategy="logits", contrast_k=2), [3], resnet_subject)
    v = lg["vectors"]
    top3 = v.logits[0].topk(3).indices.tolist()
    for t in range(3):
        u = int(v.targets[0, t])
        assert v.contrast[0, t].tolist() == [c for c in top3 if c != u][:2]
    with pytest.raises(ValueError, match="image_ids is empty"):
        E.case_example(config, [], resnet_subject)


STUDY_KS = (1, 3)
STUDY_N = 4


@pytest.fixture(scope="module")
def contrast_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("contrast")
    rows = E.contrast_study("resnet", ks=STUDY_KS, n_images=STUDY_N, results_dir=root, progress=False)
    return rows, root


def _store_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
@demo
def test_contrast_study_rows(contrast_run):
    rows, root = contrast_run
    assert list(rows.columns[:8]) == list(E.CONTRAST_KEY)
    assert rows["contrast_k"].dtype == np.int64
    settings = rows[["contrast_strategy", "contrast_k"]].drop_duplicates().apply(tuple, axis=1).tolist()
    assert settings == [("confusion", 1), ("confusion", 3), ("logits", 1), ("logits", 3)]
    # 1 model × 2 strategies × 2 K × 4 images × 3 targets × CASE only
    assert len(rows) == 2 * 2 * STUDY_N * 3
    assert set(rows["method"]) == {"case"} and set(rows["model"]) == {"resnet"}
    assert not rows.duplicated(list(E.CONTRAST_KEY)).any()
    for _, g in rows.groupby(["contrast_strategy", "contrast_k"]):
        assert len(g) == STUDY_N * 3 and set(g["target"]) == {"top1", "top2", "sibling"}
    ids = [set(g["image_id"]) for _, g in rows.groupby(["contrast_strategy", "contrast_k"])]
    assert all(s == ids[0] for s in ids) and len(ids[0]) == STUDY_N  # the same sample in every setting
    assert rows["p_before"].isna().all()  # rq2 off
    assert rows.loc[rows["target"] != "top1", "agreement"].notna().any()
    assert rows["unique_evidence"].notna().any()
    # each run in its own store under <results_dir>/contrast_study
    names = sorted(p.name for p in (root / E.CONTRAST_STUDY_DIR).iterdir())
    assert names == sorted(f"resnet-seed0-final_conv-K{k}-{s}" for k in STUDY_KS for s in E.STRATEGIES)
    for n in names:
        assert (root / E.CONTRAST_STUDY_DIR / n / "maps" / "store.json").exists()
        assert not (root / E.CONTRAST_STUDY_DIR / n / "sparsity").exists()  # no sparsity store


@pytest.mark.slow
@demo
def test_contrast_study_second_call_loads(contrast_run, monkeypatch):
    rows, root = contrast_run
    before = _store_files(root)

    def fail(*args, **kwargs):
        raise AssertionError("a committed batch was computed again")

    monkeypatch.setattr(runner, "explain_batch", fail)
    again = E.contrast_study("resnet", ks=STUDY_KS, n_images=STUDY_N, results_dir=root, progress=False)
    pd.testing.assert_frame_equal(again, rows)
    assert _store_files(root) == before  # nothing written, nothing touched
    only = E.contrast_study("resnet", ks=(3,), strategies="logits", n_images=STUDY_N, results_dir=root,
                            progress=False)
    expected = rows[(rows.contrast_strategy == "logits") & (rows.contrast_k == 3)].reset_index(drop=True)
    pd.testing.assert_frame_equal(only, expected)


@pytest.mark.slow
@demo
def test_contrast_study_rows_equal_plain_runs(contrast_run, resnet_subject, tmp_path):
    rows, _ = contrast_run
    for strategy, K in (("confusion", 3), ("logits", 1)):
        (cfg,) = E.contrast_configs("resnet", ks=(K,), strategies=strategy, n_images=STUDY_N)
        plain = E.run(cfg, resnet_subject, results_dir=tmp_path, progress=False).maps
        mine = rows[(rows["contrast_strategy"] == strategy) & (rows["contrast_k"] == K)]
        mine = mine.drop(columns=["contrast_strategy", "contrast_k"]).reset_index(drop=True)
        assert set(mine.columns) == set(plain.columns)
        pd.testing.assert_frame_equal(mine[list(plain.columns)], plain)
    # K and the strategy reach CASE: the settings' maps differ
    top2 = rows[rows["target"] == "top2"].set_index(["contrast_strategy", "contrast_k",
                                                     "image_id"])["agreement"]
    assert not np.allclose(top2.loc[("confusion", 1)], top2.loc[("confusion", 3)], equal_nan=True)


# ----------------------------------------------------------------------------------------------
# missing_inputs


def test_missing_inputs_names_every_missing_item(tmp_path, monkeypatch):
    from casekit import finetune, models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path / "cache"))
    assert E.missing_inputs("demo") == []
    missing = E.missing_inputs("paper")
    # four weight files, one message for the five fine-tuned seeds, ImageNet, CIFAR-100
    assert len(missing) == 7, missing
    files = []
    for name in E.PAPER_STUDY_MODELS:
        entry, path = models.torchvision_weights_file(models.paper_model_spec(name)[1].builder)
        assert str(path.parent).startswith(str(tmp_path / "torch"))
        assert sum(path.name in m for m in missing) == 1 and any(entry.url in m for m in missing)
        files.append(path)
    seeds = [m for m in missing if "fine-tuned" in m]
    assert len(seeds) == 1 and "seed(s) 0 1 2 3 4" in seeds[0]
    assert str(tmp_path / "cache" / "finetune") in seeds[0]
    assert any("ImageNet" in m and str(tmp_path / "data" / "imagenet" / "val") in m for m in missing)
    assert any("CIFAR-100" in m and str(tmp_path / "data" / "cifar100") in m for m in missing)

    # provide the weights and two checkpoints: only the data and the three other seeds remain
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    for s in (0, 3):
        ckpt = finetune.checkpoint_path(tmp_path / "cache" / "finetune", s)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(b"")
    missing = E.missing_inputs("paper")
    assert len(missing) == 3, missing
    assert "seed(s) 1 2 4" in next(m for m in missing if "fine-tuned" in m)
    assert not any(".pth" in m for m in missing)
    # only what the given runs need
    only_resnet = E.missing_inputs("paper", [E.RunConfig(model="resnet50", profile="paper")])
    assert len(only_resnet) == 1 and "ImageNet" in only_resnet[0]
