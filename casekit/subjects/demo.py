"""The demo profile: the ground-truth benchmark and its trained model zoo, offline on a CPU.

>>> import casekit as ck
>>> test = ck.demo.dataset("test")                 # items: (image [3,H,W], label, {"unique", "shared"} masks)
>>> model, layers = ck.demo.model("densenet")      # trained (or loaded from the cache), eval mode
>>> sets = ck.demo.contrast("densenet", k=1)       # ck.contrast_sets of the validation confusion matrix
>>> maps = ck.saliency(model, images, layers["final_conv"], "case", targets, contrast=sets[targets])

The model seed picks the training run (weights init, data order); every model is
trained on the same data (data seed 0) and its confusion matrix comes from the
validation split, which is disjoint from the test split the experiments explain.

Two zoo sizes share the data and the architectures (:func:`zoo_size`): ``"standard"``, what the book's
demo profile runs, and ``"tiny"`` (``CASEKIT_DEMO_ZOO=tiny``: the test suite and ``python -m casekit.book
--tiny``), trained for seconds.  Their checkpoints, confusion matrices and result stores never mix: each is
keyed by its training config or its weights.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..cam.contrast import contrast_sets
from . import synthetic, zoo

FAMILIES: tuple[str, ...] = zoo.FAMILIES
DENSENET_SEEDS: tuple[int, ...] = zoo.DENSENET_SEEDS
CONFIG = synthetic.BenchmarkConfig()
groups: list[list[int]] = synthetic.group_members(CONFIG)  # [[0, 1], [2, 3], ...]: classes of each group
denormalize = synthetic.denormalize
#: The environment variable that picks the zoo size (:data:`casekit.subjects.zoo.ZOO_SIZES`).
ZOO_ENV = "CASEKIT_DEMO_ZOO"


def zoo_size() -> str:
    """The demo zoo size this process uses: ``$CASEKIT_DEMO_ZOO`` (``"standard"`` when unset or empty;
    ``"tiny"`` for tests).  An unknown value is refused, naming the valid ones."""
    return zoo.check_zoo_size(os.environ.get(ZOO_ENV) or "standard")


def dataset(
    split: str = "test", seed: int = 0, size: int | None = None, progress: bool = True
) -> synthetic.SyntheticDataset:
    """One split (``"train"``, ``"val"``, ``"test"``) of the default benchmark; ``size`` images (default: the
    split's size).

    Items are ``(image, label, masks)``: normalised float ``[3, H, W]``, int, and bool ``[H, W]`` masks under
    ``"unique"`` and ``"shared"``; ``.raw(i)`` gives the displayable image in [0, 1].
    """
    return synthetic.SyntheticDataset(split, seed, CONFIG, size=size, progress=progress)


def trained(family: str, seed: int = 0, progress: bool = True) -> zoo.Trained:
    """Everything about one zoo member of the current :func:`zoo_size`: model, layer roles, validation
    confusion, accuracies, training time."""
    family = zoo.check_family(family)
    return zoo.get(family, seed, data=CONFIG, settings=zoo.ZOO_SIZES[zoo_size()][family], progress=progress)


def model(family: str, seed: int = 0, progress: bool = True) -> tuple[nn.Module, dict[str, str]]:
    """``(model, layers)``: the trained model in eval mode and its role → layer-name dict.

    ``layers["final_conv"]`` is the paper's attribution layer for the family; DenseNet also has ``"norm5"``.
    Trained on first use (a progress bar shows it), then loaded from the cache.
    """
    t = trained(family, seed, progress)
    return t.model, dict(t.layers)


def confusion(family: str, seed: int = 0) -> torch.LongTensor:
    """The model's confusion matrix on the validation split, ``LongTensor [C, C]`` (rows = true class)."""
    return trained(family, seed).confusion.clone()


def contrast(family: str, k: int = 1, seed: int = 0) -> torch.LongTensor:
    """The contrast sets ``ck.contrast_sets(confusion(family, seed), k)`` → ``LongTensor [C, k]``."""
    return contrast_sets(confusion(family, seed), k)


def class_names() -> list[str]:
    """Names of the benchmark's classes, e.g. ``"striped disk + yellow plus"``."""
    return synthetic.class_names(CONFIG)


def siblings(label: int) -> list[int]:
    """The classes that share ``label``'s group part (its siblings)."""
    return synthetic.siblings(label, CONFIG)


def train_all(progress: bool = True) -> list[zoo.Trained]:
    """Train (or load) the whole zoo of the current :func:`zoo_size`: the four families with seed 0 and
    DenseNet seeds 1–4."""
    return zoo.train_all(data=CONFIG, progress=progress, size=zoo_size())
