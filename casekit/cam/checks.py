"""Input validation shared by the engine and the experiments.

Every check raises ``ValueError``/``TypeError`` with a message that names the
problem; nothing is silently truncated or broadcast.
"""

from __future__ import annotations

import difflib
from typing import Sequence

import torch
from torch import nn


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for ``layer`` given as a name or a module of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, mod in named.items():
            if mod is layer:
                return name, mod
        raise ValueError(
            f"the layer module {type(layer).__name__} is not a submodule of the model "
            f"({type(model).__name__}); pass one of model.named_modules() or its dotted name"
        )
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a dotted module name or an nn.Module, got {type(layer).__name__}")
    if layer in named and layer != "":
        return layer, named[layer]
    candidates = [n for n in named if n]
    close = difflib.get_close_matches(layer, candidates, n=5, cutoff=0.5)
    if not close:  # fall back to names sharing the last component
        tail = layer.split(".")[-1]
        close = [n for n in candidates if n.split(".")[-1] == tail][:5]
    hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
    raise ValueError(
        f"unknown layer {layer!r}: the model ({type(model).__name__}) has no such submodule{hint}"
    )


def check_images(images: torch.Tensor) -> None:
    """Images must be a finite floating tensor ``[B, C, H, W]`` with ``B >= 1``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(
            f"images must be 4-D [B, 3, H, W], got shape {tuple(images.shape)} ({images.dim()}-D); "
            "add a batch dimension with images.unsqueeze(0) for a single image"
        )
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating tensor (normalised), got dtype {images.dtype}")
    bad = ~torch.isfinite(images)
    if bool(bad.any()):
        idx = sorted({int(i) for i in bad.flatten(1).any(1).nonzero().flatten().tolist()})
        kind = "NaN" if bool(torch.isnan(images).any()) else "Inf"
        raise ValueError(f"images contain {kind} values (images at batch index {idx[:10]})")


def check_device(model: nn.Module, images: torch.Tensor) -> None:
    """The model's parameters and buffers must live on the images' device."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device != images.device:
            raise ValueError(
                f"images are on {images.device} but the model's {name!r} is on {t.device}; "
                "move one of them (model.to(device) or images.to(device))"
            )
        break


def check_dtype(model: nn.Module, images: torch.Tensor) -> None:
    """The images' dtype must be the dtype of the model's (first floating) parameters."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_floating_point():
            continue
        if t.dtype != images.dtype:
            raise TypeError(
                f"images are {images.dtype} but the model's {name!r} is {t.dtype}; "
                f"convert one of them (images.to({t.dtype}) or model.to({images.dtype}))"
            )
        break


def as_targets(targets: torch.Tensor | Sequence[int] | Sequence[Sequence[int]], batch: int) -> torch.Tensor:
    """Targets as a ``LongTensor [B, T]`` (``[B]`` becomes ``[B, 1]``); the batch size must match."""
    t = torch.as_tensor(targets)
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"targets must be integer class indices, got dtype {t.dtype}")
    t = t.long()
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        raise ValueError(f"targets must be [B] or [B, T], got shape {tuple(t.shape)}")
    if t.shape[0] != batch:
        raise ValueError(
            f"targets has batch size {t.shape[0]} but images has {batch}: "
            "give one row of targets per image (no truncation or broadcasting is done)"
        )
    if t.shape[1] == 0:
        raise ValueError("targets has T = 0 classes per image; give at least one")
    return t


def as_contrast(contrast: torch.Tensor | Sequence, targets: torch.Tensor) -> torch.Tensor:
    """Contrast classes as a ``LongTensor [B, T, K]`` matching ``targets [B, T]``."""
    c = torch.as_tensor(contrast)
    if c.is_floating_point() or c.dtype == torch.bool or c.is_complex():
        raise TypeError(f"contrast must be integer class indices, got dtype {c.dtype}")
    c = c.long()
    B, T = targets.shape
    if c.dim() == 2 and T == 1:  # [B, K] with single targets: unambiguous
        c = c[:, None, :]
    if c.dim() != 3:
        raise ValueError("contrast must be [B, T, K] (K contrast classes per target), got shape "
                         f"{tuple(c.shape)}")
    if tuple(c.shape[:2]) != (B, T):
        raise ValueError(
            f"contrast has shape {tuple(c.shape)} but targets is [B={B}, T={T}]: "
            "contrast must be [B, T, K], one set of K classes per target"
        )
    if c.shape[2] == 0:
        raise ValueError("contrast has K = 0 classes per target; CASE needs at least one contrast class")
    return c


def check_class_range(indices: torch.Tensor, num_classes: int, what: str) -> None:
    """All entries of ``indices`` must lie in ``[0, num_classes)``."""
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{what} contains class index {bad}, out of range for a model with {num_classes} classes "
            f"(valid: 0..{num_classes - 1})"
        )


def check_logits(logits: object, batch: int) -> torch.Tensor:
    """The model must return a tensor ``[B, num_classes]``."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"the model returned {type(logits).__name__}, expected a logits tensor [B, num_classes]; "
            "wrap the model so that it returns the classification logits"
        )
    if logits.dim() != 2:
        raise ValueError(
            f"the model output must be 2-D logits [B, num_classes], got shape {tuple(logits.shape)}"
        )
    if logits.shape[0] != batch:
        raise ValueError(f"the model returned {logits.shape[0]} rows of logits for a batch of {batch} images")
    return logits
