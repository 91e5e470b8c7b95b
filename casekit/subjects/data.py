"""Datasets of the paper profile: ImageNet validation images, CIFAR-100 and the shared CIFAR-10 reference
images.

Nothing here downloads.  A dataset that is not on the machine stops with one
:class:`MissingDataError` that names what is missing, where casekit looked and
how to provide it.

Where casekit looks by default (:func:`data_root`): ``$CASEKIT_DATA`` if set,
else the checkout's ``data/`` folder (else ``~/.casekit/data`` for an installed casekit), with
``imagenet/val`` and ``cifar100`` below it (``data/README.md`` has the whole layout).
Every loader also takes an explicit ``root``.

ImageNet label order is torchvision's: class ``i`` is the ``i``-th WordNet id
(wnid) in sorted order, the order of ``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import pickle
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import check_integrity
from tqdm.auto import tqdm

from .._io import checkout_root

__all__ = [
    "MissingDataError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "data_root",
    "shared_reference_dir",
    "reference_cifar10_images",
    "imagenet_preprocess",
    "imagenet_wnids",
    "imagenet_categories",
    "ImageNetVal",
    "imagenet_val",
    "split_indices",
    "correct_sample",
    "correct_sample_counts",
    "SampleCounts",
    "subset_loader",
    "CIFAR100Folder",
    "cifar100_transform",
    "cifar100",
    "write_fake_cifar100",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CIFAR-100 statistics used by the paper's fine-tuning code (reference-implementation notes).
CIFAR100_MEAN = (0.509, 0.487, 0.442)
CIFAR100_STD = (0.202, 0.200, 0.204)
# The shared CIFAR-10 ResNets were trained with the ImageNet statistics (shared/reference/cifar10/README.md).
CIFAR10_MEAN = IMAGENET_MEAN
CIFAR10_STD = IMAGENET_STD

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_TGZ_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_WNID = re.compile(r"^n\d{8}$")
_FLAT_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.(jpeg|jpg|png)$", re.IGNORECASE)


class MissingDataError(FileNotFoundError):
    """A dataset (or one of its files) is not on this machine; the message says where casekit looked and how
    to get it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- locations


def data_root() -> Path:
    """casekit's data folder: ``$CASEKIT_DATA`` if set, else the ``data/`` folder of the checkout casekit runs
    from (:func:`casekit._io.checkout_root`), else ``~/.casekit/data`` (an installed casekit).  Not created
    here.

    Layout (``data/README.md``): ``reference/cifar10/`` (the pretrained CIFAR-10 networks and the 2,000 shared
    images), ``cifar10/`` (the official CIFAR-10 archive), ``torchvision/`` (optional copies of the paper's
    weights), ``imagenet/val``, ``cifar100/``."""
    env = os.environ.get("CASEKIT_DATA")
    if env:
        return Path(env).expanduser()
    root = checkout_root()
    return root / "data" if root is not None else Path.home() / ".casekit" / "data"


def _data_root_origin() -> str:
    if os.environ.get("CASEKIT_DATA"):
        return "$CASEKIT_DATA"
    where = "the checkout's data/ folder" if checkout_root() is not None else "~/.casekit/data"
    return f"default: {where}; set $CASEKIT_DATA to change it"


def _shared_candidates() -> list[Path]:
    """Folders named ``shared`` that casekit tries, in order (see :func:`shared_reference_dir`)."""
    env = os.environ.get("CASEKIT_SHARED")
    if env:
        return [Path(env).expanduser()]
    found: list[Path] = []
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            cand = folder / "shared"
            if cand not in found:
                found.append(cand)
    return found


def shared_reference_dir(name: str = "cifar10", root: str | os.PathLike | None = None,
                         need: str | None = None) -> Path:
    """The folder ``shared/reference/<name>``: ``root`` if given, else ``$CASEKIT_SHARED/reference/<name>`` if
    that variable is set, else the first ``shared/reference/<name>`` found walking up from the current
    directory and from the package location.  ``need`` (a file name) must exist inside it."""
    if root is not None:
        candidates = [Path(root).expanduser()]
        origin = "the root= argument"
    else:
        candidates = [c / "reference" / name for c in _shared_candidates()]
        origin = ("$CASEKIT_SHARED" if os.environ.get("CASEKIT_SHARED")
                  else "every parent of the current directory and of the casekit package")
    for cand in candidates:
        if cand.is_dir() and (need is None or (cand / need).is_file()):
            return cand
    what = (f"{need} in the shared reference folder '{name}'" if need
            else f"the shared reference folder '{name}'")
    shown = ", ".join(str(c) for c in candidates[:6]) + (", ..." if len(candidates) > 6 else "")
    raise MissingDataError(
        f"casekit: {what} was not found.\n"
        f"  looked in ({origin}): {shown}\n"
        f"  to provide it: pass root=<folder holding {need or 'the files'}>, or set CASEKIT_SHARED=<folder> "
        f"so that <folder>/reference/{name}/{need or ''} exists (in the casekit workspace it is ../shared "
        "next to the repository)."
    )


def reference_cifar10_images(
    root: str | os.PathLike | None = None, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The 2,000 real CIFAR-10 test images of ``shared/reference/cifar10`` (first 200 of each class), found in
    ``root``, else in ``$CASEKIT_DATA/reference/cifar10`` or a shared folder (``ck.reference.images`` is the
    newer form).

    Returns ``(images [N, 3, 32, 32] float32, labels [N] int64, class_names)``; images are in [0, 1], or
    ``(x - mean) / std`` with the README's mean/std (ImageNet statistics) when ``normalize``.
    """
    if root is None:  # $CASEKIT_DATA/reference/cifar10, then the shared folders (casekit.subjects.fetch)
        from .fetch import ensure

        path = ensure(["cifar10_test_jpeg_2000.npz"], download_missing=False)["cifar10_test_jpeg_2000.npz"]
        folder = path.parent
    else:
        folder = shared_reference_dir("cifar10", root, need="cifar10_test_jpeg_2000.npz")
    with np.load(folder / "cifar10_test_jpeg_2000.npz") as npz:
        raw, labels, classes = npz["images"], npz["labels"], [str(c) for c in npz["classes"]]
    if raw.ndim != 4 or raw.shape[1:] != (32, 32, 3) or raw.dtype != np.uint8:
        raise ValueError(f"{folder / 'cifar10_test_jpeg_2000.npz'}: expected uint8 images [N, 32, 32, 3], "
                         f"got {raw.dtype} {raw.shape}")
    images = torch.from_numpy(raw).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    if normalize:
        mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        images = (images - mean) / std
    return images, torch.from_numpy(labels.astype(np.int64)), classes


# --------------------------------------------------------------------------- ImageNet


def imagenet_preprocess(resize: int = 256, crop: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """The paper's ImageNet preprocessing: Resize(256) (shorter side, bilinear), CenterCrop(224), ToTensor,
    Normalize(ImageNet mean, std)."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def imagenet_wnids() -> list[str]:
    """The 1,000 ILSVRC-2012 wnids in torchvision's class-index order (sorted), read from timm's packaged
    list."""
    try:
        from importlib.resources import files

        text = files("timm.data").joinpath("_info/imagenet_synsets.txt").read_text()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise MissingDataError(
            "casekit: the list of the 1,000 ImageNet wnids was not found.\n"
            "  looked in: timm's packaged file timm/data/_info/imagenet_synsets.txt (timm is not installed "
            "or lacks it)\n  to provide it: pip install timm, or pass wnids=<the 1,000 wnids in sorted "
            "order> (e.g. the sorted folder names of a complete ImageFolder train/ or val/ tree)."
        ) from err
    wnids = text.split()
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise ValueError(f"timm's imagenet_synsets.txt should hold 1000 sorted wnids, found {len(wnids)}")
    return wnids


def imagenet_categories() -> list[str]:
    """Human-readable names of the 1,000 classes in torchvision's index order (from torchvision's weight
    metadata, available offline)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


class ImageNetVal(Dataset):
    """ImageNet validation images as ``(image, label)`` with ``label`` in torchvision's index order.

    ``samples`` is the list of ``(path, label)``; ``wnids`` the 1,000 wnids (index order);
    ``classes`` the category names; ``layout`` is ``"imagefolder"`` or ``"flat"``.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        wnids: Sequence[str],
        transform: Callable[[Image.Image], Any] | None,
        root: Path,
        layout: str,
        label_source: str,
    ) -> None:
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.wnids = list(wnids)
        self.transform = transform
        self.root = root
        self.layout = layout
        self.label_source = label_source
        self._classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = imagenet_categories() if len(self.wnids) == 1000 else list(self.wnids)
        return self._classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        with Image.open(path) as img:
            image = img.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __repr__(self) -> str:
        return (
            f"ImageNetVal({len(self)} images, layout={self.layout!r}, root='{self.root}', "
            f"labels from {self.label_source})"
        )


def _imagenet_missing(root: Path, origin: str, detail: str) -> MissingDataError:
    return MissingDataError(
        f"casekit: ImageNet validation images not found: {detail}\n"
        f"  looked in: {root} ({origin})\n"
        "  to provide it: download the ILSVRC-2012 validation set (image-net.org, needs an account) on a "
        "machine with internet, then either\n"
        "    - ImageFolder layout: <root>/<wnid>/*.JPEG (e.g. after the usual valprep.sh), or\n"
        "    - flat layout: <root>/ILSVRC2012_val_00000001.JPEG ... plus a label file: LOC_val_solution.csv "
        "(Kaggle), val.txt ('filename label' lines, label = wnid or 0-based sorted-wnid index), or the "
        "devkit's ILSVRC2012_validation_ground_truth.txt with devkit=<ILSVRC2012_devkit_t12 folder>;\n"
        "  copy it here and pass root=<folder>, or put it at $CASEKIT_DATA/imagenet/val (now "
        f"{data_root() / 'imagenet' / 'val'})."
    )


def _parse_devkit_meta(devkit: str | os.PathLike) -> dict[int, str]:
    """ILSVRC2012_ID → wnid for the 1,000 leaf synsets from the devkit's ``data/meta.mat``.

    ``devkit`` is the devkit folder (``ILSVRC2012_devkit_t12``), its ``meta.mat`` or the devkit ``.tar.gz``.
    """
    from scipy import io as sio

    path = Path(devkit).expanduser()
    if path.is_dir():
        for cand in (path / "data" / "meta.mat", path / "meta.mat"):
            if cand.is_file():
                path = cand
                break
    if not path.is_file():
        raise MissingDataError(
            f"casekit: the ImageNet devkit's meta.mat was not found.\n  looked in: {devkit} (and its "
            "data/meta.mat)\n  to provide it: download ILSVRC2012_devkit_t12.tar.gz (image-net.org) and pass "
            "devkit=<the extracted folder or the .tar.gz>, or pass id_to_wnid=<wnids in ILSVRC2012_ID order>."
        )
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("data/meta.mat")), None)
            if member is None:
                raise ValueError(f"{path}: no data/meta.mat inside this archive; is it "
                                 "ILSVRC2012_devkit_t12.tar.gz?")
            blob = io.BytesIO(tar.extractfile(member).read())  # type: ignore[union-attr]
        synsets = sio.loadmat(blob, squeeze_me=True)["synsets"]
    else:
        synsets = sio.loadmat(path, squeeze_me=True)["synsets"]
    ids = np.atleast_1d(synsets["ILSVRC2012_ID"]).astype(int)
    wnids = [str(w) for w in np.atleast_1d(synsets["WNID"])]
    leaves = np.atleast_1d(synsets["num_children"]).astype(int) == 0
    return {int(i): w for i, w, leaf in zip(ids, wnids, leaves, strict=True) if leaf}


def _read_label_file(
    path: Path, id_to_wnid: Mapping[int, str] | Sequence[str] | None, devkit: str | os.PathLike | None
) -> dict[int, str | int]:
    """Map image number (the 8 digits of ILSVRC2012_val_XXXXXXXX) → wnid (str) or sorted-wnid index (int)."""
    out: dict[int, str | int] = {}
    text = path.read_text()
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if first.replace(" ", "").lower().startswith("imageid,predictionstring"):  # Kaggle LOC_val_solution.csv
        for row in csv.DictReader(io.StringIO(text)):
            match = re.search(r"(\d{8})", row["ImageId"])
            tokens = (row.get("PredictionString") or "").split()
            if match is None or not tokens:
                raise ValueError(f"{path}: cannot read the row {row!r} (expected ImageId,PredictionString "
                                 "'<wnid> x y x y ...')")
            out[int(match.group(1))] = tokens[0]
        return out
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    # devkit ground truth: one ILSVRC2012_ID per image, in file order
    if lines and all(len(tok) == 1 for tok in lines):
        if id_to_wnid is None:
            if devkit is None:
                # .../ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt
                guess = path.parent.parent
                if (guess / "data" / "meta.mat").is_file():
                    devkit = guess
            if devkit is None:
                raise ValueError(
                    f"{path} holds ILSVRC2012_IDs (devkit ground truth); they are not class indices. Pass "
                    "devkit=<ILSVRC2012_devkit_t12 folder or .tar.gz> (its data/meta.mat maps IDs to wnids) "
                    "or id_to_wnid=<the wnids in ILSVRC2012_ID order>."
                )
            mapping: Mapping[int, str] = _parse_devkit_meta(devkit)
        elif isinstance(id_to_wnid, Mapping):
            mapping = {int(k): str(v) for k, v in id_to_wnid.items()}
        else:
            mapping = {i + 1: str(w) for i, w in enumerate(id_to_wnid)}
        for number, (token,) in enumerate(lines, start=1):
            ilsvrc_id = int(token)
            if ilsvrc_id not in mapping:
                raise ValueError(f"{path}, line {number}: ILSVRC2012_ID {ilsvrc_id} is not in the ID → wnid "
                                 "mapping")
            out[number] = mapping[ilsvrc_id]
        return out
    for number, tokens in enumerate(lines, start=1):  # "filename label" (whitespace or comma separated)
        if len(tokens) == 1 and "," in tokens[0]:
            tokens = tokens[0].split(",")
        if len(tokens) < 2:
            raise ValueError(f"{path}, line {number}: expected 'filename label', got {' '.join(tokens)!r}")
        match = re.search(r"(\d{8})", tokens[0])
        if match is None:
            raise ValueError(f"{path}, line {number}: {tokens[0]!r} is not an ILSVRC2012_val_XXXXXXXX file "
                             "name")
        label = tokens[1]
        out[int(match.group(1))] = label if _WNID.match(label) else int(label)
    return out


def imagenet_val(
    root: str | os.PathLike | None = None,
    transform: Callable[[Image.Image], Any] | None | str = "paper",
    labels: str | os.PathLike | None = None,
    devkit: str | os.PathLike | None = None,
    id_to_wnid: Mapping[int, str] | Sequence[str] | None = None,
    wnids: Sequence[str] | None = None,
) -> ImageNetVal:
    """ImageNet validation images from a local folder, labels in torchvision's (sorted-wnid) index order.

    Layouts (detected automatically):

    * **ImageFolder**: ``root/<wnid>/*.JPEG``; a subset of the 1,000 classes is fine.
    * **flat** (official): ``root/ILSVRC2012_val_00000001.JPEG ...`` with a label file, ``labels=`` or found
      in ``root`` or its parent: ``LOC_val_solution.csv`` (Kaggle: ``ImageId,PredictionString``, first wnid),
      ``val.txt`` (``filename label`` per line; label a wnid or a 0-based index in sorted-wnid order, as in
      Caffe's val.txt), or the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (1-based ILSVRC2012_IDs,
      which are *not* the sorted order: they are mapped via ``devkit=``'s ``data/meta.mat`` or
      ``id_to_wnid``). The dataset holds the images present on disk; each must have a label.

    ``transform``: ``"paper"`` (default) = :func:`imagenet_preprocess`, ``None`` = PIL images, or a callable.
    ``wnids``: the 1,000 wnids in index order (default :func:`imagenet_wnids`).
    """
    if root is None:
        base, origin = data_root() / "imagenet" / "val", _data_root_origin()
    else:
        base, origin = Path(root).expanduser(), "the root= argument"
    if transform == "paper":
        transform = imagenet_preprocess()
    elif transform is not None and not callable(transform):
        raise TypeError(f"transform must be 'paper', None or a callable, got {transform!r}")
    if not base.is_dir():
        raise _imagenet_missing(base, origin, "the folder does not exist")
    entries = sorted(base.iterdir())
    class_dirs = [p for p in entries if p.is_dir() and _WNID.match(p.name)]
    flat_files = [p for p in entries if p.is_file() and _FLAT_NAME.match(p.name)]
    if class_dirs and flat_files:
        raise ValueError(f"{base} mixes wnid folders and flat ILSVRC2012_val_* files; keep one layout per "
                         "folder")

    def full_wnids() -> list[str]:
        if wnids is not None:
            out = [str(w) for w in wnids]
            if len(out) != 1000 or len(set(out)) != 1000:
                raise ValueError(f"wnids must list 1000 distinct wnids, got {len(out)} ({len(set(out))} "
                                 "distinct)")
            return out
        if len(class_dirs) == 1000 and not flat_files:
            # a complete ImageFolder tree: sorted folder names are the order
            return [p.name for p in class_dirs]
        return imagenet_wnids()

    if class_dirs:
        order = full_wnids()
        index = {w: i for i, w in enumerate(order)}
        samples: list[tuple[Path, int]] = []
        for folder in class_dirs:
            if folder.name not in index:
                raise ValueError(f"{folder}: {folder.name!r} is not one of the 1,000 ILSVRC-2012 wnids")
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            samples += [(p, index[folder.name]) for p in files]
        if not samples:
            raise _imagenet_missing(base, origin,
                                    f"{len(class_dirs)} wnid folders but no .JPEG/.jpg/.png images in them")
        return ImageNetVal(samples, order, transform, base, "imagefolder", "folder names")

    if not flat_files:
        raise _imagenet_missing(base, origin,
                                "no <wnid>/ folders and no ILSVRC2012_val_XXXXXXXX.JPEG files in it")
    if labels is not None:
        label_path = Path(labels).expanduser()
        if not label_path.is_file():
            raise MissingDataError(f"casekit: the ImageNet label file {label_path} does not exist (passed as "
                                   "labels=).")
    else:
        names = ("LOC_val_solution.csv", "val.txt", "ILSVRC2012_validation_ground_truth.txt")
        places = [base, base.parent]
        if devkit is not None:
            places.append(Path(devkit).expanduser() / "data")
        tried = [p / n for p in places for n in names]
        label_path = next((p for p in tried if p.is_file()), None)  # type: ignore[assignment]
        if label_path is None:
            raise MissingDataError(
                f"casekit: found {len(flat_files)} flat ImageNet validation images in {base} but no label "
                f"file.\n  looked for: {', '.join(str(p) for p in tried)}\n"
                "  to provide it: pass labels=<LOC_val_solution.csv | val.txt ('filename label') | "
                "ILSVRC2012_validation_ground_truth.txt with devkit=...>, or move the images into <wnid>/ "
                "folders."
            )
    by_number = _read_label_file(label_path, id_to_wnid, devkit)
    order = full_wnids()
    index = {w: i for i, w in enumerate(order)}
    samples = []
    unlabeled: list[str] = []
    for path in flat_files:
        number = int(_FLAT_NAME.match(path.name).group(1))  # type: ignore[union-attr]
        if number not in by_number:
            unlabeled.append(path.name)
            continue
        label = by_number[number]
        if isinstance(label, str):
            if label not in index:
                raise ValueError(f"{label_path}: {label!r} (for {path.name}) is not one of the 1,000 "
                                 "ILSVRC-2012 wnids")
            label = index[label]
        elif not 0 <= label < 1000:
            raise ValueError(f"{label_path}: class index {label} for {path.name} is outside 0..999")
        samples.append((path, label))
    if unlabeled:
        shown = ", ".join(unlabeled[:3]) + (f" and {len(unlabeled) - 3} more" if len(unlabeled) > 3 else "")
        raise ValueError(f"{label_path} has no label for {len(unlabeled)} image(s) in {base}: {shown}")
    return ImageNetVal(samples, order, transform, base, "flat", label_path.name)


# --------------------------------------------------------------------------- samples and splits


def split_indices(n_total: int, n_heldout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n_total)`` at random into ``(heldout, pool)``: disjoint, together all indices, each
    sorted.

    ``heldout`` (``n_heldout`` indices) is for the confusion matrix behind the contrast sets; evaluation
    images are drawn from ``pool`` only, so no evaluation image shaped its own contrast set.  Same seed → same
    split.
    """
    for name, value in (("n_total", n_total), ("n_heldout", n_heldout), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if n_total < 1:
        raise ValueError(f"n_total must be >= 1, got {n_total}")
    if not 0 <= n_heldout <= n_total:
        raise ValueError(f"n_heldout must be in 0..n_total={n_total}, got {n_heldout}")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return perm[:n_heldout].sort().values, perm[n_heldout:].sort().values


def subset_loader(
    dataset: Dataset, indices: Sequence[int] | torch.Tensor | None = None, batch_size: int = 64,
    num_workers: int = 0
) -> DataLoader:
    """A DataLoader over ``dataset[indices]`` in the given order (no shuffling), e.g. for
    ``ck.confusion_matrix``."""
    subset = dataset if indices is None else Subset(dataset, [int(i) for i in indices])
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@dataclass(frozen=True)
class SampleCounts:
    """How a sample of correctly classified images was drawn: ``pool`` images to draw from, ``scanned`` of
    them classified (in the seeded order), ``correct`` of those classified correctly, ``drawn`` kept.
    ``available`` is the pool's number of correctly classified images when the whole pool was scanned, else
    None."""

    pool: int
    scanned: int
    correct: int
    drawn: int

    @property
    def available(self) -> int | None:
        return self.correct if self.scanned == self.pool else None

    def to_dict(self) -> dict[str, int | None]:
        return {"pool": self.pool, "scanned": self.scanned, "correct": self.correct, "drawn": self.drawn,
                "available": self.available}


def correct_sample(
    model: nn.Module,
    dataset: Dataset,
    n: int | None,
    seed: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    pool: Sequence[int] | torch.Tensor | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """The first ``n`` images, in a seeded random order of ``pool`` (default: all of ``dataset``), that
    ``model`` classifies correctly (top-1 = label) — the paper's "N random validation images, correctly
    classified only"; ``n=None`` keeps every correctly classified image of the pool, in that order.

    Returns a LongTensor of dataset indices in the order they were drawn.  Same model, data and seed →
    same indices.  Raises ``ValueError`` if the pool holds fewer than ``n`` correctly classified images.
    :func:`correct_sample_counts` also says how many were scanned and available.
    """
    return correct_sample_counts(model, dataset, n, seed, batch_size, device, pool, num_workers, progress)[0]


def correct_sample_counts(
    model: nn.Module,
    dataset: Dataset,
    n: int | None,
    seed: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    pool: Sequence[int] | torch.Tensor | None = None,
    num_workers: int = 0,
    progress: bool = True,
    scan_all: bool = False,
) -> tuple[torch.Tensor, SampleCounts]:
    """:func:`correct_sample` and its :class:`SampleCounts`.  ``scan_all=True`` classifies the whole pool
    (so that ``counts.available`` is known) even when the first ``n`` correct images come earlier; the sample
    is the same either way."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None (every correctly classified image), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    total = len(dataset)  # type: ignore[arg-type]
    candidates = torch.arange(total) if pool is None else torch.as_tensor(pool, dtype=torch.long).flatten()
    if candidates.numel() and (int(candidates.min()) < 0 or int(candidates.max()) >= total):
        raise ValueError(f"pool holds indices outside 0..{total - 1} (the dataset has {total} items)")
    if candidates.unique().numel() != candidates.numel():
        raise ValueError("pool holds repeated indices")
    if n is not None and n > candidates.numel():
        raise ValueError(f"asked for n={n} correctly classified images but the pool has only "
                         f"{candidates.numel()} images")
    want = candidates.numel() if n is None else n
    order = candidates[torch.randperm(candidates.numel(), generator=torch.Generator().manual_seed(seed))]
    loader = DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    from ..cam.hooks import evaluation_mode

    chosen: list[int] = []
    seen = correct = 0
    bar = tqdm(total=want if n is not None else candidates.numel(), desc="correctly classified", unit="img",
               disable=not progress)
    with evaluation_mode(model), torch.no_grad():
        for batch in loader:
            images, labels = batch[0].to(device), torch.as_tensor(batch[1]).to(device)
            hits = (model(images).argmax(dim=1) == labels).cpu()
            for j in hits.nonzero().flatten().tolist():
                if len(chosen) < want:
                    chosen.append(int(order[seen + j]))
            seen += len(labels)
            correct += int(hits.sum())
            bar.update((min(want, len(chosen)) if n is not None else seen) - bar.n)
            bar.set_postfix(checked=seen, accuracy=f"{correct / seen:.1%}")
            if n is not None and len(chosen) >= n and not scan_all:
                break
    bar.close()
    if n is not None and len(chosen) < n:
        raise ValueError(
            f"only {len(chosen)} of the {candidates.numel()} pool images are classified correctly; asked for "
            f"n={n}. Use a larger pool or a smaller n."
        )
    if not chosen:
        raise ValueError(f"none of the {candidates.numel()} pool images is classified correctly")
    counts = SampleCounts(pool=int(candidates.numel()), scanned=seen, correct=correct, drawn=len(chosen))
    return torch.tensor(chosen, dtype=torch.long), counts


# --------------------------------------------------------------------------- CIFAR-100


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CIFAR100Folder(CIFAR100):
    """torchvision's ``CIFAR100`` reading an existing ``cifar-100-python`` folder; never downloads.

    torchvision's constructor verifies the md5 of *both* the train and the test file and of ``meta`` even with
    ``download=False, train=False``, so a folder that is not the complete official release (the tiny fake
    folders of the tests, say) is refused with "Dataset not found or corrupted".  Here the check covers only
    the split being read plus ``meta``; ``verify_md5=False`` turns it into an existence check, meant only for
    folders you made yourself.  :func:`cifar100` checks the files first and explains what is wrong.
    """

    def __init__(
        self, root: str | os.PathLike, train: bool = False, transform: Callable | None = None,
        verify_md5: bool = True
    ) -> None:
        self.verify_md5 = verify_md5
        super().__init__(root, train=train, transform=transform, download=False)

    def _check_integrity(self) -> bool:
        files = self.train_list if self.train else self.test_list
        return all(
            check_integrity(os.path.join(self.root, self.base_folder, name), md5 if self.verify_md5 else None)
            for name, md5 in files
        )

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        if not check_integrity(path, self.meta["md5"] if self.verify_md5 else None):
            raise RuntimeError(f"CIFAR-100 metadata file {path} not found or corrupted")
        with open(path, "rb") as fh:
            self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    def download(self) -> None:
        raise RuntimeError("casekit's CIFAR100Folder never downloads; see casekit.data.cifar100 for how to "
                           "get the data")


def cifar100_transform(train: bool, image_size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """The fine-tuning transforms of the paper's code: Resize(image_size); for training RandomCrop(image_size,
    padding=4), horizontal and vertical flips (p = 0.5), RandomRotation(45°); then ToTensor and Normalize with
    :data:`CIFAR100_MEAN` / :data:`CIFAR100_STD`."""
    from torchvision import transforms

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    steps: list[Any] = [transforms.Resize(image_size)]
    if train:
        steps += [
            transforms.RandomCrop(image_size, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            transforms.RandomRotation(degrees=45),
        ]
    steps += [transforms.ToTensor(), transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD)]
    return transforms.Compose(steps)


def cifar100(
    root: str | os.PathLike | None = None,
    train: bool = False,
    image_size: int = 224,
    augment: bool | None = None,
    transform: Callable | None | str = "paper",
    verify_md5: bool = True,
) -> Dataset:
    """CIFAR-100 through torchvision from a local folder (never downloads), items ``(image, fine_label)``.

    ``root`` holds ``cifar-100-python/{train,test,meta}`` (the extracted python-version tarball; ``root`` may
    also be that folder itself); default ``data_root()/cifar100``.  ``transform="paper"`` applies
    :func:`cifar100_transform` (augmentation when ``augment``, default ``train``).  ``verify_md5=False`` only
    for folders you made yourself (see :class:`CIFAR100Folder`).
    """
    if root is None:
        base, origin = data_root() / "cifar100", _data_root_origin()
    else:
        base, origin = Path(root).expanduser(), "the root= argument"
    if base.name == "cifar-100-python":
        base = base.parent
    split = "train" if train else "test"
    folder = base / "cifar-100-python"
    missing = [name for name in (split, "meta") if not (folder / name).is_file()]
    if missing:
        tarball = next((p for p in (base / "cifar-100-python.tar.gz",
                                    base.parent / "cifar-100-python.tar.gz") if p.is_file()), None)
        hint = (f"  found the tarball {tarball}: extract it with  tar -xzf {tarball} -C {base}\n" if tarball
                else "")
        raise MissingDataError(
            f"casekit: CIFAR-100 ({split} split) not found: missing "
            f"{', '.join(str(folder / m) for m in missing)}\n  looked in: {base} ({origin})\n{hint}"
            "  to provide it: on a machine with internet run\n"
            f"      python -c \"import torchvision; torchvision.datasets.CIFAR100('{base}', "
            f"download=True)\"\n    or download {CIFAR100_URL} (md5 {CIFAR100_TGZ_MD5}) and extract it into "
            f"{base} "
            "(giving cifar-100-python/{train,test,meta});\n"
            "    then copy that folder here and pass root=<folder>, or set CASEKIT_DATA so that "
            f"$CASEKIT_DATA/cifar100 holds it (now {data_root() / 'cifar100'})."
        )
    cls = CIFAR100Folder
    if verify_md5:
        expected = dict(cls.train_list + cls.test_list)
        expected["meta"] = cls.meta["md5"]
        for name in (split, "meta"):
            got = _md5(folder / name)
            if got != expected[name]:
                raise ValueError(
                    f"{folder / name} has md5 {got}, not the official {expected[name]}: the file is "
                    f"corrupted or not the official CIFAR-100 release. Re-extract {CIFAR100_URL}, or pass "
                    "verify_md5=False if you made this folder yourself."
                )
    if transform == "paper":
        transform = cifar100_transform(train=train if augment is None else augment, image_size=image_size)
    elif transform is not None and not callable(transform):
        raise TypeError(f"transform must be 'paper', None or a callable, got {transform!r}")
    return cls(base, train=train, transform=transform, verify_md5=verify_md5)


def write_fake_cifar100(root: str | os.PathLike, n_train: int = 8, n_test: int = 8, seed: int = 0) -> Path:
    """Write a tiny folder in the CIFAR-100 python layout (random 32×32 images, labels ``i % 100``) under
    ``root/cifar-100-python`` and return ``root``; for tests and offline dry runs with
    ``verify_md5=False``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", n_train), ("test", n_test)):
        fine = [i % 100 for i in range(count)]
        entry = {
            "filenames": [f"fake_{name}_{i}.png" for i in range(count)],
            "batch_label": f"fake {name} batch",
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8),
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    meta = {"fine_label_names": [f"class_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"super_{i:02d}" for i in range(20)]}
    with open(folder / "meta", "wb") as fh:
        pickle.dump(meta, fh)
    return Path(root)
