"""Views of a run's ``maps`` rows: agreement rows (one per comparison of two maps), fidelity rows (the top-1
maps' confidence drops at a k), and how often maps are constant.

Imports: :mod:`casekit.cam` (method names), :mod:`.config`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..cam.engine import canonical_method, finalize_maps
from .config import k_suffix


def _filter(df: pd.DataFrame, filters: Mapping[str, Any]) -> pd.DataFrame:
    for col, value in filters.items():
        if value is None:
            continue
        if col not in df.columns:
            raise ValueError(f"cannot filter on {col!r}: the table has columns {list(df.columns)}")
        values = value if isinstance(value, (list, tuple, set)) else [value]
        if col == "method":
            values = [canonical_method(v) for v in values]
        df = df[df[col].isin(values)]
    return df


def agreement_rows(maps: pd.DataFrame, **filters: Any) -> pd.DataFrame:
    """One row per (model, seed, layer, method, image_id, comparison) with the agreement of the two maps
    (``top1_vs_top2``: the paper's RQ1; ``true_vs_sibling``: the demo benchmark's) and whether either map
    was constant (``degenerate``) or partly degenerate (``partly_degenerate``: its top-k set partly picked by
    the tie order, :func:`casekit.evaluation.metrics.partly_degenerate`).
    ``filters``: column = value (or list of values), e.g. ``layer="final_conv"``."""
    need = {"target", "agreement", "comparison", "constant"}
    if not need <= set(maps.columns):
        raise ValueError(f"maps lacks column(s) {sorted(need - set(maps.columns))}: pass the maps table of "
                         "a run")
    second = maps[maps["target"] != "top1"]
    top1 = maps[maps["target"] == "top1"].set_index(["model", "seed", "layer", "method", "image_id"])
    idx = pd.MultiIndex.from_frame(second[["model", "seed", "layer", "method", "image_id"]])
    first_const = top1["constant"].reindex(idx).to_numpy()
    out = second.assign(constant_top1=first_const.astype(bool), constant_other=second["constant"].to_numpy())
    out["degenerate"] = out["constant_top1"] | out["constant_other"]
    if "partly_degenerate" in maps.columns:  # either map's top-k set partly picked by the tie order
        first_partly = top1["partly_degenerate"].reindex(idx).to_numpy().astype(bool)
        out["partly_degenerate"] = first_partly | second["partly_degenerate"].to_numpy().astype(bool)
    keep = ["model", "seed", "layer", "layer_name", "method", "image_id", "comparison", "label",
            "target_class",
            "agreement", "degenerate", "partly_degenerate", "constant_top1", "constant_other",
            "unique_evidence", "shared_evidence"]
    renames = {"target_class": "other_class", "unique_evidence": "other_unique_evidence",
               "shared_evidence": "other_shared_evidence"}
    out = out[[c for c in keep if c in out.columns]].rename(columns=renames)
    out = _filter(out, filters)
    return out.sort_values(["model", "seed", "layer", "method", "comparison", "image_id"],
                           kind="mergesort").reset_index(drop=True)


def fidelity_rows(maps: pd.DataFrame, k: float | None = None, **filters: Any) -> pd.DataFrame:
    """The top-1 maps' fidelity rows (one per model, seed, layer, method, image) with ``drop`` and
    ``relative_drop`` at ``k`` (default: each run's ``fidelity_k``; else one of the deletion-curve ks)."""
    if "p_before" not in maps.columns:
        raise ValueError("maps lacks the fidelity columns: pass the maps table of a run")
    out = maps[(maps["target"] == "top1") & maps["p_before"].notna()].copy()
    if k is not None:
        col = f"p_after_{k_suffix(k)}"
        if col not in out.columns:
            have = sorted(float(c.removeprefix("p_after_")) / 100 for c in out.columns
                          if c.startswith("p_after_"))
            raise ValueError(f"no deletion-curve value at k={k:g}; the runs measured k in {have}")
        out["p_after"] = out[col]
        out["drop"] = out["p_before"] - out["p_after"]
        out["relative_drop"] = out["drop"].clip(lower=0) / out["p_before"]
        out["fidelity_k"] = float(k)
    out = _filter(out, filters)
    return out.sort_values(["model", "seed", "layer", "method", "image_id"],
                           kind="mergesort").reset_index(drop=True)


def stored_maps(rows: pd.DataFrame) -> torch.Tensor:
    """The raw maps of ``rows`` (rows of a run's ``maps`` table, all of one layer resolution) → float32
    ``[N, h, w]``, in the rows' order: exactly the maps the engine made before
    :func:`casekit.finalize_maps`."""
    if "raw_map" not in rows.columns:
        raise ValueError("these rows hold no raw maps (written by an older casekit): recompute the run")
    sizes = rows[["map_h", "map_w"]].drop_duplicates()
    if len(sizes) > 1:
        raise ValueError(f"the rows mix map sizes {sizes.to_records(index=False).tolist()}; select one layer")
    if rows.empty:
        return torch.empty(0, 0, 0)
    h, w = int(sizes.iloc[0, 0]), int(sizes.iloc[0, 1])
    flat = np.frombuffer(b"".join(rows["raw_map"].tolist()), dtype=np.float32).reshape(len(rows), h, w)
    return torch.from_numpy(flat.copy())


def final_maps(rows: pd.DataFrame) -> torch.Tensor:
    """The maps of ``rows`` as the study used them: :func:`stored_maps` through :func:`casekit.finalize_maps`
    to the input size (``input_h × input_w``) → float32 ``[N, H, W]`` in [0, 1]."""
    raw = stored_maps(rows)
    size = rows[["input_h", "input_w"]].drop_duplicates()
    if len(size) != 1:
        raise ValueError("the rows mix input sizes; select one run")
    return finalize_maps(raw[:, None], (int(size.iloc[0, 0]), int(size.iloc[0, 1])))[:, 0]


def degenerate_maps(maps: pd.DataFrame, **filters: Any) -> pd.DataFrame:
    """How often maps are constant (no top-k set) or partly degenerate (top-k set partly picked by the tie
    order), per model, layer, method and target: ``n_maps, n_constant, fraction_constant,
    n_partly_degenerate, fraction_partly_degenerate`` (the last two only when the rows record it)."""
    df = _filter(maps, filters)
    cols = ["constant"] + (["partly_degenerate"] if "partly_degenerate" in df.columns else [])
    g = df.groupby(["model", "seed", "layer", "method", "target"], sort=True)[cols]
    out = g.agg(["size", "sum"])
    res = pd.DataFrame({"n_maps": out[("constant", "size")],
                        "n_constant": out[("constant", "sum")].astype(int)})
    res["fraction_constant"] = res["n_constant"] / res["n_maps"]
    if "partly_degenerate" in cols:
        res["n_partly_degenerate"] = out[("partly_degenerate", "sum")].astype(int)
        res["fraction_partly_degenerate"] = res["n_partly_degenerate"] / res["n_maps"]
    return res.reset_index()


