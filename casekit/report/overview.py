"""The book's opening claims table: every study-wide claim (:data:`casekit.report.claims.CLAIMS`, view
``"study"``) with its chapter, the paper's number, and each profile's number and verdict side by side.

Imports: :mod:`casekit.study` (Results), :mod:`.claims`.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..study.runner import Results
from .claims import CLAIMS, STUDY_SECTIONS, claims

#: The chapter (notebook name) that shows each study section's evidence.
SECTION_CHAPTER: dict[str, str] = {
    "RQ1": "03_rq1_tables", "seeds": "03_rq1_tables", "sparsity": "04_sparsity",
    "sparsity ↔ sensitivity": "04_sparsity", "norm5": "05_norm5", "fidelity": "06_fidelity",
}
#: The DenseNet whose layers the sparsity / norm5 claims are checked on, per profile.
SPARSE_MODEL: dict[str, str] = {"demo": "densenet", "cifar10": "densenet40", "paper": "densenet201"}
MARK = {True: "✓", False: "✗", None: "—"}


def study_records() -> list[Any]:
    """The study-wide claim records in the order :func:`casekit.report.claims.claims` lists them."""
    return [c for s in STUDY_SECTIONS for c in CLAIMS if "study" in c.views and c.section == s]


def claims_overview(results: Mapping[str, Results | str]) -> pd.DataFrame:
    """``results``: profile → its :class:`Results`, or a string saying why that profile has none (e.g.
    "not built: …").  → one row per study claim: ``id, claim, chapter, extension, paper`` (the paper's own
    number) and per profile ``<profile>`` (this build's number) and ``<profile> ✓`` (✓ / ✗ / —)."""
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
    return out


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def overview_markdown(frame: pd.DataFrame, titles: Mapping[str, str],
                      chapter_links: Mapping[str, str] | None = None) -> str:
    """The table as Markdown: ``claim | chapter | paper | <title> | ✓ …`` per profile in ``titles`` (profile →
    column title); casekit's own claims marked; ``chapter_links`` maps a chapter to a page path."""
    links = chapter_links or {}
    head = ["claim", "chapter", "paper"]
    for title in titles.values():
        head += [title, ""]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, row in frame.iterrows():
        claim = _cell(row["claim"]) + (" *(casekit's extension)*" if row["extension"] else "")
        chapter = row["chapter"]
        chapter = f"[{chapter}]({links[chapter]})" if chapter in links else chapter
        cells = [claim, chapter, _cell(row["paper"])]
        for profile in titles:
            cells += [_cell(row.get(profile, "—")), row.get(f"{profile} ✓", "—")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
