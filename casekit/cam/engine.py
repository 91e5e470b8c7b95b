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
from typing import Callable, Iterable, Mapping, Sequence, Union

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
from .perturbation import autocast
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
    all_methods,
    canonical_method,
    method_params,
)

__all__ = [
    "ALL_METHODS", "CONTRAST_METHODS", "DISPLAY_NAMES", "EXTENSION_METHODS", "GRADIENT_METHODS", "METHODS",
    "REGISTRY", "MethodSpec", "canonical_method", "CAMResult", "finalize_maps", "method_dtypes",
    "class_gradients", "explain",
    "saliency", "CASEVectors", "case_vectors",
]

TargetSpec = Union[torch.Tensor, Sequence[int], Callable[[torch.Tensor], torch.Tensor]]
AmpSpec = Union[torch.dtype, Mapping[str, Union[torch.dtype, None]], None]
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
    ablation_mode: str | None = None  # how Ablation-CAM ran the tail: "separable", "broadcast" or "repeat"
    #: method -> the raw map [B, T, h, w] at the layer's resolution, before :func:`finalize_maps` (float32)
    raw: dict[str, torch.Tensor] | None = None
    #: method -> the autocast dtype its own forwards ran under (None: float32)
    amp: dict[str, torch.dtype | None] | None = None


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


def class_gradients(logits: torch.Tensor, activations: torch.Tensor, classes: torch.Tensor,
                    rows: torch.Tensor | None = None) -> torch.Tensor:
    """``∂ logits[b, classes[b, m]] / ∂ A[b]`` for all m in one batched backward pass → ``[B, M, C, h, w]``;
    with ``rows [B, R, C]`` (gradients of functions of the logits), R more: ``Σ_c rows[b, r, c] ∂S_c/∂A[b]``
    → ``[B, M + R, C, h, w]``.

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
    if rows is not None:
        onehot = torch.cat([onehot, rows.transpose(0, 1).to(device=logits.device, dtype=logits.dtype)])
        Mrows = onehot.shape[0]
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
    amp: torch.dtype | None = None,
    grad_rows: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
) -> _Pass:
    """Validate the inputs, run the forward pass (under autocast to ``amp`` when given), resolve
    targets/contrast, and (if ``need_grad``) the one batched backward pass — also of the rows
    ``grad_rows(logits, targets, contrast) -> [B, R, C]`` of methods that explain a function of the logits;
    activations, logits and gradients come back as float32.  Call inside :func:`evaluation_mode`."""
    check_images(images)
    name, module = resolve_layer(model, layer)
    check_device(model, images)
    check_dtype(model, images)
    if need_grad:
        _check_grad_mode()
    B = images.shape[0]
    tgt = None if callable(targets) else as_targets(targets, B)
    capture = LayerCapture(module, name, grad_from_layer=need_grad, reshape_transform=reshape_transform)
    with capture.attached(), autocast(images.device, amp):
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
        rows = grad_rows(logits.detach(), tgt, con) if grad_rows is not None else None
        with torch.enable_grad():
            grads = class_gradients(logits, output, classes, rows).detach()  # [B, M (+R), *layer output]
        if reshape_transform is not None:  # ∂S/∂A: the same rearrangement as A's
            grads = torch.stack([as_feature_map(grads[:, m], name, reshape_transform)
                                 for m in range(grads.shape[1])], dim=1)
    torch.set_grad_enabled(False)
    if grads is not None:
        grads = grads.float()
    return _Pass(name, module, A.detach().float(), output.detach(), logits.detach().float(), tgt, con, grads)


def _check_options(names: list[str], contrast: ContrastSpec, projection: str, batch_size: int) -> None:
    if projection not in ("pooled", "full"):
        raise ValueError(f"unknown projection {projection!r}; use 'pooled' (reference) or 'full'")
    want = [m for m in names if REGISTRY[m].needs_contrast]
    if want and contrast is None:
        raise ValueError(
            f"method {want[0]!r} needs contrast=[B, T, K] class indices (e.g. from ck.contrast_sets)")
    if not want and contrast is not None:
        users = " and ".join(repr(m) for m in all_methods() if REGISTRY[m].needs_contrast)
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
    amp_dtype: AmpSpec = None,
    progress: bool = False,
    reshape_transform: ReshapeTransform | None = None,
    params: Mapping[str, Mapping[str, object]] | None = None,
) -> CAMResult:
    """Maps of several methods (any registered one, :func:`casekit.cam.registry.all_methods`) from one forward
    and one batched backward pass.

    ``targets`` may be a ``LongTensor [B]``/``[B, T]`` or a function of the
    logits returning one (e.g. ``lambda z: z.topk(2).indices``); ``contrast`` a
    ``LongTensor [B, T, K]`` or a function ``(targets, logits) -> [B, T, K]``
    (needed by ``"case"`` and ``"gradcam-diff"``).
    ``batch_size`` bounds the masked/ablated forwards of Score-CAM and
    Ablation-CAM.  ``amp_dtype`` (e.g. ``torch.bfloat16``) runs those under autocast; a mapping
    ``{method: dtype or None}`` sets it per method instead (:func:`method_dtypes`): the gradient methods then
    share one forward and backward under their common dtype (their targets still come from a float32
    forward), the gradient-free methods their own masked/ablated forwards.
    ``reshape_transform`` maps a layer output that is not ``[B, C, h, w]`` (a transformer's tokens
    ``[B, tokens, C]``) to one; it is applied to the activations and the gradients, and Ablation-CAM
    ablates a channel in the layer's own layout (as pytorch-grad-cam's ``reshape_transform``).
    ``params`` sets a method's parameters (``{"finercam": {"alpha": 0.5}}``; defaults in its registry record).
    """
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError(f"no method given; choose from {', '.join(all_methods())}")
    names = list(dict.fromkeys(canonical_method(m) for m in names))
    _check_options(names, contrast, projection, batch_size)
    specs = [REGISTRY[m] for m in names]
    given = {canonical_method(k): v for k, v in (params or {}).items()}
    unused = sorted(set(given) - set(names))
    if unused:
        raise ValueError(f"params names method(s) {unused} that this call does not run ({names})")
    options = {m: method_params(m, given.get(m)) for m in names}
    amp = method_dtypes(names, amp_dtype)
    need_grad = any(s.needs_gradients for s in specs)
    grad_amp = _gradient_dtype(names, amp)
    extra = [s for s in specs if s.grad_output is not None]

    def grad_rows(logits: torch.Tensor, tgt: torch.Tensor, con: torch.Tensor | None) -> torch.Tensor | None:
        if not extra:
            return None
        return torch.cat([s.grad_output(logits, tgt, con, options[s.name]) for s in extra], dim=1)

    with evaluation_mode(model):
        fw = _forward(model, images, layer, targets, contrast, need_grad and grad_amp is None,
                      reshape_transform, grad_rows=grad_rows)
        if need_grad and grad_amp is not None:  # the targets of the float32 logits, the gradients at grad_amp
            fw_amp = _forward(model, images, fw.module, fw.targets, fw.contrast, True, reshape_transform,
                              grad_amp, grad_rows)
        else:
            fw_amp = fw
        A, tgt, con = fw.activations, fw.targets, fw.contrast
        if A.shape[-2:] == (1, 1):
            warnings.warn(
                f"layer {fw.name!r} has a 1×1 feature map at this input size: every map is constant "
                "and comes back all zero; choose an earlier layer or larger images",
                RuntimeWarning, stacklevel=2)
        raw: dict[str, torch.Tensor] = {}
        notes: dict[str, str] = {}
        if fw_amp.grads is not None:
            raw.update(_gradient_maps(model, fw.module, images, fw_amp, tgt, con, specs, extra, options,
                                      projection, eps, batch_size, progress))
            fw_amp.grads = None  # freed before the gradient-free methods run
        for s in specs:
            if s.needs_gradients:
                continue
            x = MapInputs(model, fw.module, images, A, fw.logits, tgt, con, projection=projection, eps=eps,
                          batch_size=batch_size, amp_dtype=amp[s.name], progress=progress, notes=notes,
                          params=options[s.name])
            if reshape_transform is not None and s.name == "ablationcam":
                x.layer_output = fw.layer_output
                x.channel_positions = channel_positions(reshape_transform, fw.layer_output[:1], fw.name)
            raw[s.name] = s.raw_map(x)

    size = (images.shape[-2], images.shape[-1])
    raw = {m: raw[m].float() for m in names}
    maps = {m: finalize_maps(raw[m], size) for m in names}
    return CAMResult(maps, fw.logits, tgt, con, A, fw.name, notes.get("ablation_mode"), raw,
                     {m: amp[m] for m in names})


def _gradient_maps(model: nn.Module, module: nn.Module, images: torch.Tensor, fw: _Pass, tgt: torch.Tensor,
                   con: torch.Tensor | None, specs: Sequence[MethodSpec], extra: Sequence[MethodSpec],
                   options: Mapping[str, Mapping[str, object]], projection: str, eps: float, batch_size: int,
                   progress: bool) -> dict[str, torch.Tensor]:
    """The raw maps of the gradient methods from one pass's gradients ``[B, T(1 + K) + T·|extra|, ...]``:
    the targets' first, then the contrast classes', then each ``extra`` method's rows (T each)."""
    assert fw.grads is not None
    B, T = tgt.shape
    K = 0 if con is None else con.shape[2]
    x = MapInputs(model, module, images, fw.activations, fw.logits, tgt, con, projection=projection, eps=eps,
                  batch_size=batch_size, progress=progress)
    x.target_grads = fw.grads[:, :T]
    if con is not None:
        x.contrast_grads = fw.grads[:, T:T + T * K].reshape(B, T, K, *fw.grads.shape[2:])
    out_grads = {s.name: fw.grads[:, T + T * K + i * T: T + T * K + (i + 1) * T] for i, s in enumerate(extra)}
    raw = {}
    for s in specs:
        if s.needs_gradients:
            x.params, x.output_grads = options[s.name], out_grads.get(s.name)
            raw[s.name] = s.raw_map(x)
    return raw


def method_dtypes(names: Sequence[str], amp_dtype: AmpSpec) -> dict[str, torch.dtype | None]:
    """The autocast dtype of each method's own forwards: a plain ``amp_dtype`` applies to the gradient-free
    methods (Score-CAM's masked, Ablation-CAM's ablated forwards) and leaves the gradient methods in float32;
    a mapping gives each method its own (a method it does not name: float32; any spelling of a method)."""
    if amp_dtype is None or isinstance(amp_dtype, torch.dtype):
        return {m: (None if REGISTRY[m].needs_gradients else amp_dtype) for m in names}
    if not isinstance(amp_dtype, Mapping):
        raise TypeError(f"amp_dtype must be a torch.dtype, a mapping method -> dtype, or None, got "
                        f"{type(amp_dtype).__name__}")
    given = {canonical_method(k): v for k, v in amp_dtype.items()}
    bad = {m: v for m, v in given.items() if v is not None and not isinstance(v, torch.dtype)}
    if bad:
        raise TypeError(f"amp_dtype values must be torch dtypes or None, got {bad}")
    return {m: given.get(m) for m in names}


def _gradient_dtype(names: Sequence[str], amp: Mapping[str, torch.dtype | None]) -> torch.dtype | None:
    """The one dtype of the shared forward/backward of the gradient methods (all must agree)."""
    dtypes = {amp[m] for m in names if REGISTRY[m].needs_gradients}
    if len(dtypes) > 1:
        shown = {m: str(amp[m]) for m in names if REGISTRY[m].needs_gradients}
        raise ValueError("the gradient methods share one forward and backward pass, so they need one "
                         f"autocast dtype; got {shown}")
    return dtypes.pop() if dtypes else None


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
        raise TypeError(f"method must be one string, one of {all_methods()}; use ck.explain() for several")
    m = canonical_method(method)
    return explain(model, images, layer, m, targets, contrast, **options).maps[m]
