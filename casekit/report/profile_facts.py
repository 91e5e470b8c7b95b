"""The computed facts of the book's profiles page: the demo benchmark's ten classes (part areas, a gallery
with mask outlines), the demo models and the cifar10 networks (accuracy, attribution layers and the size of
each layer's feature map).  Nothing on that page is written by hand; :func:`profile_facts_pages` renders it.

>>> classes = demo_classes("test")         # one row per class: names of its parts and their mean areas
>>> fig = demo_class_gallery("test")       # one image per class, group and unique part outlined
>>> models = demo_models(seed=0)           # one row per (model, layer role)
>>> nets = cifar10_models()                # the same for the pretrained CIFAR-10 networks (needs their files)

Imports: :mod:`casekit.subjects`, :mod:`casekit.cam.hooks`, :mod:`casekit.study.config` (the top-k
fraction), :mod:`casekit.report.naming` / :mod:`casekit.report.figures.base`, matplotlib.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import nn

from ..cam.hooks import LayerCapture, evaluation_mode
from ..study.config import RunConfig
from ..subjects import demo, reference, synthetic
from .figures.base import MIN_FONT_PT, SHOWN_WIDTH_IN, book_png
from .naming import LAYER_ORDER, model_display

__all__ = [
    "PART_COLOURS", "demo_classes", "demo_class_gallery", "feature_map_sizes", "demo_models",
    "cifar10_models", "classes_markdown", "demo_models_markdown", "cifar10_markdown", "profile_facts_pages",
]

#: Outline colours of the gallery (Okabe–Ito blue and vermilion, told apart with any colour vision), each
#: drawn over a white halo so that it shows on every background.
PART_COLOURS: dict[str, str] = {"shared": "#0072B2", "unique": "#D55E00"}
ROLE_NAMES: dict[str, str] = {"final_conv": "final convolution", "norm5": "norm5"}
#: Files the page includes (written into ``book/`` of the assembled source).
CLASSES_PAGE, GALLERY_PNG = "_profile_classes.md", "_profile_classes.png"
DEMO_MODELS_PAGE, CIFAR10_PAGE = "_profile_demo_models.md", "_profile_cifar10.md"
CACHE_FILE = "profile_facts_accuracy.json"


# --------------------------------------------------------------------------- the demo benchmark


def demo_classes(split: str = "test", seed: int = 0) -> pd.DataFrame:
    """One row per class ``0..C-1``: ``class``, ``name``, ``group_part``, ``unique_part`` (descriptions),
    ``group_area`` / ``unique_area`` = mean over the split's images of the class of the part's visible pixel
    share of the image (``parts == 1`` / ``parts == 2``), and ``n_images``."""
    ds = demo.dataset(split, seed, progress=False)
    names = synthetic.class_names(ds.config)
    rows = []
    for c, name in enumerate(names):
        parts = ds.parts[ds.labels == c]  # uint8 [n, H, W]: 1 group part, 2 unique part
        if parts.shape[0] == 0:
            raise ValueError(f"the {split} split (seed {seed}) has no image of class {c}")
        group, unique = name.split(" + ", 1)
        rows.append({"class": c, "name": name, "group_part": group, "unique_part": unique,
                     "group_area": (parts == 1).float().mean().item(),
                     "unique_area": (parts == 2).float().mean().item(), "n_images": int(parts.shape[0])})
    return pd.DataFrame(rows)


def _outline(ax: Any, mask: torch.Tensor, colour: str) -> None:
    """The boundary of a bool mask ``[H, W]`` as a contour over a white halo."""
    from matplotlib import patheffects

    if not bool(mask.any()):
        return
    cs = ax.contour(mask.float().numpy(), levels=[0.5], colors=[colour], linewidths=1.4)
    cs.set(path_effects=[patheffects.Stroke(linewidth=2.8, foreground="white"), patheffects.Normal()])


def demo_class_gallery(split: str = "test", seed: int = 0, ncols: int = 5) -> Figure:
    """The first image of every class in ``split``, group part and unique part outlined in
    :data:`PART_COLOURS`, titled with the class name (group part, then unique part), one legend."""
    ds = demo.dataset(split, seed, progress=False)
    names = synthetic.class_names(ds.config)
    nrows = -(-len(names) // ncols)
    width = SHOWN_WIDTH_IN
    fig = Figure(figsize=(width, nrows * width / ncols * 1.32 + 0.35))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for c, name in enumerate(names):
        ax = axes.flat[c]
        i = int((ds.labels == c).nonzero()[0, 0])
        ax.imshow(ds.raw(i).permute(1, 2, 0).numpy(), interpolation="nearest")
        masks = ds.masks(i)
        _outline(ax, masks["shared"], PART_COLOURS["shared"])
        _outline(ax, masks["unique"], PART_COLOURS["unique"])
        ax.set_title(name.replace(" + ", "\n+ "), fontsize=MIN_FONT_PT)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    handles = [Line2D([], [], color=PART_COLOURS[k], linewidth=2, label=label)
               for k, label in (("shared", "group part"), ("unique", "unique part"))]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=MIN_FONT_PT + 1)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.09, wspace=0.08, hspace=0.42)
    return fig


# --------------------------------------------------------------------------- models


def feature_map_sizes(model: nn.Module, layers: Mapping[str, str],
                      x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """``{layer name: (h, w)}`` of each layer's output for the input ``x [1, 3, H, W]``, measured by one
    forward hook per layer during one forward pass (eval mode, no autograd).  The model is left as found:
    modes restored and hooks removed, also after an exception."""
    captures = {name: LayerCapture(model.get_submodule(name), name, grad_from_layer=False)
                for name in dict.fromkeys(layers.values())}
    with evaluation_mode(model), torch.no_grad():
        handles = []
        try:
            for cap in captures.values():
                handles.append(cap.module.register_forward_hook(cap))
            model(x)
        finally:
            for h in handles:
                h.remove()
    out = {}
    for name, cap in captures.items():
        if cap.activations is None:
            raise ValueError(f"layer {name!r} did not run in the forward pass")
        out[name] = (int(cap.activations.shape[-2]), int(cap.activations.shape[-1]))
    return out


def _layer_rows(layers: Mapping[str, str], sizes: Mapping[str, tuple[int, int]], **common: Any) -> list[dict]:
    roles = sorted(layers, key=lambda r: (LAYER_ORDER.index(r) if r in LAYER_ORDER else len(LAYER_ORDER), r))
    return [{**common, "role": r, "layer": layers[r], "map_h": sizes[layers[r]][0],
             "map_w": sizes[layers[r]][1]} for r in roles]


def demo_models(seed: int = 0, families: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (demo model, layer role): ``model`` (display name), ``family``, ``seed``,
    ``test_accuracy`` (``ck.demo.trained(family, seed).test_accuracy``, measured after training on the test
    split), ``n_test``, ``train_seconds`` (recorded with the checkpoint), ``role``, ``layer``, ``map_h``,
    ``map_w`` (its feature map for one test image).
    Loads the zoo from the cache (trains a missing member, minutes on a CPU)."""
    x = demo.dataset("test", progress=False)[0][0].unsqueeze(0)
    rows: list[dict] = []
    for family in families or demo.FAMILIES:
        t = demo.trained(family, seed, progress=False)
        sizes = feature_map_sizes(t.model, t.layers, x)
        rows += _layer_rows(t.layers, sizes, model=model_display(family), family=family, seed=seed,
                            test_accuracy=float(t.test_accuracy), n_test=demo.CONFIG.split_sizes["test"],
                            train_seconds=float(t.train_seconds))
    return pd.DataFrame(rows)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Top-1 accuracy of ``model`` on normalised ``x [N, 3, H, W]``, labels ``y [N]`` (batched, eval mode)."""
    correct = 0
    with evaluation_mode(model), torch.no_grad():
        for i in range(0, len(y), batch_size):
            correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / len(y)


def _image_key(imgs: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256((imgs * 255).round().to(torch.uint8).numpy().tobytes())
    h.update(labels.numpy().tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cifar10_models(names: Sequence[str] | None = None, cache_dir: str | Path | None = None,
                   batch_size: int = 500) -> pd.DataFrame:
    """One row per (reference network, layer role): ``model`` (display name), ``name``, ``accuracy``
    (top-1 measured now on ``ck.reference.images()``), ``accuracy_readme``, ``accuracy_published``,
    ``image_set``, ``n_images``, ``role``, ``layer``, ``map_h``, ``map_w``.

    ``cache_dir``: keep the measured accuracies in ``cache_dir / profile_facts_accuracy.json``, keyed by the
    checkpoint's sha256 and a hash of the images, and reuse them.  Missing files raise the loader's
    :class:`~casekit.subjects.data.MissingDataError`."""
    imgs = reference.images()
    x, y = imgs
    cache_path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
    cache: dict[str, float] = {}
    if cache_path is not None and cache_path.is_file():
        try:
            cache = {str(k): float(v) for k, v in json.loads(cache_path.read_text()).items()}
        except (ValueError, AttributeError, TypeError):
            cache = {}  # unreadable: measured again and rewritten
    image_key = _image_key(x, y) if cache_path is not None else ""
    rows: list[dict] = []
    for name in names or reference.NAMES:
        net, info = reference.model(name)
        xn = reference.normalize(x, info)
        key = f"{info['sha256'] or _file_sha256(Path(info['path']))}/{image_key}"
        if key not in cache:
            cache[key] = _accuracy(net, xn, y, batch_size)
        sizes = feature_map_sizes(net, info["layers"], xn[:1])
        rows += _layer_rows(info["layers"], sizes, model=info["display"], name=info["name"],
                            accuracy=cache[key], accuracy_readme=info["accuracy_readme"],
                            accuracy_published=info["accuracy_published"], image_set=imgs.info["set"],
                            image_description=imgs.info["description"], n_images=int(imgs.info["n"]))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Markdown


def _pct(x: Any, digits: int = 1) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * float(x):.{digits}f} %"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _layers_cell(group: pd.DataFrame) -> tuple[str, str]:
    layers = ", ".join(f"`{r.layer}` ({ROLE_NAMES.get(r.role, r.role)})" for r in group.itertuples())
    maps = ", ".join(dict.fromkeys(f"{r.map_h} × {r.map_w}" for r in group.itertuples()))
    return layers, maps


def classes_markdown(classes: pd.DataFrame, split: str = "test", gallery: str | None = GALLERY_PNG,
                     k: float = RunConfig.k) -> str:
    """The classes table (areas with one decimal, the unique part's with two), the gallery and the chance /
    ceiling sentence: a random top-``k`` set puts the mean unique area on the unique part, a perfect one at
    most ``area / k``."""
    size = demo.CONFIG.size
    n = classes["n_images"]
    per_class = f"{n.iloc[0]}" if n.nunique() == 1 else f"{n.min()}–{n.max()}"
    text = (f"Areas are the mean share of the {size} × {size} image over the {per_class} {split} images of "
            f"each class ({split} split, seed 0).\n\n")
    if gallery:
        text += (f"![The first {split} image of each of the ten classes, the group part outlined in blue and "
                 f"the unique part in vermilion]({gallery})\n\n")
    rows = [[str(r["class"]), r["name"], r["group_part"], r["unique_part"], _pct(r["group_area"]),
             _pct(r["unique_area"], 2)] for _, r in classes.iterrows()]
    text += _md_table(["class", "name", "group part (mask 1)", "unique part (mask 2)", "group part's area",
                       "unique part's area"], rows)
    area = classes["unique_area"]
    u = float(area.mean())
    text += (f"\nThe unique part covers {_pct(u, 2)} of an image on average "
             f"({_pct(area.min(), 2)} to {_pct(area.max(), 2)} by class), "
             f"less than the paper's top-{100 * k:g} % sets: a random top-{100 * k:g} % set puts about "
             f"{_pct(u)} of its pixels on it (chance), and even a perfect one at most "
             f"{_pct(min(1.0, u / k))} (ceiling, `area / k`). The quickstart and the chapters give both "
             "numbers beside every evidence share.\n")
    return text


def demo_models_markdown(models: pd.DataFrame) -> str:
    """Per demo model: test accuracy (one decimal), attribution layers by role, feature map size(s)."""
    rows = []
    for model, g in models.groupby("model", sort=False):
        layers, maps = _layers_cell(g)
        rows.append([model, _pct(g["test_accuracy"].iloc[0]), layers, maps])
    n = int(models["n_test"].iloc[0])
    seed = int(models["seed"].iloc[0])
    size = demo.CONFIG.size
    minutes = float(models.groupby("model")["train_seconds"].first().sum()) / 60
    return (f"Test accuracy of the seed-{seed} models on the {n:,} test images "
            "(`ck.demo.trained(family).test_accuracy`), and the size of the feature map each method explains "
            f"(upsampled to the {size} × {size} input):\n\n"
            + _md_table(["model", "test accuracy", "attribution layer (role)", "feature map"], rows)
            + f"\nTraining these {len(rows)} models took {minutes:.1f} minutes in all, as recorded with "
            "their checkpoints (on the machine that trained them).\n")


def cifar10_markdown(nets: pd.DataFrame) -> str:
    """Per network: accuracy measured now, the README's and the published one, layers and feature maps."""
    rows = []
    for model, g in nets.groupby("model", sort=False):
        layers, maps = _layers_cell(g)
        r = g.iloc[0]
        rows.append([model, _pct(r["accuracy"]), _pct(r["accuracy_readme"]), _pct(r["accuracy_published"]),
                     layers, maps])
    r = nets.iloc[0]
    first = nets.groupby("model", sort=False).first()
    gap = float((first["accuracy_published"] - first["accuracy"]).mean())
    note = ""
    if r["image_set"] == "jpeg2000":
        note = (f" The degradation is why this build's accuracies sit {100 * gap:.1f} points (mean over the "
                "networks) under the published ones.")
    return (f"Accuracy measured by this build on {r['image_description']}, beside the accuracy on the shared "
            "JPEG-degraded images recorded when they were put together (README) and the one each network's "
            f"publisher reports on the full CIFAR-10 test set.{note}\n\n"
            + _md_table(["network", "accuracy (this build)", "accuracy (README)", "accuracy (published)",
                         "attribution layer (role)", "feature map"], rows))


def profile_facts_pages(*, demo_built: bool = True, cifar10: str | Path | None = None,
                        cifar10_reason: str = "") -> dict[str, str | bytes]:
    """The profiles page's includes, name → Markdown (or PNG bytes): :data:`CLASSES_PAGE` with
    :data:`GALLERY_PNG`, :data:`DEMO_MODELS_PAGE` and :data:`CIFAR10_PAGE`.

    ``demo_built``: False → the demo models are not loaded (one sentence instead).  ``cifar10``: the folder
    that caches the networks' measured accuracies (keyed by content) or None when the profile is not built,
    then ``cifar10_reason`` says why in the one sentence shown; missing inputs give such a sentence too."""
    from ..subjects.data import MissingDataError

    pages: dict[str, str | bytes] = {}
    pages[CLASSES_PAGE] = classes_markdown(demo_classes("test"))
    pages[GALLERY_PNG] = book_png(demo_class_gallery("test"))
    pages[DEMO_MODELS_PAGE] = (demo_models_markdown(demo_models(0)) if demo_built else
                               "This build did not include the demo profile, so its models are not listed.\n")
    why = cifar10_reason or "the cifar10 profile was not built"
    if cifar10 is not None:
        try:
            pages[CIFAR10_PAGE] = cifar10_markdown(cifar10_models(cache_dir=cifar10))
        except MissingDataError:  # the message names machine paths: the page only says what is missing
            why = "the pretrained networks or the CIFAR-10 test images were not found on this machine"
    if CIFAR10_PAGE not in pages:
        pages[CIFAR10_PAGE] = f"This build shows no numbers of the CIFAR-10 networks: {why}.\n"
    return pages

