"""One cache and one result store per project, wherever casekit starts (issue 13).

Unit tests pin the rule of :mod:`casekit._io` (environment, then the checkout, then the user cache folder;
never the current directory).  The slow tests run a chapter as JupyterLab and a user's CI do: with papermill,
from ``notebooks/`` and from an unrelated folder, against a copy of the checkout (the real ``results/`` is
left alone).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
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
    assert zoo.member_checkpoint(cfg).parent == tmp_path / "c" / "zoo"
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


# --------------------------------------------------------------------------- chapters run as users run them

N_SMALL = 6  # images per model: the README's call with a small n


def readme_papermill_call() -> list[str]:
    """The one papermill call of the README's section on rerunning, split into arguments."""
    readme = (REPO / "README.md").read_text().splitlines()
    lines = [ln.strip() for ln in readme if ln.strip().startswith("papermill ")]
    assert len(lines) == 1, f"the README should show exactly one papermill call, found {len(lines)}"
    return shlex.split(lines[0])


def with_parameter(args: list[str], name: str, value: str) -> list[str]:
    """``args`` with the value of ``-p name`` replaced."""
    out = list(args)
    at = [i for i in range(len(out) - 2) if out[i] in ("-p", "--parameters") and out[i + 1] == name]
    assert at, f"the call has no -p {name}"
    out[at[0] + 2] = value
    return out


def kernel_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no CASEKIT_* overrides; figures inline as in JupyterLab."""
    env = {k: v for k, v in os.environ.items() if k not in ("CASEKIT_CACHE", "CASEKIT_RESULTS")}
    env.update(MPLBACKEND="module://matplotlib_inline.backend_inline", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.update(extra)
    return env


def papermill_bin() -> list[str]:
    script = Path(sys.executable).parent / "papermill"
    return [str(script)] if script.exists() else [sys.executable, "-m", "papermill"]


def run_papermill(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*papermill_bin(), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, f"papermill failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
    return time.perf_counter() - t0


def cell_output(executed, marker: str, mime: str) -> str:
    """The ``mime`` output of the one code cell whose source contains ``marker``."""
    cells = [c for c in executed.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"{len(cells)} cells call {marker}"
    return "\n".join(o.get("data", {}).get(mime, "") for o in cells[0].get("outputs", [])
                     if o.get("output_type") in ("execute_result", "display_data"))


def study_sizes(executed) -> tuple[list[int], list[tuple[str, str, int, int]]]:
    """What an executed 01_diagnostic printed: the "map rows" of each run (its first table), and
    ``(model, method, n, n_excluded)`` of each row of the Table 1 analogue."""
    runs = cell_output(executed, "run_study(", "text/plain")
    rows = re.findall(r"\s(\d+)$", runs, flags=re.M)  # the count ends each row (index levels may be blank)
    # the Table 1 analogue as casekit.report.format shows it: a pivot, then every test as a row
    # (text form: "Model  Method  n  excluded  median [95% CI] ...")
    text = cell_output(executed, "fmt.sensitivity_table(full)", "text/plain")
    assert re.search(r"^Model\s+Method\s+n\s+excluded\s", text, flags=re.M)
    table = re.findall(r"^(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s", text, flags=re.M)
    return [int(r) for r in rows], [(m, meth, int(n), int(x)) for m, meth, n, x in table]


def check_sizes(executed, n_images: int) -> None:
    """Every run stored ``n_images`` x 6 methods x 3 targets (top-1, top-2, sibling) map rows, and every row
    of Table 1 counts ``n_images`` agreements (used + excluded): the numbers came from the requested size."""
    from casekit.cam.engine import METHODS

    map_rows, table = study_sizes(executed)
    assert len(map_rows) == 9  # demo study: 4 families, DenseNet also at norm5 and with seeds 1-4
    assert map_rows == [n_images * len(METHODS) * 3] * len(map_rows), map_rows
    assert len(table) == 4 * len(METHODS), table
    assert all(n + excluded == n_images for _, _, n, excluded in table), table


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's papermill call (n_images small), run from a folder outside the repository."""
    outside = tmp_path_factory.mktemp("users-ci")
    assert not outside.is_relative_to(REPO)
    args = with_parameter(readme_papermill_call(), "n_images", str(N_SMALL))
    args = with_parameter(args, "results_dir", f"results/demo-{N_SMALL}")
    args[1] = str(REPO / args[1])  # the notebook, named from outside the checkout
    env = kernel_env(CASEKIT_CACHE=str(_io.cache_root()))  # the test session's model zoo
    seconds = run_papermill(args, outside, env)
    return outside, args, nbformat.read(str(outside / args[2]), as_version=4), seconds


def test_readme_papermill_call_from_outside_the_repository(readme_run):
    outside, args, executed, seconds = readme_run
    assert executed.metadata.papermill.parameters == {"profile": "demo", "n_images": N_SMALL,
                                                      "results_dir": f"results/demo-{N_SMALL}"}
    check_sizes(executed, N_SMALL)
    assert (outside / "results" / f"demo-{N_SMALL}").is_dir()  # a relative results_dir: papermill's folder
    print(f"README papermill call (n_images={N_SMALL}) from outside the repository: {seconds:.0f} s")


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def files_under(*roots: Path) -> dict[str, tuple[int, int]]:
    """``path → (size, mtime_ns)`` of every file under ``roots``."""
    found = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                st = (Path(dirpath) / name).stat()
                found[str(Path(dirpath) / name)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def clone(tmp_path_factory, readme_run):
    """A copy of the checkout (casekit, notebooks, pyproject.toml: a clone as far as casekit can tell) whose
    default store ``results/demo`` already holds the small study and whose ``.cache/casekit`` holds the
    session's trained models (hard links where possible), as after ``make book``."""
    outside, *_ = readme_run
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(REPO / "casekit", root / "casekit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(_io.cache_root(), root / ".cache" / "casekit", copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns("*.partial*"))
    shutil.copytree(outside / "results" / f"demo-{N_SMALL}", root / "results" / "demo")
    return root


@pytest.mark.parametrize("where", ["notebooks", "elsewhere"])
def test_a_chapter_loads_the_store_wherever_it_starts(clone, tmp_path, where):
    cwd = clone / "notebooks" if where == "notebooks" else tmp_path
    env = kernel_env(PYTHONPATH=str(clone))  # the clone's casekit, as from `pip install -e .` of the clone
    before = files_under(clone / "results", clone / ".cache")
    args = ["papermill", str(clone / "notebooks" / "01_diagnostic.ipynb"), str(tmp_path / "out.ipynb"),
            "-p", "n_images", str(N_SMALL)]  # no results_dir, no CASEKIT_*: the defaults
    seconds = run_papermill(args, cwd, env)
    after = files_under(clone / "results", clone / ".cache")
    assert after == before, f"the chapter wrote {sorted(set(after.items()) - set(before.items()))[:5]}"
    assert not (cwd / "results").exists() and not (cwd / ".cache").exists()
    check_sizes(nbformat.read(str(tmp_path / "out.ipynb"), as_version=4), N_SMALL)
    assert seconds < 120, f"{seconds:.0f} s: loading a stored study should take seconds"
    print(f"01_diagnostic from {where}, store present: {seconds:.1f} s")
