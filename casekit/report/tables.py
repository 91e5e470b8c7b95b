"""Tables I–III of the paper and the data behind Figures 4–11, built from the experiment runners' rows.

Every builder takes the ``maps`` table of :mod:`casekit.study.experiments` (or a :class:`~casekit.experiments.Results`)
and returns pandas DataFrames: a *full* long frame with every number (n, excluded NaNs, medians with their
bootstrap CI, raw and Holm-adjusted p, verdicts, effect sizes) and a compact *paper-shaped* frame with the
p-values written as in the paper (:func:`casekit.evaluation.stats.format_p`).  Rows follow the paper's order (methods
alphabetically by their display names: AblationCAM, CASE, Grad-CAM, Grad-CAM++, LayerCAM, ScoreCAM; models
ConvNeXt, DenseNet, ResNet, VGG).

:func:`claims` checks the paper's statements against a run and reports what the data says.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..cam.engine import DISPLAY_NAMES, METHODS
from ..study.experiments import Results, agreement_rows, fidelity_rows, kcol
from ..evaluation.metrics import class_mean_active_channels
from ..evaluation.stats import class_sensitivity_test, format_p, holm, paired_fidelity_test

__all__ = [
    "MODEL_NAMES",
    "PAPER_METHOD_ORDER",
    "model_display",
    "table1_full",
    "table1",
    "table2_full",
    "table2",
    "table3_full",
    "table3",
    "bold",
    "seed_agreement",
    "class_active_channels",
    "agreement_histogram",
    "deletion_curves",
    "evidence_table",
    "claims",
]

#: Display names of the demo families and the paper's models (the paper's column headers).
MODEL_NAMES: dict[str, str] = {
    "resnet": "ResNet", "vgg": "VGG", "densenet": "DenseNet", "convnext": "ConvNeXt",
    "resnet50": "ResNet", "vgg19_bn": "VGG", "densenet201": "DenseNet", "convnext_large": "ConvNeXt",
    "densenet201-cifar100": "DenseNet (CIFAR-100)",
}
#: The paper's row order: display names sorted alphabetically.
PAPER_METHOD_ORDER: tuple[str, ...] = tuple(sorted(METHODS, key=lambda m: DISPLAY_NAMES[m]))
BASELINES: tuple[str, ...] = tuple(m for m in METHODS if m != "case")


def model_display(model: str) -> str:
    """``"densenet"`` → ``"DenseNet"``; unknown names are returned unchanged."""
    return MODEL_NAMES.get(model, model)


def _frame(data: Any, table: str) -> pd.DataFrame:
    """``data.<table>`` of a :class:`Results`, or ``data`` itself when it already is that DataFrame."""
    if isinstance(data, Results):
        return getattr(data, table)
    if isinstance(data, pd.DataFrame):
        return data
    raise TypeError(f"expected the {table} DataFrame of a run or a Results object, got {type(data).__name__}")


def _maps(data: Any) -> pd.DataFrame:
    return _frame(data, "maps")


def _sparsity(data: Any) -> pd.DataFrame:
    return _frame(data, "sparsity")


def _method_rank(m: str) -> int:
    return PAPER_METHOD_ORDER.index(m) if m in PAPER_METHOD_ORDER else len(PAPER_METHOD_ORDER)


def _sort(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Sort by display model name, then the other columns, methods in the paper's order."""
    keys = []
    tmp = df.copy()
    for c in cols:
        if c == "method":
            tmp["_m"] = tmp["method"].map(_method_rank)
            keys.append("_m")
        elif c == "model":
            tmp["_d"] = tmp["model"].map(model_display)
            keys += ["_d", "model"]
        else:
            keys.append(c)
    return tmp.sort_values(keys, kind="mergesort").drop(columns=[k for k in ("_m", "_d") if k in tmp]).reset_index(drop=True)


def _verdict(row: Mapping[str, Any]) -> str:
    if row["reason"]:
        return f"no test ({row['reason']})"
    return "class-sensitive" if row["reject"] else "not shown class-sensitive"


# ----------------------------------------------------------------------------------------------- RQ1


def _sensitivity(agree: pd.DataFrame, groups: Sequence[str], threshold: float, alpha: float, n_boot: int,
                 seed: int) -> pd.DataFrame:
    """One class-sensitivity test per group of agreement rows, with Holm's correction over all groups."""
    if agree.empty:
        raise ValueError("no agreement rows match the selection (wrong model, layer, seed or comparison?)")
    rows = []
    for key, g in agree.groupby(list(groups), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        dup = g["image_id"].duplicated()
        if dup.any():
            raise ValueError(f"image ids repeat within {dict(zip(groups, key))}: {g.loc[dup, 'image_id'].tolist()[:5]}; "
                             "one agreement per image is expected (mixing two runs?)")
        r = class_sensitivity_test(g["agreement"].to_numpy(float), threshold=threshold, alpha=alpha,
                                   n_boot=n_boot, seed=seed).as_row()
        r.update(dict(zip(groups, key)))
        r["n_degenerate"] = int(g["degenerate"].sum()) if "degenerate" in g else 0
        rows.append(r)
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p"].to_numpy(float))
    out["reject_holm"] = out["p_holm"] < alpha
    out["verdict"] = [_verdict(r) for r in out.to_dict("records")]
    out["Method"] = out["method"].map(DISPLAY_NAMES)
    out["Model"] = out["model"].map(model_display)
    out["p_fmt"] = out["p"].map(format_p)
    out["p_holm_fmt"] = out["p_holm"].map(format_p)
    front = [*groups, "Model", "Method", "n", "n_excluded", "n_degenerate", "n_zero", "median", "ci_low", "ci_high",
             "p", "p_fmt", "p_holm", "p_holm_fmt", "reject", "reject_holm", "verdict"]
    return out[front + [c for c in out.columns if c not in front]]


def table1_full(data: Any, *, layer: str = "final_conv", seed: int = 0, comparison: str = "top1_vs_top2",
                threshold: float = 0.5, alpha: float = 0.05, models: Sequence[str] | None = None,
                methods: Sequence[str] | None = None, n_boot: int = 10_000, boot_seed: int = 0) -> pd.DataFrame:
    """Table I, long: one row per (model, method) with the one-sided Wilcoxon test of ``agreement − threshold``
    (H1: median below it; default threshold 0.5 = the paper's, the reference code used 0.7), n, NaNs excluded
    (constant maps), median agreement and its 95 % bootstrap CI, p, Holm-adjusted p over the whole table and
    the verdicts (``reject`` at ``alpha`` from the raw p, as the paper; ``reject_holm`` after correction)."""
    agree = agreement_rows(_maps(data), layer=layer, seed=seed, comparison=comparison, model=models, method=methods)
    out = _sensitivity(agree, ["model", "layer", "seed", "method"], threshold, alpha, n_boot, boot_seed)
    out.insert(3, "comparison", comparison)
    return _sort(out, ["model", "method"])


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


def table2_full(data: Any, *, model: str = "densenet", layers: Sequence[str] = ("final_conv", "norm5"), seed: int = 0,
                comparison: str = "top1_vs_top2", threshold: float = 0.5, alpha: float = 0.05,
                methods: Sequence[str] | None = None, n_boot: int = 10_000, boot_seed: int = 0) -> pd.DataFrame:
    """Table II, long: the class-sensitivity test of one model at several layers (default DenseNet's final
    convolution vs ``norm5``); columns as :func:`table1_full`, Holm over this table."""
    maps = _maps(data)
    missing = [l for l in layers if not ((maps["model"] == model) & (maps["layer"] == l)).any()]
    if missing:
        raise ValueError(f"no results for {model!r} at layer(s) {missing}; have layers "
                         f"{sorted(maps.loc[maps['model'] == model, 'layer'].unique())}")
    agree = agreement_rows(maps, model=model, layer=list(layers), seed=seed, comparison=comparison, method=methods)
    out = _sensitivity(agree, ["model", "layer", "seed", "method"], threshold, alpha, n_boot, boot_seed)
    out.insert(3, "comparison", comparison)
    out = _sort(out, ["method"])  # methods in the paper's order, then layers in the given order (stable)
    return out.sort_values("layer", key=lambda s: s.map(list(layers).index), kind="mergesort").reset_index(drop=True)


def table2(data: Any = None, *, full: pd.DataFrame | None = None, **options: Any) -> pd.DataFrame:
    """Table II as in the paper: p per method × layer (the paper shows the ``norm5`` column)."""
    full = full if full is not None else table2_full(data, **options)
    cols = list(dict.fromkeys(full["layer"]))
    return _pivot_p(full, "layer")[cols]


# ----------------------------------------------------------------------------------------------- RQ2


def table3_full(data: Any, *, k: float | None = None, drop: str = "relative", layer: str = "final_conv",
                seed: int = 0, alpha: float = 0.05, models: Sequence[str] | None = None,
                methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Table III, long: mean and SD of each method's confidence drop and the paired t-test against CASE on
    the same images (paired by image id, checked): ``p_one_sided`` (H1: CASE's mean drop is higher, the
    paper's text) and ``p_two_sided`` (the reference code, which the paper's numbers match), ``d_z`` (mean of
    CASE − method over its SD), ``n`` pairs, ``n_constant`` top-1 maps without a top-k set (nothing blanked,
    drop 0), and ``highest`` (the highest mean drop of the model, bold in the paper).

    ``drop``: ``"relative"`` = ``max(p_before − p_after, 0) / p_before`` (the reference code's score) or
    ``"absolute"`` = ``p_before − p_after``; ``k``: the blanked fraction (default each run's ``fidelity_k``).
    """
    if drop not in ("relative", "absolute"):
        raise ValueError(f"drop must be 'relative' or 'absolute', got {drop!r}")
    col = "relative_drop" if drop == "relative" else "drop"
    fid = fidelity_rows(_maps(data), k=k, layer=layer, seed=seed, model=models, method=methods)
    if fid.empty:
        raise ValueError("no fidelity rows match the selection (was RQ2 run for this layer and seed?)")
    rows = []
    for model, g in fid.groupby("model", sort=False):
        case = g[g["method"] == "case"]
        if case.empty:
            raise ValueError(f"Table III compares every method with CASE, but {model!r} has no CASE rows")
        for method, gm in g.groupby("method", sort=False):
            test = paired_fidelity_test(gm[col].to_numpy(float), case[col].to_numpy(float),
                                        gm["image_id"].to_numpy(), case["image_id"].to_numpy(), alpha=alpha).as_row()
            r = {"model": model, "layer": layer, "seed": seed, "method": method, "n": test["n"],
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
    front = ["model", "layer", "seed", "method", "Model", "Method", "n", "mean", "sd", "p_one_sided", "p_two_sided",
             "d_z", "highest", "case_higher", "two_sided_verdict", "n_constant"]
    out = out[front + [c for c in out.columns if c not in front]]
    return _sort(out, ["model", "method"])


def _num(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    text = f"{x:.{digits}f}"
    return text.replace("0.", ".", 1) if text.startswith("0.") else text.replace("-0.", "-.", 1)


def table3(data: Any = None, *, full: pd.DataFrame | None = None, **options: Any) -> pd.DataFrame:
    """Table III as in the paper: per model, Mean | SD | p (one-sided) | p (two-sided) of the confidence drop,
    methods as rows; numbers as the paper writes them (``.1696``; p via :func:`casekit.evaluation.stats.format_p`)."""
    full = full if full is not None else table3_full(data, **options)
    parts = {}
    for model in dict.fromkeys(full["Model"]):
        g = full[full["Model"] == model].set_index("Method")
        parts[model] = pd.DataFrame({"Mean": g["mean"].map(_num), "SD": g["sd"].map(_num),
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


# ----------------------------------------------------------------------------------------------- figures


def seed_agreement(data: Any, *, model: str = "densenet", layer: str = "final_conv",
                   comparison: str = "top1_vs_top2", threshold: float = 0.5, alpha: float = 0.05,
                   n_boot: int = 2_000) -> pd.DataFrame:
    """Figure 4's data: per seed and method the mean (and SD, median) agreement and the class-sensitivity
    test's p and verdict (Holm over all seeds and methods)."""
    agree = agreement_rows(_maps(data), model=model, layer=layer, comparison=comparison)
    if agree.empty:
        raise ValueError(f"no agreement rows for {model!r} at {layer!r}")
    out = _sensitivity(agree, ["model", "layer", "seed", "method"], threshold, alpha, n_boot, 0)
    stats = agree.groupby(["seed", "method"])["agreement"].agg(mean="mean", sd="std").reset_index()
    out = out.merge(stats, on=["seed", "method"], how="left")
    return _sort(out, ["seed", "method"])


def class_active_channels(data: Any, **filters: Any) -> pd.DataFrame:
    """Figures 5–6's data: per (model, seed, layer, class) the mean number of active channels over the
    run's (correctly classified) images, also as a fraction of the layer's channels."""
    sp = _sparsity(data)
    for col, value in filters.items():
        if value is not None:
            sp = sp[sp[col].isin(value if isinstance(value, (list, tuple, set)) else [value])]
    if sp.empty:
        raise ValueError("no sparsity rows match the selection")
    parts = []
    for (model, seed, layer), g in sp.groupby(["model", "seed", "layer"], sort=True):
        if g["n_channels"].nunique() != 1 or g["tau"].nunique() != 1:
            raise ValueError(f"{model} seed {seed} {layer}: rows with different channel counts or τ")
        per = class_mean_active_channels(g["active_channels"].to_numpy(), g["label"].to_numpy())
        per.insert(0, "layer", layer)
        per.insert(0, "seed", seed)
        per.insert(0, "model", model)
        per["n_channels"] = int(g["n_channels"].iloc[0])
        per["fraction_active"] = per["mean_active_channels"] / per["n_channels"]
        per["tau"] = float(g["tau"].iloc[0])
        per["layer_name"] = g["layer_name"].iloc[0]
        parts.append(per)
    out = pd.concat(parts, ignore_index=True)
    out["Model"] = out["model"].map(model_display)
    return out


def agreement_histogram(data: Any, *, bin_width: float = 0.05, comparison: str = "top1_vs_top2",
                        **filters: Any) -> pd.DataFrame:
    """Figures 7–11's data: counts of agreement values in bins of ``bin_width`` (5 %: [0, .05), …, [.95, 1])
    per (model, seed, layer, method), plus the NaNs left out (``n_excluded`` on every row of a group)."""
    n_bins = round(1 / bin_width)
    if not math.isclose(n_bins * bin_width, 1.0):
        raise ValueError(f"bin_width must divide 1 (e.g. 0.05), got {bin_width}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    agree = agreement_rows(_maps(data), comparison=comparison, **filters)
    rows = []
    for (model, seed, layer, method), g in agree.groupby(["model", "seed", "layer", "method"], sort=False):
        v = g["agreement"].to_numpy(float)
        counts = np.histogram(v[~np.isnan(v)], bins=edges)[0]
        for i, c in enumerate(counts):
            rows.append({"model": model, "seed": seed, "layer": layer, "method": method, "bin_low": edges[i],
                         "bin_high": edges[i + 1], "count": int(c), "n_excluded": int(np.isnan(v).sum())})
    return _sort(pd.DataFrame(rows), ["model", "seed", "layer", "method", "bin_low"])


def deletion_curves(data: Any, *, layer: str = "final_conv", seed: int = 0, **filters: Any) -> pd.DataFrame:
    """Mean deletion curves: per (model, method, k) the mean and standard error of the relative drop and the
    mean probability left, over the run's images, and each method's mean normalised area."""
    fid = fidelity_rows(_maps(data), layer=layer, seed=seed, **filters)
    if fid.empty:
        raise ValueError("no fidelity rows match the selection")
    ks = sorted(float(c.removeprefix("relative_drop_")) / 100 for c in fid.columns
                if c.startswith("relative_drop_") and fid[c].notna().any())
    rows = []
    for (model, method), g in fid.groupby(["model", "method"], sort=False):
        for k in ks:
            rd = g[f"relative_drop_{kcol(k)}"].to_numpy(float)
            pa = g[f"p_after_{kcol(k)}"].to_numpy(float)
            rows.append({"model": model, "method": method, "k": k, "n": len(rd), "mean_relative_drop": rd.mean(),
                         "sem_relative_drop": rd.std(ddof=1) / math.sqrt(len(rd)) if len(rd) > 1 else math.nan,
                         "mean_p_after": pa.mean(), "mean_area": g["deletion_area"].mean()})
    out = _sort(pd.DataFrame(rows), ["model", "method", "k"])
    out["Method"] = out["method"].map(DISPLAY_NAMES)
    out["Model"] = out["model"].map(model_display)
    return out


def evidence_table(data: Any, *, layer: str = "final_conv", seed: int = 0) -> pd.DataFrame:
    """The demo benchmark's ground truth: per (model, method, target) the mean fraction of a map's top-k
    pixels on the true class's unique part and on its group's shared part (NaN-free maps only), with n and
    the number of constant maps left out."""
    maps = _maps(data)
    maps = maps[(maps["layer"] == layer) & (maps["seed"] == seed)]
    if maps["unique_evidence"].notna().sum() == 0:
        raise ValueError("the results hold no evidence scores (the data has no part masks)")
    g = maps.groupby(["model", "method", "target"], sort=False)
    out = g.agg(n=("image_id", "size"), n_excluded=("unique_evidence", lambda s: int(s.isna().sum())),
                unique_evidence=("unique_evidence", "mean"), shared_evidence=("shared_evidence", "mean")).reset_index()
    out["Method"] = out["method"].map(DISPLAY_NAMES)
    out["Model"] = out["model"].map(model_display)
    return _sort(out, ["model", "method", "target"])


# ----------------------------------------------------------------------------------------------- claims


def _claim(section: str, claim: str, paper: str, this_run: str, supported: bool | None) -> dict[str, Any]:
    return {"section": section, "claim": claim, "paper says": paper, "this run": this_run, "supported": supported}


def _ptext(p: float) -> str:
    """``"p < .0001"`` or ``"p = .0123"``."""
    s = format_p(p)
    return f"p {s}" if s.startswith("<") else f"p = {s}"


def _pct(x: float) -> str:
    return "NaN" if x is None or math.isnan(x) else f"{x:.1%}"


def claims(data: Any, sparsity: pd.DataFrame | None = None, *, threshold: float = 0.5, alpha: float = 0.05,
           layer: str = "final_conv", alt_layer: str = "norm5", sparse_model: str = "densenet",
           nearly_all: float = 0.9, n_boot: int = 2_000, sections: Iterable[str] | None = None) -> pd.DataFrame:
    """Each paper claim the notebooks discuss, checked against this run → rows ``section, claim, paper says,
    this run, supported`` (``True``/``False``; ``None`` when the run lacks the data).

    The criteria are fixed here, stated in each row, and never adjusted to the outcome:

    - RQ1: CASE rejects H0 on every model; CASE's median agreement is the lowest of all methods on every model;
      DenseNet has the most rejections and at least 5 of 6 methods reject.
    - seeds: every method rejects H0 on every DenseNet seed; the methods' order by mean agreement is stable
      across seeds (mean pairwise Spearman ρ ≥ 0.8).
    - sparsity: DenseNet's final conv has fewer active channels (median over classes) than every other family's
      attribution layer — in absolute numbers (the paper's measure) and as a fraction of the layer's channels;
      ``norm5`` activates nearly all channels (median class ≥ ``nearly_all`` of them).
    - norm5: at least 3 of the 5 baselines fail to reject H0 at ``norm5``; CASE still rejects there.
    - fidelity: CASE's drop is comparable to the baselines: on every model at most 2 of 5 baselines have a
      significantly higher mean drop than CASE (two-sided p < alpha, the paper's own reading of its Table III).
    """
    maps = _maps(data)
    if sparsity is None and isinstance(data, Results):
        sparsity = data.sparsity
    want = set(sections) if sections is not None else {"RQ1", "seeds", "sparsity", "norm5", "fidelity"}
    rows: list[dict[str, Any]] = []

    # RQ1 -------------------------------------------------------------------------------------------
    if "RQ1" in want:
        try:
            t1 = table1_full(maps, layer=layer, threshold=threshold, alpha=alpha, n_boot=n_boot)
        except ValueError:
            t1 = None
        paper = "CASE rejects H0 (median agreement ≥ 50 %) on all four models, p < .0001"
        if t1 is None or not (t1["method"] == "case").any():
            rows.append(_claim("RQ1", "CASE rejects H0 on every model", paper, "no CASE results", None))
        else:
            c = t1[t1["method"] == "case"]
            txt = "; ".join(f"{r.Model}: {_ptext(r.p)}, median {_pct(r.median)}" for r in c.itertuples())
            rows.append(_claim("RQ1", "CASE rejects H0 on every model", paper, txt, bool(c["reject"].all())))
            lows = []
            for model, g in t1.groupby("model", sort=False):
                others = g[g["method"] != "case"]["median"]
                cm = float(g[g["method"] == "case"]["median"].iloc[0])
                lows.append((model_display(model), cm, float(others.min()) if len(others) else math.nan))
            ok = all(cm < om for _, cm, om in lows) if all(not math.isnan(om) for _, _, om in lows) else None
            rows.append(_claim("RQ1", "CASE has the lowest median agreement on every model",
                               "CASE consistently produces lower top-k overlap between class labels than the baselines",
                               "; ".join(f"{m}: CASE {_pct(cm)} vs lowest baseline {_pct(om)}" for m, cm, om in lows), ok))
        if t1 is not None and sparse_model in set(t1["model"]):
            counts = t1.groupby("model")["reject"].sum()
            n_methods = t1.groupby("model")["method"].size()
            dn = int(counts[sparse_model])
            best = dn >= int(counts.max())
            ok = bool(best and dn >= 5 and n_methods[sparse_model] == 6)
            rows.append(_claim("RQ1", "DenseNet is the most class-sensitive architecture (≥ 5 of 6 methods reject, "
                               "and no family has more rejections)",
                               "nearly all methods reject on DenseNet (6 of 6 in Table I), fewer on the others",
                               ", ".join(f"{model_display(m)}: {int(v)}/{int(n_methods[m])}" for m, v in counts.items()),
                               ok if n_methods[sparse_model] == 6 else None))
        else:
            rows.append(_claim("RQ1", "DenseNet is the most class-sensitive architecture",
                               "nearly all methods reject on DenseNet (6 of 6 in Table I), fewer on the others",
                               f"no {sparse_model!r} results at {layer!r}", None))

    # seeds -----------------------------------------------------------------------------------------
    if "seeds" in want:
        seeds = maps.loc[(maps["model"] == sparse_model) & (maps["layer"] == layer), "seed"].unique()
        if len(seeds) < 2:
            rows.append(_claim("seeds", "every method rejects H0 on every seed",
                               "all methods reject on all five seeds (DenseNet-201, CIFAR-100)",
                               f"{len(seeds)} seed(s) in this run", None))
            rows.append(_claim("seeds", "the methods' ranking is stable across seeds",
                               "relative rankings of the methods remain consistent across seeds",
                               f"{len(seeds)} seed(s) in this run", None))
        else:
            sa = seed_agreement(maps, model=sparse_model, layer=layer, threshold=threshold, alpha=alpha, n_boot=n_boot)
            fails = sa[~sa["reject"]]
            txt = (f"{int(sa['reject'].sum())} of {len(sa)} (seed, method) tests reject"
                   + (": fails " + ", ".join(f"{r.Method} seed {r.seed}" for r in fails.itertuples()) if len(fails) else ""))
            rows.append(_claim("seeds", "every method rejects H0 on every seed",
                               "all methods reject on all five seeds (DenseNet-201, CIFAR-100)", txt,
                               bool(sa["reject"].all())))
            wide = sa.pivot(index="method", columns="seed", values="mean")
            rho = wide.corr(method="spearman").to_numpy()
            iu = np.triu_indices_from(rho, 1)
            mean_rho = float(np.nanmean(rho[iu])) if len(iu[0]) else math.nan
            rows.append(_claim("seeds", "the methods' ranking is stable across seeds (mean pairwise Spearman ρ ≥ 0.8)",
                               "relative rankings of the methods remain consistent across seeds",
                               f"mean pairwise Spearman ρ of the methods' mean agreement = {mean_rho:.2f} "
                               f"over {len(seeds)} seeds", None if math.isnan(mean_rho) else bool(mean_rho >= 0.8)))

    # sparsity --------------------------------------------------------------------------------------
    if "sparsity" in want:
        if sparsity is None or len(sparsity) == 0:
            rows.append(_claim("sparsity", "DenseNet's final conv is sparser than the other families' layers",
                               "fewer than 20 active channels per class vs several hundred", "no sparsity results", None))
            rows.append(_claim("sparsity", "norm5 activates nearly all channels",
                               "nearly all channels active at norm5 (KDE peak ≈ 1050 of 1920)", "no sparsity results", None))
        else:
            cac = class_active_channels(sparsity, seed=0)
            med = cac.groupby(["model", "layer"]).agg(median=("mean_active_channels", "median"),
                                                       frac=("fraction_active", "median"),
                                                       n_channels=("n_channels", "first")).reset_index()
            final = med[med["layer"] == layer].set_index("model")
            if sparse_model in final.index and len(final) > 1:
                d = final.loc[sparse_model]
                others = final.drop(index=sparse_model)
                txt_abs = (f"{model_display(sparse_model)}: {d['median']:.1f} of {int(d['n_channels'])} channels; "
                           + ", ".join(f"{model_display(m)}: {r['median']:.1f} of {int(r['n_channels'])}"
                                       for m, r in others.iterrows()))
                rows.append(_claim("sparsity", "DenseNet's final conv has fewer active channels than the other "
                                   "families' attribution layers (median class, absolute count)",
                                   "fewer than 20 active channels per class vs several hundred (τ = 0.001)",
                                   txt_abs, bool((d["median"] < others["median"]).all())))
                txt_frac = (f"{model_display(sparse_model)}: {_pct(d['frac'])}; "
                            + ", ".join(f"{model_display(m)}: {_pct(r['frac'])}" for m, r in others.iterrows()))
                rows.append(_claim("sparsity", "… and also as a fraction of the layer's channels",
                                   "(the paper compares absolute counts of layers of different widths)",
                                   txt_frac, bool((d["frac"] < others["frac"]).all())))
            else:
                rows.append(_claim("sparsity", "DenseNet's final conv is sparser than the other families' layers",
                                   "fewer than 20 active channels per class vs several hundred",
                                   "needs the final-conv sparsity of DenseNet and at least one other family", None))
            alt = med[(med["model"] == sparse_model) & (med["layer"] == alt_layer)]
            if len(alt):
                a = alt.iloc[0]
                rows.append(_claim("sparsity", f"norm5 activates nearly all channels (median class ≥ {nearly_all:.0%})",
                                   "nearly all channels active at norm5 (KDE peak ≈ 1050 of 1920)",
                                   f"median class: {a['median']:.1f} of {int(a['n_channels'])} channels ({_pct(a['frac'])})",
                                   bool(a["frac"] >= nearly_all)))
            else:
                rows.append(_claim("sparsity", "norm5 activates nearly all channels",
                                   "nearly all channels active at norm5", "no norm5 sparsity results", None))

    # norm5 -----------------------------------------------------------------------------------------
    if "norm5" in want:
        try:
            t2 = table2_full(maps, model=sparse_model, layers=(layer, alt_layer), threshold=threshold, alpha=alpha,
                             n_boot=n_boot)
        except ValueError:
            t2 = None
        if t2 is None:
            rows.append(_claim("norm5", "most baselines fail to reject H0 at norm5",
                               "4 of 5 baselines fail at norm5 (only ScoreCAM rejects)", "no norm5 results", None))
            rows.append(_claim("norm5", "CASE still rejects H0 at norm5", "CASE: p < 0.0001 at norm5",
                               "no norm5 results", None))
        else:
            n5 = t2[t2["layer"] == alt_layer]
            base = n5[n5["method"].isin(BASELINES)]
            fail = base[~base["reject"]]
            rows.append(_claim("norm5", "most baselines fail to reject H0 at norm5 (≥ 3 of 5)",
                               "4 of 5 baselines fail at norm5 (only ScoreCAM rejects)",
                               f"{len(fail)} of {len(base)} baselines fail: "
                               + ", ".join(f"{r.Method} {_ptext(r.p)}" for r in base.itertuples()),
                               bool(len(fail) >= 3) if len(base) == 5 else None))
            c = n5[n5["method"] == "case"]
            rows.append(_claim("norm5", "CASE still rejects H0 at norm5", "CASE: p < 0.0001 at norm5",
                               f"CASE {_ptext(c['p'].iloc[0])}, median {_pct(c['median'].iloc[0])}" if len(c)
                               else "no CASE results", bool(c["reject"].iloc[0]) if len(c) else None))

    # fidelity --------------------------------------------------------------------------------------
    if "fidelity" in want:
        try:
            t3 = table3_full(maps, layer=layer, alpha=alpha)
        except ValueError:
            t3 = None
        if t3 is None:
            rows.append(_claim("fidelity", "CASE's fidelity is comparable to the baselines",
                               "CASE performs on par with the baselines", "no fidelity results with CASE", None))
        else:
            parts, ok = [], True
            for model, g in t3.groupby("model", sort=False):
                better = g[g["two_sided_verdict"] == "method significantly higher"]
                worse = g[g["two_sided_verdict"] == "CASE significantly higher"]
                ok &= len(better) <= 2
                parts.append(f"{model_display(model)}: CASE {_num(float(g.loc[g['method'] == 'case', 'mean'].iloc[0]))}, "
                             f"{len(better)} baseline(s) significantly higher"
                             + (f" ({', '.join(better['Method'])})" if len(better) else "")
                             + f", {len(worse)} significantly lower")
            rows.append(_claim("fidelity", "CASE's fidelity is comparable to the baselines (on every model at most "
                               "2 of 5 baselines have a significantly higher mean drop, two-sided p < .05)",
                               "on par overall: no baseline differs on DenseNet and ResNet; on VGG some baselines "
                               "drop more", "; ".join(parts), bool(ok)))
    out = pd.DataFrame(rows, columns=["section", "claim", "paper says", "this run", "supported"])
    # True / False / None as Python objects (a bool column would turn None into False or NaN)
    out["supported"] = pd.Series([None if r["supported"] is None else bool(r["supported"]) for r in rows],
                                 index=out.index, dtype=object)
    return out


# =============================================================================================== notebooks 04–07
# Sparsity (04), norm5 (05), fidelity (06) and the appendix histograms (07): sparsity next to class
# sensitivity, the two DenseNet layers side by side, Table III cell by cell against the paper, the paired
# differences behind it, the histograms' summary, and the claims each of these chapters checks.  Additive block.

import itertools as _itertools  # noqa: E402

from scipy import stats as _sps  # noqa: E402

#: Layer roles in reading order: the paper's attribution layer (the final convolution) first.
LAYER_ORDER: tuple[str, ...] = ("final_conv", "norm5")
#: The paper's appendix order of the families (Figures 7–10), then anything else by display name.
APPENDIX_ORDER: tuple[str, ...] = ("VGG", "ResNet", "ConvNeXt", "DenseNet")

#: Table III of the paper (ImageNet): per model and method the mean and SD of the confidence drop and the p of
#: the paired t-test against CASE as printed (two-sided, as the reference code ran it; ``0.0`` = "< .0001").
PAPER_TABLE3: dict[str, dict[str, tuple[float, float, float]]] = {
    "ConvNeXt": {"AblationCAM": (.1696, .2409, .00568), "CASE": (.2052, .3042, math.nan),
                 "Grad-CAM": (.1919, .2758, .3544), "Grad-CAM++": (.1872, .286, .22602),
                 "LayerCAM": (.1686, .2783, .00988), "ScoreCAM": (.2059, .3104, .9665)},
    "DenseNet": {"AblationCAM": (.1140, .2272, .65943), "CASE": (.1163, .2274, math.nan),
                 "Grad-CAM": (.1131, .2226, .53783), "Grad-CAM++": (.1244, .2417, .13240),
                 "LayerCAM": (.1248, .2393, .10838), "ScoreCAM": (.1248, .2366, .10598)},
    "ResNet": {"AblationCAM": (.1339, .2532, .21707), "CASE": (.1411, .2561, math.nan),
               "Grad-CAM": (.136, .2501, .37022), "Grad-CAM++": (.1395, .2584, .78072),
               "LayerCAM": (.1405, .2603, .92128), "ScoreCAM": (.1349, .2536, .28969)},
    "VGG": {"AblationCAM": (.1354, .2473, .51132), "CASE": (.1317, .2420, math.nan),
            "Grad-CAM": (.1328, .2433, .84450), "Grad-CAM++": (.1020, .2096, 0.0),
            "LayerCAM": (.1539, .2650, 0.0), "ScoreCAM": (.1473, .2590, .00645)},
}


def _layer_rank(layer: str) -> int:
    return LAYER_ORDER.index(layer) if layer in LAYER_ORDER else len(LAYER_ORDER)


def _sort_layers(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """:func:`_sort` with the layers in :data:`LAYER_ORDER` (final convolution before ``norm5``)."""
    tmp = df.assign(_l=df["layer"].map(_layer_rank))
    return _sort(tmp, [("_l" if c == "layer" else c) for c in cols]).drop(columns="_l")


def _spearman(x: Any, y: Any, exact_max: int = 8) -> tuple[float, float, int]:
    """Spearman's ρ of the finite pairs of ``x`` and ``y`` with a two-sided p → ``(rho, p, n)``.

    For ``n ≤ exact_max`` the p-value is exact (all ``n!`` pairings of the ranks); above, scipy's. With fewer
    than 3 pairs, or a constant side, ρ is undefined: ``(nan, nan, n)`` (no warning)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, n
    rx, ry = _sps.rankdata(x), _sps.rankdata(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if n <= exact_max:
        perms = np.array(list(_itertools.permutations(ry)))  # every pairing of the ranks (n! ≤ 40320)
        cx, cp = rx - rx.mean(), perms - perms.mean(axis=1, keepdims=True)
        rhos = cp @ cx / (np.linalg.norm(cp, axis=1) * np.linalg.norm(cx))
        p = float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))
    else:
        p = float(_sps.spearmanr(x, y).pvalue)
    return rho, p, n


def sparsity_summary(data: Any, **filters: Any) -> pd.DataFrame:
    """Figures 5–6 in numbers: per (model, seed, layer) the layer's width, τ, the classes and images, and the
    spread over classes of the per-class mean number of active channels (:func:`class_active_channels`):
    ``median_active``, ``min_active``, ``max_active`` and the same as a fraction of the layer's channels
    (``median_fraction`` …).  A channel is active on an image when its spatial mean exceeds τ."""
    cac = class_active_channels(data, **filters)
    out = cac.groupby(["model", "seed", "layer"], sort=False).agg(
        layer_name=("layer_name", "first"), n_channels=("n_channels", "first"), tau=("tau", "first"),
        n_classes=("label", "size"), n_images=("n_images", "sum"),
        median_active=("mean_active_channels", "median"), min_active=("mean_active_channels", "min"),
        max_active=("mean_active_channels", "max"), median_fraction=("fraction_active", "median"),
        min_fraction=("fraction_active", "min"), max_fraction=("fraction_active", "max")).reset_index()
    out.insert(3, "Model", out["model"].map(model_display))
    return _sort_layers(out, ["model", "seed", "layer"])


def sparsity_sensitivity(data: Any, sparsity: pd.DataFrame | None = None, *, seed: int = 0,
                         comparison: str = "top1_vs_top2", threshold: float = 0.5, alpha: float = 0.05,
                         models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                         n_boot: int = 2_000, boot_seed: int = 0) -> pd.DataFrame:
    """Sparsity next to class sensitivity: one row per (model, layer, method) for every layer with both
    active-channel counts and agreement rows.

    Columns: the layer's sparsity (``n_channels``, ``median_active``, ``median_fraction`` over classes, from
    :func:`sparsity_summary`), the method's class-sensitivity test at that layer (as :func:`table1_full`:
    ``n``, ``n_excluded``, ``median`` agreement and CI, ``p``, ``reject``; Holm over this table) and, within the
    layer, Spearman's ρ between an image's active-channel count and its agreement (``rho_images``,
    ``p_rho_images``, ``n_rho``: NaN with fewer than 3 images or no spread)."""
    maps = _maps(data)
    if sparsity is None:
        if not isinstance(data, Results):
            raise TypeError("pass the sparsity table too when data is a maps DataFrame (or pass a Results object)")
        sparsity = data.sparsity
    sp = _sparsity(sparsity)
    sp = sp[sp["seed"] == seed] if len(sp) else sp
    if models is not None:
        sp = sp[sp["model"].isin(list(models))]
    if sp.empty:
        raise ValueError(f"no sparsity rows for seed {seed}" + (f" and models {list(models)}" if models else ""))
    summary = sparsity_summary(sp)
    agree = agreement_rows(maps, seed=seed, comparison=comparison, model=models, method=methods)
    have = summary[["model", "seed", "layer"]]
    agree = agree.merge(have, on=["model", "seed", "layer"], how="inner")
    if agree.empty:
        raise ValueError("no agreement rows at the layers whose active channels were counted")
    out = _sensitivity(agree, ["model", "layer", "seed", "method"], threshold, alpha, n_boot, boot_seed)
    out = out.merge(summary[["model", "seed", "layer", "layer_name", "n_channels", "tau", "median_active",
                             "median_fraction"]], on=["model", "seed", "layer"], how="left")
    per_image = agree.merge(sp[["model", "seed", "layer", "image_id", "active_channels"]],
                            on=["model", "seed", "layer", "image_id"], how="left")
    rho = {key: _spearman(g["active_channels"], g["agreement"])
           for key, g in per_image.groupby(["model", "layer", "method"], sort=False)}
    keys = list(zip(out["model"], out["layer"], out["method"]))
    out["rho_images"] = [rho[k][0] for k in keys]
    out["p_rho_images"] = [rho[k][1] for k in keys]
    out["n_rho"] = [rho[k][2] for k in keys]
    front = ["model", "layer", "seed", "method", "Model", "Method", "layer_name", "n_channels", "median_active",
             "median_fraction", "n", "n_excluded", "median", "ci_low", "ci_high", "p", "p_fmt", "reject", "verdict",
             "rho_images", "p_rho_images", "n_rho"]
    out = out[front + [c for c in out.columns if c not in front]]
    return _sort_layers(out, ["model", "layer", "method"])


def sparsity_correlation(frame: pd.DataFrame) -> pd.DataFrame:
    """The relation the paper posits (sparser attribution layers → more class-distinct maps), across layers:
    per method, Spearman's ρ between each layer's median fraction of active channels and the method's median
    agreement there (``rho_fraction``, exact two-sided ``p_fraction``), the same with absolute counts
    (``rho_count``, ``p_count``), and the number of layers.  A positive ρ means denser layers give more
    overlapping maps for the two classes.  ``frame`` is :func:`sparsity_sensitivity`."""
    need = {"method", "median", "median_fraction", "median_active", "Model", "layer"}
    if not isinstance(frame, pd.DataFrame) or not need <= set(frame.columns):
        raise ValueError(f"frame must be the table of sparsity_sensitivity (needs columns {sorted(need)})")
    rows = []
    for method, g in frame.groupby("method", sort=False):
        rf, pf, n = _spearman(g["median_fraction"], g["median"])
        rc, pc, _ = _spearman(g["median_active"], g["median"])
        rows.append({"method": method, "Method": DISPLAY_NAMES.get(method, method), "n_layers": n,
                     "rho_fraction": rf, "p_fraction": pf, "rho_count": rc, "p_count": pc,
                     "layers": ", ".join(f"{m} {l}" for m, l in zip(g["Model"], g["layer"]))})
    return _sort(pd.DataFrame(rows), ["method"])


def layer_comparison(data: Any, sparsity: pd.DataFrame | None = None, *, model: str = "densenet",
                     layers: Sequence[str] = ("final_conv", "norm5"), seed: int = 0,
                     comparison: str = "top1_vs_top2", threshold: float = 0.5, alpha: float = 0.05,
                     n_boot: int = 2_000, boot_seed: int = 0) -> pd.DataFrame:
    """Table II with the sparsity of each layer beside it: one row per layer of ``model`` with its width, the
    per-class median of active channels (count and fraction; NaN where none were counted), how many methods
    reject H0 there (and which), CASE's median agreement and p, and the median of the baselines' medians."""
    t2 = table2_full(data, model=model, layers=layers, seed=seed, comparison=comparison, threshold=threshold,
                     alpha=alpha, n_boot=n_boot, boot_seed=boot_seed)
    if sparsity is None and isinstance(data, Results):
        sparsity = data.sparsity
    summ = None
    if sparsity is not None and len(sparsity):
        sp = _sparsity(sparsity)
        sp = sp[(sp["model"] == model) & (sp["seed"] == seed) & sp["layer"].isin(list(layers))]
        summ = sparsity_summary(sp).set_index("layer") if len(sp) else None
    maps = _maps(data)
    sel = maps[(maps["model"] == model) & (maps["seed"] == seed)]
    names = sel.drop_duplicates("layer").set_index("layer")["layer_name"].to_dict()
    rows = []
    for layer in layers:
        g = t2[t2["layer"] == layer]
        case = g[g["method"] == "case"]
        base = g[g["method"] != "case"]
        s = summ.loc[layer] if summ is not None and layer in summ.index else None
        rows.append({
            "model": model, "Model": model_display(model), "layer": layer, "layer_name": names.get(layer, ""),
            "n_channels": int(s["n_channels"]) if s is not None else math.nan,
            "median_active": float(s["median_active"]) if s is not None else math.nan,
            "median_fraction": float(s["median_fraction"]) if s is not None else math.nan,
            "n_methods": len(g), "n_reject": int(g["reject"].sum()),
            "rejecting": ", ".join(g.loc[g["reject"], "Method"]) or "none",
            "case_median": float(case["median"].iloc[0]) if len(case) else math.nan,
            "case_p": float(case["p"].iloc[0]) if len(case) else math.nan,
            "baselines_median": float(base["median"].median()) if len(base) else math.nan,
            "n_images": int(g["n"].max()),
        })
    out = pd.DataFrame(rows)
    out.insert(out.columns.get_loc("case_p") + 1, "case_p_fmt", out["case_p"].map(format_p))
    return out


def fidelity_pairing(data: Any, *, k: float | None = None, layer: str = "final_conv", seed: int = 0,
                     models: Sequence[str] | None = None) -> pd.DataFrame:
    """The pairing check behind Table III, shown: per model the number of methods, the images each method
    was scored on (min and max over methods), whether every method has exactly CASE's image ids (each once),
    and the ids missing on either side (the paired tests refuse to run otherwise)."""
    fid = fidelity_rows(_maps(data), k=k, layer=layer, seed=seed, model=models)
    if fid.empty:
        raise ValueError("no fidelity rows match the selection (was RQ2 run for this layer and seed?)")
    rows = []
    for model, g in fid.groupby("model", sort=False):
        ids = {m: gm["image_id"] for m, gm in g.groupby("method", sort=False)}
        case = set(ids.get("case", pd.Series(dtype=int)))
        dup = any(v.duplicated().any() for v in ids.values())
        mismatch = {m: set(v) ^ case for m, v in ids.items()}
        n = [len(v) for v in ids.values()]
        rows.append({"model": model, "Model": model_display(model), "n_methods": len(ids),
                     "has_case": "case" in ids, "n_images_min": min(n), "n_images_max": max(n),
                     "same_images_as_case": bool("case" in ids and not dup and not any(mismatch.values())),
                     "unpaired_ids": sorted({i for s in mismatch.values() for i in s})[:10]})
    return _sort(pd.DataFrame(rows), ["model"])


def fidelity_differences(data: Any, *, k: float | None = None, drop: str = "relative", layer: str = "final_conv",
                         seed: int = 0, confidence: float = 0.95, models: Sequence[str] | None = None) -> pd.DataFrame:
    """The paired differences behind Table III: per model and baseline the mean of ``CASE − method`` over the
    same images with its ``confidence`` t-interval (``ci_low``, ``ci_high``), ``d_z`` and both p-values (from
    :func:`table3_full`).  Positive = CASE's drop is higher."""
    full = table3_full(data, k=k, drop=drop, layer=layer, seed=seed, models=models)
    col = "relative_drop" if drop == "relative" else "drop"
    fid = fidelity_rows(_maps(data), k=k, layer=layer, seed=seed, model=models)
    rows = []
    for r in full[full["method"] != "case"].itertuples():
        g = fid[fid["model"] == r.model]
        case = g[g["method"] == "case"].set_index("image_id")[col]
        other = g[g["method"] == r.method].set_index("image_id")[col]
        d = (case.reindex(other.index) - other).to_numpy(float)  # ids equal: table3_full checked them
        n = len(d)
        se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        half = float(_sps.t.ppf(0.5 + confidence / 2, n - 1) * se) if n > 1 else math.nan
        mean = float(d.mean()) if n else math.nan
        rows.append({"model": r.model, "method": r.method, "Model": r.Model, "Method": r.Method, "n": n,
                     "mean_diff": mean, "ci_low": mean - half, "ci_high": mean + half, "d_z": r.d_z,
                     "p_one_sided": r.p_one_sided, "p_two_sided": r.p_two_sided, "drop": drop,
                     "fidelity_k": r.fidelity_k})
    return _sort(pd.DataFrame(rows), ["model", "method"])


def _paper_verdict(mean: float, mean_case: float, p: float, alpha: float) -> str:
    if math.isnan(p):
        return "–"
    if p >= alpha:
        return "no significant difference"
    return "method significantly higher" if mean > mean_case else "CASE significantly higher"


def table3_vs_paper(data: Any, *, k: float | None = None, drop: str = "relative", layer: str = "final_conv",
                    seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Table III cell by cell against the paper's: per model and baseline the paper's mean drop (and CASE's)
    and two-sided p with the verdict they imply, this run's, and whether the two verdicts match
    (``no significant difference`` / ``CASE significantly higher`` / ``method significantly higher``, two-sided
    p < ``alpha``).  Models the paper does not have get NaN paper columns."""
    full = table3_full(data, k=k, drop=drop, layer=layer, seed=seed, alpha=alpha)
    rows = []
    for r in full[full["method"] != "case"].itertuples():
        paper = PAPER_TABLE3.get(r.Model, {})
        pm, _, pp = paper.get(r.Method, (math.nan, math.nan, math.nan))
        pc = paper.get("CASE", (math.nan,))[0]
        pv = _paper_verdict(pm, pc, pp, alpha) if paper else "–"
        rows.append({"model": r.model, "method": r.method, "Model": r.Model, "Method": r.Method,
                     "paper_mean": pm, "paper_mean_case": pc, "paper_p": pp, "paper_p_fmt": format_p(pp),
                     "paper_verdict": pv, "mean": r.mean, "mean_case": r.mean_case, "p_two_sided": r.p_two_sided,
                     "p_fmt": format_p(r.p_two_sided), "verdict": r.two_sided_verdict,
                     "same_verdict": (pv == r.two_sided_verdict) if pv != "–" else None})
    out = _sort(pd.DataFrame(rows), ["model", "method"])
    out["same_verdict"] = out["same_verdict"].astype(object)
    return out


def histogram_summary(data: Any, *, threshold: float = 0.5, comparison: str = "top1_vs_top2", seed: int = 0,
                      **filters: Any) -> pd.DataFrame:
    """Figures 7–11 in numbers: per (model, layer, method) the images scored (``n``), the constant maps left
    out (``n_excluded``), the share of images whose agreement is below ``threshold`` (left of the red line) and
    the median agreement."""
    agree = agreement_rows(_maps(data), comparison=comparison, seed=seed, **filters)
    if agree.empty:
        raise ValueError("no agreement rows match the selection")
    rows = []
    for (model, layer, method), g in agree.groupby(["model", "layer", "method"], sort=False):
        v = g["agreement"].to_numpy(float)
        f = v[~np.isnan(v)]
        rows.append({"model": model, "layer": layer, "method": method, "Model": model_display(model),
                     "Method": DISPLAY_NAMES.get(method, method), "layer_name": g["layer_name"].iloc[0],
                     "n": int(f.size), "n_excluded": int(np.isnan(v).sum()),
                     "share_below": float((f < threshold).mean()) if f.size else math.nan,
                     "median": float(np.median(f)) if f.size else math.nan})
    return _sort_layers(pd.DataFrame(rows), ["model", "layer", "method"])


def _pick_model(maps: pd.DataFrame, preferred: str, alternatives: Sequence[str] = ("densenet201",)) -> str:
    """``preferred`` if the run has it, else the first of ``alternatives`` it has (the paper profile's names)."""
    present = set(maps["model"])
    if preferred in present:
        return preferred
    return next((a for a in alternatives if a in present), preferred)


def _relation_claims(ss: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    per_layer = ss.groupby(["model", "layer"], sort=False).agg(
        Model=("Model", "first"), median_active=("median_active", "first"), n_channels=("n_channels", "first"),
        median_fraction=("median_fraction", "first"), n_reject=("reject", "sum"), n_methods=("method", "size"),
        n_tested=("reason", lambda s: int((s == "").sum()))).reset_index()
    label = lambda r: f"{r['Model']} {r['layer']}"  # noqa: E731
    listing = "; ".join(f"{label(r)}: {r['median_active']:.1f} of {int(r['n_channels'])} ({_pct(r['median_fraction'])}), "
                        f"{int(r['n_reject'])}/{int(r['n_methods'])} reject" for _, r in per_layer.iterrows())
    testable = bool((per_layer["n_tested"] > 0).all()) and len(per_layer) > 1
    for measure, col, paper in (
            ("absolute count", "median_active", "DenseNet's final conv, fewer than 20 active channels per class, "
             "gives class-distinct maps with all six methods (Table I)"),
            ("fraction of the layer's channels", "median_fraction", "(the paper compares counts only)")):
        sparsest = per_layer.loc[per_layer[col].idxmin()]
        ok = bool(sparsest["n_reject"] >= per_layer["n_reject"].max()) if testable else None
        rows.append(_claim("sparsity ↔ sensitivity",
                           f"the sparsest attribution layer ({measure}, median class) has the most methods rejecting H0",
                           paper, f"sparsest: {label(sparsest)}. " + listing, ok))
    corr = sparsity_correlation(ss)
    valid = corr.dropna(subset=["rho_fraction"])
    n_pos = int((valid["rho_fraction"] > 0).sum())
    ok = bool(n_pos >= 4) if len(valid) == len(corr) == 6 else None
    rows.append(_claim("sparsity ↔ sensitivity",
                       "denser layers give more overlapping maps: Spearman ρ(fraction of channels active, median "
                       "agreement) over the layers is positive for at least 4 of the 6 methods",
                       "dense activation may obscure class-specific attribution; sparse, selective layers support "
                       "class-distinct maps (Sec. V-B)",
                       f"ρ > 0 for {n_pos} of {len(valid)} methods over {int(corr['n_layers'].max())} layers: "
                       + ", ".join(f"{r.Method} {r.rho_fraction:+.2f}" for r in valid.itertuples()), ok))
    return rows


def _fidelity_claim_rows(maps: pd.DataFrame, k: float | None, layer: str, seed: int, alpha: float) -> list[dict[str, Any]]:
    rows = []
    kt = "the run's k" if k is None else f"k = {k:.0%}"
    for drop in ("relative", "absolute"):
        t3 = table3_full(maps, k=k, drop=drop, layer=layer, seed=seed, alpha=alpha)
        parts, ok = [], True
        for model, g in t3.groupby("model", sort=False):
            better = g[g["two_sided_verdict"] == "method significantly higher"]
            worse = g[g["two_sided_verdict"] == "CASE significantly higher"]
            ok &= len(better) <= 2
            parts.append(f"{model_display(model)}: {len(better)} higher"
                         + (f" ({', '.join(better['Method'])})" if len(better) else "") + f", {len(worse)} lower")
        untested = t3[(t3["method"] != "case") & t3["p_two_sided"].isna()]
        rows.append(_claim(f"fidelity ({kt}, {drop} drop)",
                           "CASE's drop is comparable: on every model at most 2 of 5 baselines have a significantly "
                           "higher mean drop (two-sided p < .05)",
                           "on par overall (Table III, Sec. VI-B)", "; ".join(parts),
                           None if len(untested) else bool(ok)))
    t3 = table3_full(maps, k=k, drop="relative", layer=layer, seed=seed, alpha=alpha)
    sig = lambda g: set(g.loc[(g["method"] != "case") & (g["p_two_sided"] < alpha), "Method"])  # noqa: E731
    by = {model_display(m): g for m, g in t3.groupby("model", sort=False)}
    untested = lambda g: bool(g.loc[g["method"] != "case", "p_two_sided"].isna().any())  # noqa: E731

    both = [by.get("DenseNet"), by.get("ResNet")]
    if any(g is None for g in both):
        rows.append(_claim(f"fidelity ({kt})", "on DenseNet and ResNet no baseline differs significantly from CASE",
                           "all p ≥ .05 on DenseNet and ResNet (Table III)", "DenseNet or ResNet missing", None))
    else:
        txt = "; ".join(f"{name}: " + (", ".join(sorted(sig(g))) or "none") for name, g in zip(("DenseNet", "ResNet"), both))
        rows.append(_claim(f"fidelity ({kt})", "on DenseNet and ResNet no baseline differs significantly from CASE "
                           "(two-sided p < .05)", "all p ≥ .05 on DenseNet and ResNet (Table III)",
                           "significantly different: " + txt,
                           None if any(untested(g) for g in both) else not any(sig(g) for g in both)))
    g = by.get("ConvNeXt")
    if g is None:
        rows.append(_claim(f"fidelity ({kt})", "on ConvNeXt CASE's drop is significantly higher than AblationCAM's "
                           "and LayerCAM's", "p = .00568 and .00988 (Table III)", "no ConvNeXt results", None))
    else:
        sel = g[g["Method"].isin(["AblationCAM", "LayerCAM"])]
        rows.append(_claim(f"fidelity ({kt})", "on ConvNeXt CASE's drop is significantly higher than AblationCAM's "
                           "and LayerCAM's (one-sided p < .05)", "p = .00568 and .00988 (Table III)",
                           ", ".join(f"{r.Method}: {_ptext(r.p_one_sided)} (mean {_num(r.mean)} vs CASE "
                                     f"{_num(r.mean_case)})" for r in sel.itertuples()),
                           None if sel["p_one_sided"].isna().any() or len(sel) < 2 else bool(sel["case_higher"].all())))
    g = by.get("VGG")
    expected = {"Grad-CAM++", "LayerCAM", "ScoreCAM"}
    if g is None:
        rows.append(_claim(f"fidelity ({kt})", "on VGG exactly Grad-CAM++, LayerCAM and ScoreCAM differ from CASE",
                           "Table III", "no VGG results", None))
    else:
        found = sig(g)
        rows.append(_claim(f"fidelity ({kt})", "on VGG exactly Grad-CAM++, LayerCAM and ScoreCAM differ significantly "
                           "from CASE (two-sided p < .05)",
                           "these three have p < .05 (Table III; the text calls all three higher, but Grad-CAM++'s "
                           "mean .1020 is below CASE's .1317)",
                           "significantly different: " + (", ".join(sorted(found)) or "none"),
                           None if untested(g) else found == expected))
    return rows


def _appendix_claims(maps: pd.DataFrame, threshold: float, seed: int, layer: str, alt_layer: str,
                     densenet: str) -> list[dict[str, Any]]:
    hs = histogram_summary(maps, threshold=threshold, seed=seed)
    by = {(model_display(m), l): g for (m, l), g in hs.groupby(["model", "layer"], sort=False)}
    rows = []

    def above(name: str, lyr: str, paper: str, fig: str, want_above: bool) -> None:
        g = by.get((name, lyr))
        where = f"{name} ({lyr})"
        if g is None:
            rows.append(_claim("appendix", f"{where}: most methods' agreement mass is "
                               + ("above" if want_above else "below") + " the 50 % line", paper, "no results", None))
            return
        hi = g[g["median"] >= threshold]
        n = int(len(hi) if want_above else (g["median"] < threshold).sum())
        txt = ", ".join(f"{r.Method} {_pct(r.median)}" for r in g.itertuples())
        rows.append(_claim("appendix", f"{where}: for at least 4 of 6 methods most images lie "
                           + ("at or above" if want_above else "below") + f" the {threshold:.0%} line (median)",
                           paper + f" ({fig})", f"{n} of {len(g)}; medians: {txt}",
                           None if g["median"].isna().any() or len(g) < 6 else bool(n >= 4)))

    def case_lowest(name: str, paper: str, fig: str) -> None:
        g = by.get((name, layer))
        if g is None or not (g["method"] == "case").any():
            rows.append(_claim("appendix", f"{name}: CASE's distribution lies lowest (lowest median agreement)",
                               paper, "no results", None))
            return
        cm = float(g.loc[g["method"] == "case", "median"].iloc[0])
        others = g[g["method"] != "case"]
        lowest = others.loc[others["median"].idxmin()] if others["median"].notna().any() else None
        rows.append(_claim("appendix", f"{name}: CASE's distribution lies lowest (lowest median agreement)",
                           paper + f" ({fig})",
                           f"CASE {_pct(cm)}; lowest baseline "
                           + (f"{lowest['Method']} {_pct(lowest['median'])}" if lowest is not None else "NaN"),
                           None if lowest is None or math.isnan(cm) else bool(cm < lowest["median"])))

    above("VGG", layer, "most methods class-insensitive, much of the mass above 50 %", "Fig. 7", True)
    case_lowest("ResNet", "CASE shifts agreement lower than the other methods", "Fig. 8")
    case_lowest("ConvNeXt", "CASE keeps a clear advantage, skewed below the threshold", "Fig. 9")
    dn = model_display(densenet)
    above(dn, layer, "most methods give low-overlap maps", "Fig. 10", False)
    above(dn, alt_layer, "most methods fail to give class-distinct maps", "Fig. 11", True)
    return rows


#: The chapters :func:`chapter_claims` knows.
CHAPTERS: tuple[str, ...] = ("sparsity", "norm5", "fidelity", "appendix")


def chapter_claims(data: Any, chapter: str, *, sparsity: pd.DataFrame | None = None, threshold: float = 0.5,
                   alpha: float = 0.05, layer: str = "final_conv", alt_layer: str = "norm5", seed: int = 0,
                   sparse_model: str = "densenet", ks: Sequence[float | None] | None = None,
                   n_boot: int = 2_000, boot_seed: int = 0) -> pd.DataFrame:
    """The claims one chapter of the book checks, rows as :func:`claims` (``section, claim, paper says, this
    run, supported``), every criterion fixed here and stated in its row (``seed``: the models' training seed;
    ``boot_seed``: the seed of the bootstrap CIs; ``sparse_model``: the DenseNet, ``densenet201`` is used
    instead when the run has no ``densenet``):

    - ``"sparsity"``: :func:`claims`' sparsity rows, then the relation the paper posits — the sparsest
      attribution layer (by count; by fraction) has the most methods rejecting H0, and Spearman's ρ between a
      layer's fraction of active channels and a method's median agreement is positive for ≥ 4 of 6 methods.
    - ``"norm5"``: :func:`claims`' norm5 rows; the final conv has more methods rejecting than ``norm5``;
      ``norm5`` is denser than the final conv (fraction of channels); ``norm5`` activates nearly all channels.
    - ``"fidelity"``: for each k in ``ks`` (default: the run's ``fidelity_k`` and 50 %, the reference code's):
      CASE comparable (≤ 2 of 5 baselines significantly higher on every model; relative and absolute drop),
      and Table III's pattern: no significant difference on DenseNet and ResNet, CASE above AblationCAM and
      LayerCAM on ConvNeXt, exactly Grad-CAM++, LayerCAM and ScoreCAM different on VGG.
    - ``"appendix"``: Figures 7–11 described by medians: VGG mostly at or above 50 %; CASE lowest on ResNet and
      ConvNeXt; DenseNet's conv mostly below; ``norm5`` mostly at or above (≥ 4 of 6 methods each).
    """
    if chapter not in CHAPTERS:
        raise ValueError(f"chapter must be one of {CHAPTERS}, got {chapter!r}")
    maps = _maps(data)
    if sparsity is None and isinstance(data, Results):
        sparsity = data.sparsity
    dn = _pick_model(maps, sparse_model)
    base = dict(threshold=threshold, alpha=alpha, layer=layer, alt_layer=alt_layer, sparse_model=dn, n_boot=n_boot)
    rows: list[dict[str, Any]] = []
    if chapter == "sparsity":
        rows += claims(maps, sparsity, sections=["sparsity"], **base).to_dict("records")
        try:
            ss = sparsity_sensitivity(maps, sparsity, seed=seed, threshold=threshold, alpha=alpha, n_boot=n_boot,
                                      boot_seed=boot_seed)
        except (ValueError, TypeError):
            ss = None
        if ss is None:
            rows.append(_claim("sparsity ↔ sensitivity", "sparser attribution layers give more class-distinct maps",
                               "Sec. V-B", "no layer with both sparsity and agreement results", None))
        else:
            rows += _relation_claims(ss)
    elif chapter == "norm5":
        rows += claims(maps, sparsity, sections=["norm5"], **base).to_dict("records")
        try:
            lc = layer_comparison(maps, sparsity, model=dn, layers=(layer, alt_layer), seed=seed,
                                  threshold=threshold, alpha=alpha, n_boot=n_boot, boot_seed=boot_seed).set_index("layer")
        except ValueError:
            lc = None
        if lc is None:
            rows.append(_claim("norm5", "the final conv gives more class-sensitive maps than norm5",
                               "6 of 6 methods reject at the conv, 2 of 6 at norm5", "no results at both layers", None))
        else:
            c, n5 = lc.loc[layer], lc.loc[alt_layer]
            rows.append(_claim("norm5", "the final conv gives more class-sensitive maps than norm5 (more methods "
                               "reject H0)", "6 of 6 methods reject at the conv (Table I), 2 of 6 at norm5 (Table II)",
                               f"{layer}: {c['n_reject']}/{c['n_methods']} ({c['rejecting']}); "
                               f"{alt_layer}: {n5['n_reject']}/{n5['n_methods']} ({n5['rejecting']})",
                               bool(c["n_reject"] > n5["n_reject"])))
            dense = not (math.isnan(c["median_fraction"]) or math.isnan(n5["median_fraction"]))
            rows.append(_claim("norm5", "norm5 is denser than the final conv (median class, fraction of channels)",
                               "fewer than 20 active channels at the conv vs ≈ 1050 at norm5 — as fractions of "
                               "32 and 1920 channels: under 62 % vs ≈ 55 %",
                               (f"{layer}: {c['median_active']:.1f} of {c['n_channels']:.0f} ({_pct(c['median_fraction'])}); "
                                f"{alt_layer}: {n5['median_active']:.1f} of {n5['n_channels']:.0f} "
                                f"({_pct(n5['median_fraction'])})") if dense else "no sparsity results at both layers",
                               bool(n5["median_fraction"] > c["median_fraction"]) if dense else None))
        sp_rows = claims(maps, sparsity, sections=["sparsity"], **base)
        rows += sp_rows[sp_rows["claim"].str.startswith("norm5")].assign(section="norm5").to_dict("records")
    elif chapter == "fidelity":
        if ks is None:
            fid = fidelity_rows(maps, layer=layer, seed=seed)
            default = sorted(set(fid["fidelity_k"].dropna())) if len(fid) else []
            ks = [*default, *([0.5] if 0.5 not in default else [])]
        for k in ks:
            try:
                rows += _fidelity_claim_rows(maps, k, layer, seed, alpha)
            except ValueError as err:
                rows.append(_claim("fidelity", "Table III's claims", "Table III", f"k = {k}: {err}", None))
    else:
        rows += _appendix_claims(maps, threshold, seed, layer, alt_layer, dn)
    out = pd.DataFrame(rows, columns=["section", "claim", "paper says", "this run", "supported"])
    out["supported"] = pd.Series([None if r["supported"] is None or (isinstance(r["supported"], float)
                                                                     and math.isnan(r["supported"]))
                                  else bool(r["supported"]) for r in rows], index=out.index, dtype=object)
    return out


__all__ += ["LAYER_ORDER", "APPENDIX_ORDER", "PAPER_TABLE3", "CHAPTERS", "sparsity_summary", "sparsity_sensitivity",
            "sparsity_correlation", "layer_comparison", "fidelity_pairing", "fidelity_differences", "table3_vs_paper",
            "histogram_summary", "chapter_claims"]


# =============================================================================================== notebooks 01–03
# Diagnostic (01), CASE method (02) and RQ1 (03): degenerate maps, the contrast-set study, the ground-truth
# evidence of the demo benchmark, and the claims each of these notebooks checks.  Additive block.

from ..study.experiments import COMPARISONS, STRATEGIES, degenerate_maps  # noqa: E402


def _one_row_per_map(df: pd.DataFrame, where: str) -> None:
    """Refuse rows that repeat a map (same model, seed, layer, method, image and target), e.g. two runs mixed:
    they would be counted twice (or break the top-1 lookup) instead of raising as Table I does."""
    key = ["model", "seed", "layer", "method", "image_id", "target"]
    dup = df.duplicated(subset=key)
    if dup.any():
        raise ValueError(f"image ids repeat{where}: {sorted(set(df.loc[dup, 'image_id'].tolist()))[:5]}; one row "
                         "per (model, seed, layer, method, image, target) is expected (mixing two runs?)")


def degenerate_table(data: Any, *, layer: str = "final_conv", seed: int = 0,
                     targets: Sequence[str] = ("top1", "top2")) -> pd.DataFrame:
    """Share of constant maps (no top-k set, e.g. all zero after the ReLU): rows = methods in the paper's
    order, columns = (model, target), values = fractions in [0, 1] of the run's maps for that target."""
    maps = _maps(data)
    deg = degenerate_maps(maps, layer=layer, seed=seed, target=list(targets))
    if deg.empty:
        raise ValueError(f"no maps for layer={layer!r}, seed={seed}, targets {list(targets)}")
    deg = _sort(deg, ["model", "method"])
    deg["Method"] = deg["method"].map(DISPLAY_NAMES)
    deg["Model"] = deg["model"].map(model_display)
    wide = deg.pivot(index="Method", columns=["Model", "target"], values="fraction_constant")
    order = [DISPLAY_NAMES[m] for m in PAPER_METHOD_ORDER if DISPLAY_NAMES[m] in wide.index]
    models = list(dict.fromkeys(deg["Model"]))
    cols = [(m, t) for m in models for t in targets if (m, t) in wide.columns]
    wide = wide.loc[order, cols]
    wide.columns.names = ["model", "target"]
    return wide


def contrast_table(rows: pd.DataFrame, *, comparison: str | Sequence[str] | None = None, threshold: float = 0.5,
                   alpha: float = 0.05, n_boot: int = 2_000, boot_seed: int = 0) -> pd.DataFrame:
    """The contrast-set study (:func:`casekit.study.experiments.contrast_study`) summarised: one row per (model,
    strategy, K, comparison, method) with the class-sensitivity test of the agreements (n, excluded constant
    maps, median and bootstrap CI, one-sided Wilcoxon p, Holm over the table, verdict, as Table I) and the
    mean fraction of the top-k pixels on the true class's unique part and on the shared group part, for the
    top-1 map (``unique_top1``, ``shared_top1``) and for the other map (``unique_other``, ``shared_other``),
    over the images whose two maps both have a top-k set (NaN on data without part masks)."""
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"rows must be the DataFrame of contrast_study, got {type(rows).__name__}")
    need = {"contrast_strategy", "contrast_k"}
    if not need <= set(rows.columns):
        raise ValueError(f"rows lacks column(s) {sorted(need - set(rows.columns))}: pass the rows of contrast_study")
    parts = []
    for (strategy, K), g in rows.groupby(["contrast_strategy", "contrast_k"], sort=False):
        _one_row_per_map(g, f" within contrast_strategy={strategy!r}, contrast_k={K}")
        a = agreement_rows(g, comparison=comparison)
        top1 = g[g["target"] == "top1"].set_index(["model", "seed", "layer", "method", "image_id"])
        idx = pd.MultiIndex.from_frame(a[["model", "seed", "layer", "method", "image_id"]])
        a = a.assign(contrast_strategy=strategy, contrast_k=int(K),
                     unique_top1=top1["unique_evidence"].reindex(idx).to_numpy(float),
                     shared_top1=top1["shared_evidence"].reindex(idx).to_numpy(float))
        parts.append(a)
    agree = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    groups = ["model", "layer", "seed", "contrast_strategy", "contrast_k", "comparison", "method"]
    out = _sensitivity(agree, groups, threshold, alpha, n_boot, boot_seed)
    both = agree[~agree["degenerate"]]
    ev = both.groupby(groups, sort=False).agg(unique_top1=("unique_top1", "mean"),
                                             unique_other=("other_unique_evidence", "mean"),
                                             shared_top1=("shared_top1", "mean"),
                                             shared_other=("other_shared_evidence", "mean")).reset_index()
    out = out.merge(ev, on=groups, how="left")
    strategy_rank = {s: i for i, s in enumerate(STRATEGIES)}
    comp_rank = {c: i for i, c in enumerate(COMPARISONS.values())}
    out["_s"] = out["contrast_strategy"].map(strategy_rank)
    out["_c"] = out["comparison"].map(comp_rank)
    return _sort(out, ["model", "_s", "contrast_k", "_c", "method"]).drop(columns=["_s", "_c"])


def _paper_k_rows(summary: pd.DataFrame, model: str, strategy: str) -> pd.DataFrame:
    return summary[(summary["model"] == model) & (summary["contrast_strategy"] == strategy)
                   & (summary["comparison"] == "top1_vs_top2") & (summary["method"] == "case")]


def _every(states: Sequence[bool | None]) -> bool | None:
    """A claim "on every model": False if any model contradicts it, else None if any could not be checked."""
    if any(s is False for s in states):
        return False
    return None if any(s is None for s in states) or not states else True


def contrast_claims(summary: pd.DataFrame, *, paper_k: int = 3, strategy: str = "confusion",
                    tolerance: float = 0.05) -> pd.DataFrame:
    """The paper's statements about CASE's contrast set, checked on :func:`contrast_table` (top-1 vs top-2):

    - "small K (e.g. 3) suffices": on every model, with the confusion-matrix contrast, CASE rejects H0 at
      K = ``paper_k`` and its median agreement there is within ``tolerance`` (5 points) of the lowest median
      over all the K studied;
    - the limitations section's single contrast class (K = 1) also rejects H0 on every model.
    Rows as :func:`claims`; ``supported`` is None where a K was not studied or a test could not run."""
    models = list(dict.fromkeys(summary["model"]))
    texts, states = [], []
    for model in models:
        g = _paper_k_rows(summary, model, strategy)
        at = g[g["contrast_k"] == paper_k]
        if at.empty:
            texts.append(f"{model_display(model)}: K = {paper_k} not studied")
            states.append(None)
            continue
        r = at.iloc[0]
        best = g.loc[g["median"].idxmin()] if g["median"].notna().any() else r
        texts.append(f"{model_display(model)}: K = {paper_k} median {_pct(r['median'])} ({_ptext(r['p'])}), "
                     f"lowest median {_pct(best['median'])} at K = {int(best['contrast_k'])}")
        states.append(None if r["reason"] else bool(r["reject"] and r["median"] <= best["median"] + tolerance))
    rows = [_claim("contrast set", f"K = {paper_k} suffices: CASE rejects H0 and its median agreement is within "
                   f"{tolerance * 100:g} points of the best K studied ({strategy} contrast)",
                   "small contrast sets (e.g. K = 3) suffice for strong performance (Sec. VIII)",
                   "; ".join(texts), _every(states))]
    texts, states = [], []
    for model in models:
        one = _paper_k_rows(summary, model, strategy)
        one = one[one["contrast_k"] == 1]
        if one.empty:
            texts.append(f"{model_display(model)}: K = 1 not studied")
            states.append(None)
            continue
        r = one.iloc[0]
        texts.append(f"{model_display(model)}: median {_pct(r['median'])}, {_ptext(r['p'])}")
        states.append(None if r["reason"] else bool(r["reject"]))
    rows.append(_claim("contrast set", f"with a single contrast class (K = 1) CASE rejects H0 on every model "
                       f"({strategy} contrast)",
                       "CASE contrasts the prediction with a single contrast class (Sec. VIII); the authors' "
                       "fidelity runs use K = 1", "; ".join(texts), _every(states)))
    return _claims_frame(rows)


def _claims_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["section", "claim", "paper says", "this run", "supported"])
    out["supported"] = pd.Series([None if r["supported"] is None else bool(r["supported"]) for r in rows],
                                 index=out.index, dtype=object)
    return out


def diagnostic_claims(data: Any, *, layer: str = "final_conv", seed: int = 0, threshold: float = 0.5,
                      alpha: float = 0.05, n_boot: int = 2_000, min_constant: float = 0.01) -> pd.DataFrame:
    """The diagnostic's statements (Sec. I, Fig. 1, Fig. 3, Table I), checked on a run:

    - Grad-CAM gives nearly the same map for the top-1 and top-2 class: it fails to reject H0 on more than
      half of the models (the paper: 3 of 4);
    - many baselines fail: at least half of the (baseline, model) tests fail to reject H0 (the paper: 10 of 20);
    - Score-CAM sometimes gives no explanation at all: on some model at least ``min_constant`` (1 %) of its
      top-1 or top-2 maps are constant.
    ``supported`` is None when a test could not run (too few images)."""
    maps = _maps(data)
    t1 = table1_full(maps, layer=layer, seed=seed, threshold=threshold, alpha=alpha, n_boot=n_boot)
    rows: list[dict[str, Any]] = []
    untested = bool(t1["reason"].astype(bool).any())

    g = t1[t1["method"] == "gradcam"]
    fails = g[~g["reject"] & ~g["reason"].astype(bool)]
    if g.empty:
        rows.append(_claim("diagnostic", "Grad-CAM fails the test on most models", "fails on 3 of 4 models "
                           "(ConvNeXt p = .8734, ResNet and VGG p = 1.)", "no Grad-CAM results", None))
    else:
        tested = int((~g["reason"].astype(bool)).sum())
        txt = (f"fails on {len(fails)} of {tested} models tested"
               + (f" ({len(g) - tested} not tested: too few images)" if tested < len(g) else "") + ": "
               + ", ".join(f"{r.Model} {_ptext(r.p)} (median {_pct(r.median)})" for r in g.itertuples()))
        rows.append(_claim("diagnostic", "Grad-CAM's top-1 and top-2 maps are alike: it fails to reject H0 on more "
                           "than half of the models", "fails on 3 of 4 models (ConvNeXt p = .8734, ResNet and VGG "
                           "p = 1.); Fig. 1 shows near-identical maps", txt,
                           None if g["reason"].astype(bool).any() else bool(len(fails) > len(g) / 2)))

    base = t1[t1["method"].isin(BASELINES)]
    base_tested = base[~base["reason"].astype(bool)]
    bfail = base_tested[~base_tested["reject"]]
    per = ", ".join(f"{model_display(m)} {int((~gm['reject']).sum())}/{len(gm)}"
                    for m, gm in base_tested.groupby("model", sort=False))
    txt = (f"{len(bfail)} of {len(base_tested)} tests fail" + (f" ({per})" if per else "")
           + (f"; {len(base) - len(base_tested)} not tested (too few images)" if len(base_tested) < len(base) else ""))
    rows.append(_claim("diagnostic", "many baselines fail: at least half of the (baseline, model) tests do not "
                       "reject H0", "10 of the 20 baseline tests in Table I fail to reject", txt,
                       None if base.empty or untested else bool(len(bfail) >= len(base) / 2)))

    deg = degenerate_maps(maps, layer=layer, seed=seed, method="scorecam", target=["top1", "top2"])
    if deg.empty:
        rows.append(_claim("diagnostic", "Score-CAM sometimes gives no explanation (a constant map)",
                           "Score-CAM often produces visually identical or absent explanations (Fig. 3)",
                           "no Score-CAM results", None))
    else:
        per_model = deg.groupby("model", sort=False).agg(c=("n_constant", "sum"), n=("n_maps", "sum"))
        txt = ", ".join(f"{model_display(m)} {r.c}/{r.n} ({_pct(r.c / r.n)})" for m, r in per_model.iterrows())
        rows.append(_claim("diagnostic", f"Score-CAM sometimes gives no explanation: on some model at least "
                           f"{min_constant:.0%} of its top-1/top-2 maps are constant",
                           "Score-CAM often produces visually identical or absent explanations (Fig. 3)",
                           "constant maps: " + txt,
                           bool(((per_model["c"] / per_model["n"]) >= min_constant).any())))
    return _claims_frame(rows)


def evidence_comparison(data: Any, *, layer: str = "final_conv", seed: int = 0,
                        comparison: str | Sequence[str] | None = None, areas: pd.DataFrame | None = None,
                        k: float = 0.05) -> pd.DataFrame:
    """The ground truth behind each comparison (demo benchmark): one row per (model, method, comparison) with
    the images whose two maps both have a top-k set (``n``; ``n_excluded`` the others), the median top-k
    agreement, and the mean fraction of the top-k pixels of the top-1 (= true class) map and of the other map
    (top-2 or sibling) on the true class's **unique** part (``unique_top1``, ``unique_other``) and on its
    group's **shared** part (``shared_top1``, ``shared_other``).

    A class-specific explanation of the true class lands on its unique part; the other class's map should not.
    With ``areas`` (:func:`casekit.study.experiments.part_areas`) two reference columns over the same images
    (NaN without): ``unique_chance`` (mean unique-part area: the precision of a random top-k set) and
    ``unique_ceiling`` (mean ``min(1, area / k)``: the best precision a top-k set can reach).
    Empty (with these columns) when the data has no part masks (e.g. the paper profile)."""
    maps = _maps(data)
    cols = ["model", "Model", "method", "Method", "comparison", "n", "n_excluded", "median_agreement",
            "unique_top1", "unique_other", "shared_top1", "shared_other", "unique_chance", "unique_ceiling"]
    sel = maps[(maps["layer"] == layer) & (maps["seed"] == seed)]
    if sel.empty:
        raise ValueError(f"no maps for layer={layer!r}, seed={seed}")
    if "unique_evidence" not in sel or sel["unique_evidence"].notna().sum() == 0:
        return pd.DataFrame(columns=cols)
    _one_row_per_map(sel, "")
    agree = agreement_rows(sel, comparison=comparison)
    top1 = sel[sel["target"] == "top1"].set_index(["model", "seed", "layer", "method", "image_id"])
    idx = pd.MultiIndex.from_frame(agree[["model", "seed", "layer", "method", "image_id"]])
    agree = agree.assign(unique_top1=top1["unique_evidence"].reindex(idx).to_numpy(float),
                         shared_top1=top1["shared_evidence"].reindex(idx).to_numpy(float))
    keys = ["model", "method", "comparison"]
    both = agree[~agree["degenerate"]]
    ev = both.groupby(keys, sort=False).agg(n=("image_id", "size"), median_agreement=("agreement", "median"),
                                            unique_top1=("unique_top1", "mean"),
                                            unique_other=("other_unique_evidence", "mean"),
                                            shared_top1=("shared_top1", "mean"),
                                            shared_other=("other_shared_evidence", "mean"))
    total = agree.groupby(keys, sort=False).agg(n_all=("image_id", "size"))
    out = total.join(ev, how="left")
    if areas is not None and len(areas):
        if not {"image_id", "unique_area"} <= set(areas.columns) or areas["image_id"].duplicated().any():
            raise ValueError("areas must be part_areas(...): one row per image_id with a unique_area column")
        a = areas.set_index("image_id")["unique_area"]
        missing = sorted(set(both["image_id"]) - set(a.index))
        if missing:
            raise ValueError(f"areas lacks image ids {missing[:5]} of the results")
        both = both.assign(unique_chance=a.reindex(both["image_id"]).to_numpy(float))
        both = both.assign(unique_ceiling=np.minimum(1.0, both["unique_chance"] / _check_k(k)))
        ref = both.groupby(keys, sort=False).agg(unique_chance=("unique_chance", "mean"),
                                                 unique_ceiling=("unique_ceiling", "mean"))
        out = out.join(ref, how="left")
    else:
        out = out.assign(unique_chance=np.nan, unique_ceiling=np.nan)
    out = out.reset_index()
    out["n"] = out["n"].fillna(0).astype(int)
    out["n_excluded"] = out["n_all"] - out["n"]
    out["Method"] = out["method"].map(DISPLAY_NAMES)
    out["Model"] = out["model"].map(model_display)
    comp_rank = {c: i for i, c in enumerate(COMPARISONS.values())}
    out["_c"] = out["comparison"].map(comp_rank)
    return _sort(out, ["model", "_c", "method"])[cols]


def _check_k(k: float) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], got {k!r}")
    return float(k)


def evidence_claims(data: Any, *, layer: str = "final_conv", seed: int = 0) -> pd.DataFrame:
    """What the demo benchmark's ground truth says about the paper's reading of the diagnostic:

    - CASE isolates the features unique to the target class (Sec. III-D): on every model CASE's top-1 map
      has the highest unique-evidence precision (mean fraction of its top-k pixels on the true class's
      unique part) of the six methods;
    - low top-1/top-2 agreement goes with class-specific evidence (the premise of reading the diagnostic):
      on every model the Spearman correlation, over the six methods, between median agreement and the
      top-1 map's unique-evidence precision is negative.
    ``supported`` is None without part masks (paper profile) or when a model lacks a method."""
    ev = evidence_comparison(data, layer=layer, seed=seed, comparison="top1_vs_top2")
    rows: list[dict[str, Any]] = []
    c1 = ("ground truth", "CASE's top-1 map has the highest unique-evidence precision of the six methods on every "
          "model", "CASE isolates the features that are uniquely discriminative for the target (Sec. III-D); "
          "the paper has no ground truth to measure it")
    c2 = ("ground truth", "lower top-1/top-2 agreement goes with more evidence on the class's unique part "
          "(Spearman ρ < 0 over the methods, on every model)", "implicit: the diagnostic reads low overlap as "
          "class-specific explanation (Sec. I, V-A)")
    if ev.empty:
        rows += [_claim(*c1, "no part masks in this profile", None), _claim(*c2, "no part masks in this profile", None)]
        return _claims_frame(rows)
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
        t1.append(f"{model_display(model)}: CASE {_pct(case)}, best {best['Method']} {_pct(best['unique_top1'])}")
        s1.append(bool(best["method"] == "case"))
        rho = g["median_agreement"].corr(g["unique_top1"], method="spearman")
        t2.append(f"{model_display(model)}: ρ = {rho:.2f}")
        s2.append(None if math.isnan(rho) else bool(rho < 0))
    ok1, ok2 = _every(s1), _every(s2)
    rows += [_claim(*c1, "; ".join(t1), ok1), _claim(*c2, "; ".join(t2), ok2)]
    return _claims_frame(rows)


def projection_table(example: Mapping[str, Any], *, k: float = 0.05) -> pd.DataFrame:
    """CASE's projection on a few images (:func:`casekit.study.experiments.case_example`): per image and target the
    class, its contrast classes, ``cos(w_u, w̄)``, the share ``‖w⊥‖ / ‖w_u‖`` of the target's weight vector
    that CASE keeps, and (with part masks) the fraction of the top-k pixels of the Grad-CAM map (``w_u``)
    and of the CASE map (``w⊥``) on the true class's unique part."""
    from ..evaluation.metrics import unique_evidence

    v = example["vectors"]
    B, T = v.targets.shape
    masks = example.get("masks")
    ev = {}
    if masks is not None:
        um = masks["unique"][:, None].to(v.gradcam.device)
        ev = {"unique (Grad-CAM)": unique_evidence(v.gradcam, um, k), "unique (CASE)": unique_evidence(v.case, um, k)}
    rows = []
    for b in range(B):
        for t in range(T):
            r = {"image": example["image_ids"][b], "target": example["targets"][t],
                 "class": example["target_names"][b][t].split(": ", 1)[-1],
                 "contrast classes": ", ".join(example["contrast_names"][b][t]),
                 "cos(w_u, w̄)": float(v.cosine[b, t]), "‖w⊥‖ / ‖w_u‖": float(v.kept[b, t])}
            r.update({name: float(val[b, t]) for name, val in ev.items()})
            rows.append(r)
    return pd.DataFrame(rows)


__all__ += ["degenerate_table", "contrast_table", "contrast_claims", "diagnostic_claims", "evidence_comparison",
            "evidence_claims", "projection_table"]
