"""casekit.evaluation.diagnostic (issue 14): chance reference, confusable runner-ups, map resolution, NaN
rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

import casekit as ck
from casekit.evaluation.diagnostic import (
    chance_agreement,
    chance_pairs,
    chance_test,
    confusable_strata,
    in_contrast_set,
    map_resolution,
    nan_rule_flip,
)
from casekit.evaluation.metrics import topk_agreement
from casekit.evaluation.stats import class_sensitivity_test

# --------------------------------------------------------------------------- chance pairs


def test_chance_pairs_is_a_seeded_single_cycle_derangement():
    for n in (2, 3, 10, 101):
        p = chance_pairs(n, seed=4)
        assert p.dtype == np.int64 and sorted(p.tolist()) == list(range(n))  # a permutation
        assert (p != np.arange(n)).all()  # nobody with itself
        seen, i = set(), 0
        while i not in seen:  # one cycle through all n images
            seen.add(i)
            i = int(p[i])
        assert len(seen) == n
        assert np.array_equal(p, chance_pairs(n, seed=4))
    assert chance_pairs(2).tolist() == [1, 0]
    assert not np.array_equal(chance_pairs(50, seed=0), chance_pairs(50, seed=1))
    assert ck.diagnostic.chance_pairs is chance_pairs  # the short name
    with pytest.raises(ValueError, match="≥ 2"):
        chance_pairs(1)


def test_chance_pairs_with_labels_pairs_different_classes():
    rng = np.random.default_rng(0)
    for trial in range(20):
        labels = rng.integers(0, 5, size=40)
        labels[:20] = 7  # one class holds exactly half: still possible
        p = chance_pairs(40, seed=trial, labels=labels)
        assert (labels[p] != labels).all() and sorted(p.tolist()) == list(range(40))
    with pytest.raises(ValueError, match="holds 3 of 5 images"):
        chance_pairs(5, labels=[1, 1, 1, 2, 3])
    with pytest.raises(ValueError, match="one entry per image"):
        chance_pairs(5, labels=[1, 2])


def test_chance_agreement_by_hand():
    # 4×4 maps, k = 25 % → n = 4, no ties: maps 0 and 1 have their top 4 in row 0, map 2 in row 3.
    base = torch.arange(16, dtype=torch.float32).view(4, 4) / 16 + 0.01
    m0 = base.flip(0)  # largest values in row 0
    m1 = m0.flip(1)  # same row, reversed columns
    m2 = base  # row 3
    maps = torch.stack([m0, m1, m2, torch.zeros(4, 4)])
    res = chance_agreement(maps, k=0.25, seed=3)
    top_row = {0: 0, 1: 0, 2: 3}
    for i, j in enumerate(res.partner.tolist()):
        if 3 in (i, j):
            assert math.isnan(float(res.agreement[i]))  # the constant map has no top-k set
        else:
            assert float(res.agreement[i]) == (1.0 if top_row[i] == top_row[j] else 0.0)
    np.testing.assert_array_equal(res.agreement.numpy(),
                                  topk_agreement(maps, maps[torch.as_tensor(res.partner)], 0.25, "random",
                                                 3).numpy())
    with pytest.raises(ValueError, match=r"\[N, \.\.\., H, W\]"):
        chance_agreement(m0, 0.25)


# --------------------------------------------------------------------------- chance test


def test_chance_test_matches_scipy():
    rng = np.random.default_rng(2)
    chance = rng.uniform(0.1, 0.9, 80)
    agreement = np.clip(chance - rng.normal(0.05, 0.2, 80), 0, 1)
    agreement[[3, 7]] = np.nan
    chance[11] = np.nan
    res = chance_test(agreement, chance)
    ok = ~(np.isnan(agreement) | np.isnan(chance))
    a, c = agreement[ok], chance[ok]
    d = a - c
    assert res.n == 77 and res.n_excluded == 3
    assert res.p == pytest.approx(float(sps.wilcoxon(d, alternative="less").pvalue), rel=1e-12)
    below, above = int((d < 0).sum()), int((d > 0).sum())
    assert res.sign_p == pytest.approx(float(sps.binomtest(below, below + above, 0.5,
                                                           alternative="greater").pvalue))
    assert res.p_mannwhitney == pytest.approx(float(sps.mannwhitneyu(a, c, alternative="less").pvalue),
                                              rel=1e-12)
    assert (res.median_diff == pytest.approx(float(np.median(d)))
            and res.median_chance == pytest.approx(np.median(c)))
    assert res.reject == (res.p < 0.05) and res.sign_reject == (res.sign_p < 0.05)


def test_chance_test_hand_example_and_edge_cases():
    # 10 images, every agreement 0.1 below its chance value, distinct sizes: W+ = 0, exact p = 2^-10
    chance = np.linspace(0.3, 0.9, 10)
    agreement = chance - np.linspace(0.05, 0.5, 10)
    res = chance_test(agreement, chance)
    assert (res.statistic == 0 and res.p == pytest.approx(2.0 ** -10)
            and res.sign_p == pytest.approx(2.0 ** -10))
    assert res.reject and res.sign_reject and (res.n_below, res.n_above) == (10, 0)
    few = chance_test([0.1, 0.2], [0.5, 0.5])
    assert math.isnan(few.p) and "only 2" in few.reason and not few.reject
    with pytest.raises(ValueError, match="aligned per image"):
        chance_test([0.1, 0.2], [0.5])


# --------------------------------------------------------------------------- confusable runner-ups


def test_in_contrast_set_by_hand():
    sets = torch.tensor([[1, 2], [0, 3], [3, 0], [2, 1]])
    assert (in_contrast_set([0, 0, 1, 2, 3], [1, 3, 3, 0, 0], sets).tolist()
            == [True, False, True, True, False])
    with pytest.raises(ValueError, match="outside"):
        in_contrast_set([4], [0], sets)


def _rows() -> pd.DataFrame:
    # 40 images: 24 whose runner-up is in the contrast set (20 with p2 ≥ .05, low agreement) and 16 outside
    # (p2 < .05, agreement just above 0.5).  Contrast sets V(u) = {u + 1 mod 4}.
    rng = np.random.default_rng(0)
    top1 = np.arange(40) % 4
    top2 = np.where(np.arange(40) < 24, (top1 + 1) % 4, (top1 + 2) % 4)
    prob = np.where(np.arange(40) < 20, 0.2, 0.01)
    agree = np.where(np.arange(40) < 24, rng.uniform(0.0, 0.3, 40), rng.uniform(0.55, 0.7, 40))
    agree[5] = np.nan
    return pd.DataFrame({"label": top1, "other_class": top2, "other_prob": prob, "agreement": agree})


def test_confusable_strata_on_a_hand_made_frame():
    rows = _rows()
    sets = torch.tensor([[1], [2], [3], [0]])
    out = confusable_strata(rows, sets, n_boot=50)
    assert len(out) == 9
    assert out[["contrast", "runner_up"]].iloc[:3].values.tolist() == [["any", "any"], ["any", "≥ 0.05"],
                                                                         ["any", "< 0.05"]]
    get = lambda c, r: out[(out["contrast"] == c) & (out["runner_up"] == r)].iloc[0]  # noqa: E731
    # sizes by hand (NaN at row 5: in set, p2 ≥ .05)
    assert get("any", "any")["n"] == 39 and get("any", "any")["n_excluded"] == 1
    assert get("in", "any")["n"] == 23 and get("out", "any")["n"] == 16
    assert get("in", "≥ 0.05")["n"] == 19 and get("in", "< 0.05")["n"] == 4 and get("out", "≥ 0.05")["n"] == 0
    assert (get("out", "any")["stratum"] == "top-2 out contrast set"
            and get("any", "any")["stratum"] == "all rows")
    # each stratum is class_sensitivity_test on its rows
    in_set = rows.index < 24
    ref = class_sensitivity_test(rows["agreement"][in_set].to_numpy(), n_boot=50)
    assert get("in", "any")["p"] == ref.p and get("in", "any")["sign_p"] == ref.sign_p
    assert get("in", "any")["median"] == ref.median
    # verdicts: all rows reject (23 far below 0.5, 16 just above: W+ = 1 + … + 16 = 136 of 780), the
    # out-of-set stratum (all above) does not
    assert bool(get("any", "any")["reject"]) and not bool(get("out", "any")["reject"])
    assert bool(get("out", "any")["differs"]) and not bool(get("in", "any")["differs"])
    assert "no agreement values" in get("out", "≥ 0.05")["reason"]
    # the same with a precomputed in_contrast column, and grouped
    two = pd.concat([rows.assign(method="a"), rows.assign(method="b", agreement=1 - rows["agreement"])])
    two["in_contrast"] = np.tile(in_set, 2)
    grouped = confusable_strata(two, prob_threshold=0.05, by=["method"], n_boot=50)
    assert len(grouped) == 18 and grouped["method"].tolist() == ["a"] * 9 + ["b"] * 9
    pd.testing.assert_frame_equal(grouped.iloc[:9].drop(columns="method").reset_index(drop=True), out)
    assert not grouped.iloc[9]["reject"]  # method b: high agreement overall


def test_confusable_strata_errors():
    rows = _rows()
    with pytest.raises(ValueError, match="in_contrast"):
        confusable_strata(rows)  # neither sets nor the column
    with pytest.raises(ValueError, match="prob_threshold"):
        confusable_strata(rows, torch.tensor([[1], [2], [3], [0]]), prob_threshold=5)


# --------------------------------------------------------------------------- map resolution


def test_map_resolution_by_hand():
    r = map_resolution(7, 7, input_size=(224, 224))
    assert r["k"].tolist() == [0.05, 0.10, 0.20]
    assert r["topk_cells"].tolist() == pytest.approx([2.45, 4.9, 9.8])
    assert r["topk_cells_floor"].tolist() == [2, 4, 9]
    assert r["topk_pixels"].tolist() == [2508, 5017, 10035]  # ⌊k · 50176⌋
    assert r["topk_cells_input"].tolist() == pytest.approx([2508 * 49 / 50176, 5017 * 49 / 50176,
                                                            10035 * 49 / 50176])
    small = map_resolution(4, 4, ks=[0.05])
    assert small["topk_cells"].tolist() == pytest.approx([0.8]) and small["topk_cells_floor"].tolist() == [0]
    assert "topk_pixels" not in small.columns
    with pytest.raises(ValueError, match="fraction"):
        map_resolution(7, 7, ks=[5])


# --------------------------------------------------------------------------- NaN rule


def test_nan_rule_flip_by_hand():
    # 12 agreements below 0.5 (distinct) and 8 constant-map pairs.  Dropped: W+ = 0 of n = 12, exact
    # p = 2^-12 → reject.  As 1.0: d = +0.5 for 8 pairs, the largest |d| → ranks 13..20, W+ = 132 > 105
    # = n(n+1)/4 → no rejection: the NaN rule decides this verdict.
    scores = np.concatenate([np.linspace(0.10, 0.32, 12), [np.nan] * 8])
    out = nan_rule_flip(scores)
    assert out["n"] == 20 and out["n_constant"] == 8
    assert out["p_dropped"] == pytest.approx(2.0 ** -12) and out["reject_dropped"]
    filled = np.where(np.isnan(scores), 1.0, scores)
    assert out["p_filled"] == pytest.approx(float(sps.wilcoxon(filled - 0.5, alternative="less").pvalue))
    assert out["p_filled"] > 0.05 and not out["reject_filled"] and out["flip"] is True
    assert out["median_filled"] == pytest.approx(np.median(filled))
    # sign test: 12 vs 0 rejects; 12 below vs 8 above: P(X ≥ 12 | Bin(20, ½)) ≈ .25 → flips too
    assert out["sign_p_filled"] == pytest.approx(
        float(sps.binomtest(12, 20, 0.5, alternative="greater").pvalue))
    assert out["sign_flip"] is True
    # only 1 of the NaNs is a constant pair (the other 7 stay dropped): n = 13, W+ = 13 (its rank);
    # P(W+ ≤ 13) = #{subsets of 1..13 with sum ≤ 13} / 2^13 = 88 / 8192 → still rejects, no flip
    constant = np.isnan(scores) & (np.arange(20) < 13)
    few = nan_rule_flip(scores, constant=constant)
    assert few["n_constant"] == 1 and few["p_filled"] == pytest.approx(88 / 8192)
    assert few["reject_filled"] and not few["flip"] and not few["sign_flip"]
    with pytest.raises(ValueError, match="not NaN"):
        nan_rule_flip(scores, constant=np.ones(20, bool))


def test_confusable_strata_keeps_a_method_column():
    rows = _rows().assign(method="gradcam")
    out = confusable_strata(rows, torch.tensor([[1], [2], [3], [0]]), by=["method"], n_boot=20)
    assert (out["method"] == "gradcam").all()
    assert set(out["wilcoxon_method"]) <= {"exact", "asymptotic", "permutation", ""}
