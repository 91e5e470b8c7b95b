"""Hooks that read or replace one layer's output, and the guarantee that the model is left as found.

Everything here is a context manager whose ``finally`` removes the hook and
restores the model: train/eval flags of every submodule and the autograd mode.
casekit never touches ``requires_grad`` or ``.grad`` of parameters.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

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


@contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Hold ``model``'s 4-d parameters and buffers in ``torch.channels_last`` memory format for the duration
    (the convolutions' fast path on CPU and GPU, most of all under bf16/fp16 autocast); afterwards every
    tensor gets back its own storage object, so values, strides, ``requires_grad`` and ``.grad`` are as found.
    A no-op when ``enabled`` is false or the model has no 4-d weight."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4]
    if not enabled or not tensors:
        yield model
        return
    saved = [(t, t.data) for t in tensors]
    try:
        for t, data in saved:
            t.data = data.contiguous(memory_format=torch.channels_last)
        yield model
    finally:
        for t, data in saved:
            t.data = data


ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]

RESHAPE_HINT = (
    "for a transformer's token layer pass reshape_transform=, a function mapping the layer's output "
    "[B, tokens, C] to a feature map [B, C, h, w] (e.g. drop the class token and reshape the patch tokens "
    "to their h×w grid), as in pytorch-grad-cam"
)


def as_feature_map(
    output: torch.Tensor, name: str, reshape_transform: ReshapeTransform | None
) -> torch.Tensor:
    """The layer's output as the CAM's feature map ``A [B, C, h, w]``: itself or ``reshape_transform(it)``.

    The same transform maps gradients ``∂S/∂output`` (same layout as the output) to ``∂S/∂A``.
    """
    if reshape_transform is None:
        if output.dim() != 4:
            raise ValueError(
                f"layer {name!r} outputs shape {tuple(output.shape)}, but CAM methods need a 4-D feature map "
                f"[B, C, h, w]; choose a convolutional or normalisation layer, or {RESHAPE_HINT}"
            )
        return output
    A = reshape_transform(output)
    if not isinstance(A, torch.Tensor) or A.dim() != 4 or A.shape[0] != output.shape[0]:
        got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(
            f"reshape_transform turned layer {name!r}'s output {tuple(output.shape)} into {got}; "
            f"it must return a feature map [B={output.shape[0]}, C, h, w]"
        )
    return A.contiguous()


def channel_positions(reshape_transform: ReshapeTransform, output: torch.Tensor, name: str) -> torch.Tensor:
    """Where channel c of ``A = reshape_transform(output)`` lives in the layer's own layout → ``[C, m]``.

    Found by transforming a tensor that holds each element's flat index (one image): ``A[c]`` then holds the
    positions of channel c.  If every ``A[c]`` lies on one slice of an axis of the output (the token layout's
    channel axis), the whole slice is returned, so that elements the transform drops (a class token) are
    ablated as well, as pytorch-grad-cam's ``AblationLayerVit`` does; otherwise exactly the selected elements.
    """
    shape = tuple(output.shape[1:])
    n = int(torch.tensor(shape).prod())
    index = torch.arange(n, dtype=torch.float64, device=output.device).reshape(1, *shape)
    mapped = reshape_transform(index)[0]
    mapped = mapped.reshape(mapped.shape[0], -1)  # [C, h·w]
    flat = mapped.round().long()
    if not torch.equal(flat.double(), mapped.double()) or flat.unique().numel() != flat.numel():
        raise ValueError(
            f"reshape_transform must only select and rearrange the elements of layer {name!r}'s output "
            "(reshape, permute, slicing) for Ablation-CAM to ablate a channel in the layer's own layout"
        )
    coords = torch.stack(torch.unravel_index(flat, shape))  # [D, C, hw]
    for axis in range(len(shape)):
        first = coords[axis, :, :1]
        if shape[axis] == flat.shape[0] and bool((coords[axis] == first).all()) \
                and first.flatten().unique().numel() == flat.shape[0]:
            full = torch.arange(n, device=output.device).reshape(shape).movedim(axis, 0)
            return full[first.flatten()].reshape(flat.shape[0], -1)
    return flat


class LayerCapture:
    """Record the output of one layer during a forward pass, and the CAM's feature map ``A`` made from it.

    With ``grad_from_layer=True`` the forward pass runs without autograd up to
    the layer; the hook then switches autograd on and replaces the output by a
    copy of a detached leaf (:attr:`output`) that requires grad.  The backward
    pass of ``autograd.grad(logits, output)`` therefore stops at the layer and
    computes no parameter gradients.  The copy also shields the stored tensors
    from in-place operations that follow the layer (VGG's ``ReLU(inplace=True)``,
    DenseNet's in-place ReLU on ``norm5``).  ``reshape_transform`` maps a
    token layout to ``A [B, C, h, w]`` (see :func:`as_feature_map`).
    """

    def __init__(
        self,
        module: nn.Module,
        name: str,
        grad_from_layer: bool,
        reshape_transform: ReshapeTransform | None = None,
    ) -> None:
        self.module = module
        self.name = name
        self.grad_from_layer = grad_from_layer
        self.reshape_transform = reshape_transform
        self.output: torch.Tensor | None = None  # the layer's output in its own layout
        self.activations: torch.Tensor | None = None  # A [B, C, h, w] (detached unless it is the grad leaf)
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> torch.Tensor:
        self.calls += 1
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"layer {self.name!r} returns {type(output).__name__}, not a tensor [B, C, h, w]; "
                "choose a layer whose output is a 4-D feature map"
            )
        if self.reshape_transform is None:
            as_feature_map(output, self.name, None)  # the shape check, before any other
        if self.calls > 1:
            raise ValueError(
                f"layer {self.name!r} runs {self.calls} times in one forward pass (a shared module); "
                "choose a module that is called once"
            )
        if self.grad_from_layer:
            torch.set_grad_enabled(True)  # restored by evaluation_mode()
            self.output = output.detach().requires_grad_(True)
        else:
            self.output = output.detach()
        if self.reshape_transform is None:
            self.activations = self.output
        else:
            self.activations = as_feature_map(self.output.detach(), self.name, self.reshape_transform)
        return self.output.clone()

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
        # a copy: in-place ops after the layer (ReLU(inplace=True), DenseNet's relu_) must never reach the
        # caller's tensor, which may be a view of the recorded activations
        return self.replacement.clone()

    @contextmanager
    def attached(self) -> Iterator["OutputReplacement"]:
        handle = self.module.register_forward_hook(self)
        try:
            yield self
        finally:
            handle.remove()
