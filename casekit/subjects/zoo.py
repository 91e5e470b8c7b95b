"""The demo model zoo: one small member of each of the paper's four families, trained on the benchmark.

The models are torchvision's own classes (``ResNet``, ``VGG``, ``DenseNet``,
``ConvNeXt``), so module names follow the paper's layer paths
(``layer4.*.conv2``, ``features.N``, ``features.denseblock*.denselayer*.conv2``,
``features.norm5``, ``features.K.J.block.0``).  For 64-pixel images the stems
and widths are made small (documented per family in :func:`build`); the
attribution layers see 8×8 maps, like the paper's 7×7 on ImageNet.  One
deviation beyond size: the ConvNeXt pools globally by max, not mean (see
:func:`build`).

Checkpoints live in ``cache_dir("zoo")``, named by a hash of the full training
config (data, architecture, seed, optimiser, epochs, format version).  They are
written atomically and loaded with ``torch.load(..., weights_only=True)``; a
file lock makes concurrent processes wait for one training run.  After every
epoch the training state is saved (atomically) beside the checkpoint, so a
killed run resumes from its last finished epoch with the same result.
"""

from __future__ import annotations

import fcntl
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG, ConvNeXt, DenseNet, ResNet
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.resnet import BasicBlock
from torchvision.models.vgg import make_layers
from tqdm.auto import tqdm

from .._io import atomic_path, cache_dir, config_hash
from ..cam.contrast import confusion_matrix
from ..cam.hooks import evaluation_mode
from . import synthetic
from .seeds import TRAINING_SEEDS

FAMILIES: tuple[str, ...] = ("resnet", "vgg", "densenet", "convnext")
DENSENET_SEEDS: tuple[int, ...] = TRAINING_SEEDS  # the seed-robustness study
ZOO_VERSION = 2  # bump when a change to this file changes the weights a config trains to

# Small members of each family for 64×64 images (see build()).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet": {"widths": [16, 32, 64, 64], "blocks": [1, 1, 1, 1]},
    "vgg": {"cfg": [16, "M", 32, "M", 64, "M", 64, 64, "M"], "hidden": 128, "dropout": 0.2},
    "densenet": {"growth_rate": 12, "block_config": [3, 3], "num_init_features": 24, "bn_size": 4},
    "convnext": {"channels": [32, 64], "layers": [1, 2], "layer_scale": 0.1, "stem_stride": 4, "pool": "max"},
}


@dataclass(frozen=True)
class TrainSettings:
    """AdamW with a one-cycle schedule (linear warm-up, cosine decay), cross-entropy loss."""

    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup: float = 0.2
    train_size: int | None = None  # None: the data config's training split size

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 < self.warmup < 1):
            raise ValueError(f"need lr > 0, weight_decay >= 0 and 0 < warmup < 1, got {self}")


# Epochs per family: enough for >= 90 % test accuracy on the default benchmark (ConvNeXt learns slowest
# per epoch but its epochs are the cheapest), within the zoo's 10-minute CPU budget.
TRAINING: dict[str, TrainSettings] = {
    "resnet": TrainSettings(epochs=10),
    "vgg": TrainSettings(epochs=10),
    "densenet": TrainSettings(epochs=8),
    "convnext": TrainSettings(epochs=14),
}


#: The tiny zoo (``--tiny`` books and the test suite, :func:`casekit.subjects.demo.zoo_size`): the same data,
#: architectures and seeds, trained on the first 1,000 training images for 2 epochs — a few seconds per
#: member on 2 cores, far from the standard zoo's accuracy (enough for every code path, not for a finding).
TINY_TRAINING: dict[str, TrainSettings] = {f: TrainSettings(epochs=2, train_size=1000) for f in TRAINING}
#: Zoo sizes by name: the training settings of each family.
ZOO_SIZES: dict[str, dict[str, TrainSettings]] = {"standard": TRAINING, "tiny": TINY_TRAINING}


def check_zoo_size(size: str) -> str:
    """``size`` if it names a zoo size of :data:`ZOO_SIZES`, else ``ValueError`` naming them."""
    if size not in ZOO_SIZES:
        raise ValueError(f"unknown demo zoo size {size!r}; choose one of {', '.join(map(repr, ZOO_SIZES))}")
    return size


def check_family(family: str) -> str:
    """``family`` if it is one of :data:`FAMILIES`, else ``ValueError`` naming the valid ones."""
    if not isinstance(family, str) or family.lower() not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of "
                         f"{', '.join(repr(f) for f in FAMILIES)}")
    return family.lower()


# ---------------------------------------------------------------------------------------------------------
# Architectures


def _init_like_torchvision(module: nn.Module) -> None:
    """torchvision's ResNet initialisation for freshly added conv / norm layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def build(family: str, num_classes: int, arch: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model of ``family`` (torchvision classes, adapted to 64-pixel images).

    - ResNet: ``ResNet(BasicBlock, ...)`` with a 3×3 stride-2 stem conv, no max-pool, stage widths
      ``widths`` and strides 1, 2, 2, 1 (64 → 32 → 32 → 16 → 8 → 8).
    - VGG: ``VGG(make_layers(cfg, batch_norm=True))`` with a global-average-pool and a small classifier
      ``Linear → ReLU → Dropout → Linear`` (same module layout as VGG's, narrower).
    - DenseNet: ``DenseNet(growth_rate, block_config, num_init_features, bn_size)`` with a 3×3 stride-2
      ``conv0`` (the max-pool ``pool0`` kept): 64 → 16 at the first block, 8 at the last.
    - ConvNeXt: ``ConvNeXt([CNBlockConfig...])`` with its 4×4 stride-4 patchify stem (16 → 8) and, by default,
      global *max* pooling in the ``avgpool`` slot (``pool="avg"`` restores the original).  Measured on this
      benchmark: with average pooling the small ConvNeXt learns the group parts but not the small unique
      parts within the CPU budget (52–66 % validation accuracy after 6–12 epochs, siblings at chance); with
      max pooling it reaches about 94 %.  Its CAM layer ``block.0`` and everything before the head are
      unchanged.
    """
    family = check_family(family)
    a = {**ARCHITECTURES[family], **(arch or {})}
    if family == "resnet":
        w, blocks = list(a["widths"]), list(a["blocks"])
        with torch.device("meta"):  # every module below is replaced: never allocate the ImageNet-sized ones
            m = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
        m.conv1 = nn.Conv2d(3, w[0], kernel_size=3, stride=2, padding=1, bias=False)
        m.bn1 = nn.BatchNorm2d(w[0])
        m.maxpool = nn.Identity()
        m.inplanes = w[0]
        m.layer1 = m._make_layer(BasicBlock, w[0], blocks[0])
        m.layer2 = m._make_layer(BasicBlock, w[1], blocks[1], stride=2)
        m.layer3 = m._make_layer(BasicBlock, w[2], blocks[2], stride=2)
        m.layer4 = m._make_layer(BasicBlock, w[3], blocks[3], stride=1)
        m.fc = nn.Linear(w[3], num_classes)
        _init_like_torchvision(m)
        return m
    if family == "vgg":
        cfg = list(a["cfg"])
        with torch.device("meta"):  # VGG's 25088 → 4096 → 4096 head is replaced: never allocate it
            m = VGG(nn.Identity(), num_classes=num_classes, init_weights=False)
        m.features = make_layers(cfg, batch_norm=True)
        channels = [c for c in cfg if c != "M"][-1]
        m.avgpool = nn.AdaptiveAvgPool2d(1)
        m.classifier = nn.Sequential(
            nn.Linear(channels, a["hidden"]), nn.ReLU(True), nn.Dropout(a["dropout"]),
            nn.Linear(a["hidden"], num_classes)
        )
        _init_like_torchvision(m.features)  # VGG's own initialisation: kaiming (fan_out) convs, unit BN,
        for conv in m.features:  # zero conv biases, N(0, 0.01) linear layers
            if isinstance(conv, nn.Conv2d):
                nn.init.constant_(conv.bias, 0)
        for lin in m.classifier:
            if isinstance(lin, nn.Linear):
                nn.init.normal_(lin.weight, 0, 0.01)
                nn.init.constant_(lin.bias, 0)
        return m
    if family == "densenet":
        m = DenseNet(
            growth_rate=a["growth_rate"],
            block_config=tuple(a["block_config"]),
            num_init_features=a["num_init_features"],
            bn_size=a["bn_size"],
            num_classes=num_classes,
        )
        m.features.conv0 = nn.Conv2d(3, a["num_init_features"], kernel_size=3, stride=2, padding=1,
                                     bias=False)
        nn.init.kaiming_normal_(m.features.conv0.weight)
        return m
    channels, layers = list(a["channels"]), list(a["layers"])
    setting = [
        CNBlockConfig(channels[i], channels[i + 1] if i + 1 < len(channels) else None, layers[i])
        for i in range(len(channels))
    ]
    m = ConvNeXt(setting, layer_scale=a["layer_scale"], num_classes=num_classes)
    if a["stem_stride"] != 4:  # patchify with smaller patches: kernel = stride
        k = a["stem_stride"]
        m.features[0][0] = nn.Conv2d(3, channels[0], kernel_size=k, stride=k)
        nn.init.trunc_normal_(m.features[0][0].weight, std=0.02)
        nn.init.zeros_(m.features[0][0].bias)
    if a["pool"] == "max":
        m.avgpool = nn.AdaptiveMaxPool2d(1)
    elif a["pool"] != "avg":
        raise ValueError(f"convnext pool must be 'max' or 'avg', got {a['pool']!r}")
    return m


def layer_roles(family: str, arch: dict[str, Any] | None = None) -> dict[str, str]:
    """Role → dotted layer name; ``"final_conv"`` as in the paper's reference code, and ``"norm5"`` for
    DenseNet.

    ResNet: the last block's last conv (``layer4.J.conv2``); VGG: the last conv (``features.N``);
    DenseNet: the last dense layer's ``conv2``; ConvNeXt: the last block's depthwise conv (``block.0``).
    """
    family = check_family(family)
    a = {**ARCHITECTURES[family], **(arch or {})}
    if family == "resnet":
        return {"final_conv": f"layer4.{a['blocks'][3] - 1}.conv2"}
    if family == "vgg":
        index, last_conv = 0, 0
        for v in a["cfg"]:  # make_layers: "M" → one MaxPool2d; n → Conv2d, BatchNorm2d, ReLU
            if v == "M":
                index += 1
            else:
                last_conv, index = index, index + 3
        return {"final_conv": f"features.{last_conv}"}
    if family == "densenet":
        nb = len(a["block_config"])
        return {
            "final_conv": f"features.denseblock{nb}.denselayer{a['block_config'][-1]}.conv2",
            "norm5": "features.norm5",
        }
    stage = 2 * len(a["channels"]) - 1  # features: stem, stage, downsample, stage, ...
    return {"final_conv": f"features.{stage}.{a['layers'][-1] - 1}.block.0"}


# ---------------------------------------------------------------------------------------------------------
# Training with a crash-safe cache


@dataclass
class Trained:
    """A zoo member: the model (eval mode), its layer roles and what was measured after training."""

    family: str
    seed: int
    model: nn.Module
    layers: dict[str, str]
    confusion: torch.Tensor  # validation split, LongTensor [C, C], rows = true class
    val_accuracy: float
    test_accuracy: float
    train_seconds: float
    path: Path
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    trained_now: bool = False  # False: loaded from the cache


# Keys of the checkpoints this process trained (not loaded); lets tests prove a cache hit.
TRAINED_IN_THIS_PROCESS: list[str] = []


def training_config(
    family: str,
    seed: int = 0,
    data: synthetic.BenchmarkConfig | None = None,
    data_seed: int = 0,
    arch: dict[str, Any] | None = None,
    settings: TrainSettings | None = None,
) -> dict[str, Any]:
    """The full config a checkpoint is keyed by (``settings`` default: the family's standard
    :data:`TRAINING`)."""
    family = check_family(family)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    data = data if data is not None else synthetic.BenchmarkConfig()
    return {
        "zoo_version": ZOO_VERSION,
        "family": family,
        "seed": seed,
        "data": data.to_dict(),
        "data_seed": int(data_seed),
        "arch": {**ARCHITECTURES[family], **(arch or {})},
        "train": asdict(settings if settings is not None else TRAINING[family]),
    }


def member_checkpoint(config: dict[str, Any]) -> Path:
    """Where the zoo member of ``config`` is cached:
    ``cache_dir("zoo") / "{family}-seed{seed}-{hash}.pt"``."""
    return cache_dir("zoo") / f"{config['family']}-seed{config['seed']}-{config_hash(config)}.pt"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``path.lock`` (released when the process dies, even by SIGKILL)."""
    with open(path.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
    return torch.randperm(n, generator=g)


def _batches(images: torch.Tensor, labels: torch.Tensor,
             batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(0, len(labels), batch_size):
        yield synthetic.normalize(images[i : i + batch_size] / 255.0), labels[i : i + batch_size]


@torch.no_grad()
def accuracy(model: nn.Module, dataset: synthetic.SyntheticDataset, batch_size: int = 250) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on a split."""
    device = next(model.parameters()).device
    correct = 0
    with evaluation_mode(model):
        for x, y in _batches(dataset.images_uint8, dataset.labels, batch_size):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return correct / len(dataset)


def _fresh(config: dict[str, Any], num_classes: int, s: TrainSettings, total_steps: int,
           device: torch.device):
    """Seeded model, AdamW and one-cycle schedule at step 0."""
    torch.manual_seed(config["seed"])
    model = build(config["family"], num_classes, config["arch"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=total_steps, pct_start=s.warmup)
    return model, opt, sched


def _train(config: dict[str, Any], path: Path, progress: bool, device: torch.device) -> dict[str, Any]:
    """Train one model; resume from ``*.partial.pt`` if an earlier run was killed.  Returns the checkpoint
    dict.

    The training state (weights, optimiser, schedule, RNG) is saved atomically after every epoch, and the
    data order of epoch e depends only on (seed, e), so a resumed run ends with the same weights (on a CPU).
    """
    data = synthetic.BenchmarkConfig(**{k: v for k, v in config["data"].items() if k != "format_version"})
    s = TrainSettings(**config["train"])
    seed = config["seed"]
    train = synthetic.SyntheticDataset("train", config["data_seed"], data, size=s.train_size,
                                       progress=progress)
    n = len(train)
    steps_per_epoch = math.ceil(n / s.batch_size)
    model, opt, sched = _fresh(config, data.num_classes, s, s.epochs * steps_per_epoch, device)
    start_epoch, history, seconds = 0, [], 0.0
    partial = path.with_name(path.stem + ".partial.pt")
    if partial.exists():
        try:
            state = torch.load(partial, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start_epoch, history, seconds = state["epoch"], state["history"], state["seconds"]
        except Exception as exc:  # a partial state we cannot use: start from scratch
            warnings.warn(f"ignoring unreadable training state {partial} ({exc}); training from scratch")
            model, opt, sched = _fresh(config, data.num_classes, s, s.epochs * steps_per_epoch, device)

    bar = tqdm(
        total=s.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        desc=f"training {config['family']} seed {seed}",
        unit="batch",
        disable=not progress,
        leave=False,
    )
    for epoch in range(start_epoch, s.epochs):
        t0 = time.perf_counter()
        model.train()
        order = _epoch_order(n, seed, epoch)
        seen = correct = 0
        loss_sum = 0.0
        for i in range(0, n, s.batch_size):
            idx = order[i : i + s.batch_size]
            x = synthetic.normalize(train.images_uint8[idx] / 255.0).to(device)
            y = train.labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            refresh=False)
        seconds += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen})
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": epoch + 1,
            "history": history,
            "seconds": seconds,
        }
        with atomic_path(partial) as tmp:
            torch.save(state, tmp)
    bar.close()

    model.eval()
    val = synthetic.SyntheticDataset("val", config["data_seed"], data, progress=progress)
    test = synthetic.SyntheticDataset("test", config["data_seed"], data, progress=progress)
    confusion = confusion_matrix(
        model, ((x.to(device), y) for x, y in _batches(val.images_uint8, val.labels, 250)),
        num_classes=data.num_classes, progress=False,
    )
    return {
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "confusion": confusion,
        "val_accuracy": float(confusion.diagonal().sum() / confusion.sum()),
        "test_accuracy": accuracy(model, test),
        "train_seconds": seconds,
        "history": history,
    }


def _from_checkpoint(ckpt: dict[str, Any], path: Path, trained_now: bool, device: torch.device) -> Trained:
    config = ckpt["config"]
    num_classes = int(ckpt["confusion"].shape[0])
    model = build(config["family"], num_classes, config["arch"])
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return Trained(
        family=config["family"],
        seed=config["seed"],
        model=model,
        layers=layer_roles(config["family"], config["arch"]),
        confusion=ckpt["confusion"].long(),
        val_accuracy=float(ckpt["val_accuracy"]),
        test_accuracy=float(ckpt["test_accuracy"]),
        train_seconds=float(ckpt["train_seconds"]),
        path=path,
        config=config,
        history=list(ckpt["history"]),
        trained_now=trained_now,
    )


def get(
    family: str,
    seed: int = 0,
    data: synthetic.BenchmarkConfig | None = None,
    data_seed: int = 0,
    arch: dict[str, Any] | None = None,
    settings: TrainSettings | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Trained:
    """The trained zoo member for this config: from the cache, or trained now (then cached)."""
    config = training_config(family, seed, data, data_seed, arch, settings)
    path = member_checkpoint(config)
    device = torch.device(device)
    # the lock: one training run per config at a time; fork_rng: the caller's random state stays untouched
    with _locked(path), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if path.exists():
            try:
                return _from_checkpoint(torch.load(path, weights_only=True), path, False, device)
            except Exception as exc:  # atomic writes make this unlikely; never use a damaged file
                warnings.warn(f"cached checkpoint {path} is unreadable ({exc}); training it again")
        ckpt = _train(config, path, progress, device)
        with atomic_path(path) as tmp:
            torch.save(ckpt, tmp)
        path.with_name(path.stem + ".partial.pt").unlink(missing_ok=True)
        TRAINED_IN_THIS_PROCESS.append(path.name)
        return _from_checkpoint(ckpt, path, True, device)


#: The zoo's members ``(family, seed)``: every family with seed 0, then DenseNet seeds 1–4.
MEMBERS: tuple[tuple[str, int], ...] = (*((f, 0) for f in FAMILIES),
                                        *(("densenet", s) for s in DENSENET_SEEDS if s != 0))


def train_all(
    data: synthetic.BenchmarkConfig | None = None, progress: bool = True, device: str | torch.device = "cpu",
    size: str = "standard",
) -> list[Trained]:
    """Train (or load) the whole demo zoo of ``size`` (:data:`ZOO_SIZES`): every member of :data:`MEMBERS`."""
    settings = ZOO_SIZES[check_zoo_size(size)]
    return [get(f, s, data=data, settings=settings[f], progress=progress, device=device) for f, s in MEMBERS]
