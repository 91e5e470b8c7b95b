"""casekit.subjects.finetune on the CPU: untrained DenseNet-201, a fake CIFAR-100 folder, 32×32 images, one
batch per epoch.

Checks that a checkpoint is written each epoch, that a restarted run resumes from it and ends with exactly the
weights of an uninterrupted run with the same seed, and the error paths.
"""

from __future__ import annotations

import pytest
import torch

from casekit.subjects import data as D
from casekit.subjects import finetune as FT
from casekit.subjects.models import MissingWeightsError

TINY = dict(device="cpu", weights=None, batch_size=2, image_size=32, max_steps=1, max_eval_batches=1,
            verify_md5=False, progress=False)


@pytest.fixture(scope="module")
def one_thread():
    """DenseNet-201 on 2×3×32×32 batches: one intra-op thread is as fast as two and immune to the OpenMP
    slow-down when other processes share the two cores (measured: 0.3 s vs 7–20 s per step under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """Run A: 1 epoch, then restarted with epochs=2 (resumes).  Run B: 2 epochs in one go.  Same seed."""
    base = tmp_path_factory.mktemp("finetune")
    root = D.write_fake_cifar100(base / "data", n_train=4, n_test=2, seed=0)
    first = FT.finetune_cifar100(3, root, base / "a", epochs=1, **TINY)
    after_first = torch.load(first["checkpoint"], weights_only=True)
    resumed = FT.finetune_cifar100(3, root, base / "a", epochs=2, **TINY)
    straight = FT.finetune_cifar100(3, root, base / "b", epochs=2,
                                    **{**TINY, "max_eval_batches": None, "evaluate": False})
    return {"root": root, "base": base, "first": first, "after_first": after_first, "resumed": resumed,
            "straight": straight}


def test_checkpoint_after_each_epoch(runs):
    first, ckpt = runs["first"], runs["after_first"]
    assert first["checkpoint"] == FT.checkpoint_path(runs["base"] / "a", 3) and first["epoch"] == 1
    assert ckpt["epoch"] == 1 and ckpt["config"]["seed"] == 3 and ckpt["config"]["format"] == FT.FORMAT
    assert ckpt["model"]["classifier.weight"].shape == (100, 1920)
    row = first["history"][0]
    assert (row["epoch"] == 1 and row["steps"] == 1 and 0 <= row["train_accuracy"] <= 1
            and row["train_loss"] > 0)
    assert row["test_accuracy"] in (0.0, 0.5, 1.0)  # one test batch of 2 images
    assert not list((runs["base"] / "a").glob(".*.tmp"))  # no half-written files left


def test_resume_continues_and_matches_an_uninterrupted_run(runs):
    resumed, straight = runs["resumed"], runs["straight"]
    assert resumed["epoch"] == 2 and [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == runs["first"]["history"][0]  # epoch 1 was not redone
    a = torch.load(resumed["checkpoint"], weights_only=True)
    b = torch.load(straight["checkpoint"], weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert set(a["model"]) == set(b["model"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # training moved the weights away from the first epoch's
    assert not torch.equal(a["model"]["classifier.weight"], runs["after_first"]["model"]["classifier.weight"])
    assert [r["train_loss"] for r in resumed["history"]] == [r["train_loss"] for r in straight["history"]]
    assert straight["history"][1]["test_accuracy"] is None


def test_finished_run_returns_at_once_and_settings_must_match(runs, one_thread):
    done = FT.finetune_cifar100(3, runs["root"], runs["base"] / "a", epochs=2, **TINY)
    assert done["epoch"] == 2 and done["history"] == runs["resumed"]["history"]
    with pytest.raises(ValueError, match="lr: checkpoint 1e-05, now 0.001"):
        FT.finetune_cifar100(3, runs["root"], runs["base"] / "a", epochs=3, **{**TINY, "lr": 1e-3})


def test_load_finetuned(runs, one_thread):
    model, layers = FT.load_finetuned(runs["resumed"]["checkpoint"])
    assert not model.training and layers["final_conv"] == "features.denseblock4.denselayer32.conv2"
    saved = torch.load(runs["resumed"]["checkpoint"], weights_only=True)["model"]
    assert torch.equal(model.classifier.weight, saved["classifier.weight"])
    with pytest.raises(MissingWeightsError, match="python -m casekit.subjects.finetune"):
        FT.load_finetuned(runs["base"] / "missing.pt")


def test_cli_reports_missing_data_and_finished_runs(runs, one_thread, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path))
    assert FT.main(["--seed", "0", "--out", str(tmp_path / "out"), "--weights", "none"]) == 2
    err = capsys.readouterr().err
    assert "CIFAR-100 (train split) not found" in err and str(tmp_path / "cifar100") in err
    args = ["--seed", "3", "--data", str(runs["root"]), "--out", str(runs["base"] / "a"), "--epochs", "2",
            "--weights", "none", "--batch-size", "2", "--image-size", "32", "--max-steps", "1",
            "--max-eval-batches", "1", "--no-verify-md5", "--quiet"]  # fmt: skip
    assert FT.main(args) == 0
    assert "seed 3: 2 epochs" in capsys.readouterr().out


def test_missing_pretrained_weights_stop_before_training(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="densenet201-c1103571.pth"):
        FT.finetune_cifar100(0, runs["root"], tmp_path / "out", epochs=1,
                             **{**TINY, "weights": "IMAGENET1K_V1"})
    assert not FT.checkpoint_path(tmp_path / "out", 0).exists()


def test_paper_settings():
    assert FT.PAPER_SETTINGS == {"epochs": 20, "lr": 1e-5, "weight_decay": 5e-4, "batch_size": 32,
                                 "image_size": 224}
    assert FT.SEEDS == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="max_steps"):
        FT.finetune_cifar100(0, None, None, max_steps=0)
