"""Contrast sets from a confusion matrix (paper, Sec. III-C, eq. 2).

``V(u) = argmax^k_{v ≠ u} M̂[u, v]`` where ``M̂`` is the row-normalised
confusion matrix computed on held-out data.  The set depends only on the
target class u.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .hooks import evaluation_mode


def row_normalise(confusion: torch.Tensor) -> torch.Tensor:
    """``M̂[u, v] = M[u, v] / Σ_v M[u, v]`` (a row without samples stays 0)."""
    m = confusion.double()
    total = m.sum(dim=1, keepdim=True)
    return torch.where(total > 0, m / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(m))


def contrast_sets(confusion: torch.Tensor | np.ndarray, k: int) -> torch.LongTensor:
    """For each class u, the k classes v ≠ u with the largest ``M̂[u, v]`` → ``LongTensor [C, k]``.

    Ordered by decreasing confusion; ties go to the lower class index; u is never in its own set.
    """
    m = torch.as_tensor(np.asarray(confusion) if not isinstance(confusion, torch.Tensor) else confusion)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be a square matrix [C, C], got shape {tuple(m.shape)}")
    if m.is_complex() or m.dtype == torch.bool:
        raise TypeError(f"confusion must hold counts or rates, got dtype {m.dtype}")
    m = m.double()
    if not bool(torch.isfinite(m).all()):
        raise ValueError("confusion contains NaN or Inf")
    if bool((m < 0).any()):
        raise ValueError("confusion has negative entries; pass counts or row rates")
    C = m.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k <= C - 1:
        raise ValueError(f"k must be between 1 and C - 1 = {C - 1} for {C} classes, got {k}")
    rates = row_normalise(m)
    rates.fill_diagonal_(-1.0)  # the class itself sorts last
    order = torch.sort(-rates, dim=1, stable=True).indices  # stable: ties keep the lower index first
    return order[:, : int(k)].contiguous()


def _batch_parts(batch: object) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError("the loader must yield (images, labels, ...) tuples or dicts with 'image' and 'label'")


@torch.no_grad()
def confusion_matrix(
    model: nn.Module,
    loader: Iterable,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> torch.LongTensor:
    """Counts ``M[true, predicted]`` of the model's top-1 predictions over ``loader`` → ``LongTensor [C, C]``.

    Use a held-out split that is disjoint from the images being explained.
    """
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    counts: torch.Tensor | None = None
    with evaluation_mode(model):
        torch.set_grad_enabled(False)
        for batch in tqdm(loader, desc="confusion matrix", unit="batch", disable=not progress, leave=False):
            images, labels = _batch_parts(batch)
            logits = model(images.to(device))
            C = num_classes if num_classes is not None else logits.shape[1]
            if logits.dim() != 2 or logits.shape[1] != C:
                raise ValueError(f"model output {tuple(logits.shape)} does not match num_classes={C}")
            labels = torch.as_tensor(labels, device=device).long()
            if int(labels.min()) < 0 or int(labels.max()) >= C:
                raise ValueError(f"labels outside 0..{C - 1} for a {C}-class model")
            pred = logits.argmax(dim=1)
            flat = torch.bincount(labels * C + pred, minlength=C * C).view(C, C)
            counts = flat if counts is None else counts + flat
    if counts is None:
        raise ValueError("the loader yielded no batches")
    return counts.cpu()
