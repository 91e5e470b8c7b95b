"""casekit.evaluation.stats against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from casekit.evaluation.stats import (
    bootstrap_median_ci,
    class_sensitivity_test,
    format_p,
    holm,
    paired_fidelity_both_ways,
    paired_fidelity_test,
    sign_test,
    to_frame,
)

# --------------------------------------------------------------------------- Wilcoxon


def test_wilcoxon_hand_example():
    # d = agreement − 0.5 = [-0.1, -0.2, -0.3, +0.4, -0.5]: ranks 1..5, W+ = 4.
    # Exact null: P(W+ ≤ 4) = #{subsets of {1..5} with sum ≤ 4} / 2^5 = 7 / 32.
    res = class_sensitivity_test([0.4, 0.3, 0.2, 0.9, 0.0], min_n=5)
    assert res.statistic == 4.0
    assert res.p == pytest.approx(7 / 32)
    assert res.method == "exact"
    assert res.n == 5 and res.n_excluded == 0 and res.median == pytest.approx(0.3)
    assert res.reject is False and res.reason == ""


def test_wilcoxon_matches_scipy_with_nans_zeros_and_ties():
    rng = np.random.default_rng(0)
    for n, with_zero in ((30, False), (40, True), (300, True)):
        x = np.round(rng.beta(2, 3, size=n), 2)  # rounding → ties
        if with_zero:
            x[:3] = 0.5  # d = 0, dropped by zero_method="wilcox"
        x_nan = np.concatenate([x, [np.nan] * 4])
        res = class_sensitivity_test(torch.tensor(x_nan), n_boot=200)
        ref = sps.wilcoxon(x - 0.5, alternative="less")
        assert res.p == pytest.approx(float(ref.pvalue), rel=1e-12)
        assert res.statistic == float(ref.statistic)
        assert (res.n == n and res.n_excluded == 4
                and res.n_zero == int((x == 0.5).sum()) >= (3 if with_zero else 0))
        assert res.reject == (ref.pvalue < 0.05)
    # another threshold and alternative
    x = rng.uniform(0.5, 1.0, size=25)
    res = class_sensitivity_test(x, threshold=0.7, alternative="greater", n_boot=100)
    assert res.p == pytest.approx(float(sps.wilcoxon(x - 0.7, alternative="greater").pvalue), rel=1e-12)


def test_low_agreement_rejects():
    x = np.linspace(0.05, 0.45, 60)
    res = class_sensitivity_test(x, n_boot=500)
    assert res.p < 1e-6 and res.reject is True and res.method == "asymptotic"


def test_wilcoxon_edge_cases_give_reasons_not_bogus_p():
    res = class_sensitivity_test([0.5] * 20)
    assert math.isnan(res.p) and "equal the threshold" in res.reason and res.reject is False
    assert res.median == 0.5
    res = class_sensitivity_test([0.1, 0.2, np.nan])
    assert math.isnan(res.p) and "only 2" in res.reason and res.n_excluded == 1
    res = class_sensitivity_test([np.nan, np.nan])
    assert math.isnan(res.p) and "all NaN" in res.reason and res.n == 0 and math.isnan(res.median)
    with pytest.raises(ValueError, match="alternative"):
        class_sensitivity_test([0.1] * 20, alternative="smaller")
    with pytest.raises(ValueError, match="1-D"):
        class_sensitivity_test(np.zeros((3, 3)))


def test_bootstrap_ci_is_seeded_and_close_to_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(0.4, 0.1, size=200)
    a = bootstrap_median_ci(x, 2000, seed=7)
    assert a == bootstrap_median_ci(x, 2000, seed=7)
    assert a != bootstrap_median_ci(x, 2000, seed=8)
    assert a[0] < np.median(x) < a[1]
    ref = sps.bootstrap((x,), np.median, n_resamples=2000, method="percentile",
                        random_state=1).confidence_interval
    assert a[0] == pytest.approx(ref.low, abs=0.01) and a[1] == pytest.approx(ref.high, abs=0.01)
    res = class_sensitivity_test(x, n_boot=2000, seed=7)
    assert (res.ci_low, res.ci_high) == a


def test_results_make_a_frame():
    rows = to_frame([class_sensitivity_test(np.linspace(0, 1, 30), n_boot=50),
                     class_sensitivity_test([0.5] * 12, n_boot=50)])
    assert list(rows.columns[:3]) == ["n", "n_excluded", "n_zero"]
    assert len(rows) == 2 and rows["reason"].iloc[1] != ""


# -------------------------------------------------------------------------- sign test and conflicts (issue 9)


def test_sign_test_hand_example():
    # [0.4, 0.3, 0.2, 0.9, 0.0] vs 0.5: 4 below, 1 above; P(X ≥ 4 | Bin(5, 1/2)) = (5 + 1) / 32
    res = class_sensitivity_test([0.4, 0.3, 0.2, 0.9, 0.0], min_n=5)
    assert (res.n_below, res.n_above) == (4, 1)
    assert res.sign_p == pytest.approx(6 / 32) and res.sign_reject is False and res.conflict is False
    assert sign_test(4, 1, "greater") == pytest.approx(31 / 32)  # P(X_above ≥ 1) = 1 − 1/32
    assert sign_test(4, 1, "two-sided") == pytest.approx(12 / 32)
    assert math.isnan(sign_test(0, 0))


def test_sign_p_matches_scipy_binomtest_in_both_directions():
    rng = np.random.default_rng(1)
    for n in (15, 60, 301):
        x = np.round(rng.beta(2, 2.5, size=n), 2)
        x[:4] = 0.5  # equal to the threshold: left out of the sign test
        below, above = int((x < 0.5).sum()), int((x > 0.5).sum())
        for alt, tail in (("less", "greater"), ("greater", "less"), ("two-sided", "two-sided")):
            res = class_sensitivity_test(np.concatenate([x, [np.nan]]), alternative=alt, n_boot=50)
            ref = sps.binomtest(below, below + above, 0.5, alternative=tail).pvalue
            assert res.sign_p == pytest.approx(float(ref), rel=1e-12)
            assert res.sign_reject == (ref < 0.05)
            n_equal = n - below - above
            assert (res.n_below, res.n_above, res.n_zero) == (below, above, n_equal) and n_equal >= 4
    low = class_sensitivity_test(np.linspace(0.05, 0.45, 30), n_boot=50)  # all below: p = 2^-30
    assert low.sign_p == pytest.approx(0.5 ** 30) and low.sign_reject and low.reject and not low.conflict
    high = class_sensitivity_test(np.linspace(0.05, 0.45, 30), alternative="greater", n_boot=50)
    assert high.sign_p == pytest.approx(1.0) and not high.sign_reject


def test_bimodal_sample_is_a_conflict():
    # spikes at 0 (38 images) and 1 (2 images), 60 values just above 0.5: median 0.56 > 0.5, yet the
    # Wilcoxon rejects "below 0.5" (the 60 small positive differences have the smallest ranks); the sign
    # test (38 below vs 62 above) does not.
    x = np.concatenate([np.zeros(38), np.ones(2), np.linspace(0.52, 0.60, 60)])
    res = class_sensitivity_test(x, n_boot=200)
    assert res.median > 0.5
    assert res.p == pytest.approx(float(sps.wilcoxon(x - 0.5, alternative="less").pvalue), rel=1e-12)
    assert res.reject is True and res.p < 0.05
    assert res.sign_p == pytest.approx(float(sps.binomtest(38, 100, 0.5, alternative="greater").pvalue))
    assert res.sign_reject is False and res.conflict is True
    row = to_frame([res]).iloc[0]
    assert bool(row["conflict"]) and row["sign_p"] == res.sign_p and not bool(row["sign_reject"])


def test_conflict_when_both_reject_but_the_median_sits_on_the_threshold():
    # 30 below, 40 at the threshold, 5 above: sorted median = 0.5; both tests (ties dropped) reject
    x = np.concatenate([np.linspace(0.1, 0.4, 30), np.full(40, 0.5), np.linspace(0.6, 0.7, 5)])
    res = class_sensitivity_test(x, n_boot=100)
    assert res.median == 0.5 and res.reject and res.sign_reject and res.conflict


def test_no_test_no_sign_test_no_conflict():
    res = class_sensitivity_test([0.1, 0.2, np.nan])
    assert math.isnan(res.sign_p) and res.sign_reject is False and res.conflict is False
    assert (res.n_below, res.n_above) == (2, 0)


def test_frame_carries_the_new_columns():
    rows = to_frame([class_sensitivity_test(np.linspace(0, 1, 30), n_boot=50)])
    for col in ("n_below", "n_above", "sign_p", "sign_reject", "conflict"):
        assert col in rows.columns
    assert list(rows.columns[:3]) == ["n", "n_excluded", "n_zero"]


# --------------------------------------------------------------------------- Holm


def test_holm_hand_example():
    p = [0.01, 0.04, 0.03, np.nan, 0.005]
    # m = 4; sorted 0.005·4 = .02, 0.01·3 = .03, 0.03·2 = .06, 0.04·1 = .04 → running max .06
    adj = holm(p)
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, np.nan, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    df = pd.DataFrame({"a": [0.01, 0.02], "b": [np.nan, 0.04]}, index=["x", "y"])
    out = holm(df)  # one family of 3
    assert out.shape == (2, 2) and list(out.index) == ["x", "y"]
    np.testing.assert_allclose(out.to_numpy(), [[0.03, np.nan], [0.04, 0.04]])
    s = holm(pd.Series([0.2, 0.01], index=["m1", "m2"], name="p"))
    assert s.name == "p" and s.tolist() == pytest.approx([0.2, 0.02])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


# --------------------------------------------------------------------------- paired t-test


def test_paired_hand_example():
    # diff = case − method = [.2, .3, .1]: mean .2, sd .1 → d_z = 2, t = .2 / (.1/√3) = 2√3, df = 2.
    res = paired_fidelity_test([0.1, 0.2, 0.3], [0.3, 0.5, 0.4], ["a", "b", "c"], ["a", "b", "c"])
    t = 2 * math.sqrt(3)
    assert res.t == pytest.approx(t) and res.df == 2
    assert res.d_z == pytest.approx(2.0)
    assert res.mean_diff == pytest.approx(0.2) and res.sd_diff == pytest.approx(0.1)
    # Student t with 2 df: P(T > t) = (1 − t / √(2 + t²)) / 2
    p1 = 0.5 * (1 - t / math.sqrt(2 + t * t))
    assert res.p_one_sided == pytest.approx(p1) and res.p_two_sided == pytest.approx(2 * p1)
    assert res.reject is True
    assert res.sd_method == pytest.approx(0.1) and res.mean_case == pytest.approx(0.4)


def test_paired_matches_scipy_and_aligns_by_id():
    rng = np.random.default_rng(0)
    ids = np.arange(50)
    method = rng.uniform(0, 0.5, 50)
    case = method + rng.normal(0.02, 0.1, 50)
    res = paired_fidelity_test(method, case, ids, ids)
    assert res.p_one_sided == pytest.approx(sps.ttest_rel(case, method, alternative="greater").pvalue,
                                            rel=1e-12)
    assert res.p_two_sided == pytest.approx(sps.ttest_rel(case, method).pvalue, rel=1e-12)
    perm = rng.permutation(50)
    shuffled = paired_fidelity_test(method, case[perm], ids, ids[perm])
    assert shuffled.p_one_sided == pytest.approx(res.p_one_sided, rel=1e-12)
    assert shuffled.t == pytest.approx(res.t, rel=1e-12)
    # the unpaired misuse (pairing by position after a shuffle) would give a different answer
    wrong = sps.ttest_rel(case[perm], method, alternative="greater").pvalue
    assert wrong != pytest.approx(res.p_one_sided, rel=1e-3)


def test_paired_checks_the_pairing():
    with pytest.raises(ValueError, match=r"only in the method's images: \[3\]"):
        paired_fidelity_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [1, 2, 3], [1, 2, 4])
    with pytest.raises(ValueError, match=r"duplicate image ids.*\[2\]"):
        paired_fidelity_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [1, 2, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="ids_case has 2"):
        paired_fidelity_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"NaN for image ids \[2\]"):
        paired_fidelity_test([0.1, np.nan, 0.3], [0.1, 0.2, 0.3], [1, 2, 3], [1, 2, 3])
    res = paired_fidelity_test([0.1, 0.2], [0.2, 0.3], [1, 2], [2, 1])  # diffs .1 − ... aligned: [.2, .0]
    assert res.mean_diff == pytest.approx(0.1)
    same = paired_fidelity_test([0.1, 0.2], [0.1, 0.2], [1, 2], [1, 2])
    assert math.isnan(same.p_one_sided) and "equal" in same.reason


def test_fidelity_with_constant_pairs_kept_and_excluded():
    # images a, b, c: the hand example above (t = 2√3); d: the method's map is constant (drop 0);
    # e: CASE's map is constant.  Case side given in another order.
    m = [0.1, 0.2, 0.3, 0.0, 0.25]
    c = {"a": 0.3, "b": 0.5, "c": 0.4, "d": 0.35, "e": 0.0}
    ids_c = ["e", "c", "a", "d", "b"]
    out = paired_fidelity_both_ways(m, [c[i] for i in ids_c], list("abcde"), ids_c,
                                    constant_method=np.array([False, False, False, True, False]),
                                    constant_case=np.array([True, False, False, False, False]))
    assert out["constant_pairs"].tolist() == ["kept", "excluded"]
    assert out["n_constant_method"].tolist() == [1, 1] and out["n_constant_case"].tolist() == [1, 1]
    assert out["n_pairs_excluded"].tolist() == [2, 2]
    kept, excl = out.iloc[0], out.iloc[1]
    assert kept["n"] == 5 and excl["n"] == 3
    assert excl["t"] == pytest.approx(2 * math.sqrt(3)) and excl["d_z"] == pytest.approx(2.0)
    cv = [c[i] for i in "abcde"]
    assert kept["p_one_sided"] == pytest.approx(sps.ttest_rel(cv, m, alternative="greater").pvalue, rel=1e-12)
    assert kept["mean_diff"] == pytest.approx(np.mean(np.subtract(cv, m)))
    with pytest.raises(TypeError, match="booleans"):
        paired_fidelity_both_ways(m, cv, list("abcde"), list("abcde"), [0, 0, 0, 1, 0], np.zeros(5, bool))
    with pytest.raises(ValueError, match="one flag per image"):
        paired_fidelity_both_ways(m, cv, list("abcde"), list("abcde"), np.zeros(4, bool), np.zeros(5, bool))


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    "p, text",
    [(0.00568, ".00568"), (3.2e-7, "< .0001"), (0.0, "< .0001"), (0.0001, ".00010"), (0.3544, ".35440"),
     (0.999996, "1."), (1.0, "1."), (0.999994, ".99999"), (float("nan"), "–"), (None, "–"),
     (np.float64(0.0179), ".01790")],
)
def test_format_p_paper_style(p, text):
    assert format_p(p) == text


def test_format_p_options_and_errors():
    assert format_p(0.8734, digits=4) == ".8734"
    assert format_p(0.04, floor=0.05) == "< .05"
    with pytest.raises(ValueError):
        format_p(-0.1)
    with pytest.raises(ValueError):
        format_p(1.2)


# ----------------------------------------------------------------------------- three-way verdicts


def test_three_way_verdicts_by_hand():
    from casekit.evaluation.stats import three_way

    # both tests reject → rejects; only one → conflict (whatever the interval)
    assert three_way(True, True, 0.2, 0.4, 0.5) == "rejects"
    assert three_way(True, False, 0.2, 0.4, 0.5) == "conflict"
    assert three_way(False, True, 0.6, 0.7, 0.5) == "conflict"
    # neither: the interval decides; on H0's side (≥ 0.5 for H1 "below") → holds; straddling → undecided
    assert three_way(False, False, 0.5, 0.8, 0.5) == "holds"
    assert three_way(False, False, 0.324, 0.588, 0.5) == "undecided"  # ResNet-20 LayerCAM at 30 images
    assert three_way(False, False, 0.46, 0.6, 0.5, margin=0.05) == "holds"
    assert three_way(False, None, 0.1, 0.4, 0.5, alternative="greater") == "holds"
    assert three_way(False, None, 0.46, 0.54, 0.5, alternative="two-sided", margin=0.05) == "holds"
    assert three_way(False, None, 0.44, 0.56, 0.5, alternative="two-sided", margin=0.05) == "undecided"
    assert three_way(True, None, 0.0, 1.0, 0.5) == "rejects"
    assert three_way(False, False, float("nan"), float("nan"), 0.5) == "undecided"
    assert three_way(False, False, 0.6, 0.7, 0.5, ran=False) == "no test"


def test_sensitivity_verdict_and_stability():
    from casekit.evaluation.stats import class_sensitivity_test, sensitivity_stability, sensitivity_verdict

    rng = np.random.default_rng(0)
    low = rng.uniform(0.0, 0.3, 200)  # every agreement far below 50 %
    r = class_sensitivity_test(low, n_boot=2000)
    assert sensitivity_verdict(r) == "rejects"
    assert sensitivity_stability(low, n_resamples=50, n_boot=100) == 1.0
    high = rng.uniform(0.7, 1.0, 200)
    assert sensitivity_verdict(class_sensitivity_test(high, n_boot=2000)) == "holds"
    assert sensitivity_stability(high, n_resamples=50, n_boot=100) == 1.0
    mixed = rng.uniform(0.3, 0.7, 12)  # small and centred on the threshold
    v = sensitivity_verdict(class_sensitivity_test(mixed, n_boot=2000))
    assert v == "undecided"
    # 30 resamples, not 200: with n = 12 and ties scipy's Wilcoxon ("auto") runs a permutation test per
    # resample (~0.35 s each); the share is a count over resamples, so 30 show it strictly between 0 and 1
    share = sensitivity_stability(mixed, n_resamples=30, n_boot=200, seed=3)
    assert 0 < share < 1
    # the share counts resamples by hand: a verdict nobody reaches has share 0
    assert sensitivity_stability(low, n_resamples=20, n_boot=50, verdict="holds") == 0.0
    assert np.isnan(sensitivity_stability([np.nan, np.nan]))


def test_equivalence_test_against_scipy():
    from casekit.evaluation.stats import equivalence_test

    rng = np.random.default_rng(1)
    d = rng.normal(0.01, 0.05, 400)  # small mean, tight: equivalent within ±0.05
    r = equivalence_test(d, margin=0.05)
    lo = sps.ttest_1samp(d, -0.05, alternative="greater").pvalue
    hi = sps.ttest_1samp(d, 0.05, alternative="less").pvalue
    assert r.p_lower == pytest.approx(lo) and r.p_upper == pytest.approx(hi)
    assert r.p_tost == pytest.approx(max(lo, hi)) and r.verdict == "equivalent"
    se = d.std(ddof=1) / np.sqrt(d.size)
    half = sps.t.ppf(0.95, d.size - 1) * se
    assert (r.ci_low, r.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert -0.05 < r.ci_low and r.ci_high < 0.05
    wide = rng.normal(0.0, 0.5, 20)  # too noisy to show anything
    assert equivalence_test(wide).verdict == "not shown"
    shifted = rng.normal(0.2, 0.05, 50)  # clearly different
    assert equivalence_test(shifted).verdict == "differs"
    assert equivalence_test([0.1]).verdict == "no test"
    assert equivalence_test([0.1, 0.1, 0.1]).verdict == "no test"
    with pytest.raises(ValueError, match="margin must be > 0"):
        equivalence_test(d, margin=0)
