"""casekit.subjects.data: ImageNet folders (both layouts), seeded correct-only samples, disjoint splits,
CIFAR-100, the shared CIFAR-10 images and the missing-data messages."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch
import torchvision
from conftest import REFERENCE_CIFAR10, REPO, needs_shared_cifar10
from PIL import Image
from scipy import io as sio
from torch import nn
from torch.utils.data import TensorDataset

from casekit.subjects import data as D

# wnid → torchvision class index (sorted-wnid order) and name, checked against torchvision's own metadata
# below
TENCH, KIT_FOX, TOILET_TISSUE = (("n01440764", 0, "tench"), ("n02119789", 278, "kit fox"),
                                 ("n15075141", 999, "toilet tissue"))


def _jpeg(path, colour=(200, 30, 60), size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")


def _flat(root, n=3):
    for i in range(1, n + 1):
        _jpeg(root / f"ILSVRC2012_val_{i:08d}.JPEG", colour=(10 * i, 0, 0))
    return root


# --------------------------------------------------------------------------- locations


def test_data_root_honours_casekit_data(monkeypatch, tmp_path):
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "d"))
    assert D.data_root() == tmp_path / "d"
    monkeypatch.delenv("CASEKIT_DATA")
    assert D.data_root() == REPO / "data"  # running from a checkout: its data/ folder
    monkeypatch.setattr(D, "checkout_root", lambda: None)  # an installed casekit
    assert D.data_root() == D.Path.home() / ".casekit" / "data"


def test_imagenet_class_order_is_torchvisions():
    wnids, names = D.imagenet_wnids(), D.imagenet_categories()
    assert len(wnids) == len(names) == 1000 and wnids == sorted(wnids)
    assert names == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    for wnid, index, name in (TENCH, KIT_FOX, TOILET_TISSUE):
        assert wnids[index] == wnid and names[index] == name


# --------------------------------------------------------------------------- ImageNet layouts


def test_imagefolder_layout_maps_wnids_to_torchvision_indices(tmp_path):
    root = tmp_path / "val"
    _jpeg(root / TENCH[0] / "a.JPEG")
    _jpeg(root / KIT_FOX[0] / "b.JPEG")
    _jpeg(root / KIT_FOX[0] / "c.jpg")
    _jpeg(root / TOILET_TISSUE[0] / "d.JPEG")
    (root / TOILET_TISSUE[0] / "notes.txt").write_text("not an image")
    ds = D.imagenet_val(root)
    assert ds.layout == "imagefolder" and len(ds) == 4
    assert ds.targets == [0, 278, 278, 999]
    assert [ds.classes[t] for t in ds.targets] == ["tench", "kit fox", "kit fox", "toilet tissue"]
    image, label = ds[3]
    assert label == 999 and image.shape == (3, 224, 224) and image.dtype == torch.float32
    raw, _ = D.imagenet_val(root, transform=None)[0]
    assert isinstance(raw, Image.Image) and raw.size == (40, 30)


def test_imagefolder_rejects_unknown_wnids(tmp_path):
    _jpeg(tmp_path / "n99999999" / "a.JPEG")
    with pytest.raises(ValueError, match="n99999999.*not one of the 1,000"):
        D.imagenet_val(tmp_path)


def test_flat_layout_with_kaggle_loc_csv(tmp_path):
    root = _flat(tmp_path / "val")
    (tmp_path / "LOC_val_solution.csv").write_text(  # found in the parent folder
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000002,{TENCH[0]} 1 2 30 20 {TENCH[0]} 3 4 10 10\n"
        f"ILSVRC2012_val_00000001,{TOILET_TISSUE[0]} 1 2 3 4\n"
        f"ILSVRC2012_val_00000003,{KIT_FOX[0]} 5 6 7 8\n"
        f"ILSVRC2012_val_00049999,{KIT_FOX[0]} 5 6 7 8\n"  # not on disk: ignored
    )
    ds = D.imagenet_val(root)
    assert ds.layout == "flat" and ds.label_source == "LOC_val_solution.csv"
    assert [p.name for p, _ in ds.samples] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3)]
    assert ds.targets == [999, 0, 278]


def test_flat_layout_with_filename_label_text(tmp_path):
    root = _flat(tmp_path)
    labels = tmp_path / "my_labels.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG "
                      f"{KIT_FOX[0]}\nILSVRC2012_val_00000003.JPEG 0\n")
    assert D.imagenet_val(root, labels=labels).targets == [65, 278, 0]
    labels.write_text("ILSVRC2012_val_00000001.JPEG 1000\n")
    with pytest.raises(ValueError, match="outside 0..999"):
        D.imagenet_val(root, labels=labels)


def _fake_devkit(folder):
    """A devkit with meta.mat: ILSVRC2012_IDs 1..3 are leaves (kit fox, tench, toilet tissue), 1001 is not."""
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = np.array(
        [
            (1, KIT_FOX[0], "kit fox, Vulpes macrotis", "", 0),
            (2, TENCH[0], "tench, Tinca tinca", "", 0),
            (3, TOILET_TISSUE[0], "toilet tissue", "", 0),
            (1001, "n00001740", "entity", "", 2),
        ],
        dtype=fields,
    )
    (folder / "data").mkdir(parents=True)
    sio.savemat(folder / "data" / "meta.mat", {"synsets": synsets})
    (folder / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n3\n1\n")
    return folder


def test_flat_layout_with_devkit_ground_truth(tmp_path):
    root = _flat(tmp_path / "val")
    devkit = _fake_devkit(tmp_path / "ILSVRC2012_devkit_t12")
    truth = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    # ILSVRC2012_IDs 2, 3, 1 are tench, toilet tissue, kit fox: not the indices 2, 3, 1 of the sorted order
    assert D.imagenet_val(root, devkit=devkit).targets == [0, 999, 278]
    assert D.imagenet_val(root, labels=truth).targets == [0, 999, 278]  # devkit found next to the file
    assert D.imagenet_val(root, labels=truth,
                          id_to_wnid=[KIT_FOX[0], TENCH[0], TOILET_TISSUE[0]]).targets == [0, 999, 278]
    with tarfile.open(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        tar.add(devkit, arcname="ILSVRC2012_devkit_t12")
    loose = tmp_path / "gt.txt"
    loose.write_text(truth.read_text())
    assert D.imagenet_val(root, labels=loose,
                          devkit=tmp_path / "ILSVRC2012_devkit_t12.tar.gz").targets == [0, 999, 278]
    with pytest.raises(ValueError, match="ILSVRC2012_IDs.*devkit="):
        D.imagenet_val(root, labels=loose)


def test_flat_layout_errors(tmp_path, monkeypatch):
    root = _flat(tmp_path / "val")
    with pytest.raises(D.MissingDataError) as info:
        D.imagenet_val(root)
    assert "no label file" in str(info.value) and "LOC_val_solution.csv" in str(info.value)
    labels = tmp_path / "val.txt"
    labels.write_text(f"ILSVRC2012_val_00000001.JPEG {TENCH[0]}\n")
    with pytest.raises(ValueError, match="no label for 2 image"):
        D.imagenet_val(root)
    _jpeg(root / TENCH[0] / "x.JPEG")
    with pytest.raises(ValueError, match="mixes"):
        D.imagenet_val(root)


def test_missing_imagenet_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path))
    with pytest.raises(D.MissingDataError) as info:
        D.imagenet_val()
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "imagenet" / "val") in msg and "$CASEKIT_DATA" in msg
    assert "ImageFolder" in msg and "LOC_val_solution.csv" in msg and "image-net.org" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.MissingDataError, match="no <wnid>/ folders"):
        D.imagenet_val(tmp_path / "empty")


# --------------------------------------------------------------------------- splits and samples


def test_split_indices_disjoint_complete_and_deterministic():
    held, pool = D.split_indices(100, 30, seed=7)
    assert len(held) == 30 and len(pool) == 70
    assert set(held.tolist()).isdisjoint(pool.tolist())
    assert sorted(held.tolist() + pool.tolist()) == list(range(100))
    assert torch.equal(held, held.sort().values) and torch.equal(pool, pool.sort().values)
    held2, pool2 = D.split_indices(100, 30, seed=7)
    assert torch.equal(held, held2) and torch.equal(pool, pool2)
    assert not torch.equal(held, D.split_indices(100, 30, seed=8)[0])
    assert D.split_indices(5, 0, 0)[0].numel() == 0 and D.split_indices(5, 5, 0)[1].numel() == 0
    with pytest.raises(ValueError, match="n_heldout"):
        D.split_indices(10, 11, 0)
    with pytest.raises(TypeError, match="seed"):
        D.split_indices(10, 3, 1.5)


class _LookupModel(nn.Module):
    """Predicts ``predictions[i]`` for the input whose single value is ``i`` (a stand-in classifier)."""

    def __init__(self, predictions: torch.Tensor, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("predictions", predictions)
        self.n_classes = n_classes

    def forward(self, x):
        return nn.functional.one_hot(self.predictions[x.view(-1).long()], self.n_classes).float()


@pytest.fixture
def lookup():
    n, classes = 40, 4
    labels = torch.arange(n) % classes
    correct = torch.tensor([i % 3 != 0 for i in range(n)])  # indices 0, 3, 6, ... are misclassified
    predictions = torch.where(correct, labels, (labels + 1) % classes)
    dataset = TensorDataset(torch.arange(n, dtype=torch.float32).view(n, 1), labels)
    return dataset, _LookupModel(predictions, classes), correct


def test_correct_sample_keeps_the_first_n_correct_of_a_seeded_order(lookup):
    dataset, model, correct = lookup
    held, pool = D.split_indices(len(dataset), 10, seed=1)
    model.train()
    got = D.correct_sample(model, dataset, n=12, seed=3, batch_size=5, pool=pool, progress=False)
    assert model.training  # mode restored
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(3))]
    expected = [int(i) for i in order if correct[i]][:12]
    assert got.tolist() == expected
    assert all(correct[i] for i in got) and set(got.tolist()) <= set(pool.tolist())
    assert set(got.tolist()).isdisjoint(held.tolist()) and len(set(got.tolist())) == 12
    # the batch size does not change the sample; the seed does
    assert torch.equal(got, D.correct_sample(model, dataset, 12, 3, batch_size=7, pool=pool, progress=False))
    assert torch.equal(got, D.correct_sample(model, dataset, 12, 3, batch_size=64, pool=pool, progress=False))
    assert not torch.equal(got,
                           D.correct_sample(model, dataset, 12, 4, batch_size=5, pool=pool, progress=False))


def test_correct_sample_refuses_to_return_fewer(lookup):
    dataset, model, correct = lookup
    n_correct = int(correct.sum())
    assert len(D.correct_sample(model, dataset, n_correct, seed=0, progress=False)) == n_correct
    with pytest.raises(ValueError, match=f"only {n_correct} of the 40"):
        D.correct_sample(model, dataset, n_correct + 1, seed=0, progress=False)
    with pytest.raises(ValueError, match="pool has only 3"):
        D.correct_sample(model, dataset, 4, seed=0, pool=[1, 2, 4], progress=False)
    with pytest.raises(ValueError, match="outside"):
        D.correct_sample(model, dataset, 1, seed=0, pool=[40], progress=False)


def test_correct_sample_counts_and_every_correct_image(lookup):
    dataset, model, correct = lookup
    held, pool = D.split_indices(len(dataset), 10, seed=1)
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(3))]
    in_order = [int(i) for i in order if correct[i]]
    ids, counts = D.correct_sample_counts(model, dataset, 5, 3, batch_size=4, pool=pool, progress=False)
    assert ids.tolist() == in_order[:5]
    # stops at the batch that completes the sample: 4-image batches, so a multiple of 4 is scanned
    assert counts.pool == 30 and counts.drawn == 5 and counts.scanned % 4 == 0 and counts.scanned < 30
    assert counts.correct == sum(bool(correct[i]) for i in order[:counts.scanned])
    assert counts.available is None  # the pool was not classified in full
    ids2, full = D.correct_sample_counts(model, dataset, 5, 3, batch_size=4, pool=pool, progress=False,
                                         scan_all=True)
    assert torch.equal(ids, ids2)  # the same sample
    assert full.scanned == 30 and full.available == full.correct == len(in_order) == int(correct[pool].sum())
    assert full.to_dict() == {"pool": 30, "scanned": 30, "correct": len(in_order), "drawn": 5,
                              "available": len(in_order)}
    every = D.correct_sample(model, dataset, None, 3, batch_size=7, pool=pool, progress=False)
    assert every.tolist() == in_order  # n=None: every correct image, in the seeded order
    with pytest.raises(ValueError, match="positive int or None"):
        D.correct_sample(model, dataset, 0, 3, progress=False)
    with pytest.raises(ValueError, match="none of the 2 pool images"):
        D.correct_sample(model, dataset, None, 0, pool=[0, 3], progress=False)


def test_subset_loader_keeps_order(lookup):
    dataset, _, _ = lookup
    batches = list(D.subset_loader(dataset, torch.tensor([5, 2, 9]), batch_size=2))
    assert torch.cat([b[1] for b in batches]).tolist() == [5 % 4, 2 % 4, 9 % 4]


# --------------------------------------------------------------------------- CIFAR-100


def test_torchvision_refuses_a_partial_cifar100_folder(tmp_path):
    D.write_fake_cifar100(tmp_path, n_train=2, n_test=2)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CIFAR100(tmp_path, train=False, download=False)


def test_cifar100_fake_folder_with_paper_normalisation(tmp_path):
    D.write_fake_cifar100(tmp_path, n_train=6, n_test=5, seed=1)
    with open(tmp_path / "cifar-100-python" / "test", "rb") as fh:
        raw = pickle.load(fh)
    ds = D.cifar100(tmp_path, train=False, image_size=32, verify_md5=False)
    assert len(ds) == 5 and ds.classes[3] == "class_03"
    image, label = ds[2]
    assert label == raw["fine_labels"][2] == 2
    pixels = torch.from_numpy(raw["data"][2].reshape(3, 32, 32)).float() / 255
    mean, std = torch.tensor(D.CIFAR100_MEAN).view(3, 1, 1), torch.tensor(D.CIFAR100_STD).view(3, 1, 1)
    torch.testing.assert_close(image, (pixels - mean) / std, atol=1e-5, rtol=0)
    assert D.cifar100(tmp_path, train=False, verify_md5=False)[0][0].shape == (3, 224, 224)  # the paper's 224
    # the inner folder works too
    assert len(D.cifar100(tmp_path / "cifar-100-python", train=True, verify_md5=False)) == 6
    torch.manual_seed(0)
    a = D.cifar100(tmp_path, train=True, image_size=32, verify_md5=False)[0][0]
    torch.manual_seed(0)
    b = D.cifar100(tmp_path, train=True, image_size=32, verify_md5=False)[0][0]
    assert a.shape == (3, 32, 32) and torch.equal(a, b)  # augmented, seeded


def test_cifar100_train_augmentation_is_the_papers():
    names = [type(t).__name__ for t in D.cifar100_transform(train=True).transforms]
    assert names == ["Resize", "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotation",
                     "ToTensor", "Normalize"]
    steps = D.cifar100_transform(train=True).transforms
    assert steps[1].padding == 4 and steps[1].size == (224, 224) and list(steps[4].degrees) == [-45.0, 45.0]
    assert ([type(t).__name__ for t in D.cifar100_transform(train=False).transforms]
            == ["Resize", "ToTensor", "Normalize"])


def test_cifar100_md5_is_checked_unless_disabled(tmp_path):
    D.write_fake_cifar100(tmp_path)
    with pytest.raises(ValueError, match="md5.*verify_md5=False"):
        D.cifar100(tmp_path)


def test_missing_cifar100_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path))
    with pytest.raises(D.MissingDataError) as info:
        D.cifar100(train=True)
    msg = str(info.value)
    for needle in (
        str(tmp_path / "cifar100"),
        "cifar-100-python/train",
        "$CASEKIT_DATA",
        D.CIFAR100_URL,
        "download=True",
        "CASEKIT_DATA",
    ):
        assert needle in msg, needle
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "cifar100" / "cifar-100-python.tar.gz").write_bytes(b"")
    with pytest.raises(D.MissingDataError, match="tar -xzf"):
        D.cifar100()


# --------------------------------------------------------------------------- shared CIFAR-10 images


@needs_shared_cifar10()
def test_reference_cifar10_images():
    images, labels, classes = D.reference_cifar10_images()
    raw, _, _ = D.reference_cifar10_images(normalize=False)
    assert images.shape == (2000, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert classes[:3] == ["airplane", "automobile", "bird"] and len(classes) == 10
    assert torch.bincount(labels).tolist() == [200] * 10
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    with np.load(REFERENCE_CIFAR10 / "cifar10_test_jpeg_2000.npz") as npz:
        pixel = npz["images"][17, 5, 9]  # image 17, row 5, column 9, RGB
    expected = (torch.tensor(pixel, dtype=torch.float32) / 255
                - torch.tensor(D.CIFAR10_MEAN)) / torch.tensor(D.CIFAR10_STD)
    torch.testing.assert_close(images[17, :, 5, 9], expected)


def test_shared_reference_dir_errors_name_the_places(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_SHARED", str(tmp_path))
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    with pytest.raises(D.MissingDataError) as info:
        D.reference_cifar10_images()
    msg = str(info.value)
    assert "cifar10_test_jpeg_2000.npz" in msg and str(tmp_path / "reference" / "cifar10") in msg
    assert "CASEKIT_SHARED" in msg
    with pytest.raises(D.MissingDataError, match="root= argument"):
        D.reference_cifar10_images(root=tmp_path / "x")
