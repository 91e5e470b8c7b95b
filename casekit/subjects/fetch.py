"""Finding casekit's external input files, and downloading them with their hash checked.

Every external input is listed in the manifest ``data/manifest.json`` (file name, profile, path under
``$CASEKIT_DATA``, upstream URL, sha256 / md5, size, licence).  :func:`ensure` finds a set of them:

1. ``$CASEKIT_DATA/<path>`` (:func:`casekit.subjects.data.data_root`; the checkout's ``data/`` by default);
2. ``<shared>/<shared_path>`` for a ``shared`` folder beside or above the checkout or the current directory
   (or ``$CASEKIT_SHARED``);
3. a download from the upstream URL — or from ``$CASEKIT_MIRROR/<path>`` (a web server over a copy of a
   ``$CASEKIT_DATA`` folder) — into ``$CASEKIT_DATA/<path>``, with the sha256 (else md5) checked before the
   file is moved into place, so no half or wrong file is ever left.  ``$CASEKIT_OFFLINE=1`` turns downloads
   off.

What cannot be found nor downloaded ends in one :class:`~casekit.subjects.data.MissingDataError` that names
every missing file, every place casekit looked, and the URLs.

``python -m casekit.subjects.fetch cifar10`` downloads a profile's files ahead of time.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping

from tqdm.auto import tqdm

from .._io import atomic_path, checkout_root
from .data import MissingDataError, _shared_candidates, data_root

__all__ = [
    "ChecksumError",
    "DownloadError",
    "manifest",
    "manifest_path",
    "entry",
    "file_hash",
    "source_url",
    "download",
    "ensure",
    "offline",
    "reachable",
    "check_file",
]

DEFAULT_TIMEOUT = 30.0
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's hash (or size) differs from the manifest's: the message names the file, expected and got."""


class DownloadError(OSError):
    """A download failed (no network, server error, timeout); nothing was written."""


# --------------------------------------------------------------------------- the manifest


def manifest_path() -> Path | None:
    """``data/manifest.json`` of the checkout casekit runs from, or ``$CASEKIT_DATA/manifest.json``; ``None``
    if neither exists (an installed casekit without its checkout: local files are still found, nothing
    downloads)."""
    places = []
    root = checkout_root()
    if root is not None:
        places.append(root / "data" / "manifest.json")
    places.append(data_root() / "manifest.json")
    return next((p for p in places if p.is_file()), None)


def manifest(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest as a dict ``{"format", "profiles", "files": [entry, ...]}`` (see ``data/README.md``)."""
    where = Path(path) if path is not None else manifest_path()
    if where is None:
        return {"format": 1, "profiles": {}, "files": []}
    with open(where, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError(f"{where}: a casekit manifest is a JSON object with a 'files' list")
    for item in data["files"]:
        missing = {"name", "profile", "path", "url", "sha256", "md5", "size", "licence",
                   "download"} - set(item)
        if missing:
            raise ValueError(f"{where}: entry {item.get('name', '?')!r} lacks {sorted(missing)}")
    return data


def entry(name: str, manifest_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest entry of the file ``name``."""
    files = (manifest_data if manifest_data is not None else manifest())["files"]
    for item in files:
        if item["name"] == name:
            return dict(item)
    raise KeyError(f"{name!r} is not in casekit's data manifest ({manifest_path() or 'no manifest found'})")


# --------------------------------------------------------------------------- hashes and downloads


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def offline() -> bool:
    """True when ``$CASEKIT_OFFLINE`` is set to anything but ``""``/``0``: casekit then never downloads."""
    return os.environ.get("CASEKIT_OFFLINE", "") not in ("", "0")


def reachable(url: str, timeout: float = 10.0) -> str | None:
    """``None`` if a TCP connection to ``url``'s host opens within ``timeout`` seconds (or a proxy is
    configured, which urllib would use), else the reason it did not — a cheap test before a long download."""
    import socket
    from urllib.parse import urlparse

    parts = urlparse(url)
    if urllib.request.getproxies().get(parts.scheme):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as err:
        return f"the machine is offline or cannot reach {parts.hostname} ({err})"
    return None


def source_url(item: Mapping[str, Any], mirror: str | None = None) -> str | None:
    """Where ``item`` is downloaded from: ``<mirror>/<path>`` if a mirror (argument, else ``$CASEKIT_MIRROR``)
    is set, else the upstream ``url`` (``None`` when there is none)."""
    mirror = mirror if mirror is not None else os.environ.get("CASEKIT_MIRROR") or None
    if mirror:
        return mirror.rstrip("/") + "/" + item["path"]
    return item.get("url")


def _expected(item: Mapping[str, Any]) -> tuple[str, str] | None:
    if item.get("sha256"):
        return "sha256", str(item["sha256"]).lower()
    if item.get("md5"):
        return "md5", str(item["md5"]).lower()
    return None


def check_file(path: Path, item: Mapping[str, Any]) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the manifest's size and sha256 (else md5)."""
    size = item.get("size")
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise ChecksumError(f"{path} ({item['name']}): size {got_size} bytes, expected {size}")
    expected = _expected(item)
    if expected is not None:
        got = file_hash(path, expected[0])
        if got != expected[1]:
            raise ChecksumError(f"{path} ({item['name']}): {expected[0]} {got}, expected {expected[1]}")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (atomically: a temporary file beside it, moved into place only after the
    size and the sha256 — else md5 — matched).  Raises :class:`DownloadError` when the transfer fails and
    :class:`ChecksumError` on a hash mismatch; in both cases neither ``dest`` nor a temporary file is left."""
    dest = Path(dest)
    item = {"name": dest.name, "sha256": sha256, "md5": md5, "size": size}
    request = urllib.request.Request(url, headers={"User-Agent": "casekit"})
    try:
        with atomic_path(dest) as tmp:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                    total = int(response.headers.get("Content-Length") or 0) or size
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                              disable=not progress) as bar:
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            out.write(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", None) or err
                raise DownloadError(f"could not download {url}: {reason}") from err
            check_file(tmp, item)
    except ChecksumError as err:
        raise ChecksumError(f"downloaded from {url}: {err}; the file was discarded") from None
    return dest


# --------------------------------------------------------------------------- finding inputs


def _local(item: Mapping[str, Any]) -> tuple[Path | None, list[str]]:
    """The first existing copy of ``item`` in ``$CASEKIT_DATA`` or a shared folder, and the places tried."""
    tried = [data_root() / item["path"]]
    if item.get("shared_path"):
        tried += [c / item["shared_path"] for c in _shared_candidates()]
    for place in tried:
        if place.exists():
            return place, [str(p) for p in tried]
    return None, [str(p) for p in tried]


def ensure(
    names: Iterable[str],
    *,
    download_missing: bool | None = None,
    mirror: str | None = None,
    manifest_data: Mapping[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> dict[str, Path]:
    """``{name: path}`` for every file in ``names`` (manifest names): found locally, else downloaded into
    ``$CASEKIT_DATA/<path>`` (``download_missing=None``: unless :func:`offline`).  Local copies of files up to
    64 MiB are hash-checked, larger ones size-checked.  Whatever stays missing is reported in ONE
    :class:`MissingDataError` naming every missing file, where casekit looked, the URLs and why the download
    failed.  A corrupt download raises :class:`ChecksumError` (after the other files were tried)."""
    data = manifest_data if manifest_data is not None else manifest()
    allow = (not offline()) if download_missing is None else bool(download_missing)
    found: dict[str, Path] = {}
    missing: list[tuple[dict[str, Any], list[str], str]] = []
    corrupt: list[str] = []
    for name in dict.fromkeys(names):
        item = entry(name, data)
        path, tried = _local(item)
        if path is not None:
            if path.is_file():
                if path.stat().st_size <= 64 * _CHUNK:
                    check_file(path, item)
                elif item.get("size") is not None and path.stat().st_size != item["size"]:
                    raise ChecksumError(
                        f"{path} ({name}): size {path.stat().st_size} bytes, expected {item['size']}")
            found[name] = path
            continue
        url = source_url(item, mirror)
        if url is None or item.get("download") != "casekit":
            missing.append((item, tried, "no download source (see the URL note in data/manifest.json)"))
        elif not allow:
            missing.append((item, tried, "downloads are off ($CASEKIT_OFFLINE or download=False)"))
        else:
            try:
                found[name] = download(url, data_root() / item["path"], sha256=item.get("sha256"),
                                       md5=item.get("md5"), size=item.get("size"), timeout=timeout,
                                       progress=progress)
            except DownloadError as err:
                missing.append((item, tried, str(err)))
            except ChecksumError as err:
                corrupt.append(str(err))
    if missing:
        raise MissingDataError(_missing_message(missing, mirror, corrupt))
    if corrupt:
        raise ChecksumError("\n".join(corrupt))
    return found


def _missing_message(missing: list[tuple[dict[str, Any], list[str], str]], mirror: str | None,
                     corrupt: list[str]) -> str:
    origin = ("$CASEKIT_DATA" if os.environ.get("CASEKIT_DATA")
              else "the default; set $CASEKIT_DATA to change it")
    lines = [f"casekit: {len(missing)} input file(s) are not on this machine and could not be downloaded: "
             + ", ".join(item["name"] for item, _, _ in missing)]
    for item, tried, why in missing:
        lines.append(f"  {item['name']} ({item['profile']} profile, {item.get('kind', 'file')})")
        more = f" and {len(tried) - 8} more" if len(tried) > 8 else ""
        lines.append("    looked in: " + ", ".join(tried[:8]) + more)
        url = source_url(item, mirror)
        upstream = f" (upstream {item['url']})" if item.get("url") and url != item["url"] else ""
        lines.append(f"    URL: {url or 'none recorded'}{upstream}")
        lines.append(f"    download: {why}")
    lines.extend(f"  also: {c}" for c in corrupt)
    lines.append(
        "  to provide them: on a machine with internet run  python -m casekit.subjects.fetch <profile or "
        f"names>  (or download the URLs and check the sha256 in data/manifest.json), then copy the files to "
        f"{data_root()}/<path in the manifest> ({origin}); or set CASEKIT_SHARED to a folder holding "
        "reference/cifar10/, or CASEKIT_MIRROR to a web server holding a copy of a data folder.")
    return "\n".join(lines)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Download casekit's external inputs (hash-checked) into $CASEKIT_DATA.")
    parser.add_argument("what", nargs="+", help="a profile (cifar10) or file names from data/manifest.json")
    parser.add_argument("--mirror", default=None, help="base URL of a mirror of a data folder")
    args = parser.parse_args(argv)
    data = manifest()
    names = []
    for w in args.what:
        picked = [f["name"] for f in data["files"] if f["profile"] == w and f.get("download") == "casekit"]
        names += picked or [w]
    try:
        found = ensure(names, download_missing=True, mirror=args.mirror, manifest_data=data)
    except (MissingDataError, ChecksumError, KeyError) as err:
        print(err)
        return 1
    for name, path in found.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
