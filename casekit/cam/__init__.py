"""The CAM core: what turns a model, images and a layer into saliency maps.

Holds the batched engine (:mod:`.engine`), the per-method channel-weight formulas (:mod:`.methods`), the
gradient-free Score-CAM / Ablation-CAM passes (:mod:`.perturbation`), forward hooks that always come off
(:mod:`.hooks`), input validation (:mod:`.checks`) and CASE's contrast sets from confusion matrices
(:mod:`.contrast`).

Imports: torch, numpy, tqdm and :mod:`casekit._io` only — never pandas, matplotlib, or another room of
casekit.
"""
