"""Contrast sets from a confusion matrix (paper, Sec. III-C, eq. 2).

``V(u) = argmax^k_{v ≠ u} M̂[u, v]`` where ``M̂`` is the row-normalised
confusion matrix computed on held-out data.  The set depends only on the
target class u.

Ties in ``M̂`` are common (a row whose model confuses class u with one class only has all other entries 0).
:func:`contrast_sets` breaks them by an optional ``tiebreak`` matrix (e.g. the mean softmax probabilities of
:func:`confusion_matrix` with ``kind="probs"``), then by the lower class index; :func:`contrast_decisions`
says, per slot, which of the three decided it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .hooks import evaluation_mode

#: How a contrast slot was decided (see :func:`contrast_decisions`).
DECISIONS: tuple[str, ...] = ("counts", "tiebreak", "index")


def row_normalise(confusion: torch.Tensor) -> torch.Tensor:
    """``M̂[u, v] = M[u, v] / Σ_v M[u, v]`` (a row without samples stays 0)."""
    m = confusion.double()
    total = m.sum(dim=1, keepdim=True)
    return torch.where(total > 0, m / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.zeros_like(m))


def _square(matrix: torch.Tensor | np.ndarray, name: str, nonneg: bool) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, torch.Tensor) else matrix)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square matrix [C, C], got shape {tuple(m.shape)}")
    if m.is_complex() or m.dtype == torch.bool:
        raise TypeError(f"{name} must hold counts or rates, got dtype {m.dtype}")
    m = m.detach().cpu().double()
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    if nonneg and bool((m < 0).any()):
        raise ValueError(f"{name} has negative entries; pass counts or row rates")
    return m


def _ranked(confusion: torch.Tensor | np.ndarray, k: int,
            tiebreak: torch.Tensor | np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                 torch.Tensor]:
    """Validated ``(rates [C, C], tiebreak [C, C] | None, order [C, C])``; ``order[u]`` lists the classes
    v ≠ u by decreasing rate, then decreasing tiebreak, then increasing index (u itself last)."""
    m = _square(confusion, "confusion", nonneg=True)
    C = m.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k <= C - 1:
        raise ValueError(f"k must be between 1 and C - 1 = {C - 1} for {C} classes, got {k}")
    tb = None
    if tiebreak is not None:
        tb = _square(tiebreak, "tiebreak", nonneg=False)
        if tb.shape != m.shape:
            raise ValueError(f"tiebreak must have the confusion's shape {tuple(m.shape)}, got "
                             f"{tuple(tb.shape)}")
    rates = row_normalise(m)
    # last key first: each stable sort keeps the previous keys' order on ties
    order = torch.arange(C).expand(C, C)
    if tb is not None:
        order = order.gather(1, torch.sort(-tb.gather(1, order) + 0.0, dim=1, stable=True).indices)
    key = rates.clone()
    key.fill_diagonal_(-1.0)  # the class itself sorts last (rates are ≥ 0)
    # + 0.0: no −0
    order = order.gather(1, torch.sort(-key.gather(1, order) + 0.0, dim=1, stable=True).indices)
    return rates, tb, order


def contrast_sets(confusion: torch.Tensor | np.ndarray, k: int,
                  tiebreak: torch.Tensor | np.ndarray | None = None) -> torch.LongTensor:
    """For each class u, the k classes v ≠ u with the largest ``M̂[u, v]`` → ``LongTensor [C, k]``.

    Ordered by decreasing ``M̂[u, v]``; classes with equal ``M̂[u, v]`` by decreasing ``tiebreak[u, v]``
    (any ``[C, C]`` matrix, e.g. the mean softmax probabilities ``confusion_matrix(..., kind="probs")``),
    then by the lower class index.  u is never in its own set.  ``k`` must be in 1..C − 1 (an error, never
    truncated).  Without ``tiebreak`` the result is the plain lower-index rule.
    """
    _, _, order = _ranked(confusion, k, tiebreak)
    device = confusion.device if isinstance(confusion, torch.Tensor) else torch.device("cpu")
    return order[:, : int(k)].contiguous().to(device)


def contrast_decisions(confusion: torch.Tensor | np.ndarray, k: int,
                       tiebreak: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """How each slot of ``contrast_sets(confusion, k, tiebreak)`` was decided → ``str`` array ``[C, k]``.

    Slot ``(u, j)`` holds class ``v``; ``L`` are the classes ``w ∉ V(u) ∪ {u}`` left out of the set.
    ``"counts"``: ``M̂[u, v] > M̂[u, w]`` for every ``w ∈ L`` (membership decided by the confusion alone;
    also when ``L`` is empty, k = C − 1); else v ties in ``M̂`` with the left-out classes
    ``T = {w ∈ L : M̂[u, w] = M̂[u, v]}`` and the slot is ``"tiebreak"`` when ``tiebreak[u, v] >
    tiebreak[u, w]`` for every ``w ∈ T``, otherwise ``"index"`` (always ``"index"`` without a tiebreak).
    The decision is about membership in the set of size k, not the order inside it (CASE averages over
    the set); for a prefix ``[:, :k']`` ask again with ``k'``.  Tally with :func:`decision_counts`.
    """
    rates, tb, order = _ranked(confusion, k, tiebreak)
    C, k = rates.shape[0], int(k)
    out = np.empty((C, k), dtype="<U8")
    for u in range(C):
        chosen, left = order[u, :k], order[u, k : C - 1]  # order[u, C - 1] is u itself
        r_left = rates[u, left]
        for j, v in enumerate(chosen.tolist()):
            tied = left[r_left == rates[u, v]]
            if tied.numel() == 0:
                out[u, j] = "counts"
            elif tb is not None and bool((tb[u, v] > tb[u, tied]).all()):
                out[u, j] = "tiebreak"
            else:
                out[u, j] = "index"
    return out


def decision_counts(decisions: np.ndarray) -> dict[str, int]:
    """Number of slots decided by each rule → ``{"counts": n, "tiebreak": n, "index": n}`` (all keys
    present), from :func:`contrast_decisions`."""
    d = np.asarray(decisions)
    unknown = sorted(set(d.ravel().tolist()) - set(DECISIONS))
    if unknown:
        raise ValueError(f"decisions must be among {DECISIONS}, got {unknown}")
    return {name: int((d == name).sum()) for name in DECISIONS}


def _batch_parts(batch: object) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError("the loader must yield (images, labels, ...) tuples or dicts with 'image' and 'label'")


CONFUSION_KINDS = ("counts", "probs", "both")


@torch.no_grad()
def confusion_matrix(
    model: nn.Module,
    loader: Iterable,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    kind: str = "counts",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The model's confusion over ``loader``, by true class (rows).

    ``kind="counts"`` (default): ``M[true, predicted]`` counts of top-1 predictions → ``LongTensor [C, C]``.
    ``kind="probs"``: ``P[u, :] = mean over images of true class u of softmax(logits)`` → float64 ``[C, C]``,
    rows sum to 1 (a ``tiebreak`` for :func:`contrast_sets`); a class without images has no mean, and this
    raises ``ValueError`` naming the classes.  ``kind="both"``: ``(counts, probs)`` from one pass.
    Use a held-out split that is disjoint from the images being explained.
    """
    if kind not in CONFUSION_KINDS:
        raise ValueError(f"kind must be one of {CONFUSION_KINDS}, got {kind!r}")
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    counts: torch.Tensor | None = None
    prob_sums: torch.Tensor | None = None
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
            if kind != "counts":
                probs = torch.softmax(logits.double(), dim=1)
                sums = torch.zeros(C, C, dtype=torch.float64,
                                   device=probs.device).index_add_(0, labels, probs)
                prob_sums = sums if prob_sums is None else prob_sums + sums
    if counts is None:
        raise ValueError("the loader yielded no batches")
    counts = counts.cpu()
    if kind == "counts":
        return counts
    assert prob_sums is not None
    n = counts.sum(dim=1)
    empty = (n == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"classes {empty[:20]} have no images in the loader: their mean probabilities are "
                         "undefined (use a held-out split that holds every class)")
    probs = prob_sums.cpu() / n[:, None].double()
    return probs if kind == "probs" else (counts, probs)
