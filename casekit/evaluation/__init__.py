"""Scoring maps: the paper's metrics (top-k% agreement, confidence drop, active channels, evidence shares) in
:mod:`.metrics`, and the statistical tests on them (Wilcoxon, sign test, paired t-test, Holm) in :mod:`.stats`.

Imports: :mod:`casekit.cam` (for the model-state guard), torch, numpy, scipy, pandas — never the study or report
rooms.
"""
