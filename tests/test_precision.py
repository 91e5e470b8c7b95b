"""Per-method precision (RunConfig.precision, casekit.study.precision): the policy, the bf16-vs-fp32 exactness
check, its fall-back to fp32 with a recorded reason, and how a run stores and reuses the decision."""

from __future__ import annotations

import json

import pytest
import torch
from test_experiments import TINY, tiny_subject
from torch import nn

import casekit as ck
from casekit.study import precision as P
from casekit.study.runner import run
from casekit.study.subject import Subject


def test_policy_per_method(monkeypatch):
    cfg = TINY.replace(methods=ck.METHODS)
    assert set(P.candidate_dtypes(cfg.replace(precision="fp32")).values()) == {"fp32"}
    forced = P.candidate_dtypes(cfg.replace(precision="bf16"))
    assert forced["ablationcam"] == "fp32"  # never: bf16 rounds away the logit differences it is made of
    assert {m for m, d in forced.items() if d == "bf16"} == set(ck.METHODS) - {"ablationcam"}
    monkeypatch.setattr(P, "fast_bf16", lambda device: True)
    auto = P.candidate_dtypes(cfg.replace(precision="auto"))  # on a CPU: Score-CAM only
    assert {m for m, d in auto.items() if d == "bf16"} == {"scorecam"}
    monkeypatch.setattr(P, "fast_bf16", lambda device: False)
    assert set(P.candidate_dtypes(cfg.replace(precision="auto")).values()) == {"fp32"}
    with pytest.raises(ValueError, match="precision must be one of"):
        TINY.replace(precision="fp16")


class _FlatLogits(nn.Module):
    """Logits 1000 + a small image-dependent part: bf16 (8 bits of mantissa) cannot tell Score-CAM's masked
    scores apart, so its channel weights go flat."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            self.fc.weight.mul_(20.0)  # masked scores spread over a few units ...
            self.fc.bias.fill_(1000.0)  # ... around 1000, where bf16's step is 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _flat_subject() -> Subject:
    model = _FlatLogits().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, 12, 12, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return Subject(model, {"final_conv": "conv"}, [(x[i], int(y[i])) for i in range(40)],
                   torch.full((4, 4), 1) + 10 * torch.eye(4, dtype=torch.long), fingerprint="flat")


def test_the_check_falls_back_to_fp32_with_the_reason(tmp_path):
    cfg = TINY.replace(model="flat", methods=("scorecam", "ablationcam"), precision="bf16", n_images=32,
                       batch_size=8, sparsity_layers=(), siblings=False)
    res = run(cfg, _flat_subject(), results_dir=tmp_path, progress=False)
    records = {r["method"]: r for r in json.loads((res.path / P.PRECISION_FILE).read_text())["records"]}
    assert records["ablationcam"]["precision"] == "fp32"
    assert records["ablationcam"]["reason"] == "always float32"
    sc = records["scorecam"]
    assert sc["candidate"] == "bf16" and sc["precision"] == "fp32" and sc["n_images"] == 32
    assert "median map r" in sc["reason"] and sc["median_r"] < P.CHECK_MEDIAN_R
    store = json.loads((res.path / "maps" / "store.json").read_text())["config"]
    assert store["precision"] == {"scorecam": "fp32", "ablationcam": "fp32"}
    table = P.load_precision(tmp_path)
    assert set(table["method"]) == {"scorecam", "ablationcam"} and (table["precision"] == "fp32").all()


def test_a_passing_check_keeps_bf16_and_is_reused(tmp_path, monkeypatch):
    cfg = TINY.replace(methods=("gradcam", "scorecam"), precision="bf16", n_images=12)
    subject = tiny_subject()
    first = run(cfg, subject, results_dir=tmp_path, progress=False)
    records = {r["method"]: r for r in P.read_precision(first.path, json.loads(
        (first.path / P.PRECISION_FILE).read_text())["identity"])}
    for m in ("gradcam", "scorecam"):
        r = records[m]
        assert r["precision"] == "bf16", r
        assert r["agreement_within"] >= P.CHECK_SHARE and r["drop_within"] >= P.CHECK_SHARE
        assert r["median_r"] >= P.CHECK_MEDIAN_R
    monkeypatch.setattr(P, "precision_check", lambda *a, **k: pytest.fail("the stored check was not reused"))
    again = run(cfg, subject, results_dir=tmp_path, progress=False)
    assert again.computed_batches == 0
    # the rows are the bf16 maps: the engine's own bf16 maps of the same images
    assert first.maps.equals(again.maps)


def test_forcing_a_failure_triggers_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "CHECK_MEDIAN_R", 1.5)  # no map correlation reaches it
    cfg = TINY.replace(methods=("scorecam",), precision="bf16", n_images=12, sparsity_layers=())
    res = run(cfg, tiny_subject(), results_dir=tmp_path, progress=False)
    (rec,) = json.loads((res.path / P.PRECISION_FILE).read_text())["records"]
    assert rec["precision"] == "fp32" and "median map r" in rec["reason"]
    direct = ck.explain(tiny_subject().model, torch.stack([tiny_subject().dataset[i][0] for i in range(2)]),
                        "features.2", ["scorecam"], torch.tensor([[0], [1]]), amp_dtype={"scorecam": None})
    assert direct.amp == {"scorecam": None}
