"""The checks behind the claim records of :mod:`.claims` for the paper's results (Tables I–III, Figures 4–6;
the appendix, the diagnostic, the contrast set and the ground truth are in :mod:`.claim_checks_book`): one
function per claim, from the run (a
:class:`RunView`: the rows, the options of the view, and the tables already built) to an :class:`Outcome` —
whether the run supports the claim (``True``/``False``; ``None`` when the run lacks the data or a test could
not run) and this run's number as text.  The criteria are stated in each record and never adjusted to the
outcome.

Imports: :mod:`casekit.study` (row views), :mod:`casekit.cam` (method names), :mod:`.naming`, :mod:`.tables`,
:mod:`.analyses`, :mod:`.evidence`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy.stats import ConstantInputWarning

from ..study.rows import fidelity_rows
from .analyses import (
    class_active_channels,
    layer_comparison,
    seed_agreement,
    sparsity_correlation,
    sparsity_sensitivity,
)
from .naming import BASELINES, model_display, num, pct, ptext
from .tables import table1_full, table2_full, table3_full


class Outcome(NamedTuple):
    """What one claim's check found: ``supported`` (True / False / None) and this run's number as text."""

    supported: bool | None
    this_run: str


@dataclass
class RunView:
    """What claims are checked against: ``data`` (the maps rows, a Results, or for the contrast claims the
    :func:`casekit.report.evidence.contrast_table` summary), the ``sparsity`` rows, the view's ``options``
    (threshold, alpha, layers, …) and a cache of the tables the checks share (each built once)."""

    data: Any
    sparsity: pd.DataFrame | None = None
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(name)

    def table(self, key: Any, build: Callable[[], Any],
              errors: tuple[type[Exception], ...] = (ValueError,)) -> Any:
        """``build()`` once per ``key``; None when it raises one of ``errors`` (the run lacks that data)."""
        if key not in self.cache:
            try:
                self.cache[key] = build()
            except errors as err:
                self.cache[key] = None
                self.cache[("error", key)] = str(err)
        return self.cache[key]

    def error(self, key: Any) -> str:
        """Why the table ``key`` could not be built ("" when it could)."""
        return self.cache.get(("error", key), "")


def every(states: Sequence[bool | None]) -> bool | None:
    """A claim "on every model": False if any model contradicts it, else None if any could not be checked."""
    if any(s is False for s in states):
        return False
    return None if any(s is None for s in states) or not states else True


# ----------------------------------------------------------------------------------------------- RQ1 (Table
# I)


def _t1(run: RunView) -> pd.DataFrame | None:
    return run.table(("t1", run.layer),
                     lambda: table1_full(run.data, layer=run.layer, threshold=run.threshold,
                                                            alpha=run.alpha, n_boot=run.n_boot))


def rq1_case_rejects(run: RunView) -> Outcome:
    t1 = _t1(run)
    if t1 is None or not (t1["method"] == "case").any():
        return Outcome(None, "no CASE results")
    c = t1[t1["method"] == "case"]
    txt = "; ".join(f"{r.Model}: {ptext(r.p)}, median {pct(r.median)}" for r in c.itertuples())
    return Outcome(bool(c["reject"].all()), txt)


def rq1_tests_agree(run: RunView) -> Outcome:
    """The Wilcoxon (pseudo-median) and the exact sign test (median) give the same verdict everywhere."""
    t1 = _t1(run)
    if t1 is None or "conflict" not in t1.columns:
        return Outcome(None, "no RQ1 results")
    bad = t1[t1["conflict"].astype(bool)]
    txt = f"{len(bad)} of {len(t1)} (model, method) tests conflict"
    if len(bad):
        txt += ": " + "; ".join(f"{r.Model} {r.Method} (median {pct(r.median)}, {ptext(r.p)}, sign "
                                f"{ptext(r.sign_p)})" for r in bad.itertuples())
    return Outcome(bool(bad.empty), txt)


def rq1_case_lowest(run: RunView) -> Outcome:
    t1 = _t1(run)
    if t1 is None or not (t1["method"] == "case").any():
        return Outcome(None, "no CASE results")
    lows = []
    for model, g in t1.groupby("model", sort=False):
        others = g[g["method"] != "case"]["median"]
        cm = float(g[g["method"] == "case"]["median"].iloc[0])
        lows.append((model_display(model), cm, float(others.min()) if len(others) else math.nan))
    ok = all(cm < om for _, cm, om in lows) if all(not math.isnan(om) for _, _, om in lows) else None
    return Outcome(ok, "; ".join(f"{m}: CASE {pct(cm)} vs lowest baseline {pct(om)}"
                                 + (" (a tie: not below)" if cm == om else "") for m, cm, om in lows))


def rq1_densenet_most(run: RunView) -> Outcome:
    t1 = _t1(run)
    if t1 is None or run.sparse_model not in set(t1["model"]):
        return Outcome(None, f"no {run.sparse_model!r} results at {run.layer!r}")
    counts = t1.groupby("model")["reject"].sum()
    n_methods = t1.groupby("model")["method"].size()
    dn = int(counts[run.sparse_model])
    best = dn >= int(counts.max())
    ok = bool(best and dn >= 5 and n_methods[run.sparse_model] == 6)
    txt = ", ".join(f"{model_display(m)}: {int(v)}/{int(n_methods[m])}" for m, v in counts.items())
    return Outcome(ok if n_methods[run.sparse_model] == 6 else None, txt)


# ----------------------------------------------------------------------------------------------- seeds
# (Figure 4)


def _seeds(run: RunView) -> tuple[np.ndarray, pd.DataFrame | None]:
    maps = run.data.maps if hasattr(run.data, "maps") else run.data
    seeds = maps.loc[(maps["model"] == run.sparse_model) & (maps["layer"] == run.layer), "seed"].unique()
    if len(seeds) < 2:
        return seeds, None
    sa = run.table(("seeds", run.sparse_model), lambda: seed_agreement(
        maps, model=run.sparse_model, layer=run.layer, threshold=run.threshold, alpha=run.alpha,
        n_boot=run.n_boot))
    return seeds, sa


def seeds_all_reject(run: RunView) -> Outcome:
    seeds, sa = _seeds(run)
    if sa is None:
        return Outcome(None, f"{len(seeds)} seed(s) in this run")
    fails = sa[~sa["reject"]]
    txt = (f"{int(sa['reject'].sum())} of {len(sa)} (seed, method) tests reject"
           + (": fails " + ", ".join(f"{r.Method} seed {r.seed}" for r in fails.itertuples()) if len(fails)
              else ""))
    return Outcome(bool(sa["reject"].all()), txt)


def seeds_stable_ranking(run: RunView) -> Outcome:
    seeds, sa = _seeds(run)
    if sa is None:
        return Outcome(None, f"{len(seeds)} seed(s) in this run")
    wide = sa.pivot(index="method", columns="seed", values="mean")
    with warnings.catch_warnings():  # a constant column (e.g. all seeds at 0 %) has no ρ: NaN, said below
        warnings.simplefilter("ignore", ConstantInputWarning)
        rho = wide.corr(method="spearman").to_numpy()
    iu = np.triu_indices_from(rho, 1)
    mean_rho = float(np.nanmean(rho[iu])) if len(iu[0]) else math.nan
    return Outcome(None if math.isnan(mean_rho) else bool(mean_rho >= 0.8),
                   f"mean pairwise Spearman ρ of the methods' mean agreement = {mean_rho:.2f} over "
                   f"{len(seeds)} seeds")


# ----------------------------------------------------------------------------------------------- sparsity
# (Figs 5–6)


def _channel_medians(run: RunView) -> pd.DataFrame | None:
    if run.sparsity is None or len(run.sparsity) == 0:
        return None

    def build() -> pd.DataFrame:
        cac = class_active_channels(run.sparsity, seed=0)
        return cac.groupby(["model", "layer"]).agg(median=("mean_active_channels", "median"),
                                                   frac=("fraction_active", "median"),
                                                   n_channels=("n_channels", "first")).reset_index()
    return run.table("channel medians", build)


def _final_layers(run: RunView) -> tuple[pd.Series, pd.DataFrame] | None:
    med = _channel_medians(run)
    if med is None:
        return None
    final = med[med["layer"] == run.layer].set_index("model")
    if run.sparse_model not in final.index or len(final) < 2:
        return None
    return final.loc[run.sparse_model], final.drop(index=run.sparse_model)


def _no_sparsity(run: RunView) -> Outcome:
    if _channel_medians(run) is None:
        return Outcome(None, "no sparsity results")
    return Outcome(None, "needs the final-conv sparsity of DenseNet and at least one other family")


def sparsity_fewer_channels(run: RunView) -> Outcome:
    found = _final_layers(run)
    if found is None:
        return _no_sparsity(run)
    d, others = found
    txt = (f"{model_display(run.sparse_model)}: {d['median']:.1f} of {int(d['n_channels'])} channels; "
           + ", ".join(f"{model_display(m)}: {r['median']:.1f} of {int(r['n_channels'])}" for m,
                       r in others.iterrows()))
    return Outcome(bool((d["median"] < others["median"]).all()), txt)


def sparsity_smaller_fraction(run: RunView) -> Outcome:
    found = _final_layers(run)
    if found is None:
        return _no_sparsity(run)
    d, others = found
    txt = (f"{model_display(run.sparse_model)}: {pct(d['frac'])}; "
           + ", ".join(f"{model_display(m)}: {pct(r['frac'])}" for m, r in others.iterrows()))
    return Outcome(bool((d["frac"] < others["frac"]).all()), txt)


def norm5_nearly_all_active(run: RunView) -> Outcome:
    med = _channel_medians(run)
    if med is None:
        return Outcome(None, "no sparsity results")
    alt = med[(med["model"] == run.sparse_model) & (med["layer"] == run.alt_layer)]
    if not len(alt):
        return Outcome(None, "no norm5 sparsity results")
    a = alt.iloc[0]
    return Outcome(bool(a["frac"] > run.nearly_all),
                   f"median class: {a['median']:.1f} of {int(a['n_channels'])} channels ({pct(a['frac'])})")


# ----------------------------------------------------------------------------------------------- norm5
# (Table II)


def _norm5(run: RunView) -> pd.DataFrame | None:
    t2 = run.table(("t2", run.sparse_model), lambda: table2_full(
        run.data, model=run.sparse_model, layers=(run.layer, run.alt_layer), threshold=run.threshold,
        alpha=run.alpha, n_boot=run.n_boot))
    return None if t2 is None else t2[t2["layer"] == run.alt_layer]


def norm5_baselines_fail(run: RunView) -> Outcome:
    n5 = _norm5(run)
    if n5 is None:
        return Outcome(None, "no norm5 results")
    base = n5[n5["method"].isin(BASELINES)]
    fail = base[~base["reject"]]
    return Outcome(bool(len(fail) >= 3) if len(base) == 5 else None,
                   f"{len(fail)} of {len(base)} baselines fail: "
                   + ", ".join(f"{r.Method} {ptext(r.p)}" for r in base.itertuples()))


def norm5_case_rejects(run: RunView) -> Outcome:
    n5 = _norm5(run)
    if n5 is None:
        return Outcome(None, "no norm5 results")
    c = n5[n5["method"] == "case"]
    if not len(c):
        return Outcome(None, "no CASE results")
    return Outcome(bool(c["reject"].iloc[0]),
                   f"CASE {ptext(c['p'].iloc[0])}, median {pct(c['median'].iloc[0])}")


def _layers(run: RunView) -> pd.DataFrame | None:
    return run.table("layer comparison", lambda: layer_comparison(
        run.data, run.sparsity, model=run.sparse_model, layers=(run.layer, run.alt_layer), seed=run.seed,
        threshold=run.threshold, alpha=run.alpha, n_boot=run.n_boot, boot_seed=run.boot_seed
    ).set_index("layer"))


def conv_more_sensitive(run: RunView) -> Outcome:
    lc = _layers(run)
    if lc is None:
        return Outcome(None, "no results at both layers")
    c, n5 = lc.loc[run.layer], lc.loc[run.alt_layer]
    return Outcome(bool(c["n_reject"] > n5["n_reject"]),
                   f"{run.layer}: {c['n_reject']}/{c['n_methods']} ({c['rejecting']}); "
                   f"{run.alt_layer}: {n5['n_reject']}/{n5['n_methods']} ({n5['rejecting']})")


def norm5_denser(run: RunView) -> Outcome:
    lc = _layers(run)
    if lc is None:
        return Outcome(None, "no results at both layers")
    c, n5 = lc.loc[run.layer], lc.loc[run.alt_layer]
    if math.isnan(c["median_fraction"]) or math.isnan(n5["median_fraction"]):
        return Outcome(None, "no sparsity results at both layers")
    return Outcome(bool(n5["median_fraction"] > c["median_fraction"]),
                   f"{run.layer}: {c['median_active']:.1f} of {c['n_channels']:.0f} "
                   f"({pct(c['median_fraction'])}); {run.alt_layer}: {n5['median_active']:.1f} of "
                   f"{n5['n_channels']:.0f} ({pct(n5['median_fraction'])})")


# ----------------------------------------------------------------------------------------------- sparsity ↔
# sensitivity


def _relation(run: RunView) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    ss = run.table("sparsity sensitivity", lambda: sparsity_sensitivity(
        run.data, run.sparsity, seed=run.seed, threshold=run.threshold, alpha=run.alpha, n_boot=run.n_boot,
        boot_seed=run.boot_seed), errors=(ValueError, TypeError))
    if ss is None:
        return None
    per_layer = ss.groupby(["model", "layer"], sort=False).agg(
        Model=("Model", "first"), median_active=("median_active", "first"),
        n_channels=("n_channels", "first"), median_fraction=("median_fraction", "first"),
        n_reject=("reject", "sum"), n_methods=("method", "size"),
        n_tested=("reason", lambda s: int((s == "").sum()))).reset_index()
    return ss, per_layer


def _sparsest_most_rejecting(run: RunView, col: str) -> Outcome:
    found = _relation(run)
    if found is None:
        return Outcome(None, "no layer with both sparsity and agreement results")
    _, per_layer = found

    def label(r: Any) -> str:
        return f"{r['Model']} {r['layer']}"

    listing = "; ".join(f"{label(r)}: {r['median_active']:.1f} of {int(r['n_channels'])} "
                        f"({pct(r['median_fraction'])}), {int(r['n_reject'])}/{int(r['n_methods'])} reject"
                        for _, r in per_layer.iterrows())
    testable = bool((per_layer["n_tested"] > 0).all()) and len(per_layer) > 1
    sparsest = per_layer.loc[per_layer[col].idxmin()]
    ok = bool(sparsest["n_reject"] >= per_layer["n_reject"].max()) if testable else None
    return Outcome(ok, f"sparsest: {label(sparsest)}. " + listing)


def sparsest_count(run: RunView) -> Outcome:
    return _sparsest_most_rejecting(run, "median_active")


def sparsest_fraction(run: RunView) -> Outcome:
    return _sparsest_most_rejecting(run, "median_fraction")


def denser_more_overlap(run: RunView) -> Outcome:
    found = _relation(run)
    if found is None:
        return Outcome(None, "no layer with both sparsity and agreement results")
    corr = sparsity_correlation(found[0])
    valid = corr.dropna(subset=["rho_fraction"])
    n_pos = int((valid["rho_fraction"] > 0).sum())
    ok = bool(n_pos >= 4) if len(valid) == len(corr) == 6 else None
    return Outcome(ok,
                   f"ρ > 0 for {n_pos} of {len(valid)} methods over {int(corr['n_layers'].max())} layers: "
                   + ", ".join(f"{r.Method} {r.rho_fraction:+.2f}" for r in valid.itertuples()))


# ----------------------------------------------------------------------------------------------- fidelity
# (Table III)


def _t3_key(run: RunView, drop: str) -> tuple:
    return ("t3", run.k, drop, run.seed)


def _t3(run: RunView, drop: str = "relative") -> pd.DataFrame | None:
    # the claims test the pairs without constant maps (a constant map blanks nothing: its 0 is no drop)
    return run.table(_t3_key(run, drop), lambda: table3_full(
        run.data, k=run.k, drop=drop, layer=run.layer, seed=run.seed, alpha=run.alpha,
        constant_pairs="excluded"))


def _t3_missing(run: RunView, drop: str = "relative") -> Outcome:
    return Outcome(None, f"k = {run.k}: {run.error(_t3_key(run, drop))}")


def _higher_lower(t3: pd.DataFrame, case_mean: bool) -> tuple[list[str], bool]:
    parts, ok = [], True
    for model, g in t3.groupby("model", sort=False):
        better = g[g["two_sided_verdict"] == "method significantly higher"]
        worse = g[g["two_sided_verdict"] == "CASE significantly higher"]
        ok &= len(better) <= 2
        names = f" ({', '.join(better['Method'])})" if len(better) else ""
        if case_mean:
            parts.append(f"{model_display(model)}: CASE "
                         f"{num(float(g.loc[g['method'] == 'case', 'mean'].iloc[0]))}, {len(better)} "
                         f"baseline(s) significantly higher{names}, {len(worse)} "
                         "significantly lower")
        else:
            parts.append(f"{model_display(model)}: {len(better)} higher{names}, {len(worse)} lower")
    return parts, ok


def fidelity_comparable(run: RunView) -> Outcome:
    """The study-wide version (:func:`casekit.report.claims.claims`): model seed 0, the run's k."""
    t3 = run.table(("t3 study", run.layer), lambda: table3_full(run.data, layer=run.layer, alpha=run.alpha,
                                                                constant_pairs="excluded"))
    if t3 is None:
        return Outcome(None, "no fidelity results with CASE")
    parts, ok = _higher_lower(t3, case_mean=True)
    return Outcome(bool(ok), "; ".join(parts))


def _comparable(run: RunView, drop: str) -> Outcome:
    t3 = _t3(run, drop)
    if t3 is None:
        return _t3_missing(run, drop)
    parts, ok = _higher_lower(t3, case_mean=False)
    untested = t3[(t3["method"] != "case") & t3["p_two_sided"].isna()]
    return Outcome(None if len(untested) else bool(ok), "; ".join(parts))


def fidelity_comparable_relative(run: RunView) -> Outcome:
    return _comparable(run, "relative")


def fidelity_comparable_absolute(run: RunView) -> Outcome:
    return _comparable(run, "absolute")


def _by_model(run: RunView) -> dict[str, pd.DataFrame] | None:
    t3 = _t3(run)
    return None if t3 is None else {model_display(m): g for m, g in t3.groupby("model", sort=False)}


def _significant(g: pd.DataFrame, alpha: float) -> set[str]:
    return set(g.loc[(g["method"] != "case") & (g["p_two_sided"] < alpha), "Method"])


def _untested(g: pd.DataFrame) -> bool:
    return bool(g.loc[g["method"] != "case", "p_two_sided"].isna().any())


def fidelity_densenet_resnet(run: RunView) -> Outcome:
    by = _by_model(run)
    if by is None:
        return _t3_missing(run)
    both = [by.get("DenseNet"), by.get("ResNet")]
    if any(g is None for g in both):
        return Outcome(None, "DenseNet or ResNet missing")
    txt = "; ".join(f"{name}: " + (", ".join(sorted(_significant(g, run.alpha))) or "none")
                    for name, g in zip(("DenseNet", "ResNet"), both))
    return Outcome(None if any(_untested(g) for g in both)
                   else not any(_significant(g, run.alpha) for g in both),
                   "significantly different: " + txt)


def _model_table3(run: RunView, name: str) -> pd.DataFrame | Outcome:
    """Table III's rows of one model (display name), or the Outcome that says why there are none."""
    by = _by_model(run)
    if by is None:
        return _t3_missing(run)
    g = by.get(name)
    return Outcome(None, f"no {name} results") if g is None else g


def fidelity_convnext(run: RunView) -> Outcome:
    g = _model_table3(run, "ConvNeXt")
    if isinstance(g, Outcome):
        return g
    sel = g[g["Method"].isin(["AblationCAM", "LayerCAM"])]
    txt = ", ".join(f"{r.Method}: {ptext(r.p_one_sided)} (mean {num(r.mean)} vs CASE {num(r.mean_case)})"
                    for r in sel.itertuples())
    return Outcome(None if sel["p_one_sided"].isna().any() or len(sel) < 2
                   else bool(sel["case_higher"].all()), txt)


def fidelity_vgg(run: RunView) -> Outcome:
    g = _model_table3(run, "VGG")
    if isinstance(g, Outcome):
        return g
    found = _significant(g, run.alpha)
    return Outcome(None if _untested(g) else found == {"Grad-CAM++", "LayerCAM", "ScoreCAM"},
                   "significantly different: " + (", ".join(sorted(found)) or "none"))


def run_fidelity_ks(run: RunView) -> list[float]:
    """The ks of the fidelity chapter by default: each run's ``fidelity_k`` and 50 % (the reference
    code's)."""
    fid = fidelity_rows(run.data.maps if hasattr(run.data, "maps") else run.data, layer=run.layer,
                        seed=run.seed)
    default = sorted(set(fid["fidelity_k"].dropna())) if len(fid) else []
    return [*default, *([0.5] if 0.5 not in default else [])]
