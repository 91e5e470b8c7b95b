"""casekit.study.diagnostic_study and casekit.report.diagnostic: the chapter "What the diagnostic measures".

The hand-checked subject is test_experiments' ChannelModel (the attribution layer is the image; class c's
Grad-CAM map is the image's channel c), so agreements, chance agreements, probabilities, contrast-set
membership and CASE's geometry are written down with NumPy.  Report functions are checked on hand-made
frames (scipy is the oracle of the tests).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from test_experiments import (
    CONFUSION,
    GROUPS,
    N_TOP,
    ChannelModel,
    channel_dataset,
    softmax,
    tiny_subject,
    top_set,
)

import casekit.study.diagnostic_study as DS
from casekit.evaluation.diagnostic import chance_pairs
from casekit.report import diagnostic as D
from casekit.study.config import RunConfig
from casekit.study.subject import Subject, sample_images

CFG = RunConfig(model="channel", profile="custom", n_images=8, batch_size=3, contrast_k=1, methods=("case",),
                rq2=False, sparsity_layers=(), siblings=False)


def channel_subject8() -> tuple[Subject, list[dict]]:
    items, design = channel_dataset(8)
    return Subject(ChannelModel().eval(), {"final_conv": "feat"}, items, CONFUSION, GROUPS,
                   fingerprint="channel8"), design


@pytest.fixture(scope="module")
def channel_rows(tmp_path_factory):
    subject, design = channel_subject8()
    root = tmp_path_factory.mktemp("diag")
    rows = DS.diagnostic_run(CFG, subject, methods=("gradcam", "case", "gradcam-diff"), ks=(0.05, 0.1),
                             results_dir=root, progress=False)
    return rows, design, root


def test_rows_match_hand_computation(channel_rows):
    rows, design, _ = channel_rows
    assert len(rows) == 8 * 3 * 2 and not rows.duplicated(list(DS.DIAGNOSTIC_KEY)).any()
    g = rows[(rows["method"] == "gradcam") & np.isclose(rows["k"], 0.05)].set_index("image_id")
    ids = np.array(sample_images(CFG, channel_subject8()[0]))  # the seeded sample order: pairs follow it
    assert sorted(ids) == list(range(8))
    top1 = np.array([design[i]["c1"] for i in ids])
    partner = dict(zip(ids, ids[chance_pairs(8, CFG.sample_seed, labels=top1)]))  # every class: 2 of 8
    assert all(design[i]["c1"] != design[j]["c1"] for i, j in partner.items())
    in_set = {(0, 1), (1, 0), (2, 3), (3, 2)}  # K = 1: the most-confused class of each row of CONFUSION
    for i, d in enumerate(design):
        r = g.loc[i]
        x = d["x"]
        a = top_set(x[d["c1"]], N_TOP)
        assert r["agreement"] == pytest.approx(len(a & top_set(x[d["c2"]], N_TOP)) / N_TOP)
        j = partner[i]
        assert r["partner"] == j
        xj = design[j]["x"][design[j]["c1"]]
        assert r["chance"] == pytest.approx(len(a & top_set(xj, N_TOP)) / N_TOP)
        p = softmax(10 * x.mean(axis=1))
        assert r["prob"] == pytest.approx(p[d["c1"]], rel=1e-5)
        assert r["other_prob"] == pytest.approx(p[d["c2"]], rel=1e-5)
        assert (r["label"], r["other_class"]) == (d["c1"], d["c2"])
        assert r["in_contrast"] == ((d["c1"], d["c2"]) in in_set)
        # w_u = e_u·c and w̄ = e_v·c (K = 1, v ≠ u): orthogonal, so CASE keeps all of w_u
        assert r["kept"] == pytest.approx(1.0) and r["cosine"] == pytest.approx(0.0, abs=1e-6)
        assert (r["map_h"], r["map_w"], r["input_h"]) == (16, 16, 16)
    # the same maps scored at k = 10 %: ⌊0.1 · 256⌋ = 25 pixels
    g10 = rows[(rows["method"] == "gradcam") & np.isclose(rows["k"], 0.1)].set_index("image_id")
    d = design[0]
    a = top_set(d["x"][d["c1"]], 25)
    assert g10.loc[0, "agreement"] == pytest.approx(len(a & top_set(d["x"][d["c2"]], 25)) / 25)


def test_resumes_without_computing(channel_rows, monkeypatch):
    rows, _, root = channel_rows

    def boom(*a, **k):
        raise AssertionError("a complete store was computed again")

    monkeypatch.setattr(DS, "_explain_all", boom)
    subject, _ = channel_subject8()
    again = DS.diagnostic_run(CFG, subject, methods=("gradcam", "case", "gradcam-diff"), ks=(0.05, 0.1),
                              results_dir=root, progress=False)
    pd.testing.assert_frame_equal(rows, again)
    with pytest.raises(ValueError, match="different run config"):
        DS.diagnostic_run(CFG, subject, methods=("gradcam", "case"), ks=(0.05, 0.1), results_dir=root,
                          progress=False)


def test_same_seed_same_numbers_other_seed_other_sample(tmp_path):
    cfg = RunConfig(model="tiny", profile="custom", n_images=12, batch_size=5, perturbation_batch=64,
                    methods=("case",), rq2=False, sparsity_layers=(), siblings=False)
    a = DS.diagnostic_run(cfg, tiny_subject(), results_dir=tmp_path / "a", progress=False)
    b = DS.diagnostic_run(cfg, tiny_subject(), results_dir=tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["method"]) == set(DS.DIAGNOSTIC_METHODS)
    assert a["relative_drop"].notna().all() and a["unique_evidence"].notna().all()
    c = DS.diagnostic_run(cfg.replace(sample_seed=1), tiny_subject(), results_dir=tmp_path / "c",
                          progress=False)
    assert set(c["image_id"]) != set(a["image_id"]) or not np.allclose(c["chance"], a["chance"])


def test_needs_case_and_confusion(tmp_path):
    subject, _ = channel_subject8()
    with pytest.raises(ValueError, match="needs 'case'"):
        DS.diagnostic_run(CFG, subject, methods=("gradcam",), results_dir=tmp_path, progress=False)
    subject.confusion = None
    with pytest.raises(ValueError, match="confusion matrix"):
        DS.diagnostic_run(CFG, subject, results_dir=tmp_path, progress=False)


# ----------------------------------------------------------------------- report functions, hand-made frames


def frame(agreement, chance=None, k=0.05, method="case", model="m", in_contrast=None, other_prob=None,
          **extra) -> pd.DataFrame:
    n = len(agreement)
    return pd.DataFrame({
        "model": model, "seed": 0, "layer": "final_conv", "method": method, "image_id": np.arange(n), "k": k,
        "agreement": np.asarray(agreement, float),
        "chance": np.asarray(chance if chance is not None else np.zeros(n), float),
        "in_contrast": np.asarray(in_contrast if in_contrast is not None else np.ones(n, bool)),
        "other_prob": np.asarray(other_prob if other_prob is not None else np.full(n, 0.2)),
        "label": 0, "other_class": 1, **extra})


def test_chance_table_values():
    agree = np.linspace(0.05, 0.4, 15)
    chance = agree + np.linspace(0.01, 0.3, 15)[::-1]  # every agreement below its chance
    t = D.chance_table(frame(agree, chance)).iloc[0]
    assert t["median_agreement"] == pytest.approx(np.median(agree))
    assert t["median_chance"] == pytest.approx(np.median(chance))
    assert t["p_chance"] == pytest.approx(sps.wilcoxon(agree - chance, alternative="less").pvalue)
    assert t["sign_p_chance"] == pytest.approx(0.5 ** 15)
    assert t["below_chance"] and t["rq1_reject"] and not t["uninformative"]
    # agreement far below 50 % but equal in distribution to chance: the paper's test passes, chance does not
    t2 = D.chance_table(frame(agree, agree[::-1])).iloc[0]
    assert t2["rq1_reject"] and not t2["below_chance"] and t2["uninformative"]


def test_strata_and_differences():
    n = 24
    in_c = np.arange(n) < 12
    agree = np.where(in_c, 0.9, 0.1) + np.linspace(0, 0.05, n)  # the confusable half agrees a lot
    st = D.strata_table(frame(agree, in_contrast=in_c, other_prob=np.where(in_c, 0.3, 0.01)))
    assert len(st) == 9
    base = st[(st["contrast"] == "any") & (st["runner_up"] == "any")].iloc[0]
    assert base["n"] == n and base["p"] == pytest.approx(
        sps.wilcoxon(agree - 0.5, alternative="less").pvalue)
    inside = st[(st["contrast"] == "in") & (st["runner_up"] == "any")].iloc[0]
    assert inside["n"] == 12 and not inside["reject"]
    outside = st[(st["contrast"] == "out") & (st["runner_up"] == "any")].iloc[0]
    assert outside["reject"]
    diff = D.strata_differences(st)
    assert set(diff["stratum"]) == {"top-2 in contrast set", "p(top-2) ≥ 0.05",
                                    "top-2 in contrast set, p(top-2) ≥ 0.05"} or set(diff["stratum"]) == {
        "top-2 out contrast set", "p(top-2) < 0.05", "top-2 out contrast set, p(top-2) < 0.05"}
    assert (diff["reject"] != base["reject"]).all()


def test_resolution_and_k_tables():
    geo = {"map_h": 8, "map_w": 8, "input_h": 64, "input_w": 64}
    rows = pd.concat([frame(np.full(12, 0.1) + np.arange(12) * 1e-3, k=0.05, **geo),
                      frame(np.full(12, 0.9) + np.arange(12) * 1e-3, k=0.2, **geo)], ignore_index=True)
    res = D.resolution_table(rows)
    r5 = res[np.isclose(res["k"], 0.05)].iloc[0]
    assert (r5["cells"], r5["topk_cells"], r5["topk_pixels"]) == (64, pytest.approx(3.2), 204)
    assert r5["topk_cells_input"] == pytest.approx(204 * 64 / 4096)
    kt = D.k_table(rows)
    assert list(kt["rq1_reject"]) == [True, False] and kt["verdict_changes"].all()


def test_nan_rule_table_flips():
    # distinct values: scipy's Wilcoxon takes its exact / normal path (ties at n ≤ 13 mean a slow permutation)
    agree = np.r_[0.2 + np.arange(12) * 1e-3, np.full(10, np.nan)]
    t = D.nan_rule_table(frame(agree)).iloc[0]
    assert t["n_constant"] == 10 and t["reject_dropped"]
    filled = np.r_[0.2 + np.arange(12) * 1e-3, np.ones(10)]
    p = sps.wilcoxon(filled - 0.5, alternative="less").pvalue
    assert t["p_filled"] == pytest.approx(p) and p > 0.05 and t["flip"]
    claims = D.measure_claims(frame(agree, unique_evidence=0.5, relative_drop=0.1, fidelity_k=0.05,
                                    kept=0.5, cosine=0.1, map_h=8, map_w=8, input_h=64, input_w=64))
    nan_claim = claims[claims["section"] == "NaN rule"].iloc[0]
    assert nan_claim["supported"] is False and nan_claim["this run"] == "1 of 1 verdicts flip"
    assert (claims["paper says"] == "— (casekit's extension)").all()


def test_projection_and_geometry_tables():
    rows = pd.concat([frame(0.3 + np.arange(12) * 1e-3, method=m, unique_evidence=u, relative_drop=r,
                            fidelity_k=0.05, kept=np.linspace(0.2, 1.0, 12), cosine=np.linspace(-1, 1, 12))
                      for m, u, r in (("case", 0.6, 0.2), ("gradcam-diff", 0.4, 0.3), ("gradcam", 0.1, 0.1))],
                     ignore_index=True)
    pt = D.projection_table(rows).set_index("method")
    assert pt.loc["case", "mean_unique_evidence"] == pytest.approx(0.6)
    assert pt.loc["gradcam-diff", "mean_relative_drop"] == pytest.approx(0.3)
    g = D.geometry_table(rows).iloc[0]
    assert g["n"] == 12 and g["kept_median"] == pytest.approx(0.6)
    assert g["cosine_median"] == pytest.approx(0.0)
    assert g["kept_q1"] == pytest.approx(np.quantile(np.linspace(0.2, 1.0, 12), 0.25))
    claims = D.measure_claims(rows).set_index("section")
    assert claims.loc["projection", "supported"] is True


def test_contrast_sets_follow_the_subject_tiebreak(tmp_path):
    import json

    import torch

    subject, _ = channel_subject8()
    C = subject.confusion.shape[0]
    subject.confusion = torch.eye(C, dtype=torch.long) * 5  # every off-diagonal count ties (at 0)
    subject.tiebreak = torch.zeros(C, C, dtype=torch.float64)
    subject.tiebreak[torch.arange(C), (torch.arange(C) + 2) % C] = 1.0  # the tiebreak picks u + 2
    probs = DS.diagnostic_run(CFG, subject, methods=("gradcam", "case"), ks=(0.05,),
                              results_dir=tmp_path / "p", progress=False)
    index = DS.diagnostic_run(CFG.replace(contrast_tiebreak="none"), subject, methods=("gradcam", "case"),
                              ks=(0.05,), results_dir=tmp_path / "i", progress=False)
    for rows, rule in ((probs, lambda u: (u + 2) % C), (index, lambda u: 1 if u == 0 else 0)):
        want = [int(o) == rule(int(u)) for u, o in zip(rows["label"], rows["other_class"])]
        assert rows["in_contrast"].tolist() == want
    assert probs["in_contrast"].tolist() != index["in_contrast"].tolist()
    stored = json.loads(next((tmp_path / "p").glob("*/store.json")).read_text())["config"]
    assert stored["contrast_decisions"] == {"counts": 0, "tiebreak": C, "index": 0}
