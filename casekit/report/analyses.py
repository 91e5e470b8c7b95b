"""The analyses behind the figures and the chapters' discussion, built on the runner's rows and Tables I–III:
seed robustness (Figure 4), active channels and sparsity (Figures 5–6, chapter 04), agreement histograms
(Figures 7–11), deletion curves, the two DenseNet layers side by side (chapter 05) and the paired fidelity
differences behind Table III (chapter 06).

Imports: :mod:`casekit.study` (row views, constants), :mod:`casekit.evaluation`, :mod:`.naming`,
:mod:`.tables`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..evaluation.metrics import class_mean_active_channels
from ..evaluation.stats import format_p
from ..study.config import k_suffix
from ..study.rows import agreement_rows, fidelity_rows
from ..study.runner import Results
from .naming import DISPLAY_NAMES, model_display, sort_layers, sort_paper
from .tables import maps_frame, sensitivity_tests, sparsity_frame, table2_full, table3_full

__all__ = [
    "seed_agreement", "class_active_channels", "agreement_histogram", "deletion_curves", "sparsity_summary",
    "sparsity_sensitivity", "sparsity_correlation", "layer_comparison", "fidelity_pairing",
           "fidelity_differences",
    "histogram_summary", "spearman",
]


def seed_agreement(data: Any, *, model: str = "densenet", layer: str = "final_conv",
                   comparison: str = "top1_vs_top2", threshold: float = 0.5, alpha: float = 0.05,
                   n_boot: int = 2_000) -> pd.DataFrame:
    """Figure 4's data: per seed and method the mean (and SD, median) agreement and the class-sensitivity
    test's p and verdict (Holm over all seeds and methods)."""
    agree = agreement_rows(maps_frame(data), model=model, layer=layer, comparison=comparison)
    if agree.empty:
        raise ValueError(f"no agreement rows for {model!r} at {layer!r}")
    out = sensitivity_tests(agree, ["model", "layer", "seed", "method"], threshold, alpha, n_boot, 0)
    stats = agree.groupby(["seed", "method"])["agreement"].agg(mean="mean", sd="std").reset_index()
    out = out.merge(stats, on=["seed", "method"], how="left")
    return sort_paper(out, ["seed", "method"])


def class_active_channels(data: Any, **filters: Any) -> pd.DataFrame:
    """Figures 5–6's data: per (model, seed, layer, class) the mean number of active channels over the
    run's (correctly classified) images, also as a fraction of the layer's channels."""
    sp = sparsity_frame(data)
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
    agree = agreement_rows(maps_frame(data), comparison=comparison, **filters)
    rows = []
    for (model, seed, layer, method), g in agree.groupby(["model", "seed", "layer", "method"], sort=False):
        v = g["agreement"].to_numpy(float)
        counts = np.histogram(v[~np.isnan(v)], bins=edges)[0]
        for i, c in enumerate(counts):
            rows.append({"model": model, "seed": seed, "layer": layer, "method": method, "bin_low": edges[i],
                         "bin_high": edges[i + 1], "count": int(c), "n_excluded": int(np.isnan(v).sum())})
    return sort_paper(pd.DataFrame(rows), ["model", "seed", "layer", "method", "bin_low"])


def deletion_curves(data: Any, *, layer: str = "final_conv", seed: int = 0, **filters: Any) -> pd.DataFrame:
    """Mean deletion curves: per (model, method, k) the mean and standard error of the relative drop and the
    mean probability left, over the run's images, and each method's mean normalised area."""
    fid = fidelity_rows(maps_frame(data), layer=layer, seed=seed, **filters)
    if fid.empty:
        raise ValueError("no fidelity rows match the selection")
    ks = sorted(float(c.removeprefix("relative_drop_")) / 100 for c in fid.columns
                if c.startswith("relative_drop_") and fid[c].notna().any())
    rows = []
    for (model, method), g in fid.groupby(["model", "method"], sort=False):
        for k in ks:
            rd = g[f"relative_drop_{k_suffix(k)}"].to_numpy(float)
            pa = g[f"p_after_{k_suffix(k)}"].to_numpy(float)
            rows.append({"model": model, "method": method, "k": k, "n": len(rd),
                         "mean_relative_drop": rd.mean(),
                         "sem_relative_drop": rd.std(ddof=1) / math.sqrt(len(rd)) if len(rd) > 1
                         else math.nan,
                         "mean_p_after": pa.mean(), "mean_area": g["deletion_area"].mean()})
    out = sort_paper(pd.DataFrame(rows), ["model", "method", "k"])
    out["Method"] = out["method"].map(DISPLAY_NAMES)
    out["Model"] = out["model"].map(model_display)
    return out


def spearman(x: Any, y: Any, exact_max: int = 8) -> tuple[float, float, int]:
    """Spearman's ρ of the finite pairs of ``x`` and ``y`` with a two-sided p → ``(rho, p, n)``.

    For ``n ≤ exact_max`` the p-value is exact (all ``n!`` pairings of the ranks); above, scipy's. With fewer
    than 3 pairs, or a constant side, ρ is undefined: ``(nan, nan, n)`` (no warning)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, n
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if n <= exact_max:
        perms = np.array(list(itertools.permutations(ry)))  # every pairing of the ranks (n! ≤ 40320)
        cx, cp = rx - rx.mean(), perms - perms.mean(axis=1, keepdims=True)
        rhos = cp @ cx / (np.linalg.norm(cp, axis=1) * np.linalg.norm(cx))
        p = float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))
    else:
        p = float(sps.spearmanr(x, y).pvalue)
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
    return sort_layers(out, ["model", "seed", "layer"])


def sparsity_sensitivity(data: Any, sparsity: pd.DataFrame | None = None, *, seed: int = 0,
                         comparison: str = "top1_vs_top2", threshold: float = 0.5, alpha: float = 0.05,
                         models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                         n_boot: int = 2_000, boot_seed: int = 0) -> pd.DataFrame:
    """Sparsity next to class sensitivity: one row per (model, layer, method) for every layer with both
    active-channel counts and agreement rows.

    Columns: the layer's sparsity (``n_channels``, ``median_active``, ``median_fraction`` over classes, from
    :func:`sparsity_summary`), the method's class-sensitivity test at that layer (as :func:`table1_full`:
    ``n``, ``n_excluded``, ``median`` agreement and CI, ``p``, ``reject``; Holm over this table) and, within
    the layer, Spearman's ρ between an image's active-channel count and its agreement (``rho_images``,
    ``p_rho_images``, ``n_rho``: NaN with fewer than 3 images or no spread)."""
    maps = maps_frame(data)
    if sparsity is None:
        if not isinstance(data, Results):
            raise TypeError("pass the sparsity table too when data is a maps DataFrame (or pass a Results "
                            "object)")
        sparsity = data.sparsity
    sp = sparsity_frame(sparsity)
    sp = sp[sp["seed"] == seed] if len(sp) else sp
    if models is not None:
        sp = sp[sp["model"].isin(list(models))]
    if sp.empty:
        which = f" and models {list(models)}" if models else ""
        raise ValueError(f"no sparsity rows for seed {seed}{which}")
    summary = sparsity_summary(sp)
    agree = agreement_rows(maps, seed=seed, comparison=comparison, model=models, method=methods)
    have = summary[["model", "seed", "layer"]]
    agree = agree.merge(have, on=["model", "seed", "layer"], how="inner")
    if agree.empty:
        raise ValueError("no agreement rows at the layers whose active channels were counted")
    out = sensitivity_tests(agree, ["model", "layer", "seed", "method"], threshold, alpha, n_boot, boot_seed)
    out = out.merge(summary[["model", "seed", "layer", "layer_name", "n_channels", "tau", "median_active",
                             "median_fraction"]], on=["model", "seed", "layer"], how="left")
    per_image = agree.merge(sp[["model", "seed", "layer", "image_id", "active_channels"]],
                            on=["model", "seed", "layer", "image_id"], how="left")
    rho = {key: spearman(g["active_channels"], g["agreement"])
           for key, g in per_image.groupby(["model", "layer", "method"], sort=False)}
    keys = list(zip(out["model"], out["layer"], out["method"]))
    out["rho_images"] = [rho[k][0] for k in keys]
    out["p_rho_images"] = [rho[k][1] for k in keys]
    out["n_rho"] = [rho[k][2] for k in keys]
    front = ["model", "layer", "seed", "method", "Model", "Method", "layer_name", "n_channels",
             "median_active",
             "median_fraction", "n", "n_excluded", "median", "ci_low", "ci_high", "p", "p_fmt", "reject",
             "verdict",
             "rho_images", "p_rho_images", "n_rho"]
    out = out[front + [c for c in out.columns if c not in front]]
    return sort_layers(out, ["model", "layer", "method"])


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
        rf, pf, n = spearman(g["median_fraction"], g["median"])
        rc, pc, _ = spearman(g["median_active"], g["median"])
        rows.append({"method": method, "Method": DISPLAY_NAMES.get(method, method), "n_layers": n,
                     "rho_fraction": rf, "p_fraction": pf, "rho_count": rc, "p_count": pc,
                     "layers": ", ".join(f"{m} {lyr}" for m, lyr in zip(g["Model"], g["layer"]))})
    return sort_paper(pd.DataFrame(rows), ["method"])


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
        sp = sparsity_frame(sparsity)
        sp = sp[(sp["model"] == model) & (sp["seed"] == seed) & sp["layer"].isin(list(layers))]
        summ = sparsity_summary(sp).set_index("layer") if len(sp) else None
    maps = maps_frame(data)
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
    fid = fidelity_rows(maps_frame(data), k=k, layer=layer, seed=seed, model=models)
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
    return sort_paper(pd.DataFrame(rows), ["model"])


def fidelity_differences(data: Any, *, k: float | None = None, drop: str = "relative",
                         layer: str = "final_conv",
                         seed: int = 0, confidence: float = 0.95,
                         models: Sequence[str] | None = None) -> pd.DataFrame:
    """The paired differences behind Table III: per model and baseline the mean of ``CASE − method`` over the
    same images with its ``confidence`` t-interval (``ci_low``, ``ci_high``), ``d_z`` and both p-values (from
    :func:`table3_full`).  Positive = CASE's drop is higher."""
    full = table3_full(data, k=k, drop=drop, layer=layer, seed=seed, models=models)
    col = "relative_drop" if drop == "relative" else "drop"
    fid = fidelity_rows(maps_frame(data), k=k, layer=layer, seed=seed, model=models)
    rows = []
    for r in full[full["method"] != "case"].itertuples():
        g = fid[fid["model"] == r.model]
        case = g[g["method"] == "case"].set_index("image_id")[col]
        other = g[g["method"] == r.method].set_index("image_id")[col]
        d = (case.reindex(other.index) - other).to_numpy(float)  # ids equal: table3_full checked them
        n = len(d)
        se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        half = float(sps.t.ppf(0.5 + confidence / 2, n - 1) * se) if n > 1 else math.nan
        mean = float(d.mean()) if n else math.nan
        rows.append({"model": r.model, "method": r.method, "Model": r.Model, "Method": r.Method, "n": n,
                     "mean_diff": mean, "ci_low": mean - half, "ci_high": mean + half, "d_z": r.d_z,
                     "p_one_sided": r.p_one_sided, "p_two_sided": r.p_two_sided, "drop": drop,
                     "fidelity_k": r.fidelity_k})
    return sort_paper(pd.DataFrame(rows), ["model", "method"])


def histogram_summary(data: Any, *, threshold: float = 0.5, comparison: str = "top1_vs_top2", seed: int = 0,
                      **filters: Any) -> pd.DataFrame:
    """Figures 7–11 in numbers: per (model, layer, method) the images scored (``n``), the constant maps left
    out (``n_excluded``), the share of images whose agreement is below ``threshold`` (left of the red line)
    and the median agreement."""
    agree = agreement_rows(maps_frame(data), comparison=comparison, seed=seed, **filters)
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
    return sort_layers(pd.DataFrame(rows), ["model", "layer", "method"])


