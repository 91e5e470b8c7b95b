"""What a chapter of the book says first: a profile banner and a short summary built from the chapter's
claims (:mod:`.claims`), never written for one particular result.

``chapter_summary(res, chapter)`` → Markdown (show it with ``IPython.display.Markdown``): how many of the
paper's statements the chapter checks, how many this run supports, contradicts or cannot decide, and the
first contradicted and supported statements with this run's numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import claims as _claims
from .naming import model_display

PROFILE_TEXT = {
    "demo": "casekit's synthetic benchmark (64 × 64 px scenes of ten classes with known evidence) and its "
            "small model zoo trained on the CPU — not the paper's ImageNet models",
    "paper": "the paper's ImageNet models (torchvision weights) on ImageNet validation images",
    "cifar10": "pretrained CIFAR-10 reference networks on CIFAR-10 test images (32 × 32 px)",
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def sample_sentence(samples: pd.DataFrame) -> str:
    """How the runs' samples were drawn (``samples``: :meth:`Results.samples` rows), e.g. "drawn with a seed
    among the 812–846 correctly classified of 1,000 evaluated images available to each run", or "every
    correctly classified image of the pool" for a full-scale run; "" without records."""
    if samples is None or not len(samples):
        return ""
    pools = [int(p) for p in samples["pool"]]
    known = samples["available"].notna()
    drawn = [int(n) for n in samples["n_images"]]
    if known.all():
        avail = [int(a) for a in samples["available"]]
        if all(d == a for d, a in zip(drawn, avail)):
            return (f"every correctly classified image of its pool: {_span(avail)} of {_span(pools)} "
                    "evaluated images")
        return (f"drawn with a seed among the {_span(avail)} correctly classified of {_span(pools)} "
                "evaluated images available to each run")
    scanned = [int(x) for x in samples["scanned"]]
    return (f"the first correctly classified ones of a seeded order, found among the first "
            f"{_span(scanned)} of {_span(pools)} evaluated images")


def profile_banner(profile: str, maps: pd.DataFrame | None = None,
                   samples: pd.DataFrame | None = None) -> str:
    """One Markdown line naming the profile, what it stands for and, from ``maps`` (rows with ``model`` and
    ``image_id``), the models and the number of images per model; ``samples`` (:meth:`Results.samples`) adds
    how many correctly classified images each run could draw from (:func:`sample_sentence`)."""
    if not isinstance(profile, str) or not profile:
        raise ValueError(f"profile must be a non-empty string, got {profile!r}")
    about = PROFILE_TEXT.get(profile)  # a profile without a description is named only
    parts = [f"**Profile `{profile}`**" + (f": {about}." if about else ".")]
    if maps is not None and len(maps):
        for col in ("model", "image_id"):
            if col not in maps.columns:
                raise ValueError(f"maps has no column {col!r}")
        runs = [c for c in ("model", "seed", "layer") if c in maps.columns]  # one run = one sample
        n = maps.groupby(runs)["image_id"].nunique()
        models = list(dict.fromkeys(maps["model"].astype(str)))
        sizes = _plural(int(n.min()), "image") if n.min() == n.max() else f"{n.min()}–{n.max()} images"
        per = "per model" if runs == ["model"] else "per model, seed and layer"
        names = ", ".join(sorted(model_display(m) for m in models))
        how = sample_sentence(samples) if samples is not None else ""
        parts.append(f"This run: {_plural(len(models), 'model')} ({names}), "
                     f"{sizes} {per}" + (f" ({how})." if how else "."))
    return "> " + " ".join(parts)


def _quote(row: Mapping[str, Any]) -> str:
    text = str(row["claim"]).rstrip(". ")
    return f"{text} (this run: {row['this run']})"


def _headline(rows: list[Mapping[str, Any]], idx: list[int]) -> int:
    """The first of ``idx`` whose claim stands on its own (not a continuation such as "… and also …")."""
    whole = [i for i in idx if not str(rows[i]["claim"]).lstrip().startswith(("…", "..."))]
    return (whole or idx)[0]


def claims_summary(claims: pd.DataFrame, *, what: str = "this chapter") -> str:
    """2–4 sentences from a claims frame (``claim, this run, supported``): the counts of supported ✓,
    contradicted ✗ and undecided — statements, then the first contradicted and the first supported one."""
    for col in ("claim", "this run", "supported"):
        if col not in claims.columns:
            raise ValueError(f"claims has no column {col!r}")
    if not len(claims):
        return f"No statement of the paper is checked in {what} on this run."
    verdict = [None if v is None or v != v else bool(v) for v in claims["supported"]]
    yes = [i for i, v in enumerate(verdict) if v is True]
    no = [i for i, v in enumerate(verdict) if v is False]
    open_ = len(verdict) - len(yes) - len(no)
    counts = f"this run supports {len(yes)} ✓, contradicts {len(no)} ✗"
    counts += f" and cannot decide {open_} —" if open_ else ""
    out = [f"Of the {_plural(len(claims), 'statement')} of the paper checked in {what}, {counts}."]
    rows = claims.to_dict("records")
    if no:
        more = f" ({len(no) - 1} more in the table at the end)" if len(no) > 1 else ""
        out.append(f"Not supported: {_quote(rows[_headline(rows, no)])}{more}.")
    if yes:
        out.append(f"Supported: {_quote(rows[_headline(rows, yes)])}.")
    if not yes and not no:
        out.append("The run is too small or lacks the models to decide; see the table at the end.")
    return " ".join(out)


def _rq1(res: Any, **kw: Any) -> pd.DataFrame:
    return _claims.claims(res, sections=["RQ1", "seeds"], **kw)


def _case(res: Any, **kw: Any) -> pd.DataFrame:
    return _claims.claims(res, sections=["RQ1"], **kw)


def _chapter(name: str) -> Callable[..., pd.DataFrame]:
    return lambda res, **kw: _claims.chapter_claims(res, name, **kw)


# chapter → (its claims frame from a run, how the summary names it)
CHAPTER_CLAIMS: dict[str, tuple[Callable[..., pd.DataFrame], str]] = {
    "diagnostic": (lambda res, **kw: _claims.diagnostic_claims(res, **kw), "this diagnostic chapter"),
    "case": (_case, "this chapter on CASE"),
    "rq1": (_rq1, "this chapter's tables"),
    "sparsity": (_chapter("sparsity"), "this chapter on sparsity"),
    "norm5": (_chapter("norm5"), "this chapter on norm5"),
    "fidelity": (_chapter("fidelity"), "this chapter on fidelity"),
    "appendix": (_chapter("appendix"), "this appendix"),
}


def conflict_sentence(full: pd.DataFrame) -> str:
    """One sentence counting the rows of a Table I/II long frame (``table1_full``) where the paper's Wilcoxon
    signed-rank test (a test of the pseudo-median) and the exact sign test of the median disagree."""
    if "conflict" not in full.columns or "sign_p" not in full.columns:
        raise ValueError("the frame has no 'conflict'/'sign_p' columns: pass table1_full(...) or "
                         "table2_full(...)")
    tested = full[full["sign_p"].notna()]
    n = int(tested["conflict"].astype(bool).sum())
    if tested.empty:
        return "No test could be run, so the Wilcoxon and sign tests cannot be compared."
    if n == 0:
        return (f"The paper's Wilcoxon test and the exact sign test of the median agree in all "
                f"{_plural(len(tested), 'test')}.")
    return (f"The paper's Wilcoxon test and the exact sign test of the median disagree in {n} of "
            f"{_plural(len(tested), 'test')} (column `conflict`): there the verdict depends on which "
            "centre of the distribution is tested.")


def chapter_summary(res: Any, chapter: str, *, profile: str | None = None, table1: pd.DataFrame | None = None,
                    **options: Any) -> str:
    """The opening of a chapter as Markdown: the profile banner (when ``profile`` is given),
    :func:`claims_summary` of the chapter's claims on ``res`` (``options`` go to the claims function, e.g.
    ``threshold``) and, given a ``table1_full`` frame as ``table1``, :func:`conflict_sentence`."""
    if chapter not in CHAPTER_CLAIMS:
        raise ValueError(f"unknown chapter {chapter!r}; choose one of {sorted(CHAPTER_CLAIMS)}")
    make, what = CHAPTER_CLAIMS[chapter]
    text = claims_summary(make(res, **options), what=what)
    if table1 is not None:
        text += " " + conflict_sentence(table1)
    if profile is None:
        return text
    samples = res.samples() if hasattr(res, "samples") else None
    return profile_banner(profile, getattr(res, "maps", None), samples) + "\n\n" + text


def quickstart_summary(agreement: pd.DataFrame, correct: Sequence[bool], evidence: Mapping[str, float], *,
                       chance: float, k: float, model: str) -> str:
    """2–4 sentences on the quickstart's few images: how many ``model`` classifies correctly, the range of the
    methods' median top-1/top-2 agreement (``agreement``: one column per method, one row per image, NaN for
    an undefined pair), and the range of ``evidence`` (method → mean share of the top-1 map's top-``k``
    pixels on the class's own mark) against ``chance`` (the mark's mean area)."""
    correct = [bool(c) for c in correct]
    if len(correct) != len(agreement):
        raise ValueError(f"correct has {len(correct)} entries for {len(agreement)} images")
    if not len(agreement) or agreement.shape[1] == 0:
        raise ValueError("agreement is empty: no image or no method")
    n, ok = len(correct), sum(correct)
    wrong = [str(i) for i, c in zip(agreement.index, correct) if not c]
    out = [f"{model} classifies {ok} of {_plural(n, 'test image')} correctly"
           + (f" (misclassified: image {', '.join(wrong)})." if wrong else ".")]
    med = agreement.median(skipna=True).dropna()
    if len(med):
        lo, hi = med.idxmin(), med.idxmax()
        out.append(f"The median overlap of the top-1 and top-2 maps' top {k:.0%} pixels ranges from "
                   f"{med[lo]:.0%} ({lo}) to {med[hi]:.0%} ({hi}).")
    ev = pd.Series(dict(evidence), dtype=float).dropna()
    if len(ev) and ok:
        lo, hi = ev.idxmin(), ev.idxmax()
        out.append(f"On the correctly classified images, the top-1 maps put {ev[lo]:.0%} ({lo}) to "
                   f"{ev[hi]:.0%} ({hi}) of their top pixels on the class's own mark; a random set of "
                   f"pixels would put {chance:.0%} there.")
    out.append(f"With {_plural(n, 'image')} these are anecdotes; the chapters test the same at scale.")
    return " ".join(out)


def contrast_k_sentence(summary: pd.DataFrame, *, strategy: str = "confusion") -> str:
    """One sentence per model on how the contrast-set size K moves CASE's median top-1/top-2 agreement,
    from the rows of :func:`casekit.report.evidence.contrast_table` (``Model, contrast_strategy, contrast_k,
    comparison, median, reject_holm``) with the given strategy: the median at the smallest and at the
    largest K, the K with the lowest median, and at how many K the test (Holm) rejects H0."""
    need = {"Model", "contrast_strategy", "contrast_k", "median", "reject_holm"}
    if not need <= set(summary.columns):
        raise ValueError(f"summary lacks column(s) {sorted(need - set(summary.columns))}: pass "
                         "evidence.contrast_table(...)")
    rows = summary[summary["contrast_strategy"] == strategy]
    if "comparison" in rows:
        rows = rows[rows["comparison"] == "top1_vs_top2"]
    out = []
    for model, g in rows.groupby("Model", sort=False):
        g = g.dropna(subset=["median"]).sort_values("contrast_k")
        if g.empty:
            out.append(f"On {model} no K gave a testable sample.")
            continue
        ks, med = g["contrast_k"].astype(int).tolist(), g["median"].tolist()
        best = int(np.argmin(med))
        rejected = int(g["reject_holm"].astype(bool).sum())
        out.append(f"On {model}, CASE's median agreement is {med[0]:.0%} at K = {ks[0]} and {med[-1]:.0%} at "
                   f"K = {ks[-1]}, lowest at K = {ks[best]} ({med[best]:.0%}); the test rejects H0 at "
                   f"{rejected} of {_plural(len(ks), 'value')} of K.")
    if not out:
        return f"The contrast study has no rows with the {strategy!r} strategy."
    return " ".join(out)
