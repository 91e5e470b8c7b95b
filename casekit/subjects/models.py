"""The paper's four ImageNet models with their attribution layers, and the shared CIFAR-10 reference ResNets.

Each model comes with a dict *role → dotted layer name*, the same convention as
the demo zoo (``ck.demo.model``): ``"final_conv"`` is the layer the paper
explains; DenseNet-201 also has ``"norm5"`` (the paper's ablation layer).

Pretrained torchvision weights are read from torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) or from
``$CASEKIT_DATA/torchvision/``; where neither has them and the machine is online, torchvision's own download
fetches them (it checks the sha256 prefix in the file name).  Offline (or with ``$CASEKIT_OFFLINE=1``),
:class:`MissingWeightsError` says which file, where casekit looked and how to provide it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from torch import nn

from .cifar_nets import CifarResNet, _ShortcutA, cifar_resnet  # noqa: F401  (moved there; names kept)
from .data import MissingDataError, data_root, imagenet_preprocess

__all__ = [
    "MissingWeightsError",
    "PaperModel",
    "PAPER_MODELS",
    "paper_model_spec",
    "load_paper_model",
    "torchvision_weights_file",
    "cifar_resnet",
    "CifarResNet",
    "REFERENCE_CIFAR10_CHECKPOINTS",
    "load_reference_cifar10",
]


class MissingWeightsError(FileNotFoundError):
    """A weight file is not on this machine; the message says which, where casekit looked and how to provide
    it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PaperModel:
    """One of the paper's models: torchvision builder and layers, and the timm equivalent."""

    display: str
    builder: str  # torchvision.models.<builder>
    layers: dict[str, str]
    timm_name: str  # timm model name with the tag whose weights equal torchvision's IMAGENET1K_V1
    timm_layers: dict[str, str] = field(default_factory=dict)


PAPER_MODELS: dict[str, PaperModel] = {
    "resnet50": PaperModel(
        "ResNet-50", "resnet50", {"final_conv": "layer4.2.conv3"}, "resnet50.tv_in1k",
        {"final_conv": "layer4.2.conv3"}
    ),
    "vgg19_bn": PaperModel(
        "VGG-19", "vgg19_bn", {"final_conv": "features.49"}, "vgg19_bn.tv_in1k", {"final_conv": "features.49"}
    ),
    "densenet201": PaperModel(
        "DenseNet-201",
        "densenet201",
        {"final_conv": "features.denseblock4.denselayer32.conv2", "norm5": "features.norm5"},
        "densenet201.tv_in1k",
        # timm's norm5 is a BatchNormAct2d: its output is already ReLU'd (torchvision applies the ReLU after
        # it).
        {"final_conv": "features.denseblock4.denselayer32.conv2", "norm5": "features.norm5"},
    ),
    "convnext_large": PaperModel(
        "ConvNeXt-Large",
        "convnext_large",
        {"final_conv": "features.7.2.block.0"},
        "convnext_large.fb_in1k",
        {"final_conv": "stages.3.blocks.2.conv_dw"},
    ),
}

_ALIASES = {
    re.sub(r"[^a-z0-9]", "", key): name
    for name, spec in PAPER_MODELS.items()
    for key in (name, spec.display, spec.timm_name.split(".")[0], name.replace("_bn", ""))
}


def paper_model_spec(name: str) -> tuple[str, PaperModel]:
    """``(key, spec)`` for a paper model given as ``"resnet50"``, ``"ResNet-50"``, ``"vgg19"``,
    ``"ConvNeXt-Large"``, ..."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()))
    if key is None:
        raise ValueError(f"unknown paper model {name!r}; choose one of {', '.join(PAPER_MODELS)}")
    return key, PAPER_MODELS[key]


def torchvision_weights_file(builder: str, weights: str = "IMAGENET1K_V1") -> tuple[Any, Path]:
    """``(weights_enum, path)``: torchvision's weights entry and the file where ``torch.hub`` caches it,
    ``torch.hub.get_dir()/checkpoints/<file name of Weights.url>`` (``$TORCH_HOME/hub/checkpoints``)."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(builder)
    try:
        entry = enum[weights]
    except KeyError:
        names = ", ".join(e.name for e in enum)
        raise ValueError(
            f"unknown weights {weights!r} for torchvision {builder}; choose one of {names}, None (untrained) "
            "or a path to a local checkpoint file"
        ) from None
    filename = os.path.basename(urlparse(entry.url).path)
    return entry, Path(torch.hub.get_dir()) / "checkpoints" / filename


def missing_torchvision_weights(
    display: str, builder: str, name: str, url: str, path: Path, reason: str | None = None
) -> MissingWeightsError:
    torch_home = os.environ.get("TORCH_HOME")
    origin = (f"$TORCH_HOME={torch_home}" if torch_home
              else "torch.hub's default; set $TORCH_HOME to change it")
    why = reason or "not attempted (casekit only checks files here)"
    return MissingWeightsError(
        f"casekit: the pretrained weights of {display} (torchvision {builder}, {name}) are not on this "
        f"machine.\n  missing file: {path.name}\n"
        f"  looked in: {path.parent} ({origin}), {data_root() / 'torchvision'} ($CASEKIT_DATA/torchvision)\n"
        f"  casekit did not download it: {why}\n"
        f"  to provide it: on a machine with internet download\n      {url}\n"
        f"    and copy it to {path.parent}/ (or to <dir>/hub/checkpoints/ and set TORCH_HOME=<dir>),\n"
        f"    or pass weights='/path/to/{path.name}'; weights=None builds the untrained architecture."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``) or ``.safetensors``
    file; unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and strips a DataParallel ``module.``
    prefix."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (name → tensor), nor one under 'state_dict' or "
                         "'model'")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


# torchvision's own DenseNet checkpoints use old key names ("denselayer1.norm.1"); its loader renames them.
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                               r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _load_local(model: nn.Module, path: Path, builder: str) -> None:
    state = _read_state_dict(path)
    if builder.startswith("densenet"):
        renamed = {}
        for key, value in state.items():
            match = _DENSENET_OLD_KEY.match(key)
            renamed[match.group(1) + match.group(2) if match else key] = value
        state = renamed
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit torchvision's {builder}: {err}") from None


def _looks_like_path(weights: str) -> bool:
    return os.sep in weights or "/" in weights or weights.endswith((".pth", ".pt", ".bin", ".safetensors",
                                                                    ".th"))


def load_paper_model(
    name: str,
    weights: str | os.PathLike | None = "IMAGENET1K_V1",
    device: str | torch.device = "cpu",
    source: str = "torchvision",
    num_classes: int = 1000,
) -> tuple[nn.Module, dict[str, str], Callable]:
    """One of the paper's four models → ``(model in eval mode, layers, preprocess)``.

    ``name``: ``"resnet50"``, ``"vgg19_bn"``, ``"densenet201"``, ``"convnext_large"`` (or their display
    names). ``weights``: a torchvision weights name or entry (default ``"IMAGENET1K_V1"``, the paper's),
    ``None`` for the untrained architecture, or a path to a local checkpoint (state dict,
    ``.pth``/``.safetensors``). ``source="timm"`` builds timm's equivalent (``PAPER_MODELS[...].timm_name``;
    its ``tv_in1k``/``fb_in1k`` weights are the same ImageNet-1k weights), looking for pretrained weights only
    in the local Hugging Face cache. ``device="meta"`` (with ``weights=None``) builds parameter-free shells
    for cheap structural checks. ``preprocess`` is the paper's: Resize 256, CenterCrop 224, ToTensor, ImageNet
    mean/std (torchvision itself recommends Resize 232 for ConvNeXt-Large; the paper used 256 for all four).
    """
    _, spec = paper_model_spec(name)
    if source not in ("torchvision", "timm"):
        raise ValueError(f"source must be 'torchvision' or 'timm', got {source!r}")
    from torchvision.models import WeightsEnum, get_model_weights

    if isinstance(weights, WeightsEnum):  # e.g. ResNet50_Weights.IMAGENET1K_V1
        if source != "torchvision" or type(weights) is not get_model_weights(spec.builder):
            raise ValueError(f"{weights} are not weights of torchvision's {spec.builder}")
        weights = weights.name
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a weights name, a path or None, got {type(weights).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    device = torch.device(device)
    if device.type == "meta" and weights is not None:
        raise ValueError("device='meta' builds weightless shells; use it only with weights=None")
    local = None
    if weights is not None and (isinstance(weights, os.PathLike) or _looks_like_path(str(weights))):
        local = Path(weights).expanduser()
        if not local.is_file():
            raise MissingWeightsError(
                f"casekit: the checkpoint file {local} for {spec.display} does not exist.\n"
                f"  looked in: {local.parent}\n"
                "  to provide it: check the path, or pass a torchvision weights name such as 'IMAGENET1K_V1' "
                "(read from $TORCH_HOME/hub/checkpoints) or weights=None for the untrained architecture."
            )
    build_on = torch.device("meta") if device.type == "meta" else torch.device("cpu")
    if source == "timm":
        model = _build_timm(spec, weights, local, build_on, num_classes)
        layers = dict(spec.timm_layers)
    else:
        import torchvision

        builder = getattr(torchvision.models, spec.builder)
        if weights is None or local is not None:
            with build_on:
                model = builder(weights=None, num_classes=num_classes)
            if local is not None:
                _load_local(model, local, spec.builder)
        else:
            entry, path = torchvision_weights_file(spec.builder, str(weights))
            if num_classes != len(entry.meta["categories"]):
                raise ValueError(f"{entry} has {len(entry.meta['categories'])} classes, not "
                                 f"num_classes={num_classes}")
            model = _torchvision_pretrained(spec, builder, entry, path)
        layers = dict(spec.layers)
    model = model.to(device).eval()
    return model, layers, imagenet_preprocess()


def _torchvision_pretrained(spec: PaperModel, builder: Callable, entry: Any, path: Path) -> nn.Module:
    """torchvision's ``builder(weights=entry)``: from torch.hub's cache, else from
    ``$CASEKIT_DATA/torchvision``, else downloaded by torchvision (sha256-prefix checked) when the machine is
    online; else a clear error."""
    if path.is_file():
        return builder(weights=entry)  # torch.hub finds the file in its cache and does not download
    copy = data_root() / "torchvision" / path.name
    if copy.is_file():
        from .fetch import file_hash

        prefix = re.search(r"-([0-9a-f]{8,})\.", path.name)
        if prefix and not file_hash(copy).startswith(prefix.group(1)):
            raise ValueError(f"{copy}: its sha256 does not start with {prefix.group(1)} as torchvision's "
                             "name requires")
        model = builder(weights=None, num_classes=len(entry.meta["categories"]))
        _load_local(model, copy, spec.builder)
        return model
    from .fetch import offline, reachable

    reason = "downloads are off ($CASEKIT_OFFLINE is set)" if offline() else reachable(entry.url)
    if reason is None:
        try:
            return builder(weights=entry)  # torchvision downloads to torch.hub's cache and checks the hash
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a hash mismatch is a RuntimeError
            reason = f"torchvision's download failed: {err}"
    raise missing_torchvision_weights(spec.display, spec.builder, entry.name, entry.url, path, reason)


def _build_timm(spec: PaperModel, weights: Any, local: Path | None, build_on: torch.device,
                num_classes: int) -> nn.Module:
    import timm

    if weights is None:
        with build_on:
            return timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes)
    if local is None:
        if str(weights) not in ("IMAGENET1K_V1", "pretrained"):
            raise ValueError("with source='timm', weights must be None, 'IMAGENET1K_V1'/'pretrained' or a "
                             f"path, got {weights!r}")
        local = _timm_cached_file(spec)
    model = timm.create_model(
        spec.timm_name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(local)}
    )
    return model


def _timm_cached_file(spec: PaperModel) -> Path:
    """The file of ``spec.timm_name``'s weights in the local Hugging Face cache, without touching the
    network."""
    from huggingface_hub import constants, try_to_load_from_cache

    repo = f"timm/{spec.timm_name}"
    for filename in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, filename)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    raise MissingWeightsError(
        f"casekit: the timm weights of {spec.display} ({spec.timm_name}) are not on this machine.\n"
        f"  missing file: model.safetensors of the Hugging Face repository {repo}\n"
        f"  looked in: {constants.HF_HUB_CACHE} (the Hugging Face cache; $HF_HOME / $HF_HUB_CACHE change "
        "it); casekit never downloads.\n  to provide it: on a machine with internet run  huggingface-cli "
        f"download {repo}  and copy the cache folder here (or set HF_HOME), or pass "
        "weights='/path/to/model.safetensors'; weights=None builds the untrained model."
    )


# --------------------------------------------------------------------------- CIFAR-10 reference ResNets
# The architectures live in .cifar_nets and the loaders in .reference (``ck.reference``); these names remain.

REFERENCE_CIFAR10_CHECKPOINTS = {20: "resnet20-12fca82f.th", 56: "resnet56-4bfd9763.th"}


def load_reference_cifar10(depth: int = 20,
                           root: str | Path | None = None) -> tuple[nn.Module, dict[str, str]]:
    """The pretrained CIFAR-10 ResNet-20 or -56 in eval mode, and its layers
    ``{"final_conv": "layer3.<n-1>.conv2", "layer3": "layer3"}`` — ``ck.reference.model("resnet20")`` in the
    older form.  ``root``: a folder holding the file; by default casekit looks where :mod:`.fetch`
    describes.  Inputs: 32×32 RGB normalised with ImageNet mean/std (see
    ``casekit.subjects.data.reference_cifar10_images``).
    """
    if depth not in REFERENCE_CIFAR10_CHECKPOINTS:
        raise ValueError("reference CIFAR-10 checkpoints exist for depth "
                         f"{sorted(REFERENCE_CIFAR10_CHECKPOINTS)}, got {depth!r}")
    from . import reference

    try:
        model, info = reference.model(f"resnet{depth}", root=root)
    except MissingDataError as err:
        raise MissingWeightsError(str(err)) from None
    return model, {**info["layers"], "layer3": "layer3"}
