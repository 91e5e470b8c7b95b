"""Tables, a figure, the summary and casekit's own claims of the chapter "What the diagnostic measures",
from the rows of :func:`casekit.study.diagnostic_study.diagnostic_study` (one row per model, seed, layer,
method, image and k).

* :func:`chance_table` — top-1/top-2 agreement beside the chance reference, with the paired test.
* :func:`strata_table` — the RQ1 test per stratum of runner-up (confusable or not, likely or not).
* :func:`resolution_table`, :func:`k_table` — map cells in the top-k set; the diagnostic at each k.
* :func:`nan_rule_table` — where counting constant pairs as full agreement flips the verdict.
* :func:`projection_table`, :func:`geometry_table`, :func:`geometry_figure` — CASE vs the plain difference
  vs Grad-CAM, and how much of ``w_u`` CASE keeps.
* :func:`headline`, :func:`summary_text`, :data:`MEASURE_CLAIMS`, :func:`measure_claims`.

Imports: :mod:`casekit.evaluation`, :mod:`.naming`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..evaluation.diagnostic import chance_test, confusable_strata, map_resolution, nan_rule_flip
from ..evaluation.stats import class_sensitivity_test
from .naming import method_display, model_display, sort_paper

GROUP: tuple[str, ...] = ("model", "seed", "layer", "method")
#: The three maps of question 5: CASE, the plain contrastive difference, and Grad-CAM.
PROJECTION_METHODS: tuple[str, ...] = ("case", "gradcam-diff", "gradcam")


def _at_k(rows: pd.DataFrame, k: float) -> pd.DataFrame:
    sel = rows[np.isclose(rows["k"].to_numpy(dtype=float), k)]
    if sel.empty:
        raise ValueError(f"the rows hold no k = {k:g} (they have {sorted(rows['k'].unique())})")
    return sel


def _groups(rows: pd.DataFrame, by: Sequence[str]):
    for key, g in rows.groupby(list(by), sort=False):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,))), g


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return sort_paper(df, [c for c in ("model", "method") if c in df.columns]).reset_index(drop=True)


def chance_table(rows: pd.DataFrame, k: float = 0.05, alpha: float = 0.05, min_n: int = 10) -> pd.DataFrame:
    """Per (model, seed, layer, method): the median top-1/top-2 agreement, the median chance agreement
    (top-1 maps of unrelated images), the paired test of "agreement < chance"
    (:func:`~casekit.evaluation.diagnostic.chance_test`: Wilcoxon signed-rank of ``agreement − chance``
    per image, sign test, Mann–Whitney as a sensitivity value), the paper's RQ1 verdict (median < 50 %,
    Wilcoxon) and ``uninformative``: RQ1 rejects but the agreement is not below chance."""
    out = []
    for key, g in _groups(_at_k(rows, k), GROUP):
        t = chance_test(g["agreement"], g["chance"], alpha=alpha, min_n=min_n)
        r = class_sensitivity_test(g["agreement"], alpha=alpha, n_boot=1, min_n=min_n)
        out.append({**key, "k": k, "n": t.n, "median_agreement": t.median_agreement,
                    "mean_agreement": float(g["agreement"].mean()), "mean_chance": float(g["chance"].mean()),
                    "median_chance": t.median_chance, "median_diff": t.median_diff, "p_chance": t.p,
                    "sign_p_chance": t.sign_p, "p_mannwhitney": t.p_mannwhitney,
                    "below_chance": t.reject, "rq1_p": r.p, "rq1_reject": r.reject,
                    "uninformative": bool(r.reject and not t.reject)})
    return _sorted(pd.DataFrame(out))


def strata_table(rows: pd.DataFrame, k: float = 0.05, prob_threshold: float = 0.05, alpha: float = 0.05,
                 min_n: int = 10, n_boot: int = 200) -> pd.DataFrame:
    """The RQ1 test in each stratum (top-2 in the top-1 class's contrast set or not × runner-up probability
    ≥ ``prob_threshold`` or not) per (model, seed, layer, method):
    :func:`~casekit.evaluation.diagnostic.confusable_strata` on the rows' ``in_contrast`` column."""
    df = confusable_strata(_at_k(rows, k), prob_threshold=prob_threshold, by=GROUP, alpha=alpha,
                           n_boot=n_boot, min_n=min_n)
    return _sorted(df)


def strata_differences(strata: pd.DataFrame) -> pd.DataFrame:
    """The strata whose verdict differs from their group's unstratified verdict (tested strata only)."""
    tested = strata[strata["p"].notna()]
    return tested[tested["differs"]].reset_index(drop=True)


def resolution_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer) and k: the layer's map size and the effective number of its cells in the top-k
    set (:func:`~casekit.evaluation.diagnostic.map_resolution`, maps scored at the input size)."""
    out = []
    ks = sorted(rows["k"].unique())
    for key, g in _groups(rows, ("model", "layer")):
        r = g.iloc[0]
        res = map_resolution(int(r["map_h"]), int(r["map_w"]), (int(r["input_h"]), int(r["input_w"])), ks)
        out.append(res.assign(**key))
    df = pd.concat(out, ignore_index=True)
    front = ["model", "layer", "k", "h", "w", "cells", "topk_cells", "topk_pixels", "topk_cells_input"]
    return _sorted(df[front])


def k_table(rows: pd.DataFrame, alpha: float = 0.05, min_n: int = 10) -> pd.DataFrame:
    """:func:`chance_table` at every k of the rows (agreements at each k come from the same maps), with
    ``verdict_changes``: the RQ1 verdict of this (model, layer, method) is not the same at every k."""
    df = pd.concat([chance_table(rows, k, alpha, min_n) for k in sorted(rows["k"].unique())],
                   ignore_index=True)
    df["verdict_changes"] = df.groupby(list(GROUP))["rq1_reject"].transform("nunique") > 1
    return _sorted(df)


def nan_rule_table(rows: pd.DataFrame, k: float = 0.05, alpha: float = 0.05, min_n: int = 10) -> pd.DataFrame:
    """Per (model, seed, layer, method): the RQ1 verdict with constant-map pairs dropped vs counted as full
    agreement (:func:`~casekit.evaluation.diagnostic.nan_rule_flip`); ``flip`` marks the rows it decides."""
    out = []
    for key, g in _groups(_at_k(rows, k), GROUP):
        out.append({**key, "k": k, **nan_rule_flip(g["agreement"], alpha=alpha, min_n=min_n)})
    return _sorted(pd.DataFrame(out))


def projection_table(rows: pd.DataFrame, k: float = 0.05, alpha: float = 0.05,
                     methods: Sequence[str] = PROJECTION_METHODS) -> pd.DataFrame:
    """CASE vs the plain difference vs Grad-CAM per model: median agreement and chance (at ``k``), median
    and mean unique-evidence precision (share of the top-k pixels on the class's unique part; NaN without
    masks),
    and the mean relative confidence drop of the top-1 map at the rows' fidelity k."""
    sel = _at_k(rows, k)
    sel = sel[sel["method"].isin(methods)]
    chance = chance_table(sel, k, alpha).set_index(list(GROUP))
    out = []
    for key, g in _groups(sel, GROUP):
        c = chance.loc[tuple(key[c] for c in GROUP)]
        out.append({**key, "median_agreement": c["median_agreement"], "median_chance": c["median_chance"],
                    "below_chance": c["below_chance"], "rq1_reject": c["rq1_reject"],
                    "mean_unique_evidence": float(g["unique_evidence"].mean()),
                    "mean_relative_drop": float(g["relative_drop"].mean()),
                    "fidelity_k": float(g["fidelity_k"].iloc[0])})
    return _sorted(pd.DataFrame(out))


def _per_image(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, seed, layer, image) with CASE's geometry (the same for every method and k)."""
    return rows.drop_duplicates(["model", "seed", "layer", "image_id"])


def geometry_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: quartiles of ‖w⊥‖/‖w_u‖ (the share of the target direction CASE keeps) and of
    cos(w_u, w̄) over the images (top-1 class, its contrast set)."""
    out = []
    for key, g in _groups(_per_image(rows), ("model", "seed", "layer")):
        q = lambda c, p: float(np.nanquantile(g[c], p))  # noqa: E731
        out.append({**key, "n": len(g), "kept_q1": q("kept", .25), "kept_median": q("kept", .5),
                    "kept_q3": q("kept", .75), "cosine_q1": q("cosine", .25),
                    "cosine_median": q("cosine", .5), "cosine_q3": q("cosine", .75)})
    return _sorted(pd.DataFrame(out))


def geometry_figure(rows: pd.DataFrame):
    """Histograms of ‖w⊥‖/‖w_u‖ and cos(w_u, w̄), one line per model → a matplotlib Figure."""
    import matplotlib.pyplot as plt

    per = _per_image(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for col, ax, rng, label in (("kept", axes[0], (0, 1), "‖w⊥‖ / ‖w_u‖ (share CASE keeps)"),
                                ("cosine", axes[1], (-1, 1), "cos(w_u, w̄)")):
        for m, g in per.groupby("model", sort=False):
            ax.hist(g[col].dropna(), bins=30, range=rng, histtype="step", label=model_display(m))
        ax.set_xlabel(label)
        ax.set_ylabel("images")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def measure_tables(rows: pd.DataFrame, k: float = 0.05, alpha: float = 0.05,
                   prob_threshold: float = 0.05) -> dict[str, pd.DataFrame]:
    """Every table of the chapter, computed once: ``chance, strata, k, nan_rule, projection, geometry``
    (the tests are the expensive part; :func:`headline` and :func:`measure_claims` reuse them)."""
    return {"chance": chance_table(rows, k, alpha), "strata": strata_table(rows, k, prob_threshold, alpha),
            "k": k_table(rows, alpha), "nan_rule": nan_rule_table(rows, k, alpha),
            "projection": projection_table(rows, k, alpha), "geometry": geometry_table(rows),
            "per_image": _per_image(rows)}


def headline(rows: pd.DataFrame, k: float = 0.05, alpha: float = 0.05,
             tables: dict[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    """The chapter's numbers: tested (model, method) pairs, how many pass RQ1, how many are below chance,
    how many pass RQ1 without being below chance, strata that differ, NaN-rule flips, verdicts that change
    with k, the median chance agreement and the median share of w_u CASE keeps.  ``tables``: from
    :func:`measure_tables` (computed when None)."""
    T = measure_tables(rows, k, alpha) if tables is None else tables
    ch, diff, geo = T["chance"], strata_differences(T["strata"]), T["per_image"]
    return {"k": k, "groups": len(ch), "rq1_reject": int(ch["rq1_reject"].sum()),
            "below_chance": int(ch["below_chance"].sum()), "uninformative": int(ch["uninformative"].sum()),
            "median_chance": float(ch["median_chance"].median()),
            "strata_differ": len(diff),
            "groups_with_differing_strata": int(diff.groupby(list(GROUP)).ngroups) if len(diff) else 0,
            "nan_flips": int(T["nan_rule"]["flip"].sum()),
            "k_changes": int(T["k"].drop_duplicates(list(GROUP))["verdict_changes"].sum()),
            "median_kept": float(geo["kept"].median()), "median_cosine": float(geo["cosine"].median())}


def summary_text(rows: pd.DataFrame, k: float = 0.05, alpha: float = 0.05,
                 tables: dict[str, pd.DataFrame] | None = None) -> str:
    """:func:`headline` as a short Markdown paragraph."""
    h = headline(rows, k, alpha, tables)
    return (f"At k = {k:.0%}, {h['rq1_reject']} of {h['groups']} (model, method) pairs pass the paper's test "
            f"(median top-1/top-2 agreement below 50 %), but only {h['below_chance']} have an agreement "
            f"significantly below their chance reference (median chance agreement {h['median_chance']:.3f}); "
            f"**{h['uninformative']}** pass the paper's test without beating chance. "
            f"{h['strata_differ']} strata (in {h['groups_with_differing_strata']} pairs) reach another "
            f"verdict than their pair's unstratified test; {h['k_changes']} pairs change verdict between "
            f"k = 5, 10 and 20 %; the NaN rule flips {h['nan_flips']} verdicts. CASE keeps a median "
            f"{h['median_kept']:.0%} of ‖w_u‖ (median cos(w_u, w̄) = {h['median_cosine']:.2f}).")


# --------------------------------------------------------------------------- claims (casekit's own)


@dataclass(frozen=True)
class MeasureClaim:
    """One of casekit's own claims about the diagnostic: ``check(tables) → (supported, this run's number)``
    with ``tables`` from :func:`measure_tables`."""

    id: str
    section: str
    statement: str
    criterion: str
    check: Callable[[dict[str, pd.DataFrame]], tuple[bool | None, str]]  # tables of measure_tables
    extension: bool = True


def _rq1_beyond_chance(T: dict[str, pd.DataFrame]) -> tuple[bool | None, str]:
    ch = T["chance"]
    passed = ch[ch["rq1_reject"]]
    if passed.empty:
        return None, "no method passes RQ1"
    n = int(passed["below_chance"].sum())
    return bool(n == len(passed)), f"{n} of {len(passed)} RQ1 passes are below chance"


def _strata_agree(T: dict[str, pd.DataFrame]) -> tuple[bool | None, str]:
    st = T["strata"]
    tested = st[st["p"].notna() & (st["contrast"] == "in") & (st["runner_up"] == "any")]
    if tested.empty:
        return None, "no confusable stratum large enough to test"
    n = int(tested["differs"].sum())
    return bool(n == 0), f"{n} of {len(tested)} confusable strata differ"


def _k_stable(T: dict[str, pd.DataFrame]) -> tuple[bool | None, str]:
    kt = T["k"].drop_duplicates(list(GROUP))
    n = int(kt["verdict_changes"].sum())
    return bool(n == 0), f"{n} of {len(kt)} pairs change verdict with k"


def _nan_rule(T: dict[str, pd.DataFrame]) -> tuple[bool | None, str]:
    nr = T["nan_rule"]
    n = int(nr["flip"].sum())
    return bool(n == 0), f"{n} of {len(nr)} verdicts flip"


def _case_vs_diff(T: dict[str, pd.DataFrame]) -> tuple[bool | None, str]:
    pt = T["projection"]
    piv = pt.pivot_table(index="model", columns="method", values="mean_unique_evidence")
    if not {"case", "gradcam-diff"} <= set(piv.columns) or piv[["case", "gradcam-diff"]].isna().all().all():
        return None, "no unique-evidence masks"
    wins = int((piv["case"] >= piv["gradcam-diff"]).sum())
    return bool(wins == len(piv)), f"CASE ≥ plain difference on {wins} of {len(piv)} models"


MEASURE_CLAIMS: tuple[MeasureClaim, ...] = (
    MeasureClaim("measures.rq1_beyond_chance", "chance reference",
                 "every (model, method) that passes RQ1 also has top-1/top-2 agreement below its chance "
                 "reference (unrelated images)",
                 "paired Wilcoxon of agreement − chance, one-sided, α = 0.05, k = 5 %", _rq1_beyond_chance),
    MeasureClaim("measures.strata_agree", "confusable runner-ups",
                 "restricting to images whose runner-up is in the top-1 class's contrast set changes no RQ1 "
                 "verdict", "RQ1 Wilcoxon per stratum (≥ 10 non-tied images), k = 5 %", _strata_agree),
    MeasureClaim("measures.k_stable", "map resolution",
                 "no RQ1 verdict changes between k = 5, 10 and 20 %", "RQ1 Wilcoxon at each k", _k_stable),
    MeasureClaim("measures.nan_rule", "NaN rule",
                 "counting constant-map pairs as full agreement (the reference code) flips no RQ1 verdict",
                 "RQ1 Wilcoxon, constant pairs dropped vs filled with 1, k = 5 %", _nan_rule),
    MeasureClaim("measures.case_vs_diff", "projection",
                 "CASE's unique-evidence precision is at least the plain difference's on every model",
                 "mean unique evidence at k = 5 % (demo masks)", _case_vs_diff),
)


def measure_claims(rows: pd.DataFrame, tables: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The claims as the book's claims table: ``section, claim, paper says, this run, supported`` (paper
    says: "— (casekit's extension)"); ``tables`` from :func:`measure_tables` (computed when None; the
    claims use k = 5 %, α = 0.05)."""
    T = measure_tables(rows) if tables is None else tables
    out = []
    for c in MEASURE_CLAIMS:
        try:
            supported, text = c.check(T)
        except ValueError as err:  # e.g. too few rows for a test
            supported, text = None, f"not computed ({err})"
        out.append({"section": c.section, "claim": f"{c.statement} ({c.criterion})",
                    "paper says": "— (casekit's extension)", "this run": text, "supported": supported})
    df = pd.DataFrame(out)
    df["supported"] = df["supported"].astype(object)
    return df


def display_names(df: pd.DataFrame) -> pd.DataFrame:
    """``Model``/``Method`` display columns in front (for the book's tables)."""
    out = df.copy()
    if "method" in out:
        out.insert(0, "Method", out["method"].map(method_display))
    if "model" in out:
        out.insert(0, "Model", out["model"].map(model_display))
    return out


__all__ = ["chance_table", "strata_table", "strata_differences", "resolution_table", "k_table",
           "nan_rule_table", "projection_table", "geometry_table", "geometry_figure", "measure_tables",
           "headline",
           "summary_text", "MeasureClaim", "MEASURE_CLAIMS", "measure_claims", "display_names",
           "PROJECTION_METHODS"]

