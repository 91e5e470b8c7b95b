"""Turning stored result rows into what a reader sees: the paper's tables (:mod:`.tables`), figures
(:mod:`.figures`) and the ipywidgets explorers (:mod:`.widgets`).

Imports: every room below it (:mod:`casekit.study` for row views, :mod:`casekit.evaluation`,
:mod:`casekit.cam`), pandas and matplotlib.
"""
