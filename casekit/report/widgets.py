"""Interactive explorers for the notebooks (ipywidgets).

* :class:`SaliencyExplorer` — one image, two target classes (by rank or by name), one method: the two
  maps, their top-k % pixels and the top-k agreement ``|top_k(a) ∩ top_k(b)| / ⌊k·H·W⌋`` — the paper's
  top-1 vs top-2 comparison, live.
* :class:`AgreementExplorer` — a results table: for one model, layer and method, the histogram of
  agreement in 5 % bins with the 50 % threshold and the class-sensitivity test.

Both are ``VBox`` widgets: in JupyterLab every control updates the view at once.  Their display also
carries a static HTML snapshot of the current state (figure and numbers), which is what the built book
and other viewers without a widget manager show.  All numbers come from :mod:`casekit.evaluation.metrics` and
:mod:`casekit.evaluation.stats`; nothing is computed twice in a different way here.
"""

from __future__ import annotations

from .agreement_explorer import AgreementExplorer
from .explorer_base import LIVE_NOTE
from .figures.base import figure_png
from .saliency_explorer import SaliencyExplorer

__all__ = ["SaliencyExplorer", "AgreementExplorer", "figure_png", "LIVE_NOTE"]
