"""What the class-sensitivity diagnostic measures (beyond the paper): a chance reference, confusable
runner-ups, map resolution, and where the NaN rule decides.

* **Chance reference** — :func:`chance_pairs`, :func:`chance_agreement`, :func:`chance_test`: the top-k
  agreement of the top-1 maps of two *unrelated* images (same model, method, layer), and a paired test
  of each image's top-1/top-2 agreement against its chance agreement.
* **Confusable runner-ups** — :func:`in_contrast_set`, :func:`confusable_strata`: the RQ1 test within
  strata of "is the top-2 class in the top-1 class's contrast set" × "is the runner-up's probability
  ≥ a threshold".
* **Map resolution** — :func:`map_resolution`: how many attribution-map cells the top-k set covers.
* **NaN rule** — :func:`nan_rule_flip`: does the verdict change if constant-map pairs count as full
  agreement (the reference code) instead of being dropped (casekit)?

Inputs are tensors/arrays/frames of one (model, method, layer) unless a ``by`` argument groups them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

from .metrics import Ties, topk_agreement
from .stats import ALTERNATIVES, _as_1d, bootstrap_median_ci, class_sensitivity_test, sign_test, three_way

DIAGNOSTIC_KS: tuple[float, ...] = (0.05, 0.10, 0.20)


# --------------------------------------------------------------------------- chance reference


def chance_pairs(n: int, seed: int = 0, labels: Any = None) -> np.ndarray:
    """A seeded derangement of ``n`` images → ``partner [n]`` (int64) with ``partner[i] ≠ i``.

    The images are put in a random order ``o`` (``numpy.random.default_rng(seed).permutation``) and
    ``partner[o[j]] = o[(j + s) mod n]``: one shift ``s`` of a random cycle, so every image is the partner
    of exactly one other.  Without ``labels``, ``s = 1`` (no pair repeats in reverse for n ≥ 3).  With
    ``labels`` (e.g. the predicted top-1 classes) the images are grouped by class in that random order
    (classes in random order) and ``s = m``, the largest class size: then ``labels[partner[i]] ≠
    labels[i]`` for every i, which needs ``2m ≤ n`` (else ``ValueError``).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer ≥ 2 (an image cannot be paired with itself), got {n!r}")
    n = int(n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    shift = 1
    if labels is not None:
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if lab.shape != (n,):
            raise ValueError(f"labels must have one entry per image ({n}), got shape {lab.shape}")
        classes, inverse, sizes = np.unique(lab, return_inverse=True, return_counts=True)
        m = int(sizes.max())
        if 2 * m > n:
            raise ValueError(f"class {classes[sizes.argmax()]!r} holds {m} of {n} images: no pairing of "
                             "every image with one of another class exists (needs every class ≤ n/2)")
        class_rank = rng.permutation(classes.size)
        order = order[np.argsort(class_rank[inverse[order]], kind="stable")]
        shift = m
    partner = np.empty(n, dtype=np.int64)
    partner[order] = order[(np.arange(n) + shift) % n]
    return partner


class ChanceAgreement(NamedTuple):
    # float32 [N]: top-k agreement of map i with map partner[i]; NaN if either is constant
    agreement: torch.Tensor
    partner: np.ndarray  # int64 [N]: the unrelated image each map is compared with


def chance_agreement(maps: torch.Tensor, k: float = 0.05, seed: int = 0, ties: Ties = "random",
                     labels: Any = None, tie_seed: int | None = None) -> ChanceAgreement:
    """Chance reference: ``chance[i] = topk_agreement(maps[i], maps[partner[i]], k, ties)``.

    ``maps [N, ..., H, W]``: the top-1 maps of N images from one model, method and layer; ``partner``
    from :func:`chance_pairs` (``seed``, ``labels``).  ``tie_seed`` (default ``seed``) seeds the random
    tie order as in :func:`casekit.evaluation.metrics.topk_agreement` (pass the run's seed to match its
    top-1/top-2 agreements).
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() < 3:
        raise ValueError("maps must be a tensor [N, ..., H, W] with one map per image along dim 0")
    partner = chance_pairs(maps.shape[0], seed, labels)
    idx = torch.as_tensor(partner, device=maps.device)
    agree = topk_agreement(maps, maps[idx], k, ties, seed if tie_seed is None else tie_seed)
    return ChanceAgreement(agree, partner)


@dataclass
class ChanceTest:
    """Result of :func:`chance_test` (differences ``d = agreement − chance``, per image)."""

    n: int  # complete pairs used
    n_excluded: int  # pairs with a NaN on either side, removed
    median_agreement: float
    median_chance: float
    median_diff: float
    n_below: int  # d < 0
    n_above: int  # d > 0
    statistic: float  # Wilcoxon W+
    p: float  # Wilcoxon signed-rank of d (zero_method="wilcox")
    sign_p: float  # exact sign test of median(d)
    p_mannwhitney: float  # two-sample Mann–Whitney U of the two columns (ignores the pairing; sensitivity)
    alternative: str
    alpha: float
    reject: bool  # p < alpha
    sign_reject: bool
    reason: str
    ci_low: float = math.nan  # bootstrap CI of median(d)
    ci_high: float = math.nan
    margin: float = 0.0  # "holds": the CI of median(d) no lower than −margin (alternative "less")
    verdict: str = ""  # casekit.evaluation.stats.three_way

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


#: How far below the chance reference the median paired difference may lie for "no lower than chance" to
#: hold (5 percentage points of agreement).
CHANCE_MARGIN = 0.05


def chance_test(agreement: Any, chance: Any, alternative: str = "less", alpha: float = 0.05,
                min_n: int = 10, margin: float = CHANCE_MARGIN, n_boot: int = 2_000,
                seed: int = 0) -> ChanceTest:
    """Is the top-1/top-2 agreement lower than the chance agreement?  Paired by image.

    ``agreement[i]`` and ``chance[i]`` belong to the same image i (same top-1 map; the caller aligns
    them).  Paired, because both values share image i's top-1 map, so properties of that map (blob size,
    positive area) move both; the difference ``d_i = agreement_i − chance_i`` removes them.  Tests:
    ``p`` = ``wilcoxon(d, alternative)`` (pseudo-median of d), ``sign_p`` = :func:`sign_test` (median of
    d; H1 for ``"less"``: median(d) < 0); ``p_mannwhitney`` = ``mannwhitneyu(agreement, chance,
    alternative)`` as a sensitivity value.  Caveat: image i is also the partner of one other image, so
    the d_i are not fully independent.  Fewer than ``min_n`` non-zero d → no test (NaN, ``reason``).
    ``verdict``: :func:`casekit.evaluation.stats.three_way` of the two tests and the bootstrap CI of
    median(d) (``n_boot``, ``seed``) with ``margin``: "rejects" (below chance), "holds" (not lower than
    chance by more than ``margin``), "conflict" or "undecided".
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    a, c = _as_1d(agreement, "agreement"), _as_1d(chance, "chance")
    if a.shape != c.shape:
        raise ValueError(f"agreement and chance must be aligned per image, got {a.size} and {c.size} values")
    ok = ~(np.isnan(a) | np.isnan(c))
    a, c = a[ok], c[ok]
    d = a - c
    n_below, n_above = int((d < 0).sum()), int((d > 0).sum())
    stat = p = sp = pmw = math.nan
    reason = ""
    if n_below + n_above < min_n:
        reason = f"only {n_below + n_above} images with agreement ≠ chance (min_n = {min_n})"
    else:
        res = sps.wilcoxon(d, zero_method="wilcox", alternative=alternative, method="auto")
        stat, p = float(res.statistic), float(res.pvalue)
        sp = sign_test(n_below, n_above, alternative)
        pmw = float(sps.mannwhitneyu(a, c, alternative=alternative).pvalue)
    med = lambda v: float(np.median(v)) if v.size else math.nan  # noqa: E731
    lo, hi = bootstrap_median_ci(d, n_boot, 0.95, seed)
    reject = bool(p < alpha) if not math.isnan(p) else False
    sign_reject = bool(sp < alpha) if not math.isnan(sp) else False
    return ChanceTest(
        n=int(a.size), n_excluded=int((~ok).sum()), median_agreement=med(a), median_chance=med(c),
        median_diff=med(d), n_below=n_below, n_above=n_above, statistic=stat, p=p, sign_p=sp,
        p_mannwhitney=pmw, alternative=alternative, alpha=float(alpha), reject=reject,
        sign_reject=sign_reject, reason=reason, ci_low=lo, ci_high=hi, margin=float(margin),
        verdict=three_way(reject, sign_reject, lo, hi, 0.0, alternative, margin, ran=not math.isnan(p)),
    )


# --------------------------------------------------------------------------- confusable runner-ups


def in_contrast_set(top1: Any, top2: Any, sets: torch.Tensor | np.ndarray) -> np.ndarray:
    """``top2[i] ∈ V(top1[i])`` for each row → bool ``[N]``; ``sets [C, K]`` from ``ck.contrast_sets``."""
    s = sets.detach().cpu().numpy() if isinstance(sets, torch.Tensor) else np.asarray(sets)
    if s.ndim != 2 or not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"sets must be an integer matrix [C, K] (from ck.contrast_sets), got {s.dtype} "
                         f"{s.shape}")
    u = np.asarray(top1.detach().cpu() if isinstance(top1, torch.Tensor) else top1).astype(np.int64)
    v = np.asarray(top2.detach().cpu() if isinstance(top2, torch.Tensor) else top2).astype(np.int64)
    if u.shape != v.shape or u.ndim != 1:
        raise ValueError(f"top1 and top2 must be 1-D and aligned, got shapes {u.shape} and {v.shape}")
    if u.size and (u.min() < 0 or u.max() >= s.shape[0]):
        raise ValueError(f"top1 holds a class outside 0..{s.shape[0] - 1}")
    return (s[u] == v[:, None]).any(axis=1)


def _strata(in_set: np.ndarray, likely: np.ndarray,
            prob_threshold: float) -> list[tuple[str, str, np.ndarray]]:
    hi, lo = f"≥ {prob_threshold:g}", f"< {prob_threshold:g}"
    every = np.ones_like(in_set)
    out = []
    for cname, cmask in (("any", every), ("in", in_set), ("out", ~in_set)):
        for pname, pmask in (("any", every), (hi, likely), (lo, ~likely)):
            out.append((cname, pname, cmask & pmask))
    return out


def confusable_strata(rows: pd.DataFrame, sets: torch.Tensor | np.ndarray | None = None, *,
                      prob_threshold: float = 0.05, by: Sequence[str] = (), threshold: float = 0.5,
                      alpha: float = 0.05, n_boot: int = 2_000, seed: int = 0, min_n: int = 10,
                      agreement_col: str = "agreement", top1_col: str = "label",
                      top2_col: str = "other_class", prob_col: str = "other_prob") -> pd.DataFrame:
    """The RQ1 test (:func:`class_sensitivity_test`) within strata → one row per (group, stratum).

    Strata: ``contrast`` ∈ {"any", "in", "out"} (is ``top2`` in ``V(top1)``: :func:`in_contrast_set` with
    ``sets``, or a bool column ``in_contrast`` when ``sets`` is None) × ``runner_up`` ∈ {"any",
    "≥ t", "< t"} (``rows[prob_col] ≥ prob_threshold``, the runner-up's softmax probability): 9 rows per
    group, "any"/"any" being the unstratified test.  Columns: ``*by, contrast, runner_up, stratum, n,
    n_excluded, median, p, reject, sign_p, sign_reject, conflict, reason, differs`` (``differs``: the
    stratum's Wilcoxon verdict differs from the group's unstratified one) and the other test fields
    (scipy's ``method`` renamed ``wilcoxon_method``, so ``by`` may hold the attribution method's column).
    """
    need = [agreement_col, prob_col] + ([top1_col, top2_col] if sets is not None else ["in_contrast"])
    missing = [c for c in [*by, *need] if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}")
    if not math.isfinite(prob_threshold) or not 0 < prob_threshold < 1:
        raise ValueError(f"prob_threshold must be in (0, 1), got {prob_threshold}")
    if sets is not None:
        in_set = in_contrast_set(rows[top1_col].to_numpy(), rows[top2_col].to_numpy(), sets)
    else:
        in_set = rows["in_contrast"].to_numpy(dtype=bool)
    prob = rows[prob_col].to_numpy(dtype=np.float64)
    if np.isnan(prob).any():
        raise ValueError(f"{prob_col} has NaN values: every row needs the runner-up's probability")
    frame = rows.assign(_in=in_set, _likely=prob >= prob_threshold)
    groups = frame.groupby(list(by), sort=True) if by else [((), frame)]
    out = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        values = g[agreement_col].to_numpy(dtype=np.float64)
        base = None  # the group's unstratified verdict (the first stratum)
        for cname, pname, mask in _strata(g["_in"].to_numpy(), g["_likely"].to_numpy(), prob_threshold):
            r = class_sensitivity_test(values[mask], threshold=threshold, alpha=alpha, n_boot=n_boot,
                                       seed=seed, min_n=min_n).as_row()
            r["wilcoxon_method"] = r.pop("method")  # not to clash with a "method" grouping column
            base = r["reject"] if base is None else base
            stratum = ("all rows" if cname == pname == "any" else
                       ", ".join(([f"top-2 {cname} contrast set"] if cname != "any" else [])
                                 + ([f"p(top-2) {pname}"] if pname != "any" else [])))
            out.append({**dict(zip(by, key)), "contrast": cname, "runner_up": pname, "stratum": stratum, **r,
                        "differs": bool(r["reject"] != base)})
    df = pd.DataFrame(out)
    front = [*by, "contrast", "runner_up", "stratum", "n", "n_excluded", "median", "p", "reject", "sign_p",
             "sign_reject", "conflict", "reason", "differs"]
    return df[front + [c for c in df.columns if c not in front]]


# --------------------------------------------------------------------------- map resolution


def map_resolution(h: int, w: int, input_size: tuple[int, int] | None = None,
                   ks: Sequence[float] = DIAGNOSTIC_KS) -> pd.DataFrame:
    """Attribution-map cells in the top-k set of an ``h×w`` layer map → one row per k.

    ``cells = h·w``; ``topk_cells = k·h·w`` (the effective number of layer cells the top-k fraction covers);
    ``topk_cells_floor = ⌊k·h·w⌋`` (pixels selected if the map were scored at the layer's size; 0 = none).
    With ``input_size = (H, W)`` (maps upsampled to the input): ``topk_pixels = ⌊k·H·W⌋`` and
    ``topk_cells_input = topk_pixels · h·w / (H·W)``, the same area in layer cells.
    """
    for name, v in (("h", h), ("w", w)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    rows = []
    for k in ks:
        k = float(k)
        if not 0 < k <= 1:
            raise ValueError(f"k must be a fraction in (0, 1], got {k:g}")
        r: dict[str, Any] = {"k": k, "h": int(h), "w": int(w), "cells": int(h * w), "topk_cells": k * h * w,
                             "topk_cells_floor": int(math.floor(k * h * w + 1e-9))}
        if input_size is not None:
            H, W = (int(v) for v in input_size)
            if H < 1 or W < 1:
                raise ValueError(f"input_size must be positive (H, W), got {input_size}")
            n = int(math.floor(k * H * W + 1e-9))
            r.update(H=H, W=W, topk_pixels=n, topk_cells_input=n * h * w / (H * W))
        rows.append(r)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- NaN rule


def nan_rule_flip(scores: Any, constant: Any = None, fill: float = 1.0, threshold: float = 0.5,
                  alternative: str = "less", alpha: float = 0.05, min_n: int = 10) -> dict[str, Any]:
    """The RQ1 verdict with constant-map pairs dropped (casekit) vs counted as ``fill`` (1.0: the reference
    code, where two constant maps share their whole top-k set).

    ``scores``: agreements with NaN for constant-map pairs; ``constant`` (bool, optional): which entries
    are such pairs (default: every NaN).  Returns ``{n, n_constant, median_dropped, p_dropped,
    reject_dropped, sign_p_dropped, sign_reject_dropped, median_filled, p_filled, reject_filled,
    sign_p_filled, sign_reject_filled, flip, sign_flip}``; ``flip``: the Wilcoxon verdicts differ.
    """
    x = _as_1d(scores, "scores")
    nan = np.isnan(x)
    if constant is None:
        const = nan
    else:
        const = np.asarray(constant.detach().cpu() if isinstance(constant, torch.Tensor) else constant)
        if const.dtype != np.bool_ or const.shape != x.shape:
            raise ValueError(f"constant must be booleans aligned with scores {x.shape}, "
                             f"got {const.dtype} {const.shape}")
        if (const & ~nan).any():
            raise ValueError("constant marks scores that are not NaN: a constant-map pair has no agreement")
    filled = np.where(const, float(fill), x)
    out: dict[str, Any] = {"n": int(x.size), "n_constant": int(const.sum())}
    for name, values in (("dropped", x), ("filled", filled)):
        r = class_sensitivity_test(values, threshold=threshold, alternative=alternative, alpha=alpha,
                                   n_boot=1, min_n=min_n)
        out.update({f"median_{name}": r.median, f"p_{name}": r.p, f"reject_{name}": r.reject,
                    f"sign_p_{name}": r.sign_p, f"sign_reject_{name}": r.sign_reject})
    out["flip"] = out["reject_dropped"] != out["reject_filled"]
    out["sign_flip"] = out["sign_reject_dropped"] != out["sign_reject_filled"]
    return out
