"""Static explorers: one option per image/method, a data blob with every combination, numbers equal to a
direct computation, images of the right size, and the live+static output bundle.  (The JS itself is driven
in headless Chromium by tests/test_browser.py.)"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_widgets import LAYERS, TinyData, TinyNet

import casekit as ck
from casekit.cam.engine import DISPLAY_NAMES, METHODS
from casekit.evaluation.stats import class_sensitivity_test
from casekit.report import explorer as ex
from casekit.report.widgets import AgreementExplorer, SaliencyExplorer

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def blob(html: str) -> dict:
    m = re.search(r'<script type="application/json" class="casekit-explorer-data">(.*?)</script>', html,
                  re.DOTALL)
    assert m, "no data blob"
    return json.loads(m.group(1))


def decode(uri: str) -> Image.Image:
    import base64

    head, data = uri.split(",", 1)
    assert head in ("data:image/png;base64", "data:image/jpeg;base64", "data:image/webp;base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def saliency():
    model, data = TinyNet().eval(), TinyData()
    sets = ck.contrast_sets(torch.arange(36).reshape(6, 6) % 7, 4)
    live = SaliencyExplorer(model, data, LAYERS, sets, K=3, k=0.1)
    return model, data, sets, live, ex.static_saliency(live)


def test_saliency_controls_have_one_option_per_image_method_and_rank(saliency):
    _, data, _, _, static = saliency
    html = static.html
    assert html.count('type="range"') == 1 and 'max="4"' in html  # 5 images on a slider
    method_select = re.search(r'<select data-control="1">(.*?)</select>', html).group(1)
    assert re.findall(r">([^<]+)</option>", method_select) == [DISPLAY_NAMES[m] for m in METHODS]
    target_select = re.search(r'<select data-control="2">(.*?)</select>', html).group(1)
    assert re.findall(r">([^<]+)</option>", target_select) == ["top-1", "top-2"]
    d = blob(html)
    assert d["controls"][0] == [f"image {i} ({data.class_names[int(data.labels[i])]})" for i in range(5)]
    assert set(d["views"]) == {f"{i}|{m}|{t}" for i in range(5) for m in range(6) for t in range(2)}
    assert all(len(v["images"]) == 3 for v in d["views"].values())
    # the page opens on the live explorer's image and method (0, CASE), top-1: its three images
    assert static.initial == (0, METHODS.index("case"), 0)
    first = d["views"][f"0|{METHODS.index('case')}|0"]
    srcs = re.findall(r'<img data-slot="\d" src="([^"]+)"', html)
    assert srcs == [d["images"][j] for j in first["images"]]
    # images are stored once: the plain image is shared by the 12 views of that image
    assert len({v["images"][0] for k, v in d["views"].items() if k.startswith("0|")}) == 1


def test_saliency_numbers_match_a_direct_computation(saliency):
    model, data, sets, _, static = saliency
    d = blob(static.html)
    i, m = 3, METHODS.index("case")
    with torch.no_grad():
        logits = model(data[i][0][None])[0]
    order = logits.argsort(descending=True).tolist()
    targets = torch.tensor([[order[0], order[1]]])
    x = data[i][0][None]
    maps = ck.saliency(model, x, "features.2", "case", targets, sets[targets[0], :3][None])[0]
    agree = float(ck.metrics.topk_agreement(maps[0], maps[1], 0.1))
    probs = torch.softmax(logits, 0)
    key = f"{i}|{static.controls[1].options.index('CASE')}|1"
    rows = dict(d["views"][key]["numbers"])
    assert rows["top-10% agreement, top-1 vs top-2 map"] == f"{agree:.1%}"
    assert rows["target (top-2)"] == f"class-{order[1]}, p = {float(probs[order[1]]):.3f}"
    assert rows["CASE contrast classes"] == ", ".join(f"class-{c}" for c in sets[order[1], :3].tolist())
    label = int(data.labels[i])
    assert rows["true class · prediction"].startswith(f"class-{label} · class-{order[0]}")
    assert ("correct" if order[0] == label else "misclassified") in rows["true class · prediction"]
    assert key.split("|")[1] == str(m)


def test_unique_evidence_with_chance_and_ceiling(saliency):
    model, data, sets, _, static = saliency
    d = blob(static.html)
    label_rows = []
    for key, view in d["views"].items():
        i, m, r = map(int, key.split("|"))
        rows = dict(view["numbers"])
        with torch.no_grad():
            order = model(data[i][0][None])[0].argsort(descending=True).tolist()
        target = order[r]
        name = "top-k pixels on the true class's unique part"
        assert (name in rows) == (target == int(data.labels[i]))  # only for a map of the true class
        if name in rows:
            label_rows.append((key, rows[name]))
            method = METHODS[m]
            con = sets[[order[0], order[1]], :3][None] if method == "case" else None
            maps = ck.saliency(model, data[i][0][None], "features.2", method, torch.tensor([order[:2]]),
                               con)[0]
            ev = float(ck.metrics.unique_evidence(maps[r], data.unique[i], 0.1))
            # the unique part: 4 × 6 = 24 of 256 pixels; top-10 % = 25 pixels → ceiling 24/25
            assert rows[name] == f"{ev:.1%} (chance 9.4%, ceiling 96.0%)"
    assert label_rows  # the tiny data has correctly ranked labels

def test_saliency_images_are_small_webps_of_the_overlay(saliency):
    _, data, _, live, static = saliency
    d = blob(static.html)
    view = d["views"]["0|0|0"]
    assert d["images"][view["images"][1]].startswith("data:image/webp;base64,")
    img = np.asarray(decode(d["images"][view["images"][1]]).convert("RGB"), dtype=float) / 255
    assert img.shape == (16, 16, 3)  # 16 px images are kept at their size (≤ 160); the page scales them up
    x = data[0][0][None]
    maps = live._maps(0, "features.2", "gradcam", live.resolve_targets(0), None)
    shown = live._display_image(0)
    err = {name: np.abs(img - ex.overlay(shown, m.numpy())).mean() for name, m in (("top-1", maps[0]),
                                                                                  ("top-2", maps[1]))}
    err["image"] = np.abs(img - shown).mean()
    assert err["top-1"] < 0.1 and err["top-1"] < 0.75 * min(err["top-2"], err["image"]), err  # lossy: close
    assert x.shape[-1] == 16 and static.size_bytes() < 150_000


def test_static_saliency_rejects_bad_choices(saliency):
    live = saliency[3]
    with pytest.raises(ValueError, match=r"images must be indices in 0..4"):
        ex.static_saliency(live, images=[0, 9])
    with pytest.raises(ValueError, match="not in the explorer"):
        ex.static_saliency(SaliencyExplorer(saliency[0], saliency[1], "features.2", methods=["case"]),
                           methods=["gradcam"])
    with pytest.raises(ValueError, match="ranks"):
        ex.static_saliency(live, ranks=(1,))
    big = SaliencyExplorer(saliency[0], torch.zeros(ex.MAX_DEFAULT_IMAGES + 1, 3, 16, 16), "features.2",
                           methods=["gradcam"])
    with pytest.raises(ValueError, match=r"holds 65 images; pass images="):
        ex.static_saliency(big)
    assert set(blob(ex.static_saliency(big, images=[64]).html)["views"]) == {"0|0|0", "0|0|1"}


def agreement_results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"model": mo, "layer": la, "method": me, "image_id": i,
             "agreement": rng.random() * (0.6 if me == "case" else 1.0)}
            for mo in ("resnet", "vgg") for la in ("final_conv", "norm5") for me in ("case", "gradcam")
            for i in range(25) if not (mo == "vgg" and la == "norm5")]
    df = pd.DataFrame(rows)
    df.loc[0, "agreement"] = np.nan  # one constant map
    return df


def test_agreement_views_cover_every_existing_selection_and_match_the_test():
    df = agreement_results()
    live = AgreementExplorer(df, threshold=0.5)
    static = ex.static_agreement(live)
    d = blob(static.html)
    assert d["controls"] == [["resnet", "vgg"], ["final_conv", "norm5"], ["CASE", "Grad-CAM"]]
    assert set(d["views"]) == {"0|0|0", "0|0|1", "0|1|0", "0|1|1", "1|0|0", "1|0|1"}  # no vgg·norm5
    sel = df[(df.model == "resnet") & (df.layer == "final_conv") & (df.method == "case")]
    r = class_sensitivity_test(sel["agreement"].to_numpy(float), threshold=0.5)
    rows = dict(d["views"]["0|0|0"]["numbers"])
    assert rows["images in the test"] == f"{r.n} (1 constant maps excluded, {r.n_zero} at the threshold)"
    assert r.n == 24
    assert rows["median agreement [95% CI]"] == (f"{r.median * 100:.1f}% [{r.ci_low * 100:.1f}, "
                                                 f"{r.ci_high * 100:.1f}]")
    assert rows["class-sensitive (rejects H0)"].startswith("✓" if r.reject else "✗")
    assert len({v["images"][0] for v in d["views"].values()}) == 6  # six different histograms
    import base64
    import xml.etree.ElementTree as ET

    head, data = d["images"][0].split(",", 1)
    assert head == "data:image/svg+xml;base64"  # sharp at any zoom (no dpi to choose)
    svg = ET.fromstring(base64.b64decode(data))
    assert (svg.get("width"), svg.get("height")) == ("400", "250")
    texts = ["".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "resnet · final_conv · CASE" in texts and "top-k agreement (%), 24 images" in texts


def test_agreement_initial_view_follows_the_live_explorer():
    live = AgreementExplorer(agreement_results(), model="vgg", method="gradcam")
    static = ex.static_agreement(live)
    assert static.initial == (1, 0, 1)
    assert 'selected>vgg</option>' in static.html


def test_live_and_static_bundle():
    live = AgreementExplorer(agreement_results())
    static = ex.static_agreement(live)
    out = ex.display_explorer(live, static)
    bundle = out._repr_mimebundle_()
    assert bundle[WIDGET_VIEW]["model_id"] == live.model_id
    assert bundle["text/html"] == static.html
    assert "precomputed views" in bundle["text/plain"]
    only = ex.display_explorer(None, static)._repr_mimebundle_()
    assert set(only) == {"text/html", "text/plain"}
    with pytest.raises(TypeError, match="StaticExplorer"):
        ex.display_explorer(live, "<div/>")


def test_static_explorer_validates_and_escapes():
    png = ex.encode_image(np.zeros((4, 4, 3)))
    c = [ex.Control("x </script><b>", ["a", "b"])]
    with pytest.raises(ValueError, match="outside control"):
        ex.StaticExplorer(c, {(2,): ex.View([png])}, slots=["s"])
    with pytest.raises(ValueError, match="1 images for 2 slots"):
        ex.StaticExplorer(c, {(0,): ex.View([png])}, slots=["s", "t"])
    with pytest.raises(ValueError, match="kind"):
        ex.Control("x", ["a"], kind="slider")
    s = ex.StaticExplorer(c, {(0,): ex.View([png], [("n", "</script>")]), (1,): ex.View([None])}, slots=["s"])
    html = s.html
    assert html.count("</script>") == 2  # the blob's and the code's; the label's is escaped
    assert blob(html)["views"]["0"]["numbers"] == [["n", "</script>"]]
    assert len(blob(html)["images"]) == 2  # the image and the blank stand-in for an empty slot
    blank = decode(blob(html)["images"][1])
    blank.load()  # a valid PNG (a broken one shows as a broken-image icon)
    assert blank.size == (1, 1) and blank.convert("RGBA").getpixel((0, 0))[3] == 0


def test_encode_image_sizes_and_formats():
    rgb = np.random.default_rng(0).random((224, 200, 3))
    png = Image.open(io.BytesIO(ex.encode_image(rgb)))
    assert png.size == (143, 160) and png.mode == "P"  # longer side 160, palette PNG
    jpg = ex.encode_image(rgb, fmt="jpeg", size=100)
    assert jpg[:3] == b"\xff\xd8\xff" and Image.open(io.BytesIO(jpg)).size == (89, 100)
    assert Image.open(io.BytesIO(ex.encode_image(rgb[:64, :64]))).size == (64, 64)
    webp = ex.encode_image(rgb[:64, :64], fmt="webp")
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP" and ex.webp_supported()
    back = np.asarray(Image.open(io.BytesIO(webp)).convert("RGB"), float) / 255
    assert np.abs(back - rgb[:64, :64]).mean() < 0.2
    assert ex._data_uri(webp).startswith("data:image/webp;base64,")
    with pytest.raises(ValueError, match="not a PNG, JPEG, WebP or SVG"):
        ex._data_uri(b"GIF89a....")
    with pytest.raises(ValueError, match="fmt must be"):
        ex.encode_image(rgb, fmt="gif")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        ex.encode_image(np.zeros((4, 4)))


def test_overlay_formula():
    import matplotlib

    img = np.full((2, 2, 3), 0.2)
    sal = np.array([[0.0, 1.0], [0.5, np.nan]])
    out = ex.overlay(img, sal)
    jet = matplotlib.colormaps["jet"]
    assert np.allclose(out[0, 1], 0.5 * 0.2 + 0.5 * np.array(jet(1.0)[:3]))
    assert np.allclose(out[1, 1], 0.5 * 0.2 + 0.5 * np.array(jet(0.0)[:3]))  # NaN → 0


def test_prefetch_gives_the_one_image_maps_and_static_views_leave_the_cache(saliency):
    model, data, sets, _, static = saliency
    live = SaliencyExplorer(model, data, LAYERS, sets, K=3, k=0.1, image=2)
    before = set(live._cache)
    added = live.prefetch([0, 1, 3], "features.2", METHODS, (1, 2), 3)
    assert len(added) == 3 * len(METHODS)
    for key in added:
        _, i, layer, method, targets, contrast = key
        assert targets == live.resolve_targets(i)
        con = None if contrast is None else torch.tensor(contrast).reshape(2, 3)
        if method == "case":
            assert torch.equal(con, live.contrast_for(i, targets, 3))
        single = ck.saliency(model, data[i][0][None], layer, method, torch.tensor([targets]),
                             None if con is None else con[None])[0]
        assert torch.allclose(live._cache[key], single, atol=1e-5), (i, method)
    # static_saliency in batches of 2 gives the numbers of one batch and keeps only the live image's maps
    again = SaliencyExplorer(model, data, LAYERS, sets, K=3, k=0.1, image=2)
    small = ex.static_saliency(again, batch_size=2)
    numbers = {key: v["numbers"] for key, v in blob(static.html)["views"].items()}
    assert {key: v["numbers"] for key, v in blob(small.html)["views"].items()} == numbers
    kept = {key[1] for key in set(again._cache) - before if key[0] == "maps"}
    assert kept <= {2}
    with pytest.raises(ValueError, match="batch_size"):
        ex.static_saliency(again, batch_size=0)


def test_histogram_svg_bars_threshold_and_labels():
    import xml.etree.ElementTree as ET

    values = np.array([0.02, 0.03, 0.04, 0.31, 0.33, 0.97, 1.0, np.nan])
    bins = np.linspace(0, 1, 11)
    svg = ex.histogram_svg(values, bins, 0.5, "a < b & c")
    root = ET.fromstring(svg)  # well-formed XML (the title is escaped)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("width") == "400" and root.get("viewBox") == "0 0 400 250"
    bars = [r for r in root.iter(f"{ns}rect") if r.get("fill") == "#4c72b0"]
    counts = np.histogram(values[~np.isnan(values)], bins)[0]
    assert counts.tolist() == [3, 0, 0, 2, 0, 0, 0, 0, 0, 2] and len(bars) == 3  # empty bins draw nothing
    heights = [float(b.get("height")) for b in bars]
    assert heights[0] / heights[1] == pytest.approx(3 / 2, rel=0.02) and heights[1] == heights[2]
    xs = [float(b.get("x")) for b in bars]
    left, right = 52.0, 388.0  # the plot's x range: 0 % … 100 %
    assert xs == pytest.approx([left, left + 0.3 * (right - left), left + 0.9 * (right - left)], abs=0.1)
    line = next(e for e in root.iter(f"{ns}line") if e.get("class") == "threshold")
    assert float(line.get("x1")) == pytest.approx(left + 0.5 * (right - left), abs=0.1)
    texts = ["".join(t.itertext()) for t in root.iter(f"{ns}text")]
    assert "a < b & c" in texts and "50% threshold" in texts
    assert "top-k agreement (%), 7 images" in texts  # the NaN (a constant map) is not counted
    ticks = [t for t in texts if t.replace(".", "").isdigit()]
    assert all("." not in t for t in ticks)  # whole-number count ticks, also for tiny counts
    assert ex._data_uri(svg).startswith("data:image/svg+xml;base64,")
    title = next(t for t in root.iter(f"{ns}text") if "".join(t.itertext()) == "a < b & c")
    assert title.get("font-size") == "14.0" and title.get("textLength") is None
    long = ET.fromstring(ex.histogram_svg(values, bins, 0.5, "model · layer · method · comparison · " * 3))
    t = next(t for t in long.iter(f"{ns}text") if t.get("font-weight") == "600")
    assert float(t.get("x")) == 200 and float(t.get("textLength")) <= 392  # squeezed into the width, centred
    mid_title = "convnext · final_conv · AblationCAM · top1_vs_top2"
    mid = ET.fromstring(ex.histogram_svg(values, bins, 0.5, mid_title))
    t = next(t for t in mid.iter(f"{ns}text") if t.get("font-weight") == "600")
    assert 11 <= float(t.get("font-size")) < 14 and t.get("textLength") is None  # a smaller font fits it


def test_static_saliency_leaves_every_submodule_mode_as_found(saliency):
    model, data, sets, _, _ = saliency
    model.eval()
    first = next(m for m in model.modules() if m is not model)
    first.train()  # a mixed model: the top in eval mode, one submodule in training mode
    before = [(m, m.training) for m in model.modules()]
    try:
        live = SaliencyExplorer(model, data, LAYERS, sets, K=3, k=0.1)
        ex.static_saliency(live, images=[0, 1], batch_size=1)
        assert [(m, m.training) for m in model.modules()] == before
    finally:
        model.eval()
