"""Gradient-based CAM formulas as pure functions of activations and gradients, and the gradient methods
(each one decorated function, :func:`casekit.cam.registry.method`, right after its formula).

Shapes: activations ``A [B, C, h, w]``; gradients of target logits
``G [B, T, C, h, w]`` (``G[b, t] = dS_{u_bt} / dA_b`` of the raw logit S).
Every function returns the raw (un-rectified) map ``[B, T, h, w]``; ReLU,
upsampling and min-max scaling are applied once, in :mod:`casekit.cam.engine`.
The baselines and the extensions that name an oracle follow pytorch-grad-cam 1.5 exactly.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch

from .registry import MapInputs, method

Projection = Literal["pooled", "full"]

# Relative size of the part of w_u outside span(w̄) below which the target is
# treated as lying inside the contrast direction (float32 rounding territory).
PARALLEL_RTOL = 1e-5


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """``M[b, t] = Σ_c weights[b, t, c] · A[b, c]`` → ``[B, T, h, w]``."""
    return torch.einsum("btc,bchw->bthw", weights, activations)


def gradcam_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: ``w_c = mean_{ij} ∂S/∂A_c(i, j)`` → ``[B, T, C]``."""
    return grads.mean(dim=(-2, -1))


def gradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM map ``Σ_c w_c A_c`` with ``w_c`` the spatially averaged gradient."""
    return weighted_sum(gradcam_weights(grads), activations)


def gradcampp_weights(activations: torch.Tensor, grads: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Grad-CAM++ (pytorch-grad-cam's form of Chattopadhay et al., eq. 19).

    ``α_c(i,j) = g² / (2 g² + (Σ_{kl} A_c(k,l)) · g³ + ε)`` (0 where g = 0),
    ``w_c = Σ_{ij} α_c(i,j) · ReLU(g_c(i,j))``, with g = ∂S/∂A.
    """
    g2 = grads.pow(2)
    g3 = g2 * grads
    sum_a = activations.sum(dim=(-2, -1))[:, None, :, None, None]  # [B,1,C,1,1]
    alpha = g2 / (2 * g2 + sum_a * g3 + eps)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (grads.clamp_min(0) * alpha).sum(dim=(-2, -1))


def gradcampp(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ map ``Σ_c w_c A_c``."""
    return weighted_sum(gradcampp_weights(activations, grads), activations)


def layercam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM: ``Σ_c ReLU(∂S/∂A_c) ⊙ A_c`` (element-wise weights)."""
    return (grads.clamp_min(0) * activations[:, None]).sum(dim=2)


def orthogonal_component(
    target: torch.Tensor, contrast_mean: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """CASE projection on the last axis: ``w⊥ = w_u − (w_u·w̄)/(‖w̄‖² + ε) · w̄``.

    ``ε = 1e-8`` as in the reference implementation.  When ``w_u`` lies inside
    ``span(w̄)`` up to float rounding (relative residual < ``PARALLEL_RTOL``),
    the target has no evidence of its own and ``w⊥`` is exactly 0.  (The
    reference code instead returns ``ε/(‖w_u‖²+ε) · w_u``, which after min-max
    scaling is the Grad-CAM map again.)  Computed in float64.
    """
    u = target.double()
    v = contrast_mean.double()
    dot = (u * v).sum(-1, keepdim=True)
    vv = (v * v).sum(-1, keepdim=True)
    out = u - dot / (vv + eps) * v
    exact = u - torch.where(vv > 0, dot / vv.clamp_min(torch.finfo(torch.float64).tiny), 0) * v
    uu = u.norm(dim=-1, keepdim=True)
    inside = exact.norm(dim=-1, keepdim=True) <= PARALLEL_RTOL * uu
    out = torch.where(inside, torch.zeros_like(out), out)
    return out.to(target.dtype)


def case_geometry(
    target: torch.Tensor, contrast_mean: torch.Tensor, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """How much of ``w_u`` CASE keeps and how close it is to the contrast: ``(‖w⊥‖ / ‖w_u‖, cos(w_u, w̄))``.

    ``target, contrast_mean [..., C]`` → two tensors ``[...]``; ``w⊥`` from :func:`orthogonal_component`
    (0 when ``w_u = 0``).
    """
    w_perp = orthogonal_component(target, contrast_mean, eps)
    kept = w_perp.norm(dim=-1) / target.norm(dim=-1).clamp_min(torch.finfo(target.dtype).tiny)
    cosine = torch.nn.functional.cosine_similarity(target, contrast_mean, dim=-1)
    return kept, cosine


def case_weights(
    target_grads: torch.Tensor,
    contrast_grads: torch.Tensor,
    projection: Projection = "pooled",
    eps: float = 1e-8,
) -> torch.Tensor:
    """CASE channel weights ``w⊥ [B, T, C]``.

    ``target_grads [B, T, C, h, w]`` are the gradients of the target logits,
    ``contrast_grads [B, T, K, C, h, w]`` those of its K contrast classes.

    - ``"pooled"`` (reference): ``w_u = mean_ij g_u``, ``w̄ = mean_v mean_ij g_v``, ``w⊥ = proj(w_u, w̄)``.
    - ``"full"``: project the flattened maps ``g_u`` against ``ḡ = mean_v g_v``, then pool.
    """
    if projection == "pooled":
        w_u = gradcam_weights(target_grads)
        w_bar = gradcam_weights(contrast_grads).mean(dim=2)
        return orthogonal_component(w_u, w_bar, eps)
    if projection == "full":
        B, T, C, h, w = target_grads.shape
        g_u = target_grads.reshape(B, T, C * h * w)
        g_bar = contrast_grads.mean(dim=2).reshape(B, T, C * h * w)
        g_perp = orthogonal_component(g_u, g_bar, eps).reshape(B, T, C, h, w)
        return gradcam_weights(g_perp)
    raise ValueError(f"unknown projection {projection!r}; use 'pooled' (reference) or 'full'")


def case(
    activations: torch.Tensor,
    target_grads: torch.Tensor,
    contrast_grads: torch.Tensor,
    projection: Projection = "pooled",
    eps: float = 1e-8,
) -> torch.Tensor:
    """CASE map ``Σ_c w⊥_c A_c`` (rectified later)."""
    return weighted_sum(case_weights(target_grads, contrast_grads, projection, eps), activations)


def gradcam_diff_weights(target_grads: torch.Tensor, contrast_grads: torch.Tensor) -> torch.Tensor:
    """Pooled gradient of the logit difference ``S_u − mean_{v∈V(u)} S_v``: ``w_u − w̄`` → ``[B, T, C]``.

    ``target_grads [B, T, C, h, w]``, ``contrast_grads [B, T, K, C, h, w]``; by linearity of the
    gradient and of the spatial mean this equals Grad-CAM's weights for the difference logit.
    """
    return gradcam_weights(target_grads) - gradcam_weights(contrast_grads).mean(dim=2)


def gradcam_diff(
    activations: torch.Tensor, target_grads: torch.Tensor, contrast_grads: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM of the logit difference: ``Σ_c (w_u − w̄)_c A_c`` (rectified later), the plain
    contrastive baseline that CASE's orthogonal projection refines."""
    return weighted_sum(gradcam_diff_weights(target_grads, contrast_grads), activations)


# ------------------------------------------------------------------------------------------ the methods


@method("gradcam", "Grad-CAM", role="baseline", paper=True, needs_gradients=True, order=10,
        colour="#0173b2", oracle="GradCAM", formula="Σ_c w_u,c A_c, w_u = mean_ij ∂S_u/∂A", built_in=True)
def gradcam_method(x: MapInputs) -> torch.Tensor:
    return gradcam(x.activations, x.target_grads)


@method("gradcam++", "Grad-CAM++", role="baseline", paper=True, needs_gradients=True, order=20,
        colour="#de8f05", oracle="GradCAMPlusPlus", aliases=("gradcampp", "gradcamplusplus"),
        formula="Σ_c (Σ_ij α_c(i,j) ReLU(g_u,c(i,j))) A_c (pytorch-grad-cam's α)", built_in=True)
def gradcampp_method(x: MapInputs) -> torch.Tensor:
    return gradcampp(x.activations, x.target_grads)


@method("layercam", "LayerCAM", role="baseline", paper=True, needs_gradients=True, order=50,
        colour="#56b4e9", oracle="LayerCAM", formula="Σ_c ReLU(g_u,c) ⊙ A_c", built_in=True)
def layercam_method(x: MapInputs) -> torch.Tensor:
    return layercam(x.activations, x.target_grads)


@method("case", "CASE", role="proposed", paper=True, needs_gradients=True, needs_contrast=True, order=60,
        colour="#000000", formula="Σ_c w⊥_c A_c, w⊥ = w_u − (w_u·w̄)/(‖w̄‖² + ε) w̄, w̄ = mean_{v∈V(u)} w_v",
        built_in=True)
def case_method(x: MapInputs) -> torch.Tensor:
    return case(x.activations, x.target_grads, x.contrast_grads, x.projection, x.eps)  # type: ignore[arg-type]


@method("gradcam-diff", "Grad-CAM (diff)", role="extension", needs_gradients=True, needs_contrast=True,
        order=100, colour="#949494", aliases=("gradcamdifference",),
        formula="Σ_c (w_u − w̄)_c A_c = Grad-CAM of the logit S_u − mean_{v∈V(u)} S_v", built_in=True)
def gradcam_diff_method(x: MapInputs) -> torch.Tensor:
    return gradcam_diff(x.activations, x.target_grads, x.contrast_grads)


@method("hirescam", "HiResCAM", role="extension", needs_gradients=True, order=110, colour="#d55e00",
        oracle="HiResCAM", formula="Σ_c g_u,c ⊙ A_c (no pooling, no ReLU of the gradient)", built_in=True)
def hirescam_method(x: MapInputs) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): the element-wise product of gradient and activation, summed over
    channels."""
    return (x.target_grads * x.activations[:, None]).sum(dim=2)


def xgradcam_weights(activations: torch.Tensor, grads: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): ``w_c = Σ_ij g_c(i,j) A_c(i,j) / (Σ_ij A_c(i,j) + ε)`` → ``[B, T, C]``
    (pytorch-grad-cam: ε = 1e-7)."""
    num = (grads * activations[:, None]).sum(dim=(-2, -1))
    return num / (activations.sum(dim=(-2, -1))[:, None] + eps)


@method("xgradcam", "XGrad-CAM", role="extension", needs_gradients=True, order=120, colour="#ca9161",
        oracle="XGradCAM", params={"eps": 1e-7},
        formula="Σ_c w_c A_c, w_c = Σ_ij g_u,c A_c / (Σ_ij A_c + ε)", built_in=True)
def xgradcam_method(x: MapInputs) -> torch.Tensor:
    weights = xgradcam_weights(x.activations, x.target_grads, float(x.params["eps"]))
    return weighted_sum(weights, x.activations)


def finer_comparison(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Finer-CAM's comparison classes: for each target u the ``k`` classes whose logits are closest to
    ``S_u`` (``|S_v − S_u|`` ascending, u itself excluded, ties by class index) → ``[B, T, k]``."""
    C = logits.shape[1]
    if not 1 <= k <= C - 1:
        raise ValueError(f"Finer-CAM compares with k classes, 1 <= k <= {C - 1}; got k={k}")
    S = logits.detach().float()
    dist = (S[:, None, :] - S.gather(1, targets)[..., None]).abs()  # [B, T, C]
    dist.scatter_(2, targets[..., None], float("inf"))
    return dist.argsort(dim=2, stable=True)[..., :k]


def finer_target_grad(logits: torch.Tensor, targets: torch.Tensor, comparison: torch.Tensor,
                      alpha: float) -> torch.Tensor:
    """∂T/∂S of Finer-CAM's target ``T = Σ_v p_v (S_u − α S_v) / (Σ_v p_v + 1e-9)`` (``p = softmax(S)``,
    v over ``comparison [B, T, K]``; pytorch-grad-cam's ``FinerWeightedTarget``, the weights p_v inside the
    gradient) → ``[B, T, C]``: the grad-output rows of one backward pass."""
    B, T = targets.shape
    K = comparison.shape[2]
    with torch.enable_grad():
        z = logits.detach().float().clone().requires_grad_(True)
        p = torch.softmax(z, dim=1)
        zu = z.gather(1, targets)
        zv = z.gather(1, comparison.reshape(B, T * K)).reshape(B, T, K)
        pv = p.gather(1, comparison.reshape(B, T * K)).reshape(B, T, K)
        value = (pv * (zu[..., None] - alpha * zv)).sum(-1) / (pv.sum(-1) + 1e-9)  # [B, T]
        rows = [torch.autograd.grad(value[:, t].sum(), z, retain_graph=t < T - 1)[0] for t in range(T)]
    return torch.stack(rows, dim=1).to(logits.dtype)


def _finer_logits_rows(logits: torch.Tensor, targets: torch.Tensor, contrast: torch.Tensor | None,
                       params: Mapping[str, Any]) -> torch.Tensor:
    return finer_target_grad(logits, targets, finer_comparison(logits, targets, int(params["k"])),
                             float(params["alpha"]))


def _finer_contrast_rows(logits: torch.Tensor, targets: torch.Tensor, contrast: torch.Tensor | None,
                         params: Mapping[str, Any]) -> torch.Tensor:
    if contrast is None:
        raise ValueError("finercam-contrast compares with the contrast classes: pass contrast=[B, T, K]")
    return finer_target_grad(logits, targets, contrast, float(params["alpha"]))


@method("finercam", "Finer-CAM", role="extension", needs_gradients=True, grad_output=_finer_logits_rows,
        order=130, colour="#e377c2", oracle="FinerCAM", params={"alpha": 1.0, "k": 3},
        formula="Grad-CAM of T = Σ_v p_v (S_u − α S_v) / Σ_v p_v over the k logits closest to S_u",
        built_in=True)
def finercam_method(x: MapInputs) -> torch.Tensor:
    """Finer-CAM (Zhang et al. 2025, pytorch-grad-cam 1.5.7): Grad-CAM of a contrastive target, the
    softmax-weighted difference of the target logit and its k most similar logits."""
    return gradcam(x.activations, x.output_grads)


@method("finercam-contrast", "Finer-CAM (V(u))", role="extension", needs_gradients=True,
        needs_contrast=True, grad_output=_finer_contrast_rows, order=131, colour="#7f3c8d",
        params={"alpha": 1.0},
        formula="Finer-CAM's T with the study's contrast classes V(u) in place of the closest logits",
        built_in=True)
def finercam_contrast_method(x: MapInputs) -> torch.Tensor:
    """Finer-CAM compared with CASE's own contrast classes (the held-out confusion matrix's V(u))."""
    return gradcam(x.activations, x.output_grads)
