"""casekit.figures: what is drawn is the data (bar heights, lines, masked pixels), and every figure renders."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from casekit import figures as F
from casekit import tables as T
from casekit.metrics import topk_mask

from test_tables import drops, low_for_case, make_maps


def png_size(fig: Figure) -> int:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return len(buf.getvalue())


@pytest.fixture(scope="module")
def maps():
    return make_maps(low_for_case, drops)


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_agreement_histograms_draw_the_counts_and_the_threshold(maps):
    fig = F.agreement_histograms(maps, model="vgg")
    axes = visible_axes(fig)
    assert len(axes) == 6
    hist = T.agreement_histogram(maps, model="vgg")
    for ax, method in zip(axes, T.PAPER_METHOD_ORDER):
        heights = [p.get_height() for p in ax.patches]
        assert heights == hist[hist.method == method]["count"].tolist()
        assert [p.get_width() for p in ax.patches] == pytest.approx([5.0] * 20)  # 5 % bins
        (line,) = [l for l in ax.lines if l.get_linestyle() == "--"]
        assert line.get_color() == "red" and line.get_xdata()[0] == 50
        assert "1 constant" in ax.get_title()
    assert png_size(fig) > 1000
    with pytest.raises(ValueError, match="no rows for method"):
        F.agreement_histograms(maps[maps.method != "case"], model="vgg", methods=["case"])


def test_active_channel_kde_one_curve_per_group_and_constant_groups():
    cm = pd.DataFrame({"Model": ["A"] * 5 + ["B"] * 5, "mean_active_channels": [1, 2, 3, 2, 2.5, 7, 7, 7, 7, 7],
                       "fraction_active": np.linspace(0.1, 1, 10), "tau": 1e-3})
    fig = F.active_channel_kde(cm, hue="Model")
    ax = fig.axes[0]
    fills = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(fills) == 1  # group A has spread: a filled KDE; group B is constant
    vlines = [l for l in ax.lines if len(l.get_xdata()) == 2 and l.get_xdata()[0] == l.get_xdata()[1] == 7]
    assert len(vlines) == 1
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["A (5 classes)", "B (5 classes) (no spread)"]
    assert "τ = 0.001" in ax.get_title()
    with pytest.raises(ValueError, match="hue 'layer'"):
        F.active_channel_kde(cm, hue="layer")


def test_seed_bars_heights_are_mean_agreement():
    frames = pd.concat([make_maps(low_for_case, seed=s) for s in (0, 1)], ignore_index=True)
    sa = T.seed_agreement(frames, n_boot=20)
    fig = F.seed_robustness_bars(sa)
    ax = fig.axes[0]
    assert len(ax.patches) == 12
    expect = [100 * sa[(sa.seed == s) & (sa.method == m)]["mean"].iloc[0] for s in (0, 1) for m in T.PAPER_METHOD_ORDER]
    assert [p.get_height() for p in ax.patches] == pytest.approx(expect)
    assert png_size(fig) > 1000


def test_deletion_curve_plot_lines_are_the_means(maps):
    curves = T.deletion_curves(maps)
    fig = F.deletion_curve_plot(curves)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["ConvNeXt", "DenseNet", "ResNet", "VGG"]
    ax = axes[3]
    assert len(ax.lines) == 6
    case = curves[(curves.model == "vgg") & (curves.method == "case")].sort_values("k")
    line = ax.lines[T.PAPER_METHOD_ORDER.index("case")]
    assert line.get_label() == "CASE"
    np.testing.assert_allclose(line.get_ydata(), case["mean_relative_drop"])
    np.testing.assert_allclose(line.get_xdata(), case["k"] * 100)


def test_map_grids_show_the_topk_pixels():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 10, 10, generator=g)
    maps = {"gradcam": torch.rand(2, 2, 10, 10, generator=g), "case": torch.rand(2, 2, 10, 10, generator=g)}
    maps["case"][1, 1] = 0.0  # a constant map: no top-k set
    fig = F.masked_topk_grid(images, maps, k=0.1, target_names=[["cat", "dog"], ["a", "b"]])
    axes = np.array(fig.axes).reshape(2, 5)
    shown = axes[0, 2].get_images()[0].get_array()  # image 0, Grad-CAM, second target
    keep, _ = topk_mask(maps["gradcam"][0], 0.1)
    img = images[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(shown, img * keep[1].numpy()[..., None] + img * (~keep[1].numpy()[..., None]) * 0.15,
                               rtol=1e-6)
    assert "dog" in axes[0, 2].get_title() and "Grad-CAM" in axes[0, 1].get_title() and "agr." in axes[0, 1].get_title()
    assert "no top-k set" in axes[1, 4].get_title()
    assert png_size(fig) > 1000

    fig1 = F.saliency_grid(images, {"gradcam": maps["gradcam"]})
    axes1 = np.array(fig1.axes).reshape(2, 3)
    overlay = axes1[1, 2].get_images()[1].get_array()
    np.testing.assert_allclose(overlay, maps["gradcam"][1, 1].numpy())
    with pytest.raises(ValueError, match="must be \\[B=2"):
        F.saliency_grid(images, {"gradcam": maps["gradcam"][:1]})
