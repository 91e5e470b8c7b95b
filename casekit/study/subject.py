"""What a run explains (:class:`Subject`: model, layer roles, dataset, held-out confusion matrix), how a demo,
paper or cifar10 subject is loaded, the run's image sample, and reading a batch of images from a dataset.

Imports: :mod:`casekit.cam`, :mod:`casekit.subjects`, :mod:`casekit._io`, :mod:`.config`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .._io import atomic_path, cache_dir
from ..cam.checks import resolve_layer
from ..cam.contrast import confusion_matrix
from ..cam.hooks import LayerCapture, evaluation_mode
from ..subjects import data, demo, finetune, models, reference
from .config import RunConfig


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
    confusion = demo.confusion(config.model, seed=config.seed)
    groups = getattr(dataset, "groups", None)
    names = getattr(dataset, "class_names", None)
    model.to(config.device)
    return Subject(model, dict(layers), dataset, confusion, groups, None,
                   f"{model_fingerprint(model)}:{len(dataset)}", names)


def _confusion_cached(model: nn.Module, dataset: Dataset, heldout: torch.Tensor, key: str,
                      device: str) -> torch.Tensor:
    """The held-out confusion matrix of a paper model, cached under ``$CASEKIT_CACHE/confusion/<key>.pt``."""
    path = cache_dir("confusion") / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # unreadable: compute it again
            pass
    counts = confusion_matrix(model, data.subset_loader(dataset, heldout, batch_size=64), device=device)
    with atomic_path(path) as tmp:
        torch.save(counts, tmp)
    return counts


def _paper_subject(config: RunConfig) -> Subject:
    if config.model.lower() in ("densenet201-cifar100", "densenet201_cifar100"):
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
    heldout, pool = data.split_indices(len(dataset), config.heldout, config.sample_seed)
    fp = model_fingerprint(model)
    key = f"{config.model}-seed{config.seed}-{fp}-n{len(dataset)}-h{config.heldout}-s{config.sample_seed}"
    confusion = _confusion_cached(model, dataset, heldout, key, config.device)
    return Subject(model, dict(layers), dataset, confusion, None, pool, f"{fp}:{len(dataset)}")


def cifar10_split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cifar10 profile's ``(heldout, pool)``: half of every class held out for the confusion matrix, drawn
    with ``seed`` (the run's ``sample_seed``); the evaluated sample is drawn from ``pool``, the other half."""
    return reference.stratified_split(labels, None, seed)


def _cifar10_subject(config: RunConfig) -> Subject:
    """A pretrained CIFAR-10 network of :mod:`casekit.subjects.reference` on the shared test images (each
    normalised with the network's own mean/std); confusion matrix from the held-out half
    (:func:`cifar10_split`).  ``config.heldout`` is not used: the split is half of every class."""
    if config.seed != 0:
        raise ValueError("the cifar10 profile's networks are single pretrained checkpoints: use seed=0")
    model, info = reference.model(config.model, device=config.device)
    loaded = reference.images()
    raw, labels = loaded
    dataset = TensorDataset(reference.normalize(raw, info), labels)
    heldout, pool = cifar10_split(labels, config.sample_seed)
    confusion = confusion_matrix(model, data.subset_loader(dataset, heldout, batch_size=250),
                                 num_classes=len(reference.CLASSES), device=config.device, progress=False)
    fp = f"{model_fingerprint(model)}:{loaded.info['set']}:{len(dataset)}"
    return Subject(model, dict(info["layers"]), dataset, confusion, None, pool, fp, list(reference.CLASSES))


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



def sample_images(config: RunConfig, subject: Subject, progress: bool = False) -> list[int]:
    """The run's sample: ``n_images`` dataset indices, a seeded random draw among correctly classified
    images."""
    ids = data.correct_sample(subject.model, subject.dataset, config.n_images, config.sample_seed,
                         batch_size=max(64, config.batch_size), device=config.device, pool=subject.pool,
                         progress=progress)
    return [int(i) for i in ids]



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

