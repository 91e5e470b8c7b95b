"""The checks behind the claim records of :mod:`.claims` for the appendix's histograms (Figures 7–11), the
diagnostic (chapter 01), the contrast set (02) and the demo benchmark's ground truth (03); the shared pieces
(:class:`~casekit.report.claim_checks.RunView`, :class:`~casekit.report.claim_checks.Outcome`) are in
:mod:`.claim_checks`.

Imports: :mod:`casekit.study` (row views), :mod:`casekit.cam` (method names), :mod:`.naming`, :mod:`.tables`,
:mod:`.analyses`, :mod:`.evidence`, :mod:`.claim_checks`.
"""

from __future__ import annotations

import math
import warnings

import pandas as pd
from scipy.stats import ConstantInputWarning

from ..cam.engine import METHODS
from ..study.rows import degenerate_maps
from .analyses import histogram_summary
from .claim_checks import Outcome, RunView, every
from .evidence import evidence_comparison
from .naming import BASELINES, model_display, pct, ptext
from .tables import table1_full

# ----------------------------------------------------------------------------------------------- appendix
# (Figs 7–11)


def _histograms(run: RunView) -> dict[tuple[str, str], pd.DataFrame]:
    hs = run.table("histograms", lambda: histogram_summary(run.data, threshold=run.threshold, seed=run.seed))
    return {(model_display(m), lyr): g for (m, lyr), g in hs.groupby(["model", "layer"], sort=False)}


def _mass(run: RunView, name: str, layer: str, want_above: bool) -> Outcome:
    g = _histograms(run).get((name, layer))
    if g is None:
        return Outcome(None, "no results")
    hi = g[g["median"] >= run.threshold]
    n = int(len(hi) if want_above else (g["median"] < run.threshold).sum())
    txt = ", ".join(f"{r.Method} {pct(r.median)}" for r in g.itertuples())
    return Outcome(None if g["median"].isna().any() or len(g) < 6 else bool(n >= 4),
                   f"{n} of {len(g)}; medians: {txt}")


def _case_lowest(run: RunView, name: str) -> Outcome:
    g = _histograms(run).get((name, run.layer))
    if g is None or not (g["method"] == "case").any():
        return Outcome(None, "no results")
    cm = float(g.loc[g["method"] == "case", "median"].iloc[0])
    others = g[g["method"] != "case"]
    lowest = others.loc[others["median"].idxmin()] if others["median"].notna().any() else None
    return Outcome(None if lowest is None or math.isnan(cm) else bool(cm < lowest["median"]),
                   f"CASE {pct(cm)}; lowest baseline "
                   + (f"{lowest['Method']} {pct(lowest['median'])}" if lowest is not None else "NaN"))


def appendix_vgg(run: RunView) -> Outcome:
    return _mass(run, "VGG", run.layer, True)


def appendix_resnet(run: RunView) -> Outcome:
    return _case_lowest(run, "ResNet")


def appendix_convnext(run: RunView) -> Outcome:
    return _case_lowest(run, "ConvNeXt")


def appendix_densenet_conv(run: RunView) -> Outcome:
    return _mass(run, model_display(run.sparse_model), run.layer, False)


def appendix_densenet_norm5(run: RunView) -> Outcome:
    return _mass(run, model_display(run.sparse_model), run.alt_layer, True)


# ----------------------------------------------------------------------------------------------- diagnostic
# (ch. 01)


def _diag_t1(run: RunView) -> pd.DataFrame:
    # Not cached as "None on error": the diagnostic's Table I must exist (too few images raise, as before).
    if "diag t1" not in run.cache:
        run.cache["diag t1"] = table1_full(run.data, layer=run.layer, seed=run.seed, threshold=run.threshold,
                                           alpha=run.alpha, n_boot=run.n_boot)
    return run.cache["diag t1"]


def diagnostic_gradcam(run: RunView) -> Outcome:
    g = _diag_t1(run)
    g = g[g["method"] == "gradcam"]
    if g.empty:
        return Outcome(None, "no Grad-CAM results")
    fails = g[~g["reject"] & ~g["reason"].astype(bool)]
    tested = int((~g["reason"].astype(bool)).sum())
    txt = (f"fails on {len(fails)} of {tested} models tested"
           + (f" ({len(g) - tested} not tested: too few images)" if tested < len(g) else "") + ": "
           + ", ".join(f"{r.Model} {ptext(r.p)} (median {pct(r.median)})" for r in g.itertuples()))
    return Outcome(None if g["reason"].astype(bool).any() else bool(len(fails) > len(g) / 2), txt)


def diagnostic_baselines(run: RunView) -> Outcome:
    t1 = _diag_t1(run)
    untested = bool(t1["reason"].astype(bool).any())
    base = t1[t1["method"].isin(BASELINES)]
    base_tested = base[~base["reason"].astype(bool)]
    bfail = base_tested[~base_tested["reject"]]
    per = ", ".join(f"{model_display(m)} {int((~gm['reject']).sum())}/{len(gm)}"
                    for m, gm in base_tested.groupby("model", sort=False))
    txt = (f"{len(bfail)} of {len(base_tested)} tests fail" + (f" ({per})" if per else "")
           + (f"; {len(base) - len(base_tested)} not tested (too few images)" if len(base_tested) < len(base)
              else ""))
    return Outcome(None if base.empty or untested else bool(len(bfail) >= len(base) / 2), txt)


def diagnostic_scorecam(run: RunView) -> Outcome:
    maps = run.data.maps if hasattr(run.data, "maps") else run.data
    deg = degenerate_maps(maps, layer=run.layer, seed=run.seed, method="scorecam", target=["top1", "top2"])
    if deg.empty:
        return Outcome(None, "no Score-CAM results")
    per_model = deg.groupby("model", sort=False).agg(c=("n_constant", "sum"), n=("n_maps", "sum"))
    txt = ", ".join(f"{model_display(m)} {r.c}/{r.n} ({pct(r.c / r.n)})" for m, r in per_model.iterrows())
    return Outcome(bool(((per_model["c"] / per_model["n"]) >= run.min_constant).any()),
                   "constant maps: " + txt)


# ----------------------------------------------------------------------------------------------- contrast
# set (ch. 02)


def _paper_k_rows(run: RunView, model: str) -> pd.DataFrame:
    s = run.data
    return s[(s["model"] == model) & (s["contrast_strategy"] == run.strategy)
             & (s["comparison"] == "top1_vs_top2") & (s["method"] == "case")]


def contrast_paper_k(run: RunView) -> Outcome:
    texts, states = [], []
    for model in dict.fromkeys(run.data["model"]):
        g = _paper_k_rows(run, model)
        at = g[g["contrast_k"] == run.paper_k]
        if at.empty:
            texts.append(f"{model_display(model)}: K = {run.paper_k} not studied")
            states.append(None)
            continue
        r = at.iloc[0]
        best = g.loc[g["median"].idxmin()] if g["median"].notna().any() else r
        texts.append(f"{model_display(model)}: K = {run.paper_k} median {pct(r['median'])} "
                     f"({ptext(r['p'])}), lowest median {pct(best['median'])} at K = "
                     f"{int(best['contrast_k'])}")
        states.append(None if r["reason"] else bool(r["reject"] and r["median"] <= best["median"]
                                                    + run.tolerance))
    return Outcome(every(states), "; ".join(texts))


def contrast_single_class(run: RunView) -> Outcome:
    texts, states = [], []
    for model in dict.fromkeys(run.data["model"]):
        one = _paper_k_rows(run, model)
        one = one[one["contrast_k"] == 1]
        if one.empty:
            texts.append(f"{model_display(model)}: K = 1 not studied")
            states.append(None)
            continue
        r = one.iloc[0]
        texts.append(f"{model_display(model)}: median {pct(r['median'])}, {ptext(r['p'])}")
        states.append(None if r["reason"] else bool(r["reject"]))
    return Outcome(every(states), "; ".join(texts))


# ----------------------------------------------------------------------------------------------- ground
# truth (ch. 03)


def _evidence(run: RunView) -> tuple[list[str], list[str], list[bool | None], list[bool | None]] | None:
    if "evidence" in run.cache:
        return run.cache["evidence"]
    ev = evidence_comparison(run.data, layer=run.layer, seed=run.seed, comparison="top1_vs_top2")
    if ev.empty:
        run.cache["evidence"] = None
        return None
    t1, t2, s1, s2 = [], [], [], []
    for model, g in ev.groupby("model", sort=False):
        g = g.dropna(subset=["unique_top1", "median_agreement"])
        if len(g) < len(METHODS) or "case" not in set(g["method"]):
            t1.append(f"{model_display(model)}: only {len(g)} methods with evidence")
            t2.append(t1[-1])
            s1.append(None)
            s2.append(None)
            continue
        best = g.loc[g["unique_top1"].idxmax()]
        case = float(g.loc[g["method"] == "case", "unique_top1"].iloc[0])
        t1.append(f"{model_display(model)}: CASE {pct(case)}, best {best['Method']} "
                  f"{pct(best['unique_top1'])}")
        s1.append(bool(best["method"] == "case"))
        with warnings.catch_warnings():  # constant values have no ρ: NaN, "untested" below
            warnings.simplefilter("ignore", ConstantInputWarning)
            rho = g["median_agreement"].corr(g["unique_top1"], method="spearman")
        t2.append(f"{model_display(model)}: ρ = {rho:.2f}")
        s2.append(None if math.isnan(rho) else bool(rho < 0))
    run.cache["evidence"] = (t1, t2, s1, s2)
    return run.cache["evidence"]


def evidence_case_best(run: RunView) -> Outcome:
    found = _evidence(run)
    if found is None:
        return Outcome(None, "no part masks in this profile")
    return Outcome(every(found[2]), "; ".join(found[0]))


def evidence_agreement_tracks(run: RunView) -> Outcome:
    found = _evidence(run)
    if found is None:
        return Outcome(None, "no part masks in this profile")
    return Outcome(every(found[3]), "; ".join(found[1]))
