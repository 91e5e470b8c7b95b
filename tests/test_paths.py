"""One cache and one result store per project, wherever casekit starts (issue 13).

Unit tests pin the rule of :mod:`casekit._io` (environment, then the checkout, then the user cache folder; never
the current directory).  The slow tests run a chapter as JupyterLab and a user's CI do: with papermill, from
``notebooks/`` and from an unrelated folder, against a copy of the checkout so the real ``results/`` is untouched.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from casekit import _io
from casekit.study import experiments
from casekit.subjects import zoo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bare_env(monkeypatch):
    """No CASEKIT_* overrides, and a current directory that is not the checkout."""
    monkeypatch.delenv("CASEKIT_CACHE", raising=False)
    monkeypatch.delenv("CASEKIT_RESULTS", raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- the rule


def test_checkout_defaults_do_not_depend_on_the_current_directory(bare_env, tmp_path):
    assert _io.checkout_root() == REPO  # the tests run the checkout's casekit
    for cwd in (REPO, REPO / "notebooks", tmp_path):
        bare_env.chdir(cwd)
        assert _io.cache_root() == REPO / ".cache" / "casekit"
        assert _io.results_root() == REPO / "results"
        assert _io.results_dir("demo") == REPO / "results" / "demo"
        assert experiments.default_results_dir("paper") == REPO / "results" / "paper"
    assert not (tmp_path / "results").exists() and not (tmp_path / ".cache").exists()


def test_environment_overrides_the_checkout(bare_env, tmp_path):
    bare_env.chdir(tmp_path)
    bare_env.setenv("CASEKIT_CACHE", str(tmp_path / "c"))
    bare_env.setenv("CASEKIT_RESULTS", str(tmp_path / "r"))
    assert _io.cache_root() == tmp_path / "c"
    assert _io.cache_dir("zoo") == tmp_path / "c" / "zoo" and (tmp_path / "c" / "zoo").is_dir()
    assert experiments.default_results_dir("demo") == tmp_path / "r" / "demo"
    cfg = zoo.training_config("resnet", seed=0)
    assert zoo.checkpoint_path(cfg).parent == tmp_path / "c" / "zoo"
    bare_env.setenv("CASEKIT_RESULTS", "")  # empty counts as unset
    assert _io.results_root() == REPO / "results"


def test_installed_outside_a_checkout_uses_the_user_cache_folder(bare_env, tmp_path):
    bare_env.setattr(_io, "checkout_root", lambda: None)
    bare_env.setenv("HOME", str(tmp_path / "home"))
    bare_env.delenv("XDG_CACHE_HOME", raising=False)
    bare_env.chdir(tmp_path)
    user = tmp_path / "home" / ".cache" / "casekit"
    assert _io.cache_root() == user
    assert experiments.default_results_dir("demo") == user / "results" / "demo"
    bare_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _io.cache_root() == tmp_path / "xdg" / "casekit"
    assert _io.results_dir("demo") == tmp_path / "xdg" / "casekit" / "results" / "demo"
    bare_env.setenv("CASEKIT_CACHE", str(tmp_path / "c"))  # results follow the chosen cache
    assert _io.results_dir("demo") == tmp_path / "c" / "results" / "demo"
    bare_env.setenv("CASEKIT_RESULTS", str(tmp_path / "r"))
    assert _io.results_dir("demo") == tmp_path / "r" / "demo"


def _load_io_copy(folder: Path, pyproject: str | None):
    """casekit/_io.py copied into ``folder/casekit`` (an installed layout when ``pyproject`` is None)."""
    (folder / "casekit").mkdir(parents=True)
    shutil.copy(Path(_io.__file__), folder / "casekit" / "_io.py")
    if pyproject is not None:
        (folder / "pyproject.toml").write_text(pyproject)
    spec = importlib.util.spec_from_file_location(f"_io_copy_{folder.name}", folder / "casekit" / "_io.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checkout_root_recognises_only_a_casekit_checkout(tmp_path):
    assert _load_io_copy(tmp_path / "site", None).checkout_root() is None
    other = _load_io_copy(tmp_path / "other", '[project]\nname = "someone-else"\n')
    assert other.checkout_root() is None
    mine = _load_io_copy(tmp_path / "clone", '[project]\nname = "casekit"\n')
    assert mine.checkout_root() == (tmp_path / "clone").resolve()


@pytest.mark.parametrize("bad", ["", ".", "..", "demo/x", "..\\demo", None, 3])
def test_results_dir_rejects_a_profile_that_is_not_a_folder_name(bad):
    with pytest.raises(ValueError, match="profile must be a plain folder name"):
        _io.results_dir(bad)
