"""Every display name, order and colour of the report in one place, and the number formats of its tables.

- models: :data:`MODEL_NAMES` / :func:`model_display` (the paper's column headers), :data:`APPENDIX_ORDER`;
- methods: display names from :data:`casekit.cam.engine.DISPLAY_NAMES`, :data:`PAPER_METHOD_ORDER` (the
paper's
  rows: display names alphabetically), :data:`BASELINES`, :data:`METHOD_COLOURS`;
- layers: :data:`LAYER_ORDER`; figures: :data:`THRESHOLD_STYLE`, :func:`model_colours`;
- sorting a frame in these orders (:func:`sort_paper`, :func:`sort_layers`); numbers as the paper writes them
  (:func:`pct`, :func:`num`, :func:`ptext`).

Imports: :mod:`casekit.cam` and :mod:`casekit.evaluation` only.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import pandas as pd

from ..cam.engine import DISPLAY_NAMES, METHODS
from ..evaluation.stats import format_p

__all__ = [
    "DISPLAY_NAMES", "MODEL_NAMES", "PAPER_METHOD_ORDER", "BASELINES", "LAYER_ORDER", "APPENDIX_ORDER",
    "METHOD_COLOURS", "FAMILY_COLOURS", "MODEL_COLOURS", "THRESHOLD_STYLE", "model_display", "method_display",
    "model_colours",
    "sort_paper", "sort_layers", "pct", "num", "ptext",
]

#: Display names of the demo families and the paper's models (the paper's column headers).
MODEL_NAMES: dict[str, str] = {
    "resnet": "ResNet", "vgg": "VGG", "densenet": "DenseNet", "convnext": "ConvNeXt",
    "resnet50": "ResNet", "vgg19_bn": "VGG", "densenet201": "DenseNet", "convnext_large": "ConvNeXt",
    "densenet201-cifar100": "DenseNet (CIFAR-100)",
    # the cifar10 profile's pretrained networks (casekit.subjects.reference)
    "resnet20": "ResNet-20", "resnet56": "ResNet-56", "densenet40": "DenseNet-BC-40",
    "shufflenet": "ShuffleNetV2", "lenet": "LeNet",
}
#: The paper's row order: display names sorted alphabetically.
PAPER_METHOD_ORDER: tuple[str, ...] = tuple(sorted(METHODS, key=lambda m: DISPLAY_NAMES[m]))
#: The five baselines CASE is compared with.
BASELINES: tuple[str, ...] = tuple(m for m in METHODS if m != "case")
#: Layer roles in reading order: the paper's attribution layer (the final convolution) first.
LAYER_ORDER: tuple[str, ...] = ("final_conv", "norm5")
#: The paper's appendix order of the families (Figures 7–10), then anything else by display name.
APPENDIX_ORDER: tuple[str, ...] = ("VGG", "ResNet", "ConvNeXt", "DenseNet")
#: One colour per method, the same in every figure (seaborn's "colorblind" palette).
METHOD_COLOURS: dict[str, str] = {
    "gradcam": "#0173b2", "gradcam++": "#de8f05", "scorecam": "#029e73",
    "ablationcam": "#cc78bc", "layercam": "#56b4e9", "case": "#000000",  # Okabe–Ito, CASE in black
}
#: The threshold line of every agreement figure (the paper's red dashed 50 % line).
THRESHOLD_STYLE = {"color": "red", "linestyle": "--", "linewidth": 1.5}
#: Models that need their own colour: two networks of one family shown side by side (the cifar10 profile's
#: ResNet-20 in the family's blue, ResNet-56 in sky blue; ShuffleNet in brown).
MODEL_COLOURS: dict[str, str] = {"resnet56": "#56b4e9", "shufflenet": "#ca9161"}
# seaborn's "colorblind" palette (10 colours), reordered so that the first four are easy to tell apart
# (its orange and vermilion are too alike for four models side by side).
_MODEL_PALETTE: tuple[str, ...] = ("#0173b2", "#de8f05", "#029e73", "#cc78bc", "#fbafe4", "#ca9161",
                                   "#949494",
                                   "#ece133", "#56b4e9", "#d55e00")


def model_display(model: str) -> str:
    """``"densenet"`` → ``"DenseNet"``; unknown names are returned unchanged."""
    return MODEL_NAMES.get(model, model)


def method_display(method: str) -> str:
    """``"gradcam++"`` → ``"Grad-CAM++"``; unknown names are returned unchanged."""
    return DISPLAY_NAMES.get(method, method)


#: One fixed colour per model family, the same in every figure of the book (Okabe–Ito): a model whose name
#: starts with a family's name (``resnet50``, ``densenet201-cifar100``) gets its family's colour.
FAMILY_COLOURS: dict[str, str] = {"resnet": "#0173b2", "densenet": "#de8f05", "vgg": "#029e73",
                                  "convnext": "#cc78bc"}


def _family_colour(model: str) -> str | None:
    name = str(model).lower()
    return next((c for f, c in FAMILY_COLOURS.items() if name.startswith(f)), None)


def model_colours(models: Iterable[str]) -> dict[str, str]:
    """One colour per model: its own (:data:`MODEL_COLOURS`) or its family's (:data:`FAMILY_COLOURS`),
    whatever else is plotted; other models take the palette's remaining colours in the order of their
    display names."""
    order = sorted(dict.fromkeys(models), key=model_display)
    spare = [c for c in _MODEL_PALETTE if c not in FAMILY_COLOURS.values()]
    out, i = {}, 0
    for m in order:
        colour = MODEL_COLOURS.get(m) or _family_colour(m)
        if colour is None:
            colour, i = spare[i % len(spare)], i + 1
        out[m] = colour
    return out


def _method_rank(m: str) -> int:
    return PAPER_METHOD_ORDER.index(m) if m in PAPER_METHOD_ORDER else len(PAPER_METHOD_ORDER)


def _layer_rank(layer: str) -> int:
    return LAYER_ORDER.index(layer) if layer in LAYER_ORDER else len(LAYER_ORDER)


def sort_paper(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Sort by ``cols`` in the paper's orders: ``"model"`` by display name (then name), ``"method"`` in
    :data:`PAPER_METHOD_ORDER`, other columns by value (stable)."""
    keys = []
    tmp = df.copy()
    for c in cols:
        if c == "method":
            tmp["_m"] = tmp["method"].map(_method_rank)
            keys.append("_m")
        elif c == "model":
            tmp["_d"] = tmp["model"].map(model_display)
            keys += ["_d", "model"]
        else:
            keys.append(c)
    tmp = tmp.sort_values(keys, kind="mergesort")
    return tmp.drop(columns=[k for k in ("_m", "_d") if k in tmp]).reset_index(drop=True)


def sort_layers(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """:func:`sort_paper` with the layers in :data:`LAYER_ORDER` (final convolution before ``norm5``)."""
    tmp = df.assign(_l=df["layer"].map(_layer_rank))
    return sort_paper(tmp, [("_l" if c == "layer" else c) for c in cols]).drop(columns="_l")


def pct(x: Any) -> str:
    """A fraction as a percentage with one decimal (``0.1234`` → ``"12.3%"``); ``"NaN"`` for None/NaN."""
    return "NaN" if x is None or math.isnan(x) else f"{x:.1%}"


def num(x: Any, digits: int = 4) -> str:
    """A number as the paper writes it: ``0.1696`` → ``".1696"``; ``"–"`` for None/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    text = f"{x:.{digits}f}"
    return text.replace("0.", ".", 1) if text.startswith("0.") else text.replace("-0.", "-.", 1)


def ptext(p: float) -> str:
    """``"p < .0001"`` or ``"p = .0123"`` (:func:`casekit.evaluation.stats.format_p`)."""
    s = format_p(p)
    return f"p {s}" if s.startswith("<") else f"p = {s}"
