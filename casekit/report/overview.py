"""The book's opening claims table: every study-wide claim (:data:`casekit.report.claims.CLAIMS`, view
``"study"``) with its chapter, the paper's number, and each profile's number and verdict side by side.

Imports: :mod:`casekit.study` (Results), :mod:`.claims`, :mod:`.diagnostic`.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..study.runner import Results
from .claims import CLAIMS, STUDY_SECTIONS, claims
from .diagnostic import MEASURE_CLAIMS, measure_claims

#: The chapter (notebook name) that shows each study section's evidence.
SECTION_CHAPTER: dict[str, str] = {
    "RQ1": "03_rq1_tables", "seeds": "03_rq1_tables", "sparsity": "04_sparsity",
    "sparsity ↔ sensitivity": "04_sparsity", "norm5": "05_norm5", "fidelity": "06_fidelity",
}
#: How the table names each chapter.
CHAPTER_TITLES: dict[str, str] = {
    "01_diagnostic": "Diagnostic", "02_case_method": "CASE method", "03_rq1_tables": "RQ1 tables",
    "04_sparsity": "Sparsity", "05_norm5": "norm5", "06_fidelity": "Fidelity",
    "07_appendix_histograms": "Appendix", "08_diagnostic_measures": "What the diagnostic measures",
}
#: The DenseNet whose layers the sparsity / norm5 claims are checked on, per profile.
SPARSE_MODEL: dict[str, str] = {"demo": "densenet", "cifar10": "densenet40", "paper": "densenet201"}
MARK = {True: "✓", False: "✗", None: "—"}
#: The chapter of casekit's own claims about the diagnostic.
DIAGNOSTIC_CHAPTER = "08_diagnostic_measures"


def study_records() -> list[Any]:
    """The study-wide claim records in the order :func:`casekit.report.claims.claims` lists them."""
    return [c for s in STUDY_SECTIONS for c in CLAIMS if "study" in c.views and c.section == s]


def claims_overview(results: Mapping[str, Results | str],
                    diagnostic: Mapping[str, pd.DataFrame | None] | None = None) -> pd.DataFrame:
    """``results``: profile → its :class:`Results`, or a string saying why that profile has none (e.g.
    "not built: …").  → one row per study claim: ``id, claim, chapter, extension, paper`` (the paper's own
    number) and per profile ``<profile>`` (this build's number) and ``<profile> ✓`` (✓ / ✗ / —).

    ``diagnostic``: profile → the rows of its diagnostic study (:func:`casekit.study.diagnostic_study.
    load_diagnostic`, None where it was not run); when given, casekit's own claims about the diagnostic
    (:data:`.diagnostic.MEASURE_CLAIMS`, chapter ``08_diagnostic_measures``) follow as extension rows."""
    records = study_records()
    out = pd.DataFrame({
        "id": [c.id for c in records], "claim": [c.statement for c in records],
        "section": [c.section for c in records],
        "chapter": [SECTION_CHAPTER.get(c.section, "") for c in records],
        "extension": [c.extension for c in records], "paper": [c.paper_value for c in records]})
    for profile, res in results.items():
        if isinstance(res, str):
            out[profile], out[f"{profile} ✓"] = res, "—"
            continue
        table = claims(res, sparse_model=SPARSE_MODEL.get(profile, "densenet"))
        if len(table) != len(records):
            raise ValueError(f"claims() gave {len(table)} rows for {len(records)} study records")
        out[profile] = table["this run"].astype(str).tolist()
        out[f"{profile} ✓"] = [MARK[v] for v in table["supported"]]
        out["claim"] = table["claim"].tolist()  # the statement with its options filled in
    if diagnostic is None:
        return out
    return pd.concat([out, _diagnostic_rows(results, diagnostic)], ignore_index=True)


def _diagnostic_rows(results: Mapping[str, Results | str],
                     diagnostic: Mapping[str, pd.DataFrame | None]) -> pd.DataFrame:
    """The rows of :data:`.diagnostic.MEASURE_CLAIMS` for :func:`claims_overview`."""
    extra = pd.DataFrame({
        "id": [c.id for c in MEASURE_CLAIMS],
        "claim": [f"{c.statement} ({c.criterion})" for c in MEASURE_CLAIMS],
        "section": [c.section for c in MEASURE_CLAIMS], "chapter": DIAGNOSTIC_CHAPTER,
        "extension": True, "paper": "—"})
    for profile, res in results.items():
        rows = diagnostic.get(profile)
        if isinstance(res, str) or rows is None or not len(rows):
            why = res if isinstance(res, str) else "not run (chapter 08 was not executed)"
            extra[profile], extra[f"{profile} ✓"] = why, "—"
            continue
        table = measure_claims(rows)
        extra[profile] = table["this run"].astype(str).tolist()
        extra[f"{profile} ✓"] = [MARK[None if v is None or v != v else bool(v)] for v in table["supported"]]
    return extra


def shorten(text: Any, limit: int = 90) -> str:
    """A number for the overview table: ``text`` whole when it has at most ``limit`` characters, else its
    leading "; "-separated items that fit, then " …" (the chapter shows the rest)."""
    text = str(text)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    for item in text.split("; "):
        if len("; ".join([*kept, item])) > limit:
            break
        kept.append(item)
    head = "; ".join(kept) if kept else text[:limit].rsplit(" ", 1)[0]
    return head + " …"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def overview_markdown(frame: pd.DataFrame, titles: Mapping[str, str],
                      chapter_links: Mapping[str, Mapping[str, str]] | None = None, *,
                      limit: int = 90) -> str:
    """The table as Markdown: ``Claim | Paper reports | This build, <title> …`` with one column per profile
    in ``titles`` (profile → column title), each cell "✓ / ✗ / — and this build's number"; casekit's own
    claims marked. ``chapter_links`` maps a chapter to ``{label: page path}`` (e.g. one page per profile),
    listed after the claim; without it the claim names its chapter.  Numbers longer than ``limit``
    characters are shortened (:func:`shorten`); the linked chapter shows them whole."""
    links = chapter_links or {}
    head = ["Claim", "Paper reports", *[f"This build, {t}" for t in titles.values()]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, row in frame.iterrows():
        claim = _cell(row["claim"]) + (" *(casekit's extension)*" if row["extension"] else "")
        chapter = str(row["chapter"])
        name = CHAPTER_TITLES.get(chapter, chapter)
        if chapter in links:
            pages = " · ".join(f"[{label}]({path})" for label, path in links[chapter].items())
            claim += f" → *{name}*: {pages}"
        elif chapter:
            claim += f" → *{name}*"
        cells = [claim, _cell(row["paper"])]
        for profile in titles:
            cells.append(f"{row.get(f'{profile} ✓', '—')} {_cell(shorten(row.get(profile, '—'), limit))}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
