"""casekit.evaluation.metrics on tiny inputs whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import casekit as ck
from casekit.evaluation.metrics import (
    active_channels,
    class_mean_active_channels,
    confidence_drop,
    count_nan,
    deletion_curve,
    gaussian_blur,
    saliency_order,
    shared_evidence,
    tie_order,
    topk_agreement,
    topk_count,
    topk_mask,
    unique_evidence,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------- top-k selection


def test_topk_count_floor_and_errors():
    assert topk_count(0.05, 224, 224) == 2508  # ⌊0.05 · 50176⌋ = ⌊2508.8⌋
    assert topk_count(0.29, 10, 10) == 29  # 0.29 · 100 = 28.999… in binary; still 29
    assert topk_count(1.0, 3, 4) == 12
    with pytest.raises(ValueError, match="fraction"):
        topk_count(0.0, 4, 4)
    with pytest.raises(ValueError, match="did you mean 0.05"):
        topk_count(5, 4, 4)
    with pytest.raises(ValueError, match="selects no pixel"):
        topk_count(0.01, 4, 4)
    with pytest.raises(TypeError):
        topk_count(True, 4, 4)


def test_topk_mask_hand_example():
    m = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.7]])
    mask, valid = topk_mask(m, k=0.5)  # n = 3 → 0.9, 0.8, 0.7
    assert valid.item() is True
    assert mask.tolist() == [[False, True, False], [True, False, True]]


def test_topk_mask_constant_maps_have_no_topk_set():
    maps = torch.stack([torch.zeros(4, 5), torch.full((4, 5), 0.3), torch.arange(20.0).view(4, 5)])
    mask, valid = topk_mask(maps, k=0.1)
    assert valid.tolist() == [False, False, True]
    assert mask[:2].sum() == 0
    assert mask[2].flatten().nonzero().flatten().tolist() == [18, 19]


def test_index_ties_follow_reversed_stable_argsort():
    # Reference rule: np.argsort(cam.flatten())[::-1][:n] — without ties that is unique.
    rng = np.random.default_rng(1)
    x = rng.permutation(35).astype(np.float32).reshape(5, 7)
    n = topk_count(0.2, 5, 7)
    ref = set(np.argsort(x.flatten())[::-1][:n].tolist())
    mask, valid = topk_mask(torch.from_numpy(x), 0.2, ties="index")
    assert set(mask.flatten().nonzero().flatten().tolist()) == ref
    # With ties: among equal values the larger flat index first.
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    mask, valid = topk_mask(y, k=0.5, ties="index")  # n = 4: the three 1s, then zero at the largest index 7
    assert mask.flatten().nonzero().flatten().tolist() == [0, 2, 5, 7]
    stable = np.argsort(y.numpy().flatten(), kind="stable")[::-1][:4]
    assert sorted(stable.tolist()) == [0, 2, 5, 7]
    # A constant map is valid under the reference rule: the n highest indices.
    z, vz = topk_mask(torch.zeros(2, 4), k=0.25, ties="index")
    assert vz.item() is True and z.flatten().nonzero().flatten().tolist() == [6, 7]


def test_reference_scores_two_blank_maps_as_full_agreement_and_we_do_not():
    z = torch.zeros(2, 3, 8, 8)
    assert torch.equal(topk_agreement(z, z, 0.05, ties="index"), torch.ones(2, 3))
    ours = topk_agreement(z, z, 0.05)
    assert torch.isnan(ours).all() and count_nan(ours) == 6


def test_agreement_hand_example():
    a = torch.arange(12.0).view(3, 4)  # top-3 (k = 0.25): flat 9, 10, 11
    b = torch.zeros(3, 4)
    b.view(-1)[[11, 0, 1]] = torch.tensor([3.0, 2.0, 1.0])  # top-3: 11, 0, 1
    assert topk_agreement(a, b, k=0.25).item() == np.float32(1 / 3)  # correctly rounded count / n
    assert topk_agreement(a, a, k=0.25).item() == 1.0
    c = -a  # top-3 = 0, 1, 2 → no overlap with a
    assert topk_agreement(a, c, k=0.25).item() == 0.0


def test_agreement_is_batched_and_nan_only_for_constant_maps():
    a = torch.arange(12.0).view(1, 3, 4).repeat(2, 3, 1, 1)
    b = a.clone()
    b[1, 2] = 0.5
    out = topk_agreement(a, b, k=0.25)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    assert torch.isnan(out[1, 2]) and count_nan(out) == 1
    assert (out.nan_to_num(-1) == torch.tensor([[1.0, 1, 1], [1, 1, -1]])).all()


def test_random_ties_are_independent_between_the_two_maps():
    # Each map has one positive pixel (a at 0, b at 1); the rest of the top half is drawn from the zeros.
    a = torch.zeros(32, 32)
    b = torch.zeros(32, 32)
    a.view(-1)[0] = 1.0
    b.view(-1)[1] = 1.0
    # Reference rule: both take the 511 zeros of highest index → 511 / 512 agreement.
    assert topk_agreement(a, b, 0.5, ties="index").item() == pytest.approx(511 / 512)
    # Independent random tie-breaks: chance overlap, ≈ 511·511/1023 / 512 ≈ 0.5.
    ours = topk_agreement(a, b, 0.5).item()
    assert 0.4 < ours < 0.6


def test_random_tie_break_is_the_seeded_tie_order():
    m = torch.zeros(2, 4)
    m[0, 0] = 1.0  # n = 2: pixel 0 plus the zero that comes first in the tie order
    order = tie_order(8, "random", seed=3, stream=0).tolist()
    expected = [p for p in order if p != 0][0]
    mask, _ = topk_mask(m, 0.25, seed=3)
    assert sorted(mask.flatten().nonzero().flatten().tolist()) == sorted([0, expected])
    # same seed → same answer; independent of the other maps in the batch
    batch = torch.stack([torch.rand(2, 4), m, torch.zeros(2, 4)])
    mask_b, _ = topk_mask(batch, 0.25, seed=3)
    assert torch.equal(mask_b[1], mask)
    # over seeds, every zero pixel gets chosen sometimes (the tie-break is not by index)
    picks = {int(topk_mask(m, 0.25, seed=s)[0].flatten()[1:].nonzero()[0]) + 1 for s in range(40)}
    assert picks == set(range(1, 8))


def test_fast_topk_mask_matches_full_sort():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 4, (6, 5, 7), generator=gen).float()
    maps[0] = 0.0
    for ties in ("random", "index"):
        order, valid = saliency_order(maps, ties, seed=5, stream=1)
        for k in (0.03, 0.2, 0.5, 1.0):
            n = topk_count(k, 5, 7)
            ref = (torch.zeros(6, 35, dtype=torch.bool).scatter_(1, order.view(6, 35)[:, :n], True)
                   & valid[:, None])
            mask, v = topk_mask(maps, k, ties, seed=5, stream=1)
            assert torch.equal(mask.view(6, 35), ref) and torch.equal(v, valid)
            assert (mask.view(6, 35).sum(1) == torch.where(valid, n, 0)).all()


def test_minus_zero_ties_with_zero():
    m = torch.tensor([[1.0, -0.0, 0.0, -0.0]])
    masks = {topk_mask(m, 0.5, ties="index")[0].flatten().nonzero().flatten().tolist()[1]}
    assert masks == {3}  # -0.0 and 0.0 tie; the larger index wins


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        topk_agreement(torch.rand(2, 4, 4), torch.rand(2, 4, 5))
    bad = torch.rand(3, 4, 4)
    bad[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(bad)
    with pytest.raises(ValueError, match="selects no pixel"):
        topk_agreement(torch.rand(4, 4), torch.rand(4, 4), k=0.05)
    with pytest.raises(ValueError, match="fraction"):
        topk_mask(torch.rand(4, 4), k=1.5)
    with pytest.raises(ValueError, match="ties"):
        topk_mask(torch.rand(4, 4), ties="first")
    with pytest.raises(TypeError):
        topk_mask(torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(TypeError):
        topk_mask(np.ones((4, 4)))


def test_count_nan():
    assert count_nan(torch.tensor([1.0, float("nan"), float("nan")])) == 2
    assert count_nan([0.1, float("nan")]) == 1
    assert count_nan(pd.Series([0.2, 0.3])) == 0


# --------------------------------------------------------------------------- evidence


def test_unique_and_shared_evidence_hand_example():
    m = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.7, 0.2, 0.3, 0.6]])  # k = 0.5 → n = 4: 0.9, 0.8, 0.7, 0.6
    unique = torch.tensor([[True, False, False, False], [True, True, True, True]])
    shared = ~unique
    assert unique_evidence(m, unique, 0.5).item() == pytest.approx(3 / 4)  # 0.9, 0.7, 0.6
    assert shared_evidence(m, shared, 0.5).item() == pytest.approx(1 / 4)  # 0.8
    maps = torch.stack([m, torch.zeros(2, 4)])
    out = unique_evidence(maps, unique, 0.5)  # [H, W] mask broadcast over the batch
    assert out[0].item() == pytest.approx(0.75) and torch.isnan(out[1])
    with pytest.raises(ValueError, match="spatial size"):
        unique_evidence(m, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        shared_evidence(m, shared.float())
    with pytest.raises(ValueError, match="broadcast"):
        unique_evidence(maps, torch.ones(3, 2, 4, dtype=torch.bool), 0.5)


# --------------------------------------------------------------------------- confidence drop


def linear_model(weight_map: torch.Tensor) -> nn.Module:
    """Logits (z0, z1) = (Σ W·x, 0) for one-channel images of W's shape."""
    H, W = weight_map.shape
    lin = nn.Linear(H * W, 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = weight_map.flatten()
    return nn.Sequential(nn.Flatten(), lin, nn.Dropout(0.5))  # dropout: would be random in train mode


@pytest.fixture
def asym():
    """A 3×4 image of ones; the class-0 logit reads pixel (0, 3) with weight 2 and (2, 0) with weight 1."""
    w = torch.zeros(3, 4)
    w[0, 3], w[2, 0] = 2.0, 1.0
    smap = torch.zeros(3, 4)
    smap[0, 3], smap[2, 0], smap[1, 1] = 1.0, 0.5, 0.25
    return linear_model(w), torch.ones(1, 1, 3, 4), smap[None]


def test_confidence_drop_hand_example_and_orientation(asym):
    model, x, smap = asym
    model.train()
    res = confidence_drop(model, x, smap, k=1 / 12)  # n = 1: blank (row 0, col 3) only
    assert model.training  # mode restored
    assert res.target.tolist() == [0]
    assert res.p_before.item() == pytest.approx(sigmoid(3.0), abs=1e-6)
    assert res.p_after.item() == pytest.approx(sigmoid(1.0), abs=1e-6)
    assert res.drop.item() == pytest.approx(sigmoid(3.0) - sigmoid(1.0), abs=1e-6)
    assert res.relative_drop.item() == pytest.approx((sigmoid(3.0) - sigmoid(1.0)) / sigmoid(3.0), abs=1e-6)
    assert res.valid.tolist() == [True]
    # A transposed mask could not blank (0, 3) of a 3×4 image (there is no row 3); and a map whose
    # top pixel is (2, 0) lowers z0 by its weight 1 only.
    smap_t = torch.zeros(1, 3, 4)
    smap_t[0, 2, 0] = 1.0
    res_t = confidence_drop(model, x, smap_t, k=1 / 12)
    assert res_t.p_after.item() == pytest.approx(sigmoid(2.0), abs=1e-6)


def test_confidence_drop_square_asymmetric_map_not_transposed():
    w = torch.zeros(3, 3)
    w[0, 2] = 4.0  # the logit reads only (row 0, col 2)
    model = linear_model(w)
    smap = torch.zeros(1, 3, 3)
    smap[0, 0, 2] = 1.0  # salient at (0, 2); a transposed mask would blank (2, 0) and change nothing
    res = confidence_drop(model, torch.ones(1, 1, 3, 3), smap, k=1 / 9)
    assert res.p_after.item() == pytest.approx(0.5, abs=1e-6)
    assert res.relative_drop.item() == pytest.approx((sigmoid(4.0) - 0.5) / sigmoid(4.0), abs=1e-6)


def test_confidence_drop_targets_maps_per_target_and_constant_maps(asym):
    model, x, smap = asym
    maps = torch.stack([smap[0], torch.zeros(3, 4)])[None]  # [B=1, T=2, H, W]; second map constant
    res = confidence_drop(model, x, maps, k=1 / 12, target=torch.tensor([[0, 1]]))
    assert res.p_before.shape == (1, 2)
    assert res.p_before[0, 1].item() == pytest.approx(sigmoid(-3.0), abs=1e-6)
    assert res.valid.tolist() == [[True, False]]
    assert res.p_after[0, 1] == res.p_before[0, 1] and res.relative_drop[0, 1] == 0  # nothing blanked
    # class 1 gains when (0, 3) is blanked: drop negative, relative drop clipped at 0
    res1 = confidence_drop(model, x, smap, k=1 / 12, target=[1])
    assert res1.drop.item() == pytest.approx(sigmoid(-3.0) - sigmoid(-1.0), abs=1e-6)
    assert res1.drop.item() < 0 and res1.relative_drop.item() == 0.0


def test_confidence_drop_fills(asym):
    model, x, smap = asym
    x2 = torch.full((1, 1, 3, 4), 2.0)
    # constant image: its blurred copy is itself → no change
    r = confidence_drop(model, x2, smap, k=1 / 12, fill="blur")
    assert r.p_after.item() == pytest.approx(r.p_before.item(), abs=1e-6)
    # explicit per-channel value 1.0 at (0, 3): z0 = 2·1 + 1·2 = 4
    r = confidence_drop(model, x2, smap, k=1 / 12, fill=[1.0])
    assert r.p_after.item() == pytest.approx(sigmoid(4.0), abs=1e-6)
    with pytest.raises(ValueError, match="fill"):
        confidence_drop(model, x2, smap, k=1 / 12, fill="zero")


def test_gaussian_blur_keeps_constants_and_mass():
    imp = torch.zeros(1, 2, 9, 11)
    imp[0, :, 4, 5] = 1.0
    out = gaussian_blur(imp, 1.0)
    assert out.sum().item() == pytest.approx(2.0, abs=1e-5)
    assert (out[0, 0, 4, 5] == out[0, 0].max() and out[0, 0, 3, 5] == out[0, 0, 5, 5]
            and out[0, 0, 4, 4] == out[0, 0, 4, 6])
    const = torch.full((1, 3, 5, 6), 0.7)
    assert torch.allclose(gaussian_blur(const, 3.0), const)


def test_confidence_drop_input_errors(asym):
    model, x, smap = asym
    with pytest.raises(ValueError, match="input resolution"):
        confidence_drop(model, x, smap.transpose(-1, -2), k=0.1)
    with pytest.raises(ValueError, match="leading shape"):
        confidence_drop(model, x, smap, k=1 / 12, target=[[0, 1]])
    with pytest.raises(ValueError, match="selects no pixel"):
        confidence_drop(model, x, smap, k=0.01)
    with pytest.raises(TypeError, match="deletion_curve"):
        confidence_drop(model, x, smap, k=[0.1, 0.2])


def test_deletion_curve_hand_example_and_batching(asym):
    model, x, smap = asym
    curve = deletion_curve(model, x, smap, ks=(1 / 12, 2 / 12, 3 / 12))
    # n = 1, 2, 3: blank (0,3) → z0 = 1; + (2,0) → 0; + (1,1) (weight 0) → 0
    p = [sigmoid(1.0), 0.5, 0.5]
    assert curve.p_after[0].tolist() == pytest.approx(p, abs=1e-6)
    rel = [(sigmoid(3.0) - q) / sigmoid(3.0) for q in p]
    assert curve.relative_drop[0].tolist() == pytest.approx(rel, abs=1e-6)
    # trapezoid with equal spacing / span = (r0/2 + r1 + r2/2) / 2
    assert curve.area.item() == pytest.approx((rel[0] / 2 + rel[1] + rel[2] / 2) / 2, abs=1e-6)
    assert curve.area_prob.item() == pytest.approx((p[0] / 2 + p[1] + p[2] / 2) / 2, abs=1e-6)
    one = confidence_drop(model, x, smap, k=2 / 12)
    assert one.p_after.item() == curve.p_after[0, 1].item()
    small = deletion_curve(model, x, smap, ks=(1 / 12, 2 / 12, 3 / 12), batch_size=1)
    assert torch.equal(small.p_after, curve.p_after)
    with pytest.raises(ValueError, match="increasing"):
        deletion_curve(model, x, smap, ks=(0.2, 0.1))


def test_deletion_curve_batch_of_real_shapes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5))
    x = torch.randn(3, 3, 20, 12)
    maps = torch.rand(3, 2, 20, 12)
    curve = deletion_curve(model, x, maps, batch_size=7)
    assert curve.p_after.shape == (3, 2, 6) and curve.area.shape == (3, 2)
    for j, k in enumerate(ck.metrics.DELETION_KS):
        single = confidence_drop(model, x, maps, k)
        assert torch.allclose(single.p_after, curve.p_after[..., j], atol=1e-6)


# --------------------------------------------------------------------------- channels


def test_active_channels_hand_example():
    acts = torch.zeros(2, 3, 2, 2)
    acts[0, 0] = torch.tensor([[0.004, 0.0], [0.0, 0.0]])  # mean 0.001: not > τ
    acts[0, 1] = 0.002
    acts[0, 2] = -1.0
    acts[1, :] = 1.0
    counts, mask = active_channels(acts, tau=1e-3, return_mask=True)
    assert counts.tolist() == [1, 3]
    assert mask.tolist() == [[False, True, False], [True, True, True]]
    assert active_channels(acts, tau=0.0005).tolist() == [2, 3]
    with pytest.raises(ValueError, match="4-D"):
        active_channels(torch.zeros(3, 2, 2))


def test_class_mean_active_channels():
    df = class_mean_active_channels(torch.tensor([1, 2, 3, 5, 7]), torch.tensor([0, 0, 4, 4, 2]))
    assert df["label"].tolist() == [0, 2, 4]
    assert df["n_images"].tolist() == [2, 1, 2]
    assert df["mean_active_channels"].tolist() == [1.5, 7.0, 4.0]
    with pytest.raises(ValueError, match="one label per image"):
        class_mean_active_channels([1, 2], [0])


# --------------------------------------------------------------------------- partly degenerate maps (issue 9)

from casekit.evaluation.metrics import degenerate_counts, partly_degenerate, positive_area  # noqa: E402


def _one_pixel(i: int, j: int, size: int = 20) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[i, j] = 1.0
    return m


def test_partly_degenerate_by_hand():
    # 20×20 maps, k = 5 % → n = 20 top-k pixels
    maps = torch.zeros(6, 20, 20)
    maps[0, 0, 0] = 1.0  # one positive pixel: 19 places decided by ties
    maps[1].view(-1)[:19] = torch.linspace(0.1, 1.0, 19)  # 19 positive: 1 place decided by ties
    maps[2].view(-1)[:20] = torch.linspace(0.1, 1.0, 20)  # exactly n positive: no tie decides
    maps[3] = torch.rand(20, 20, generator=torch.Generator().manual_seed(0)) + 0.01  # all positive
    # maps[4] all zero (constant: counted apart); maps[5] constant 0.3
    maps[5] = 0.3
    assert positive_area(maps).tolist() == [1, 19, 20, 400, 0, 400]
    assert partly_degenerate(maps, 0.05).tolist() == [True, True, False, False, False, False]
    assert partly_degenerate(maps, 0.10).tolist() == [True, True, True, False, False, False]  # n = 40
    assert degenerate_counts(maps, 0.05) == {"n_maps": 6, "n_constant": 2, "n_partly_degenerate": 2}
    # numpy in → numpy out, any leading shape
    out = partly_degenerate(maps.numpy().reshape(2, 3, 20, 20), 0.05)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3) and out.sum() == 2
    assert isinstance(positive_area(maps.numpy()), np.ndarray)
    with pytest.raises(ValueError, match="negative"):
        partly_degenerate(-maps, 0.05)


def test_two_one_pixel_maps_measure_the_tie_rule():
    # Two maps with one (different) positive pixel each: the other 19 of the 20 top-k places are ties.
    a, b = _one_pixel(0, 0), _one_pixel(1, 1)
    assert partly_degenerate(torch.stack([a, b]), 0.05).tolist() == [True, True]
    # index ties (reference code): both fill with the 19 largest flat indices 381..399 → 19 / 20 shared
    assert float(topk_agreement(a, b, 0.05, ties="index")) == pytest.approx(19 / 20)
    # random ties, independent per map: overlap of two random 19-sets of the 399 zeros ≈ 19·19/399 ≈ 0.9
    rand = float(topk_agreement(a, b, 0.05, ties="random", seed=0))
    ma, _ = topk_mask(a, 0.05, "random", 0, stream=0)
    mb, _ = topk_mask(b, 0.05, "random", 0, stream=1)
    assert rand == pytest.approx(float((ma & mb).sum()) / 20) and rand <= 0.15
