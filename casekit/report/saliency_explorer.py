"""The saliency explorer: one image, two target classes (by rank or by name), one method — the two maps,
their top-k % pixels and the top-k agreement ``|top_k(a) ∩ top_k(b)| / ⌊k·H·W⌋``, the paper's top-1 vs top-2
comparison, live.

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`casekit.study` (logit contrast),
:mod:`.figures`, :mod:`.naming`, :mod:`.explorer_base`.
"""

from __future__ import annotations

import html
import math
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..cam.checks import resolve_layer
from ..cam.engine import DISPLAY_NAMES, METHODS, canonical_method, explain
from ..cam.hooks import evaluation_mode
from ..cam.registry import REGISTRY
from ..evaluation import metrics
from ..study.batch import logit_contrast_sets
from .explorer_base import SnapshotBox, table_html
from .figures.base import figure_png


class SaliencyExplorer(SnapshotBox):
    """Pick an image, a method, two targets (rank or class), K and k; see both maps, their top-k % pixels
    and the top-k agreement.

    ``dataset``: a tensor ``[N, 3, H, W]`` of normalised images, or a dataset whose items are an image or
    ``(image, label, ...)``; a third item that is a dict with a bool ``"unique"`` mask (the demo
    benchmark) adds the unique-evidence score of a map whose target is the image's true class.
    ``layer``: a dotted layer name, or a mapping ``role → name`` (e.g. the ``layers`` returned by
    ``ck.demo.model``), which adds a layer menu.  ``contrast_sets``: ``LongTensor [C, K_max]`` from
    ``ck.contrast_sets(confusion, K_max)``; CASE then uses its first K columns (``contrast_sets`` are
    ordered by decreasing confusion).  The other contrast strategy, always offered, takes the K classes
    with the image's highest logits other than the target.  Display: ``dataset.raw(i)`` if the dataset has
    it, else ``denormalize(image)``, else a per-image min–max stretch.

    Attributes after every update: ``targets`` (the two class indices), ``contrast`` (``[2, K]`` or None),
    ``maps`` (``[2, H, W]``), ``masks`` (bool ``[2, H, W]``, the top-k sets), ``agreement`` (float, NaN for
    a constant map), ``error`` (message of the last failed update, else None).
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Any,
        layer: str | Mapping[str, str],
        contrast_sets: torch.Tensor | None = None,
        class_names: Sequence[str] | None = None,
        *,
        methods: Sequence[str] = METHODS,
        max_rank: int = 5,
        k: float = 0.05,
        K: int = 3,
        denormalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        ties: metrics.Ties = "random",
        seed: int = 0,
        image: int = 0,
        method: str = "case",
    ) -> None:
        # Long on purpose (~100 lines): it validates every argument and builds the whole control panel in the
        # order a reader sees it; split up, each piece would need most of the others' state.
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.dataset = dataset
        self._n = self._length(dataset)
        self.layers = {name: name for name in [layer]} if isinstance(layer, str) else dict(layer)
        if not self.layers:
            raise ValueError("layer mapping is empty; give a dotted layer name or {role: name}")
        for name in self.layers.values():
            resolve_layer(model, name)  # raises with close matches
        self.methods = [canonical_method(m) for m in methods]
        if not self.methods:
            raise ValueError(f"no method given; choose from {', '.join(METHODS)}")
        self._cache: dict[tuple, torch.Tensor] = {}
        first = self._item(0)[0]
        self._device = self._model_device(first.device)
        with torch.no_grad():
            num_classes = int(self._logits(0).shape[0])
        self.num_classes = num_classes
        if class_names is None:
            class_names = getattr(dataset, "class_names", None)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the model has {num_classes} "
                             "classes")
        names = class_names if class_names is not None else [str(c) for c in range(num_classes)]
        self.class_names = list(names)
        if contrast_sets is not None:
            if not isinstance(contrast_sets, torch.Tensor) or contrast_sets.is_floating_point():
                raise TypeError("contrast_sets must be a LongTensor [C, K_max] (from ck.contrast_sets)")
            if contrast_sets.dim() != 2 or contrast_sets.shape[0] != num_classes:
                raise ValueError(
                    f"contrast_sets must be [C={num_classes}, K_max], got shape {tuple(contrast_sets.shape)}"
                )
            if int(contrast_sets.min()) < 0 or int(contrast_sets.max()) >= num_classes:
                raise ValueError(f"contrast_sets holds a class index outside 0..{num_classes - 1}")
            self.contrast_sets = contrast_sets.long().cpu()
            k_max = contrast_sets.shape[1]
        else:
            self.contrast_sets = None
            k_max = num_classes - 1
        if not 1 <= max_rank <= num_classes:
            raise ValueError(f"max_rank must be between 1 and {num_classes}, got {max_rank}")
        metrics.topk_count(k, 1000, 1000)  # validates k as a fraction
        if not 0 <= image < self._n:
            raise ValueError(f"image must be an index in 0..{self._n - 1}, got {image}")
        self.denormalize = denormalize
        self.ties, self.seed = ties, int(seed)

        targets = [(f"top-{r}", ("rank", r)) for r in range(1, max_rank + 1)]
        targets += [(f"class {c}: {n}", ("class", c)) for c, n in enumerate(self.class_names)]
        strategies = ([("confusion matrix (contrast_sets)",
                        "confusion")] if self.contrast_sets is not None else [])
        strategies += [("the image's own top logits", "logits")]
        style = {"description_width": "initial"}
        self.image = W.IntSlider(value=image, min=0, max=self._n - 1, description="image", style=style,
                                 continuous_update=False)
        self.layer = W.Dropdown(options=list(self.layers.items()), description="layer", style=style)
        self.method = W.Dropdown(options=[(DISPLAY_NAMES[m], m) for m in self.methods],
                                 value=canonical_method(method) if canonical_method(method) in self.methods
                                 else self.methods[0], description="method", style=style)
        self.target_a = W.Dropdown(options=targets, value=("rank", 1), description="map A: target",
                                   style=style)
        self.target_b = W.Dropdown(options=targets, value=("rank", min(2, max_rank)),
                                   description="map B: target",
                                   style=style)
        self.strategy = W.Dropdown(options=strategies, description="CASE contrast", style=style)
        self.K = W.IntSlider(value=min(max(1, K), k_max), min=1, max=k_max, description="K (contrast size)",
                             style=style, continuous_update=False)
        self.k = W.FloatSlider(value=k, min=0.01, max=0.5, step=0.01, readout_format=".0%",
                               description="k (top-k)", style=style, continuous_update=False)
        self.figure = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.summary = W.HTML()
        self.controls = [self.image, self.layer, self.method, self.target_a, self.target_b, self.strategy,
                         self.K, self.k]
        if len(self.layers) == 1:
            self.layer.layout.display = "none"
        rows = [W.HBox([self.image, self.layer, self.method]), W.HBox([self.target_a, self.target_b]),
                W.HBox([self.strategy, self.K, self.k])]
        super().__init__(children=[*rows, self.figure, self.summary])
        self.targets: tuple[int, int] = (0, 0)
        self.contrast: torch.Tensor | None = None
        self.maps = self.masks = torch.empty(0)
        self.agreement = float("nan")
        self.error: str | None = None
        for control in self.controls:
            control.observe(self._on_change, names="value")
        self.refresh()

    # ----------------------------------------------------------------- data access

    @staticmethod
    def _length(dataset: Any) -> int:
        if isinstance(dataset, torch.Tensor):
            if dataset.dim() != 4:
                raise ValueError("a tensor dataset must be images [N, 3, H, W], got shape "
                                 f"{tuple(dataset.shape)}")
        try:
            n = len(dataset)
        except TypeError:
            raise TypeError(
                f"dataset must have a length (a Dataset or a tensor), got {type(dataset).__name__}"
            ) from None
        if n == 0:
            raise ValueError("dataset is empty")
        return n

    def _item(self, i: int) -> tuple[torch.Tensor, int | None, Mapping[str, torch.Tensor] | None]:
        item = self.dataset[i]
        parts = item if isinstance(item, (tuple, list)) else (item,)
        image = parts[0]
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"dataset item {i}: the image must be a tensor [3, H, W], got {got}")
        label = int(parts[1]) if len(parts) > 1 else None
        masks = parts[2] if len(parts) > 2 and isinstance(parts[2], Mapping) else None
        return image, label, masks

    def _model_device(self, fallback: torch.device) -> torch.device:
        for t in self.model.parameters():
            return t.device
        return fallback

    def _batch(self, i: int) -> torch.Tensor:
        return self._item(i)[0][None].to(self._device)

    def _logits(self, i: int) -> torch.Tensor:
        key = ("logits", i)
        if key not in self._cache:
            with evaluation_mode(self.model), torch.no_grad():  # every submodule's mode restored after
                self._cache[key] = self.model(self._batch(i))[0].float().cpu()
        return self._cache[key]

    def _display_image(self, i: int) -> np.ndarray:
        if hasattr(self.dataset, "raw"):
            img = self.dataset.raw(i)
        elif self.denormalize is not None:
            img = self.denormalize(self._item(i)[0])
        else:
            img = self._item(i)[0].float()
            img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
        return img.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()

    # ----------------------------------------------------------------- computation

    def resolve_targets(self, i: int) -> tuple[int, int]:
        """The class indices of map A and map B for image ``i`` (ranks are read from the logits)."""
        order = torch.argsort(self._logits(i), descending=True, stable=True)
        out = []
        for kind, value in (self.target_a.value, self.target_b.value):
            out.append(int(order[value - 1]) if kind == "rank" else int(value))
        return out[0], out[1]

    def contrast_for(self, i: int, targets: Sequence[int], K: int) -> torch.Tensor:
        """``LongTensor [len(targets), K]``: each target's contrast classes under the chosen strategy."""
        if self.strategy.value == "confusion":
            assert self.contrast_sets is not None
            return self.contrast_sets[list(targets), :K]
        logits = self._logits(i)[None]  # [1, C]
        return logit_contrast_sets(torch.tensor([list(targets)], device=logits.device), logits, K)[0].cpu()

    def _maps(self, i: int, layer: str, method: str, targets: tuple[int, int], contrast: torch.Tensor | None):
        key = self.map_key(i, layer, method, targets, contrast)
        if key not in self._cache:
            con = None if contrast is None else contrast[None].to(self._device)
            result = explain(self.model, self._batch(i), layer, [method], torch.tensor([targets]), con)
            self._cache[key] = result.maps[method][0].cpu()
        return self._cache[key]

    def map_key(self, i: int, layer: str, method: str, targets: tuple[int, ...],
                contrast: torch.Tensor | None) -> tuple:
        """The cache key of image ``i``'s maps of ``targets`` under ``method`` (and CASE's ``contrast``)."""
        return ("maps", i, layer, method, tuple(targets),
                None if contrast is None else tuple(contrast.flatten().tolist()))

    def prefetch(self, ids: Sequence[int], layer: str, methods: Sequence[str], ranks: Sequence[int],
                 K: int) -> list[tuple]:
        """Fill the cache for images ``ids`` at once: their logits from one forward pass, then the maps of
        the classes at ``ranks`` under every method in ``methods`` from one batched :func:`explain` call
        (CASE with each target's K contrast classes).  Afterwards :meth:`_maps` of these images is a cache
        hit.  Returns the map keys added (to evict them after use).  Batched maps equal the one-image maps
        up to floating point (the engine computes each image of a batch independently)."""
        ids = [int(i) for i in ids]
        x = torch.stack([self._item(i)[0] for i in ids]).to(self._device)
        if any(("logits", i) not in self._cache for i in ids):
            with evaluation_mode(self.model), torch.no_grad():
                for i, z in zip(ids, self.model(x).float().cpu()):
                    self._cache.setdefault(("logits", i), z)
        targets = [self.rank_targets(i, ranks) for i in ids]
        contrast = [self.contrast_for(i, t, K) for i, t in zip(ids, targets)]
        names = [canonical_method(m) for m in methods]
        tgt = torch.tensor(targets, device=self._device)
        added = []
        for needs_contrast in (False, True):
            group = [m for m in names if REGISTRY[m].needs_contrast == needs_contrast]
            if not group:
                continue
            con = torch.stack(contrast).to(self._device) if needs_contrast else None
            result = explain(self.model, x, layer, group, tgt, con)
            for m in group:
                for b, i in enumerate(ids):
                    key = self.map_key(i, layer, m, targets[b], contrast[b] if needs_contrast else None)
                    self._cache[key] = result.maps[m][b].cpu()
                    added.append(key)
        return added

    def rank_targets(self, i: int, ranks: Sequence[int]) -> tuple[int, ...]:
        """The classes at ``ranks`` (1 = most likely) of image ``i``'s logits."""
        order = torch.argsort(self._logits(i), descending=True, stable=True)
        return tuple(int(order[r - 1]) for r in ranks)

    def refresh(self) -> None:
        """Recompute the view from the controls (called on every change)."""
        try:
            self._update()
            self.error = None
        except Exception as err:  # shown in the view; the explorer stays usable
            self.error = f"{type(err).__name__}: {err}"
            self.summary.value = (f'<p style="color:#b00"><b>Cannot show this choice</b>: '
                                  f'{html.escape(self.error)}</p>')
            self._summary_html = self.summary.value

    def _on_change(self, change: Mapping[str, Any]) -> None:
        self.refresh()

    def _update(self) -> None:
        i, method, layer, k = int(self.image.value), self.method.value, self.layer.value, float(self.k.value)
        self.K.disabled = self.strategy.disabled = method != "case"
        targets = self.resolve_targets(i)
        contrast = self.contrast_for(i, targets, int(self.K.value)) if method == "case" else None
        maps = self._maps(i, layer, method, targets, contrast)
        mask_a, valid_a = metrics.topk_mask(maps[0], k, self.ties, self.seed, stream=0)
        mask_b, valid_b = metrics.topk_mask(maps[1], k, self.ties, self.seed, stream=1)
        agreement = float(metrics.topk_agreement(maps[0], maps[1], k, self.ties, self.seed))
        self.targets, self.contrast, self.maps = targets, contrast, maps
        self.masks = torch.stack([mask_a, mask_b])
        self.agreement = agreement
        probs = torch.softmax(self._logits(i), dim=0)
        _, label, part_masks = self._item(i)
        self._png = figure_png(self._figure(i, method, targets, probs, k, (bool(valid_a), bool(valid_b))))
        self.figure.value = self._png
        self._summary_html = self._summary(i, method, layer, targets, contrast, probs, k, label, part_masks)
        self.summary.value = self._summary_html

    # ----------------------------------------------------------------- rendering

    def _name(self, c: int) -> str:
        return f"{self.class_names[c]}" if self.class_names[c] != str(c) else f"class {c}"

    def _figure(self, i: int, method: str, targets: tuple[int, int], probs: torch.Tensor, k: float,
                valid: tuple[bool, bool]):
        img = self._display_image(i)
        fig = Figure(figsize=(7.2, 5.0))
        axes = fig.subplots(2, 3)
        axes[0, 0].imshow(img)
        axes[0, 0].set_title(f"image {i}", fontsize=9)
        for j, (ab, t) in enumerate(zip("AB", targets)):
            ax = axes[0, 1 + j]
            ax.imshow(img)
            ax.imshow(self.maps[j].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_title(f"{ab}: {DISPLAY_NAMES[method]}\n{self._name(t)} (p = {float(probs[t]):.2f})",
                         fontsize=8)
            ax = axes[1, 1 + j]
            mask = self.masks[j].numpy()[..., None]
            ax.imshow(img * mask + img * (1 - mask) * 0.25)
            title = f"top {k:.0%} of {ab}" if valid[j] else f"{ab} is constant:\nno top-{k:.0%} set"
            ax.set_title(title, fontsize=8)
        # Overlap view: pixels in both top-k sets (yellow), only in A (red), only in B (blue).
        a, b = self.masks[0].numpy(), self.masks[1].numpy()
        overlap = np.stack([a, a & b, b & ~a], axis=-1).astype(float) * 0.9
        grey = img.mean(axis=-1, keepdims=True) * 0.35
        axes[1, 0].imshow(np.where((a | b)[..., None], overlap, grey))
        agree = "undefined" if math.isnan(self.agreement) else f"{self.agreement:.0%}"
        axes[1, 0].set_title(f"agreement {agree}\nyellow: both, red: A, blue: B", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        return fig

    def _summary(self, i, method, layer, targets, contrast, probs, k, label, part_masks) -> str:
        agree = ("<b>undefined</b>: a constant map has no top-k set (excluded from the tests)"
                 if math.isnan(self.agreement) else f"<b>{self.agreement:.1%}</b>")
        rows = [("image",
                 f"{i}" + (f" (true class: {html.escape(self._name(label))})" if label is not None else "")),
                ("method · layer", f"{DISPLAY_NAMES[method]} · <code>{html.escape(layer)}</code>")]
        for ab, t, c in zip("AB", targets, [None, None] if contrast is None else contrast.tolist()):
            text = f"{html.escape(self._name(t))}, p = {float(probs[t]):.3f}"
            if c is not None:
                text += " · contrast: " + ", ".join(html.escape(self._name(v)) for v in c)
            rows.append((f"map {ab} target", text))
        rows.append((f"top-{k:.0%} agreement", agree))
        if part_masks is not None and "unique" in part_masks and label is not None:
            for j, (ab, t) in enumerate(zip("AB", targets)):
                if t == label:
                    ev = float(metrics.unique_evidence(self.maps[j], part_masks["unique"], k, self.ties,
                                                       self.seed))
                    val = "undefined (constant map)" if math.isnan(ev) else f"{ev:.1%}"
                    rows.append((f"map {ab} on the true class's unique part", val))
        return table_html(rows)

    def __repr__(self) -> str:
        a, b = self.targets
        return (f"SaliencyExplorer(image={self.image.value}, method={self.method.value!r}, targets=({a}, "
                f"{b}), K={self.K.value}, k={self.k.value:.2f}, agreement={self.agreement:.3f})")


# --------------------------------------------------------------------------- agreement explorer

#: Columns besides ``by`` that split a results table into separate distributions when they vary.
