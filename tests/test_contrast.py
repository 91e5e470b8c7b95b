"""Contrast sets (paper eq. 2) and confusion matrices, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import casekit as ck


def test_contrast_sets_by_hand():
    # rows = true class; row 0 confuses 2 most, then 3; row 1: 0 and 3 tie (2 each) → lower index first
    M = torch.tensor(
        [
            [50, 1, 7, 3],
            [2, 40, 0, 2],
            [9, 9, 30, 1],
            [0, 0, 0, 10],
        ]
    )
    sets = ck.contrast_sets(M, 2)
    assert sets.dtype == torch.long and sets.shape == (4, 2)
    assert sets.tolist() == [[2, 3], [0, 3], [0, 1], [0, 1]]
    # row 3 has no confusion at all: ties everywhere → lowest indices, never itself
    assert ck.contrast_sets(M, 3).tolist()[3] == [0, 1, 2]


def test_diagonal_never_chosen_even_when_largest_off_diagonal_is_zero():
    M = np.eye(5) * 100
    sets = ck.contrast_sets(M, 4)
    for u in range(5):
        assert u not in sets[u].tolist()
        assert sorted(sets[u].tolist()) == [v for v in range(5) if v != u]


def test_row_normalisation_does_not_mix_rows():
    M = torch.tensor([[1000.0, 10, 20], [1, 1, 0], [5, 6, 7]])
    R = ck.row_normalise(M)
    np.testing.assert_allclose(R.sum(1).numpy(), [1, 1, 1])
    np.testing.assert_allclose(R[1].numpy(), [0.5, 0.5, 0.0])
    zero_row = ck.row_normalise(torch.tensor([[0, 0], [1, 3]]))
    assert zero_row[0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "confusion,k,exc,match",
    [
        (torch.ones(3, 4), 1, ValueError, "square"),
        (torch.ones(3, 3), 3, ValueError, "between 1 and C - 1 = 2"),
        (torch.ones(3, 3), 0, ValueError, "between 1 and C - 1"),
        (torch.tensor([[1.0, -1], [0, 1]]), 1, ValueError, "negative"),
        (torch.tensor([[1.0, float("nan")], [0, 1]]), 1, ValueError, "NaN"),
        (torch.ones(3, 3), 1.5, TypeError, "integer"),
    ],
)
def test_contrast_sets_errors(confusion, k, exc, match):
    with pytest.raises(exc, match=match):
        ck.contrast_sets(confusion, k)


class Lookup(nn.Module):
    """Predicts the class stored in pixel (0, 0, 0) of each image."""

    def __init__(self, C: int):
        super().__init__()
        self.C = C
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), self.C).float() + self.dummy


def test_confusion_matrix_by_hand():
    true = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 1, 1, 0, 2, 2, 1])
    x = torch.zeros(9, 3, 2, 2)
    x[:, 0, 0, 0] = pred.float()
    loader = DataLoader(TensorDataset(x, true), batch_size=4)
    model = Lookup(3)
    model.train()
    M = ck.confusion_matrix(model, loader, progress=False)
    assert M.tolist() == [[2, 1, 0], [0, 2, 0], [1, 1, 2]]
    assert model.training  # left as found
    assert ck.contrast_sets(M, 1).tolist() == [[1], [0], [0]]


def test_confusion_matrix_label_out_of_range():
    x = torch.zeros(2, 3, 2, 2)
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 3])), batch_size=2)
    with pytest.raises(ValueError, match="labels outside 0..2"):
        ck.confusion_matrix(Lookup(3), loader, progress=False)


# --------------------------------------------------------------------------- tiebreak (issue 9)

from casekit.cam.contrast import contrast_decisions, decision_counts  # noqa: E402

# Rows: 0 → class 1 by counts, 2 and 3 tie at 0; 1 → 0 and 2 tie at 1, 3 at 0; 2 → no confusion at all;
# 3 → 1 and 2 tie at 3.
M_TIES = torch.tensor([[8, 2, 0, 0], [1, 9, 1, 0], [0, 0, 5, 0], [0, 3, 3, 4]])
P_TIES = torch.tensor([[0.70, 0.20, 0.03, 0.07],
                       [0.10, 0.80, 0.05, 0.05],
                       [0.10, 0.30, 0.50, 0.10],  # 0 and 3 tie in the probabilities too
                       [0.02, 0.18, 0.20, 0.60]], dtype=torch.float64)


def test_tiebreak_changes_nothing_without_ties():
    M = torch.tensor([[9, 3, 1, 2], [4, 7, 2, 1], [1, 2, 8, 3], [3, 1, 2, 6]])
    P = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    for k in (1, 2, 3):
        assert ck.contrast_sets(M, k, tiebreak=P).tolist() == ck.contrast_sets(M, k).tolist()
    assert ck.contrast_sets(M, 3, tiebreak=P).tolist() == [[1, 3, 2], [0, 2, 3], [3, 1, 0], [0, 2, 1]]
    assert (contrast_decisions(M, 2, P) == "counts").all()
    assert decision_counts(contrast_decisions(M, 2, P)) == {"counts": 8, "tiebreak": 0, "index": 0}


def test_ties_broken_by_the_tiebreak_then_index():
    # by hand: row 0: 1 (counts), then 3 (.07) before 2 (.03); row 1: 0 (.10) before 2 (.05), then 3;
    # row 2: 1 (.30), then 0 and 3 tie at .10 → index; row 3: 2 (.20) before 1 (.18), then 0.
    assert ck.contrast_sets(M_TIES, 3, tiebreak=P_TIES).tolist() == [[1, 3, 2], [0, 2, 3], [1, 0, 3],
                                                                     [2, 1, 0]]
    assert ck.contrast_sets(M_TIES, 3).tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [1, 2, 0]]  # index rule
    assert ck.contrast_sets(M_TIES.numpy(), 2,
                            tiebreak=P_TIES.numpy()).tolist() == [[1, 3], [0, 2], [1, 0], [2, 1]]
    d2 = contrast_decisions(M_TIES, 2, P_TIES)
    assert d2.tolist() == [["counts", "tiebreak"], ["counts", "counts"], ["tiebreak", "index"],
                           ["counts", "counts"]]
    assert decision_counts(d2) == {"counts": 5, "tiebreak": 2, "index": 1}
    d1 = contrast_decisions(M_TIES, 1, P_TIES)
    assert d1.tolist() == [["counts"], ["tiebreak"], ["tiebreak"], ["tiebreak"]]
    # without a tiebreak every tie at the cut-off is an index decision
    assert contrast_decisions(M_TIES, 2).tolist() == [["counts", "index"], ["counts", "counts"],
                                                      ["index", "index"], ["counts", "counts"]]
    assert decision_counts(contrast_decisions(M_TIES, 2)) == {"counts": 5, "tiebreak": 0, "index": 3}
    # k = C − 1: nothing is left out, membership is forced
    assert (contrast_decisions(M_TIES, 3, P_TIES) == "counts").all()


def test_exact_ties_in_both_fall_back_to_index():
    M = torch.zeros(4, 4)
    flat = torch.full((4, 4), 0.25)
    expected = [[1, 2], [0, 2], [0, 1], [0, 1]]
    assert ck.contrast_sets(M, 2, tiebreak=flat).tolist() == ck.contrast_sets(M, 2).tolist() == expected
    assert decision_counts(contrast_decisions(M, 2, flat)) == {"counts": 0, "tiebreak": 0, "index": 8}


def _brute_force(M: np.ndarray, P: np.ndarray, k: int) -> list[list[int]]:
    R = M / np.maximum(M.sum(1, keepdims=True), 1)
    return [sorted((v for v in range(len(M)) if v != u), key=lambda v: (-R[u, v], -P[u, v], v))[:k]
            for u in range(len(M))]


def test_tiebreak_against_brute_force_and_never_index_with_distinct_tiebreak():
    rng = np.random.default_rng(0)
    for trial in range(20):
        C = int(rng.integers(3, 9))
        M = rng.integers(0, 3, size=(C, C)) * (rng.random((C, C)) < 0.4)  # many ties
        P = rng.random((C, C))  # distinct values: no exact ties
        for k in range(1, C):
            assert ck.contrast_sets(M, k, tiebreak=P).tolist() == _brute_force(M, P, k)
            d = contrast_decisions(M, k, P)
            assert "index" not in d and d.shape == (C, k)
            sets = ck.contrast_sets(M, k, tiebreak=P).numpy()
            assert all(u not in sets[u] for u in range(C))


@pytest.mark.parametrize(
    "tiebreak,k,exc,match",
    [
        (torch.ones(4, 4), 4, ValueError, "between 1 and C - 1 = 3"),
        (torch.ones(3, 3), 1, ValueError, "tiebreak must have the confusion's shape"),
        (torch.ones(4, 5), 1, ValueError, "tiebreak must be a square"),
        (torch.full((4, 4), float("nan")), 1, ValueError, "tiebreak contains NaN"),
    ],
)
def test_tiebreak_errors(tiebreak, k, exc, match):
    with pytest.raises(exc, match=match):
        ck.contrast_sets(M_TIES, k, tiebreak=tiebreak)
    with pytest.raises(exc, match=match):
        contrast_decisions(M_TIES, k, tiebreak)


def test_decision_counts_rejects_unknown_labels():
    with pytest.raises(ValueError, match="decisions must be among"):
        decision_counts(np.array([["counts", "guess"]]))


def test_confusion_probs_by_hand():
    true = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 1, 1, 0, 2, 2, 1])
    x = torch.zeros(9, 3, 2, 2)
    x[:, 0, 0, 0] = pred.float()
    loader = DataLoader(TensorDataset(x, true), batch_size=4)
    model = Lookup(3)  # logits = one-hot(pred): softmax gives a = e/(e+2) to pred, b = 1/(e+2) to the others
    a, b = math.e / (math.e + 2), 1 / (math.e + 2)
    P = ck.confusion_matrix(model, loader, progress=False, kind="probs")
    assert P.dtype == torch.float64 and P.shape == (3, 3)
    expected = [[(2 * a + b) / 3, (a + 2 * b) / 3, b], [b, a, b],
                [(a + 3 * b) / 4, (a + 3 * b) / 4, (2 * a + 2 * b) / 4]]
    np.testing.assert_allclose(P.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(P.sum(1).numpy(), 1.0, rtol=1e-12)
    counts, probs = ck.confusion_matrix(model, loader, progress=False, kind="both")
    assert counts.tolist() == ck.confusion_matrix(model, loader, progress=False).tolist()
    assert torch.equal(probs, P)
    # row 0: class 1 by counts; row 1: classes 0 and 2 tie in counts (0) and in probabilities (b) → index
    assert ck.contrast_sets(counts, 1, tiebreak=probs).tolist()[:2] == [[1], [0]]
    assert contrast_decisions(counts, 1, probs).tolist()[:2] == [["counts"], ["index"]]


def test_confusion_probs_needs_every_class():
    x = torch.zeros(4, 3, 2, 2)
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 0, 2, 2])), batch_size=2)
    with pytest.raises(ValueError, match=r"classes \[1\] have no images"):
        ck.confusion_matrix(Lookup(3), loader, progress=False, kind="probs")
    assert (ck.confusion_matrix(Lookup(3), loader, progress=False).tolist()
            == [[2, 0, 0], [0, 0, 0], [2, 0, 0]])
    with pytest.raises(ValueError, match="kind must be one of"):
        ck.confusion_matrix(Lookup(3), loader, progress=False, kind="rates")
