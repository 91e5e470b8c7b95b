"""Tables I–III of the paper, built from the runner's rows (:mod:`casekit.study`).

Every builder takes the ``maps`` table of a run (or a :class:`~casekit.study.runner.Results`) and returns
pandas DataFrames: a *full* long frame with every number (n, excluded NaNs, medians with their bootstrap CI,
raw and Holm-adjusted p, verdicts, effect sizes) and a compact *paper-shaped* frame with the p-values written
as in the paper (:func:`casekit.evaluation.stats.format_p`).  Rows follow the paper's order (:mod:`.naming`).

Imports: :mod:`casekit.study` (row views), :mod:`casekit.evaluation` (tests), :mod:`.naming`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..evaluation.stats import class_sensitivity_test, format_p, holm, paired_fidelity_both_ways
from ..study.rows import agreement_rows, fidelity_rows
from ..study.runner import Results
from .naming import DISPLAY_NAMES, PAPER_METHOD_ORDER, model_display, num, sort_paper

__all__ = [
    "maps_frame", "sparsity_frame", "sensitivity_tests", "table1_full", "table1", "table2_full", "table2",
    "table3_full", "table3", "table3_both_ways", "table1_sensitivity", "conflict_count", "bold",
]


def _frame(data: Any, table: str) -> pd.DataFrame:
    """``data.<table>`` of a :class:`Results`, or ``data`` itself when it already is that DataFrame."""
    if isinstance(data, Results):
        return getattr(data, table)
    if isinstance(data, pd.DataFrame):
        return data
    raise TypeError(f"expected the {table} DataFrame of a run or a Results object, got {type(data).__name__}")


def maps_frame(data: Any) -> pd.DataFrame:
    """The ``maps`` rows of a :class:`Results` (or the DataFrame itself)."""
    return _frame(data, "maps")


def sparsity_frame(data: Any) -> pd.DataFrame:
    """The ``sparsity`` rows of a :class:`Results` (or the DataFrame itself)."""
    return _frame(data, "sparsity")


def _verdict(row: Mapping[str, Any]) -> str:
    if row["reason"]:
        return f"no test ({row['reason']})"
    return "class-sensitive" if row["reject"] else "not shown class-sensitive"


# ----------------------------------------------------------------------------------------------- RQ1


def sensitivity_tests(agree: pd.DataFrame, groups: Sequence[str], threshold: float, alpha: float, n_boot: int,
                      seed: int) -> pd.DataFrame:
    """One class-sensitivity test per group of agreement rows, with Holm's correction over all groups."""
    if agree.empty:
        raise ValueError("no agreement rows match the selection (wrong model, layer, seed or comparison?)")
    rows = []
    for key, g in agree.groupby(list(groups), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        dup = g["image_id"].duplicated()
        if dup.any():
            raise ValueError(f"image ids repeat within {dict(zip(groups, key))}: "
                             f"{g.loc[dup, 'image_id'].tolist()[:5]}; "
                             "one agreement per image is expected (mixing two runs?)")
        r = class_sensitivity_test(g["agreement"].to_numpy(float), threshold=threshold, alpha=alpha,
                                   n_boot=n_boot, seed=seed).as_row()
        r.update(dict(zip(groups, key)))
        r["n_degenerate"] = int(g["degenerate"].sum()) if "degenerate" in g else 0
        r["n_partly_degenerate"] = int(g["partly_degenerate"].sum()) if "partly_degenerate" in g else 0
        rows.append(r)
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p"].to_numpy(float))
    out["reject_holm"] = out["p_holm"] < alpha
    out["verdict"] = [_verdict(r) for r in out.to_dict("records")]
    out["Method"] = out["method"].map(DISPLAY_NAMES)
    out["Model"] = out["model"].map(model_display)
    out["p_fmt"] = out["p"].map(format_p)
    out["p_holm_fmt"] = out["p_holm"].map(format_p)
    out["sign_p_fmt"] = out["sign_p"].map(format_p)
    front = [*groups, "Model", "Method", "n", "n_excluded", "n_degenerate", "n_partly_degenerate", "n_zero",
             "median", "ci_low", "ci_high",
             "p", "p_fmt", "p_holm", "p_holm_fmt", "reject", "reject_holm", "verdict",
             "sign_p", "sign_p_fmt", "sign_reject", "conflict"]
    return out[front + [c for c in out.columns if c not in front]]


def table1_full(data: Any, *, layer: str = "final_conv", seed: int = 0, comparison: str = "top1_vs_top2",
                threshold: float = 0.5, alpha: float = 0.05, models: Sequence[str] | None = None,
                methods: Sequence[str] | None = None, n_boot: int = 10_000,
                boot_seed: int = 0, partly_degenerate: str = "kept") -> pd.DataFrame:
    """Table I, long: one row per (model, method) with the one-sided Wilcoxon signed-rank test of
    ``agreement − threshold`` (H1: the distribution's symmetric centre, its pseudo-median, is below it;
    default threshold 0.5 = the paper's, the reference code used 0.7), n, NaNs excluded (constant maps),
    median agreement and its 95 % bootstrap CI, p, Holm-adjusted p over the whole table and the verdicts
    (``reject`` at ``alpha`` from the raw p, as the paper; ``reject_holm`` after correction); the exact sign
    test of the median (``sign_p``, ``sign_reject``) and ``conflict`` (the two verdicts differ, or the
    Wilcoxon rejects although the sample median is not below the threshold).  ``n_partly_degenerate``:
    comparisons with a partly degenerate map; ``partly_degenerate="excluded"`` drops them before testing
    (the sensitivity row of :func:`table1_sensitivity`)."""
    if partly_degenerate not in ("kept", "excluded"):
        raise ValueError(f"partly_degenerate must be 'kept' or 'excluded', got {partly_degenerate!r}")
    agree = agreement_rows(maps_frame(data), layer=layer, seed=seed, comparison=comparison, model=models,
                           method=methods)
    if partly_degenerate == "excluded":
        if "partly_degenerate" not in agree.columns:
            raise ValueError("these rows do not record partly degenerate maps (an older run): recompute it")
        agree = agree[~agree["partly_degenerate"]]
    out = sensitivity_tests(agree, ["model", "layer", "seed", "method"], threshold, alpha, n_boot, boot_seed)
    out.insert(3, "comparison", comparison)
    return sort_paper(out, ["model", "method"])


def conflict_count(full: pd.DataFrame) -> int:
    """Number of rows of a Table I/II long frame whose Wilcoxon and sign-test verdicts conflict."""
    if "conflict" not in full.columns:
        raise ValueError("the frame has no 'conflict' column: pass table1_full(...) or table2_full(...)")
    return int(full["conflict"].astype(bool).sum())


def table1_sensitivity(data: Any, **options: Any) -> pd.DataFrame:
    """Table I's test with the partly degenerate comparisons kept and excluded, one row per (model, method,
    ``partly_degenerate``): n, median, p, verdicts of both tests (``options`` as :func:`table1_full`)."""
    cols = ["model", "method", "Model", "Method", "partly_degenerate", "n", "n_partly_degenerate", "median",
            "p", "p_fmt", "reject", "sign_p", "sign_reject", "conflict"]
    parts = [table1_full(data, partly_degenerate=how, **options).assign(partly_degenerate=how)
             for how in ("kept", "excluded")]
    out = pd.concat(parts, ignore_index=True)[cols]
    return sort_paper(out, ["model", "method"]).reset_index(drop=True)


def _pivot_p(full: pd.DataFrame, column: str, value: str = "p_fmt") -> pd.DataFrame:
    wide = full.pivot(index="Method", columns=column, values=value)
    order = [DISPLAY_NAMES[m] for m in PAPER_METHOD_ORDER if DISPLAY_NAMES[m] in wide.index]
    wide = wide.loc[order]
    wide.columns.name = None
    return wide


def table1(data: Any = None, *, full: pd.DataFrame | None = None, **options: Any) -> pd.DataFrame:
    """Table I as in the paper: Wilcoxon p per method (rows) × model (columns), formatted like the paper.

    Pass the results (``options`` as :func:`table1_full`) or an already built ``full`` frame."""
    full = full if full is not None else table1_full(data, **options)
    cols = list(dict.fromkeys(full["Model"]))
    return _pivot_p(full, "Model")[cols]


def table2_full(data: Any, *, model: str = "densenet", layers: Sequence[str] = ("final_conv", "norm5"),
                seed: int = 0,
                comparison: str = "top1_vs_top2", threshold: float = 0.5, alpha: float = 0.05,
                methods: Sequence[str] | None = None, n_boot: int = 10_000,
                boot_seed: int = 0) -> pd.DataFrame:
    """Table II, long: the class-sensitivity test of one model at several layers (default DenseNet's final
    convolution vs ``norm5``); columns as :func:`table1_full`, Holm over this table."""
    maps = maps_frame(data)
    missing = [lyr for lyr in layers if not ((maps["model"] == model) & (maps["layer"] == lyr)).any()]
    if missing:
        raise ValueError(f"no results for {model!r} at layer(s) {missing}; have layers "
                         f"{sorted(maps.loc[maps['model'] == model, 'layer'].unique())}")
    agree = agreement_rows(maps, model=model, layer=list(layers), seed=seed, comparison=comparison,
                           method=methods)
    out = sensitivity_tests(agree, ["model", "layer", "seed", "method"], threshold, alpha, n_boot, boot_seed)
    out.insert(3, "comparison", comparison)
    out = sort_paper(out, ["method"])  # methods in the paper's order, then layers in the given order (stable)
    return out.sort_values("layer", key=lambda s: s.map(list(layers).index),
                           kind="mergesort").reset_index(drop=True)


def table2(data: Any = None, *, full: pd.DataFrame | None = None, **options: Any) -> pd.DataFrame:
    """Table II as in the paper: p per method × layer (the paper shows the ``norm5`` column)."""
    full = full if full is not None else table2_full(data, **options)
    cols = list(dict.fromkeys(full["layer"]))
    return _pivot_p(full, "layer")[cols]


# ----------------------------------------------------------------------------------------------- RQ2


def table3_full(data: Any, *, k: float | None = None, drop: str = "relative", layer: str = "final_conv",
                seed: int = 0, alpha: float = 0.05, models: Sequence[str] | None = None,
                methods: Sequence[str] | None = None, constant_pairs: str = "kept") -> pd.DataFrame:
    """Table III, long: mean and SD of each method's confidence drop and the paired t-test against CASE on
    the same images (paired by image id, checked): ``p_one_sided`` (H1: CASE's mean drop is higher, the
    paper's text) and ``p_two_sided`` (the reference code, which the paper's numbers match), ``d_z`` (mean of
    CASE − method over its SD), ``n`` pairs, ``n_constant`` top-1 maps without a top-k set (nothing blanked,
    drop 0), and ``highest`` (the highest mean drop of the model, bold in the paper).

    ``drop``: ``"relative"`` = ``max(p_before − p_after, 0) / p_before`` (the reference code's score) or
    ``"absolute"`` = ``p_before − p_after``; ``k``: the blanked fraction (default each run's ``fidelity_k``).
    ``constant_pairs``: ``"kept"`` (a constant map's drop counts as 0, as the reference code) or
    ``"excluded"`` (an image leaves the pair when either of its two maps is constant;
    :func:`casekit.evaluation.stats.paired_fidelity_both_ways`); ``n_pairs_excluded`` counts those images and
    ``mean``/``sd`` are over the tested images.  See :func:`table3_both_ways`.
    """
    if drop not in ("relative", "absolute"):
        raise ValueError(f"drop must be 'relative' or 'absolute', got {drop!r}")
    if constant_pairs not in ("kept", "excluded"):
        raise ValueError(f"constant_pairs must be 'kept' or 'excluded', got {constant_pairs!r}")
    col = "relative_drop" if drop == "relative" else "drop"
    fid = fidelity_rows(maps_frame(data), k=k, layer=layer, seed=seed, model=models, method=methods)
    if fid.empty:
        raise ValueError("no fidelity rows match the selection (was RQ2 run for this layer and seed?)")
    rows = []
    for model, g in fid.groupby("model", sort=False):
        case = g[g["method"] == "case"]
        if case.empty:
            raise ValueError(f"Table III compares every method with CASE, but {model!r} has no CASE rows")
        for method, gm in g.groupby("method", sort=False):
            both = paired_fidelity_both_ways(gm[col].to_numpy(float), case[col].to_numpy(float),
                                             gm["image_id"].to_numpy(), case["image_id"].to_numpy(),
                                             gm["constant"].to_numpy(bool), case["constant"].to_numpy(bool),
                                             alpha=alpha)
            test = both[both["constant_pairs"] == constant_pairs].iloc[0].to_dict()
            r = {"constant_pairs": constant_pairs, "n_pairs_excluded": int(test["n_pairs_excluded"]),
                 "model": model, "layer": layer, "seed": seed, "method": method, "n": test["n"],
                 "mean": test["mean_method"], "sd": test["sd_method"], "mean_case": test["mean_case"],
                 "mean_diff": test["mean_diff"], "t": test["t"], "df": test["df"], "d_z": test["d_z"],
                 "p_one_sided": test["p_one_sided"], "p_two_sided": test["p_two_sided"],
                 "reason": test["reason"], "n_constant": int(gm["constant"].sum()),
                 "fidelity_k": float(gm["fidelity_k"].iloc[0]), "drop": drop}
            if method == "case":  # CASE against itself: no test, as the paper's "–"
                r.update(t=math.nan, d_z=math.nan, p_one_sided=math.nan, p_two_sided=math.nan, mean_diff=0.0,
                         reason="reference method")
            rows.append(r)
    out = pd.DataFrame(rows)
    out["highest"] = out["mean"] == out.groupby("model")["mean"].transform("max")
    out["case_higher"] = out["p_one_sided"] < alpha  # CASE's mean drop significantly higher (one-sided)
    sig2 = out["p_two_sided"] < alpha
    out["two_sided_verdict"] = np.where(out["method"] == "case", "–", np.where(
        ~sig2, "no significant difference",
        np.where(out["mean"] > out["mean_case"], "method significantly higher", "CASE significantly higher")))
    out["Method"] = out["method"].map(DISPLAY_NAMES)
    out["Model"] = out["model"].map(model_display)
    front = ["model", "layer", "seed", "method", "Model", "Method", "n", "mean", "sd", "p_one_sided",
             "p_two_sided",
             "d_z", "highest", "case_higher", "two_sided_verdict", "n_constant"]
    out = out[front + [c for c in out.columns if c not in front]]
    return sort_paper(out, ["model", "method"])


def table3_both_ways(data: Any, **options: Any) -> pd.DataFrame:
    """Table III long with the constant-map pairs kept (as 0, the reference code) and excluded, one row per
    (model, method, ``constant_pairs``) (``options`` as :func:`table3_full`)."""
    parts = [table3_full(data, constant_pairs=how, **options) for how in ("kept", "excluded")]
    return sort_paper(pd.concat(parts, ignore_index=True), ["model", "method"]).reset_index(drop=True)


def table3(data: Any = None, *, full: pd.DataFrame | None = None, **options: Any) -> pd.DataFrame:
    """Table III as in the paper: per model, Mean | SD | p (one-sided) | p (two-sided) of the confidence drop,
    methods as rows; numbers as the paper writes them (``.1696``; p via
    :func:`casekit.evaluation.stats.format_p`)."""
    full = full if full is not None else table3_full(data, **options)
    parts = {}
    for model in dict.fromkeys(full["Model"]):
        g = full[full["Model"] == model].set_index("Method")
        parts[model] = pd.DataFrame({"Mean": g["mean"].map(num), "SD": g["sd"].map(num),
                                     "p (one-sided)": g["p_one_sided"].map(format_p),
                                     "p (two-sided)": g["p_two_sided"].map(format_p)})
    out = pd.concat(parts, axis=1)
    order = [DISPLAY_NAMES[m] for m in PAPER_METHOD_ORDER if DISPLAY_NAMES[m] in out.index]
    out = out.loc[order]
    out.index.name = "Method"
    return out


def bold(compact: pd.DataFrame, full: pd.DataFrame, flag: str | None = None):
    """A pandas ``Styler`` of a compact table with the paper's bold cells: for Tables I/II the significant
    p-values (``flag="reject"``), for Table III each model's highest mean (``flag="highest"``)."""
    if flag is None:
        flag = "highest" if "highest" in full.columns else "reject"
    mask = pd.DataFrame(False, index=compact.index, columns=compact.columns)
    for r in full.to_dict("records"):
        if not r.get(flag):
            continue
        if isinstance(compact.columns, pd.MultiIndex):  # Table III: bold the Mean cell
            mask.loc[r["Method"], (r["Model"], "Mean")] = True
        else:
            col = r["Model"] if r["Model"] in compact.columns else r["layer"]
            mask.loc[r["Method"], col] = True
    return compact.style.apply(lambda _: np.where(mask, "font-weight: bold", ""), axis=None)

