"""Gradient-based CAM formulas as pure functions of activations and gradients.

Shapes: activations ``A [B, C, h, w]``; gradients of target logits
``G [B, T, C, h, w]`` (``G[b, t] = dS_{u_bt} / dA_b`` of the raw logit S).
Every function returns the raw (un-rectified) map ``[B, T, h, w]``; ReLU,
upsampling and min-max scaling are applied once, in :mod:`casekit.cam.engine`.
The baselines follow pytorch-grad-cam 1.5 exactly.
"""

from __future__ import annotations

from typing import Literal

import torch

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
