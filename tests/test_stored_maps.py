"""Every map a run computes is stored at the layer's resolution (``raw_map``), and what is recomputed from the
stored maps equals what the run measured, exactly: the agreements at the run's k, the agreements at any other
k against a direct engine call, and the diagnostic study that reads them instead of explaining again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from test_experiments import TINY, tiny_subject

import casekit as ck
import casekit.study.diagnostic_study as DS
from casekit.evaluation.metrics import topk_agreement
from casekit.study.rows import final_maps, stored_maps
from casekit.study.runner import run
from casekit.study.subject import load_batch

CFG = TINY.replace(methods=ck.METHODS, n_images=10, precision="fp32")


def _pairs(maps: pd.DataFrame, method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = maps[maps["method"] == method].sort_values(["image_id", "target"])
    return rows[rows["target"] == "top1"], rows[rows["target"] == "top2"]


def test_stored_maps_reproduce_the_runs_agreements_exactly(tmp_path):
    res = run(CFG, tiny_subject(), results_dir=tmp_path, progress=False)
    maps = res.maps
    assert maps["raw_map"].notna().all() and (maps["map_h"] > 0).all()
    for m in CFG.methods:
        top1, top2 = _pairs(maps, m)
        a = topk_agreement(final_maps(top1), final_maps(top2), CFG.k, CFG.ties, CFG.sample_seed).double()
        np.testing.assert_array_equal(a.numpy(), top2["agreement"].to_numpy())  # bit for bit, NaNs included


def test_stored_maps_are_the_engines_maps(tmp_path):
    subject = tiny_subject()
    res = run(CFG, subject, results_dir=tmp_path, progress=False)
    top1, top2 = _pairs(res.maps, "gradcam")
    ids = top1["image_id"].tolist()
    images, labels, _ = load_batch(subject.dataset, ids, CFG.device)
    targets = torch.tensor(np.stack([top1["target_class"], top2["target_class"]], 1))
    direct = ck.explain(subject.model, images, subject.layer_name(CFG.layer), ["gradcam"], targets)
    torch.testing.assert_close(stored_maps(top1), direct.raw["gradcam"][:, 0], rtol=0, atol=0)
    torch.testing.assert_close(final_maps(top2), direct.maps["gradcam"][:, 1], rtol=0, atol=0)
    for k in (0.1, 0.2):  # any k: the same numbers as from the engine's own maps
        stored = topk_agreement(final_maps(top1), final_maps(top2), k, CFG.ties, CFG.sample_seed)
        fresh = topk_agreement(direct.maps["gradcam"][:, 0], direct.maps["gradcam"][:, 1], k, CFG.ties,
                               CFG.sample_seed)
        torch.testing.assert_close(stored, fresh, rtol=0, atol=0, equal_nan=True)


def test_the_diagnostic_study_reads_the_runs_maps(tmp_path, monkeypatch):
    subject = tiny_subject()
    study = run(CFG, subject, results_dir=tmp_path / "study", progress=False)
    calls = []
    original = DS.explain

    def counting(*args, **kwargs):
        calls.append(list(args[3]))
        return original(*args, **kwargs)

    monkeypatch.setattr(DS, "explain", counting)
    rows = DS.diagnostic_run(CFG, subject, results_dir=tmp_path / "diag", study_dir=tmp_path / "study",
                             progress=False)
    # the engine ran again only for the method the study did not compute
    assert calls and all(c == ["gradcam-diff"] for c in calls)
    at_k = rows[np.isclose(rows["k"], CFG.k)]
    for m in CFG.methods:
        _, top2 = _pairs(study.maps, m)
        mine = at_k[at_k["method"] == m].sort_values("image_id")
        np.testing.assert_array_equal(mine["agreement"].to_numpy(), top2["agreement"].to_numpy())
        first, _ = _pairs(study.maps, m)
        np.testing.assert_allclose(mine["relative_drop"].to_numpy(), first["relative_drop"].to_numpy())
    assert set(rows["method"]) == set(DS.DIAGNOSTIC_METHODS)


def test_diagnostic_samples_reads_the_study_runs_records(tmp_path):
    from casekit.study.profiles import study_config
    from casekit.study.runner import write_sample
    from casekit.subjects.data import SampleCounts

    cfg = study_config("demo", "resnet", n_images=5)
    write_sample(tmp_path / cfg.name, cfg, SampleCounts(pool=1000, scanned=1000, correct=930, drawn=5))
    got = DS.diagnostic_samples(["resnet", "vgg"], profile="demo", n_images=5, results_dir=tmp_path)
    assert got[["model", "layer", "n_images", "available", "pool"]].values.tolist() == [
        ["resnet", "final_conv", 5, 930.0, 1000]]  # vgg's run wrote no record: left out, not invented
    assert DS.diagnostic_samples(["resnet"], profile="demo", results_dir=tmp_path / "none").empty
