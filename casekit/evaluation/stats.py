"""Statistics of the paper's two experiments, with the reference code's defects corrected.

* Class sensitivity (RQ1): the paper's one-sided Wilcoxon signed-rank test of ``agreement − threshold``
  (a test of the pseudo-median, assuming a distribution symmetric about it) beside the exact sign test of
  the median, with a ``conflict`` flag where they disagree; NaNs (constant maps) dropped and counted, the
  median with a seeded percentile-bootstrap CI, and Holm's correction across a table of such tests.
* Fidelity (RQ2): a paired t-test of each method's confidence drops against CASE's **on the same
  images**, paired by image id and checked, one-sided (H1: CASE's mean drop is higher, as the paper's
  text states) and two-sided (as the reference code ran it), with the paired effect size d_z;
  :func:`paired_fidelity_both_ways` runs it with pairs of constant maps kept and excluded.
* :func:`format_p` writes p-values in the style of the paper's tables.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

ALTERNATIVES = ("less", "greater", "two-sided")


def _as_1d(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numbers (a tensor, array, Series or list): {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per image), got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains Inf values")
    return arr


def to_frame(results: Iterable[Any]) -> pd.DataFrame:
    """A DataFrame with one row per result (anything with ``as_row()``)."""
    return pd.DataFrame([r.as_row() for r in results])


# --------------------------------------------------------------------------- class sensitivity


def bootstrap_median_ci(values: np.ndarray, n_boot: int = 10_000, ci: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of the median: ``n_boot`` resamples with replacement drawn from
    ``numpy.random.default_rng(seed)``; returns the ``(1 − ci)/2`` and ``(1 + ci)/2`` quantiles."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    medians = np.empty(int(n_boot))
    step = max(1, 2_000_000 // x.size)  # bound memory: step × n indices per draw
    for start in range(0, int(n_boot), step):
        m = min(step, int(n_boot) - start)
        medians[start : start + m] = np.median(x[rng.integers(0, x.size, size=(m, x.size))], axis=1)
    lo, hi = np.quantile(medians, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


@dataclass
class ClassSensitivity:
    """Result of :func:`class_sensitivity_test`; ``as_row()`` gives a DataFrame row."""

    n: int  # agreements used (NaNs removed)
    n_excluded: int  # NaN agreements (constant maps), removed
    n_zero: int  # agreements equal to the threshold (dropped by zero_method="wilcox")
    threshold: float
    alternative: str
    median: float
    ci_low: float
    ci_high: float
    statistic: float  # W+ = sum of the ranks of the positive differences (scipy's statistic)
    p: float
    method: str  # how scipy computed p: "exact", "permutation" or "asymptotic" ("" if not run)
    alpha: float
    reject: bool  # p < alpha
    reason: str  # why p is NaN ("" when the test ran)
    n_below: int = 0  # agreements below the threshold
    n_above: int = 0  # agreements above it
    sign_p: float = math.nan  # exact sign test (binomial), same alternative; NaN when p is NaN
    sign_reject: bool = False  # sign_p < alpha
    conflict: bool = False  # the two verdicts differ, or the Wilcoxon rejects on the wrong side of the median

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def sign_test(n_below: int, n_above: int, alternative: str = "less") -> float:
    """Exact sign test of "the median is below the threshold" (``alternative="less"``) from the counts of
    values below and above it (values equal to it are left out): under H0 (median = threshold)
    ``n_below ~ Binomial(n_below + n_above, 1/2)``, so the p-value is
    ``binomtest(n_below, n_below + n_above, 0.5, alternative="greater")``; ``"greater"`` mirrors it
    (``n_above`` in the upper tail), ``"two-sided"`` is the two-sided binomial test.  NaN when both are 0."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    n_below, n_above = int(n_below), int(n_above)
    if n_below < 0 or n_above < 0:
        raise ValueError(f"counts must be non-negative, got {n_below} and {n_above}")
    if n_below + n_above == 0:
        return math.nan
    side = {"less": "greater", "greater": "less", "two-sided": "two-sided"}[alternative]
    return float(sps.binomtest(n_below, n_below + n_above, 0.5, alternative=side).pvalue)


def _conflict(reject: bool, sign_reject: bool, median: float, threshold: float, alternative: str,
              ran: bool) -> bool:
    """The Wilcoxon and sign verdicts differ, or the Wilcoxon rejects although the sample median lies on
    H0's side of the threshold (≥ it for ``"less"``, ≤ it for ``"greater"``)."""
    if not ran:
        return False
    wrong_side = (alternative == "less" and median >= threshold) or (alternative == "greater"
                                                                     and median <= threshold)
    return bool(reject != sign_reject or (reject and wrong_side))


def _wilcoxon_method(d: np.ndarray) -> str:
    """The method scipy's ``method="auto"`` picks (scipy ≥ 1.15): exact for n ≤ 50 without zeros or
    tied |d|; otherwise the (complete) permutation distribution for n ≤ 13, else the normal approximation."""
    nz = np.abs(d[d != 0])
    if d.size > 50:
        return "asymptotic"
    if (nz.size == d.size) and np.unique(nz).size == nz.size:
        return "exact"
    return "permutation" if d.size <= 13 else "asymptotic"


def class_sensitivity_test(agreement: Any, threshold: float = 0.5, alternative: str = "less",
                           alpha: float = 0.05, n_boot: int = 10_000, ci: float = 0.95, seed: int = 0,
                           min_n: int = 10) -> ClassSensitivity:
    """Wilcoxon signed-rank test of ``d = agreement − threshold`` (the paper's test), and the sign test.

    NaNs are removed and counted (``n_excluded``).  **Wilcoxon** (``p``, ``reject``):
    ``scipy.stats.wilcoxon(d, zero_method="wilcox", alternative=alternative, method="auto")``; values
    equal to the threshold (d = 0) are dropped before ranking (counted in ``n_zero``).  It tests the
    location of a distribution of d *symmetric* about it — the pseudo-median (Hodges–Lehmann: the median
    of the Walsh averages (d_i + d_j)/2) — against 0; it is a test of the median only if d is symmetric,
    and agreement distributions are often bimodal (spikes at 0 and 1).  **Sign test** (``sign_p``,
    ``sign_reject``): exact, of the median itself, H1 "median agreement < threshold" for
    ``alternative="less"`` — :func:`sign_test` on ``n_below``/``n_above`` (values equal to the threshold
    left out).  ``conflict``: the verdicts differ, or the Wilcoxon rejects although the sample median is
    ≥ the threshold (≤ for ``"greater"``).  When fewer than ``min_n`` non-zero differences remain
    (including when all are zero) neither test is run: ``p`` and ``sign_p`` are NaN and ``reason`` says
    why.  ``median`` and its bootstrap CI are of the agreements themselves (:func:`bootstrap_median_ci`).
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not isinstance(min_n, (int, np.integer)) or min_n < 1:
        raise ValueError(f"min_n must be a positive integer, got {min_n!r}")
    x = _as_1d(agreement, "agreement")
    nan = np.isnan(x)
    x = x[~nan]
    d = x - threshold
    n_zero = int((d == 0).sum())
    n_nonzero = int(d.size - n_zero)
    median = float(np.median(x)) if x.size else math.nan
    lo, hi = bootstrap_median_ci(x, n_boot, ci, seed)
    stat = p = math.nan
    method = reason = ""
    if x.size == 0:
        reason = "no agreement values (all NaN)" if nan.any() else "no agreement values"
    elif n_nonzero == 0:
        reason = f"all {x.size} agreements equal the threshold {threshold:g}"
    elif n_nonzero < min_n:
        reason = f"only {n_nonzero} agreements differ from the threshold (min_n = {min_n})"
    else:
        res = sps.wilcoxon(d, zero_method="wilcox", alternative=alternative, method="auto")
        stat, p = float(res.statistic), float(res.pvalue)
        method = _wilcoxon_method(d)
    n_below, n_above = int((d < 0).sum()), int((d > 0).sum())
    ran = not math.isnan(p)
    sign_p = sign_test(n_below, n_above, alternative) if ran else math.nan
    reject = bool(p < alpha) if ran else False
    sign_reject = bool(sign_p < alpha) if ran else False
    return ClassSensitivity(
        n=int(x.size), n_excluded=int(nan.sum()), n_zero=n_zero, threshold=float(threshold),
        alternative=alternative, median=median, ci_low=lo, ci_high=hi, statistic=stat, p=p,
        method=method, alpha=float(alpha), reject=reject, reason=reason, n_below=n_below, n_above=n_above,
        sign_p=sign_p, sign_reject=sign_reject,
        conflict=_conflict(reject, sign_reject, median, float(threshold), alternative, ran),
    )


def holm(pvalues: Any) -> Any:
    """Holm–Bonferroni adjusted p-values, NaNs passed through (m = number of non-NaN p-values).

    With the p-values sorted ascending, ``p̃_(i) = min(1, max_{j ≤ i} (m − j + 1)·p_(j))`` (1-based).
    Returns the input's kind: Series/DataFrame (same index; all cells of a DataFrame form one family),
    else a NumPy array of the input's shape.
    """
    if isinstance(pvalues, pd.DataFrame):
        adj = holm(pvalues.to_numpy(dtype=np.float64))
        return pd.DataFrame(adj, index=pvalues.index, columns=pvalues.columns)
    if isinstance(pvalues, pd.Series):
        return pd.Series(holm(pvalues.to_numpy(dtype=np.float64)), index=pvalues.index, name=pvalues.name)
    if isinstance(pvalues, torch.Tensor):
        pvalues = pvalues.detach().cpu().double().numpy()
    p = np.array(pvalues, dtype=np.float64)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    if ((flat[ok] < 0) | (flat[ok] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {flat[ok][(flat[ok] < 0) | (flat[ok] > 1)][:5]}")
    vals = flat[ok]
    m = vals.size
    order = np.argsort(vals, kind="stable")
    scaled = (m - np.arange(m)) * vals[order]
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adj = np.empty(m)
    adj[order] = adj_sorted
    out = flat.copy()
    out[ok] = adj
    return out.reshape(p.shape)


# --------------------------------------------------------------------------- fidelity


@dataclass
class PairedFidelity:
    """Result of :func:`paired_fidelity_test` (differences are CASE − method)."""

    n: int
    mean_method: float
    sd_method: float
    mean_case: float
    sd_case: float
    mean_diff: float
    sd_diff: float
    t: float
    df: int
    p_one_sided: float  # H1: CASE's mean drop > the method's
    p_two_sided: float
    d_z: float  # mean_diff / sd_diff
    alpha: float
    reject: bool  # p_one_sided < alpha
    reason: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def _ids(ids: Any, name: str) -> pd.Index:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().tolist()
    idx = pd.Index(list(ids) if not isinstance(ids, (pd.Index, pd.Series, np.ndarray)) else ids)
    if idx.ndim != 1:
        raise ValueError(f"{name} must be 1-D")
    dup = idx[idx.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"{name} has duplicate image ids (each image must appear once): {dup[:10]}"
                         + (f" and {len(dup) - 10} more" if len(dup) > 10 else ""))
    return idx


def paired_fidelity_test(method_drops: Any, case_drops: Any, ids_method: Any, ids_case: Any,
                         alpha: float = 0.05) -> PairedFidelity:
    """Paired t-test of confidence drops, CASE vs one method, on the same images.

    The two samples are paired by image id: every id must occur exactly once in each, with the same
    set of ids on both sides (``ValueError`` naming the offending ids otherwise); a different order is
    aligned.  ``p_one_sided = ttest_rel(case, method, alternative="greater")`` (H1: CASE's mean drop is
    higher); ``p_two_sided`` as the reference code; ``d_z = mean(case − method) / sd(case − method)``.
    SDs use ddof = 1.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    dm = _as_1d(method_drops, "method_drops")
    dc = _as_1d(case_drops, "case_drops")
    im = _ids(ids_method, "ids_method")
    ic = _ids(ids_case, "ids_case")
    if len(dm) != len(im):
        raise ValueError(f"method_drops has {len(dm)} values but ids_method has {len(im)} ids")
    if len(dc) != len(ic):
        raise ValueError(f"case_drops has {len(dc)} values but ids_case has {len(ic)} ids")
    only_m = im.difference(ic).tolist()
    only_c = ic.difference(im).tolist()
    if only_m or only_c:
        parts = []
        if only_m:
            parts.append(f"{len(only_m)} ids only in the method's images: {only_m[:10]}")
        if only_c:
            parts.append(f"{len(only_c)} ids only in CASE's images: {only_c[:10]}")
        raise ValueError("the paired test needs the same images for both methods; " + "; ".join(parts))
    case_aligned = pd.Series(dc, index=ic).reindex(im).to_numpy()
    bad = im[np.isnan(dm) | np.isnan(case_aligned)].tolist()
    if bad:
        raise ValueError(f"confidence drops are NaN for image ids {bad[:10]}")
    n = len(dm)
    diff = case_aligned - dm

    def sd(v: np.ndarray) -> float:
        return float(np.std(v, ddof=1)) if v.size > 1 else math.nan

    t = p1 = p2 = dz = math.nan
    reason = ""
    sdd = sd(diff)
    if n < 2:
        reason = f"only {n} paired images (need at least 2)"
    elif sdd == 0:
        reason = "all paired differences are equal (t is undefined)"
    else:
        one = sps.ttest_rel(case_aligned, dm, alternative="greater")
        t, p1 = float(one.statistic), float(one.pvalue)
        p2 = float(sps.ttest_rel(case_aligned, dm).pvalue)
        dz = float(diff.mean() / sdd)
    return PairedFidelity(
        n=n, mean_method=float(dm.mean()) if n else math.nan, sd_method=sd(dm),
        mean_case=float(case_aligned.mean()) if n else math.nan, sd_case=sd(case_aligned),
        mean_diff=float(diff.mean()) if n else math.nan, sd_diff=sdd, t=t, df=max(n - 1, 0),
        p_one_sided=p1, p_two_sided=p2, d_z=dz, alpha=float(alpha),
        reject=bool(p1 < alpha) if not math.isnan(p1) else False, reason=reason,
    )


def _flags(values: Any, name: str, n: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype != np.bool_:
        raise TypeError(f"{name} must be booleans (True = a constant map), got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must be 1-D with one flag per image ({n}), got shape {arr.shape}")
    return arr


def paired_fidelity_both_ways(method_drops: Any, case_drops: Any, ids_method: Any, ids_case: Any,
                              constant_method: Any, constant_case: Any, alpha: float = 0.05) -> pd.DataFrame:
    """:func:`paired_fidelity_test` with the pairs of constant maps kept and excluded → a 2-row DataFrame.

    ``constant_method`` / ``constant_case``: bool per image, aligned with each side's drops (True = that
    map is constant: nothing was blanked, its drop is 0 by construction).  An image is *excluded* when
    either of its two maps is constant.  Row ``constant_pairs="kept"``: all pairs (the reference code's
    behaviour); row ``"excluded"``: those images removed.  Columns: ``constant_pairs, n_constant_method,
    n_constant_case, n_pairs_excluded`` then the :class:`PairedFidelity` fields (``n`` = pairs tested).
    """
    # validates the pairing
    kept = paired_fidelity_test(method_drops, case_drops, ids_method, ids_case, alpha)
    dm, dc = _as_1d(method_drops, "method_drops"), _as_1d(case_drops, "case_drops")
    im, ic = _ids(ids_method, "ids_method"), _ids(ids_case, "ids_case")
    cm = _flags(constant_method, "constant_method", len(dm))
    cc = _flags(constant_case, "constant_case", len(dc))
    cc_aligned = pd.Series(cc, index=ic).reindex(im).to_numpy(dtype=bool)
    drop = cm | cc_aligned
    keep_c = ~pd.Series(drop, index=im).reindex(ic).to_numpy(dtype=bool)
    excluded = paired_fidelity_test(dm[~drop], dc[keep_c], im[~drop], ic[keep_c], alpha)
    counts = {"n_constant_method": int(cm.sum()), "n_constant_case": int(cc.sum()),
              "n_pairs_excluded": int(drop.sum())}
    rows = [{"constant_pairs": name, **counts, **res.as_row()}
            for name, res in (("kept", kept), ("excluded", excluded))]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- formatting


def format_p(p: float | None, digits: int = 5, floor: float = 1e-4, missing: str = "–") -> str:
    """A p-value in the style of the paper's tables.

    Rule: missing/NaN → ``missing`` ("–", as for CASE's own row in Table III); ``p < floor`` →
    ``"< .0001"``; a value that rounds to 1 at ``digits`` decimals → ``"1."``; otherwise ``digits``
    decimals without the leading zero (``.00568``, ``.35440``).  The paper itself mixes 4 and 5 decimals
    and a leading zero or not; casekit uses this one rule everywhere.
    """
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return missing
    p = float(p)
    if math.isnan(p):
        return missing
    if not -1e-12 <= p <= 1 + 1e-12:
        raise ValueError(f"a p-value must lie in [0, 1], got {p}")
    if p < floor:
        return "< " + np.format_float_positional(floor, trim="-").lstrip("0")
    text = f"{p:.{digits}f}"
    if float(text) >= 1.0:
        return "1."
    return text.lstrip("0")


# --------------------------------------------------------------------------- three-way verdicts

#: The verdicts of a test as the book prints them: H0 rejected (both tests agree), the two tests disagree,
#: H0 holds (the interval of the tested quantity lies on H0's side), neither; or no test at all.
VERDICTS: tuple[str, ...] = ("rejects", "conflict", "holds", "undecided", "no test")
#: A verdict reached by fewer bootstrap resamples than this share is fragile.
FRAGILE_BELOW = 0.8


def three_way(reject: bool, other_reject: bool | None, ci_low: float, ci_high: float, threshold: float,
              alternative: str = "less", margin: float = 0.0, ran: bool = True) -> str:
    """One test's verdict in :data:`VERDICTS`.

    ``reject`` is the test's decision (``p < α``) and ``other_reject`` a second test's on the same data (the
    sign test beside the Wilcoxon; None when there is none): **rejects** when the test rejects and the
    other agrees, **conflict** when only one of them rejects; otherwise **holds** when the interval
    ``[ci_low, ci_high]`` of the tested quantity lies entirely on H0's side of ``threshold`` moved by
    ``margin`` towards H1 (``alternative="less"``, H1 "below": ``ci_low ≥ threshold − margin``;
    ``"greater"``: ``ci_high ≤ threshold + margin``; ``"two-sided"``: the interval within ``threshold ±
    margin``), else **undecided** — a sample too small to see an effect is not evidence that there is none.
    ``ran=False``: **no test**."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if not ran:
        return "no test"
    both = reject if other_reject is None else reject and other_reject
    one = reject if other_reject is None else reject or other_reject
    if both:
        return "rejects"
    if one:
        return "conflict"
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "undecided"
    if alternative == "less":
        holds = ci_low >= threshold - margin
    elif alternative == "greater":
        holds = ci_high <= threshold + margin
    else:
        holds = threshold - margin <= ci_low and ci_high <= threshold + margin
    return "holds" if holds else "undecided"


def sensitivity_verdict(r: ClassSensitivity) -> str:
    """Table I's three-way verdict of a :func:`class_sensitivity_test` result (:func:`three_way`: the
    Wilcoxon with the sign test, the median's bootstrap CI against the threshold)."""
    return three_way(r.reject, r.sign_reject, r.ci_low, r.ci_high, r.threshold, r.alternative,
                     ran=not math.isnan(r.p))


def _wilcoxon_rows(d: np.ndarray, alternative: str, min_n: int) -> np.ndarray:
    """Wilcoxon p-values of each row of ``d [R, n]`` (zeros dropped); NaN where fewer than ``min_n``
    non-zero differences remain."""
    p = np.full(d.shape[0], math.nan)
    for i, row in enumerate(d):
        nz = row[row != 0]
        if nz.size >= min_n:
            p[i] = float(sps.wilcoxon(row, zero_method="wilcox", alternative=alternative,
                                      method="auto").pvalue)
    return p


def _boot_ci_rows(x: np.ndarray, n_boot: int, ci: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Percentile-bootstrap CI of the median of every row of ``x [R, n]`` (``n_boot`` resamples each)."""
    R, n = x.shape
    lo, hi = np.empty(R), np.empty(R)
    for i in range(R):
        med = np.median(x[i][rng.integers(0, n, size=(n_boot, n))], axis=1)
        lo[i], hi[i] = np.quantile(med, [(1 - ci) / 2, (1 + ci) / 2])
    return lo, hi


def sensitivity_stability(agreement: Any, threshold: float = 0.5, alternative: str = "less",
                          alpha: float = 0.05, n_resamples: int = 200, n_boot: int = 200, ci: float = 0.95,
                          seed: int = 0, min_n: int = 10, verdict: str | None = None,
                          margin: float = 0.0) -> float:
    """The share of ``n_resamples`` bootstrap resamples of the images (with replacement, from
    ``numpy.random.default_rng(seed)``) whose verdict — the Wilcoxon and sign tests of the median against
    ``threshold`` and the median's CI from ``n_boot`` inner resamples, :func:`three_way` with ``margin`` —
    equals ``verdict`` (default: the full sample's, as :func:`class_sensitivity_test` and
    :func:`sensitivity_verdict` give it).  Below :data:`FRAGILE_BELOW` the verdict is fragile.  NaN without
    values.  A sample too small to decide can be stably undecided: the undecided verdict, not this share,
    says so.  (Also the stability of a paired test on differences: ``threshold=0``.)"""
    x = _as_1d(agreement, "agreement")
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan
    if verdict is None:
        r = class_sensitivity_test(x, threshold, alternative, alpha, seed=seed, min_n=min_n)
        verdict = three_way(r.reject, r.sign_reject, r.ci_low, r.ci_high, threshold, alternative, margin,
                            ran=not math.isnan(r.p))
    rng = np.random.default_rng(seed)
    X = x[rng.integers(0, x.size, size=(int(n_resamples), x.size))]
    d = X - threshold
    p = _wilcoxon_rows(d, alternative, min_n)
    below, above = (d < 0).sum(1), (d > 0).sum(1)
    side = {"less": (below, above), "greater": (above, below)}.get(alternative)
    if side is None:
        sign_p = np.array([sign_test(b, a, alternative) for b, a in zip(below, above)])
    else:
        k, other = side
        sign_p = sps.binom.sf(k - 1, k + other, 0.5)
    lo, hi = _boot_ci_rows(X, int(n_boot), ci, rng)
    same = 0
    for i in range(X.shape[0]):
        ran = not math.isnan(p[i])
        v = three_way(ran and p[i] < alpha, ran and sign_p[i] < alpha, lo[i], hi[i], threshold,
                      alternative, margin, ran=ran)
        same += v == verdict
    return same / X.shape[0]


def mean_ci(values: Any, ci: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of a mean (``ddof=1``); NaN for fewer than 2 values."""
    x = _as_1d(values, "values")
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    se = float(np.std(x, ddof=1)) / math.sqrt(x.size)
    if se == 0:
        return float(x.mean()), float(x.mean())
    half = float(sps.t.ppf((1 + ci) / 2, x.size - 1)) * se
    return float(x.mean() - half), float(x.mean() + half)


@dataclass
class Equivalence:
    """Result of :func:`equivalence_test` (paired differences ``d``, margin ``δ``)."""

    n: int
    mean_diff: float
    ci_low: float  # the (1 − 2α) CI of the mean difference: equivalence ⟺ it lies within ±δ
    ci_high: float
    margin: float
    p_lower: float  # H0 mean ≤ −δ vs H1 mean > −δ
    p_upper: float  # H0 mean ≥ δ vs H1 mean < δ
    p_tost: float  # max of the two
    p_difference: float  # two-sided paired t-test of mean = 0
    alpha: float
    verdict: str  # "equivalent" | "differs" | "not shown" | "no test"
    reason: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def equivalence_test(diff: Any, margin: float = 0.05, alpha: float = 0.05) -> Equivalence:
    """Paired two one-sided tests (TOST) of ``|mean(d)| < margin`` on paired differences ``d``.

    ``p_lower = ttest_1samp(d, −δ, alternative="greater")``, ``p_upper = ttest_1samp(d, δ,
    alternative="less")``, ``p_tost = max(p_lower, p_upper)``: equivalence is shown when ``p_tost < α``
    (the ``1 − 2α`` CI of the mean lies within ±δ).  Verdict: **equivalent** when shown; otherwise
    **differs** when the two-sided paired t-test rejects ``mean = 0`` at α; otherwise **not shown** (the
    interval is too wide to tell).  Fewer than 2 differences, or all equal: **no test**."""
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    d = _as_1d(diff, "diff")
    d = d[~np.isnan(d)]
    n = int(d.size)
    nan = math.nan
    if n < 2 or float(np.std(d, ddof=1)) <= 1e-12 * max(1.0, float(np.abs(d).max())):  # equal up to rounding
        reason = f"only {n} paired differences" if n < 2 else "all paired differences are equal"
        return Equivalence(n, float(d.mean()) if n else nan, nan, nan, float(margin), nan, nan, nan, nan,
                           float(alpha), "no test", reason)
    lo_p = float(sps.ttest_1samp(d, -margin, alternative="greater").pvalue)
    hi_p = float(sps.ttest_1samp(d, margin, alternative="less").pvalue)
    p_diff = float(sps.ttest_1samp(d, 0.0).pvalue)
    lo, hi = mean_ci(d, 1 - 2 * alpha)
    tost = max(lo_p, hi_p)
    verdict = "equivalent" if tost < alpha else "differs" if p_diff < alpha else "not shown"
    return Equivalence(n, float(d.mean()), lo, hi, float(margin), lo_p, hi_p, tost, p_diff, float(alpha),
                       verdict, "")
