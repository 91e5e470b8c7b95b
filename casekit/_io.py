"""Where casekit keeps its cache and results; crash-safe file writes shared by the zoo and the result store.

Locations are found from the project, never from the current directory (see :func:`cache_root`,
:func:`results_root`): a checkout keeps both inside itself, an installed casekit uses the user cache folder.
"""

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
    (an editable install, or a clone on ``sys.path``).  Defaults for the cache, the results and the data are
    taken from it, so they do not depend on the current directory.
    """
    root = Path(__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    try:
        text = project.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "casekit"' in text else None


def user_cache_root() -> Path:
    """The user's cache folder for an installed casekit: ``$XDG_CACHE_HOME/casekit``, else
    ``~/.cache/casekit``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "casekit")


def cache_root() -> Path:
    """Where casekit caches trained models, data and confusion matrices (not created here).

    In this order: ``$CASEKIT_CACHE``; ``<checkout>/.cache/casekit`` when casekit runs from a source checkout
    (:func:`checkout_root`); else :func:`user_cache_root`.  Never the current directory, so ``make book``,
    ``make test``, a JupyterLab kernel in ``notebooks/`` and a ``papermill`` call from anywhere share one
    cache.
    """
    env = os.environ.get("CASEKIT_CACHE")
    if env:
        return Path(env).expanduser()
    root = checkout_root()
    return root / ".cache" / "casekit" if root is not None else user_cache_root()


def cache_dir(*parts: str) -> Path:
    """``cache_root() / parts``, created on demand."""
    path = Path(cache_root(), *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_root() -> Path:
    """The folder that holds one result store per profile (not created here).

    In this order: ``$CASEKIT_RESULTS``; ``<checkout>/results`` from a source checkout; else
    ``cache_root() / "results"`` for an installed casekit (the user cache folder, or ``$CASEKIT_CACHE``).
    Like :func:`cache_root`, it never depends on the current directory.
    """
    env = os.environ.get("CASEKIT_RESULTS")
    if env:
        return Path(env).expanduser()
    root = checkout_root()
    return root / "results" if root is not None else cache_root() / "results"


def results_dir(profile: str) -> Path:
    """The default result store of a profile: ``results_root() / profile`` (``<checkout>/results/demo``)."""
    plain = isinstance(profile, str) and profile not in ("", ".", "..") and not set("/\\") & set(profile)
    if not plain:
        raise ValueError(f"profile must be a plain folder name such as 'demo' or 'paper', got {profile!r}")
    return results_root() / profile


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
