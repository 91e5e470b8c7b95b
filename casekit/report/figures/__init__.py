"""The paper's figures and the book's, as matplotlib ``Figure`` objects (no pyplot state: a notebook shows the
returned figure once; :func:`show_figures_inline` registers the formatter when imported in IPython).

- :mod:`.images` — :func:`saliency_grid` (Figure 1), :func:`case_projection` (Figure 2, computed),
  :func:`masked_topk_grid` (Figure 3);
- :mod:`.distributions` — :func:`seed_robustness_bars` (Figure 4), :func:`active_channel_kde` /
  :func:`active_channel_kdes` (Figures 5–6), :func:`agreement_histograms` / :func:`appendix_histograms`
  (Figures 7–11), :func:`deletion_curve_plot`;
- :mod:`.chapters` — :func:`sparsity_sensitivity_plot`, :func:`layer_comparison_plot`,
  :func:`fidelity_difference_plot`, :func:`contrast_effect`, :func:`evidence_bars`.

Imports: every module of :mod:`casekit.report` except the explorers, and the rooms below.
"""

from __future__ import annotations

from ..naming import METHOD_COLOURS, THRESHOLD_STYLE
from .base import figure_png, show_figures_inline
from .chapters import (
    contrast_effect,
    evidence_bars,
    fidelity_difference_plot,
    layer_comparison_plot,
    sparsity_sensitivity_plot,
)
from .distributions import (
    active_channel_kde,
    active_channel_kdes,
    agreement_histograms,
    appendix_histograms,
    deletion_curve_plot,
    seed_robustness_bars,
)
from .images import case_projection, masked_topk_grid, saliency_grid

__all__ = [
    "METHOD_COLOURS", "THRESHOLD_STYLE", "figure_png", "show_figures_inline", "saliency_grid",
           "masked_topk_grid",
    "case_projection", "seed_robustness_bars", "active_channel_kde", "active_channel_kdes",
           "agreement_histograms",
    "appendix_histograms", "deletion_curve_plot", "sparsity_sensitivity_plot", "layer_comparison_plot",
    "fidelity_difference_plot", "contrast_effect", "evidence_bars",
]

show_figures_inline()
