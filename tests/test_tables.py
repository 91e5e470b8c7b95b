"""casekit.tables on hand-made result frames, with scipy as the oracle for every p-value."""

from __future__ import annotations

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
