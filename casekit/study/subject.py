"""What a run explains (:class:`Subject`: model, layer roles, dataset, held-out confusion matrix), how a demo,
paper or cifar10 subject is loaded, the run's image sample, and reading a batch of images from a dataset.

Imports: :mod:`casekit.cam`, :mod:`casekit.subjects`, :mod:`casekit._io`, :mod:`.config`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .._io import atomic_path, cache_dir
from ..cam.checks import resolve_layer
from ..cam.contrast import confusion_matrix
from ..cam.hooks import LayerCapture, evaluation_mode
from ..subjects import data, demo, finetune, models, reference, zoo
from .config import ALL_IMAGES, CIFAR100_MODELS, RunConfig


@dataclass
class Subject:
    """What a run explains: a model, its layer roles, a dataset and the held-out confusion matrix.

    ``dataset[i]`` gives ``(image [3, H, W] normalised, label)`` or ``(image, label, masks)`` with ``masks``
    a dict of bool ``[H, W]`` tensors under ``"unique"`` and ``"shared"``.  ``groups``: sibling groups of
    classes (lists of class indices), for the true-vs-sibling comparison.  ``pool``: dataset indices the
    sample may use (e.g. those not held out for the confusion matrix).  ``fingerprint``: identifies the
    weights and data; part of the store config, so that results of another model are never resumed into.
    """

    model: nn.Module
    layers: dict[str, str]
    dataset: Dataset
    confusion: torch.Tensor | None = None
    groups: list[list[int]] | None = None
    pool: Sequence[int] | torch.Tensor | None = None
    fingerprint: str = ""
    class_names: list[str] | None = None
    #: ``[C, C]`` tiebreak of the confusion counts (the held-out mean softmax probabilities), or None.
    tiebreak: torch.Tensor | None = None

    def layer_name(self, layer: str) -> str:
        """The dotted module name of a role (or of a name given directly)."""
        name = self.layers.get(layer, layer)
        resolve_layer(self.model, name)  # raises with close matches when unknown
        return name


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the model's parameters and buffers, by name, shape, dtype and bytes."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _demo_subject(config: RunConfig) -> Subject:
    model, layers = demo.model(config.model, seed=config.seed)
    dataset = demo.dataset(split="test", seed=0)
    model.to(config.device)
    fp = model_fingerprint(model)
    confusion, probs = _demo_confusion(model, config, fp)
    groups = getattr(dataset, "groups", None)
    names = getattr(dataset, "class_names", None)
    return Subject(model, dict(layers), dataset, confusion, groups, None, f"{fp}:{len(dataset)}", names,
                   tiebreak=probs)


def _load_both(path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A cached ``{"counts", "probs"}`` confusion file, or None when absent/unreadable/of an older kind."""
    if not path.exists():
        return None
    try:
        d = torch.load(path, weights_only=True)
        return (d["counts"], d["probs"]) if isinstance(d, dict) else None
    except Exception:  # unreadable: compute it again
        return None


def _save_both(path, counts: torch.Tensor, probs: torch.Tensor) -> None:
    with atomic_path(path) as tmp:
        torch.save({"counts": counts, "probs": probs}, tmp)


def _demo_confusion(model: nn.Module, config: RunConfig, fp: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The zoo member's validation confusion counts and mean softmax probabilities (``kind="both"``),
    cached under ``$CASEKIT_CACHE/confusion/demo-<model>-seed<seed>-<fingerprint>.pt``; the counts equal
    the zoo's."""
    path = cache_dir("confusion") / f"demo-{config.model}-seed{config.seed}-{fp}.pt"
    both = _load_both(path)
    if both is None:
        val = demo.dataset(split="val", seed=0, progress=False)
        batches = ((x.to(config.device), y) for x, y in zoo._batches(val.images_uint8, val.labels, 250))
        both = confusion_matrix(model, batches, num_classes=len(demo.class_names()), device=config.device,
                                progress=False, kind="both")
        _save_both(path, *both)
    counts, probs = both
    if not torch.equal(counts.long(), demo.confusion(config.model, seed=config.seed).long()):
        raise RuntimeError(f"the validation confusion of {config.model} seed {config.seed} differs from the "
                           f"zoo's; delete {path.name} from the cache's confusion folder")
    return counts.long(), probs


def _confusion_cached(model: nn.Module, dataset: Dataset, heldout: torch.Tensor, key: str,
                      device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out confusion counts and mean softmax probabilities of a paper model (``kind="both"``),
    cached under ``$CASEKIT_CACHE/confusion/<key>.pt``."""
    path = cache_dir("confusion") / f"{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.pt"
    both = _load_both(path)
    if both is None:
        def loader():
            return data.subset_loader(dataset, heldout, batch_size=64)
        try:
            counts, probs = confusion_matrix(model, loader(), device=device, kind="both")
        except ValueError as err:  # a class without held-out images: its row has no mean; it stays 0
            if "no images" not in str(err):
                raise
            counts = confusion_matrix(model, loader(), device=device)
            probs = _probs_with_empty_rows(model, loader(), counts, device)
        both = (counts, probs)
        _save_both(path, *both)
    return both


@torch.no_grad()
def _probs_with_empty_rows(model: nn.Module, loader, counts: torch.Tensor, device: str) -> torch.Tensor:
    """Mean softmax probabilities per true class (``confusion_matrix(kind="probs")``), with the rows of
    classes that have no images left 0 (their contrast slots are then decided by index, and recorded)."""
    C = counts.shape[0]
    sums = torch.zeros(C, C, dtype=torch.float64)
    with evaluation_mode(model):
        for images, labels, *_ in loader:
            p = torch.softmax(model(images.to(device)).double(), dim=1).cpu()
            sums.index_add_(0, torch.as_tensor(labels).long().cpu(), p)
    n = counts.sum(dim=1, keepdim=True).double()
    return torch.where(n > 0, sums / n.clamp(min=1), torch.zeros_like(sums))


def _paper_subject(config: RunConfig) -> Subject:
    cifar = config.model.lower() in CIFAR100_MODELS
    if cifar:
        model, layers = finetune.load_finetuned(finetune.checkpoint_path(cache_dir("finetune"), config.seed),
                                                device=config.device)
        dataset = data.cifar100(train=False)
    else:
        if config.seed != 0:
            raise ValueError("the paper's ImageNet models are the torchvision IMAGENET1K_V1 weights: use "
                             "seed=0")
        model, layers, _ = models.load_paper_model(config.model, device=config.device)
        dataset = data.imagenet_val()
    if config.heldout >= len(dataset):
        raise ValueError(f"heldout={config.heldout} leaves no images of the {len(dataset)} to evaluate")
    if cifar:  # stratified: the same number of held-out images per class (50 of 100 with 5,000)
        heldout, pool = stratified_split(dataset.targets, config.heldout, config.sample_seed)
    else:
        heldout, pool = data.split_indices(len(dataset), config.heldout, config.sample_seed)
    fp = model_fingerprint(model)
    key = (f"{config.model}-seed{config.seed}-{fp}-n{len(dataset)}-h{config.heldout}-s{config.sample_seed}"
           + ("-strat" if cifar else ""))
    confusion, probs = _confusion_cached(model, dataset, heldout, key, config.device)
    return Subject(model, dict(layers), dataset, confusion, None, pool, f"{fp}:{len(dataset)}",
                   tiebreak=probs)


def stratified_split(labels: Sequence[int], n_heldout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(len(labels))`` into ``(heldout, pool)``, disjoint, together all indices, each sorted,
    with ``n_heldout`` held out in proportion to each class's size: class c with ``n_c`` of ``N`` images gets
    ``⌊n_heldout·n_c/N⌋`` plus one for the classes with the largest remainders (ties: lower class); which
    images of a class are held out is a seeded random draw (``numpy.random.default_rng(seed)``)."""
    y = np.asarray(labels, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {y.shape}")
    if isinstance(n_heldout, bool) or not isinstance(n_heldout, (int, np.integer)):
        raise TypeError(f"n_heldout must be an int, got {type(n_heldout).__name__}")
    if not 0 <= n_heldout < y.size:
        raise ValueError(f"n_heldout must be in 0..{y.size - 1} (leaving images to evaluate), "
                         f"got {n_heldout}")
    classes, sizes = np.unique(y, return_counts=True)
    share = n_heldout * sizes / y.size
    quota = np.floor(share).astype(np.int64)
    extra = np.lexsort((classes, -(share - quota)))[: n_heldout - int(quota.sum())]
    quota[extra] += 1
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    mask = np.zeros(y.size, dtype=bool)
    mask[np.concatenate(held)] = True
    return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(np.flatnonzero(~mask))


def cifar10_split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cifar10 profile's ``(heldout, pool)``: half of every class held out for the confusion matrix, drawn
    with ``seed`` (the run's ``sample_seed``); the evaluated sample is drawn from ``pool``, the other half."""
    return reference.stratified_split(labels, None, seed)


def _cifar10_subject(config: RunConfig) -> Subject:
    """A pretrained CIFAR-10 network of :mod:`casekit.subjects.reference` on the shared test images (each
    normalised with the network's own mean/std); confusion counts and mean softmax probabilities (the
    tiebreak of equal counts) from the held-out half (:func:`cifar10_split`), cached like a paper model's.
    ``config.heldout`` is not used: the split is half of every class."""
    if config.seed != 0:
        raise ValueError("the cifar10 profile's networks are single pretrained checkpoints: use seed=0")
    model, info = reference.model(config.model, device=config.device)
    loaded = reference.images()
    raw, labels = loaded
    dataset = TensorDataset(reference.normalize(raw, info), labels)
    heldout, pool = cifar10_split(labels, config.sample_seed)
    weights = model_fingerprint(model)
    fp = f"{weights}:{loaded.info['set']}:{len(dataset)}"
    key = f"cifar10-{config.model}-{weights}-{loaded.info['set']}-n{len(dataset)}-half-s{config.sample_seed}"
    confusion, probs = _confusion_cached(model, dataset, heldout, key, config.device)
    return Subject(model, dict(info["layers"]), dataset, confusion.long(), None, pool, fp,
                   list(reference.CLASSES), tiebreak=probs)


def load_subject(config: RunConfig) -> Subject:
    """The model, layers, data and confusion matrix of a demo, paper or cifar10 run."""
    if config.profile == "demo":
        return _demo_subject(config)
    if config.profile == "paper":
        return _paper_subject(config)
    if config.profile == "cifar10":
        return _cifar10_subject(config)
    raise ValueError("profile 'custom' needs a Subject: run(config, subject=Subject(model, layers, dataset, "
                     "...))")



#: Pools up to this size are classified in full when sampling, so a run can say how many correctly
#: classified images were available (the cifar10 and demo pools; not ImageNet's 40,000).
SCAN_ALL_UP_TO = 10_000


def sample_images(config: RunConfig, subject: Subject, progress: bool = False) -> list[int]:
    """The run's sample: ``n_images`` dataset indices, a seeded random draw among correctly classified
    images (every one of them for ``n_images="all"``)."""
    return sample_with_counts(config, subject, progress)[0]


def sample_with_counts(config: RunConfig, subject: Subject,
                       progress: bool = False) -> tuple[list[int], data.SampleCounts]:
    """:func:`sample_images` and how it was drawn (:class:`casekit.subjects.data.SampleCounts`)."""
    pool_size = len(subject.pool) if subject.pool is not None else len(subject.dataset)
    n = None if config.n_images == ALL_IMAGES else config.n_images
    ids, counts = data.correct_sample_counts(
        subject.model, subject.dataset, n, config.sample_seed, batch_size=max(64, config.batch_size),
        device=config.device, pool=subject.pool, progress=progress, scan_all=pool_size <= SCAN_ALL_UP_TO)
    return [int(i) for i in ids], counts


def layer_activations(model: nn.Module, images: torch.Tensor,
                      layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of several layers from one forward pass without autograd → ``{name: [B, C, h, w]}``.

    Uses the engine's own capture, so the values equal :attr:`casekit.CAMResult.activations` for that layer
    (e.g. the output of DenseNet's ``norm5`` before the in-place ReLU that follows it)."""
    captures = [LayerCapture(resolve_layer(model, name)[1], name, grad_from_layer=False) for name in layers]
    with evaluation_mode(model), torch.no_grad():
        handles = [c.module.register_forward_hook(c) for c in captures]
        try:
            model(images)
        finally:
            for h in handles:
                h.remove()
    out = {}
    for c in captures:
        if c.activations is None:
            raise ValueError(f"layer {c.name!r} is not run by the model's forward pass")
        out[c.name] = c.activations
    return out


def load_batch(dataset: Dataset, ids: Sequence[int],
               device: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    """Items ``ids`` of ``dataset`` → ``(images [B, 3, H, W] float, labels [B], masks {"unique", "shared"}:
    bool [B, H, W] or None)`` on ``device``; every item carries masks or none does."""
    images, labels, masks = [], [], []
    for i in ids:
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError("dataset items must be (image, label) or (image, label, masks) tuples")
        images.append(torch.as_tensor(item[0]))
        labels.append(int(item[1]))
        m = item[2] if len(item) > 2 else None
        masks.append(m if isinstance(m, Mapping) else None)
    has = [m is not None and "unique" in m and "shared" in m for m in masks]
    if any(has) and not all(has):
        raise ValueError("some dataset items carry masks and others do not")
    out_masks = None
    if all(has):
        out_masks = {part: torch.stack([torch.as_tensor(m[part]).bool() for m in masks]).to(device)
                     for part in ("unique", "shared")}
    return torch.stack(images).float().to(device), torch.tensor(labels, device=device), out_masks

