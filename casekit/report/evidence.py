"""What the demo benchmark's ground truth and the worked examples show: constant maps per method
(:func:`degenerate_table`), the contrast-set study summarised (:func:`contrast_table`), where the maps' top-k
pixels land on the classes' unique and shared parts (:func:`evidence_table`, :func:`evidence_comparison`), and
CASE's projection on a few images (:func:`projection_table`).

Imports: :mod:`casekit.study` (row views, constants), :mod:`casekit.evaluation`, :mod:`.naming`,
:mod:`.tables`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..cam.contrast import DECISIONS
from ..evaluation.metrics import unique_evidence
from ..study.config import COMPARISONS, STRATEGIES
from ..study.rows import agreement_rows, degenerate_maps
from ..study.runner import Results
from .naming import DISPLAY_NAMES, PAPER_METHOD_ORDER, model_display, sort_paper
from .tables import maps_frame, sensitivity_tests

__all__ = [
    "degenerate_table", "contrast_table", "evidence_table", "evidence_comparison", "projection_table",
    "contrast_decision_table", "projection_comparison",
]


def projection_comparison(rows: pd.DataFrame, *, comparison: str = "top1_vs_top2", threshold: float = 0.5,
                          alpha: float = 0.05, n_boot: int = 2_000, boot_seed: int = 0) -> pd.DataFrame:
    """The projection study (:func:`casekit.study.contrast_study.projection_study`) summarised: one row per
    (model, projection) with Table I's test of CASE's agreements (n, median, Wilcoxon p, sign test,
    conflict), both projections on the same images and targets."""
    if not isinstance(rows, pd.DataFrame) or "projection" not in rows.columns:
        raise ValueError("rows must be the DataFrame of projection_study (with a 'projection' column)")
    parts = [agreement_rows(g, comparison=comparison).assign(projection=p)
             for p, g in rows.groupby("projection", sort=False)]
    agree = pd.concat(parts, ignore_index=True)
    out = sensitivity_tests(agree, ["model", "layer", "seed", "projection", "method"], threshold, alpha,
                            n_boot, boot_seed)
    cols = ["Model", "projection", "n", "n_excluded", "median", "p", "p_fmt", "reject", "sign_p",
            "sign_reject", "conflict"]
    return sort_paper(out, ["model"])[["model", *cols]]



def contrast_decision_table(res: Any) -> pd.DataFrame:
    """How CASE's contrast slots were decided in each run: by the held-out confusion counts, by the tiebreak
    (mean softmax probabilities) or by class index (:func:`casekit.cam.contrast.contrast_decisions`) → one
    row per run: ``run, model, seed, layer, contrast_k, contrast_tiebreak, counts, tiebreak, index,
    slots``.  ``res``: a :class:`~casekit.study.runner.Results` of :func:`~casekit.study.runner.run_all`, or
    a results folder (the decisions are in each run's stored config; e.g. ``<results>/contrast_study``)."""
    records = []
    if isinstance(res, Results):
        for r in res.runs:
            if r.contrast_decisions is not None:
                records.append((r.config.name, r.config.to_dict(), r.contrast_decisions))
    elif isinstance(res, (str, os.PathLike)):
        for meta in sorted(Path(res).glob("*/maps/store.json")):
            cfg = json.loads(meta.read_text()).get("config", {})
            if cfg.get("contrast_decisions") is not None:
                records.append((meta.parent.parent.name, cfg.get("run", {}), cfg["contrast_decisions"]))
    else:
        raise TypeError(f"res must be a Results or a results folder, got {type(res).__name__}")
    rows = [{"run": name, "model": c.get("model"), "seed": c.get("seed"), "layer": c.get("layer"),
             "contrast_k": c.get("contrast_k"), "contrast_tiebreak": c.get("contrast_tiebreak", "none"),
             **{k: int(d.get(k, 0)) for k in DECISIONS}, "slots": int(sum(d.values()))}
            for name, c, d in records]
    cols = ["run", "model", "seed", "layer", "contrast_k", "contrast_tiebreak", *DECISIONS, "slots"]
    return pd.DataFrame(rows, columns=cols)


def _one_row_per_map(df: pd.DataFrame, where: str) -> None:
    """Refuse rows that repeat a map (same model, seed, layer, method, image and target), e.g. two runs mixed:
    they would be counted twice (or break the top-1 lookup) instead of raising as Table I does."""
    key = ["model", "seed", "layer", "method", "image_id", "target"]
    dup = df.duplicated(subset=key)
    if dup.any():
        raise ValueError(f"image ids repeat{where}: {sorted(set(df.loc[dup, 'image_id'].tolist()))[:5]}; "
                         "one row per (model, seed, layer, method, image, target) is expected (mixing two "
                         "runs?)")


def degenerate_table(data: Any, *, layer: str = "final_conv", seed: int = 0,
                     targets: Sequence[str] = ("top1", "top2"), what: str = "constant") -> pd.DataFrame:
    """Share of constant maps (no top-k set, e.g. all zero after the ReLU; ``what="constant"``) or of partly
    degenerate maps (top-k set partly picked by the tie order; ``"partly_degenerate"``), or both side by
    side (``"both"``: a third column level ``kind``): rows = methods in the paper's order, columns =
    (model, target[, kind]), values = fractions in [0, 1] of the run's maps for that target."""
    kinds = {"constant": ["constant"], "partly_degenerate": ["partly_degenerate"],
             "both": ["constant", "partly_degenerate"]}
    if what not in kinds:
        raise ValueError(f"what must be one of {sorted(kinds)}, got {what!r}")
    maps = maps_frame(data)
    if what != "constant" and "partly_degenerate" not in maps.columns:
        raise ValueError("these rows do not record partly degenerate maps (an older run): recompute it")
    deg = degenerate_maps(maps, layer=layer, seed=seed, target=list(targets))
    if deg.empty:
        raise ValueError(f"no maps for layer={layer!r}, seed={seed}, targets {list(targets)}")
    deg = sort_paper(deg, ["model", "method"])
    deg["Method"] = deg["method"].map(DISPLAY_NAMES)
    deg["Model"] = deg["model"].map(model_display)
    if what == "both":
        long = pd.concat([deg.assign(kind=k, value=deg[f"fraction_{k}"]) for k in kinds[what]])
        wide = long.pivot(index="Method", columns=["Model", "target", "kind"], values="value")
    else:
        wide = deg.pivot(index="Method", columns=["Model", "target"], values=f"fraction_{what}")
    order = [DISPLAY_NAMES[m] for m in PAPER_METHOD_ORDER if DISPLAY_NAMES[m] in wide.index]
    models = list(dict.fromkeys(deg["Model"]))
    if what == "both":
        cols = [(m, t, k) for m in models for t in targets for k in kinds[what] if (m, t, k) in wide.columns]
    else:
        cols = [(m, t) for m in models for t in targets if (m, t) in wide.columns]
    wide = wide.loc[order, cols]
    wide.columns.names = ["model", "target", "kind"] if what == "both" else ["model", "target"]
    return wide


def contrast_table(rows: pd.DataFrame, *, comparison: str | Sequence[str] | None = None,
                   threshold: float = 0.5,
                   alpha: float = 0.05, n_boot: int = 2_000, boot_seed: int = 0) -> pd.DataFrame:
    """The contrast-set study (:func:`casekit.study.contrast_study.contrast_study`) summarised: one row per
    (model, strategy, K, comparison, method) with the class-sensitivity test of the agreements (n, excluded
    constant maps, median and bootstrap CI, one-sided Wilcoxon p, Holm over the table, verdict, as Table I)
    and the mean fraction of the top-k pixels on the true class's unique part and on the shared group part,
    for the top-1 map (``unique_top1``, ``shared_top1``) and for the other map (``unique_other``,
    ``shared_other``), over the images whose two maps both have a top-k set (NaN on data without part
    masks)."""
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"rows must be the DataFrame of contrast_study, got {type(rows).__name__}")
    need = {"contrast_strategy", "contrast_k"}
    if not need <= set(rows.columns):
        raise ValueError(f"rows lacks column(s) {sorted(need - set(rows.columns))}: pass the rows of "
                         "contrast_study")
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
    out = sensitivity_tests(agree, groups, threshold, alpha, n_boot, boot_seed)
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
    return sort_paper(out, ["model", "_s", "contrast_k", "_c", "method"]).drop(columns=["_s", "_c"])


def evidence_table(data: Any, *, layer: str = "final_conv", seed: int = 0) -> pd.DataFrame:
    """The demo benchmark's ground truth: per (model, method, target) the mean fraction of a map's top-k
    pixels on the true class's unique part and on its group's shared part (NaN-free maps only), with n and
    the number of constant maps left out."""
    maps = maps_frame(data)
    maps = maps[(maps["layer"] == layer) & (maps["seed"] == seed)]
    if maps["unique_evidence"].notna().sum() == 0:
        raise ValueError("the results hold no evidence scores (the data has no part masks)")
    g = maps.groupby(["model", "method", "target"], sort=False)
    out = g.agg(n=("image_id", "size"), n_excluded=("unique_evidence", lambda s: int(s.isna().sum())),
                unique_evidence=("unique_evidence", "mean"),
                shared_evidence=("shared_evidence", "mean")).reset_index()
    out["Method"] = out["method"].map(DISPLAY_NAMES)
    out["Model"] = out["model"].map(model_display)
    return sort_paper(out, ["model", "method", "target"])


def evidence_comparison(data: Any, *, layer: str = "final_conv", seed: int = 0,
                        comparison: str | Sequence[str] | None = None, areas: pd.DataFrame | None = None,
                        k: float = 0.05) -> pd.DataFrame:
    """The ground truth behind each comparison (demo benchmark): one row per (model, method, comparison) with
    the images whose two maps both have a top-k set (``n``; ``n_excluded`` the others), the median top-k
    agreement, and the mean fraction of the top-k pixels of the top-1 (= true class) map and of the other map
    (top-2 or sibling) on the true class's **unique** part (``unique_top1``, ``unique_other``) and on its
    group's **shared** part (``shared_top1``, ``shared_other``).

    A class-specific explanation of the true class lands on its unique part; the other class's map should not.
    With ``areas`` (:func:`casekit.study.examples.part_areas`) two reference columns over the same images
    (NaN without): ``unique_chance`` (mean unique-part area: the precision of a random top-k set) and
    ``unique_ceiling`` (mean ``min(1, area / k)``: the best precision a top-k set can reach).
    Empty (with these columns) when the data has no part masks (e.g. the paper profile)."""
    maps = maps_frame(data)
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
    return sort_paper(out, ["model", "_c", "method"])[cols]


def _check_k(k: float) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], got {k!r}")
    return float(k)


def projection_table(example: Mapping[str, Any], *, k: float = 0.05) -> pd.DataFrame:
    """CASE's projection on a few images (:func:`casekit.study.examples.case_example`): per image and target
    the class, its contrast classes, ``cos(w_u, w̄)``, the share ``‖w⊥‖ / ‖w_u‖`` of the target's weight
    vector that CASE keeps, and (with part masks) the fraction of the top-k pixels of the Grad-CAM map
    (``w_u``) and of the CASE map (``w⊥``) on the true class's unique part."""
    v = example["vectors"]
    B, T = v.targets.shape
    masks = example.get("masks")
    ev = {}
    if masks is not None:
        um = masks["unique"][:, None].to(v.gradcam.device)
        ev = {"unique (Grad-CAM)": unique_evidence(v.gradcam, um, k),
              "unique (CASE)": unique_evidence(v.case, um, k)}
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

