"""The method registry: one frozen record per CAM method.

A method is one :class:`MethodSpec` in :data:`REGISTRY` plus one raw-map function
``MapInputs -> [B, T, h, w]`` (the un-rectified map; :func:`casekit.cam.engine.finalize_maps`
applies ReLU, upsampling and min–max scaling once for all methods).  The engine runs the
gradient methods from the shared forward pass and batched backward pass, then the
gradient-free ones; nothing else in casekit lists methods by hand.

Formulas (``A [B, C, h, w]`` the layer's feature map, ``g_m = ∂S_m/∂A``, ``w_m = mean_ij g_m``,
``w̄ = mean_{v∈V(u)} w_v`` over the contrast classes of target u):

===============  =====================================================================
gradcam          ``Σ_c w_u,c A_c``
gradcam++        ``Σ_c (Σ_ij α_c(i,j) ReLU(g_u,c(i,j))) A_c`` (pytorch-grad-cam's α)
scorecam         ``Σ_c softmax_c(S_u(x ⊙ M_c)) A_c``, ``M_c`` = normalised upsampled ``A_c``
ablationcam      ``Σ_c (S_u − S_u^{(−c)}) / S_u · A_c``
layercam         ``Σ_c ReLU(g_u,c) ⊙ A_c``
case             ``Σ_c w⊥_c A_c``, ``w⊥ = w_u − (w_u·w̄)/(‖w̄‖² + ε) w̄`` (the paper's method)
gradcam-diff     ``Σ_c (w_u − w̄)_c A_c`` = Grad-CAM of the logit ``S_u − mean_{v∈V(u)} S_v``
===============  =====================================================================
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import methods as M
from .perturbation import ablationcam, scorecam


@dataclass
class MapInputs:
    """Everything a raw-map function may read; all tensors on the images' device.

    ``target_grads [B, T, C, h, w]`` and ``contrast_grads [B, T, K, C, h, w]`` are set for the gradient
    methods only (``contrast_grads`` when contrast classes were given).  ``layer_output`` is the layer's
    output in its own layout and ``channel_positions [C, m]`` where each channel of ``A`` lives in it
    (both ``None`` without a ``reshape_transform``).
    """

    model: nn.Module
    module: nn.Module
    images: torch.Tensor
    activations: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    contrast: torch.Tensor | None = None
    target_grads: torch.Tensor | None = None
    contrast_grads: torch.Tensor | None = None
    projection: M.Projection = "pooled"
    eps: float = 1e-8
    batch_size: int = 64
    amp_dtype: torch.dtype | None = None
    progress: bool = False
    layer_output: torch.Tensor | None = None
    channel_positions: torch.Tensor | None = None
    notes: dict[str, str] = field(default_factory=dict)  # e.g. {"ablation_mode": "broadcast"}


RawMap = Callable[[MapInputs], torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """One CAM method.

    ``needs_gradients``: its map uses ``∂S/∂A`` (computed once, batched, for all such methods);
    ``needs_contrast``: it reads the contrast classes ``V(u)``; ``paper``: one of the paper's six
    methods (:data:`METHODS`), otherwise a casekit extension (:data:`EXTENSION_METHODS`).
    """

    name: str
    display: str
    needs_gradients: bool
    raw_map: RawMap
    needs_contrast: bool = False
    paper: bool = True
    aliases: tuple[str, ...] = ()


def _gradcam(x: MapInputs) -> torch.Tensor:
    return M.gradcam(x.activations, x.target_grads)


def _gradcampp(x: MapInputs) -> torch.Tensor:
    return M.gradcampp(x.activations, x.target_grads)


def _layercam(x: MapInputs) -> torch.Tensor:
    return M.layercam(x.activations, x.target_grads)


def _case(x: MapInputs) -> torch.Tensor:
    return M.case(x.activations, x.target_grads, x.contrast_grads, x.projection, x.eps)


def _gradcam_diff(x: MapInputs) -> torch.Tensor:
    return M.gradcam_diff(x.activations, x.target_grads, x.contrast_grads)


def _scorecam(x: MapInputs) -> torch.Tensor:
    return scorecam(x.model, x.images, x.activations, x.targets, x.batch_size, x.amp_dtype, x.progress)


def _ablationcam(x: MapInputs) -> torch.Tensor:
    return ablationcam(
        x.model, x.module, x.images, x.activations, x.logits, x.targets,
        x.batch_size, x.amp_dtype, x.progress,
        lambda mode: x.notes.__setitem__("ablation_mode", mode),
        layer_output=x.layer_output, channel_positions=x.channel_positions,
    )


_SPECS = (
    MethodSpec("gradcam", "Grad-CAM", True, _gradcam),
    MethodSpec("gradcam++", "Grad-CAM++", True, _gradcampp, aliases=("gradcampp", "gradcamplusplus")),
    MethodSpec("scorecam", "ScoreCAM", False, _scorecam),
    MethodSpec("ablationcam", "AblationCAM", False, _ablationcam),
    MethodSpec("layercam", "LayerCAM", True, _layercam),
    MethodSpec("case", "CASE", True, _case, needs_contrast=True),
    MethodSpec("gradcam-diff", "Grad-CAM (diff)", True, _gradcam_diff, needs_contrast=True, paper=False,
               aliases=("gradcamdifference",)),
)

REGISTRY: dict[str, MethodSpec] = {s.name: s for s in _SPECS}

METHODS: tuple[str, ...] = tuple(s.name for s in _SPECS if s.paper)  # the paper's six, in the study's order
EXTENSION_METHODS: tuple[str, ...] = tuple(s.name for s in _SPECS if not s.paper)
ALL_METHODS: tuple[str, ...] = METHODS + EXTENSION_METHODS
GRADIENT_METHODS = frozenset(s.name for s in _SPECS if s.needs_gradients)
CONTRAST_METHODS = frozenset(s.name for s in _SPECS if s.needs_contrast)
DISPLAY_NAMES: dict[str, str] = {s.name: s.display for s in _SPECS}


def _key(text: str) -> str:
    return text.lower().replace("-", "").replace("_", "").replace(" ", "")


_LOOKUP: dict[str, str] = {}
for _s in _SPECS:
    for _alias in (_s.name, _s.display, *_s.aliases):
        _LOOKUP[_key(_alias)] = _s.name


def canonical_method(method: str) -> str:
    """Canonical method name; accepts case, ``-``/``_``/space variants and display names
    ("Grad-CAM++" → "gradcam++", "Grad-CAM (diff)" → "gradcam-diff")."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, one of {ALL_METHODS}, got {type(method).__name__}")
    key = _key(method)
    if key not in _LOOKUP:
        close = difflib.get_close_matches(key, ALL_METHODS, n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(f"unknown method {method!r}{hint}; choose one of {', '.join(ALL_METHODS)}")
    return _LOOKUP[key]


def spec(method: str) -> MethodSpec:
    """The record of ``method`` (any spelling :func:`canonical_method` accepts)."""
    return REGISTRY[canonical_method(method)]
