"""casekit.report.figures: what is drawn is the data (bars, lines, masked pixels); every figure renders."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from test_tables import drops, low_for_case, make_maps

from casekit.evaluation.metrics import topk_mask
from casekit.report import analyses as A
from casekit.report import evidence as EV
from casekit.report import figures as F
from casekit.report import naming as N
from casekit.report import tables as T


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
    hist = A.agreement_histogram(maps, model="vgg")
    for ax, method in zip(axes, N.PAPER_METHOD_ORDER):
        heights = [p.get_height() for p in ax.patches]
        assert heights == hist[hist.method == method]["count"].tolist()
        assert [p.get_width() for p in ax.patches] == pytest.approx([5.0] * 20)  # 5 % bins
        (line,) = [lyr for lyr in ax.lines if lyr.get_linestyle() == "--"]
        assert line.get_color() == "red" and line.get_xdata()[0] == 50
        assert "1 constant" in ax.get_title()
    assert png_size(fig) > 1000
    with pytest.raises(ValueError, match="no rows for method"):
        F.agreement_histograms(maps[maps.method != "case"], model="vgg", methods=["case"])


def test_active_channel_kde_one_curve_per_group_and_constant_groups():
    cm = pd.DataFrame({"Model": ["A"] * 5 + ["B"] * 5,
                       "mean_active_channels": [1, 2, 3, 2, 2.5, 7, 7, 7, 7, 7],
                       "fraction_active": np.linspace(0.1, 1, 10), "tau": 1e-3})
    fig = F.active_channel_kde(cm, hue="Model")
    ax = fig.axes[0]
    fills = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(fills) == 1  # group A has spread: a filled KDE; group B is constant
    vlines = [lyr for lyr in ax.lines if len(lyr.get_xdata()) == 2
              and lyr.get_xdata()[0] == lyr.get_xdata()[1] == 7]
    assert len(vlines) == 1
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["A (5 classes)", "B (5 classes) (no spread)"]
    assert "τ = 0.001" in ax.get_title()
    with pytest.raises(ValueError, match="hue 'layer'"):
        F.active_channel_kde(cm, hue="layer")


def test_seed_bars_heights_are_mean_agreement():
    frames = pd.concat([make_maps(low_for_case, seed=s) for s in (0, 1)], ignore_index=True)
    sa = A.seed_agreement(frames, n_boot=20)
    fig = F.seed_robustness_bars(sa, statistic="mean")
    ax = fig.axes[0]
    assert len(ax.patches) == 12
    expect = [100 * sa[(sa.seed == s) & (sa.method == m)]["mean"].iloc[0] for s in (0, 1)
              for m in N.PAPER_METHOD_ORDER]
    assert [p.get_height() for p in ax.patches] == pytest.approx(expect)
    assert png_size(fig) > 1000


def test_seed_bars_default_to_the_tested_median():
    frames = pd.concat([make_maps(low_for_case, seed=s) for s in (0, 1)], ignore_index=True)
    sa = A.seed_agreement(frames, n_boot=20)
    ax = F.seed_robustness_bars(sa).axes[0]
    expect = [100 * sa[(sa.seed == s) & (sa.method == m)]["median"].iloc[0] for s in (0, 1)
              for m in N.PAPER_METHOD_ORDER]
    assert not np.allclose(expect, [100 * v for v in sa["mean"]])  # the two statistics differ here
    assert [p.get_height() for p in ax.patches] == pytest.approx(expect)
    assert ax.get_ylabel() == "median top-k agreement (%)"
    with pytest.raises(ValueError, match="statistic"):
        F.seed_robustness_bars(sa, statistic="max")


def test_book_png_fits_the_column_and_raises_small_text():
    from matplotlib.figure import Figure

    from casekit.report.figures import base

    fig = Figure(figsize=(14, 3))
    ax = fig.subplots()
    ax.set_title("tiny", fontsize=6)
    ax.set_xlabel("big", fontsize=12)
    png = base.book_png(fig)
    assert tuple(fig.get_size_inches()) == pytest.approx((7.5, 3 * 7.5 / 14))
    assert ax.title.get_fontsize() == 9 and ax.xaxis.label.get_fontsize() == 12
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_deletion_curve_plot_lines_are_the_means(maps):
    curves = A.deletion_curves(maps)
    fig = F.deletion_curve_plot(curves)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["ConvNeXt", "DenseNet", "ResNet", "VGG"]
    ax = axes[3]
    assert len(ax.lines) == 6
    case = curves[(curves.model == "vgg") & (curves.method == "case")].sort_values("k")
    line = ax.lines[N.PAPER_METHOD_ORDER.index("case")]
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
    np.testing.assert_allclose(shown,
                               img * keep[1].numpy()[..., None] + img * (~keep[1].numpy()[..., None]) * 0.15,
                               rtol=1e-6)
    assert "dog" in axes[0, 2].get_title()
    assert "Grad-CAM" in axes[0, 1].get_title() and "agr." in axes[0, 1].get_title()
    assert "no top-k set" in axes[1, 4].get_title()
    assert png_size(fig) > 1000

    fig1 = F.saliency_grid(images, {"gradcam": maps["gradcam"]})
    axes1 = np.array(fig1.axes[:6]).reshape(2, 3)
    assert len(fig1.axes) == 7 and fig1.axes[6].get_ylabel() == "map value"  # one colour bar for every map
    overlay = axes1[1, 2].get_images()[1].get_array()
    np.testing.assert_allclose(overlay, maps["gradcam"][1, 1].numpy())
    with pytest.raises(ValueError, match="must be \\[B=2"):
        F.saliency_grid(images, {"gradcam": maps["gradcam"][:1]})


# =============================================================================================== notebooks
# 04–07
# active_channel_kdes, sparsity_sensitivity_plot, layer_comparison_plot, fidelity_difference_plot,
# appendix_histograms.  Additive block.

from test_tables import _sparsity_for, _two_layers  # noqa: E402


def _points(ax):
    """The data markers of an axis (not error-bar caps, KDE curves or reference lines)."""
    return [lyr for lyr in ax.lines if lyr.get_marker() in ("o", "s", "D")]


def test_active_channel_kdes_counts_left_fractions_right():
    cm = pd.DataFrame({"Model": ["A"] * 4 + ["B"] * 4, "mean_active_channels": [2, 3, 4, 3.5, 20, 22, 25, 21],
                       "n_channels": [10] * 4 + [64] * 4, "tau": 1e-3})
    cm["fraction_active"] = cm["mean_active_channels"] / cm["n_channels"]
    fig = F.active_channel_kdes(cm)
    left, right = fig.axes
    rugs = lambda ax: [lyr for lyr in ax.lines if lyr.get_marker() == "|"]  # noqa: E731
    np.testing.assert_allclose(rugs(left)[1].get_xdata(), [20, 22, 25, 21])
    np.testing.assert_allclose(rugs(right)[0].get_xdata(), [0.2, 0.3, 0.4, 0.35])
    assert right.get_xlim() == (0,
                                1) and "fraction" in right.get_xlabel() and "τ = 0.001" in fig.get_suptitle()
    assert png_size(fig) > 1000


def test_sparsity_sensitivity_plot_points_are_the_table():
    ss = A.sparsity_sensitivity(make_maps(low_for_case), _sparsity_for(["vgg", "densenet", "resnet"],
                                count=lambda m, i: {"vgg": 40, "densenet": 5, "resnet": 20}[m] + i % 3),
                                n_boot=50)
    fig = F.sparsity_sensitivity_plot(ss)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == [N.DISPLAY_NAMES[m] for m in N.PAPER_METHOD_ORDER]
    ax = axes[N.PAPER_METHOD_ORDER.index("gradcam")]
    got = sorted((p.get_xdata()[0], p.get_ydata()[0],
                  p.get_markerfacecolor() != "white") for p in _points(ax))
    g = ss[ss.method == "gradcam"]
    want = sorted(zip(g["median_fraction"] * 100, g["median"] * 100, g["reject"]))
    np.testing.assert_allclose([(a, b) for a, b, _ in got], [(a, b) for a, b, _ in want])
    assert [c for *_, c in got] == [bool(c) for *_, c in want]  # filled where H0 is rejected
    assert any(lyr.get_linestyle() == "--" and lyr.get_ydata()[0] == 50 for lyr in ax.lines)
    counts = F.sparsity_sensitivity_plot(ss, fraction=False)
    xs = sorted(p.get_xdata()[0] for p in _points(visible_axes(counts)[0]))
    assert xs == pytest.approx(sorted(ss[ss.method == "ablationcam"]["median_active"]))
    with pytest.raises(ValueError, match="sparsity_sensitivity"):
        F.sparsity_sensitivity_plot(ss.drop(columns="median_fraction"))


def test_layer_comparison_plot_medians_per_layer():
    full = T.table2_full(_two_layers(), n_boot=50)
    cm = A.class_active_channels(pd.concat([_sparsity_for(["densenet"], width=12),
                                            _sparsity_for(["densenet"], width=66, layer="norm5")]))
    fig = F.layer_comparison_plot(full, cm)
    left, right = fig.axes
    conv = [p for p in _points(left) if p.get_marker() == "o"]
    norm5 = [p for p in _points(left) if p.get_marker() == "s"]
    assert len(conv) == 1 and len(norm5) == 1  # all rejected at the conv, none at norm5: one series each
    want = full[full.layer == "norm5"].set_index("method").reindex(list(N.PAPER_METHOD_ORDER))["median"] * 100
    np.testing.assert_allclose(norm5[0].get_xdata(), want)
    assert norm5[0].get_markerfacecolor() == "white"
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert legend == ["final_conv (H0 rejected)", "norm5 (not rejected)"]
    assert len(right.collections) >= 2 and png_size(fig) > 1000  # two KDEs of the fractions
    assert len(F.layer_comparison_plot(full).axes) == 1


def test_fidelity_difference_plot_shows_the_paired_means(maps):
    d = A.fidelity_differences(maps)
    fig = F.fidelity_difference_plot(d)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["ConvNeXt", "DenseNet", "ResNet", "VGG"]
    vgg = d[d.model == "vgg"].set_index("method")
    baselines = [m for m in N.PAPER_METHOD_ORDER if m != "case"]
    pts = _points(axes[3])
    np.testing.assert_allclose([p.get_xdata()[0] for p in pts], vgg.loc[baselines, "mean_diff"])
    hollow = [p.get_markerfacecolor() == "white" for p in pts]
    assert hollow == [bool(p >= 0.05) for p in vgg.loc[baselines, "p_two_sided"]]
    assert "top 5% blanked" in fig.get_suptitle() and png_size(fig) > 1000


def test_appendix_histograms_in_the_papers_order():
    figs = F.appendix_histograms(_two_layers())
    titles = [f.get_suptitle() for f in figs]
    assert [t.split(" · ")[0] + " " + t.split(" · ")[1].split(" ")[0] for t in titles] == [
        "VGG final_conv", "ResNet final_conv", "ConvNeXt final_conv", "DenseNet final_conv", "DenseNet norm5"]
    assert "(densenet.norm5)" in titles[-1]
    heights = [p.get_height() for p in visible_axes(figs[-1])[1].patches]  # DenseNet norm5, CASE
    assert heights == A.agreement_histogram(_two_layers(), model="densenet", layer="norm5",
                                            method="case")["count"].tolist()
    assert len(F.appendix_histograms(_two_layers(), models=["vgg"], methods=["case", "gradcam"])) == 1
    with pytest.raises(ValueError, match="no agreement rows"):
        F.appendix_histograms(_two_layers(), seed=3)


def test_returned_figures_display_as_png_in_ipython():
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.clear_instance()
    assert F.show_figures_inline() is False  # no shell: nothing to register
    shell = InteractiveShell.instance()
    try:
        assert F.show_figures_inline() is True
        fig = Figure(figsize=(2, 1))
        fig.subplots().plot([0, 1], [1, 0])
        data, _ = shell.display_formatter.format(fig)
        assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        InteractiveShell.clear_instance()


# =============================================================================================== notebooks
# 01–03
# case_projection, contrast_effect, evidence_bars.  Additive block.

from types import SimpleNamespace  # noqa: E402

from test_tables import _evidence_maps, _set_evidence, make_contrast_rows  # noqa: E402


def projection_example(masks=True):
    """A case_example-like dict: 1 image, 2 targets, 5 channels, 10×10 maps, unique part = row 0."""
    w_u = torch.tensor([[[0.5, -2.0, 0.1, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]]])
    w_bar = torch.tensor([[[0.2, -1.0, 0.0, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5, 0.5]]])
    w_perp = torch.tensor([[[0.3, -1.0, 0.1, 0.7, -3.0], [0.0, 0.0, 0.0, 0.0, 0.0]]])
    flat = torch.arange(100, 0, -1, dtype=torch.float32)  # top 5 % = positions 0..4, on the unique part
    case = torch.zeros(1, 2, 100)
    case[0, 0, 8:13] = torch.tensor([5.0, 4, 3, 2, 1])  # 2 of its 5 top pixels on row 0
    vectors = SimpleNamespace(
        targets=torch.tensor([[3, 2]]), w_target=w_u, w_mean=w_bar, w_perp=w_perp,
        cosine=torch.tensor([[0.5, 1.0]]), kept=torch.tensor([[0.75, 0.0]]),
        gradcam=flat.expand(1, 2, 100).reshape(1, 2, 10, 10), contrast_gradcam=torch.zeros(1, 2, 10, 10),
        case=case.reshape(1, 2, 10, 10))
    unique = torch.zeros(1, 10, 10, dtype=torch.bool)
    unique[0, 0] = True
    shared = torch.zeros(1, 10, 10, dtype=torch.bool)
    shared[0, 5:] = True
    return {"vectors": vectors,
            "images": torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(0)),
            "image_ids": [42], "targets": ("top1", "top2"), "layer": "layer4.0.conv2",
            "target_names": [["top1: cat", "top2: dog"]], "contrast_names": [[["a", "b"], ["c"]]],
            "masks": {"unique": unique, "shared": shared} if masks else None}


def test_case_projection_bars_are_the_weights():
    ex = projection_example()
    fig = F.case_projection(ex, top=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 5  # the weights, then image + three maps
    bars = fig.axes[0]
    # channels by max(|w_u|, |w⊥|): 4 (3.0), 1 (2.0), 3 (1.0), then 0 (0.5), 2 (0.1)
    assert [t.get_text() for t in bars.get_xticklabels()] == ["4", "1", "3"]
    heights = [p.get_height() for p in bars.patches]
    assert heights == pytest.approx([0.0, -2.0, 1.0,  0.4, -1.0, 0.3,  -3.0, -1.0, 0.7])  # w_u, w̄, w⊥
    assert "the 3 largest of 5" in bars.get_xlabel() and "layer4.0.conv2" in bars.get_xlabel()
    title = bars.get_title()
    assert "top1: cat" in title and "contrast: a, b" in title and "cos(w_u, w̄) = 0.50" in title
    assert "‖w⊥‖/‖w_u‖ = 0.75" in title
    heads = [ax.get_title() for ax in fig.axes[1:]]
    assert heads[0].startswith("image\n") and "unique part" in heads[0]
    assert heads[1] == "Grad-CAM map (w_u)\ntop 5% on unique part: 100%"
    assert heads[2] == "shared direction (w̄)\nconstant map"
    assert heads[3] == "CASE map (w⊥)\ntop 5% on unique part: 40%"
    overlay = fig.axes[4].get_images()[1].get_array()
    np.testing.assert_allclose(overlay, ex["vectors"].case[0, 0].numpy())
    assert fig.get_suptitle() == "CASE removes the direction shared with the contrast classes"
    assert png_size(fig) > 1000


def test_case_projection_options_and_errors():
    ex = projection_example(masks=False)
    fig = F.case_projection(ex, target=1, top=50, title="K = 1")
    # top capped
    assert len(fig.axes[0].patches) == 3 * 5 and "the 5 largest of 5" in fig.axes[0].get_xlabel()
    assert "top2: dog" in fig.axes[0].get_title() and "contrast: c" in fig.axes[0].get_title()
    assert [ax.get_title() for ax in fig.axes[1:]] == ["image", "Grad-CAM map (w_u)", "shared direction (w̄)",
                                                       "CASE map (w⊥)"]  # no masks: no evidence
    assert fig.get_suptitle() == "K = 1"
    for kwargs in ({"index": 1}, {"target": 2}, {"index": -1}):
        with pytest.raises(ValueError, match="index must be in 0..0 and target in 0..1"):
            F.case_projection(ex, **kwargs)
    for top in (0, 2.5):
        with pytest.raises(ValueError, match="top must be a positive int"):
            F.case_projection(ex, top=top)


CONTRAST_SETTINGS = [("confusion", 1), ("confusion", 3), ("logits", 1), ("logits", 3)]
CONTRAST_CENTRES = {("resnet", "confusion"): 0.2, ("resnet", "logits"): 0.3, ("vgg", "confusion"): 0.4,
                    ("vgg", "logits"): 0.6}


def _contrast_summary(evidence=True):
    rows = make_contrast_rows(lambda m, s, K: CONTRAST_CENTRES.get((m, s), 0.5) + 0.02 * K, CONTRAST_SETTINGS,
                              nan_at=4)
    return EV.contrast_table(_set_evidence(rows) if evidence else rows, n_boot=50)


def test_contrast_effect_lines_are_the_medians():
    summary = _contrast_summary()
    fig = F.contrast_effect(summary, title="K")
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and fig.get_suptitle() == "K"
    left, right = fig.axes
    lines = _points(left)
    assert len(lines) == 4  # 2 models × 2 strategies
    for line in lines:
        style = line.get_linestyle()
        strategy = {"-": "confusion", "--": "logits"}[style]
        shift = -0.04 if strategy == "confusion" else 0.04
        g = [g for _, g in summary[summary.contrast_strategy == strategy].groupby("model")
             if np.allclose(g.sort_values("contrast_k")["median"] * 100, line.get_ydata())]
        assert len(g) == 1  # the line is one model's medians for this strategy
        np.testing.assert_allclose(line.get_xdata(), g[0].sort_values("contrast_k")["contrast_k"] + shift)
    colours = {(lyr.get_linestyle(), tuple(lyr.get_ydata())): lyr.get_color() for lyr in lines}
    assert len(set(map(str, colours.values()))) == 2  # one colour per model
    (thr,) = [lyr for lyr in left.lines if lyr.get_color() == "red"]
    assert thr.get_linestyle() == "--" and thr.get_ydata()[0] == 50
    assert [t.get_text() for t in left.get_xticklabels()] == ["1", "3"]
    right_lines = _points(right)
    assert len(right_lines) == 4
    np.testing.assert_allclose(sorted(v for lyr in right_lines for v in lyr.get_ydata()),
                               sorted(summary["unique_top1"] * 100))
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "ResNet", "VGG", "confusion matrix contrast", "image's top logits contrast"]
    assert png_size(fig) > 1000


def test_contrast_effect_without_masks_and_errors():
    summary = _contrast_summary(evidence=False)
    fig = F.contrast_effect(summary, threshold=0.7)
    assert len(fig.axes) == 1 and len(_points(fig.axes[0])) == 4
    assert [lyr for lyr in fig.axes[0].lines
            if lyr.get_color() == "red"][0].get_ydata()[0] == pytest.approx(70)
    one = F.contrast_effect(summary[summary.contrast_strategy == "logits"])
    lines = _points(one.axes[0])
    assert len(lines) == 2 and all(lyr.get_linestyle() == "--" for lyr in lines)
    np.testing.assert_allclose(lines[0].get_xdata(), [1, 3])  # a single strategy is not shifted
    with pytest.raises(ValueError, match="summary lacks column"):
        F.contrast_effect(summary.drop(columns="ci_low"))
    with pytest.raises(ValueError, match="no CASE rows for comparison 'true_vs_sibling'"):
        F.contrast_effect(summary, comparison="true_vs_sibling")


def test_evidence_bars_heights_are_the_shares():
    areas = pd.DataFrame({"image_id": np.arange(30), "unique_area": np.arange(30) / 300})
    ev = EV.evidence_comparison(_evidence_maps(), areas=areas)
    fig = F.evidence_bars(ev)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["ConvNeXt", "DenseNet", "ResNet", "VGG"]
    vgg = ev[(ev.model == "vgg")
             & (ev.comparison == "top1_vs_top2")].set_index("method").loc[list(N.PAPER_METHOD_ORDER)]
    heights = [p.get_height() for p in axes[3].patches]
    assert len(heights) == 12
    np.testing.assert_allclose(heights[:6], vgg["unique_top1"] * 100)
    np.testing.assert_allclose(heights[6:], vgg["unique_other"] * 100)
    ticks = [t.get_text() for t in axes[3].get_xticklabels()]
    assert ticks == [N.DISPLAY_NAMES[m] for m in N.PAPER_METHOD_ORDER]
    refs = {lyr.get_linestyle(): lyr.get_ydata()[0] for lyr in axes[3].lines}
    assert refs[":"] == pytest.approx(vgg["unique_chance"].mean() * 100)
    assert refs["-."] == pytest.approx(vgg["unique_ceiling"].mean() * 100)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "top-1 (true class) map", "top-2 map", "chance (random top-k set)", "ceiling (unique part ⊂ top-k)"]
    assert "top1 vs top2" in fig.get_suptitle() and png_size(fig) > 1000

    sib = F.evidence_bars(ev, comparison="true_vs_sibling", ncols=3, title="siblings")
    assert len(sib.axes) == 6 and len(visible_axes(sib)) == 4  # a 2 × 3 grid, two panels hidden
    assert sib.legends[0].get_texts()[1].get_text() == "sibling map" and sib.get_suptitle() == "siblings"
    s = ev[(ev.model == "convnext")
           & (ev.comparison == "true_vs_sibling")].set_index("method").loc[list(N.PAPER_METHOD_ORDER)]
    np.testing.assert_allclose([p.get_height() for p in visible_axes(sib)[0].patches][6:],
                               s["unique_other"] * 100)


def test_evidence_bars_without_references_empty_and_errors():
    ev = EV.evidence_comparison(_evidence_maps(), comparison="top1_vs_top2")
    fig = F.evidence_bars(ev)
    assert all(len(ax.lines) == 0 for ax in visible_axes(fig))  # no chance / ceiling lines without areas
    assert len(fig.legends[0].get_texts()) == 2
    empty = F.evidence_bars(EV.evidence_comparison(make_maps(low_for_case)))
    (ax,) = empty.axes
    assert "no ground truth" in ax.texts[0].get_text() and not ax.axison
    with pytest.raises(ValueError, match=r"evidence lacks column\(s\) \['unique_other'\]"):
        F.evidence_bars(ev.drop(columns="unique_other"))
    with pytest.raises(ValueError, match="no evidence rows for comparison 'true_vs_sibling'"):
        F.evidence_bars(ev, comparison="true_vs_sibling")


def test_active_channel_kde_draws_each_model_in_its_book_colour():
    from matplotlib.colors import to_hex

    from casekit.report.naming import model_colours

    cm = pd.DataFrame({"model": ["vgg"] * 3 + ["convnext"] * 3, "Model": ["VGG"] * 3 + ["ConvNeXt"] * 3,
                       "mean_active_channels": [1, 2, 3, 4, 6, 5],
                       "fraction_active": np.linspace(0.1, 0.6, 6)})
    ax = F.active_channel_kde(cm, hue="Model").axes[0]
    rugs = [lyr for lyr in ax.lines if lyr.get_marker() == "|"]
    want = model_colours(["convnext", "vgg"])
    assert [to_hex(r.get_color()) for r in rugs] == [want["convnext"], want["vgg"]]  # sorted: ConvNeXt, VGG
