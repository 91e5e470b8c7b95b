"""casekit.report.tables on hand-made result frames, with scipy as the oracle for every p-value."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from casekit.evaluation.stats import format_p
from casekit.report import analyses as A
from casekit.report import claims as CL
from casekit.report import evidence as EV
from casekit.report import naming as N
from casekit.report import tables as T
from casekit.study.runner import Results

METHODS = ("gradcam", "gradcam++", "scorecam", "ablationcam", "layercam", "case")
MODELS = ("resnet", "vgg", "densenet", "convnext")


def make_maps(agreement, fidelity=None, n=30, layer="final_conv", seed=0, extra_targets=()) -> pd.DataFrame:
    """A maps table like the runner's: ``agreement(model, method, rng) -> n values`` for the top-2 rows,
    ``fidelity(model, method, rng) -> (p_before, p_after_5, p_after_50)`` arrays for the top-1 rows."""
    rows = []
    for model in MODELS:
        for method in METHODS:
            rng = np.random.default_rng(zlib.crc32(f"{model}/{method}/{layer}/{seed}".encode()))
            agr = np.asarray(agreement(model, method, rng), float)
            fid = fidelity(model, method, rng) if fidelity else None
            for i in range(n):
                base = {"model": model, "seed": seed, "layer": layer, "method": method, "image_id": i,
                        "layer_name": f"{model}.{layer}", "label": i % 10, "unique_evidence": np.nan,
                        "shared_evidence": np.nan}
                top1 = {**base, "target": "top1", "target_class": i % 10, "comparison": "", "constant": False,
                        "agreement": np.nan}
                if fid is not None:
                    pb, pa5, pa50 = (float(a[i]) for a in fid)
                    top1.update(p_before=pb, p_after_5=pa5, p_after_50=pa50, p_after=pa5, drop=pb - pa5,
                                relative_drop=max(pb - pa5, 0) / pb, relative_drop_5=max(pb - pa5, 0) / pb,
                                relative_drop_50=max(pb - pa50, 0) / pb, fidelity_k=0.05, deletion_area=0.0)
                rows.append(top1)
                rows.append({**base, "target": "top2", "target_class": (i + 1) % 10,
                             "comparison": "top1_vs_top2",
                             "constant": bool(np.isnan(agr[i])), "agreement": agr[i]})
                for t in extra_targets:
                    rows.append({**base, "target": t, "target_class": (i + 2) % 10,
                                 "comparison": "true_vs_sibling", "constant": False, "agreement": 0.25})
    df = pd.DataFrame(rows)
    for c in ("p_before", "p_after", "drop", "relative_drop", "p_after_5", "p_after_50", "relative_drop_5",
              "relative_drop_50", "fidelity_k", "deletion_area"):
        if c not in df:
            df[c] = np.nan
    return df


def low_for_case(model, method, rng):
    """CASE and DenseNet low agreement; the rest around 0.6 (one NaN each)."""
    centre = 0.2 if method == "case" or model == "densenet" else 0.6
    v = np.clip(rng.normal(centre, 0.15, 30), 0, 1)
    v[4] = np.nan
    return v


def drops(model, method, rng):
    pb = rng.uniform(0.6, 1.0, 30)
    shift = {"case": 0.30, "gradcam": 0.28, "layercam": 0.45, "ablationcam": 0.10}.get(method, 0.25)
    pa5 = np.clip(pb - rng.normal(shift, 0.1, 30), 0, 1)
    pa50 = np.clip(pa5 - 0.1, 0, 1)
    return pb, pa5, pa50


@pytest.fixture(scope="module")
def maps():
    return make_maps(low_for_case, drops)


def test_table1_pvalues_equal_scipy_and_holm(maps):
    full = T.table1_full(maps, n_boot=200)
    assert len(full) == 24
    # the paper's order: models by display name, methods alphabetically by display name
    assert list(dict.fromkeys(full["Model"])) == ["ConvNeXt", "DenseNet", "ResNet", "VGG"]
    assert list(full["Method"].iloc[:6]) == ["AblationCAM", "CASE", "Grad-CAM", "Grad-CAM++", "LayerCAM",
                                             "ScoreCAM"]
    ps = []
    for r in full.itertuples():
        v = maps[(maps["model"] == r.model) & (maps["method"] == r.method)
                 & (maps["target"] == "top2")]["agreement"]
        x = v.dropna().to_numpy()
        assert r.n == 29 and r.n_excluded == 1 and r.n_degenerate == 1
        assert r.p == pytest.approx(sps.wilcoxon(x - 0.5, alternative="less").pvalue, rel=1e-12)
        assert r.median == pytest.approx(np.median(x))
        assert r.ci_low <= r.median <= r.ci_high
        assert r.p_fmt == format_p(r.p)
        assert r.reject == (r.p < 0.05)
        ps.append(r.p)
    # Holm by hand: sorted p times (m - i), running max, capped at 1
    ps = np.array(ps)
    order = np.argsort(ps)
    adj = np.minimum(1, np.maximum.accumulate((24 - np.arange(24)) * ps[order]))
    expected = np.empty(24)
    expected[order] = adj
    np.testing.assert_allclose(full["p_holm"], expected)
    assert (full.loc[full["method"] == "case", "verdict"] == "class-sensitive").all()
    assert (full.loc[(full["method"] == "gradcam") & (full["model"] == "vgg"),
                     "verdict"] == "not shown class-sensitive").all()

    compact = T.table1(full=full)
    assert list(compact.columns) == ["ConvNeXt", "DenseNet", "ResNet", "VGG"]
    assert list(compact.index) == ["AblationCAM", "CASE", "Grad-CAM", "Grad-CAM++", "LayerCAM", "ScoreCAM"]
    row = full[(full["model"] == "vgg") & (full["method"] == "case")].iloc[0]
    assert compact.loc["CASE", "VGG"] == format_p(row.p)
    latex = T.bold(compact, full).to_latex(convert_css=True)
    assert latex.count("\\bfseries") == int(full["reject"].sum()) > 0
    assert "\\bfseries " + compact.loc["CASE", "VGG"] in latex


def test_table1_threshold_is_a_parameter(maps):
    at7 = T.table1_full(maps, threshold=0.7, n_boot=50, models=["vgg"], methods=["gradcam"]).iloc[0]
    x = maps[(maps.model == "vgg") & (maps.method == "gradcam")
             & (maps.target == "top2")]["agreement"].dropna()
    assert at7.p == pytest.approx(sps.wilcoxon(x - 0.7, alternative="less").pvalue)
    assert at7.threshold == 0.7


def test_table1_repeated_image_raises(maps):
    bad = pd.concat([maps, maps[(maps.model == "vgg") & (maps.method == "case")].head(2)])
    with pytest.raises(ValueError, match="image ids repeat"):
        T.table1_full(bad, n_boot=10)
    with pytest.raises(ValueError, match="no agreement rows"):
        T.table1_full(maps, layer="norm5")


def test_table2_layers_as_columns():
    a = make_maps(low_for_case)
    b = make_maps(lambda model, method,
                  rng: np.full(30, 0.9) - (0.5 if method == "case" else 0) + rng.normal(0, .01, 30),
                  layer="norm5")
    both = pd.concat([a, b], ignore_index=True)
    full = T.table2_full(both, n_boot=50)
    assert list(dict.fromkeys(full["layer"])) == ["final_conv", "norm5"] and len(full) == 12
    compact = T.table2(full=full)
    assert list(compact.columns) == ["final_conv", "norm5"]
    n5 = full[full.layer == "norm5"].set_index("method")
    assert n5.loc["case", "reject"] and not n5.loc["gradcam", "reject"]
    x = b[(b.model == "densenet") & (b.method == "gradcam") & (b.target == "top2")]["agreement"]
    assert n5.loc["gradcam", "p"] == pytest.approx(sps.wilcoxon(x - 0.5, alternative="less").pvalue)
    with pytest.raises(ValueError, match="no results for 'densenet' at layer"):
        T.table2_full(a, n_boot=10)


def test_table3_paired_tests_equal_scipy(maps):
    full = T.table3_full(maps)
    assert len(full) == 24
    for r in full.itertuples():
        sel = maps[(maps.model == r.model) & (maps.target == "top1")]
        m = sel[sel.method == r.method].sort_values("image_id")["relative_drop"].to_numpy()
        c = sel[sel.method == "case"].sort_values("image_id")["relative_drop"].to_numpy()
        assert r.n == 30
        assert r.mean == pytest.approx(m.mean()) and r.sd == pytest.approx(m.std(ddof=1))
        if r.method == "case":
            assert math.isnan(r.p_one_sided) and math.isnan(r.p_two_sided)
            continue
        assert r.p_one_sided == pytest.approx(sps.ttest_rel(c, m, alternative="greater").pvalue, rel=1e-10)
        assert r.p_two_sided == pytest.approx(sps.ttest_rel(c, m).pvalue, rel=1e-10)
        assert r.d_z == pytest.approx((c - m).mean() / (c - m).std(ddof=1))
    for model, g in full.groupby("model"):
        assert g["highest"].sum() == 1
        assert g.loc[g["highest"], "mean"].iloc[0] == g["mean"].max()
    lc = full[(full.model == "vgg") & (full.method == "layercam")].iloc[0]
    assert lc.two_sided_verdict == "method significantly higher" and not lc.case_higher
    ab = full[(full.model == "vgg") & (full.method == "ablationcam")].iloc[0]
    assert ab.two_sided_verdict == "CASE significantly higher" and ab.case_higher

    compact = T.table3(full=full)
    assert list(compact.columns.get_level_values(0).unique()) == ["ConvNeXt", "DenseNet", "ResNet", "VGG"]
    assert list(compact["VGG"].columns) == ["Mean", "SD", "p (one-sided)", "p (two-sided)"]
    assert compact.loc["CASE", ("VGG", "p (two-sided)")] == "–"
    assert compact.loc["LayerCAM", ("VGG", "Mean")] == f"{lc['mean']:.4f}".lstrip("0")
    latex = T.bold(compact, full).to_latex(convert_css=True)
    assert latex.count("\\bfseries") == 4  # one highest mean per model
    assert "\\bfseries " + compact.loc["LayerCAM", ("VGG", "Mean")] in latex

    # the 50 % column of the deletion curve and the absolute drop
    at50 = T.table3_full(maps, k=0.5, drop="absolute")
    sel = maps[(maps.model == "resnet") & (maps.target == "top1") & (maps.method == "gradcam")]
    assert at50[(at50.model == "resnet") & (at50.method == "gradcam")]["mean"].iloc[0] == pytest.approx(
        (sel.p_before - sel.p_after_50).mean())
    with pytest.raises(ValueError, match="no deletion-curve value at k=0.2"):
        T.table3_full(maps, k=0.2)


def test_table3_pairing_violations_raise(maps):
    missing = maps.drop(maps[(maps.model == "vgg") & (maps.method == "gradcam") & (maps.image_id == 7)].index)
    with pytest.raises(ValueError, match="same images"):
        T.table3_full(missing)
    no_case = maps[maps.method != "case"]
    with pytest.raises(ValueError, match="no CASE rows"):
        T.table3_full(no_case)


def test_seed_agreement_and_histogram_values():
    frames = [make_maps(low_for_case, seed=s) for s in range(3)]
    both = pd.concat(frames, ignore_index=True)
    sa = A.seed_agreement(both, n_boot=50)
    assert set(sa["seed"]) == {0, 1, 2} and len(sa) == 18
    r = sa[(sa.seed == 1) & (sa.method == "layercam")].iloc[0]
    x = frames[1][(frames[1].model == "densenet") & (frames[1].method == "layercam")
                  & (frames[1].target == "top2")]["agreement"]
    assert r["mean"] == pytest.approx(x.mean()) and r["sd"] == pytest.approx(x.std())

    hist = A.agreement_histogram(frames[0], model="vgg", method="case")
    assert len(hist) == 20 and (hist["n_excluded"] == 1).all()
    v = frames[0][(frames[0].model == "vgg") & (frames[0].method == "case")
                  & (frames[0].target == "top2")]["agreement"].dropna()
    np.testing.assert_array_equal(hist["count"], np.histogram(v, bins=np.linspace(0, 1, 21))[0])
    assert hist["count"].sum() == 29
    edge = make_maps(lambda *a: np.r_[np.ones(10), np.full(10, 0.05), np.full(10, 0.0499)])
    h = A.agreement_histogram(edge, model="vgg", method="case")
    # [.95, 1] is closed
    assert h["count"].iloc[-1] == 10 and h["count"].iloc[1] == 10 and h["count"].iloc[0] == 10


def test_class_active_channels_and_deletion_curves(maps):
    sp = pd.DataFrame({"model": "densenet", "seed": 0, "layer": "final_conv", "image_id": range(6),
                       "layer_name": "x", "label": [0, 0, 1, 1, 1, 2], "active_channels": [2, 4, 6, 8, 10, 3],
                       "n_channels": 12, "tau": 1e-3})
    cac = A.class_active_channels(sp)
    assert cac["mean_active_channels"].tolist() == [3.0, 8.0, 3.0]
    assert cac["n_images"].tolist() == [2, 3, 1]
    np.testing.assert_allclose(cac["fraction_active"], [3 / 12, 8 / 12, 3 / 12])

    curves = A.deletion_curves(maps)
    r = curves[(curves.model == "vgg") & (curves.method == "case") & (curves.k == 0.5)].iloc[0]
    sel = maps[(maps.model == "vgg") & (maps.method == "case") & (maps.target == "top1")]["relative_drop_50"]
    assert r.mean_relative_drop == pytest.approx(sel.mean())
    assert r.sem_relative_drop == pytest.approx(sel.std(ddof=1) / math.sqrt(30))
    assert sorted(curves["k"].unique()) == [0.05, 0.5]


def test_evidence_table_means_per_target():
    maps = make_maps(low_for_case, extra_targets=("sibling",))
    maps.loc[maps.target == "top1",
             "unique_evidence"] = np.where(maps.loc[maps.target == "top1", "image_id"] % 2, 0.5, 1.0)
    maps.loc[maps.target == "sibling", "unique_evidence"] = 0.25
    maps.loc[(maps.target == "sibling") & (maps.image_id == 0), "unique_evidence"] = np.nan  # a constant map
    ev = EV.evidence_table(maps).set_index(["model", "method", "target"])
    assert ev.loc[("vgg", "case", "top1"), "unique_evidence"] == pytest.approx(0.75)
    assert ev.loc[("vgg", "case", "sibling"), "unique_evidence"] == pytest.approx(0.25)
    assert ev.loc[("vgg", "case", "sibling"),
                  "n_excluded"] == 1 and ev.loc[("vgg", "case", "top1"), "n_excluded"] == 0
    with pytest.raises(ValueError, match="no evidence scores"):
        EV.evidence_table(make_maps(low_for_case))


def _sparsity(dense_counts, norm5_fraction=0.95):
    rows = []
    for model, (count, width) in {"densenet": (dense_counts, 12), "resnet": (40, 64), "vgg": (30, 64),
                                  "convnext": (50, 64)}.items():
        for i in range(20):
            rows.append({"model": model, "seed": 0, "layer": "final_conv", "image_id": i, "layer_name": "x",
                         "label": i % 5, "active_channels": count + (i % 3), "n_channels": width,
                         "tau": 1e-3})
    for i in range(20):
        rows.append({"model": "densenet", "seed": 0, "layer": "norm5", "image_id": i,
                     "layer_name": "features.norm5",
                     "label": i % 5, "active_channels": round(norm5_fraction * 66), "n_channels": 66,
                     "tau": 1e-3})
    return pd.DataFrame(rows)


def test_claims_supported_and_not(maps):
    # Hand-made run 1: CASE low everywhere → "CASE rejects on every model" is supported.
    c = CL.claims(maps, _sparsity(2), n_boot=50).set_index("claim")
    row = c.loc["CASE rejects H0 on every model"]
    assert row["supported"] is True and "p < .0001" in row["this run"]
    dense = [k for k in c.index if k.startswith("DenseNet is the most class-sensitive")][0]
    assert c.loc[dense, "supported"] is True  # 6 of 6 on DenseNet, fewer elsewhere
    absolute = [k for k in c.index if "absolute count" in k][0]
    assert c.loc[absolute, "supported"] is True and c.loc["… and also as a fraction of the layer's channels",
                                                          "supported"] is True
    norm5 = [k for k in c.index if k.startswith("norm5 activates")][0]
    assert c.loc[norm5, "supported"] is True
    fid = [k for k in c.index if k.startswith("CASE's fidelity")][0]
    assert c.loc[fid, "supported"] is True  # only LayerCAM is significantly higher on each model
    seeds = c[c["section"] == "seeds"]
    assert seeds["supported"].isna().all() and (seeds["this run"] == "1 seed(s) in this run").all()

    # Hand-made run 2: CASE's agreement is high on ResNet → not supported; DenseNet not sparser in fraction.
    def case_fails_on_resnet(model, method, rng):
        v = low_for_case(model, method, rng)
        return np.clip(v + 0.5, 0, 1) if (model == "resnet" and method == "case") else v

    c2 = CL.claims(make_maps(case_fails_on_resnet, drops), _sparsity(9, norm5_fraction=0.5),
                   n_boot=50).set_index("claim")
    row = c2.loc["CASE rejects H0 on every model"]
    assert row["supported"] is False and "ResNet: p = " in row["this run"]
    # 10/12 vs ≤ 52/64
    assert c2.loc["… and also as a fraction of the layer's channels", "supported"] is False
    # 10 < 30: width, not sparsity
    assert c2.loc[[k for k in c2.index if "absolute count" in k][0], "supported"] is True
    assert c2.loc[[k for k in c2.index if k.startswith("norm5 activates")][0], "supported"] is False
    # sections without data say so instead of guessing
    assert c2[c2["section"] == "norm5"]["supported"].isna().all()


def test_claims_fidelity_not_supported_when_three_baselines_beat_case():
    def weak_case(model, method, rng):
        pb = rng.uniform(0.6, 1.0, 30)
        shift = 0.05 if method == "case" else 0.3
        pa = np.clip(pb - rng.normal(shift, 0.05, 30), 0, 1)
        return pb, pa, pa
    c = CL.claims(make_maps(low_for_case, weak_case), sections=["fidelity"], n_boot=10)
    assert len(c) == 1 and c["supported"].iloc[0] is False
    assert "5 baseline(s) significantly higher" in c["this run"].iloc[0]


# =============================================================================================== notebooks
# 04–07
# sparsity_summary, sparsity_sensitivity, sparsity_correlation, layer_comparison, fidelity_pairing,
# fidelity_differences, table3_vs_paper, histogram_summary, chapter_claims.  Additive block.


def _counts(rows):
    """Sparsity rows from (model, layer, width, labels, counts) tuples."""
    out = []
    for model, layer, width, labels, counts in rows:
        for i, (y, c) in enumerate(zip(labels, counts)):
            out.append({"model": model, "seed": 0, "layer": layer, "image_id": i,
                        "layer_name": f"{model}.{layer}",
                        "label": y, "active_channels": c, "n_channels": width, "tau": 1e-3})
    return pd.DataFrame(out)


def test_sparsity_summary_spread_over_classes_and_layer_order():
    sp = _counts([("densenet", "norm5", 20, [0, 1, 2], [15, 15, 15]),
                  ("densenet", "extra", 8, [0, 1], [1, 3]),
                  ("densenet", "final_conv", 10, [0, 0, 1, 1, 2], [2, 4, 6, 6, 9])])
    s = A.sparsity_summary(sp)
    # the paper's layer first, unknown roles last
    assert s["layer"].tolist() == ["final_conv", "norm5", "extra"]
    r = s.iloc[0]  # class means 3, 6, 9 of 10 channels
    assert (r.n_classes, r.n_images, r.n_channels) == (3, 5, 10)
    assert (r.median_active, r.min_active, r.max_active) == (6.0, 3.0, 9.0)
    assert (r.median_fraction, r.min_fraction, r.max_fraction) == pytest.approx((0.6, 0.3, 0.9))
    assert s.iloc[1].median_fraction == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no sparsity rows"):
        A.sparsity_summary(sp, model="vgg")


def test_spearman_exact_permutation_p_matches_scipy():
    rho, p, n = A.spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    # identity and reversal of 5! pairings
    assert (rho, n) == (pytest.approx(1.0), 5) and p == pytest.approx(2 / 120)
    x, y = [0.3, 0.1, 0.5, 0.5, 0.9, 0.2], [1.0, 3.0, 2.0, 2.0, 5.0, 0.0]  # with ties
    oracle = sps.pearsonr(sps.rankdata(x), sps.rankdata(y),
                          method=sps.PermutationMethod(n_resamples=np.inf))
    rho, p, n = A.spearman(x, y)
    assert rho == pytest.approx(sps.spearmanr(x,
                                              y).statistic) and p == pytest.approx(oracle.pvalue) and n == 6
    big = np.random.default_rng(0).normal(size=(2, 40))
    assert A.spearman(*big)[1] == pytest.approx(sps.spearmanr(*big).pvalue)  # n > 8: scipy's
    # constant side after dropping the NaN pair
    assert np.isnan(A.spearman([1, 2, np.nan, 4], [1, 1, 5, 1])[0])
    assert A.spearman([1, 2], [2, 1])[2] == 2 and np.isnan(A.spearman([1, 2], [2, 1])[1])


def _sparsity_for(models, width=64, count=lambda model, i: 10 + i % 7, layer="final_conv"):
    return _counts([(m, layer, width, [i % 10 for i in range(30)],
                     [count(m, i) for i in range(30)]) for m in models])


def test_sparsity_sensitivity_joins_tests_and_per_image_rho():
    maps = make_maps(low_for_case)
    sp = _sparsity_for(["vgg", "resnet", "densenet"], count=lambda m, i: (3 * i) % 17)
    ss = A.sparsity_sensitivity(maps, sp, n_boot=50)
    assert len(ss) == 18 and "convnext" not in set(ss["model"])  # a layer without counts is left out
    r = ss[(ss.model == "vgg") & (ss.method == "case")].iloc[0]
    agr = maps[(maps.model == "vgg") & (maps.method == "case")
               & (maps.target == "top2")]["agreement"].to_numpy()
    ok = ~np.isnan(agr)
    assert r.p == pytest.approx(sps.wilcoxon(agr[ok] - 0.5, alternative="less").pvalue)
    assert (r.n, r.n_excluded, r.reject) == (29, 1, True)
    counts = (3 * np.arange(30)) % 17
    assert r.rho_images == pytest.approx(sps.spearmanr(counts[ok], agr[ok]).statistic)
    assert r.p_rho_images == pytest.approx(sps.spearmanr(counts[ok], agr[ok]).pvalue) and r.n_rho == 29
    cls = pd.Series(counts).groupby(np.arange(30) % 10).mean()
    assert r.median_active == pytest.approx(cls.median())
    assert r.median_fraction == pytest.approx(cls.median() / 64)
    with pytest.raises(TypeError, match="sparsity table"):
        A.sparsity_sensitivity(maps)


def test_sparsity_correlation_over_layers():
    frame = pd.DataFrame({"method": "case", "Model": list("ABCDE"), "layer": "final_conv",
                          "median_fraction": [0.1, 0.2, 0.3, 0.4, 0.5], "median_active": [50, 40, 30, 20, 10],
                          "median": [0.1, 0.3, 0.2, 0.6, 0.9]})
    c = A.sparsity_correlation(frame).iloc[0]
    assert c.n_layers == 5 and c.Method == "CASE"
    assert c.rho_fraction == pytest.approx(0.9) and c.rho_count == pytest.approx(-0.9)
    perms = [np.corrcoef([1, 2, 3, 4, 5], p)[0, 1] for p in itertools.permutations([1, 3, 2, 4, 5])]
    assert c.p_fraction == pytest.approx(np.mean(np.abs(perms) >= 0.9 - 1e-12))
    with pytest.raises(ValueError, match="sparsity_sensitivity"):
        A.sparsity_correlation(frame.drop(columns="median"))


def _high(model, method, rng):
    v = np.clip(rng.normal(0.8, 0.1, 30), 0, 1)
    v[4] = np.nan
    return v


def _two_layers():
    norm5 = make_maps(_high, layer="norm5")
    return pd.concat([make_maps(low_for_case), norm5[norm5.model == "densenet"]], ignore_index=True)


def test_layer_comparison_puts_sparsity_next_to_table2():
    maps = _two_layers()
    sp = pd.concat([_sparsity_for(["densenet"], width=12, count=lambda m, i: 2 + i % 3),
                    _sparsity_for(["densenet"], width=66, count=lambda m, i: 60, layer="norm5")],
                   ignore_index=True)
    lc = A.layer_comparison(maps, sp, n_boot=50).set_index("layer")
    assert lc.loc["final_conv", "n_reject"] == 6 and lc.loc["norm5", "n_reject"] == 0
    assert lc.loc["norm5", "rejecting"] == "none"
    assert lc.loc["final_conv", "rejecting"].startswith("AblationCAM, CASE")
    case = maps[(maps.model == "densenet") & (maps.layer == "norm5") & (maps.method == "case")
                & (maps.target == "top2")]
    assert lc.loc["norm5", "case_median"] == pytest.approx(case["agreement"].median())
    assert lc.loc["norm5",
                  "median_fraction"] == pytest.approx(60 / 66) and lc.loc["norm5", "n_channels"] == 66
    assert lc.loc["final_conv", "layer_name"] == "densenet.final_conv"
    no_sp = A.layer_comparison(maps, sp[sp.layer == "final_conv"], n_boot=50).set_index("layer")
    assert np.isnan(no_sp.loc["norm5", "median_fraction"]) and no_sp.loc["norm5", "n_reject"] == 0


def test_fidelity_pairing_and_paired_differences(maps):
    pairing = A.fidelity_pairing(maps)
    assert pairing["same_images_as_case"].all() and (pairing["n_images_max"] == 30).all()
    gap = maps.drop(maps[(maps.model == "vgg") & (maps.method == "gradcam") & (maps.image_id == 7)].index)
    p = A.fidelity_pairing(gap).set_index("model")
    assert not p.loc["vgg", "same_images_as_case"] and p.loc["vgg", "unpaired_ids"] == [7]
    assert p.loc["vgg", "n_images_min"] == 29 and p.loc["resnet", "same_images_as_case"]

    d = A.fidelity_differences(maps)
    assert len(d) == 20 and "case" not in set(d["method"])
    r = d[(d.model == "vgg") & (d.method == "layercam")].iloc[0]
    top1 = maps[(maps.model == "vgg") & (maps.target == "top1")]
    case_drop = top1[top1.method == "case"]["relative_drop"].to_numpy()
    diff = case_drop - top1[top1.method == "layercam"]["relative_drop"].to_numpy()
    lo, hi = sps.t.interval(0.95, 29, loc=diff.mean(), scale=sps.sem(diff))
    assert (r.mean_diff, r.ci_low, r.ci_high) == pytest.approx((diff.mean(), lo, hi))
    layercam_drop = top1[top1.method == "layercam"]["relative_drop"]
    assert r.p_two_sided == pytest.approx(sps.ttest_rel(case_drop, layercam_drop).pvalue)


def test_table3_vs_paper_verdicts(maps):
    cmp = CL.table3_vs_paper(maps)
    assert len(cmp) == 20
    vgg = cmp[cmp.Model == "VGG"].set_index("Method")
    assert vgg.loc["Grad-CAM++", "paper_verdict"] == "CASE significantly higher"  # .1020 < .1317, p < .0001
    assert vgg.loc["LayerCAM", "paper_verdict"] == "method significantly higher"
    # the hand-made LayerCAM drops more
    assert vgg.loc["LayerCAM", "verdict"] == "method significantly higher"
    assert vgg.loc["LayerCAM", "same_verdict"] is True
    assert (cmp[cmp.Model == "DenseNet"]["paper_verdict"] == "no significant difference").all()
    assert all(s == (a == b) for s, a, b in zip(cmp["same_verdict"], cmp["paper_verdict"], cmp["verdict"]))
    other = CL.table3_vs_paper(maps.replace({"model": {"resnet": "mynet"}}))
    row = other[other.model == "mynet"].iloc[0]
    assert np.isnan(row.paper_mean) and row.paper_verdict == "–" and row.same_verdict is None


def test_histogram_summary_values():
    maps = make_maps(lambda *a: np.r_[np.full(10, 0.2), np.full(19, 0.7), [np.nan]])
    h = A.histogram_summary(maps).set_index(["model", "method"])
    r = h.loc[("vgg", "case")]
    assert (r.n, r.n_excluded) == (29, 1)
    assert r["share_below"] == pytest.approx(10 / 29) and r["median"] == pytest.approx(0.7)
    assert A.histogram_summary(maps, threshold=0.8).loc[0, "share_below"] == pytest.approx(1.0)


def test_chapter_claims_sparsity_relation():
    c = CL.chapter_claims(make_maps(low_for_case), "sparsity", sparsity=_sparsity(2),
                          n_boot=50).set_index("claim")
    assert set(c["section"]) == {"sparsity", "sparsity ↔ sensitivity"}
    rel = c[c["section"] == "sparsity ↔ sensitivity"]
    assert len(rel) == 3 and (rel["supported"] == True).all()  # noqa: E712  DenseNet: sparsest and 6/6 reject
    assert "sparsest: DenseNet final_conv" in rel["this run"].iloc[0]
    # DenseNet narrow but dense: sparsest by count (still 6/6), VGG sparsest by fraction (1/6) → not supported
    c2 = CL.chapter_claims(make_maps(low_for_case), "sparsity", sparsity=_sparsity(9), n_boot=50)
    rel2 = c2[c2["section"] == "sparsity ↔ sensitivity"]
    assert rel2["supported"].tolist()[:2] == [True, False]
    assert "sparsest: VGG final_conv" in rel2["this run"].iloc[1]


def test_chapter_claims_norm5_and_appendix():
    maps = _two_layers()
    c = CL.chapter_claims(maps, "norm5", sparsity=_sparsity(2, norm5_fraction=0.95),
                          n_boot=50).set_index("claim")
    assert c.loc["CASE still rejects H0 at norm5", "supported"] is False
    more = [k for k in c.index if k.startswith("the final conv gives more")][0]
    assert c.loc[more, "supported"] is True and "final_conv: 6/6" in c.loc[more, "this run"]
    denser = [k for k in c.index if k.startswith("norm5 is denser")][0]
    assert c.loc[denser, "supported"] is True
    assert (c["section"] == "norm5").all() and any(k.startswith("norm5 activates most")
                                                   for k in c.index)

    a = CL.chapter_claims(maps, "appendix")
    assert len(a) == 5
    # VGG high, CASE lowest, DenseNet conv low, norm5 high
    assert a["supported"].tolist() == [True, True, True, True, True]
    # no norm5 rows
    assert CL.chapter_claims(make_maps(low_for_case), "appendix")["supported"].iloc[4] is None
    with pytest.raises(ValueError, match="chapter must be one of"):
        CL.chapter_claims(maps, "rq9")


def test_chapter_claims_fidelity_at_both_ks(maps):
    c = CL.chapter_claims(maps, "fidelity")
    assert len(c) == 10 and c["section"].str.contains("k = 5%").sum() == 5
    assert c["section"].str.contains("k = 50%").sum() == 5
    first = c.iloc[0]
    # only LayerCAM drops more than CASE
    assert "relative drop" in first["section"] and first["supported"] is True
    dn = c[c["claim"].str.startswith("on DenseNet and ResNet")].iloc[0]
    assert dn["supported"] is False and "LayerCAM" in dn["this run"]
    cx = c[c["claim"].str.startswith("on ConvNeXt")].iloc[0]
    # CASE beats AblationCAM, not LayerCAM
    assert cx["supported"] is False and "AblationCAM: p" in cx["this run"]
    one = CL.chapter_claims(maps, "fidelity", ks=[0.05])
    assert len(one) == 5


# =============================================================================================== notebooks
# 01–03
# model_display, degenerate_table, contrast_table, contrast_claims, diagnostic_claims, evidence_comparison,
# evidence_claims, projection_table.  Additive block.

from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402

from casekit.evaluation.stats import holm  # noqa: E402


def test_model_display():
    assert [N.model_display(m) for m in ("densenet", "vgg19_bn", "convnext_large", "resnet")] == [
        "DenseNet", "VGG", "ConvNeXt", "ResNet"]
    assert N.model_display("densenet201-cifar100") == "DenseNet (CIFAR-100)"
    assert N.model_display("mynet") == "mynet"


def _flat(value):
    return lambda model, method, rng: np.full(30, value)


def test_degenerate_table_shares_of_constant_maps():
    maps = make_maps(_flat(0.3), extra_targets=("sibling",))
    assert not maps["constant"].any()
    sel = lambda model, method, target, ids: ((maps.model == model) & (maps.method == method)  # noqa: E731
                                               & (maps.target == target) & maps.image_id.isin(ids))
    maps.loc[sel("vgg", "scorecam", "top1", range(6)), "constant"] = True  # 6/30
    maps.loc[sel("vgg", "scorecam", "top2", range(3)), "constant"] = True  # 3/30
    maps.loc[sel("densenet", "case", "top2", [17]), "constant"] = True  # 1/30
    maps.loc[sel("resnet", "gradcam", "sibling", range(15)), "constant"] = True  # 15/30, a target not shown
    other = make_maps(_flat(0.3), layer="norm5").assign(constant=True)  # another layer: must not count
    other_seed = make_maps(_flat(0.3), seed=1).assign(constant=True)
    data = pd.concat([other, maps, other_seed], ignore_index=True)
    tab = EV.degenerate_table(data)
    assert list(tab.index) == ["AblationCAM", "CASE", "Grad-CAM", "Grad-CAM++", "LayerCAM", "ScoreCAM"]
    assert tab.columns.names == ["model", "target"]
    assert list(tab.columns) == [(m, t) for m in ("ConvNeXt", "DenseNet", "ResNet",
                                                  "VGG") for t in ("top1", "top2")]
    expected = pd.DataFrame(0.0, index=tab.index, columns=tab.columns)
    expected.loc["ScoreCAM", ("VGG", "top1")] = 6 / 30
    expected.loc["ScoreCAM", ("VGG", "top2")] = 3 / 30
    expected.loc["CASE", ("DenseNet", "top2")] = 1 / 30
    np.testing.assert_allclose(tab.to_numpy(float), expected.to_numpy(float))
    with_sib = EV.degenerate_table(Results(data, pd.DataFrame()), targets=("top1", "top2", "sibling"))
    assert list(with_sib.columns)[:3] == [("ConvNeXt", "top1"), ("ConvNeXt", "top2"), ("ConvNeXt", "sibling")]
    assert with_sib.loc["Grad-CAM", ("ResNet", "sibling")] == pytest.approx(0.5)
    assert with_sib.loc["ScoreCAM", ("VGG", "top1")] == pytest.approx(0.2)
    n5 = EV.degenerate_table(data, layer="norm5")
    assert (n5.to_numpy() == 1.0).all() and n5.shape == (6, 8)
    with pytest.raises(ValueError, match="no maps for layer='conv9'"):
        EV.degenerate_table(data, layer="conv9")
    with pytest.raises(TypeError, match="expected the maps DataFrame"):
        EV.degenerate_table(data.to_dict())


# ------------------------------------------------------------------ the contrast-set study

CONTRAST_MODELS = ("resnet", "vgg")


def make_contrast_rows(centre, settings, n=30, nan_at=None, extra_targets=(), models=CONTRAST_MODELS):
    """Rows like contrast_study's: CASE only, per (strategy, K) the top-2 agreements
    ``centre(model, strategy, K) + linspace(-0.1, 0.1, n)`` (NaN = constant top-2 map at ``nan_at``)."""
    frames = []
    for strategy, K in settings:
        def agreement(model, method, rng, strategy=strategy, K=K):
            v = centre(model, strategy, K) + np.linspace(-0.1, 0.1, n)
            if nan_at is not None:
                v[nan_at] = np.nan
            return v
        m = make_maps(agreement, n=n, extra_targets=extra_targets)
        m = m[(m.method == "case") & m.model.isin(models)]
        frames.append(m.assign(contrast_strategy=strategy, contrast_k=np.int64(K)))
    return pd.concat(frames, ignore_index=True)


SETTINGS = [("confusion", 1), ("confusion", 3), ("logits", 3)]
CENTRES = {("resnet", "confusion", 1): 0.3, ("resnet", "confusion", 3): 0.2, ("resnet", "logits", 3): 0.45,
           ("vgg", "confusion", 1): 0.6, ("vgg", "confusion", 3): 0.25, ("vgg", "logits", 3): 0.5}


def _set_evidence(rows):
    """unique evidence: top-1 map i/100 (1.0 on the degenerate image 4), top-2 map 0.1; shared: 0.3, 0.6."""
    rows = rows.copy()
    top1, top2 = rows.target == "top1", rows.target == "top2"
    rows.loc[top1, "unique_evidence"] = np.where(rows.loc[top1, "image_id"] == 4, 1.0,
                                                 rows.loc[top1, "image_id"] / 100)
    rows.loc[top2, "unique_evidence"] = np.where(rows.loc[top2, "image_id"] == 4, np.nan, 0.1)
    rows.loc[top1, "shared_evidence"] = 0.3
    rows.loc[top2, "shared_evidence"] = 0.6
    return rows


def test_contrast_table_tests_equal_scipy_and_evidence_means():
    rows = _set_evidence(make_contrast_rows(lambda *key: CENTRES.get(key, 0.5), SETTINGS, nan_at=4,
                                            extra_targets=("sibling",)))
    tab = EV.contrast_table(rows.sample(frac=1.0, random_state=1), comparison="top1_vs_top2", n_boot=100)
    assert len(tab) == 6
    assert list(zip(tab.model, tab.contrast_strategy, tab.contrast_k)) == [
        ("resnet", "confusion", 1), ("resnet", "confusion", 3), ("resnet", "logits", 3),
        ("vgg", "confusion", 1), ("vgg", "confusion", 3), ("vgg", "logits", 3)]
    assert (tab.method == "case").all() and (tab.comparison == "top1_vs_top2").all()
    keep = np.arange(30) != 4
    for r in tab.itertuples():
        x = (CENTRES[(r.model, r.contrast_strategy, r.contrast_k)] + np.linspace(-0.1, 0.1, 30))[keep]
        assert (r.n, r.n_excluded, r.n_degenerate) == (29, 1, 1)
        assert r.p == pytest.approx(sps.wilcoxon(x - 0.5, alternative="less").pvalue, rel=1e-12)
        assert r.median == pytest.approx(np.median(x))
        assert r.reject == (r.p < 0.05) and r.Model == N.model_display(r.model) and r.Method == "CASE"
        assert r.unique_top1 == pytest.approx(np.arange(30)[keep].mean() / 100)  # image 4's 1.0 left out
        assert (r.unique_other, r.shared_top1, r.shared_other) == pytest.approx((0.1, 0.3, 0.6))
    np.testing.assert_allclose(tab["p_holm"], holm(tab["p"].to_numpy()))
    v = tab.set_index(["model", "contrast_strategy", "contrast_k"])
    assert v.loc[("resnet", "confusion", 3), "verdict"] == "class-sensitive"
    assert v.loc[("vgg", "confusion", 1), "verdict"] == "not shown class-sensitive"

    both = EV.contrast_table(rows, n_boot=20)
    assert len(both) == 12
    assert both.comparison.tolist()[:2] == ["top1_vs_top2", "true_vs_sibling"]  # per setting, top-2 first
    sib = EV.contrast_table(rows, comparison="true_vs_sibling", n_boot=20)
    assert len(sib) == 6 and (sib["median"] == 0.25).all() and (sib["n"] == 30).all()
    # the sibling maps are never constant: image 4 counts, and the other map has no evidence score
    assert sib["unique_top1"].iloc[0] == pytest.approx((np.arange(30)[keep].sum() + 100) / 3000)
    assert sib["unique_other"].isna().all()
    np.testing.assert_allclose(sib["p"], sps.wilcoxon(np.full(30, 0.25) - 0.5, alternative="less").pvalue)


def test_contrast_table_without_masks_and_errors():
    rows = make_contrast_rows(lambda *key: CENTRES.get(key, 0.5), SETTINGS)
    tab = EV.contrast_table(rows, n_boot=20)
    assert tab[["unique_top1", "unique_other", "shared_top1", "shared_other"]].isna().all().all()
    assert (tab["n_excluded"] == 0).all()
    with pytest.raises(ValueError, match=r"rows lacks column\(s\) \['contrast_k'\]"):
        EV.contrast_table(rows.drop(columns="contrast_k"))
    with pytest.raises(TypeError, match="rows must be the DataFrame of contrast_study"):
        EV.contrast_table(Results(rows, pd.DataFrame()))
    dup = pd.concat([rows, rows[(rows.image_id == 0) & (rows.contrast_k == 1)]], ignore_index=True)
    with pytest.raises(ValueError,
                       match=r"image ids repeat within contrast_strategy='confusion', contrast_k=1: \[0\]"):
        EV.contrast_table(dup, n_boot=10)
    dup2 = pd.concat([rows, rows[(rows.image_id == 3) & (rows.contrast_k == 3) & (rows.target == "top2")]])
    with pytest.raises(ValueError, match="image ids repeat"):
        EV.contrast_table(dup2, n_boot=10)


def _claims_of(frame):
    return dict(zip(frame["claim"].str.slice(0, 8), frame["supported"]))


def test_contrast_claims_hold_and_fail():
    ks = [("confusion", 1), ("confusion", 3), ("confusion", 5), ("logits", 1), ("logits", 3), ("logits", 5)]
    good = {1: 0.3, 3: 0.2, 5: 0.17}  # K = 3 within 3 points of the best K (5); K = 1 rejects

    summary = EV.contrast_table(make_contrast_rows(lambda m, s, K: good[K], ks), n_boot=20)
    c = CL.contrast_claims(summary)
    assert len(c) == 2 and list(c.columns) == ["section", "claim", "paper says", "this run", "supported"]
    assert c["supported"].tolist() == [True, True]
    assert "ResNet: K = 3 median 20.0%" in c["this run"].iloc[0] and "at K = 5" in c["this run"].iloc[0]

    # ResNet: K = 3 is 20 points worse than the best K → fails at 5 points' tolerance, holds at 25
    worse = lambda m, s, K: {1: 0.3, 3: 0.3, 5: 0.1}[K] if m == "resnet" else good[K]  # noqa: E731
    summary = EV.contrast_table(make_contrast_rows(worse, ks), n_boot=20)
    assert CL.contrast_claims(summary)["supported"].tolist() == [False, True]
    assert CL.contrast_claims(summary, tolerance=0.25)["supported"].tolist() == [True, True]
    # the logits rows are another study: with strategy="logits" only they count
    logits_bad = lambda m, s, K: 0.7 if s == "logits" else good[K]  # noqa: E731
    summary = EV.contrast_table(make_contrast_rows(logits_bad, ks), n_boot=20)
    assert CL.contrast_claims(summary)["supported"].tolist() == [True, True]
    assert CL.contrast_claims(summary, strategy="logits")["supported"].tolist() == [False, False]
    # VGG: K = 1 does not reject → the second claim fails; K = 3 (at the best median) still holds
    one_fails = lambda m, s, K: 0.7 if (m, K) == ("vgg", 1) else good[K]  # noqa: E731
    summary = EV.contrast_table(make_contrast_rows(one_fails, ks), n_boot=20)
    c = CL.contrast_claims(summary)
    assert c["supported"].tolist() == [True, False] and "VGG: median 70.0%" in c["this run"].iloc[1]


def test_contrast_claims_undecidable():
    good = {1: 0.3, 3: 0.2, 5: 0.17}
    # five images: no test can run → None, not False
    few = EV.contrast_table(make_contrast_rows(lambda m, s, K: good[K], [("confusion", 1), ("confusion", 3)],
                                               n=5),
                           n_boot=20)
    assert few["reason"].astype(bool).all()
    c = CL.contrast_claims(few)
    assert c["supported"].tolist() == [None, None]
    # K = 3 (or K = 1) not studied → None with the reason in the text
    no3 = EV.contrast_table(make_contrast_rows(lambda m, s, K: good[K], [("confusion", 1), ("confusion", 5)]),
                            n_boot=20)
    c = CL.contrast_claims(no3)
    assert c["supported"].tolist() == [None, True] and "ResNet: K = 3 not studied" in c["this run"].iloc[0]
    no1 = EV.contrast_table(make_contrast_rows(lambda m, s, K: good[K], [("confusion", 3)]), n_boot=20)
    c = CL.contrast_claims(no1)
    assert c["supported"].tolist() == [True, None] and "K = 1 not studied" in c["this run"].iloc[1]
    # one model contradicts, the other is undecidable: the claim "on every model" is False
    mixed = pd.concat([make_contrast_rows(lambda m, s, K: 0.7, [("confusion", 1), ("confusion", 3)],
                                          models=("resnet",)),
                       make_contrast_rows(lambda m, s, K: 0.2, [("confusion", 1), ("confusion", 3)], n=5,
                                          models=("vgg",))], ignore_index=True)
    assert CL.contrast_claims(EV.contrast_table(mixed, n_boot=20))["supported"].tolist() == [False, False]


# ------------------------------------------------------------------ diagnostic claims


def _diagnostic(high, n=30, const=()):
    """agreements 0.8 (fails H0) for (model, method) in ``high``, else 0.2; ``const`` flags top-1 maps of
    Score-CAM on VGG as constant (with a NaN agreement)."""
    def agreement(model, method, rng):
        v = (0.8 if (model, method) in high else 0.2) + np.linspace(-0.1, 0.1, n)
        if model == "vgg" and method == "scorecam":
            v[list(const)] = np.nan
        return v
    maps = make_maps(agreement, n=n)
    top1 = ((maps.model == "vgg") & (maps.method == "scorecam") & (maps.target == "top1")
            & maps.image_id.isin(const))
    maps.loc[top1, "constant"] = True
    return maps


BASE = ("gradcam", "gradcam++", "scorecam", "ablationcam", "layercam")


def test_diagnostic_claims_hold():
    high = {(m, b) for m in ("vgg", "resnet", "convnext") for b in BASE}  # 15 of 20 baseline tests fail
    c = CL.diagnostic_claims(_diagnostic(high, const=[0]), n_boot=50)
    assert len(c) == 3 and (c["section"] == "diagnostic").all()
    assert c["supported"].tolist() == [True, True, True]
    assert "fails on 3 of 4 models tested" in c["this run"].iloc[0]
    assert "15 of 20 tests fail" in c["this run"].iloc[1]
    # Score-CAM on VGG: the constant top-1 map and its NaN (constant) top-2 map = 2 of 60 maps
    assert "VGG 2/60 (3.3%)" in c["this run"].iloc[2] and "ResNet 0/60 (0.0%)" in c["this run"].iloc[2]
    assert CL.diagnostic_claims(_diagnostic(high, const=[0]), n_boot=50,
                                min_constant=0.03)["supported"].iloc[2] is True
    assert CL.diagnostic_claims(_diagnostic(high, const=[0]), n_boot=50,
                                min_constant=0.04)["supported"].iloc[2] is False


def test_diagnostic_claims_fail_at_the_boundaries():
    # Grad-CAM fails on exactly half of the models (2 of 4): not "more than half"; 10 of 20 baseline tests
    # fail: "at least half" holds; one fewer and it does not
    high = {(m, b) for m in ("vgg", "resnet") for b in BASE}
    c = CL.diagnostic_claims(_diagnostic(high), n_boot=50)
    assert c["supported"].tolist() == [False, True, False]  # and no constant Score-CAM map
    assert "fails on 2 of 4 models" in c["this run"].iloc[0]
    assert "10 of 20 tests fail" in c["this run"].iloc[1]
    c9 = CL.diagnostic_claims(_diagnostic(high - {("resnet", "layercam")}), n_boot=50)
    assert c9["supported"].tolist() == [False, False,
                                        False] and "9 of 20 tests fail" in c9["this run"].iloc[1]
    none = CL.diagnostic_claims(_diagnostic(set()), n_boot=50)
    assert none["supported"].tolist() == [False, False,
                                          False] and "fails on 0 of 4" in none["this run"].iloc[0]


def test_diagnostic_claims_undecidable_and_missing_methods():
    few = CL.diagnostic_claims(_diagnostic(set(), n=5, const=[1]), n_boot=20)
    assert few["supported"].iloc[0] is None and few["supported"].iloc[1] is None
    assert "4 not tested: too few images" in few["this run"].iloc[0]
    assert few["supported"].iloc[2] is True  # 2 of 10 maps constant: counting needs no test
    maps = _diagnostic(set())
    c = CL.diagnostic_claims(maps[~maps.method.isin(["gradcam", "scorecam"])], n_boot=20)
    assert c["supported"].iloc[0] is None and c["this run"].iloc[0] == "no Grad-CAM results"
    assert c["supported"].iloc[2] is None and c["this run"].iloc[2] == "no Score-CAM results"
    assert c["supported"].iloc[1] is False  # 0 of 12 remaining baseline tests fail


# ------------------------------------------------------------------ ground-truth evidence


def _evidence_maps():
    """Every (model, method): top-1 unique evidence i/100 (image 4, whose top-2 map is constant: 1.0), top-2
    0.1 (NaN on image 4), sibling 0.05; shared 0.3 / 0.6 / 0.2."""
    maps = make_maps(low_for_case, extra_targets=("sibling",))
    top1, top2, sib = (maps.target == t for t in ("top1", "top2", "sibling"))
    i = maps["image_id"]
    maps.loc[top1, "unique_evidence"] = np.where(i[top1] == 4, 1.0, i[top1] / 100)
    maps.loc[top2, "unique_evidence"] = np.where(i[top2] == 4, np.nan, 0.1)
    maps.loc[sib, "unique_evidence"] = 0.05
    maps.loc[top1, "shared_evidence"] = 0.3
    maps.loc[top2, "shared_evidence"] = 0.6
    maps.loc[sib, "shared_evidence"] = 0.2
    return maps


def test_evidence_comparison_means_over_the_images_with_two_maps():
    maps = _evidence_maps()
    areas = pd.DataFrame({"image_id": np.arange(30), "unique_area": np.arange(30) / 300,  # 0 … 9.7 %
                          "shared_area": 0.2})
    ev = EV.evidence_comparison(maps, areas=areas.sample(frac=1.0, random_state=0))
    assert list(ev.columns) == ["model", "Model", "method", "Method", "comparison", "n", "n_excluded",
                                "median_agreement", "unique_top1", "unique_other", "shared_top1",
                                "shared_other",
                                "unique_chance", "unique_ceiling"]
    assert len(ev) == 4 * 6 * 2
    assert list(dict.fromkeys(ev["Model"])) == ["ConvNeXt", "DenseNet", "ResNet", "VGG"]
    assert ev["Method"].iloc[:6].tolist() == ["AblationCAM", "CASE", "Grad-CAM", "Grad-CAM++", "LayerCAM",
                                              "ScoreCAM"]
    assert ev["comparison"].iloc[:12].tolist() == ["top1_vs_top2"] * 6 + ["true_vs_sibling"] * 6
    keep = np.arange(30) != 4
    r = ev[(ev.model == "vgg") & (ev.method == "case") & (ev.comparison == "top1_vs_top2")].iloc[0]
    x = maps[(maps.model == "vgg") & (maps.method == "case")
             & (maps.target == "top2")]["agreement"].to_numpy()
    assert (r.n, r.n_excluded) == (29, 1)
    assert r.median_agreement == pytest.approx(np.median(x[keep]))
    assert r.unique_top1 == pytest.approx(np.arange(30)[keep].mean() / 100)
    assert (r.unique_other, r.shared_top1, r.shared_other) == pytest.approx((0.1, 0.3, 0.6))
    area = np.arange(30)[keep] / 300
    assert r.unique_chance == pytest.approx(area.mean())
    assert r.unique_ceiling == pytest.approx(np.minimum(1, area / 0.05).mean())  # capped from image 15 on
    s = ev[(ev.model == "vgg") & (ev.method == "case") & (ev.comparison == "true_vs_sibling")].iloc[0]
    assert (s.n, s.n_excluded, s.median_agreement) == (30, 0, 0.25)
    assert s.unique_top1 == pytest.approx((np.arange(30)[keep].sum() + 100) / 3000)
    assert (s.unique_other, s.shared_other) == pytest.approx((0.05, 0.2))
    assert s.unique_chance == pytest.approx(np.arange(30).mean() / 300)
    assert ev[ev.comparison == "true_vs_sibling"]["unique_ceiling"].iloc[0] == pytest.approx(
        np.minimum(1, np.arange(30) / 300 / 0.05).mean())
    at10 = EV.evidence_comparison(maps, areas=areas, k=0.1, comparison="top1_vs_top2")
    assert len(at10) == 24
    assert at10["unique_ceiling"].iloc[0] == pytest.approx(np.minimum(1, area / 0.1).mean())
    plain = EV.evidence_comparison(maps, comparison="top1_vs_top2")
    assert plain[["unique_chance", "unique_ceiling"]].isna().all().all()
    np.testing.assert_allclose(plain["unique_top1"], at10["unique_top1"])


def test_evidence_comparison_all_degenerate_no_masks_and_errors():
    maps = _evidence_maps()
    gone = (maps.model == "vgg") & (maps.method == "scorecam") & (maps.target == "top1")
    maps.loc[gone, "constant"] = True  # every top-1 map of this method constant: no image left
    ev = EV.evidence_comparison(maps, comparison="top1_vs_top2")
    r = ev[(ev.model == "vgg") & (ev.method == "scorecam")].iloc[0]
    assert (r.n, r.n_excluded) == (0, 30) and np.isnan(r.unique_top1) and np.isnan(r.median_agreement)
    none = EV.evidence_comparison(make_maps(low_for_case))  # no part masks: empty, with the columns
    assert none.empty and "unique_ceiling" in none.columns and "median_agreement" in none.columns
    areas = pd.DataFrame({"image_id": np.arange(30), "unique_area": 0.05})
    with pytest.raises(ValueError, match="no maps for layer='norm5'"):
        EV.evidence_comparison(maps, layer="norm5")
    with pytest.raises(ValueError, match=r"areas lacks image ids \[29\]"):
        EV.evidence_comparison(maps, areas=areas[areas.image_id != 29])
    with pytest.raises(ValueError, match="one row per image_id"):
        EV.evidence_comparison(maps, areas=pd.concat([areas, areas.head(1)]))
    with pytest.raises(ValueError, match="one row per image_id"):
        EV.evidence_comparison(maps, areas=areas.rename(columns={"unique_area": "area"}))
    with pytest.raises(ValueError, match="k must be a fraction"):
        EV.evidence_comparison(maps, areas=areas, k=5)
    # a map given twice (two runs mixed) is refused, not counted twice
    vgg0 = (maps.model == "vgg") & (maps.image_id == 0)
    for extra in (maps[vgg0], maps[vgg0 & (maps.target == "top2")]):
        with pytest.raises(ValueError, match=r"image ids repeat: \[0\]"):
            EV.evidence_comparison(pd.concat([maps, extra], ignore_index=True))


AGREE = {"case": 0.1, "layercam": 0.3, "gradcam++": 0.4, "ablationcam": 0.5, "scorecam": 0.6, "gradcam": 0.8}
PRECISION = {"case": 0.9, "layercam": 0.7, "gradcam++": 0.6, "ablationcam": 0.5, "scorecam": 0.4,
             "gradcam": 0.2}


def _evidence_claim_maps(precision):
    """Top-2 agreements around AGREE[method]; top-1 unique evidence ``precision(model, method)``."""
    maps = make_maps(lambda model, method, rng: AGREE[method] + np.linspace(-0.05, 0.05, 30))
    top1 = maps.target == "top1"
    maps.loc[top1, "unique_evidence"] = [precision(m, me) for m,
                                         me in zip(maps.loc[top1, "model"], maps.loc[top1, "method"])]
    maps.loc[maps.target == "top2", "unique_evidence"] = 0.1
    return maps


def test_evidence_claims_hold_and_fail():
    c = CL.evidence_claims(_evidence_claim_maps(lambda model, method: PRECISION[method]))
    assert len(c) == 2 and (c["section"] == "ground truth").all()
    assert c["supported"].tolist() == [True, True]
    assert "VGG: CASE 90.0%, best CASE 90.0%" in c["this run"].iloc[0]
    assert "ρ = -1.00" in c["this run"].iloc[1]
    # on VGG Grad-CAM's top-1 map is the most precise: claim 1 fails there; ρ over the methods on VGG is
    # then 1 − 6·Σd²/(n(n²−1)) = 1 − 6·40/210 = −1/7 (Grad-CAM moves from the last rank to the first): still
    # < 0
    def vgg_gc(model, method):
        return 0.95 if (model, method) == ("vgg", "gradcam") else PRECISION[method]

    c = CL.evidence_claims(_evidence_claim_maps(vgg_gc))
    assert c["supported"].tolist() == [False, True]
    assert "VGG: CASE 90.0%, best Grad-CAM 95.0%" in c["this run"].iloc[0]
    assert "VGG: ρ = -0.14" in c["this run"].iloc[1]
    # on ResNet precision rises with agreement (ρ = +1) and CASE is the least precise
    rising = lambda model, method: AGREE[method] if model == "resnet" else PRECISION[method]  # noqa: E731
    c = CL.evidence_claims(_evidence_claim_maps(rising))
    assert c["supported"].tolist() == [False, False] and "ResNet: ρ = 1.00" in c["this run"].iloc[1]


def test_evidence_claims_undecidable():
    c = CL.evidence_claims(make_maps(low_for_case))  # no part masks
    assert c["supported"].tolist() == [None, None]
    assert (c["this run"] == "no part masks in this profile").all()
    maps = _evidence_claim_maps(lambda model, method: PRECISION[method])
    c = CL.evidence_claims(maps[~((maps.model == "vgg") & (maps.method == "layercam"))])
    assert c["supported"].tolist() == [None, None]
    assert "VGG: only 5 methods with evidence" in c["this run"].iloc[0]
    # a model that contradicts outweighs one that cannot be checked
    def vgg_gc(model, method):
        return 0.95 if (model, method) == ("resnet", "gradcam") else PRECISION[method]

    maps = _evidence_claim_maps(vgg_gc)
    c = CL.evidence_claims(maps[~((maps.model == "vgg") & (maps.method == "layercam"))])
    assert c["supported"].tolist() == [False, None]


# ------------------------------------------------------------------ projection table


def hand_example(masks=True):
    """A case_example-like dict: 1 image, 2 targets, 10×10 maps (top 5 % = 5 pixels), unique part = row 0."""
    flat = torch.arange(100, 0, -1, dtype=torch.float32)  # decreasing: top 5 = positions 0..4
    gradcam = torch.stack([flat, torch.zeros(100)]).reshape(1, 2, 10, 10)  # target 1: a constant map
    case = torch.zeros(1, 2, 100)
    case[0, 0, 8:13] = torch.tensor([5.0, 4, 3, 2, 1])  # positions 8, 9 on row 0 → 2 of 5
    case[0, 1, 50:55] = 1.0 + torch.arange(5.0)  # row 5 → 0 of 5
    unique = torch.zeros(1, 10, 10, dtype=torch.bool)
    unique[0, 0] = True
    vectors = SimpleNamespace(targets=torch.tensor([[3, 2]]), cosine=torch.tensor([[0.5, -0.25]]),
                              kept=torch.tensor([[0.8, 1.0]]), gradcam=gradcam,
                              case=case.reshape(1, 2, 10, 10))
    return {"vectors": vectors, "image_ids": [42], "targets": ("top1", "top2"),
            "target_names": [["top1: cat", "top2: dog: big"]], "contrast_names": [[["a", "b"], ["c"]]],
            "masks": {"unique": unique, "shared": ~unique} if masks else None}


def test_projection_table_values():
    tab = EV.projection_table(hand_example())
    assert list(tab.columns) == ["image", "target", "class", "contrast classes", "cos(w_u, w̄)",
                                 "‖w⊥‖ / ‖w_u‖",
                                 "unique (Grad-CAM)", "unique (CASE)"]
    assert tab["image"].tolist() == [42, 42] and tab["target"].tolist() == ["top1", "top2"]
    assert tab["class"].tolist() == ["cat", "dog: big"]  # only the role prefix is cut
    assert tab["contrast classes"].tolist() == ["a, b", "c"]
    assert tab["cos(w_u, w̄)"].tolist() == [0.5, -0.25]
    assert tab["‖w⊥‖ / ‖w_u‖"].tolist() == pytest.approx([0.8, 1.0])
    # constant map
    assert tab["unique (Grad-CAM)"].iloc[0] == 1.0 and np.isnan(tab["unique (Grad-CAM)"].iloc[1])
    assert tab["unique (CASE)"].tolist() == pytest.approx([0.4, 0.0])
    # k = 10 %: 10 pixels; Grad-CAM's are row 0 (all unique), CASE's 5 set pixels + 5 zeros first in the tie
    # order
    at10 = EV.projection_table(hand_example(), k=0.1)
    assert at10["unique (Grad-CAM)"].iloc[0] == 1.0
    no_masks = EV.projection_table(hand_example(masks=False))
    assert list(no_masks.columns) == ["image", "target", "class", "contrast classes", "cos(w_u, w̄)",
                                      "‖w⊥‖ / ‖w_u‖"]


def test_case_lowest_is_strict_and_says_so_on_a_tie():
    from casekit.report import claim_checks as C

    t1 = pd.DataFrame({"model": ["a", "a", "b", "b"], "method": ["case", "gradcam"] * 2,
                       "median": [0.0, 0.0, 0.1, 0.3]})
    run = C.RunView(None, options={"layer": "final_conv"}, cache={("t1", "final_conv"): t1})
    out = C.rq1_case_lowest(run)
    assert out[0] is False  # below every baseline's, as the criterion says: a tie is not below
    assert "a: CASE 0.0% vs lowest baseline 0.0% (a tie: not below)" in out[1]
    assert "b: CASE 10.0% vs lowest baseline 30.0%" in out[1] and out[1].count("tie") == 1
