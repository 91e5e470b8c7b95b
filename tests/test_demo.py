"""The demo profile: model zoo (architectures, layer roles, crash-safe cache) and the entry points in ck.demo.

Tests marked ``slow`` use a trained zoo: the zoo of the suite's size (``CASEKIT_DEMO_ZOO=tiny``, set by
conftest: one session-scoped ``train_all``, seconds), and for the accuracy bar and the sibling confusions the
standard zoo that the book's demo profile runs — its DenseNet always (trained once per cache, under a minute
on 2 cores), every other member where its checkpoint is already cached (``make book`` trains them).  The other
tests train tiny models in temporary caches.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

import casekit as ck
from casekit.subjects import synthetic as sy
from casekit.subjects import zoo

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = sy.BenchmarkConfig(split_sizes={"train": 192, "val": 60, "test": 60})
TINY = zoo.TrainSettings(epochs=3, batch_size=32)


def _output_shape(model: nn.Module, layer: str, size: int = 64) -> tuple[int, ...]:
    seen = {}

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["shape"] = tuple(output.shape)

    handle = dict(model.named_modules())[layer].register_forward_hook(record)
    with torch.no_grad():
        model.eval()(torch.zeros(2, 3, size, size))
    handle.remove()
    return seen["shape"]


# --------------------------------------------------------------------------- architectures (untrained, fast)


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_layer_roles_follow_the_papers_paths_and_give_8x8_maps(family):
    model = zoo.build(family, num_classes=10)
    layers = zoo.layer_roles(family)
    modules = dict(model.named_modules())
    pattern = {
        "resnet": r"layer4\.\d+\.conv2",
        "vgg": r"features\.\d+",
        "densenet": r"features\.denseblock\d+\.denselayer\d+\.conv2",
        "convnext": r"features\.\d+\.\d+\.block\.0",
    }[family]
    assert re.fullmatch(pattern, layers["final_conv"])
    final = modules[layers["final_conv"]]
    assert isinstance(final, nn.Conv2d)
    # it is the last convolution of the feature extractor (ConvNeXt: the last block's depthwise conv)
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)
             and (family != "convnext" or n.endswith("block.0"))]
    assert convs[-1] == layers["final_conv"]
    if family == "convnext":
        assert final.groups == final.in_channels == final.out_channels  # depthwise
    shape = _output_shape(model, layers["final_conv"])
    assert len(shape) == 4 and 7 <= shape[2] <= 8 and 7 <= shape[3] <= 8
    if family == "densenet":
        assert layers["norm5"] == "features.norm5" and isinstance(modules["features.norm5"], nn.BatchNorm2d)
        assert _output_shape(model, "features.norm5")[2:] == shape[2:]
    type_name = {"resnet": "ResNet", "vgg": "VGG", "densenet": "DenseNet", "convnext": "ConvNeXt"}[family]
    assert type(model).__name__ == type_name and type(model).__module__.startswith("torchvision.models")


def test_unknown_family_is_refused_with_the_valid_ones():
    for call in (lambda: ck.demo.model("alexnet"), lambda: ck.demo.confusion("resnet50"),
                 lambda: zoo.build("vit", 10)):
        with pytest.raises(ValueError,
                           match="unknown model family .*'resnet', 'vgg', 'densenet', 'convnext'"):
            call()
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        zoo.training_config("resnet", seed=-1)


# ---------------------------------------------------------------------- training and the cache (tiny configs)


def _tiny(family="resnet", seed=0, settings=TINY):
    return zoo.get(family, seed, data=TINY_DATA, settings=settings, progress=False)


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cache_hit_deterministic_training_and_retraining_on_config_change(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path / "a"))
    torch.manual_seed(5)
    first = _tiny()
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # training left the caller's random state alone
    assert first.trained_now and first.path.exists() and first.path.parent == tmp_path / "a" / "zoo"
    assert not first.model.training and first.confusion.shape == (10, 10) and int(first.confusion.sum()) == 60
    assert len(first.history) == TINY.epochs
    mtime, trained = first.path.stat().st_mtime_ns, list(zoo.TRAINED_IN_THIS_PROCESS)
    again = _tiny()
    assert not again.trained_now and zoo.TRAINED_IN_THIS_PROCESS == trained
    assert again.path.stat().st_mtime_ns == mtime
    assert _state_equal(first.model, again.model) and torch.equal(first.confusion, again.confusion)
    # another config → another file; another seed → other weights
    longer = _tiny(settings=zoo.TrainSettings(epochs=4, batch_size=32))
    assert longer.trained_now and longer.path != first.path
    other_seed = _tiny(seed=1)
    assert other_seed.trained_now and not _state_equal(first.model, other_seed.model)
    # same seed in a fresh cache → the same weights
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path / "b"))
    fresh = _tiny()
    assert fresh.trained_now and _state_equal(first.model, fresh.model)


def test_a_damaged_checkpoint_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path))
    good = _tiny()
    good.path.write_bytes(good.path.read_bytes()[:1000])  # e.g. a disk error after the fact
    with pytest.warns(UserWarning, match="unreadable"):
        again = _tiny()
    assert again.trained_now and _state_equal(good.model, again.model)


_WORKER = """
import os, sys
os.environ["CASEKIT_CACHE"] = sys.argv[1]
from casekit.subjects import synthetic as sy
from casekit.subjects import zoo
data = sy.BenchmarkConfig(split_sizes={{"train": {train}, "val": 60, "test": 60}})
t = zoo.get("resnet", 0, data=data, settings=zoo.TrainSettings(epochs={epochs}, batch_size=32),
            progress=False)
print("TRAINED" if t.trained_now else "LOADED", flush=True)
"""


def _spawn(cache: Path, train: int, epochs: int) -> subprocess.Popen:
    code = _WORKER.format(train=train, epochs=epochs)
    return subprocess.Popen([sys.executable, "-c", code, str(cache)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_a_killed_training_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """SIGKILL after the first epoch's state is saved: no checkpoint appears; the rerun resumes and
    ends with exactly the weights of an uninterrupted run."""
    train, epochs = 256, 4
    data = sy.BenchmarkConfig(split_sizes={"train": train, "val": 60, "test": 60})
    settings = zoo.TrainSettings(epochs=epochs, batch_size=32)
    cache = tmp_path / "killed"
    proc = _spawn(cache, train, epochs)
    deadline = time.monotonic() + 300
    partial = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((cache / "zoo").glob("*.partial.pt")) if (cache / "zoo").exists() else []
        if found:
            partial = found[0]
            break
        time.sleep(0.005)
    assert partial is not None, f"no training state appeared: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    monkeypatch.setenv("CASEKIT_CACHE", str(cache))
    config = zoo.training_config("resnet", 0, data, settings=settings)
    assert not zoo.member_checkpoint(config).exists(), "the run finished before it was killed"
    state = torch.load(partial, weights_only=True)
    assert 1 <= state["epoch"] < epochs
    resumed = zoo.get("resnet", 0, data=data, settings=settings, progress=False)
    assert resumed.trained_now and resumed.path.exists() and not partial.exists()
    assert [h["epoch"] for h in resumed.history] == list(range(1, epochs + 1))
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path / "clean"))
    uninterrupted = zoo.get("resnet", 0, data=data, settings=settings, progress=False)
    assert _state_equal(resumed.model, uninterrupted.model)
    assert torch.equal(resumed.confusion, uninterrupted.confusion)


def test_concurrent_processes_train_once_and_share_the_checkpoint(tmp_path):
    procs = [_spawn(tmp_path, 192, 2) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(o[0].strip() for o in outs) == ["LOADED", "TRAINED"]
    assert len(list((tmp_path / "zoo").glob("resnet-seed0-*.pt"))) == 1


# --------------------------------------------------------------------------- the trained demo zoo (slow)


@pytest.fixture(scope="session")
def members() -> dict[tuple[str, int], zoo.Trained]:
    """The whole demo zoo of this session's size (tiny in the suite), trained at most once per cache."""
    return {(t.family, t.seed): t for t in ck.demo.train_all(progress=False)}


#: The standard zoo's member that the suite always trains (the others: where the cache has them): the
#: DenseNet, the family of the seed study and the cheapest to train (about 45 s on 2 cores).
ALWAYS_STANDARD = ("densenet", 0)


def standard_member(family: str, seed: int) -> zoo.Trained:
    """A member of the standard zoo (the book's demo profile), whatever this session's zoo size: trained for
    :data:`ALWAYS_STANDARD`, loaded from the cache for the others (skipped when not cached)."""
    config = zoo.training_config(family, seed, ck.demo.CONFIG, settings=zoo.TRAINING[family])
    if (family, seed) != ALWAYS_STANDARD and not zoo.member_checkpoint(config).exists():
        pytest.skip(f"the standard {family} seed {seed} is not in this cache (make book trains it); the "
                    f"suite trains only the standard {ALWAYS_STANDARD[0]}")
    return zoo.get(family, seed, data=ck.demo.CONFIG, settings=zoo.TRAINING[family], progress=False)


def test_the_suite_runs_on_the_tiny_zoo_and_the_standard_zoo_is_the_default(monkeypatch):
    assert ck.demo.zoo_size() == "tiny"  # conftest: the suite never trains the standard zoo by accident
    t = ck.demo.trained("resnet", 0, progress=False)
    assert t.config["train"] == asdict(zoo.TINY_TRAINING["resnet"])
    assert t.config["data"] == ck.demo.CONFIG.to_dict()  # the same data as the standard zoo
    monkeypatch.delenv(ck.demo.ZOO_ENV)
    assert ck.demo.zoo_size() == "standard"
    monkeypatch.setenv(ck.demo.ZOO_ENV, "huge")
    with pytest.raises(ValueError, match="unknown demo zoo size 'huge'; choose one of 'standard', 'tiny'"):
        ck.demo.model("resnet")


@pytest.fixture(scope="session")
def test_split() -> sy.SyntheticDataset:
    return ck.demo.dataset("test", progress=False)


@pytest.mark.slow
def test_the_zoo_has_every_family_and_five_densenet_seeds(members):
    assert sorted(members) == sorted([(f, 0) for f in zoo.FAMILIES] + [("densenet", s) for s in (1, 2, 3, 4)])


@pytest.mark.slow
def test_every_member_stores_its_measured_test_accuracy(members, test_split):
    for (family, seed), t in members.items():
        acc = zoo.accuracy(t.model, test_split)
        assert abs(acc - t.test_accuracy) < 0.005, (family, seed)  # the number stored with the checkpoint
        assert acc > 0.1  # above chance (10 classes), even for the tiny zoo


@pytest.mark.slow
@pytest.mark.parametrize("family,seed", zoo.MEMBERS)
def test_every_standard_member_reaches_90_percent_test_accuracy(family, seed, test_split):
    t = standard_member(family, seed)
    acc = zoo.accuracy(t.model, test_split)
    assert acc >= 0.90, f"{family} seed {seed}: test accuracy {acc:.3f}"
    assert abs(acc - t.test_accuracy) < 0.005  # the number stored with the checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("family,seed", zoo.MEMBERS)
def test_siblings_are_what_the_standard_models_confuse(family, seed):
    t = standard_member(family, seed)
    most = ck.contrast_sets(t.confusion, 1)[:, 0]
    rate = sum(int(most[c]) in ck.demo.siblings(c) for c in range(len(most))) / len(most)
    assert rate >= 0.8, (f"{family} seed {seed}: the most-confused class is a sibling for only "
                         f"{rate:.0%} of classes")


@pytest.mark.slow
def test_the_stored_confusion_is_the_validation_confusion(members):
    t = members[("vgg", 0)]
    val = ck.demo.dataset("val", progress=False)
    loader = torch.utils.data.DataLoader(val, batch_size=500)
    recomputed = ck.confusion_matrix(t.model, loader, num_classes=10, progress=False)
    assert torch.equal(recomputed, ck.demo.confusion("vgg"))
    assert int(recomputed.sum()) == len(val) == 2000


@pytest.mark.slow
def test_layer_roles_resolve_to_8x8_maps_in_the_engine(members, test_split):
    images = torch.stack([test_split[i][0] for i in range(2)])
    for family in zoo.FAMILIES:
        model, layers = ck.demo.model(family)
        for role, layer in layers.items():
            res = ck.explain(model, images, layer, ["gradcam"], targets=[0, 1])
            assert res.activations.dim() == 4 and 7 <= res.activations.shape[-1] <= 8, (family, role)
            assert res.maps["gradcam"].shape == (2, 1, 64, 64)


@pytest.mark.slow
def test_second_call_loads_from_the_cache_in_seconds(members):
    trained = list(zoo.TRAINED_IN_THIS_PROCESS)
    path = members[("densenet", 3)].path
    mtime = path.stat().st_mtime_ns
    t = time.perf_counter()
    model, layers = ck.demo.model("densenet", seed=3)
    assert time.perf_counter() - t < 3.0
    assert zoo.TRAINED_IN_THIS_PROCESS == trained and path.stat().st_mtime_ns == mtime
    assert not model.training and set(layers) == {"final_conv", "norm5"}
    assert _state_equal(model, members[("densenet", 3)].model)


@pytest.mark.slow
def test_contrast_sets_come_from_the_validation_confusion(members):
    sets = ck.demo.contrast("resnet", k=2)
    assert sets.shape == (10, 2) and sets.dtype == torch.long
    assert torch.equal(sets, ck.contrast_sets(members[("resnet", 0)].confusion, 2))
    assert all(c not in sets[c].tolist() for c in range(10))


def test_demo_dataset_and_class_structure(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path))
    ds = ck.demo.dataset("test", size=20, progress=False)
    image, label, masks = ds[3]
    assert image.shape == (3, 64, 64) and label == 3 and masks["unique"].dtype == torch.bool
    assert ck.demo.groups == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert ck.demo.siblings(3) == [2] and len(ck.demo.class_names()) == 10
    assert ds.class_names == ck.demo.class_names() and ds.groups == ck.demo.groups
