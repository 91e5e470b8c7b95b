"""The paper's claims — and casekit's own — as declarative records, and every chapter's comparison table as a
view of that one list.

A :class:`Claim` holds the section it is shown under, our paraphrase of the statement with its criterion (the
``claim`` column), the paper's wording of the evidence (``paper says``), the paper's own number and where it
stands, whether it is casekit's extension, and the check (:mod:`.claim_checks`) that turns a run's rows into
``(supported, this run's number)``.  The criteria are fixed in the records and never adjusted to the outcome.

Views (each returns ``section, claim, paper says, this run, supported``; ``supported`` True / False / None
as Python objects): :func:`claims` (the study-wide sections), :func:`chapter_claims` (chapters 04–07),
:func:`diagnostic_claims` (01), :func:`contrast_claims` (02), :func:`evidence_claims` (03); the records
themselves as a frame: :func:`claim_records`.  :func:`table3_vs_paper` puts Table III next to the paper's cell
by cell.

Imports: :mod:`casekit.study` (row views), :mod:`.naming`, :mod:`.tables`, :mod:`.claim_checks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from ..evaluation.stats import format_p
from ..study.runner import Results
from . import claim_checks as C
from . import claim_checks_book as B
from .naming import model_display, sort_paper
from .tables import maps_frame, table3_full

__all__ = [
    "Claim", "CLAIMS", "CHAPTERS", "STUDY_SECTIONS", "PAPER_TABLE3", "claim_records", "claims",
           "chapter_claims",
    "diagnostic_claims", "contrast_claims", "evidence_claims", "table3_vs_paper", "claims_frame",
]

COLUMNS = ["section", "claim", "paper says", "this run", "supported"]


@dataclass(frozen=True)
class Claim:
    """One claim: ``id``; ``section`` (the row's label; ``{kt}`` = the fidelity k); ``views`` (the tables that
    list it); ``statement`` (our paraphrase with the criterion; ``{name}`` = an option of the view, e.g.
    ``{threshold:.0%}``); ``paper`` (what the paper shows); ``paper_value`` and ``source`` (the paper's own
    number and where it stands); ``criterion`` (the test in words); ``extension`` (casekit's own claim, not
    the paper's); ``check`` (run → :class:`~casekit.report.claim_checks.Outcome`)."""

    id: str
    section: str
    views: tuple[str, ...]
    statement: str
    paper: str
    paper_value: str
    source: str
    criterion: str
    check: Callable[[C.RunView], C.Outcome]
    extension: bool = False


#: The paper's Fig. 5: norm5's KDE of active channels per class peaks around 1050 of its 1920 channels.
NORM5_PAPER_FRACTION = 1050 / 1920
#: Criterion of the norm5 density claim: more than half of the channels active (the paper's ≈ 55 %).
NORM5_MAJORITY = 0.5

CLAIMS: tuple[Claim, ...] = (
    # RQ1 — Table I ---------------------------------------------------------------------------------------
    Claim("rq1.case_rejects", "RQ1", ("study",), "CASE rejects H0 on every model",
          "CASE rejects H0 (median agreement ≥ 50 %) on all four models, p < .0001",
          "p < .0001 on all four models", "Table I; Sec. V-A",
          "CASE's one-sided Wilcoxon test rejects at alpha on every model", C.rq1_case_rejects),
    Claim("rq1.case_lowest", "RQ1", ("study",), "CASE has the lowest median agreement on every model",
          "CASE consistently produces lower top-k overlap between class labels than the baselines",
          "no number (text)", "Sec. V-A, VI-A",
          "CASE's median agreement is below every baseline's on every model", C.rq1_case_lowest),
    Claim("rq1.densenet_most", "RQ1", ("study",),
          "DenseNet is the most class-sensitive architecture (≥ 5 of 6 methods reject, and no family has "
          "more rejections)",
          "nearly all methods reject on DenseNet (6 of 6 in Table I), fewer on the others",
          "6 of 6 methods reject on DenseNet", "Table I; Sec. V-A",
          "DenseNet has ≥ 5 of 6 rejections and no family has more", C.rq1_densenet_most),
    Claim("rq1.tests_agree", "RQ1", ("study",),
          "the Wilcoxon verdicts are verdicts about the median: the exact sign test agrees on every (model, "
          "method) and no rejection has a sample median at or above the threshold",
          "the paper reads its Wilcoxon test as a test of the median agreement (H0: median ≥ 50 %)",
          "H0: median ≥ 50 %", "Sec. V-A; Table I",
          "no (model, method) row of Table I has conflict = True", C.rq1_tests_agree, extension=True),
    # seeds — Figure 4 ------------------------------------------------------------------------------------
    Claim("seeds.all_reject", "seeds", ("study",), "every method rejects H0 on every seed",
          "all methods reject on all five seeds (DenseNet-201, CIFAR-100)", "5 seeds × 6 methods reject",
          "Fig. 4; Sec. V-A1, VI-A", "every (seed, method) test rejects at alpha", C.seeds_all_reject),
    Claim("seeds.stable_ranking", "seeds", ("study",),
          "the methods' ranking is stable across seeds (mean pairwise Spearman ρ ≥ 0.8)",
          "relative rankings of the methods remain consistent across seeds", "no number (text)",
          "Fig. 4; Sec. V-A1", "mean pairwise Spearman ρ of the methods' mean agreement ≥ 0.8",
          C.seeds_stable_ranking),
    # sparsity — Figures 5–6 ------------------------------------------------------------------------------
    Claim("sparsity.fewer_channels", "sparsity", ("study", "sparsity"),
          "DenseNet's final conv has fewer active channels than the other families' attribution layers "
          "(median class, absolute count)",
          "fewer than 20 active channels per class vs several hundred (τ = 0.001)",
          "< 20 vs several hundred active channels per class", "Fig. 6; Sec. V-B",
          "DenseNet's median-class count is below every other family's", C.sparsity_fewer_channels),
    Claim("sparsity.smaller_fraction", "sparsity", ("study", "sparsity"),
          "… and also as a fraction of the layer's channels",
          "(the paper compares absolute counts of layers of different widths)", "none (counts only)",
          "Fig. 6", "DenseNet's median-class fraction is below every other family's",
          C.sparsity_smaller_fraction, extension=True),
    # sparsity ↔ sensitivity — chapter 04 -----------------------------------------------------------------
    Claim("relation.sparsest_count", "sparsity ↔ sensitivity", ("sparsity",),
          "the sparsest attribution layer (absolute count, median class) has the most methods rejecting H0",
          "DenseNet's final conv, fewer than 20 active channels per class, gives class-distinct maps with "
          "all six methods (Table I)", "< 20 channels; 6 of 6 reject", "Table I, Fig. 6; Sec. V-B",
          "no layer has more rejections than the sparsest (by count)", C.sparsest_count),
    Claim("relation.sparsest_fraction", "sparsity ↔ sensitivity", ("sparsity",),
          "the sparsest attribution layer (fraction of the layer's channels, median class) has the most "
          "methods rejecting H0", "(the paper compares counts only)", "none (counts only)", "Sec. V-B",
          "no layer has more rejections than the sparsest (by fraction)", C.sparsest_fraction,
          extension=True),
    Claim("relation.denser_more_overlap", "sparsity ↔ sensitivity", ("sparsity",),
          "denser layers give more overlapping maps: Spearman ρ(fraction of channels active, median "
          "agreement) over the layers is positive for at least 4 of the 6 methods",
          "dense activation may obscure class-specific attribution; sparse, selective layers support "
          "class-distinct maps (Sec. V-B)", "no number (text)", "Sec. V-B, VI-A",
          "ρ > 0 for ≥ 4 of 6 methods", C.denser_more_overlap, extension=True),
    # norm5 — Table II ------------------------------------------------------------------------------------
    Claim("norm5.baselines_fail", "norm5", ("study", "norm5"),
          "most baselines fail to reject H0 at norm5 (≥ 3 of 5)",
          "4 of 5 baselines fail at norm5 (only ScoreCAM rejects)", "4 of 5 baselines fail",
          "Table II; Sec. V-B",
          "≥ 3 of the 5 baselines do not reject at norm5", C.norm5_baselines_fail),
    Claim("norm5.case_rejects", "norm5", ("study", "norm5"), "CASE still rejects H0 at norm5",
          "CASE: p < 0.0001 at norm5", "p < 0.0001", "Table II; Sec. V-B", "CASE rejects at norm5",
          C.norm5_case_rejects),
    Claim("norm5.conv_more_sensitive", "norm5", ("norm5",),
          "the final conv gives more class-sensitive maps than norm5 (more methods reject H0)",
          "6 of 6 methods reject at the conv (Table I), 2 of 6 at norm5 (Table II)", "6 of 6 vs 2 of 6",
          "Tables I–II; Sec. V-B", "more methods reject at the final conv than at norm5",
          C.conv_more_sensitive),
    Claim("norm5.denser", "norm5", ("norm5",),
          "norm5 is denser than the final conv (median class, fraction of channels)",
          "fewer than 20 active channels at the conv vs ≈ 1050 at norm5 — as fractions of 32 and 1920 "
          "channels: under 62 % vs ≈ 55 %", "< 20 of 32 vs ≈ 1050 of 1920 channels", "Figs. 5–6; Sec. V-B",
          "norm5's median-class fraction is above the conv's", C.norm5_denser),
    Claim("norm5.nearly_all_active", "sparsity", ("study", "sparsity", "norm5"),
          "norm5 activates most of its channels (median class: more than {nearly_all:.0%} of the channels)",
          "\"nearly all channels are active\", with the KDE of active channels per class peaking around "
          "1050 of norm5's 1920 channels, i.e. about 55 % (the paper's own number, not ≥ 90 %)",
          "KDE peak ≈ 1050 of 1920 channels (≈ 55 %)", "Fig. 5; Sec. V-B",
          "median-class fraction at norm5 > nearly_all (default 50 %: the paper's 1050 / 1920 ≈ 55 % is a "
          "majority of the channels, not nearly all)", C.norm5_nearly_all_active),
    # fidelity — Table III ----------------------------------------------------------------------------------
    Claim("fidelity.comparable", "fidelity", ("study",),
          "CASE's fidelity is comparable to the baselines (on every model at most 2 of 5 baselines have a "
          "significantly higher mean drop, two-sided p < .05)",
          "on par overall: no baseline differs on DenseNet and ResNet; on VGG some baselines drop more",
          "see Table III", "Table III; Sec. V-C, VI-B",
          "≤ 2 of 5 baselines significantly higher on every model (two-sided)", C.fidelity_comparable),
    Claim("fidelity.comparable_relative", "fidelity ({kt}, relative drop)", ("fidelity",),
          "CASE's drop is comparable: on every model at most 2 of 5 baselines have a significantly higher "
          "mean drop (two-sided p < .05)", "on par overall (Table III, Sec. VI-B)", "see Table III",
          "Table III; Sec. VI-B", "≤ 2 of 5 baselines significantly higher on every model (relative drop)",
          C.fidelity_comparable_relative),
    Claim("fidelity.comparable_absolute", "fidelity ({kt}, absolute drop)", ("fidelity",),
          "CASE's drop is comparable: on every model at most 2 of 5 baselines have a significantly higher "
          "mean drop (two-sided p < .05)", "on par overall (Table III, Sec. VI-B)", "see Table III",
          "Table III; Sec. VI-B", "≤ 2 of 5 baselines significantly higher on every model (absolute drop)",
          C.fidelity_comparable_absolute, extension=True),
    Claim("fidelity.densenet_resnet", "fidelity ({kt})", ("fidelity",),
          "on DenseNet and ResNet no baseline differs significantly from CASE (two-sided p < .05)",
          "all p ≥ .05 on DenseNet and ResNet (Table III)", "all p ≥ .05", "Table III; Sec. V-C",
          "no baseline with two-sided p < alpha on DenseNet and ResNet", C.fidelity_densenet_resnet),
    Claim("fidelity.convnext", "fidelity ({kt})", ("fidelity",),
          "on ConvNeXt CASE's drop is significantly higher than AblationCAM's and LayerCAM's (one-sided p < "
          ".05)",
          "p = .00568 and .00988 (Table III)", "p = .00568 and .00988", "Table III; Sec. V-C",
          "one-sided p < alpha for AblationCAM and LayerCAM on ConvNeXt", C.fidelity_convnext),
    Claim("fidelity.vgg", "fidelity ({kt})", ("fidelity",),
          "on VGG exactly Grad-CAM++, LayerCAM and ScoreCAM differ significantly from CASE (two-sided p < "
          ".05)",
          "these three have p < .05 (Table III; the text calls all three higher, but Grad-CAM++'s mean "
          ".1020 is below CASE's .1317)", "p < .0001, < .0001, .00645", "Table III; Sec. V-C",
          "the set of baselines with two-sided p < alpha on VGG is exactly these three", C.fidelity_vgg),
    # appendix — Figures 7–11 -----------------------------------------------------------------------------
    Claim("appendix.vgg", "appendix", ("appendix",),
          "VGG ({layer}): for at least 4 of 6 methods most images lie at or above the {threshold:.0%} line "
          "(median)",
          "most methods class-insensitive, much of the mass above 50 % (Fig. 7)", "histograms only", "Fig. 7",
          "median agreement ≥ threshold for ≥ 4 of 6 methods", B.appendix_vgg),
    Claim("appendix.resnet", "appendix", ("appendix",),
          "ResNet: CASE's distribution lies lowest (lowest median agreement)",
          "CASE shifts agreement lower than the other methods (Fig. 8)", "histograms only", "Fig. 8",
          "CASE's median agreement below every baseline's", B.appendix_resnet),
    Claim("appendix.convnext", "appendix", ("appendix",),
          "ConvNeXt: CASE's distribution lies lowest (lowest median agreement)",
          "CASE keeps a clear advantage, skewed below the threshold (Fig. 9)", "histograms only", "Fig. 9",
          "CASE's median agreement below every baseline's", B.appendix_convnext),
    Claim("appendix.densenet_conv", "appendix", ("appendix",),
          "{densenet_name} ({layer}): for at least 4 of 6 methods most images lie below the {threshold:.0%} "
          "line (median)", "most methods give low-overlap maps (Fig. 10)", "histograms only", "Fig. 10",
          "median agreement < threshold for ≥ 4 of 6 methods", B.appendix_densenet_conv),
    Claim("appendix.densenet_norm5", "appendix", ("appendix",),
          "{densenet_name} ({alt_layer}): for at least 4 of 6 methods most images lie at or above the "
          "{threshold:.0%} line (median)", "most methods fail to give class-distinct maps (Fig. 11)",
          "histograms only", "Fig. 11", "median agreement ≥ threshold for ≥ 4 of 6 methods",
          B.appendix_densenet_norm5),
    # diagnostic — chapter 01 -----------------------------------------------------------------------------
    Claim("diagnostic.gradcam", "diagnostic", ("diagnostic",),
          "Grad-CAM's top-1 and top-2 maps are alike: it fails to reject H0 on more than half of the models",
          "fails on 3 of 4 models (ConvNeXt p = .8734, ResNet and VGG p = 1.); Fig. 1 shows near-identical "
          "maps",
          "fails on 3 of 4 models", "Table I, Fig. 1; Sec. I",
          "Grad-CAM does not reject on more than half of the models", B.diagnostic_gradcam),
    Claim("diagnostic.baselines", "diagnostic", ("diagnostic",),
          "many baselines fail: at least half of the (baseline, model) tests do not reject H0",
          "10 of the 20 baseline tests in Table I fail to reject", "10 of 20", "Table I",
          "≥ half of the baseline tests do not reject", B.diagnostic_baselines),
    Claim("diagnostic.scorecam", "diagnostic", ("diagnostic",),
          "Score-CAM sometimes gives no explanation: on some model at least {min_constant:.0%} of its "
          "top-1/top-2 maps are constant",
          "Score-CAM often produces visually identical or absent explanations (Fig. 3)",
          "no number (figure)", "Fig. 3; Sec. V-A",
          "share of constant Score-CAM maps ≥ min_constant on some model", B.diagnostic_scorecam),
    # contrast set — chapter 02 ---------------------------------------------------------------------------
    Claim("contrast.paper_k", "contrast set", ("contrast",),
          "K = {paper_k} suffices: CASE rejects H0 and its median agreement is within {tolerance_points:g} "
          "points of the best K studied ({strategy} contrast)",
          "small contrast sets (e.g. K = 3) suffice for strong performance (Sec. VIII)", "K = 3",
          "Sec. VIII (computational overhead)",
          "CASE rejects at K = paper_k and its median is within tolerance of the lowest median over K",
          B.contrast_paper_k),
    Claim("contrast.single_class", "contrast set", ("contrast",),
          "with a single contrast class (K = 1) CASE rejects H0 on every model ({strategy} contrast)",
          "CASE contrasts the prediction with a single contrast class (Sec. VIII); the authors' fidelity "
          "runs use K = 1", "K = 1", "Sec. VIII (limitations)", "CASE rejects at K = 1 on every model",
          B.contrast_single_class, extension=True),
    # ground truth — chapter 03 ---------------------------------------------------------------------------
    Claim("evidence.case_best", "ground truth", ("evidence",),
          "CASE's top-1 map has the highest unique-evidence precision of the six methods on every model",
          "CASE isolates the features that are uniquely discriminative for the target (Sec. III-D); the "
          "paper has no ground truth to measure it", "none (no ground truth)", "Sec. III-D",
          "CASE's mean unique-part precision is the highest of the six methods on every model",
          B.evidence_case_best, extension=True),
    Claim("evidence.agreement_tracks", "ground truth", ("evidence",),
          "lower top-1/top-2 agreement goes with more evidence on the class's unique part (Spearman ρ < 0 "
          "over the methods, on every model)",
          "implicit: the diagnostic reads low overlap as class-specific explanation "
          "(Sec. I, V-A)", "none (premise)", "Sec. I, V-A",
          "Spearman ρ(median agreement, unique precision) over the methods < 0 on every model",
          B.evidence_agreement_tracks, extension=True),
)
_BY_ID = {c.id: c for c in CLAIMS}
assert len(_BY_ID) == len(CLAIMS), "claim ids must be unique"

#: The sections :func:`claims` knows, in the order it lists them.
STUDY_SECTIONS: tuple[str, ...] = ("RQ1", "seeds", "sparsity", "norm5", "fidelity")
#: The chapters :func:`chapter_claims` knows.
CHAPTERS: tuple[str, ...] = ("sparsity", "norm5", "fidelity", "appendix")
# Section order of each chapter's view (rows of an earlier section first, then the records' order).
_CHAPTER_SECTIONS = {"sparsity": ("sparsity", "sparsity ↔ sensitivity"), "norm5": ("norm5", "sparsity")}


def claim_records(view: str | None = None) -> pd.DataFrame:
    """The records as a table (``id, section, views, statement, paper, paper_value, source, criterion,
    extension``), all or those of one view."""
    rows = [{"id": c.id, "section": c.section, "views": ", ".join(c.views), "statement": c.statement,
             "paper": c.paper, "paper_value": c.paper_value, "source": c.source, "criterion": c.criterion,
             "extension": c.extension} for c in CLAIMS if view is None or view in c.views]
    return pd.DataFrame(rows)


def _supported(value: Any) -> bool | None:
    """True / False / None as a Python object (NaN and None → None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def claims_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows ``{section, claim, paper says, this run, supported}`` → the claims table, ``supported`` as an
    object column of True / False / None (a bool column would turn None into False or NaN)."""
    rows = list(rows)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["supported"] = pd.Series([_supported(r["supported"]) for r in rows], index=out.index, dtype=object)
    return out


def _evaluate(records: Sequence[Claim], run: C.RunView, section: str | None = None) -> list[dict[str, Any]]:
    """Each record's row: its section (or ``section``), statement and section filled from the view's
    options."""
    rows = []
    for c in records:
        outcome = c.check(run)
        rows.append({"section": section or c.section.format(**run.options),
                     "claim": c.statement.format(**run.options), "paper says": c.paper,
                     "this run": outcome.this_run, "supported": outcome.supported})
    return rows


def _select(view: str, sections: Sequence[str]) -> list[Claim]:
    """The records of ``view`` whose section is in ``sections``, sections in that order, then the list's
    order."""
    return [c for s in sections for c in CLAIMS if view in c.views and c.section == s]


def _sparsity_of(data: Any, sparsity: pd.DataFrame | None) -> pd.DataFrame | None:
    return data.sparsity if sparsity is None and isinstance(data, Results) else sparsity


def claims(data: Any, sparsity: pd.DataFrame | None = None, *, threshold: float = 0.5, alpha: float = 0.05,
           layer: str = "final_conv", alt_layer: str = "norm5", sparse_model: str = "densenet",
           nearly_all: float = NORM5_MAJORITY, n_boot: int = 2_000,
           sections: Iterable[str] | None = None) -> pd.DataFrame:
    """The study-wide claims (sections ``RQ1``, ``seeds``, ``sparsity``, ``norm5``, ``fidelity``) checked on a
    run (model seed 0) → ``section, claim, paper says, this run, supported``.  The criteria are in the records
    (:data:`CLAIMS`, view ``"study"``)."""
    want = set(sections) if sections is not None else set(STUDY_SECTIONS)
    options = dict(threshold=threshold, alpha=alpha, layer=layer, alt_layer=alt_layer,
                   sparse_model=sparse_model,
                   nearly_all=nearly_all, n_boot=n_boot, seed=0)
    run = C.RunView(maps_frame(data), _sparsity_of(data, sparsity), options)
    return claims_frame(_evaluate(_select("study", [s for s in STUDY_SECTIONS if s in want]), run))


def _pick_model(maps: pd.DataFrame, preferred: str, alternatives: Sequence[str] = ("densenet201",)) -> str:
    """``preferred`` if the run has it, else the first of ``alternatives`` it has (the paper profile's
    names)."""
    present = set(maps["model"])
    if preferred in present:
        return preferred
    return next((a for a in alternatives if a in present), preferred)


def chapter_claims(data: Any, chapter: str, *, sparsity: pd.DataFrame | None = None, threshold: float = 0.5,
                   alpha: float = 0.05, layer: str = "final_conv", alt_layer: str = "norm5", seed: int = 0,
                   sparse_model: str = "densenet", ks: Sequence[float | None] | None = None,
                   n_boot: int = 2_000, boot_seed: int = 0) -> pd.DataFrame:
    """The claims one chapter of the book checks (``"sparsity"``, ``"norm5"``, ``"fidelity"``,
    ``"appendix"``), rows as :func:`claims`.  ``seed``: the models' training seed; ``boot_seed``: the
    bootstrap's; ``sparse_model``: the DenseNet (``densenet201`` is used instead when the run has no
    ``densenet``); ``ks``: the fidelity chapter's blanked fractions (default each run's ``fidelity_k`` and 50
    %, the reference code's), each k giving its own rows."""
    if chapter not in CHAPTERS:
        raise ValueError(f"chapter must be one of {CHAPTERS}, got {chapter!r}")
    maps = maps_frame(data)
    dn = _pick_model(maps, sparse_model)
    options = dict(threshold=threshold, alpha=alpha, layer=layer, alt_layer=alt_layer, sparse_model=dn,
                   seed=seed,
                   n_boot=n_boot, boot_seed=boot_seed, nearly_all=NORM5_MAJORITY,
                   densenet_name=model_display(dn))
    sp = _sparsity_of(data, sparsity)
    if chapter == "sparsity":
        rows = _evaluate(_select("sparsity", _CHAPTER_SECTIONS["sparsity"]), C.RunView(maps, sp, options))
    elif chapter == "norm5":
        rows = _evaluate(_select("norm5", _CHAPTER_SECTIONS["norm5"]), C.RunView(maps, sp, options), "norm5")
    elif chapter == "fidelity":
        rows = []
        for k in (C.run_fidelity_ks(C.RunView(maps, sp, options)) if ks is None else ks):
            kt = "the run's k" if k is None else f"k = {k:.0%}"
            run = C.RunView(maps, sp, {**options, "k": k, "kt": kt})
            rows += _evaluate([c for c in CLAIMS if "fidelity" in c.views], run)
    else:
        rows = _evaluate([c for c in CLAIMS if "appendix" in c.views], C.RunView(maps, sp, options))
    return claims_frame(rows)


def diagnostic_claims(data: Any, *, layer: str = "final_conv", seed: int = 0, threshold: float = 0.5,
                      alpha: float = 0.05, n_boot: int = 2_000, min_constant: float = 0.01) -> pd.DataFrame:
    """The diagnostic's statements (Sec. I, Fig. 1, Fig. 3, Table I), checked on a run: Grad-CAM fails on more
    than half of the models; at least half of the baseline tests fail; Score-CAM's maps are constant on at
    least ``min_constant`` of some model's images.  ``supported`` is None when a test could not run."""
    options = dict(layer=layer, seed=seed, threshold=threshold, alpha=alpha, n_boot=n_boot,
                   min_constant=min_constant)
    return claims_frame(_evaluate([c for c in CLAIMS if "diagnostic" in c.views],
                                  C.RunView(maps_frame(data), None, options)))


def contrast_claims(summary: pd.DataFrame, *, paper_k: int = 3, strategy: str = "confusion",
                    tolerance: float = 0.05) -> pd.DataFrame:
    """The paper's statements about CASE's contrast set, checked on
    :func:`casekit.report.evidence.contrast_table` (top-1 vs top-2): K = ``paper_k`` suffices (CASE rejects
    and its median agreement is within ``tolerance`` of the best K studied, on every model), and K = 1
    rejects on every model.  ``supported`` is None where a K was not studied or a test could not run."""
    options = dict(paper_k=paper_k, strategy=strategy, tolerance=tolerance, tolerance_points=tolerance * 100)
    return claims_frame(_evaluate([c for c in CLAIMS if "contrast" in c.views],
                                  C.RunView(summary, None, options)))


def evidence_claims(data: Any, *, layer: str = "final_conv", seed: int = 0) -> pd.DataFrame:
    """What the demo benchmark's ground truth says about the paper's reading of the diagnostic: CASE's top-1
    map has the best unique-part precision on every model; lower agreement goes with more unique evidence
    (Spearman ρ < 0 over the methods).  ``supported`` is None without part masks (paper profile)."""
    options = dict(layer=layer, seed=seed)
    return claims_frame(_evaluate([c for c in CLAIMS if "evidence" in c.views],
                                  C.RunView(maps_frame(data), None, options)))


# ----------------------------------------------------------------------------------------------- Table III
# vs paper

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
    (``no significant difference`` / ``CASE significantly higher`` / ``method significantly higher``,
    two-sided p < ``alpha``).  Models the paper does not have get NaN paper columns."""
    full = table3_full(data, k=k, drop=drop, layer=layer, seed=seed, alpha=alpha)
    rows = []
    for r in full[full["method"] != "case"].itertuples():
        paper = PAPER_TABLE3.get(r.Model, {})
        pm, _, pp = paper.get(r.Method, (math.nan, math.nan, math.nan))
        pc = paper.get("CASE", (math.nan,))[0]
        pv = _paper_verdict(pm, pc, pp, alpha) if paper else "–"
        rows.append({"model": r.model, "method": r.method, "Model": r.Model, "Method": r.Method,
                     "paper_mean": pm, "paper_mean_case": pc, "paper_p": pp, "paper_p_fmt": format_p(pp),
                     "paper_verdict": pv, "mean": r.mean, "mean_case": r.mean_case,
                     "p_two_sided": r.p_two_sided,
                     "p_fmt": format_p(r.p_two_sided), "verdict": r.two_sided_verdict,
                     "same_verdict": (pv == r.two_sided_verdict) if pv != "–" else None})
    out = sort_paper(pd.DataFrame(rows), ["model", "method"])
    out["same_verdict"] = out["same_verdict"].astype(object)
    return out
