"""Gradient-free CAMs: Score-CAM and Ablation-CAM.

Both need one extra forward pass per channel and image.  Each such pass yields
the logits of *every* class, so one set of masked (or ablated) forwards serves
all targets of an image.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .hooks import OutputReplacement, channels_last
from .registry import MapInputs, method

ABLATION_OFFSET = 1e7


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; a no-op for ``dtype=None`` (float32)."""
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
    memory_format: str = "channels_last",
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, pytorch-grad-cam 1.5 form).

    For channel c: ``s_c = S_u(x ⊙ M_c)`` with ``M_c`` the normalised upsampled
    activation; weights ``w = softmax_c(s)``; map ``Σ_c w_c A_c`` → ``[B, T, h, w]``.
    Channels whose mask is exactly 0 (:func:`scorecam_blank_channels`) all mask the image
    to the same blank input: one forward of a blank image serves all of them (``share_blank=False``
    runs one forward per channel regardless, for comparison).  The masked forwards run with the model and
    the masked images in ``channels_last`` memory format (``memory_format="contiguous"`` keeps the model's
    own): the same arithmetic in a faster layout, the model restored afterwards
    (:func:`.hooks.channels_last`).
    """
    if memory_format not in ("channels_last", "contiguous"):
        raise ValueError(f"memory_format must be 'channels_last' or 'contiguous', got {memory_format!r}")
    last = memory_format == "channels_last" and images.dim() == 4
    with channels_last(model, last):
        return _scorecam(model, images, activations, targets, batch_size, amp_dtype, progress, share_blank,
                         last)


def _scorecam(model: nn.Module, images: torch.Tensor, activations: torch.Tensor, targets: torch.Tensor,
              batch_size: int, amp_dtype: torch.dtype | None, progress: bool, share_blank: bool,
              last: bool) -> torch.Tensor:
    """:func:`scorecam`'s body, with the model already in its memory format."""
    fmt = torch.channels_last if last else torch.contiguous_format
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
        with autocast(images.device, amp_dtype):
            logits = model(torch.zeros_like(images[:1]))
        b, c = blank.nonzero().unbind(1)
        scores[b, c] = logits.float()[0][targets[b]]
        bar.update(1)
    for start, stop in _chunks(rows.numel(), batch_size):
        r = rows[start:stop]
        b, c = r // C, r % C
        masks = scorecam_masks(activations[b, c], (H, W))
        with autocast(images.device, amp_dtype):
            logits = model((images[b] * masks[:, None].to(images.dtype)).contiguous(memory_format=fmt))
        scores[b, c] = logits.float().gather(1, targets[b])
        bar.update(stop - start)
    bar.close()
    weights = torch.softmax(scores, dim=1).transpose(1, 2)  # [B, T, C]
    return torch.einsum("btc,bchw->bthw", weights, activations.float())


class _SeparableHead:
    """Ablation-CAM without a forward per channel, where the network after the layer is *separable*.

    The head is the outermost submodule whose output is the model's output (``fc``, ``classifier``), and
    ``P [F]`` its flattened input.  The tail is separable when every entry ``P_i`` depends on one channel
    ``c(i)`` of the layer only (per-channel BatchNorm, ReLU, residual additions of tensors that do not depend
    on the layer, concatenation, pooling: ResNet's last conv, DenseNet's last dense layer and ``norm5``, the
    final conv of VGG or ShuffleNet).  Then ablating channel c changes exactly the entries ``P_i`` with
    ``c(i) = c``, and to the values they take when *every* channel is ablated:

        ``S^{(−c)} = head(P⁰ with P_i ← P^{all}_i for c(i) = c)``

    — two batched forwards per image batch (original and all-ablated) and one head call per channel, instead
    of C forwards of the tail.  :meth:`detect` finds ``c(i)`` structurally on one image: channels are
    perturbed (far below and far above their range) in groups given by the bits of their index and by the
    complement bits, so an entry that depends on two channels changes in both forwards of some bit and is
    refused; the rule is then checked against real single-channel ablations.  Anything else (a LayerNorm
    across channels as in ConvNeXt, a head that is not the model's last module) falls back to the tail runner.
    """

    def __init__(self, model: nn.Module, module: nn.Module, amp_dtype: torch.dtype | None) -> None:
        self.model, self.module, self.amp_dtype = model, module, amp_dtype
        self.replace = OutputReplacement(module)
        self.head: nn.Module | None = None
        self.owner: torch.Tensor | None = None  # [C, F] bool: P entries of each channel
        self._head_shape: tuple[int, ...] = ()
        self.why_not = ""

    def _head_inputs(self, x: torch.Tensor, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward ``x`` with the layer's output replaced by ``acts`` → (head input ``P [n, F]``, logits)."""
        seen: dict[str, torch.Tensor] = {}

        def grab(_m: nn.Module, inputs: tuple) -> None:
            seen["P"] = inputs[0]
            self._head_shape = tuple(inputs[0].shape[1:])

        assert self.head is not None
        handle = self.head.register_forward_pre_hook(grab)
        self.replace.replacement = acts
        try:
            with self.replace.attached(), autocast(x.device, self.amp_dtype):
                out = self.model(x)
        finally:
            handle.remove()
        return seen["P"].float().flatten(1), out.float()

    def _find_head(self, image: torch.Tensor) -> nn.Module | None:
        """The outermost submodule whose output tensor is the model's output (None when there is none)."""
        outputs: list[tuple[nn.Module, torch.Tensor]] = []
        handles = [m.register_forward_hook(lambda mod, i, o: outputs.append((mod, o)))
                   for name, m in self.model.named_modules() if name]
        try:
            with autocast(image.device, self.amp_dtype):
                out = self.model(image[None])
        finally:
            for h in handles:
                h.remove()
        found = [m for m, o in outputs if o is out and m is not self.module]
        return found[-1] if found else None  # hooks of enclosing modules fire last

    def detect(self, image: torch.Tensor, acts: torch.Tensor, value: torch.Tensor) -> bool:
        """Decide, on one image (``acts [1, C, h, w]`` its layer output), whether the tail is separable."""
        self.head = self._find_head(image)
        if self.head is None or acts.dim() != 4:
            self.why_not = "no head module returns the model's output"
            return False
        C = acts.shape[1]
        bits = max(1, (C - 1).bit_length())
        channel = torch.arange(C, device=acts.device)
        groups = [torch.ones(C, dtype=torch.bool, device=acts.device)]
        for j in range(bits):
            on = ((channel >> j) & 1).bool()
            groups += [on, ~on]
        span = float(acts.abs().max()) + 1.0
        rows = [acts[0]]
        for shift in (-10 * span, 10 * span):  # far below and far above the channels' range
            for g in groups:
                r = acts[0].clone()
                r[g] = (acts[0].amin() if shift < 0 else acts[0].amax()) + shift
                rows.append(r)
        P, logits = self._head_inputs(image[None].expand(len(rows), *image.shape), torch.stack(rows))
        # exact: an entry that does not depend on the perturbed channels is computed from the same numbers by
        # the same per-row operations; any change (even one far below P's scale, as behind ConvNeXt's layer
        # scale) is a dependence.  A spurious change only costs the fallback.
        changed = P[1:] != P[:1]  # [2·(1 + 2·bits), F]
        n = 1 + 2 * bits
        changed = changed[:n] | changed[n:]
        owned = changed[0]  # entries that depend on the layer at all
        code = torch.zeros_like(P[0], dtype=torch.long)
        for j in range(bits):
            on, off = changed[1 + 2 * j], changed[2 + 2 * j]
            if bool((on & off).any()) or not bool(torch.equal(on | off, owned)):
                self.why_not = "an entry of the head's input depends on several channels"
                return False
            code |= on.long() << j
        if bool((code[owned] >= C).any()):
            self.why_not = "the head's input does not map onto the layer's channels"
            return False
        self.owner = (code[None] == channel[:, None]) & owned[None]  # [C, F]
        # the rule against real ablations of three channels (the largest, the smallest, one in the middle)
        mean = acts[0].flatten(1).mean(1)
        middle = torch.tensor(C // 2, device=acts.device)
        probe = torch.unique(torch.stack([mean.argmax(), mean.argmin(), middle]))
        real = acts[0][None].repeat(len(probe), 1, 1, 1)
        real[torch.arange(len(probe)), probe] = value
        P_all, _ = self._head_inputs(image[None], value.expand_as(acts).to(acts.dtype).clone())
        _, want = self._head_inputs(image[None].expand(len(probe), *image.shape), real)
        got = self._ablated(P[:1], P_all, probe)
        base = logits[:1]
        head_ok = torch.allclose(self._call_head(P[:1]), base, rtol=1e-4, atol=1e-4 * float(base.abs().max()))
        # the ablations' effects, not the logits, must agree (an effect can be far below the logits' scale)
        effect = want - base
        tol = 1e-3 * float(effect.abs().max()) + 1e-7 * float(base.abs().max())
        if not head_ok or not torch.allclose(got - base, effect, rtol=1e-3, atol=tol):
            self.why_not = "the separable rule does not reproduce real ablations"
            return False
        return True

    def _call_head(self, P: torch.Tensor) -> torch.Tensor:
        assert self.head is not None
        with autocast(P.device, self.amp_dtype):
            return self.head(P.reshape(P.shape[0], *self._head_shape)).float()

    def _ablated(self, P0: torch.Tensor, P_all: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """Logits with each channel of ``channels`` ablated alone, for one image (``P0, P_all [1, F]``)."""
        assert self.owner is not None
        own = self.owner[channels]  # [n, F]
        return self._call_head(torch.where(own, P_all, P0))

    def __call__(self, images: torch.Tensor, native: torch.Tensor, values: torch.Tensor,
                 targets: torch.Tensor, batch_size: int, bar: Any) -> torch.Tensor:
        """``[B, C, T]``: the target logits with each channel ablated (``values [B]`` the ablation values)."""
        B, C = native.shape[:2]
        T = targets.shape[1]
        P0, _ = self._head_inputs(images, native)
        P_all, _ = self._head_inputs(images, values.view(B, 1, 1, 1).expand_as(native).to(native.dtype))
        out = torch.empty(B, C, T, device=images.device, dtype=torch.float32)
        for b in range(B):
            for start, stop in _chunks(C, max(batch_size, 1)):
                chunk = torch.arange(start, stop, device=P0.device)
                logits = self._ablated(P0[b:b + 1], P_all[b:b + 1], chunk)
                out[b, start:stop] = logits[:, targets[b]]
                bar.update(stop - start)
        return out


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
        with autocast(image.device, self.amp_dtype):
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
    tail: str = "auto",
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

    ``tail``: how the ablated logits are computed — ``"auto"`` (default) uses the closed form of a separable
    tail (:class:`_SeparableHead`: two forwards per batch) where the check allows it, else the tail runner's
    ``"broadcast"`` (one batched tail forward per chunk of channels) or ``"repeat"`` (one full forward per
    channel) mode; naming one of the three forces it (for tests and benchmarks).  ``on_mode`` receives the
    mode used.
    """
    if tail not in ("auto", "separable", "broadcast", "repeat"):
        raise ValueError(f"tail must be 'auto', 'separable', 'broadcast' or 'repeat', got {tail!r}")
    B, C, h, w = activations.shape
    native = activations if layer_output is None else layer_output
    original = logits.float().gather(1, targets)  # [B, T]
    lows = native.flatten(1).amin(dim=1)
    values = torch.where(lows == 0, torch.zeros_like(lows), lows - ABLATION_OFFSET)  # [B]
    bar = tqdm(total=B * C, desc="Ablation-CAM ablated forwards", unit="fwd", disable=not progress,
               leave=False)
    mode = None
    if tail in ("auto", "separable") and channel_positions is None:
        head = _SeparableHead(model, module, amp_dtype)
        if head.detect(images[0], native[:1], values[0]):
            ablated, mode = head(images, native, values, targets, batch_size, bar), "separable"
        elif tail == "separable":
            raise ValueError(f"the tail after this layer is not separable: {head.why_not}")
    if mode is None:
        ablated, mode = _ablate_with_tail(model, module, images, native, logits, targets, values, batch_size,
                                          amp_dtype, bar, channel_positions, tail)
    bar.close()
    if on_mode is not None:
        on_mode(mode)
    denom = torch.where(original == 0, torch.ones_like(original), original)[:, :, None]
    weights = (original[:, :, None] - ablated.transpose(1, 2)) / denom  # [B, T, C]
    return torch.einsum("btc,bchw->bthw", weights, activations.float())


def _ablate_with_tail(model: nn.Module, module: nn.Module, images: torch.Tensor, native: torch.Tensor,
                      logits: torch.Tensor, targets: torch.Tensor, values: torch.Tensor, batch_size: int,
                      amp_dtype: torch.dtype | None, bar: Any, channel_positions: torch.Tensor | None,
                      tail: str) -> tuple[torch.Tensor, str]:
    """``[B, C, T]`` ablated target logits from one tail forward per channel (:class:`_TailRunner`)."""
    B, T = native.shape[0], targets.shape[1]
    C = native.shape[1] if channel_positions is None else channel_positions.shape[0]
    ablated = torch.empty(B, C, T, device=images.device, dtype=torch.float32)
    runner = _TailRunner(model, module, amp_dtype)
    if tail in ("broadcast", "repeat"):
        runner.mode = tail
    for b in range(B):
        a = native[b]
        value = values[b]
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
    return ablated, str(runner.mode)


# ------------------------------------------------------------------------------------------ the methods


@method("scorecam", "ScoreCAM", role="baseline", paper=True, needs_gradients=False, order=30,
        colour="#029e73", oracle="ScoreCAM",
        formula="Σ_c softmax_c(S_u(x ⊙ M_c)) A_c, M_c the normalised upsampled A_c", built_in=True)
def scorecam_method(x: MapInputs) -> torch.Tensor:
    return scorecam(x.model, x.images, x.activations, x.targets, x.batch_size, x.amp_dtype, x.progress)


@method("ablationcam", "AblationCAM", role="baseline", paper=True, needs_gradients=False, order=40,
        colour="#cc78bc", oracle="AblationCAM", formula="Σ_c (S_u − S_u^(−c)) / S_u · A_c", built_in=True)
def ablationcam_method(x: MapInputs) -> torch.Tensor:
    return ablationcam(
        x.model, x.module, x.images, x.activations, x.logits, x.targets,
        x.batch_size, x.amp_dtype, x.progress,
        lambda mode: x.notes.__setitem__("ablation_mode", mode),
        layer_output=x.layer_output, channel_positions=x.channel_positions,
    )
