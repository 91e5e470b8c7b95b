"""casekit.tables on hand-made result frames, with scipy as the oracle for every p-value."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from casekit import tables as T
from casekit.stats import format_p

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
                rows.append({**base, "target": "top2", "target_class": (i + 1) % 10, "comparison": "top1_vs_top2",
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
    assert list(full["Method"].iloc[:6]) == ["AblationCAM", "CASE", "Grad-CAM", "Grad-CAM++", "LayerCAM", "ScoreCAM"]
    ps = []
    for r in full.itertuples():
        v = maps[(maps["model"] == r.model) & (maps["method"] == r.method) & (maps["target"] == "top2")]["agreement"]
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
    assert (full.loc[(full["method"] == "gradcam") & (full["model"] == "vgg"), "verdict"] == "not shown class-sensitive").all()

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
    x = maps[(maps.model == "vgg") & (maps.method == "gradcam") & (maps.target == "top2")]["agreement"].dropna()
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
    b = make_maps(lambda model, method, rng: np.full(30, 0.9) - (0.5 if method == "case" else 0) + rng.normal(0, .01, 30),
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
    sa = T.seed_agreement(both, n_boot=50)
    assert set(sa["seed"]) == {0, 1, 2} and len(sa) == 18
    r = sa[(sa.seed == 1) & (sa.method == "layercam")].iloc[0]
    x = frames[1][(frames[1].model == "densenet") & (frames[1].method == "layercam") & (frames[1].target == "top2")]["agreement"]
    assert r["mean"] == pytest.approx(x.mean()) and r["sd"] == pytest.approx(x.std())

    hist = T.agreement_histogram(frames[0], model="vgg", method="case")
    assert len(hist) == 20 and (hist["n_excluded"] == 1).all()
    v = frames[0][(frames[0].model == "vgg") & (frames[0].method == "case") & (frames[0].target == "top2")]["agreement"].dropna()
    np.testing.assert_array_equal(hist["count"], np.histogram(v, bins=np.linspace(0, 1, 21))[0])
    assert hist["count"].sum() == 29
    edge = make_maps(lambda *a: np.r_[np.ones(10), np.full(10, 0.05), np.full(10, 0.0499)])
    h = T.agreement_histogram(edge, model="vgg", method="case")
    assert h["count"].iloc[-1] == 10 and h["count"].iloc[1] == 10 and h["count"].iloc[0] == 10  # [.95, 1] is closed


def test_class_active_channels_and_deletion_curves(maps):
    sp = pd.DataFrame({"model": "densenet", "seed": 0, "layer": "final_conv", "image_id": range(6),
                       "layer_name": "x", "label": [0, 0, 1, 1, 1, 2], "active_channels": [2, 4, 6, 8, 10, 3],
                       "n_channels": 12, "tau": 1e-3})
    cac = T.class_active_channels(sp)
    assert cac["mean_active_channels"].tolist() == [3.0, 8.0, 3.0]
    assert cac["n_images"].tolist() == [2, 3, 1]
    np.testing.assert_allclose(cac["fraction_active"], [3 / 12, 8 / 12, 3 / 12])

    curves = T.deletion_curves(maps)
    r = curves[(curves.model == "vgg") & (curves.method == "case") & (curves.k == 0.5)].iloc[0]
    sel = maps[(maps.model == "vgg") & (maps.method == "case") & (maps.target == "top1")]["relative_drop_50"]
    assert r.mean_relative_drop == pytest.approx(sel.mean())
    assert r.sem_relative_drop == pytest.approx(sel.std(ddof=1) / math.sqrt(30))
    assert sorted(curves["k"].unique()) == [0.05, 0.5]


def test_evidence_table_means_per_target():
    maps = make_maps(low_for_case, extra_targets=("sibling",))
    maps.loc[maps.target == "top1", "unique_evidence"] = np.where(maps.loc[maps.target == "top1", "image_id"] % 2, 0.5, 1.0)
    maps.loc[maps.target == "sibling", "unique_evidence"] = 0.25
    maps.loc[(maps.target == "sibling") & (maps.image_id == 0), "unique_evidence"] = np.nan  # a constant map
    ev = T.evidence_table(maps).set_index(["model", "method", "target"])
    assert ev.loc[("vgg", "case", "top1"), "unique_evidence"] == pytest.approx(0.75)
    assert ev.loc[("vgg", "case", "sibling"), "unique_evidence"] == pytest.approx(0.25)
    assert ev.loc[("vgg", "case", "sibling"), "n_excluded"] == 1 and ev.loc[("vgg", "case", "top1"), "n_excluded"] == 0
    with pytest.raises(ValueError, match="no evidence scores"):
        T.evidence_table(make_maps(low_for_case))


def _sparsity(dense_counts, norm5_fraction=0.95):
    rows = []
    for model, (count, width) in {"densenet": (dense_counts, 12), "resnet": (40, 64), "vgg": (30, 64),
                                  "convnext": (50, 64)}.items():
        for i in range(20):
            rows.append({"model": model, "seed": 0, "layer": "final_conv", "image_id": i, "layer_name": "x",
                         "label": i % 5, "active_channels": count + (i % 3), "n_channels": width, "tau": 1e-3})
    for i in range(20):
        rows.append({"model": "densenet", "seed": 0, "layer": "norm5", "image_id": i, "layer_name": "features.norm5",
                     "label": i % 5, "active_channels": round(norm5_fraction * 66), "n_channels": 66, "tau": 1e-3})
    return pd.DataFrame(rows)


def test_claims_supported_and_not(maps):
    # Hand-made run 1: CASE low everywhere → "CASE rejects on every model" is supported.
    c = T.claims(maps, _sparsity(2), n_boot=50).set_index("claim")
    row = c.loc["CASE rejects H0 on every model"]
    assert row["supported"] is True and "p < .0001" in row["this run"]
    dense = [k for k in c.index if k.startswith("DenseNet is the most class-sensitive")][0]
    assert c.loc[dense, "supported"] is True  # 6 of 6 on DenseNet, fewer elsewhere
    absolute = [k for k in c.index if "absolute count" in k][0]
    assert c.loc[absolute, "supported"] is True and c.loc["… and also as a fraction of the layer's channels", "supported"] is True
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

    c2 = T.claims(make_maps(case_fails_on_resnet, drops), _sparsity(9, norm5_fraction=0.5), n_boot=50).set_index("claim")
    row = c2.loc["CASE rejects H0 on every model"]
    assert row["supported"] is False and "ResNet: p = " in row["this run"]
    assert c2.loc["… and also as a fraction of the layer's channels", "supported"] is False  # 10/12 vs ≤ 52/64
    assert c2.loc[[k for k in c2.index if "absolute count" in k][0], "supported"] is True  # 10 < 30: width, not sparsity
    assert c2.loc[[k for k in c2.index if k.startswith("norm5 activates")][0], "supported"] is False
    # sections without data say so instead of guessing
    assert c2[c2["section"] == "norm5"]["supported"].isna().all()


def test_claims_fidelity_not_supported_when_three_baselines_beat_case():
    def weak_case(model, method, rng):
        pb = rng.uniform(0.6, 1.0, 30)
        shift = 0.05 if method == "case" else 0.3
        pa = np.clip(pb - rng.normal(shift, 0.05, 30), 0, 1)
        return pb, pa, pa
    c = T.claims(make_maps(low_for_case, weak_case), sections=["fidelity"], n_boot=10)
    assert len(c) == 1 and c["supported"].iloc[0] is False
    assert "5 baseline(s) significantly higher" in c["this run"].iloc[0]


# =============================================================================================== notebooks 04–07
# sparsity_summary, sparsity_sensitivity, sparsity_correlation, layer_comparison, fidelity_pairing,
# fidelity_differences, table3_vs_paper, histogram_summary, chapter_claims.  Additive block.


def _counts(rows):
    """Sparsity rows from (model, layer, width, labels, counts) tuples."""
    out = []
    for model, layer, width, labels, counts in rows:
        for i, (y, c) in enumerate(zip(labels, counts)):
            out.append({"model": model, "seed": 0, "layer": layer, "image_id": i, "layer_name": f"{model}.{layer}",
                        "label": y, "active_channels": c, "n_channels": width, "tau": 1e-3})
    return pd.DataFrame(out)


def test_sparsity_summary_spread_over_classes_and_layer_order():
    sp = _counts([("densenet", "norm5", 20, [0, 1, 2], [15, 15, 15]),
                  ("densenet", "extra", 8, [0, 1], [1, 3]),
                  ("densenet", "final_conv", 10, [0, 0, 1, 1, 2], [2, 4, 6, 6, 9])])
    s = T.sparsity_summary(sp)
    assert s["layer"].tolist() == ["final_conv", "norm5", "extra"]  # the paper's layer first, unknown roles last
    r = s.iloc[0]  # class means 3, 6, 9 of 10 channels
    assert (r.n_classes, r.n_images, r.n_channels) == (3, 5, 10)
    assert (r.median_active, r.min_active, r.max_active) == (6.0, 3.0, 9.0)
    assert (r.median_fraction, r.min_fraction, r.max_fraction) == pytest.approx((0.6, 0.3, 0.9))
    assert s.iloc[1].median_fraction == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no sparsity rows"):
        T.sparsity_summary(sp, model="vgg")


def test_spearman_exact_permutation_p_matches_scipy():
    rho, p, n = T._spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert (rho, n) == (pytest.approx(1.0), 5) and p == pytest.approx(2 / 120)  # identity and reversal of 5! pairings
    x, y = [0.3, 0.1, 0.5, 0.5, 0.9, 0.2], [1.0, 3.0, 2.0, 2.0, 5.0, 0.0]  # with ties
    oracle = sps.pearsonr(sps.rankdata(x), sps.rankdata(y),
                          method=sps.PermutationMethod(n_resamples=np.inf))
    rho, p, n = T._spearman(x, y)
    assert rho == pytest.approx(sps.spearmanr(x, y).statistic) and p == pytest.approx(oracle.pvalue) and n == 6
    big = np.random.default_rng(0).normal(size=(2, 40))
    assert T._spearman(*big)[1] == pytest.approx(sps.spearmanr(*big).pvalue)  # n > 8: scipy's
    assert np.isnan(T._spearman([1, 2, np.nan, 4], [1, 1, 5, 1])[0])  # constant side after dropping the NaN pair
    assert T._spearman([1, 2], [2, 1])[2] == 2 and np.isnan(T._spearman([1, 2], [2, 1])[1])


def _sparsity_for(models, width=64, count=lambda model, i: 10 + i % 7, layer="final_conv"):
    return _counts([(m, layer, width, [i % 10 for i in range(30)], [count(m, i) for i in range(30)]) for m in models])


def test_sparsity_sensitivity_joins_tests_and_per_image_rho():
    maps = make_maps(low_for_case)
    sp = _sparsity_for(["vgg", "resnet", "densenet"], count=lambda m, i: (3 * i) % 17)
    ss = T.sparsity_sensitivity(maps, sp, n_boot=50)
    assert len(ss) == 18 and "convnext" not in set(ss["model"])  # a layer without counts is left out
    r = ss[(ss.model == "vgg") & (ss.method == "case")].iloc[0]
    agr = maps[(maps.model == "vgg") & (maps.method == "case") & (maps.target == "top2")]["agreement"].to_numpy()
    ok = ~np.isnan(agr)
    assert r.p == pytest.approx(sps.wilcoxon(agr[ok] - 0.5, alternative="less").pvalue)
    assert (r.n, r.n_excluded, r.reject) == (29, 1, True)
    counts = (3 * np.arange(30)) % 17
    assert r.rho_images == pytest.approx(sps.spearmanr(counts[ok], agr[ok]).statistic)
    assert r.p_rho_images == pytest.approx(sps.spearmanr(counts[ok], agr[ok]).pvalue) and r.n_rho == 29
    cls = pd.Series(counts).groupby(np.arange(30) % 10).mean()
    assert r.median_active == pytest.approx(cls.median()) and r.median_fraction == pytest.approx(cls.median() / 64)
    with pytest.raises(TypeError, match="sparsity table"):
        T.sparsity_sensitivity(maps)


def test_sparsity_correlation_over_layers():
    frame = pd.DataFrame({"method": "case", "Model": list("ABCDE"), "layer": "final_conv",
                          "median_fraction": [0.1, 0.2, 0.3, 0.4, 0.5], "median_active": [50, 40, 30, 20, 10],
                          "median": [0.1, 0.3, 0.2, 0.6, 0.9]})
    c = T.sparsity_correlation(frame).iloc[0]
    assert c.n_layers == 5 and c.Method == "CASE"
    assert c.rho_fraction == pytest.approx(0.9) and c.rho_count == pytest.approx(-0.9)
    perms = [np.corrcoef([1, 2, 3, 4, 5], p)[0, 1] for p in itertools.permutations([1, 3, 2, 4, 5])]
    assert c.p_fraction == pytest.approx(np.mean(np.abs(perms) >= 0.9 - 1e-12))
    with pytest.raises(ValueError, match="sparsity_sensitivity"):
        T.sparsity_correlation(frame.drop(columns="median"))


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
                    _sparsity_for(["densenet"], width=66, count=lambda m, i: 60, layer="norm5")], ignore_index=True)
    lc = T.layer_comparison(maps, sp, n_boot=50).set_index("layer")
    assert lc.loc["final_conv", "n_reject"] == 6 and lc.loc["norm5", "n_reject"] == 0
    assert lc.loc["norm5", "rejecting"] == "none" and lc.loc["final_conv", "rejecting"].startswith("AblationCAM, CASE")
    case = maps[(maps.model == "densenet") & (maps.layer == "norm5") & (maps.method == "case") & (maps.target == "top2")]
    assert lc.loc["norm5", "case_median"] == pytest.approx(case["agreement"].median())
    assert lc.loc["norm5", "median_fraction"] == pytest.approx(60 / 66) and lc.loc["norm5", "n_channels"] == 66
    assert lc.loc["final_conv", "layer_name"] == "densenet.final_conv"
    no_sp = T.layer_comparison(maps, sp[sp.layer == "final_conv"], n_boot=50).set_index("layer")
    assert np.isnan(no_sp.loc["norm5", "median_fraction"]) and no_sp.loc["norm5", "n_reject"] == 0


def test_fidelity_pairing_and_paired_differences(maps):
    pairing = T.fidelity_pairing(maps)
    assert pairing["same_images_as_case"].all() and (pairing["n_images_max"] == 30).all()
    gap = maps.drop(maps[(maps.model == "vgg") & (maps.method == "gradcam") & (maps.image_id == 7)].index)
    p = T.fidelity_pairing(gap).set_index("model")
    assert not p.loc["vgg", "same_images_as_case"] and p.loc["vgg", "unpaired_ids"] == [7]
    assert p.loc["vgg", "n_images_min"] == 29 and p.loc["resnet", "same_images_as_case"]

    d = T.fidelity_differences(maps)
    assert len(d) == 20 and "case" not in set(d["method"])
    r = d[(d.model == "vgg") & (d.method == "layercam")].iloc[0]
    top1 = maps[(maps.model == "vgg") & (maps.target == "top1")]
    diff = (top1[top1.method == "case"]["relative_drop"].to_numpy() - top1[top1.method == "layercam"]["relative_drop"].to_numpy())
    lo, hi = sps.t.interval(0.95, 29, loc=diff.mean(), scale=sps.sem(diff))
    assert (r.mean_diff, r.ci_low, r.ci_high) == pytest.approx((diff.mean(), lo, hi))
    assert r.p_two_sided == pytest.approx(sps.ttest_rel(top1[top1.method == "case"]["relative_drop"],
                                                        top1[top1.method == "layercam"]["relative_drop"]).pvalue)


def test_table3_vs_paper_verdicts(maps):
    cmp = T.table3_vs_paper(maps)
    assert len(cmp) == 20
    vgg = cmp[cmp.Model == "VGG"].set_index("Method")
    assert vgg.loc["Grad-CAM++", "paper_verdict"] == "CASE significantly higher"  # .1020 < .1317, p < .0001
    assert vgg.loc["LayerCAM", "paper_verdict"] == "method significantly higher"
    assert vgg.loc["LayerCAM", "verdict"] == "method significantly higher"  # the hand-made LayerCAM drops more
    assert vgg.loc["LayerCAM", "same_verdict"] is True
    assert (cmp[cmp.Model == "DenseNet"]["paper_verdict"] == "no significant difference").all()
    assert all(s == (a == b) for s, a, b in zip(cmp["same_verdict"], cmp["paper_verdict"], cmp["verdict"]))
    other = T.table3_vs_paper(maps.replace({"model": {"resnet": "mynet"}}))
    row = other[other.model == "mynet"].iloc[0]
    assert np.isnan(row.paper_mean) and row.paper_verdict == "–" and row.same_verdict is None


def test_histogram_summary_values():
    maps = make_maps(lambda *a: np.r_[np.full(10, 0.2), np.full(19, 0.7), [np.nan]])
    h = T.histogram_summary(maps).set_index(["model", "method"])
    r = h.loc[("vgg", "case")]
    assert (r.n, r.n_excluded) == (29, 1)
    assert r["share_below"] == pytest.approx(10 / 29) and r["median"] == pytest.approx(0.7)
    assert T.histogram_summary(maps, threshold=0.8).loc[0, "share_below"] == pytest.approx(1.0)


def test_chapter_claims_sparsity_relation():
    c = T.chapter_claims(make_maps(low_for_case), "sparsity", sparsity=_sparsity(2), n_boot=50).set_index("claim")
    assert set(c["section"]) == {"sparsity", "sparsity ↔ sensitivity"}
    rel = c[c["section"] == "sparsity ↔ sensitivity"]
    assert len(rel) == 3 and (rel["supported"] == True).all()  # noqa: E712  DenseNet: sparsest and 6/6 reject
    assert "sparsest: DenseNet final_conv" in rel["this run"].iloc[0]
    # DenseNet narrow but dense: sparsest by count (still 6/6), VGG sparsest by fraction (1/6) → not supported
    c2 = T.chapter_claims(make_maps(low_for_case), "sparsity", sparsity=_sparsity(9), n_boot=50)
    rel2 = c2[c2["section"] == "sparsity ↔ sensitivity"]
    assert rel2["supported"].tolist()[:2] == [True, False] and "sparsest: VGG final_conv" in rel2["this run"].iloc[1]


def test_chapter_claims_norm5_and_appendix():
    maps = _two_layers()
    c = T.chapter_claims(maps, "norm5", sparsity=_sparsity(2, norm5_fraction=0.95), n_boot=50).set_index("claim")
    assert c.loc["CASE still rejects H0 at norm5", "supported"] is False
    more = [k for k in c.index if k.startswith("the final conv gives more")][0]
    assert c.loc[more, "supported"] is True and "final_conv: 6/6" in c.loc[more, "this run"]
    denser = [k for k in c.index if k.startswith("norm5 is denser")][0]
    assert c.loc[denser, "supported"] is True
    assert (c["section"] == "norm5").all() and any(k.startswith("norm5 activates nearly all") for k in c.index)

    a = T.chapter_claims(maps, "appendix")
    assert len(a) == 5
    assert a["supported"].tolist() == [True, True, True, True, True]  # VGG high, CASE lowest, DenseNet conv low, norm5 high
    assert T.chapter_claims(make_maps(low_for_case), "appendix")["supported"].iloc[4] is None  # no norm5 rows
    with pytest.raises(ValueError, match="chapter must be one of"):
        T.chapter_claims(maps, "rq9")


def test_chapter_claims_fidelity_at_both_ks(maps):
    c = T.chapter_claims(maps, "fidelity")
    assert len(c) == 10 and c["section"].str.contains("k = 5%").sum() == 5 and c["section"].str.contains("k = 50%").sum() == 5
    first = c.iloc[0]
    assert "relative drop" in first["section"] and first["supported"] is True  # only LayerCAM drops more than CASE
    dn = c[c["claim"].str.startswith("on DenseNet and ResNet")].iloc[0]
    assert dn["supported"] is False and "LayerCAM" in dn["this run"]
    cx = c[c["claim"].str.startswith("on ConvNeXt")].iloc[0]
    assert cx["supported"] is False and "AblationCAM: p" in cx["this run"]  # CASE beats AblationCAM, not LayerCAM
    one = T.chapter_claims(maps, "fidelity", ks=[0.05])
    assert len(one) == 5
