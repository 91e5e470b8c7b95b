"""``ck.reference``: real pretrained CIFAR-10 networks that nobody on this project trained, and CIFAR-10 test
images.

>>> model, info = ck.reference.model("densenet40")
>>> x, y = ck.reference.images()                     # [N, 3, 32, 32] in [0, 1], labels [N]
>>> logits = model(ck.reference.normalize(x, info))  # the network's own mean/std
>>> maps = ck.saliency(model, ck.reference.normalize(x[:4], info), info["layers"]["final_conv"], "case", ...)

Networks (:data:`NETWORKS`): ``"resnet20"``, ``"resnet56"`` (He et al. 2016), ``"densenet40"``
(DenseNet-BC-40-12), ``"shufflenet"`` (ShuffleNetV2 ×0.5) and the optional ``"lenet"`` (Captum's tutorial
CNN).  Like the paper's torchvision models, a network takes *normalised* inputs,
``(x - info["mean"]) / info["std"]`` per channel, while
:func:`images` returns pixels in [0, 1] — each network was trained with its own statistics
(:func:`normalize`).

``info["layers"]`` maps roles to module names: ``"final_conv"`` (the layer CAM methods explain) and, where the
network ends in a BatchNorm before its pooled head, ``"norm5"`` (the role of torchvision DenseNet's
``norm5``).

Files are found as :mod:`casekit.subjects.fetch` describes: ``$CASEKIT_DATA/reference/cifar10/``, then a
``shared/reference/cifar10`` folder beside or above the checkout, then a hash-checked download.
"""

from __future__ import annotations

import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .._io import atomic_path
from . import fetch
from .cifar_nets import CaptumLeNet, DenseNetBC, ShuffleNetV2Cifar, cifar_resnet
from .data import IMAGENET_MEAN, IMAGENET_STD, MissingDataError, data_root

__all__ = [
    "NETWORKS",
    "NAMES",
    "CLASSES",
    "IMAGE_SETS",
    "RefNet",
    "ReferenceImages",
    "model",
    "images",
    "normalize",
    "files",
    "ensure",
    "missing",
    "stratified_split",
]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class RefNet:
    """One reference network: its file, architecture, layers, input statistics and reported accuracies."""

    display: str
    family: str
    file: str
    build: Callable[[], nn.Module]
    layers: dict[str, str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # top-1 on the 2,000 shared JPEG test images, as measured in shared/reference/cifar10
    accuracy_readme: float
    accuracy_published: float | None  # top-1 its publisher reports on the full CIFAR-10 test set
    note: str = ""


NETWORKS: dict[str, RefNet] = {
    "resnet20": RefNet(
        "ResNet-20", "ResNet (He et al. 2016)", "resnet20-12fca82f.th", lambda: cifar_resnet(20),
        {"final_conv": "layer3.2.conv2"}, IMAGENET_MEAN, IMAGENET_STD, 0.813, 0.9178,
        "no BatchNorm after the last residual addition, so no norm5 role"),
    "resnet56": RefNet(
        "ResNet-56", "ResNet (He et al. 2016)", "resnet56-4bfd9763.th", lambda: cifar_resnet(56),
        {"final_conv": "layer3.8.conv2"}, IMAGENET_MEAN, IMAGENET_STD, 0.831, 0.9362,
        "no BatchNorm after the last residual addition, so no norm5 role"),
    "densenet40": RefNet(
        "DenseNet-BC-40", "DenseNet-BC (Huang et al. 2017)", "pretrained_densenet_4012BC.pth.tar", DenseNetBC,
        {"final_conv": "block3", "norm5": "bn1"},
        (125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255), 0.8225, 0.9316,
        "final_conv is the output of block3 (132 channels, 8x8); its last convolution block3.layer.5.conv2 "
        "makes only the 12 newest channels"),
    "shufflenet": RefNet(
        "ShuffleNetV2 x0.5", "ShuffleNetV2 (Ma et al. 2018)", "cifar10_shufflenetv2_x0_5-1308b4e9.pt",
        ShuffleNetV2Cifar, {"final_conv": "conv5.0", "norm5": "conv5.1"}, _CIFAR_MEAN, _CIFAR_STD, 0.8335,
        0.9013, "maps are 4x4"),
    "lenet": RefNet(
        "Captum LeNet", "LeNet-style CNN (Captum tutorial)", "cifar_torchvision.pt", CaptumLeNet,
        {"final_conv": "conv2"}, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.591, None,
        "fully connected head without global pooling: plain CAM does not apply"),
}
NAMES = ("resnet20", "resnet56", "densenet40", "shufflenet")  # the four networks of the cifar10 profile
_ALIASES = {"densenet": "densenet40", "densenetbc40": "densenet40", "shufflenetv2": "shufflenet",
            "shufflenetv2x05": "shufflenet", "captum": "lenet", "captumlenet": "lenet"}

IMAGE_SETS = {
    "jpeg2000": ("cifar10_test_jpeg_2000.npz",
                 "2,000 CIFAR-10 test images (the first 200 of each class), JPEG-degraded by their "
                 "publisher"),
    "test10000": ("cifar-10-python.tar.gz", "the full official CIFAR-10 test set (10,000 images)"),
}
_TEST_BATCH = "cifar-10-batches-py/test_batch"
_TEST_BATCH_MD5 = "40351d587109b95175f43aff81a1287e"  # the md5 torchvision.datasets.CIFAR10 checks


def _spec(name: str) -> tuple[str, RefNet]:
    if not isinstance(name, str):
        raise TypeError(f"network name must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in NETWORKS:
        raise ValueError(f"unknown reference network {name!r}; choose one of {', '.join(NETWORKS)}")
    return key, NETWORKS[key]


def canonical_name(name: str) -> str:
    """The key of :data:`NETWORKS` for a name or alias (``"DenseNet-BC-40"`` → ``"densenet40"``)."""
    return _spec(name)[0]


def files(names: Sequence[str] | None = None, image_set: str | None = "jpeg2000") -> list[str]:
    """Manifest file names that ``names`` (default :data:`NAMES`) and the image set need."""
    out = [_spec(n)[1].file for n in (NAMES if names is None else names)]
    if image_set is not None:
        if image_set not in IMAGE_SETS:
            raise ValueError(f"image_set must be one of {', '.join(IMAGE_SETS)} or None, got {image_set!r}")
        out.append(IMAGE_SETS[image_set][0])
    return out


def ensure(names: Sequence[str] | None = None, image_set: str | None = "jpeg2000", *,
           download: bool | None = None, mirror: str | None = None, progress: bool = True) -> dict[str, Path]:
    """Find (or download) every file the networks ``names`` and ``image_set`` need: ``{file: path}``, or one
    :class:`MissingDataError` naming all that are missing (see :func:`casekit.subjects.fetch.ensure`)."""
    return fetch.ensure(files(names, image_set), download_missing=download, mirror=mirror, progress=progress)


def missing(names: Sequence[str] | None = None, image_set: str | None = "jpeg2000", *,
            download: bool | None = False) -> list[str]:
    """``[]`` when :func:`ensure` succeeds, else its one message (for a study's list of missing inputs)."""
    try:
        ensure(names, image_set, download=download, progress=False)
    except (MissingDataError, fetch.ChecksumError) as err:
        return [str(err)]
    return []


# --------------------------------------------------------------------------- networks


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    # weights_only=True reads both the zip-format files and the old (pre-zip) pickles of these checkpoints:
    # they hold only tensors, ints and floats, so no code from the file can run.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = (ckpt["state_dict"] if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict)
             else ckpt)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (name → tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def model(name: str, *, device: str | torch.device = "cpu", root: str | os.PathLike | None = None,
          download: bool | None = None, mirror: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A pretrained reference network in eval mode and its ``info``.

    ``info``: ``name``, ``display``, ``family``, ``layers`` (role → module name), ``mean``/``std`` (the
    network's input normalisation; the model takes normalised 32×32 RGB), ``classes``, ``accuracy_readme``
    (top-1 fraction on the 2,000 shared images), ``accuracy_published``, ``file``, ``path``, ``sha256``,
    ``url``, ``licence``, ``licence_file``, ``parameters``, ``note``.  ``root``: a folder holding the file (no
    other place is tried); ``download``/``mirror`` as in :func:`casekit.subjects.fetch.ensure`.
    """
    key, spec = _spec(name)
    if root is not None:
        path = Path(root).expanduser() / spec.file
        if not path.is_file():
            raise MissingDataError(
                f"casekit: {spec.file} ({spec.display}) is not in {path.parent} (the root= argument)")
    else:
        path = fetch.ensure([spec.file], download_missing=download, mirror=mirror)[spec.file]
    net = spec.build()
    state = _read_checkpoint(path)
    # Old checkpoints have no BatchNorm num_batches_tracked counters; eval mode does not use them.
    result = net.load_state_dict(state, strict=False)
    missing_keys = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit {spec.display}: missing {missing_keys}, unexpected "
            f"{result.unexpected_keys}")
    item = fetch.entry(spec.file) if fetch.manifest_path() else {}
    info = {
        "name": key, "display": spec.display, "family": spec.family, "layers": dict(spec.layers),
        "mean": spec.mean, "std": spec.std, "classes": list(CLASSES),
        "input": "normalised 32x32 RGB: (x - mean) / std",
        "accuracy_readme": spec.accuracy_readme, "accuracy_published": spec.accuracy_published,
        "file": spec.file, "path": str(path), "sha256": item.get("sha256"), "url": item.get("url"),
        "licence": item.get("licence"), "licence_file": item.get("licence_file"),
        "parameters": sum(p.numel() for p in net.parameters()), "note": spec.note,
    }
    return net.to(device).eval(), info


def normalize(images: torch.Tensor, network: str | Mapping[str, Any]) -> torch.Tensor:
    """``(images - mean) / std`` per channel with a network's statistics (a name or its ``info``);
    ``images`` [N, 3, H, W] in [0, 1]."""
    if isinstance(network, str):
        spec = _spec(network)[1]
        mean, std = spec.mean, spec.std
    else:
        mean, std = network["mean"], network["std"]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s


# --------------------------------------------------------------------------- images


class ReferenceImages(tuple):
    """``(images, labels)`` — unpacks as a pair — with ``.info``: ``set`` (``"jpeg2000"`` or ``"test10000"``),
    ``description``, ``n``, ``classes``, ``file``, ``path``."""

    info: dict[str, Any]

    def __new__(cls, images: torch.Tensor, labels: torch.Tensor, info: dict[str, Any]) -> "ReferenceImages":
        obj = super().__new__(cls, (images, labels))
        obj.info = info
        return obj

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling (e.g. into DataLoader workers) keeps .info
        return (self[0], self[1], self.info)

    @property
    def images(self) -> torch.Tensor:
        return self[0]

    @property
    def labels(self) -> torch.Tensor:
        return self[1]


def _from_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as npz:
        raw, labels = npz["images"], npz["labels"]
    if raw.ndim != 4 or raw.shape[1:] != (32, 32, 3) or raw.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 images [N, 32, 32, 3], got {raw.dtype} {raw.shape}")
    return raw, labels


def _unpickle_test_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    import hashlib

    got = hashlib.md5(blob).hexdigest()
    if got != _TEST_BATCH_MD5:  # checked before unpickling: only the official file is ever unpickled
        raise fetch.ChecksumError(
            f"{where}: md5 {got}, expected {_TEST_BATCH_MD5} (the official CIFAR-10 test_batch)")
    batch = pickle.loads(blob, encoding="latin1")
    raw = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return raw, np.asarray(batch["labels"])


def _official_test_set(download: bool | None, mirror: str | None) -> tuple[np.ndarray, np.ndarray, Path]:
    """The 10,000 official test images: an extracted ``cifar10/cifar-10-batches-py/test_batch``, else read
    from the archive (found or downloaded), whose ``test_batch`` is then kept extracted for the next call."""
    extracted = data_root() / "cifar10" / _TEST_BATCH
    if extracted.is_file():
        raw, labels = _unpickle_test_batch(extracted.read_bytes(), str(extracted))
        return raw, labels, extracted
    name = IMAGE_SETS["test10000"][0]
    archive = fetch.ensure([name], download_missing=download, mirror=mirror)[name]
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(_TEST_BATCH)
        if member is None:
            raise ValueError(f"{archive} has no {_TEST_BATCH}")
        blob = member.read()
    raw, labels = _unpickle_test_batch(blob, f"{archive}:{_TEST_BATCH}")
    try:
        with atomic_path(extracted) as tmp:
            tmp.write_bytes(blob)
    except OSError:
        pass  # a read-only data folder: the archive is read again next time
    return raw, labels, archive


def images(source: str = "auto", *, download: bool | None = None,
           mirror: str | None = None) -> ReferenceImages:
    """CIFAR-10 test images ``(images [N, 3, 32, 32] float32 in [0, 1], labels [N] int64)`` with ``.info``.

    ``source``: ``"jpeg2000"`` — the 2,000 shared JPEG-degraded images (the set the README's accuracies are
    measured on; it cannot be downloaded); ``"test10000"`` — the official test set from
    ``cifar-10-python.tar.gz`` (downloaded with its sha256 checked where online); ``"auto"`` — the 2,000
    images where they are on this machine, else the official set.  ``.info["set"]`` says which set was used.
    """
    if source not in ("auto", *IMAGE_SETS):
        raise ValueError(f"source must be 'auto', 'jpeg2000' or 'test10000', got {source!r}")
    errors: list[str] = []
    chosen = None
    if source in ("auto", "jpeg2000"):
        try:
            path = fetch.ensure([IMAGE_SETS["jpeg2000"][0]],
                                download_missing=False)[IMAGE_SETS["jpeg2000"][0]]
            raw, labels = _from_npz(path)
            chosen = "jpeg2000"
        except MissingDataError as err:
            if source == "jpeg2000":
                raise
            errors.append(str(err))
    if chosen is None:
        try:
            raw, labels, path = _official_test_set(download, mirror)
            chosen = "test10000"
        except MissingDataError as err:
            errors.append(str(err))
            raise MissingDataError(
                "casekit: no CIFAR-10 test images were found or downloaded.\n" + "\n".join(errors)) from None
    x = torch.from_numpy(raw).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    info = {"set": chosen, "description": IMAGE_SETS[chosen][1], "n": int(y.numel()),
            "classes": list(CLASSES), "file": IMAGE_SETS[chosen][0], "path": str(path)}
    return ReferenceImages(x, y, info)


def stratified_split(labels: torch.Tensor, n_heldout_per_class: int | None = None, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split image indices into ``(heldout, pool)``, disjoint and each sorted, with ``n_heldout_per_class``
    images of every class held out (default: half of each class, rounded down), drawn at random with ``seed``.

    ``heldout`` is for the confusion matrix behind the contrast sets, ``pool`` for the evaluated images, so no
    evaluated image shaped its own contrast set.  Same labels and seed → same split."""
    labels = torch.as_tensor(labels).flatten()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    generator = torch.Generator().manual_seed(seed)
    heldout = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        k = members.numel() // 2 if n_heldout_per_class is None else n_heldout_per_class
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= members.numel():
            raise ValueError(f"class {c} has {members.numel()} images; cannot hold out {k!r}")
        heldout.append(members[torch.randperm(members.numel(), generator=generator)[:k]])
    held = torch.cat(heldout).sort().values if heldout else torch.zeros(0, dtype=torch.long)
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[held] = False
    return held, mask.nonzero().flatten()
