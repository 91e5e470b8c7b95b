"""Issue 9 wired into the study: the contrast tiebreak in runs, the sign test and conflicts in Table I,
partly degenerate maps, constant pairs in Table III, the projection field; hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps
from test_experiments import TINY, tiny_subject
from test_tables import make_maps

import casekit as ck
from casekit.report import tables as T
from casekit.study.batch import batch_context
from casekit.study.config import ROW_FORMAT, RunConfig
from casekit.study.experiments import MAP_KEY, degenerate_maps, run

# tiny_subject's confusion: 22 on the diagonal, 2 elsewhere, M[0, 1] = M[2, 3] = 5.  Tiebreak favouring the
# larger class index (row-independent): tb[u, v] = v / 10.
TB = torch.arange(4, dtype=torch.float64).div(10).expand(4, 4).clone()
# K = 2 by hand.  With the tiebreak: row 0 {1 (counts: 5 > 2), 3 (tie 2 = 2, .3 > .2)}; row 1 {3, 2} (all
# tied at 2, by .3 and .2 over class 0's 0); row 2 {3 (counts), 1 (.1 > 0)}; row 3 {2, 1} (tied, .2, .1 > 0).
SETS_PROBS = [[1, 3], [3, 2], [3, 1], [2, 1]]
DECISIONS_PROBS = {"counts": 2, "tiebreak": 6, "index": 0}
# Without it (lower index first): row 0 {1, 2}, row 1 {0, 2}, row 2 {3, 0}, row 3 {0, 1}.
SETS_NONE = [[1, 2], [0, 2], [3, 0], [0, 1]]
DECISIONS_NONE = {"counts": 2, "tiebreak": 0, "index": 6}


def _subject():
    s = tiny_subject()
    s.tiebreak = TB
    return s


@pytest.mark.parametrize("rule,sets,decisions", [("probs", SETS_PROBS, DECISIONS_PROBS),
                                                 ("none", SETS_NONE, DECISIONS_NONE)])
def test_runner_uses_the_tiebreak_and_records_decisions(tmp_path, rule, sets, decisions):
    cfg = TINY.replace(n_images=4, methods=("case",), rq2=False, sparsity_layers=(), contrast_k=2,
                       contrast_tiebreak=rule)
    ctx = batch_context(cfg, _subject())
    targets = torch.tensor([[0, 1], [2, 3]])
    got = ctx.contrast(targets, torch.zeros(2, 4))
    want = torch.tensor(sets)[targets]
    assert torch.equal(got.cpu(), want)
    assert ctx.decisions == decisions
    res = run(cfg, _subject(), results_dir=tmp_path, progress=False)
    assert res.contrast_decisions == decisions
    stored = ck.store.ResultStore(res.path / "maps", MAP_KEY).run_config
    assert stored["contrast_decisions"] == decisions and stored["run"]["contrast_tiebreak"] == rule


def test_case_rows_follow_the_tiebroken_sets(tmp_path):
    """The runner's CASE agreement equals one computed from an engine call with the hand-made sets."""
    cfg = TINY.replace(n_images=4, methods=("case",), rq2=False, sparsity_layers=(), contrast_k=2,
                       siblings=False)
    subject = _subject()
    res = run(cfg, subject, results_dir=tmp_path, progress=False)
    ids = sorted(set(res.maps["image_id"]))
    images = torch.stack([subject.dataset[i][0] for i in ids])
    with torch.no_grad():
        top = subject.model(images).topk(2, dim=1).indices
    sets = torch.tensor(SETS_PROBS)
    out = ck.explain(subject.model, images, "features.2", "case", top, sets[top])
    m = out.maps["case"]
    want = ck.metrics.topk_agreement(m[:, :1], m[:, 1:], cfg.k, cfg.ties, cfg.sample_seed).flatten().numpy()
    got = res.maps[res.maps["target"] == "top2"].sort_values("image_id")["agreement"].to_numpy()
    np.testing.assert_allclose(got, want)


def test_outdated_store_is_recomputed_not_mixed(tmp_path):
    cfg = TINY.replace(n_images=4, methods=("gradcam",), rq2=False, sparsity_layers=())
    first = run(cfg, _subject(), results_dir=tmp_path, progress=False)
    meta = first.path / "maps" / "store.json"
    import json
    d = json.loads(meta.read_text())
    d["config"]["row_format"] = ROW_FORMAT - 1  # as an older casekit wrote it
    del d["config"]["run"]["contrast_tiebreak"]
    meta.write_text(json.dumps(d))
    with pytest.warns(RuntimeWarning, match="older casekit"):
        again = run(cfg, _subject(), results_dir=tmp_path, progress=False)
    assert again.computed_batches == 1
    pd.testing.assert_frame_equal(again.maps, first.maps)


def test_store_of_an_older_contrast_rule_is_recomputed_but_another_subject_is_refused(tmp_path):
    cfg = TINY.replace(n_images=4, methods=("case",), rq2=False, sparsity_layers=())
    first = run(cfg, _subject(), results_dir=tmp_path, progress=False)
    meta = first.path / "maps" / "store.json"
    import json
    d = json.loads(meta.read_text())
    stored = dict(d["config"]["contrast_decisions"])
    assert sum(stored.values()) > 0
    d["config"]["contrast_decisions"] = {"counts": 0, "tiebreak": 0, "index": sum(stored.values())}
    meta.write_text(json.dumps(d))  # same run, same subject, slots decided by an older rule
    with pytest.warns(RuntimeWarning, match="older casekit"):
        again = run(cfg, _subject(), results_dir=tmp_path, progress=False)
    assert again.computed_batches == 1
    pd.testing.assert_frame_equal(again.maps, first.maps)
    d = json.loads(meta.read_text())
    assert d["config"]["contrast_decisions"] == stored
    d["config"]["subject"] = "another-model"
    d["config"]["contrast_decisions"] = {"counts": 0, "tiebreak": 0, "index": sum(stored.values())}
    meta.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="recompute=True"):
        run(cfg, _subject(), results_dir=tmp_path, progress=False)


def test_config_fields_validated():
    with pytest.raises(ValueError, match="contrast_tiebreak"):
        RunConfig(model="x", contrast_tiebreak="index")
    with pytest.raises(ValueError, match="projection"):
        RunConfig(model="x", projection="pooledd")
    assert RunConfig(model="x").contrast_tiebreak == "probs"


def test_projection_reaches_the_engine(tmp_path):
    subject = _subject()
    cfg = TINY.replace(n_images=4, methods=("case",), rq2=False, sparsity_layers=(), siblings=False)
    full = run(cfg.replace(projection="full"), subject, results_dir=tmp_path / "f", progress=False)
    ids = sorted(set(full.maps["image_id"]))
    images = torch.stack([subject.dataset[i][0] for i in ids])
    with torch.no_grad():
        top = subject.model(images).topk(2, dim=1).indices
    sets = torch.tensor(SETS_PROBS[:])  # contrast_k = 3 in TINY: recompute the sets
    sets = ck.contrast_sets(subject.confusion, 3, TB)
    out = ck.explain(subject.model, images, "features.2", "case", top, sets[top], projection="full")
    m = out.maps["case"]
    want = ck.metrics.topk_agreement(m[:, :1], m[:, 1:], cfg.k, cfg.ties, cfg.sample_seed).flatten().numpy()
    got = full.maps[full.maps["target"] == "top2"].sort_values("image_id")["agreement"].to_numpy()
    np.testing.assert_allclose(got, want)


# --------------------------------------------------------------------------- tables


def bimodal(model, method, rng):
    """CASE: 14 agreements of 0 and 16 of 0.55 (median 0.55 ≥ 0.5, yet the Wilcoxon rejects: the zeros sit
    far below, the rest just above); the others well below 0.5."""
    if method == "case":
        return np.array([0.0] * 14 + [0.55] * 16)
    return np.clip(rng.normal(0.3, 0.1, 30), 0, 1)


def test_table1_sign_test_columns_and_conflicts():
    full = T.table1_full(make_maps(bimodal), n_boot=50)
    case = full[full["method"] == "case"]
    assert len(case) == 4
    for r in case.itertuples():
        # 14 below 0.5, 16 above: exact one-sided sign test, P(Bin(30, 1/2) ≥ 14)
        assert r.sign_p == pytest.approx(sps.binomtest(14, 30, 0.5, alternative="greater").pvalue)
        assert r.sign_p == pytest.approx(sum(sps.binom.pmf(j, 30, 0.5) for j in range(14, 31)))
        assert not r.sign_reject and r.median == pytest.approx(0.55)
        d = np.array([-0.5] * 14 + [0.05] * 16)
        assert r.p == pytest.approx(sps.wilcoxon(d, alternative="less").pvalue) and r.reject
        assert r.conflict and r.sign_p_fmt == ck.stats.format_p(r.sign_p)
    assert T.conflict_count(full) == 4 + int(full[full["method"] != "case"]["conflict"].sum())
    # conflict by hand: the verdicts differ, or the Wilcoxon rejects on the wrong side of the median
    expect = (full["reject"] != full["sign_reject"]) | (full["reject"] & (full["median"] >= 0.5))
    assert (full["conflict"] == expect).all()
    assert not full[full["method"] != "case"]["conflict"].any()  # clearly below: both tests reject
    with pytest.raises(ValueError, match="conflict"):
        T.conflict_count(full.drop(columns="conflict"))


def test_partly_degenerate_counts_and_sensitivity_row():
    maps = make_maps(lambda model, method, rng: np.clip(rng.normal(0.3, 0.1, 30), 0, 1))
    maps["partly_degenerate"] = False
    # ResNet Grad-CAM: top-1 maps of images 0–2 and the top-2 map of image 3 partly degenerate
    sel = (maps["model"] == "resnet") & (maps["method"] == "gradcam")
    maps.loc[sel & (maps["target"] == "top1") & maps["image_id"].isin([0, 1, 2]), "partly_degenerate"] = True
    maps.loc[sel & (maps["target"] == "top2") & (maps["image_id"] == 3), "partly_degenerate"] = True
    deg = degenerate_maps(maps)
    row = deg[(deg["model"] == "resnet") & (deg["method"] == "gradcam")].set_index("target")
    assert row.loc["top1", "n_partly_degenerate"] == 3 and row.loc["top2", "n_partly_degenerate"] == 1
    assert row.loc["top1", "fraction_partly_degenerate"] == pytest.approx(0.1)
    assert deg["n_partly_degenerate"].sum() == 4
    full = T.table1_full(maps, n_boot=50)
    r = full[(full["model"] == "resnet") & (full["method"] == "gradcam")].iloc[0]
    assert r["n_partly_degenerate"] == 4 and r["n"] == 30
    sens = T.table1_sensitivity(maps, n_boot=50)
    s = sens[(sens["model"] == "resnet") & (sens["method"] == "gradcam")].set_index("partly_degenerate")
    assert s.loc["kept", "n"] == 30 and s.loc["excluded", "n"] == 26
    x = maps[sel & (maps["target"] == "top2") & ~maps["image_id"].isin([0, 1, 2, 3])]["agreement"]
    assert s.loc["excluded", "p"] == pytest.approx(sps.wilcoxon(x - 0.5, alternative="less").pvalue)
    assert len(sens) == 2 * len(full)


def test_table3_constant_pairs_kept_and_excluded():
    def fid(model, method, rng):
        pb = rng.uniform(0.6, 1.0, 30)
        pa = np.clip(pb - rng.normal(0.3 if method == "case" else 0.2, 0.05, 30), 0, 1)
        return pb, pa, pa
    maps = make_maps(lambda m, me, rng: np.full(30, 0.3), fid)
    top1 = maps["target"] == "top1"
    # ResNet Score-CAM: images 0–4 constant (drop 0); CASE image 7 constant
    sc = top1 & (maps["model"] == "resnet") & (maps["method"] == "scorecam") & (maps["image_id"] < 5)
    ca = top1 & (maps["model"] == "resnet") & (maps["method"] == "case") & (maps["image_id"] == 7)
    for sel in (sc, ca):
        maps.loc[sel, ["constant"]] = True
        maps.loc[sel, "p_after_5"] = maps.loc[sel, "p_before"]
        maps.loc[sel, ["p_after", "drop", "relative_drop", "relative_drop_5"]] = [0, 0, 0, 0]
        maps.loc[sel, "p_after"] = maps.loc[sel, "p_before"]
    both = T.table3_both_ways(maps)
    r = both[(both["model"] == "resnet") & (both["method"] == "scorecam")].set_index("constant_pairs")
    assert r.loc["kept", "n"] == 30 and r.loc["excluded", "n"] == 24
    assert r.loc["kept", "n_constant"] == 5 and r.loc["excluded", "n_pairs_excluded"] == 6
    m = maps[top1 & (maps["model"] == "resnet")]
    drops_sc = m[m["method"] == "scorecam"].set_index("image_id")["relative_drop"]
    drops_ca = m[m["method"] == "case"].set_index("image_id")["relative_drop"]
    keep = [i for i in range(30) if i >= 5 and i != 7]
    assert r.loc["kept", "mean"] == pytest.approx(drops_sc.mean())
    assert r.loc["excluded", "mean"] == pytest.approx(drops_sc[keep].mean())
    t = sps.ttest_rel(drops_ca[keep], drops_sc[keep])
    assert r.loc["excluded", "p_two_sided"] == pytest.approx(t.pvalue)
    with pytest.raises(ValueError, match="constant_pairs"):
        T.table3_full(maps, constant_pairs="dropped")


# --------------------------------------------------------------------------- the CIFAR-100 seed study


def test_stratified_split_by_hand():
    from casekit.study.subject import stratified_split
    # shares 3·3/6 = 1.5, 3·2/6 = 1, 3·1/6 = .5 → floors 1, 1, 0; one more to the largest remainder
    # (.5 for classes 0 and 2: the lower class wins) → 2, 1, 0 held out
    labels = [0, 0, 0, 1, 1, 2]
    held, pool = stratified_split(labels, 3, seed=0)
    held_labels = [labels[i] for i in held.tolist()]
    assert held_labels.count(0) == 2 and held_labels.count(1) == 1 and held_labels.count(2) == 0
    assert sorted(held.tolist() + pool.tolist()) == list(range(6))
    assert not set(held.tolist()) & set(pool.tolist())
    again, _ = stratified_split(labels, 3, seed=0)
    assert torch.equal(held, again)
    with pytest.raises(ValueError, match="leaving images"):
        stratified_split(labels, 6, seed=0)


def test_cifar100_seed_study_splits_a_real_size_test_set(tmp_path, monkeypatch):
    """A fake CIFAR-100 folder of the real size (10,000 test images, 100 per class): the paper config holds
    out 5,000 (50 per class) for the confusion and evaluates from the other 5,000."""
    from casekit.study import profiles
    from casekit.study.subject import load_subject
    from casekit.subjects import data as D
    D.write_fake_cifar100(tmp_path / "c100", n_train=2, n_test=10_000)
    ds = D.cifar100(tmp_path / "c100", train=False, image_size=8, verify_md5=False)
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ck.data, "cifar100", lambda train=False: ds)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 100)).eval()
    monkeypatch.setattr(ck.finetune, "load_finetuned",
                        lambda path, device="cpu": (model, {"final_conv": "0"}))
    cfgs = [c for c in profiles.paper_configs() if c.model == "densenet201-cifar100"]
    assert len(cfgs) == 5 and {c.heldout for c in cfgs} == {5_000}
    assert profiles.config_problems(profiles.paper_configs()) == []
    subject = load_subject(cfgs[0])
    labels = np.asarray(ds.targets)
    pool = np.asarray(subject.pool)
    held = np.setdiff1d(np.arange(10_000), pool)
    assert len(pool) == 5_000 and len(held) == 5_000
    assert (np.bincount(labels[held], minlength=100) == 50).all()
    assert (np.bincount(labels[pool], minlength=100) == 50).all()
    assert torch.equal(subject.confusion.sum(1), torch.full((100,), 50))  # the confusion is the held-out half
    assert torch.allclose(subject.tiebreak.sum(1), torch.ones(100, dtype=torch.float64))


def test_missing_inputs_validates_configurations(monkeypatch):
    from casekit.study import profiles
    whole = RunConfig(model="densenet201-cifar100", profile="paper", heldout=10_000, rq2=False,
                      sparsity_layers=())
    problems = profiles.config_problems([whole])
    assert len(problems) == 1 and "heldout=10000" in problems[0] and "leaves none" in problems[0]
    assert problems[0] in profiles.missing_inputs("paper", [whole])
    big = RunConfig(model="resnet50", profile="paper", heldout=49_500, n_images=1000)
    assert "n_images=1000 exceeds the 500" in profiles.config_problems([big])[0]
    assert profiles.config_problems([RunConfig(model="resnet50", profile="paper")]) == []


def test_contrast_decision_table_from_results_and_folder(tmp_path):
    from casekit.report.evidence import contrast_decision_table
    cfg = TINY.replace(n_images=4, methods=("case",), rq2=False, sparsity_layers=(), contrast_k=2)
    res = ck.experiments.run_all([cfg], results_dir=tmp_path, progress=False,
                                 subjects={cfg.name: _subject()})
    t = contrast_decision_table(res)
    assert t.iloc[0][["counts", "tiebreak", "index", "slots"]].tolist() == [2, 6, 0, 8]
    assert t.iloc[0]["contrast_tiebreak"] == "probs" and t.iloc[0]["contrast_k"] == 2
    pd.testing.assert_frame_equal(contrast_decision_table(tmp_path), t)
    with pytest.raises(TypeError, match="Results or a results folder"):
        contrast_decision_table(3)


def test_degenerate_table_partly_beside_constant():
    from casekit.report.evidence import degenerate_table
    maps = make_maps(lambda model, method, rng: np.full(30, 0.3))
    maps["partly_degenerate"] = False
    sel = (maps["model"] == "vgg") & (maps["method"] == "case") & (maps["target"] == "top1")
    maps.loc[sel & (maps["image_id"] < 6), "partly_degenerate"] = True
    both = degenerate_table(maps, what="both")
    assert both.loc["CASE", ("VGG", "top1", "partly_degenerate")] == pytest.approx(0.2)
    assert both.loc["CASE", ("VGG", "top1", "constant")] == 0.0
    assert both.xs("partly_degenerate", axis=1, level="kind").to_numpy().sum() == pytest.approx(0.2)
    pd.testing.assert_frame_equal(degenerate_table(maps), degenerate_table(maps, what="constant"))
    with pytest.raises(ValueError, match="older run"):
        degenerate_table(maps.drop(columns="partly_degenerate"), what="both")


def test_projection_study_and_comparison(tmp_path):
    from casekit.report.evidence import projection_comparison
    from casekit.study.contrast_study import projection_study
    rows = projection_study("tiny", profile="custom", n_images=4, results_dir=tmp_path, progress=False,
                            subjects={"tiny": _subject()}, batch_size=4, siblings=False)
    assert set(rows["projection"]) == {"pooled", "full"}
    a = rows[rows["projection"] == "pooled"].drop(columns="projection").reset_index(drop=True)
    b = rows[rows["projection"] == "full"]
    assert list(a["image_id"]) == list(b["image_id"])  # the same images and targets
    t = projection_comparison(rows)
    assert list(t["projection"]) == ["pooled", "full"] and (t["n"] == 4).all()
    for r in t.itertuples():
        x = rows[(rows["projection"] == r.projection) & (rows["target"] == "top2")]["agreement"].dropna()
        assert r.median == pytest.approx(np.median(x))
    with pytest.raises(ValueError, match="sets"):
        projection_study("tiny", profile="custom", n_images=4, results_dir=tmp_path, projection="full")


def test_explorer_contrast_and_images_follow_the_run():
    from casekit.study.examples import explorer_contrast, explorer_images
    from casekit.study.subject import sample_images

    cfg = TINY.replace(n_images=4)
    subject = _subject()
    assert explorer_contrast(cfg, subject, 2).tolist() == SETS_PROBS  # the run's K = 2 sets, by hand above
    assert explorer_contrast(cfg.replace(contrast_tiebreak="none"), subject, 2).tolist() == SETS_NONE
    assert explorer_contrast(cfg, subject, 9).shape == (4, 3)  # at most C − 1 columns
    sample = sorted(sample_images(cfg, subject))
    assert explorer_images(cfg, subject) == sample
    assert explorer_images(cfg, subject, limit=2) == sample[:2]
    assert explorer_images(cfg, subject, limit=2, include=[sample[3], sample[0]]) == sample[:2] + [sample[3]]
    with pytest.raises(ValueError, match="limit"):
        explorer_images(cfg, subject, limit=0)
