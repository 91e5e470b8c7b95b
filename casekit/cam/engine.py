"""The batched CAM engine.

Data flow for one batch of images:

1. one forward pass records the layer's activations ``A`` and the logits;
2. for the gradient methods, **one** batched backward pass (``vmap`` over the
   one-hot grad-outputs) returns ``∂S_m/∂A`` for every class m any map needs:
   all targets and, for CASE, all contrast classes;
3. each method turns ``A`` and those gradients into a raw map ``[B, T, h, w]``
   (:mod:`casekit.methods`, :mod:`casekit.perturbation`);
4. :func:`finalize_maps`: ReLU, bilinear upsampling, per-map min–max scaling.

Nothing leaves the device; the model is left exactly as found.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import methods as M
from .checks import (
    as_contrast,
    as_targets,
    check_class_range,
    check_device,
    check_dtype,
    check_images,
    check_logits,
    resolve_layer,
)
from .hooks import LayerCapture, ReshapeTransform, as_feature_map, channel_positions, evaluation_mode
from .registry import (
    ALL_METHODS,
    CONTRAST_METHODS,
    DISPLAY_NAMES,
    EXTENSION_METHODS,
    GRADIENT_METHODS,
    METHODS,
    REGISTRY,
    MapInputs,
    MethodSpec,
    canonical_method,
)

__all__ = [
    "ALL_METHODS", "CONTRAST_METHODS", "DISPLAY_NAMES", "EXTENSION_METHODS", "GRADIENT_METHODS", "METHODS",
    "REGISTRY", "MethodSpec", "canonical_method", "CAMResult", "finalize_maps", "class_gradients", "explain",
    "saliency", "CASEVectors", "case_vectors",
]

TargetSpec = Union[torch.Tensor, Sequence[int], Callable[[torch.Tensor], torch.Tensor]]
ContrastSpec = Union[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor], None]

# How many one-hot rows one vmapped backward pass takes at most (bounds memory).
GRAD_ROWS_PER_PASS = 32

# A rectified map whose span at the layer's resolution is at most this share of its maximum is constant:
# it carries no location and comes back all zero (float rounding must not be stretched to [0, 1]).
CONSTANT_RTOL = 1e-5


@dataclass
class CAMResult:
    """Everything one engine call produced, all on the images' device."""

    maps: dict[str, torch.Tensor]  # method -> [B, T, H, W] in [0, 1]
    logits: torch.Tensor  # [B, num_classes]
    targets: torch.Tensor  # [B, T]
    contrast: torch.Tensor | None  # [B, T, K]
    activations: torch.Tensor  # [B, C, h, w]
    layer: str
    ablation_mode: str | None = None  # how Ablation-CAM ran the tail: "broadcast" or "repeat"


def finalize_maps(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``ReLU`` → bilinear upsampling (``align_corners=False``) → per-map min–max to [0, 1].

    ``raw [B, T, h, w]`` → float32 ``[B, T, H, W]``.  A map without a positive value, or a constant one,
    is all zero, never NaN.  Constancy is decided at the layer's resolution ``h × w``, before upsampling
    (span ``≤ CONSTANT_RTOL · max``): bilinear rounding of a constant map must not be stretched to [0, 1].
    """
    cam = raw.float().clamp_min(0)
    flat = cam.flatten(2)
    top = flat.amax(dim=2)
    constant = (top - flat.amin(dim=2)) <= CONSTANT_RTOL * top  # also every all-zero map
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    flat = cam.flatten(2)
    lo = flat.amin(dim=2)[..., None, None]
    hi = flat.amax(dim=2)[..., None, None]
    span = hi - lo
    ok = (span > 0) & ~constant[..., None, None]
    return torch.where(ok, (cam - lo) / torch.where(ok, span, torch.ones_like(span)), torch.zeros_like(cam))


def class_gradients(logits: torch.Tensor, activations: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``∂ logits[b, classes[b, m]] / ∂ A[b]`` for all m in one batched backward pass → ``[B, M, C, h, w]``.

    Images are independent in eval mode, so the gradient of ``Σ_b S_{b, c_bm}``
    with respect to ``A`` holds each image's own gradient.
    """
    if not logits.requires_grad:
        raise ValueError(
            "the logits do not depend on the layer through autograd (does the model's forward "
            "detach its features, or run under torch.no_grad() or torch.inference_mode()?)"
        )
    B, Mrows = classes.shape
    onehot = torch.zeros(Mrows, B, logits.shape[1], device=logits.device, dtype=logits.dtype)
    onehot.scatter_(2, classes.T[..., None], 1.0)
    parts = []
    for start in range(0, Mrows, GRAD_ROWS_PER_PASS):
        go = onehot[start : start + GRAD_ROWS_PER_PASS]
        last = start + GRAD_ROWS_PER_PASS >= Mrows
        if go.shape[0] == 1:
            (g,) = torch.autograd.grad(logits, activations, go[0], retain_graph=not last)
            parts.append(g[None])
            continue
        try:
            (g,) = torch.autograd.grad(logits, activations, go, retain_graph=True, is_grads_batched=True)
        except (RuntimeError, NotImplementedError) as err:  # an op without a vmap rule
            warnings.warn(f"batched backward unavailable ({err}); falling back to one backward pass per "
                          "class",
                          RuntimeWarning, stacklevel=3)
            g = torch.stack([torch.autograd.grad(logits, activations, row,
                                                 retain_graph=True)[0] for row in go])
        parts.append(g)
    return torch.cat(parts).transpose(0, 1)


@dataclass
class _Pass:
    """One validated forward pass (and, if asked, the batched backward pass) of :func:`_forward`."""

    name: str
    module: nn.Module
    activations: torch.Tensor  # A [B, C, h, w], detached
    layer_output: torch.Tensor  # the layer's output in its own layout (is A without a reshape_transform)
    logits: torch.Tensor  # [B, num_classes], detached
    targets: torch.Tensor  # [B, T]
    contrast: torch.Tensor | None  # [B, T, K]
    grads: torch.Tensor | None  # ∂S/∂A [B, T(1+K), C, h, w]: targets first, then contrast classes


def _check_grad_mode() -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "gradient methods cannot run inside torch.inference_mode(): it disables autograd for good; "
            "call casekit outside it (torch.no_grad() is fine: casekit switches gradients on where it "
            "needs them)"
        )


def _forward(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | nn.Module,
    targets: TargetSpec,
    contrast: ContrastSpec,
    need_grad: bool,
    reshape_transform: ReshapeTransform | None = None,
) -> _Pass:
    """Validate the inputs, run the forward pass, resolve targets/contrast, and (if ``need_grad``)
    the one batched backward pass.  Call inside :func:`evaluation_mode`."""
    check_images(images)
    name, module = resolve_layer(model, layer)
    check_device(model, images)
    check_dtype(model, images)
    if need_grad:
        _check_grad_mode()
    B = images.shape[0]
    tgt = None if callable(targets) else as_targets(targets, B)
    capture = LayerCapture(module, name, grad_from_layer=need_grad, reshape_transform=reshape_transform)
    with capture.attached():
        torch.set_grad_enabled(False)
        out = model(images)
    if capture.calls == 0:
        raise ValueError(f"layer {name!r} is not run by the model's forward pass")
    logits = check_logits(out, B)
    num_classes = logits.shape[1]
    if tgt is None:
        tgt = as_targets(targets(logits.detach()), B)
    tgt = tgt.to(images.device)
    check_class_range(tgt, num_classes, "targets")
    con = None
    if contrast is not None:
        spec = contrast(tgt, logits.detach()) if callable(contrast) else contrast
        con = as_contrast(spec, tgt).to(images.device)
        check_class_range(con, num_classes, "contrast")
    A, output = capture.activations, capture.output
    assert A is not None and output is not None
    grads = None
    if need_grad:
        classes = tgt if con is None else torch.cat([tgt, con.flatten(1)], dim=1)
        with torch.enable_grad():
            grads = class_gradients(logits, output, classes).detach()  # [B, M, *layer output]
        if reshape_transform is not None:  # ∂S/∂A: the same rearrangement as A's
            grads = torch.stack([as_feature_map(grads[:, m], name, reshape_transform)
                                 for m in range(grads.shape[1])], dim=1)
    torch.set_grad_enabled(False)
    return _Pass(name, module, A.detach(), output.detach(), logits.detach(), tgt, con, grads)


def _check_options(names: list[str], contrast: ContrastSpec, projection: str, batch_size: int) -> None:
    if projection not in ("pooled", "full"):
        raise ValueError(f"unknown projection {projection!r}; use 'pooled' (reference) or 'full'")
    want = [m for m in names if REGISTRY[m].needs_contrast]
    if want and contrast is None:
        raise ValueError(
            f"method {want[0]!r} needs contrast=[B, T, K] class indices (e.g. from ck.contrast_sets)")
    if not want and contrast is not None:
        users = " and ".join(repr(m) for m in ALL_METHODS if m in CONTRAST_METHODS)
        raise ValueError(
            f"contrast is only used by method {users}; drop it or add one of them to the methods")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def explain(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | nn.Module,
    methods: str | Iterable[str],
    targets: TargetSpec,
    contrast: ContrastSpec = None,
    *,
    projection: M.Projection = "pooled",
    eps: float = 1e-8,
    batch_size: int = 64,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    reshape_transform: ReshapeTransform | None = None,
) -> CAMResult:
    """Maps of several methods (any of :data:`ALL_METHODS`) from one forward and one batched backward pass.

    ``targets`` may be a ``LongTensor [B]``/``[B, T]`` or a function of the
    logits returning one (e.g. ``lambda z: z.topk(2).indices``); ``contrast`` a
    ``LongTensor [B, T, K]`` or a function ``(targets, logits) -> [B, T, K]``
    (needed by ``"case"`` and ``"gradcam-diff"``).
    ``batch_size`` bounds the masked/ablated forwards of Score-CAM and
    Ablation-CAM; ``amp_dtype`` (e.g. ``torch.bfloat16``) runs those under autocast.
    ``reshape_transform`` maps a layer output that is not ``[B, C, h, w]`` (a transformer's tokens
    ``[B, tokens, C]``) to one; it is applied to the activations and the gradients, and Ablation-CAM
    ablates a channel in the layer's own layout (as pytorch-grad-cam's ``reshape_transform``).
    """
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError(f"no method given; choose from {', '.join(ALL_METHODS)}")
    names = list(dict.fromkeys(canonical_method(m) for m in names))
    _check_options(names, contrast, projection, batch_size)
    specs = [REGISTRY[m] for m in names]
    need_grad = any(s.needs_gradients for s in specs)
    with evaluation_mode(model):
        fw = _forward(model, images, layer, targets, contrast, need_grad, reshape_transform)
        A, tgt, con = fw.activations, fw.targets, fw.contrast
        if A.shape[-2:] == (1, 1):
            warnings.warn(
                f"layer {fw.name!r} has a 1×1 feature map at this input size: every map is constant "
                "and comes back all zero; choose an earlier layer or larger images",
                RuntimeWarning, stacklevel=2)
        x = MapInputs(model, fw.module, images, A, fw.logits, tgt, con, projection=projection, eps=eps,
                      batch_size=batch_size, amp_dtype=amp_dtype, progress=progress)
        if reshape_transform is not None and "ablationcam" in names:
            x.layer_output = fw.layer_output
            x.channel_positions = channel_positions(reshape_transform, fw.layer_output[:1], fw.name)
        raw: dict[str, torch.Tensor] = {}
        if fw.grads is not None:
            B, T = tgt.shape
            x.target_grads = fw.grads[:, :T]
            if con is not None:
                x.contrast_grads = fw.grads[:, T:].reshape(B, T, con.shape[2], *fw.grads.shape[2:])
            raw.update({s.name: s.raw_map(x) for s in specs if s.needs_gradients})
            fw.grads = x.target_grads = x.contrast_grads = None  # freed before the gradient-free methods run
        raw.update({s.name: s.raw_map(x) for s in specs if not s.needs_gradients})

    size = (images.shape[-2], images.shape[-1])
    maps = {m: finalize_maps(raw[m], size) for m in names}
    return CAMResult(maps, fw.logits, tgt, con, A, fw.name, x.notes.get("ablation_mode"))


@dataclass
class CASEVectors:
    """The quantities of CASE's projection for each image and target (paper Sec. III, Fig. 2)."""

    w_target: torch.Tensor  # w_u [B, T, C]: pooled gradient of the target logit
    w_contrast: torch.Tensor  # w_v [B, T, K, C]: pooled gradients of the contrast logits
    w_mean: torch.Tensor  # w̄ [B, T, C]
    w_perp: torch.Tensor  # w⊥ [B, T, C]
    cosine: torch.Tensor  # cos(w_u, w̄) [B, T]
    kept: torch.Tensor  # ‖w⊥‖ / ‖w_u‖ [B, T]: the share of the target direction CASE keeps
    gradcam: torch.Tensor  # Grad-CAM maps of the targets [B, T, H, W]
    contrast_gradcam: torch.Tensor  # ReLU(Σ w̄_c A_c) maps [B, T, H, W]: the shared direction
    case: torch.Tensor  # CASE maps [B, T, H, W]
    logits: torch.Tensor
    targets: torch.Tensor
    contrast: torch.Tensor


def case_vectors(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | nn.Module,
    targets: TargetSpec,
    contrast: ContrastSpec,
    eps: float = 1e-8,
    *,
    reshape_transform: ReshapeTransform | None = None,
) -> CASEVectors:
    """CASE's pooled gradient vectors, their projection and the resulting maps, from one forward pass.

    ``w⊥ = w_u − (w_u·w̄)/(‖w̄‖² + ε)·w̄``; the maps are ``ReLU(Σ_c w_c A_c)`` for
    ``w = w_u`` (Grad-CAM), ``w = w̄`` (the direction CASE removes) and ``w = w⊥`` (CASE).
    """
    if contrast is None:
        raise ValueError("case_vectors needs contrast=[B, T, K] class indices")
    with evaluation_mode(model):
        fw = _forward(model, images, layer, targets, contrast, True, reshape_transform)
    assert fw.grads is not None and fw.contrast is not None
    B, T = fw.targets.shape
    K = fw.contrast.shape[2]
    pooled = M.gradcam_weights(fw.grads)  # [B, T(1+K), C]
    w_u = pooled[:, :T]
    w_v = pooled[:, T:].reshape(B, T, K, -1)
    w_bar = w_v.mean(dim=2)
    w_perp = M.orthogonal_component(w_u, w_bar, eps)
    kept, cosine = M.case_geometry(w_u, w_bar, eps)
    size = (images.shape[-2], images.shape[-1])
    A = fw.activations
    maps = [finalize_maps(M.weighted_sum(w, A), size) for w in (w_u, w_bar, w_perp)]
    return CASEVectors(w_u, w_v, w_bar, w_perp, cosine, kept, *maps, fw.logits, fw.targets, fw.contrast)


def saliency(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | nn.Module,
    method: str,
    targets: TargetSpec,
    contrast: ContrastSpec = None,
    **options,
) -> torch.Tensor:
    """Saliency maps ``[B, T, H, W]`` (float32, in [0, 1], on the images' device).

    ``method`` is one of ``"gradcam" | "gradcam++" | "scorecam" | "ablationcam" |
    "layercam" | "case"`` (the paper's six, :data:`METHODS`) or the extension ``"gradcam-diff"``;
    ``targets`` is ``[B]`` or ``[B, T]`` (all T classes share one forward pass);
    ``contrast [B, T, K]`` is required by CASE and Grad-CAM (diff).
    Options: ``projection="pooled"|"full"``, ``eps``, ``batch_size``,
    ``amp_dtype``, ``progress``, ``reshape_transform`` (see :func:`explain`).
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be one string, one of {ALL_METHODS}; use ck.explain() for several")
    m = canonical_method(method)
    return explain(model, images, layer, m, targets, contrast, **options).maps[m]
