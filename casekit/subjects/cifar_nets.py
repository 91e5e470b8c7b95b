"""Architectures of the pretrained CIFAR-10 reference networks (``ck.reference``), written from their
descriptions.

Each class reproduces the module names of its published checkpoint, so ``load_state_dict`` matches key by key:

* :class:`CifarResNet` — He et al. (2016), depth 6n+2, option-A (parameter-free) shortcuts (akamaster's
  files);
* :class:`DenseNetBC` — pre-activation DenseNet-BC-40-12 (Huang et al. 2017; the HazyResearch file);
* :class:`ShuffleNetV2Cifar` — ShuffleNetV2 ×0.5 with a CIFAR stem (Ma et al. 2018; chenyaofo's file);
* :class:`CaptumLeNet` — the small LeNet-style CNN of Captum's CIFAR-10 tutorial.

Every activation is out-of-place (``F.relu``), so a hooked layer's output is never overwritten after the hook
saw it.  All take 32×32 RGB inputs that are already normalised with the network's mean/std.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CifarResNet", "cifar_resnet", "DenseNetBC", "ShuffleNetV2Cifar", "CaptumLeNet", "channel_shuffle"]


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


# --------------------------------------------------------------------------- ResNet (He et al. 2016, CIFAR)


class _ShortcutA(nn.Module):
    """He et al.'s parameter-free "option A" shortcut: every second pixel, channels zero-padded equally on
    both sides."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ShortcutA((planes - in_planes) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016), depth 6n+2: ``conv1``/``bn1``, ``layer1..3`` (n blocks each,
    widths 16/32/64, stride 2 at the start of layer2 and layer3), global average pool, ``linear``."""

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth!r}")
        _check_int("num_classes", num_classes, 1)
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths, in_planes = (16, 32, 64), 16
        for i, planes in enumerate(widths, start=1):
            blocks = []
            for j in range(n):
                blocks.append(_BasicBlock(in_planes, planes, stride=2 if (i > 1 and j == 0) else 1))
                in_planes = planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(depth: int = 20, num_classes: int = 10) -> CifarResNet:
    """An untrained CIFAR ResNet-``depth`` (6n+2) with the option-A shortcut (see :class:`CifarResNet`)."""
    return CifarResNet(depth, num_classes)


# --------------------------------------------------------------------------- DenseNet-BC (Huang et al. 2017)


class _Bottleneck(nn.Module):
    """BN, ReLU, 1×1 conv (→ 4k), BN, ReLU, 3×3 conv (→ k); output ``cat([x, new])`` (input channels
    first)."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(F.relu(self.bn1(x)))
        new = self.conv2(F.relu(self.bn2(new)))
        return torch.cat([x, new], 1)


class _DenseBlock(nn.Module):
    def __init__(self, in_channels: int, n_layers: int, growth: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[_Bottleneck(in_channels + i * growth, growth) for i in range(n_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _Transition(nn.Module):
    """BN, ReLU, 1×1 conv, 2×2 average pooling (stride 2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNetBC(nn.Module):
    """Pre-activation DenseNet-BC for 32×32 inputs: ``conv1`` (3×3 → 2k), three dense blocks of
    ``(depth-4)/6`` bottleneck layers with transitions halving channels and resolution in between, then the
    final BatchNorm ``bn1`` (torchvision's ``norm5``), ReLU, global average pool, ``fc``.

    Depth 40, growth k = 12: channels 24 → 96 → 48 → 120 → 60 → 132, maps 32 → 16 → 8; CAM's feature map is
    the output of ``block3`` [132, 8, 8].
    """

    def __init__(self, depth: int = 40, growth: int = 12, num_classes: int = 10) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (40, 100, ...), got {depth!r}")
        _check_int("growth", growth, 1)
        _check_int("num_classes", num_classes, 1)
        n = (depth - 4) // 6
        channels = 2 * growth
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.block1 = _DenseBlock(channels, n, growth)
        channels += n * growth
        self.trans1 = _Transition(channels, channels // 2)
        channels //= 2
        self.block2 = _DenseBlock(channels, n, growth)
        channels += n * growth
        self.trans2 = _Transition(channels, channels // 2)
        channels //= 2
        self.block3 = _DenseBlock(channels, n, growth)
        channels += n * growth
        self.bn1 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trans1(self.block1(self.conv1(x)))
        out = self.block3(self.trans2(self.block2(out)))
        out = F.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ------------------------------------------------------------------ ShuffleNetV2 (Ma et al. 2018, CIFAR stem)


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """[N, C, H, W] → view [N, g, C/g, H, W], swap axes 1 and 2, back to [N, C, H, W]."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out)]


class _ShuffleUnit(nn.Module):
    """Stride 2: ``cat(branch1(x), branch2(x))``; stride 1: ``cat(x1, branch2(x2))`` with ``x1, x2`` the two
    channel halves (``branch1`` empty).  A channel shuffle with 2 groups follows."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        h = c_out // 2
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(*_conv_bn(c_in, c_in, 3, 2, groups=c_in), *_conv_bn(c_in, h, 1),
                                         nn.ReLU())
            first = c_in
        else:
            if c_in != c_out:
                raise ValueError(f"a stride-1 unit keeps its channels, got {c_in} → {c_out}")
            self.branch1 = nn.Sequential()
            first = h
        self.branch2 = nn.Sequential(
            *_conv_bn(first, h, 1), nn.ReLU(), *_conv_bn(h, h, 3, stride, groups=h), *_conv_bn(h, h, 1),
            nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        else:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Cifar(nn.Module):
    """ShuffleNetV2 with a CIFAR stem (3×3 conv, stride 1, no max pool): ``conv1`` → ``stage2..4`` (4, 8, 4
    units, the first of each with stride 2) → ``conv5`` (1×1 conv → BN → ReLU) → global average pool → ``fc``.

    ×0.5 widths (24, 48, 96, 192, 1024); maps 32 → 16 → 8 → 4; ``conv5.0`` is the last convolution [1024, 4,
    4] and ``conv5.1`` the final BatchNorm.
    """

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96, 192, 1024),
                 repeats: tuple[int, ...] = (4, 8, 4), num_classes: int = 10) -> None:
        super().__init__()
        if len(widths) != 5 or len(repeats) != 3:
            raise ValueError(f"widths needs 5 entries and repeats 3, got {widths} and {repeats}")
        _check_int("num_classes", num_classes, 1)
        self.conv1 = nn.Sequential(*_conv_bn(3, widths[0], 3), nn.ReLU())
        c_in = widths[0]
        for i, (c_out, n) in enumerate(zip(widths[1:4], repeats), start=2):
            units = [_ShuffleUnit(c_in, c_out, 2)] + [_ShuffleUnit(c_out, c_out, 1) for _ in range(n - 1)]
            setattr(self, f"stage{i}", nn.Sequential(*units))
            c_in = c_out
        self.conv5 = nn.Sequential(*_conv_bn(c_in, widths[4], 1), nn.ReLU())
        self.fc = nn.Linear(widths[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stage4(self.stage3(self.stage2(self.conv1(x))))
        out = self.conv5(out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# --------------------------------------------------------------------------- Captum's CIFAR-10 LeNet


class CaptumLeNet(nn.Module):
    """conv 3→6 (5×5), ReLU, max pool 2; conv 6→16 (5×5), ReLU, max pool 2; fc 400→120→84→10 (ReLU between).

    No global pooling: plain CAM does not apply; gradient-based CAMs use ``conv2`` [16, 10, 10]."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        _check_int("num_classes", num_classes, 1)
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(out)))))
