"""Explorers that work in the published book without a kernel: precomputed views + a few lines of JS.

A :class:`StaticExplorer` is one self-contained HTML snippet: ``<select>``/``range`` controls, image slots,
a numbers table, the views as a JSON blob (images as data URIs, each distinct image stored once) and a
small inline script (written here; no library, no CDN, no request) that swaps the images and the numbers
when a control changes.  Every combination of control values is computed beforehand (at build time).

* :func:`static_saliency` — from a live :class:`~casekit.report.widgets.SaliencyExplorer`: every image ×
  method × target rank (top-1, top-2): the image, the map over it, its top-k pixels, and the numbers
  (classes, probabilities, top-1/top-2 agreement, evidence on the unique part).
* :func:`static_agreement` — from a live :class:`~casekit.report.widgets.AgreementExplorer`: every
  (model, layer, method, …) of its results table: the agreement histogram and the class-sensitivity test.
* :func:`display_explorer` — one output carrying both: the live widget (JupyterLab renders the
  ``application/vnd.jupyter.widget-view+json`` view) and the static explorer as ``text/html`` (the built
  book: ``_config.yml`` drops the widget view via ``nb_mime_priority_overrides``, so myst-nb picks the HTML).

Notebook cell::

    from casekit.report import explorer as ex

    live = ck.widgets.SaliencyExplorer(model, data, layers, ck.contrast_sets(confusion, 5), K=3, k=0.05)
    ex.display_explorer(live, ex.static_saliency(live, images=range(20)))
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "EXPLORER_CLASS",
    "Control",
    "LiveAndStatic",
    "StaticExplorer",
    "View",
    "display_explorer",
    "encode_image",
    "histogram_svg",
    "overlay",
    "static_agreement",
    "static_saliency",
    "webp_supported",
]

EXPLORER_CLASS = "casekit-explorer"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: :func:`static_saliency` without ``images`` takes every image of the explorer up to this many.
MAX_DEFAULT_IMAGES = 64
STATIC_NOTE = ("Precomputed views (every choice above was computed when the book was built); "
               "open the notebook in JupyterLab to explore more settings live.")


@dataclass(frozen=True)
class Control:
    """One control: ``name`` (shown as its label), ``options`` = shown labels in order, ``kind`` ``"select"``
    or ``"range"`` (a slider over the options, its label shown beside it)."""

    name: str
    options: Sequence[str]
    kind: str = "select"

    def __post_init__(self) -> None:
        if self.kind not in ("select", "range"):
            raise ValueError(f"Control {self.name!r}: kind must be 'select' or 'range', got {self.kind!r}")
        if not self.options:
            raise ValueError(f"Control {self.name!r} has no options")


@dataclass
class View:
    """What one combination of control values shows: ``images`` (encoded PNG, JPEG or WebP bytes, one per
    image slot, or ``None`` for an empty slot) and ``numbers`` (label, value) rows, plain text."""

    images: Sequence[bytes | None]
    numbers: Sequence[tuple[str, str]] = field(default_factory=list)


def _data_uri(data: bytes) -> str:
    """``data:image/<kind>;base64,…`` with the kind read from the bytes' signature (JPEG, WebP, PNG, SVG)."""
    if data[:3] == b"\xff\xd8\xff":
        kind = "jpeg"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "webp"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        kind = "png"
    elif data[:4] == b"<svg":
        kind = "svg+xml"
    else:
        raise ValueError(f"not a PNG, JPEG, WebP or SVG image (starts with {data[:12]!r})")
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _blank_png() -> bytes:
    """An empty slot: a 1×1 fully transparent PNG (keeps every ``<img>`` with a size)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (1, 1), (0, 0, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


_BLANK = _blank_png()

_SCRIPT = """(function () {
  var root = document.getElementById("%(id)s");
  if (!root || root.getAttribute("data-ready")) { return; }
  root.setAttribute("data-ready", "1");
  var data = JSON.parse(root.querySelector("script.casekit-explorer-data").textContent);
  var controls = Array.prototype.slice.call(root.querySelectorAll("[data-control]"));
  var slots = root.querySelectorAll("[data-slot]");
  var rows = root.querySelector("tbody.casekit-explorer-rows");
  var missing = root.querySelector(".casekit-explorer-missing");
  function values() { return controls.map(function (c) { return parseInt(c.value, 10); }); }
  function nearest(v, keep) {
    var best = null, score = -1;
    Object.keys(data.views).forEach(function (k) {
      var o = k.split("|").map(Number), s = 0;
      if (o[keep] !== v[keep]) { return; }
      for (var i = 0; i < o.length; i++) { if (o[i] === v[i]) { s++; } }
      if (s > score) { score = s; best = o; }
    });
    return best;
  }
  function show(v) {
    controls.forEach(function (c, j) {
      c.value = String(v[j]);
      var out = root.querySelector("[data-readout='" + j + "']");
      if (out) { out.textContent = data.controls[j][v[j]]; }
    });
    var view = data.views[v.join("|")];
    missing.style.display = view ? "none" : "";
    if (!view) { return; }
    for (var i = 0; i < slots.length; i++) { slots[i].src = data.images[view.images[i]]; }
    while (rows.firstChild) { rows.removeChild(rows.firstChild); }
    view.numbers.forEach(function (pair) {
      var tr = document.createElement("tr"), th = document.createElement("th"),
          td = document.createElement("td");
      th.textContent = pair[0]; td.textContent = pair[1];
      th.style.cssText = "text-align:left;padding:0.1em 1em 0.1em 0;font-weight:600";
      tr.appendChild(th); tr.appendChild(td); rows.appendChild(tr);
    });
  }
  function changed(event) {
    var v = values(), keep = parseInt(event.target.getAttribute("data-control"), 10);
    if (!(v.join("|") in data.views)) { v = nearest(v, keep) || v; }
    show(v);
  }
  controls.forEach(function (c) {
    c.addEventListener("input", changed);
    c.addEventListener("change", changed);
  });
})();"""


class StaticExplorer:
    """Controls + precomputed views → one self-contained HTML snippet (``html``; ``_repr_html_``).

    ``views`` maps a tuple of option indices (one per control, in ``controls`` order) to a :class:`View`;
    combinations without a view show "not computed" (or, when a control changes, the explorer moves to the
    closest computed combination that keeps that control's new value).  ``slots``: a caption per image slot;
    ``image_width``: displayed width of each image in CSS px (small images are scaled up, pixelated);
    ``legend``: extra HTML under the images (e.g. the colour scale); ``initial``: the first view shown.
    """

    _count = itertools.count()

    def __init__(self, controls: Sequence[Control], views: Mapping[tuple[int, ...], View], *,
                 slots: Sequence[str], title: str | None = None, image_width: int = 160, legend: str = "",
                 note: str = STATIC_NOTE, initial: tuple[int, ...] | None = None) -> None:
        if not controls:
            raise ValueError("a static explorer needs at least one control")
        if not views:
            raise ValueError("a static explorer needs at least one view")
        for key, view in views.items():
            if len(key) != len(controls):
                raise ValueError(f"view key {key} has {len(key)} indices for {len(controls)} controls")
            for j, (i, c) in enumerate(zip(key, controls)):
                if not 0 <= i < len(c.options):
                    raise ValueError(f"view key {key}: index {i} is outside control {c.name!r}'s "
                                     f"{len(c.options)} options")
            if len(view.images) != len(slots):
                raise ValueError(f"view {key} has {len(view.images)} images for {len(slots)} slots")
        self.controls, self.slots, self.title = list(controls), list(slots), title
        self.image_width, self.legend, self.note = int(image_width), legend, note
        self.initial = tuple(initial) if initial is not None else next(iter(views))
        if self.initial not in views:
            raise ValueError(f"initial view {self.initial} is not among the views")
        pool: dict[bytes, int] = {}
        self._images: list[str] = []
        self._views: dict[str, dict[str, Any]] = {}
        for key, view in views.items():
            idx = []
            for img in view.images:
                img = _BLANK if img is None else img
                if img not in pool:
                    pool[img] = len(self._images)
                    self._images.append(_data_uri(img))
                idx.append(pool[img])
            numbers = [[str(a), str(b)] for a, b in view.numbers]
            self._views["|".join(map(str, key))] = {"images": idx, "numbers": numbers}
        self.views = dict(views)
        digest = hashlib.sha1(json.dumps(self.data(), sort_keys=True).encode()).hexdigest()[:10]
        self.id = f"ckx-{digest}-{next(self._count)}"

    def data(self) -> dict[str, Any]:
        """The JSON blob the script reads: ``controls`` (option labels), ``images`` (data URIs), ``views``
        (``"i|j|…"`` → image indices and number rows)."""
        return {"controls": [list(c.options) for c in self.controls], "images": self._images,
                "views": self._views}

    # ------------------------------------------------------------------ rendering

    def _controls_html(self) -> str:
        parts = []
        for j, c in enumerate(self.controls):
            start = self.initial[j]
            name = html.escape(c.name)
            if c.kind == "range":
                parts.append(
                    '<label style="display:inline-flex;flex-wrap:wrap;align-items:center;gap:0.2em '
                    f'0.4em">{name} <input type="range" data-control="{j}" min="0" '
                    f'max="{len(c.options) - 1}" step="1" value="{start}" aria-label="{name}" '
                    'style="max-width:12em"/> <span '
                    f'data-readout="{j}">{html.escape(c.options[start])}</span></label>')
            else:
                opts = "".join(f'<option value="{i}"{" selected" if i == start else ""}>'
                               f'{html.escape(o)}</option>'
                               for i, o in enumerate(c.options))
                parts.append(f'<label style="white-space:nowrap">{name} <select '
                             f'data-control="{j}">{opts}</select>'
                             "</label>")
        return '<div class="casekit-explorer-controls" style="display:flex;flex-wrap:wrap;gap:0.4em 1.5em;' \
               f'margin-bottom:0.5em">{"".join(parts)}</div>'

    def _images_html(self, view: Mapping[str, Any]) -> str:
        figs = []
        for s, caption in enumerate(self.slots):
            src = self._images[view["images"][s]]
            figs.append(
                f'<figure style="margin:0;text-align:center;max-width:100%">'
                f'<img data-slot="{s}" src="{src}" alt="{html.escape(caption)}" width="{self.image_width}" '
                f'style="max-width:100%;height:auto;image-rendering:pixelated"/>'
                f'<figcaption style="font-size:0.85em">{html.escape(caption)}</figcaption></figure>')
        return f'<div style="display:flex;flex-wrap:wrap;gap:0.5em">{"".join(figs)}</div>'

    @staticmethod
    def _rows_html(numbers: Sequence[Sequence[str]]) -> str:
        return "".join(f'<tr><th style="text-align:left;padding:0.1em 1em 0.1em 0;font-weight:600">'
                       f"{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in numbers)

    @property
    def html(self) -> str:
        """The whole explorer: markup for the initial view, the JSON views and the script."""
        view = self._views["|".join(map(str, self.initial))]
        blob = json.dumps(self.data(), separators=(",", ":")).replace("<", "\\u003c")
        title = (f'<p style="font-weight:600;margin:0 0 0.4em">{html.escape(self.title)}</p>' if self.title
                 else "")
        return (
            f'<div class="{EXPLORER_CLASS}" id="{self.id}" style="max-width:100%;overflow-x:auto">{title}'
            f"{self._controls_html()}{self._images_html(view)}{self.legend}"
            '<p class="casekit-explorer-missing" style="display:none;color:#b00">'
            "This combination was not computed.</p>"
            '<table class="casekit-explorer-numbers" style="font-size:0.9em;margin-top:0.5em">'
            f'<tbody class="casekit-explorer-rows">{self._rows_html(view["numbers"])}</tbody></table>'
            f'<p style="font-size:0.85em;color:#555"><em>{html.escape(self.note)}</em></p>'
            f'<script type="application/json" class="casekit-explorer-data">{blob}</script>'
            f"<script>{_SCRIPT % {'id': self.id}}</script></div>"
        )

    def _repr_html_(self) -> str:
        return self.html

    @property
    def text(self) -> str:
        controls = "; ".join(f"{c.name}: {len(c.options)} options" for c in self.controls)
        first = self._views["|".join(map(str, self.initial))]["numbers"]
        lines = [f"{self.title or 'Explorer'} (static, {len(self._views)} precomputed views; {controls})"]
        lines += [f"  {a}: {b}" for a, b in first]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text

    def size_bytes(self) -> int:
        """Bytes of the HTML snippet (what the page grows by)."""
        return len(self.html.encode("utf-8"))


# --------------------------------------------------------------------------- images


def webp_supported() -> bool:
    """Whether Pillow can write WebP here (it can in every wheel on PyPI; a source build may lack libwebp)."""
    from PIL import features

    return bool(features.check("webp"))


def encode_image(rgb: np.ndarray, *, size: int = 160, fmt: str = "png", colors: int | None = 128,
                 quality: int = 80) -> bytes:
    """``rgb``: ``[H, W, 3]`` floats in [0, 1] or uint8 → PNG (palette-quantised to ``colors``, ``None``
    keeps full colour), JPEG or WebP (both lossy at ``quality``) bytes; images larger than ``size`` px are
    downscaled (Lanczos) so that their longer side is ``size``; smaller ones are kept (the page scales them
    up).  WebP falls back to JPEG where Pillow cannot write it.  On 64-px images WebP is about 35 % smaller
    than JPEG (whose headers alone take about 600 bytes)."""
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb must be [H, W, 3], got shape {arr.shape}")
    if fmt not in ("png", "jpeg", "webp"):
        raise ValueError(f"fmt must be 'png', 'jpeg' or 'webp', got {fmt!r}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if max(img.size) > size:
        scale = size / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    if fmt == "webp" and webp_supported():
        img.save(buf, format="WEBP", quality=quality, method=4)
    elif fmt in ("jpeg", "webp"):
        img.save(buf, format="JPEG", quality=quality, optimize=True)
    else:
        if colors is not None:
            img = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@functools.lru_cache(maxsize=8)
def _colormap(name: str) -> Any:
    """``matplotlib.colormaps[name]``, fetched once (the registry hands out a new copy per call)."""
    import matplotlib

    return matplotlib.colormaps[name]


def overlay(image: np.ndarray, saliency: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """``image`` ``[H, W, 3]`` in [0, 1] with ``saliency`` ``[H, W]`` (values in [0, 1]) blended on top in
    ``cmap`` colours: ``(1 − alpha)·image + alpha·cmap(saliency)`` — what ``imshow(map, alpha=0.5)`` draws."""
    s = np.clip(np.nan_to_num(np.asarray(saliency, dtype=np.float64)), 0, 1)
    if s.shape != image.shape[:2]:
        raise ValueError(f"saliency {s.shape} and image {image.shape[:2]} differ in size")
    colour = _colormap(cmap)(s)[..., :3]
    return (1 - alpha) * np.asarray(image, dtype=np.float64) + alpha * colour


def colour_scale(cmap: str = "jet", label: str = "map value", steps: int = 9) -> str:
    """A small HTML colour bar (CSS gradient) from 0 to 1 for the overlays."""
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    stops = ", ".join("#" + "".join(f"{int(255 * c + 0.5):02x}" for c in cm(t)[:3])
                      for t in np.linspace(0, 1, steps))
    return ('<div style="display:flex;align-items:center;gap:0.4em;font-size:0.85em;margin:0.3em 0">'
            f"{html.escape(label)}: 0<span "
            "style=\"display:inline-block;width:10em;max-width:40vw;height:0.8em;"
            f'background:linear-gradient(to right, {stops})"></span>1</div>')


# --------------------------------------------------------------------------- from the live explorers


def static_saliency(explorer: Any, *, images: Iterable[int] | None = None,
                    methods: Sequence[str] | None = None, ranks: Sequence[int] = (1, 2), size: int = 160,
                    fmt: str = "webp", image_width: int = 160, batch_size: int = 32,
                    progress: bool = False) -> StaticExplorer:
    """Every ``images`` × ``methods`` × target rank of a :class:`~casekit.report.widgets.SaliencyExplorer`,
    at the explorer's current layer, K, contrast strategy and k (default: all its images and methods); the
    page opens on the live explorer's current image (if among ``images``) and method.  Images: WebP
    (``fmt="jpeg"``: about 1.5× larger on 64-px images; ``"png"``: palette PNG, larger still), longer side
    ≤ ``size`` px.  An explorer over more than :data:`MAX_DEFAULT_IMAGES` images needs an explicit
    ``images`` (every image costs all methods' maps).  The maps of ``batch_size`` images at a time come from
    one batched engine call (:meth:`~casekit.report.widgets.SaliencyExplorer.prefetch`) and leave the cache
    once drawn; ``progress`` shows a tqdm bar (off by default: in the book a text bar would be stderr
    output).

    Slots: the image, the map of the chosen target over it, its top-k pixels.  Numbers: true and predicted
    class, the target and its probability, CASE's contrast classes, the top-k agreement of the maps of the
    first two ranks (the paper's Figure 1 comparison) and, on the demo benchmark, the share of the map's
    top-k pixels on the true class's unique part (when the target is the true class).  The maps come from
    the explorer's own computation (and cache), so the live and the static explorer show the same numbers.
    """
    from tqdm.auto import tqdm

    from ..cam.engine import DISPLAY_NAMES, canonical_method
    from ..study.config import check_int

    if images is None and explorer._n > MAX_DEFAULT_IMAGES:
        raise ValueError(f"the explorer holds {explorer._n} images; pass images=... (e.g. the chapter's "
                         f"sample) — every image costs the maps of {len(explorer.methods)} methods")
    ids = list(range(explorer._n)) if images is None else [int(i) for i in images]
    bad = [i for i in ids if not 0 <= i < explorer._n]
    if bad or not ids:
        raise ValueError(f"images must be indices in 0..{explorer._n - 1}, got {bad or 'none'}")
    meths = explorer.methods if methods is None else [canonical_method(m) for m in methods]
    unknown = [m for m in meths if m not in explorer.methods]
    if unknown:
        raise ValueError(f"method(s) {unknown} are not in the explorer (has {explorer.methods})")
    if len(ranks) < 2 or min(ranks) < 1 or max(ranks) > explorer.num_classes:
        raise ValueError(f"ranks must be ≥ 2 ranks within 1..{explorer.num_classes}, got {list(ranks)}")
    layer, k, K = explorer.layer.value, float(explorer.k.value), int(explorer.K.value)
    batch_size = check_int(batch_size, "batch_size", 1)
    keep = int(explorer.image.value)
    views: dict[tuple[int, ...], View] = {}
    bar = tqdm(total=len(ids), desc="static explorer", unit="img", disable=not progress)
    for start in range(0, len(ids), batch_size):
        part = ids[start:start + batch_size]
        added = explorer.prefetch(part, layer, meths, ranks, K)
        for a, i in enumerate(part, start):
            views.update(_saliency_views(explorer, a, i, meths, ranks, layer, K, k, size, fmt))
            bar.update(1)
        for key in added:  # drawn: drop them (a paper-size sample would not fit), keep the live image's
            if key[1] != keep:
                explorer._cache.pop(key, None)
    bar.close()
    controls = [Control("image", [_image_label(explorer, i) for i in ids], "range"),
                Control("method", [DISPLAY_NAMES.get(m, m) for m in meths]),
                Control("target", [f"top-{r}" for r in ranks])]
    start = (ids.index(int(explorer.image.value)) if int(explorer.image.value) in ids else 0,
             meths.index(explorer.method.value) if explorer.method.value in meths else 0, 0)
    return StaticExplorer(controls, views, slots=["image", "map over the image", f"top {k:.0%} pixels"],
                          title=f"Saliency maps of the top-{ranks[0]} and top-{ranks[1]} classes (layer "
                                f"{layer})",
                          image_width=image_width, legend=colour_scale(), initial=start)


def _saliency_views(explorer: Any, a: int, i: int, meths: Sequence[str], ranks: Sequence[int], layer: str,
                    K: int, k: float, size: int, fmt: str) -> dict[tuple[int, ...], View]:
    """The views of image ``i`` (control index ``a``): every method × rank."""
    import torch

    from ..cam.registry import REGISTRY
    from ..evaluation import metrics

    logits = explorer._logits(i)
    probs = torch.softmax(logits, dim=0)
    order = torch.argsort(logits, descending=True, stable=True)
    targets = explorer.rank_targets(i, ranks)
    _, label, parts = explorer._item(i)
    shown = explorer._display_image(i)
    plain = encode_image(shown, size=size, fmt=fmt)
    views = {}
    for b, method in enumerate(meths):
        contrast = explorer.contrast_for(i, targets, K) if REGISTRY[method].needs_contrast else None
        maps = explorer._maps(i, layer, method, targets, contrast)
        agree = float(metrics.topk_agreement(maps[0], maps[1], k, explorer.ties, explorer.seed))
        for c, (rank, t) in enumerate(zip(ranks, targets)):
            mask, valid = metrics.topk_mask(maps[c], k, explorer.ties, explorer.seed, stream=min(c, 1))
            m = mask.numpy()[..., None]
            top = (encode_image(shown * m + shown * (1 - m) * 0.25, size=size, fmt=fmt) if bool(valid)
                   else None)
            rows = _saliency_numbers(explorer, i, label, order, probs, t, rank, ranks, contrast, c, agree, k)
            if parts is not None and "unique" in parts and label is not None and t == label:
                ev = float(metrics.unique_evidence(maps[c], parts["unique"], k, explorer.ties, explorer.seed))
                rows.append(("top-k pixels on the true class's unique part",
                             _evidence_text(ev, parts["unique"], k)))
            views[(a, b, c)] = View([plain, encode_image(overlay(shown, maps[c].numpy()), size=size, fmt=fmt),
                                     top], rows)
    return views


def _evidence_text(share: float, unique: Any, k: float) -> str:
    """``"41.0% (chance 6.3%, ceiling 100.0%)"``: chance = the unique part's area ``|U| / (H·W)`` (the
    expected share of a random top-k set), ceiling = ``min(1, |U| / ⌊k·H·W⌋)`` (the most a top-k set can
    hold)."""
    from ..evaluation import metrics

    h, w = unique.shape[-2:]
    area = int(unique.sum())
    n = metrics.topk_count(k, h, w)
    limits = f"chance {area / (h * w):.1%}, ceiling {min(1.0, area / n):.1%}"
    return f"undefined (constant map; {limits})" if math.isnan(share) else f"{share:.1%} ({limits})"


def _image_label(explorer: Any, i: int) -> str:
    label = explorer._item(i)[1]
    return f"image {i}" + (f" ({explorer._name(label)})" if label is not None else "")


def _saliency_numbers(explorer: Any, i: int, label: int | None, order: Any, probs: Any, t: int, rank: int,
                      ranks: Sequence[int], contrast: Any, c: int, agree: float,
                      k: float) -> list[tuple[str, str]]:
    pred = int(order[0])
    rows = [("image", f"{i}")]
    if label is not None:
        verdict = "correct" if pred == label else "misclassified"
        rows.append(("true class · prediction",
                     f"{explorer._name(label)} · {explorer._name(pred)} ({verdict})"))
    rows.append((f"target (top-{rank})", f"{explorer._name(t)}, p = {float(probs[t]):.3f}"))
    if contrast is not None:
        rows.append(("CASE contrast classes", ", ".join(explorer._name(int(v)) for v in contrast[c])))
    text = "undefined (a constant map has no top-k set)" if math.isnan(agree) else f"{agree:.1%}"
    rows.append((f"top-{k:.0%} agreement, top-{ranks[0]} vs top-{ranks[1]} map", text))
    return rows


def static_agreement(explorer: Any) -> StaticExplorer:
    """Every selection of an :class:`~casekit.report.widgets.AgreementExplorer` (each existing combination of
    its menus: model, layer, method, …): the histogram of top-k agreement (:func:`histogram_svg`: the
    explorer's bins, threshold line; an SVG, so it stays sharp at any zoom and costs about a millisecond)
    and the class-sensitivity test (:func:`casekit.evaluation.stats.class_sensitivity_test` at the
    explorer's threshold — the same call as the live view)."""
    from ..cam.engine import DISPLAY_NAMES
    from ..evaluation import stats

    facets = list(explorer.facets)
    results = explorer.results
    options = [list(dict.fromkeys(results[f])) for f in facets]
    views: dict[tuple[int, ...], View] = {}
    for key, group in results.groupby(facets, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        idx = tuple(opts.index(v) for opts, v in zip(options, key))
        agreement = group["agreement"].to_numpy(dtype=float)
        r = stats.class_sensitivity_test(agreement, threshold=explorer.threshold)
        finite = agreement[~np.isnan(agreement)]
        title = " · ".join(DISPLAY_NAMES.get(v, str(v)) if f == "method" else str(v)
                           for f, v in zip(facets, key))
        svg = histogram_svg(finite, explorer.bins, explorer.threshold, title)
        views[idx] = View([svg], _agreement_numbers(r, int(np.isnan(agreement).sum())))
    controls = [Control(f, [DISPLAY_NAMES.get(v, str(v)) if f == "method" else str(v) for v in opts])
                for f, opts in zip(facets, options)]
    first = tuple(o.index(explorer.menus[f].value) for f, o in zip(facets, options))
    return StaticExplorer(controls, views, slots=["histogram of top-k agreement"], image_width=400,
                          title="Top-k agreement per model, layer and method",
                          initial=first if first in views else None)


def _agreement_numbers(r: Any, excluded: int) -> list[tuple[str, str]]:
    from .format import check, fmt_ci, p_phrase

    if r.reason:
        return [("images in the test", f"{r.n} ({excluded} constant maps excluded)"),
                ("test", f"none: {r.reason}")]
    return [("images in the test", f"{r.n} ({excluded} constant maps excluded, {r.n_zero} at the threshold)"),
            ("median agreement [95% CI]", fmt_ci(r.median, r.ci_low, r.ci_high)),
            (f"Wilcoxon, H1: median < {r.threshold:.0%}", p_phrase(r.p)),
            ("class-sensitive (rejects H0)", f"{check(r.reject)} (α = {r.alpha:g})")]


def _nice_step(top: float, ticks: int = 5) -> float:
    """The smallest step of 1, 2 or 5 × 10^n that covers ``[0, top]`` with at most ``ticks`` intervals."""
    raw = max(top, 1.0) / ticks
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def _svg_title(title: str, x: float, room: float, size: float = 14.0, smallest: float = 11.0) -> str:
    """The bold title line centred at ``x``: 14 px, smaller (down to ``smallest``) for a long title, and
    squeezed into ``room`` px (``textLength``) if even that is too wide, so it is never cut off."""
    est = 0.66 * len(title)  # width in em of bold sans text (generous: capitals and "_" are wide)
    fit = min(size, max(smallest, room / max(est, 1e-9)))
    squeeze = (f' textLength="{room:.0f}" lengthAdjust="spacingAndGlyphs"' if est * fit > room else "")
    return (f'<text x="{x:.1f}" y="18" text-anchor="middle" font-size="{fit:.1f}" font-weight="600"'
            f"{squeeze}>{html.escape(title)}</text>")


def histogram_svg(values: np.ndarray, bins: np.ndarray, threshold: float, title: str, *,
                  width: int = 400, height: int = 250) -> bytes:
    """A histogram of ``values`` (fractions in [0, 1]) over ``bins`` (edges, fractions) as a small SVG
    drawn for ``width`` × ``height`` CSS px (text 12–14 px, sharp at any zoom): the bars, the
    ``threshold`` as a dashed line, axes in percent, the number of values in the x label, and ``title``.

    Bar ``i`` spans ``bins[i]..bins[i+1]`` and counts ``numpy.histogram(values, bins)[0][i]``."""
    v = np.asarray(values, dtype=float)
    edges = np.asarray(bins, dtype=float)
    counts = np.histogram(v, bins=edges)[0]
    left, right, top, bottom = 52.0, width - 12.0, 30.0, height - 46.0
    room = float(counts.max(initial=0)) * 1.25  # headroom: the legend sits in the top band, above every bar
    step = max(1.0, _nice_step(room))  # counts: whole-number ticks
    ymax = step * max(1, math.ceil(room / step))

    def x(f: float) -> float:
        return left + (right - left) * min(max(f, 0.0), 1.0)

    def y(c: float) -> float:
        return bottom - (bottom - top) * c / ymax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
           'font-size="12" fill="#222">',
           f'<rect width="{width}" height="{height}" fill="#fff"/>',
           _svg_title(title, width / 2, width - 8.0)]
    c = 0.0
    while c <= ymax + 1e-9:  # y grid and labels
        out.append(f'<line x1="{left}" x2="{right}" y1="{y(c):.1f}" y2="{y(c):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 6}" y="{y(c) + 4:.1f}" text-anchor="end">{c:g}</text>')
        c += step
    for n, a, b in zip(counts, edges[:-1], edges[1:]):
        if n:
            out.append(f'<rect x="{x(a):.1f}" y="{y(n):.1f}" width="{max(x(b) - x(a) - 1, 0.5):.1f}" '
                       f'height="{y(0) - y(n):.1f}" fill="#4c72b0"><title>{100 * a:g}–{100 * b:g} %: '
                       f'{int(n)}</title></rect>')
    for t in range(0, 101, 20):  # x axis
        out.append(f'<line x1="{x(t / 100):.1f}" x2="{x(t / 100):.1f}" y1="{bottom}" y2="{bottom + 4}" '
                   f'stroke="#222"/><text x="{x(t / 100):.1f}" y="{bottom + 17}" '
                   f'text-anchor="middle">{t}</text>')
    out.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#222"/>'
               f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}" stroke="#222"/>')
    tx = x(threshold)
    out.append(f'<line class="threshold" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{bottom}" '
               'stroke="#d55e00" stroke-width="2" stroke-dasharray="6 4"/>'
               f'<line x1="{left + 8}" x2="{left + 30}" y1="{top + 10}" y2="{top + 10}" stroke="#d55e00" '
               f'stroke-width="2" stroke-dasharray="6 4"/><text x="{left + 36}" y="{top + 14}">'
               f'{threshold:.0%} threshold</text>')
    n_finite = int(np.isfinite(v).sum())
    out.append(f'<text x="{(left + right) / 2:.1f}" y="{height - 8}" text-anchor="middle">top-k agreement '
               f'(%), {n_finite} images</text>'
               f'<text transform="translate(14 {(top + bottom) / 2:.1f}) rotate(-90)" '
               'text-anchor="middle">images</text></svg>')
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- live + static in one output


class LiveAndStatic:
    """One output with both forms: the live widget's view (``application/vnd.jupyter.widget-view+json``,
    which JupyterLab prefers) and the static explorer as ``text/html`` (what the built book shows, and what
    any viewer without a widget manager shows).  ``live`` may be ``None`` (static only)."""

    def __init__(self, live: Any, static: StaticExplorer) -> None:
        self.live, self.static = live, static

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if self.live is not None:
            got = self.live._repr_mimebundle_(include=include, exclude=exclude) or {}
            bundle.update(got[0] if isinstance(got, tuple) else got)
        bundle["text/html"] = self.static.html
        bundle["text/plain"] = self.static.text
        return bundle

    def __repr__(self) -> str:
        return self.static.text


def display_explorer(live: Any, static: StaticExplorer) -> LiveAndStatic:
    """The live widget and its static counterpart as one output; make it a cell's last expression (or pass
    it to ``IPython.display.display``)."""
    if not isinstance(static, StaticExplorer):
        raise TypeError(f"static must be a StaticExplorer (from static_saliency/static_agreement), "
                        f"got {type(static).__name__}")
    return LiveAndStatic(live, static)
