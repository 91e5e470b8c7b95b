"""Turning stored result rows into what a reader sees: display names, orders and colours (:mod:`.naming`), the
paper's Tables I–III (:mod:`.tables`), the analyses behind each chapter (:mod:`.analyses`, :mod:`.evidence`),
the claims as declarative records and every chapter's comparison table (:mod:`.claims`, checked by
:mod:`.claim_checks` and :mod:`.claim_checks_book`), the figures (:mod:`.figures`) and the ipywidgets
explorers (:mod:`.widgets`: :mod:`.saliency_explorer`, :mod:`.agreement_explorer`, :mod:`.explorer_base`).

Imports: every room below it (:mod:`casekit.study` for row views and constants, :mod:`casekit.evaluation`,
:mod:`casekit.cam`), pandas and matplotlib; within the room, each module imports only those listed before it
(naming → tables → analyses → evidence → claim checks → claims; figures and explorers use naming and views).
"""
