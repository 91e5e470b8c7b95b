"""The explorers, driven from Python: set a control's value, check the view against a direct computation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import casekit as ck
from casekit.evaluation.stats import class_sensitivity_test, format_p
from casekit.report.widgets import LIVE_NOTE, AgreementExplorer, SaliencyExplorer

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
C, H = 6, 16


class TinyNet(nn.Module):
    """conv(3→8) → ReLU → conv(8→8) (the explained layer, 8×8) → ReLU → pool → linear(8→C)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class TinyData(torch.utils.data.Dataset):
    """Items ``(image, label, {"unique": mask, "shared": mask})`` like the demo benchmark, plus ``raw``."""

    def __init__(self, n: int = 5, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, H, H, generator=g)
        self.labels = torch.randint(0, C, (n,), generator=g)
        self.unique = torch.zeros(n, H, H, dtype=torch.bool)
        self.unique[:, 2:6, 3:9] = True
        self.class_names = [f"class-{c}" for c in range(C)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]), {"unique": self.unique[i], "shared": ~self.unique[i]}

    def raw(self, i: int) -> torch.Tensor:
        return torch.sigmoid(self.images[i])


LAYERS = {"final_conv": "features.2", "first_conv": "features.0"}


@pytest.fixture(scope="module")
def setup():
    model = TinyNet().eval()
    data = TinyData()
    confusion = torch.arange(C * C).reshape(C, C) % 7  # any fixed counts
    sets = ck.contrast_sets(confusion, 4)
    return model, data, sets


def direct_maps(model, data, i, layer, method, targets, contrast=None):
    x = data[i][0][None]
    con = None if contrast is None else contrast[None]
    return ck.saliency(model, x, layer, method, torch.tensor([targets]), con)[0]


def top2(model, data, i):
    with torch.no_grad():
        order = model(data[i][0][None])[0].argsort(descending=True)
    return int(order[0]), int(order[1])


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-7)


# --------------------------------------------------------------------------- SaliencyExplorer


def test_initial_view_is_top1_vs_top2_case(setup):
    model, data, sets = setup
    e = SaliencyExplorer(model, data, LAYERS, sets, K=2, k=0.1)
    a, b = top2(model, data, 0)
    assert e.targets == (a, b)
    assert e.method.value == "case" and e.error is None
    assert torch.equal(e.contrast, sets[[a, b], :2])
    expected = direct_maps(model, data, 0, "features.2", "case", [a, b], sets[[a, b], :2])
    torch.testing.assert_close(e.maps, expected)
    agreement = float(ck.metrics.topk_agreement(expected[0], expected[1], 0.1))
    assert same_float(e.agreement, agreement)
    # the masks shown are the top-k sets the agreement counts: n = ⌊0.1·16·16⌋ = 25 pixels each
    assert e.masks.shape == (2, H, H) and e.masks.dtype == torch.bool
    if not math.isnan(agreement):
        assert e.masks.sum(dim=(1, 2)).tolist() == [25, 25]
        assert float((e.masks[0] & e.masks[1]).sum()) / 25 == pytest.approx(e.agreement)
    assert e.figure.value[:8] == b"\x89PNG\r\n\x1a\n"
    text = "undefined" if math.isnan(agreement) else f"{agreement:.1%}"
    assert text in e.summary.value


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam", "layercam", "gradcam++"])
def test_changing_the_method_recomputes(setup, method):
    model, data, sets = setup
    e = SaliencyExplorer(model, data, "features.2", sets, image=2)
    before = e.figure.value
    e.method.value = method
    a, b = top2(model, data, 2)
    expected = direct_maps(model, data, 2, "features.2", method, [a, b])
    torch.testing.assert_close(e.maps, expected)
    assert e.contrast is None and e.K.disabled and e.strategy.disabled
    assert same_float(e.agreement, float(ck.metrics.topk_agreement(expected[0], expected[1], 0.05)))
    assert e.figure.value != before
    assert ck.DISPLAY_NAMES[method] in e.summary.value


def test_image_k_target_and_layer_controls(setup):
    model, data, sets = setup
    e = SaliencyExplorer(model, data, LAYERS, sets, method="gradcam")
    e.image.value = 3
    a, b = top2(model, data, 3)
    assert e.targets == (a, b)
    e.k.value = 0.2
    expected = direct_maps(model, data, 3, "features.2", "gradcam", [a, b])
    assert same_float(e.agreement, float(ck.metrics.topk_agreement(expected[0], expected[1], 0.2)))
    # map B: a class chosen by name instead of a rank
    other = next(c for c in range(C) if c not in (a, b))
    e.target_b.value = ("class", other)
    assert e.targets == (a, other)
    torch.testing.assert_close(e.maps, direct_maps(model, data, 3, "features.2", "gradcam", [a, other]))
    # rank 3 for map A
    with torch.no_grad():
        third = int(model(data[3][0][None])[0].argsort(descending=True)[2])
    e.target_a.value = ("rank", 3)
    assert e.targets == (third, other)
    e.layer.value = "features.0"
    torch.testing.assert_close(e.maps, direct_maps(model, data, 3, "features.0", "gradcam", [third, other]))


def test_case_contrast_strategies_and_K(setup):
    model, data, sets = setup
    e = SaliencyExplorer(model, data, "features.2", sets, image=1, K=1)
    a, b = top2(model, data, 1)
    assert not e.K.disabled
    e.K.value = 3
    assert torch.equal(e.contrast, sets[[a, b], :3])
    torch.testing.assert_close(e.maps,
                               direct_maps(model, data, 1, "features.2", "case", [a, b], sets[[a, b], :3]))
    e.strategy.value = "logits"
    with torch.no_grad():
        order = model(data[1][0][None])[0].argsort(descending=True)
    expected_con = torch.stack([order[order != t][:3] for t in (a, b)])
    assert torch.equal(e.contrast, expected_con)
    assert e.contrast[0, 0] == b and e.contrast[1, 0] == a  # the other top class leads each set
    torch.testing.assert_close(e.maps,
                               direct_maps(model, data, 1, "features.2", "case", [a, b], expected_con))


def test_unique_evidence_row_when_a_target_is_the_true_class(setup):
    model, data, sets = setup
    e = SaliencyExplorer(model, data, "features.2", sets, method="gradcam")
    label = data[0][1]
    e.target_a.value = ("class", label)
    ev = float(ck.metrics.unique_evidence(e.maps[0], data[0][2]["unique"], 0.05))
    assert "map A on the true class&#x27;s unique part" in e.summary.value
    assert ("undefined" if math.isnan(ev) else f"{ev:.1%}") in e.summary.value


def test_masks_break_ties_like_topk_agreement():
    # Zero input and zero biases on the all but the first column → both maps are 0 on more than half of the
    # pixels,
    # so a top-50 % set must pick among tied zeros; the masks shown must be the ones the agreement counts.
    model = TinyNet().eval()
    with torch.no_grad():
        model.features[0].bias.zero_()
        model.features[2].bias.zero_()
    x = torch.randn(1, 3, H, H, generator=torch.Generator().manual_seed(3))
    x[..., 1:] = 0
    e = SaliencyExplorer(model, x, "features.2", method="gradcam", k=0.5)
    zeros = (e.maps == 0).float().mean(dim=(1, 2))
    assert (zeros > 0.5).all()  # ties decide part of each top-k set
    n = H * H // 2
    assert e.masks.sum(dim=(1, 2)).tolist() == [n, n]
    assert float((e.masks[0] & e.masks[1]).sum()) / n == pytest.approx(e.agreement)
    assert e.agreement == pytest.approx(float(ck.metrics.topk_agreement(e.maps[0], e.maps[1], 0.5)))


def test_constant_maps_give_undefined_agreement():
    model = TinyNet().eval()
    with torch.no_grad():
        model.head.weight.zero_()  # no gradient reaches the layer: every Grad-CAM map is constant (all zero)
    e = SaliencyExplorer(model, torch.randn(2, 3, H, H), "features.2", method="gradcam")
    assert e.maps.abs().sum() == 0
    assert math.isnan(e.agreement)
    assert not e.masks.any()
    assert "undefined" in e.summary.value


def test_snapshot_in_the_display_bundle(setup):
    model, data, sets = setup
    e = SaliencyExplorer(model, data, "features.2", sets)
    bundle = e._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and "text/plain" in bundle
    html = bundle["text/html"]
    assert 'src="data:image/png;base64,' in html and LIVE_NOTE in html
    e.image.value = 4
    assert e._repr_mimebundle_()["text/html"] != html  # the snapshot follows the state


def test_saliency_explorer_bad_input(setup):
    model, data, sets = setup
    with pytest.raises(TypeError, match="nn.Module"):
        SaliencyExplorer("model", data, "features.2")
    with pytest.raises(ValueError, match="unknown layer"):
        SaliencyExplorer(model, data, "features.9")
    with pytest.raises(ValueError, match=r"contrast_sets must be \[C=6"):
        SaliencyExplorer(model, data, "features.2", sets[:3])
    with pytest.raises(TypeError, match="LongTensor"):
        SaliencyExplorer(model, data, "features.2", sets.float())
    with pytest.raises(ValueError, match="class_names has 2 names"):
        SaliencyExplorer(model, data, "features.2", class_names=["a", "b"])
    with pytest.raises(ValueError, match="fraction"):
        SaliencyExplorer(model, data, "features.2", k=5)
    with pytest.raises(ValueError, match="empty"):
        SaliencyExplorer(model, torch.zeros(0, 3, H, H), "features.2")
    with pytest.raises(ValueError, match="unknown method"):
        SaliencyExplorer(model, data, "features.2", methods=["gradcam", "smoothgrad"])


# --------------------------------------------------------------------------- AgreementExplorer


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model, layers in (("resnet", ["final_conv"]), ("densenet", ["final_conv", "norm5"])):
        for layer in layers:
            for method, (a, b) in (("gradcam", (6, 2)), ("case", (2, 6))):
                for i in range(30):
                    value = np.nan if i % 11 == 5 else float(rng.beta(a, b))
                    rows.append(dict(model=model, layer=layer, method=method, image_id=i, agreement=value))
    return pd.DataFrame(rows)


def direct_test(results, model, layer, method):
    sel = results[(results.model == model) & (results.layer == layer) & (results.method == method)]
    return dataclasses.asdict(class_sensitivity_test(sel["agreement"].to_numpy(), threshold=0.5))


def same_result(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_agreement_explorer_matches_a_direct_test(results):
    e = AgreementExplorer(results)
    assert (e.model.value, e.layer.value, e.method.value) == ("resnet", "final_conv", "gradcam")
    assert same_result(e.result_dict(), direct_test(results, "resnet", "final_conv", "gradcam"))
    assert len(e.selection) == 30 and e.result_dict()["n_excluded"] == 3  # i = 5, 16, 27
    first = e.figure.value
    e.method.value = "case"
    r = e.result_dict()
    assert same_result(r, direct_test(results, "resnet", "final_conv", "case"))
    assert e.figure.value != first
    assert format_p(r["p"]).replace("<", "&lt;") in e.summary.value
    assert f"{r['n']} (excluded: {r['n_excluded']}" in e.summary.value
    assert e.verdict() in e.summary.value.replace("&lt;", "<")
    assert ("class-sensitive" in e.verdict()) and (r["reject"] == e.verdict().startswith("class-sensitive"))


def test_layer_menu_follows_the_model(results):
    e = AgreementExplorer(results)
    assert [v for _, v in e.layer.options] == ["final_conv"]
    e.model.value = "densenet"
    assert [v for _, v in e.layer.options] == ["final_conv", "norm5"]
    e.layer.value = "norm5"
    assert same_result(e.result_dict(), direct_test(results, "densenet", "norm5", "gradcam"))
    e.model.value = "resnet"
    assert e.layer.value == "final_conv" and e.error is None


def test_histogram_bins_are_5_percent_wide():
    df = pd.DataFrame(dict(model="m", layer="l", method="gradcam", image_id=range(6),
                           agreement=[0.02, 0.07, 0.5, 0.51, 1.0, np.nan]))
    e = AgreementExplorer(df)
    expected = np.zeros(20, dtype=int)
    expected[[0, 1, 10, 19]] = [1, 1, 2, 1]  # [0, 5) %, [5, 10) %, [50, 55) % twice, [95, 100] %
    assert e.counts.tolist() == expected.tolist()
    assert "no test" in e.verdict()  # 5 values < min_n
    bundle = e._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and 'src="data:image/png;base64,' in bundle["text/html"]


def test_extra_facet_gets_a_menu(results):
    both = pd.concat([results.assign(comparison="top1_vs_top2"),
                      results.assign(comparison="true_vs_sibling", agreement=results.agreement / 2)])
    e = AgreementExplorer(both)
    assert "comparison" in e.menus
    e.menus["comparison"].value = "true_vs_sibling"
    sel = both[(both.comparison == "true_vs_sibling") & (both.model == "resnet") & (both.method == "gradcam")]
    assert len(e.selection) == 30
    expected = dataclasses.asdict(class_sensitivity_test(sel["agreement"].to_numpy(), threshold=0.5))
    assert same_result(e.result_dict(), expected)


def test_agreement_explorer_bad_input(results):
    with pytest.raises(TypeError, match="DataFrame"):
        AgreementExplorer(results.to_dict())
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['image_id'\]"):
        AgreementExplorer(results.drop(columns="image_id"))
    with pytest.raises(ValueError, match="repeated rows"):
        AgreementExplorer(pd.concat([results, results.iloc[:1]]))
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
        AgreementExplorer(results.assign(agreement=results.agreement * 100))
    with pytest.raises(ValueError, match="model='vgg' is not in the results"):
        AgreementExplorer(results, model="vgg")
    with pytest.raises(ValueError, match="no rows for layer='norm5'"):
        AgreementExplorer(results, model="resnet", layer="norm5")
    e = AgreementExplorer(results, model="densenet", layer="norm5", method="CASE")
    assert same_result(e.result_dict(), direct_test(results, "densenet", "norm5", "case"))
    with pytest.raises(ValueError, match="empty"):
        AgreementExplorer(results.iloc[:0])
