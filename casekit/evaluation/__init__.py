"""Scoring maps: the paper's metrics (top-k% agreement, confidence drop, active channels, evidence shares) in
:mod:`.metrics`, the statistical tests on them (Wilcoxon, sign test, paired t-test, Holm) in :mod:`.stats`,
and what the diagnostic measures beyond the paper (chance reference, confusable runner-ups, map resolution,
the NaN rule) in :mod:`.diagnostic`.

Imports: :mod:`casekit.cam` (for the model-state guard), torch, numpy, scipy, pandas — never the study or
report rooms.
"""
