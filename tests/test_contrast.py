"""Contrast sets (paper eq. 2) and confusion matrices, by hand."""

from __future__ import annotations

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
