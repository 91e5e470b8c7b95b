"""Hooks that read or replace one layer's output, and the guarantee that the model is left as found.

Everything here is a context manager whose ``finally`` removes the hook and
restores the model: train/eval flags of every submodule and the autograd mode.
casekit never touches ``requires_grad`` or ``.grad`` of parameters.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the duration; restore every submodule's own ``training`` flag after."""
    flags = [(m, m.training) for m in model.modules()]
    grad_mode = torch.is_grad_enabled()
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
        torch.set_grad_enabled(grad_mode)


class LayerCapture:
    """Record the output ``A`` of one layer during a forward pass.

    With ``grad_from_layer=True`` the forward pass runs without autograd up to
    the layer; the hook then switches autograd on and replaces the output by a
    copy of a detached leaf ``A`` that requires grad.  The backward pass of
    ``autograd.grad(logits, A)`` therefore stops at the layer and computes no
    parameter gradients.  The copy also shields ``A`` from in-place operations
    that follow the layer (VGG's ``ReLU(inplace=True)``, DenseNet's in-place
    ReLU on ``norm5``).
    """

    def __init__(self, module: nn.Module, name: str, grad_from_layer: bool) -> None:
        self.module = module
        self.name = name
        self.grad_from_layer = grad_from_layer
        self.activations: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> torch.Tensor:
        self.calls += 1
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"layer {self.name!r} returns {type(output).__name__}, not a tensor [B, C, h, w]; "
                "choose a layer whose output is a 4-D feature map"
            )
        if output.dim() != 4:
            raise ValueError(
                f"layer {self.name!r} outputs shape {tuple(output.shape)}, but CAM methods need a "
                "4-D feature map [B, C, h, w]; choose a convolutional or normalisation layer"
            )
        if self.calls > 1:
            raise ValueError(
                f"layer {self.name!r} runs {self.calls} times in one forward pass (a shared module); "
                "choose a module that is called once"
            )
        if self.grad_from_layer:
            torch.set_grad_enabled(True)  # restored by evaluation_mode()
            self.activations = output.detach().requires_grad_(True)
        else:
            self.activations = output.detach()
        return self.activations.clone()

    @contextmanager
    def attached(self) -> Iterator["LayerCapture"]:
        handle = self.module.register_forward_hook(self)
        try:
            yield self
        finally:
            handle.remove()


class OutputReplacement:
    """Replace a layer's output by a given tensor (used for Ablation-CAM's ablated activations)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.replacement: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        assert self.replacement is not None
        return self.replacement

    @contextmanager
    def attached(self) -> Iterator["OutputReplacement"]:
        handle = self.module.register_forward_hook(self)
        try:
            yield self
        finally:
            handle.remove()
