"""casekit.subjects.fetch: hash-checked atomic downloads from a web server on 127.0.0.1 started by the test,
and the one message that names every missing file."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import REFERENCE_CIFAR10, REPO, needs_shared_cifar10

import casekit as ck
from casekit.subjects import fetch
from casekit.subjects.data import MissingDataError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def server(tmp_path):
    """A static web server over ``tmp_path/www`` on 127.0.0.1 (port chosen by the OS); yields (root,
    base_url)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty $CASEKIT_DATA and no shared folder, downloads allowed, no mirror."""
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CASEKIT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.delenv("CASEKIT_OFFLINE", raising=False)
    monkeypatch.delenv("CASEKIT_MIRROR", raising=False)
    return tmp_path / "data"


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}"


def _tiny_manifest(tmp_path: Path, blobs: dict[str, bytes], base: str) -> dict:
    files = []
    for name, blob in blobs.items():
        files.append({
            "name": name, "profile": "test", "kind": "weights", "path": f"reference/test/{name}",
            "shared_path": f"reference/test/{name}", "url": f"{base}/upstream/{name}", "sha256":
            hashlib.sha256(blob).hexdigest(), "md5": None, "size": len(blob), "licence": "none",
            "download": "casekit",
        })
    return {"format": 1, "profiles": {}, "files": files}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_manifest_lists_every_input_with_hash_size_and_licence():
    data = fetch.manifest(REPO / "data" / "manifest.json")
    names = {f["name"] for f in data["files"]}
    for needed in ("resnet20-12fca82f.th", "resnet56-4bfd9763.th", "pretrained_densenet_4012BC.pth.tar",
                   "cifar10_shufflenetv2_x0_5-1308b4e9.pt", "cifar_torchvision.pt",
                   "cifar10_test_jpeg_2000.npz", "cifar-10-python.tar.gz", "cifar-100-python.tar.gz",
                   "ILSVRC2012_img_val.tar"):
        assert needed in names, needed
    for f in data["files"]:
        assert f["profile"] in data["profiles"] and f["licence"], f["name"]
        assert f["sha256"] or f["md5"] or f.get("sha256_prefix"), f"{f['name']} has no hash"
        if f["sha256"]:
            assert len(f["sha256"]) == 64 and int(f["sha256"], 16) >= 0
    # the torchvision files are exactly torchvision's, whose names carry the sha256 prefix torchvision checks
    from torchvision.models import get_model_weights

    for builder in ("resnet50", "vgg19_bn", "densenet201", "convnext_large"):
        url = get_model_weights(builder).IMAGENET1K_V1.url
        item = next(f for f in data["files"] if f["url"] == url)
        assert (item["name"] == url.rsplit("/", 1)[1]
                and item["name"].split("-")[-1].startswith(item["sha256_prefix"]))
    # the official CIFAR-10 archive carries the md5 torchvision checks
    from torchvision.datasets import CIFAR10

    assert fetch.entry("cifar-10-python.tar.gz", data)["md5"] == CIFAR10.tgz_md5


@needs_shared_cifar10()
def test_manifest_hashes_match_the_shared_files():
    for f in fetch.manifest(REPO / "data" / "manifest.json")["files"]:
        if f.get("shared_path") and (REFERENCE_CIFAR10 / f["name"]).is_file():
            fetch.check_file(REFERENCE_CIFAR10 / f["name"], f)  # raises on a mismatch


def test_good_download_lands_atomically(tmp_path, server, isolated):
    root, base = server
    blob = b"casekit test payload " * 1000
    (root / "upstream").mkdir()
    (root / "upstream" / "a.bin").write_bytes(blob)
    manifest = _tiny_manifest(tmp_path, {"a.bin": blob}, base)
    found = fetch.ensure(["a.bin"], manifest_data=manifest, progress=False)
    assert found["a.bin"] == isolated / "reference" / "test" / "a.bin"
    assert found["a.bin"].read_bytes() == blob
    assert _leftovers(found["a.bin"].parent) == ["a.bin"]  # no temporary file left
    # found locally the second time, even with the server gone from the manifest
    manifest["files"][0]["url"] = _closed_port_url() + "/a.bin"
    assert fetch.ensure(["a.bin"], manifest_data=manifest, progress=False) == found


def test_corrupted_download_names_both_hashes_and_leaves_nothing(tmp_path, server, isolated):
    root, base = server
    good = b"the real bytes" * 100
    bad = b"the real bytez" * 100
    (root / "upstream").mkdir()
    (root / "upstream" / "w.pt").write_bytes(bad)
    manifest = _tiny_manifest(tmp_path, {"w.pt": good}, base)
    with pytest.raises(fetch.ChecksumError) as info:
        fetch.ensure(["w.pt"], manifest_data=manifest, progress=False)
    msg = str(info.value)
    assert hashlib.sha256(good).hexdigest() in msg and hashlib.sha256(bad).hexdigest() in msg
    assert "w.pt" in msg and f"{base}/upstream/w.pt" in msg
    assert _leftovers(isolated) in ([], ["reference", "test"])  # at most the empty folders
    # a truncated transfer (wrong size) is refused the same way
    (root / "upstream" / "w.pt").write_bytes(good[:-1])
    with pytest.raises(fetch.ChecksumError, match="size"):
        fetch.download(f"{base}/upstream/w.pt", isolated / "w.pt", sha256=hashlib.sha256(good).hexdigest(),
                       size=len(good), progress=False)
    assert not (isolated / "w.pt").exists() and not list(isolated.glob(".w.pt*"))


def test_no_server_gives_one_message_naming_every_missing_file(tmp_path, isolated):
    base = _closed_port_url()
    manifest = _tiny_manifest(tmp_path, {"one.th": b"1", "two.pt": b"22", "three.npz": b"333"}, base)
    with pytest.raises(MissingDataError) as info:
        fetch.ensure(["one.th", "two.pt", "three.npz"], manifest_data=manifest, progress=False)
    msg = str(info.value)
    assert msg.count("casekit:") == 1
    for name in ("one.th", "two.pt", "three.npz"):
        assert name in msg and f"{base}/upstream/{name}" in msg
        assert str(isolated / "reference" / "test" / name) in msg  # where it looked: $CASEKIT_DATA
        assert str(tmp_path / "no-shared" / "reference" / "test" / name) in msg  # and the shared folder
    assert "could not download" in msg and "CASEKIT_DATA" in msg
    assert _leftovers(isolated) in ([], ["reference", "test"])


def test_offline_switch_and_mirror(tmp_path, server, isolated, monkeypatch):
    root, base = server
    blob = b"mirrored"
    (root / "reference" / "test").mkdir(parents=True)
    (root / "reference" / "test" / "m.bin").write_bytes(blob)
    manifest = _tiny_manifest(tmp_path, {"m.bin": blob}, _closed_port_url())  # upstream unreachable
    monkeypatch.setenv("CASEKIT_OFFLINE", "1")
    with pytest.raises(MissingDataError, match="downloads are off"):
        fetch.ensure(["m.bin"], manifest_data=manifest, mirror=base, progress=False)
    monkeypatch.delenv("CASEKIT_OFFLINE")
    monkeypatch.setenv("CASEKIT_MIRROR", base)  # <mirror>/<path>, the layout of a data folder
    assert fetch.ensure(["m.bin"], manifest_data=manifest, progress=False)["m.bin"].read_bytes() == blob


def test_a_corrupt_local_copy_is_named(tmp_path, isolated):
    manifest = _tiny_manifest(tmp_path, {"c.th": b"right"}, _closed_port_url())
    (isolated / "reference" / "test").mkdir(parents=True)
    (isolated / "reference" / "test" / "c.th").write_bytes(b"wrong")
    with pytest.raises(fetch.ChecksumError, match=hashlib.sha256(b"right").hexdigest()):
        fetch.ensure(["c.th"], manifest_data=manifest, progress=False)


@needs_shared_cifar10()
def test_reference_network_downloads_from_a_mirror_and_loads(tmp_path, server, isolated, monkeypatch):
    """The real manifest, a web server holding a copy of a data folder: ck.reference.model downloads and
    loads."""
    root, base = server
    (root / "reference" / "cifar10").mkdir(parents=True)
    shutil.copy(REFERENCE_CIFAR10 / "cifar_torchvision.pt", root / "reference" / "cifar10")
    monkeypatch.setenv("CASEKIT_MIRROR", base)
    model, info = ck.reference.model("lenet")
    assert Path(info["path"]) == isolated / "reference" / "cifar10" / "cifar_torchvision.pt"
    assert fetch.file_hash(info["path"]) == info["sha256"]
    reference = torch.load(REFERENCE_CIFAR10 / "cifar_torchvision.pt", weights_only=True)
    torch.testing.assert_close(model.conv1.weight, reference["conv1.weight"], rtol=0, atol=0)
    # a network that is on neither the mirror nor this machine: one clear message with the mirror URL
    with pytest.raises(MissingDataError) as err:
        ck.reference.model("resnet56")
    assert f"{base}/reference/cifar10/resnet56-4bfd9763.th" in str(err.value)
    assert "github.com/akamaster" in str(err.value)  # and the upstream URL


def test_manifest_json_names_the_three_profiles():
    text = (REPO / "data" / "manifest.json").read_text()
    data = json.loads(text)
    assert data["format"] == 1 and set(data["profiles"]) == {"demo", "cifar10", "paper"}
