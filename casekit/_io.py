"""Cache location and crash-safe file writes shared by the model zoo and the result store."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def checkout_root() -> Path | None:
    """The source checkout casekit runs from, or ``None`` for an installed casekit.

    A checkout is the folder above the package that holds a ``pyproject.toml`` naming the ``casekit`` project
    (an editable install, or a clone on ``sys.path``).  Defaults for the cache, the results and the data are taken
    from it, so they do not depend on the current directory.
    """
    root = Path(__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    try:
        text = project.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "casekit"' in text else None


def cache_dir(*parts: str) -> Path:
    """casekit's cache folder: ``$CASEKIT_CACHE`` if set, else ``~/.cache/casekit`` (created on demand)."""
    root = os.environ.get("CASEKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "casekit")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(config: dict[str, Any], length: int = 16) -> str:
    """Stable hash of a JSON-serialisable config (sorted keys)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path`` atomically.

    A crash (even SIGKILL) leaves either the old file or the new one, never a
    half-written file; the temporary file is removed on error.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
