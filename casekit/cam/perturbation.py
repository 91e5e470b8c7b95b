"""Gradient-free CAMs: Score-CAM and Ablation-CAM.

Both need one extra forward pass per channel and image.  Each such pass yields
the logits of *every* class, so one set of masked (or ablated) forwards serves
all targets of an image.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .hooks import OutputReplacement

ABLATION_OFFSET = 1e7


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def scorecam_masks(activations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Score-CAM masks for activations ``[n, h, w]``: bilinear upsampling to ``size``
    (``align_corners=True``, as ``nn.UpsamplingBilinear2d`` in pytorch-grad-cam),
    then per-channel ``(m − min) / (max − min + 1e-8)`` → ``[n, H, W]``."""
    up = F.interpolate(activations[:, None].float(), size=size, mode="bilinear", align_corners=True)[:, 0]
    flat = up.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    return (up - lo) / (hi - lo + 1e-8)


def scorecam_blank_channels(
    activations: torch.Tensor, size: tuple[int, int], chunk: int = 256
) -> torch.Tensor:
    """``[B, C]`` bool: channels whose Score-CAM mask is exactly 0 everywhere (``activations [B, C, h, w]``).

    A channel that is constant at the layer's resolution and stays exactly constant when upsampled
    (an all-zero channel after a ReLU, typically) gets the mask ``0 / (0 + 1e-8) = 0``: its masked
    input is the blank image, the same for every such channel of every image.  (A constant channel
    that upsampling rounds unevenly keeps its own, pytorch-grad-cam-identical mask.)
    """
    flat = activations.flatten(2)
    blank = flat.amax(dim=2) == flat.amin(dim=2)  # candidates: constant at h × w
    idx = blank.nonzero()
    for start, stop in _chunks(idx.shape[0], chunk):
        b, c = idx[start:stop, 0], idx[start:stop, 1]
        blank[b, c] = scorecam_masks(activations[b, c], size).flatten(1).amax(dim=1) == 0
    return blank


@torch.no_grad()
def scorecam(
    model: nn.Module,
    images: torch.Tensor,
    activations: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 64,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    share_blank: bool = True,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, pytorch-grad-cam 1.5 form).

    For channel c: ``s_c = S_u(x ⊙ M_c)`` with ``M_c`` the normalised upsampled
    activation; weights ``w = softmax_c(s)``; map ``Σ_c w_c A_c`` → ``[B, T, h, w]``.
    Channels whose mask is exactly 0 (:func:`scorecam_blank_channels`) all mask the image
    to the same blank input: one forward of a blank image serves all of them (``share_blank=False``
    runs one forward per channel regardless, for comparison).
    """
    B, C, h, w = activations.shape
    H, W = images.shape[-2:]
    scores = torch.empty(B, C, targets.shape[1], device=images.device, dtype=torch.float32)
    if share_blank:
        blank = scorecam_blank_channels(activations, (H, W))
    else:
        blank = torch.zeros(B, C, dtype=torch.bool, device=activations.device)
    rows = (~blank).flatten().nonzero().flatten()  # (image, channel) pairs that need their own forward
    n_blank = int(blank.sum())
    bar = tqdm(total=rows.numel() + (n_blank > 0), desc="Score-CAM masked forwards", unit="fwd",
               disable=not progress, leave=False)
    if n_blank:
        with _autocast(images.device, amp_dtype):
            logits = model(torch.zeros_like(images[:1]))
        b, c = blank.nonzero().unbind(1)
        scores[b, c] = logits.float()[0][targets[b]]
        bar.update(1)
    for start, stop in _chunks(rows.numel(), batch_size):
        r = rows[start:stop]
        b, c = r // C, r % C
        masks = scorecam_masks(activations[b, c], (H, W))
        with _autocast(images.device, amp_dtype):
            logits = model(images[b] * masks[:, None].to(images.dtype))
        scores[b, c] = logits.float().gather(1, targets[b])
        bar.update(stop - start)
    bar.close()
    weights = torch.softmax(scores, dim=1).transpose(1, 2)  # [B, T, C]
    return torch.einsum("btc,bchw->bthw", weights, activations.float())


class _TailRunner:
    """Run the network from one layer onward on replaced activations.

    Mode "broadcast" feeds the single image (batch 1) and replaces the layer's
    output by ``n`` rows; everything after the layer broadcasts over the batch
    (residual additions, eval-mode norms).  It is used only after a check that it
    reproduces the original logits; otherwise (e.g. DenseNet's concatenations)
    mode "repeat" feeds the image ``n`` times.
    """

    def __init__(self, model: nn.Module, module: nn.Module, amp_dtype: torch.dtype | None) -> None:
        self.model = model
        self.replace = OutputReplacement(module)
        self.amp_dtype = amp_dtype
        self.mode: str | None = None

    def _run(self, image: torch.Tensor, acts: torch.Tensor, mode: str) -> torch.Tensor:
        self.replace.replacement = acts
        x = image[None] if mode == "broadcast" else image[None].expand(acts.shape[0], *image.shape)
        with _autocast(image.device, self.amp_dtype):
            out = self.model(x)
        if not isinstance(out, torch.Tensor) or out.shape[0] != acts.shape[0]:
            raise RuntimeError("tail output does not follow the replaced batch")
        return out.float()

    def __call__(self, image: torch.Tensor, acts: torch.Tensor,
                 reference_logits: torch.Tensor) -> torch.Tensor:
        if self.mode is None:
            probe = torch.cat([self._original, acts])
            if self.amp_dtype is None:
                reference, rtol = reference_logits.float(), 1e-3
            else:  # compare at the same reduced precision: a plain forward under the same autocast
                reference, rtol = self._run(image, self._original, "repeat")[0], 5e-2
            try:
                out = self._run(image, probe, "broadcast")
                scale = float(reference.abs().max())
                ok = torch.allclose(out[0], reference, rtol=rtol, atol=rtol * 0.1 * scale + 1e-5)
            except RuntimeError:
                ok = False
            self.mode = "broadcast" if ok else "repeat"
            if ok:
                return out[1:]
        return self._run(image, acts, self.mode)

    @contextlib.contextmanager
    def attached(self, original: torch.Tensor) -> Iterator["_TailRunner"]:
        self._original = original
        with self.replace.attached():
            yield self


@torch.no_grad()
def ablationcam(
    model: nn.Module,
    module: nn.Module,
    images: torch.Tensor,
    activations: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 64,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    on_mode: Callable[[str], None] | None = None,
    *,
    layer_output: torch.Tensor | None = None,
    channel_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020, pytorch-grad-cam 1.5 form).

    Channel c of image b is set to 0 if ``min A_b = 0``, else to ``min A_b − 1e7``;
    weight ``w_c = (S_u − S_u^{(−c)}) / S_u``; map ``Σ_c w_c A_c`` → ``[B, T, h, w]``.
    (pytorch-grad-cam lowers the ablation value by a further 1e7 for every row
    already ablated in the same batch; casekit uses the value as defined.)

    With a ``reshape_transform`` the ablation happens in the layer's own layout:
    ``layer_output [B, ...]`` is ablated at ``channel_positions[c]`` (flat positions in
    one image's output, see :func:`casekit.cam.hooks.channel_positions`), and ``min A_b``
    is the minimum of that output.
    """
    B, C, h, w = activations.shape
    T = targets.shape[1]
    native = activations if layer_output is None else layer_output
    original = logits.float().gather(1, targets)  # [B, T]
    ablated = torch.empty(B, C, T, device=images.device, dtype=torch.float32)
    runner = _TailRunner(model, module, amp_dtype)
    bar = tqdm(total=B * C, desc="Ablation-CAM ablated forwards", unit="fwd", disable=not progress,
               leave=False)
    for b in range(B):
        a = native[b]
        low = a.min()
        value = torch.where(low == 0, torch.zeros_like(low), low - ABLATION_OFFSET)
        with runner.attached(a[None]):
            for start, stop in _chunks(C, batch_size):
                n = stop - start
                acts = a[None].repeat(n, *([1] * a.dim()))  # a fresh copy: never a view of the activations
                rows = torch.arange(n, device=a.device)
                if channel_positions is None:
                    acts[rows, torch.arange(start, stop, device=a.device)] = value
                else:
                    acts.view(n, -1)[rows[:, None], channel_positions[start:stop]] = value
                out = runner(images[b], acts, logits[b])
                ablated[b, start:stop] = out[:, targets[b]]
                bar.update(n)
    bar.close()
    if on_mode is not None and runner.mode is not None:
        on_mode(runner.mode)
    denom = torch.where(original == 0, torch.ones_like(original), original)[:, :, None]
    weights = (original[:, :, None] - ablated.transpose(1, 2)) / denom  # [B, T, C]
    return torch.einsum("btc,bchw->bthw", weights, activations.float())
