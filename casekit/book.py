"""``make book``: run the book's notebooks with papermill, then build the HTML with Jupyter Book.

Two stages, one direction::

    notebooks/*.ipynb ──papermill, parameters injected──▶ <build>/notebooks/*.ipynb  (executed copies)
    _config.yml, _toc.yml, book/, executed copies ──▶ <build>/src/
    <build>/src/ ──jupyter-book, execution off, strict──▶ <build>/html/

The book is built from the executed copies only; Jupyter Book never runs code.
Every notebook named in ``_toc.yml`` (source in ``notebooks/``) is executed; see
``python -m casekit.book --help`` for the parameters each one receives.
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime as _dt
import fnmatch
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("demo", "paper", "cifar10")
#: What `make book` builds by default (``--profile both``): the demo models, then the real CIFAR-10 networks.
BOOK_PROFILES = ("demo", "cifar10")
PROFILE_TITLES = {"demo": "demo models", "cifar10": "real CIFAR-10 networks",
                  "paper": "the paper's ImageNet models"}
PROFILE_SHORT = {"demo": "demo", "cifar10": "CIFAR-10", "paper": "ImageNet"}  # link labels

# Parameters the driver sets itself, injected into every notebook whose parameters cell declares them.
DRIVER_PARAMETERS = ("profile", "device", "results_dir", "recompute")

# `--tiny`: applied to every notebook that declares the name (then the `tiny:` section of
# notebooks/parameters.yml).
TINY_PRESET: dict[str, Any] = {"n_images": 4}
# `--tiny` also sets these for the notebook kernels and the driver's own pages: the demo profile then uses the
# tiny zoo (`casekit.subjects.demo.zoo_size`), trained in seconds instead of the standard zoo's minutes.
TINY_ENVIRONMENT: dict[str, str] = {"CASEKIT_DEMO_ZOO": "tiny"}

# `--scale full` (= `make book SCALE=full`): every correctly classified image of each run's pool instead of
# the profile's default sample (demo: all of its 1,000 test images that a model classifies correctly;
# cifar10: all of the evaluated half's); results in results/<profile>-full/.  The paper profile keeps its
# 1,000 images.
SCALES = ("default", "full")
FULL_PRESET: dict[str, dict[str, Any]] = {"demo": {"n_images": "all"}, "cifar10": {"n_images": "all"}}

OVERRIDES_FILE = "notebooks/parameters.yml"
INJECTED_TAG = "injected-parameters"  # papermill's tag for the cell it adds
METADATA_KEY = "casekit_book"  # notebook metadata written by this driver

HELP_EPILOG = f"""\
parameters
  Every notebook of the book has a cell tagged `parameters`.  A value is injected only
  into the notebooks whose parameters cell declares that name, in this order (later wins):
    1. the notebook's own defaults (its parameters cell);
    2. {OVERRIDES_FILE}, section `demo:`, `cifar10:` or `paper:` (the profile), then, with
       --scale full, {FULL_PRESET} by profile, then, with --tiny, the preset {TINY_PRESET}
       and the section `tiny:`; in each section the
       key `"*"` applies to every notebook and a notebook's name (e.g. `03_rq1_tables`)
       to that notebook only;
    3. the driver's own: profile, device, results_dir, recompute (the flags above);
    4. -p NAME VALUE (VALUE is read as YAML: 4, 0.05, true, [resnet, vgg], text).
  A -p name that no notebook declares is an error (a typo is never ignored).

  Names shared by the book's notebooks:
    profile      "demo" (the embedded benchmark and model zoo, CPU), "cifar10" (pretrained CIFAR-10
                 networks: ResNet-20/56, DenseNet-BC-40, ShuffleNetV2) or "paper" (ImageNet models)
    device       "cpu" / "cuda" (--device; default: cuda when available)
    results_dir  folder of the result store; rows found there are reused, missing ones computed
    recompute    true: ignore stored results and compute them again (--recompute)
    seed, n_images, models, layers, methods, k, tau, contrast_k: experiment settings

  Results live in results/<profile>/ (--scale full: results/<profile>-full/; --tiny:
  <build>/results/<profile>-tiny/), so a second
  `make book` reuses them and only re-runs the notebooks' tables and figures.

profiles
  --profile both (the default, = make book) executes every chapter once per profile, demo then
  cifar10: the demo copies are the chapters notebooks/<name>, the cifar10 copies notebooks/cifar10/<name>,
  each profile a part of the table of contents; a notebook without a `profile` parameter (the
  quickstart) runs once.  The landing page opens with one claims table: every study claim, its
  chapter, the paper's number and each profile's number and verdict.  When the cifar10 inputs are
  neither found nor downloadable, the demo book is still built and the cifar10 part is one page
  saying that it was not built and why.

layout (under --build-dir)
  notebooks/   executed copies (cifar10 ones in notebooks/cifar10/), with widget state
  src/         the book source assembled from _config.yml, _toc.yml, book/ and the executed copies
  html/        the book: html/index.html

examples
  python -m casekit.book                          # = make book (demo and cifar10 profiles)
  python -m casekit.book --profile demo           # the demo profile only
  python -m casekit.book --scale full             # = make book SCALE=full: every correct image per run
  python -m casekit.book --profile paper -p n_images 1000 --device cuda
  python -m casekit.book --only '03_*'            # re-run one notebook, reuse the others' executed copies
  python -m casekit.book --html-only              # rebuild the HTML from the executed copies
  python -m casekit.book --tiny --build-dir /tmp/b  # every notebook in seconds (the test suite)
"""


class BookError(RuntimeError):
    """A notebook failed, wrote to stderr, or the book did not build; the message says which and where."""


# --------------------------------------------------------------------------- table of contents


def toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book ``_toc.yml`` (root first, then in reading order)."""
    import yaml

    toc = yaml.safe_load(Path(toc_path).read_text())
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{toc_path}: not a Jupyter Book table of contents (no 'root:' entry)")
    found: list[str] = [str(toc["root"])]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def book_notebooks(repo: Path = REPO) -> list[Path]:
    """The notebooks ``_toc.yml`` lists, in order; each must exist as ``notebooks/<name>.ipynb``.

    Every other toc entry must be a Markdown page under ``book/``.
    """
    notebooks, missing = [], []
    for entry in toc_files(repo / "_toc.yml"):
        stem = entry[: -len(Path(entry).suffix)] if Path(entry).suffix in (".ipynb", ".md") else entry
        if stem.startswith("notebooks/"):
            path = repo / f"{stem}.ipynb"
            (notebooks if path.exists() else missing).append(path)
        elif stem.startswith("book/"):
            if not (repo / f"{stem}.md").exists():
                missing.append(repo / f"{stem}.md")
        else:
            raise ValueError(f"_toc.yml entry {entry!r}: pages live in book/ (Markdown) or notebooks/ "
                             "(notebooks)")
    if missing:
        listed = ", ".join(str(p.relative_to(repo)) for p in missing)
        raise ValueError(f"_toc.yml lists files that do not exist: {listed}")
    return notebooks


# --------------------------------------------------------------------------- parameters


def declared_parameters(notebook: Path | Mapping[str, Any]) -> dict[str, Any]:
    """Names and default values assigned in the notebook's cell tagged ``parameters``.

    Defaults that are not literals (e.g. ``Path.home()``) are reported as their source text.
    """
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) else notebook
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    where = notebook if isinstance(notebook, (str, Path)) else "the notebook"
    if not cells:
        raise ValueError(f"{where}: no cell tagged 'parameters' (every notebook of the book needs one)")
    if len(cells) > 1:
        raise ValueError(f"{where}: {len(cells)} cells are tagged 'parameters'; tag exactly one")
    source = cells[0].source
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"{where}: the parameters cell is not plain Python ({err.msg}, "
                         f"line {err.lineno})") from None
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    out[target.id] = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError):
                    out[target.id] = ast.get_source_segment(source, node.value)
    return out


def load_overrides(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``notebooks/parameters.yml`` → ``{section: {notebook or "*": {name: value}}}`` (empty if absent)."""
    import yaml

    if not Path(path).exists():
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with sections demo/paper/tiny, got "
                         f"{type(data).__name__}")
    unknown = set(data) - {*PROFILES, "tiny"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}; use {', '.join(PROFILES)} or tiny")
    for section, per_notebook in data.items():
        per_notebook = per_notebook or {}
        if not isinstance(per_notebook, dict) or not all(isinstance(v, dict) for v in per_notebook.values()):
            raise ValueError(f"{path}: section {section!r} must map notebook names (or '*') to "
                             f"{{name: value}}")
        data[section] = per_notebook
    return data


@dataclass
class Plan:
    """What the driver will run: one entry per notebook, with the parameters it injects."""

    notebook: Path
    declared: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.notebook.stem


def plan_parameters(
    notebooks: Sequence[Path],
    driver: Mapping[str, Any],
    *,
    profile: str,
    tiny: bool = False,
    scale: str = "default",
    overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    passthrough: Mapping[str, Any] | None = None,
) -> list[Plan]:
    """Resolve every notebook's injected parameters (precedence in ``--help``); unknown names raise."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose {' or '.join(PROFILES)}")
    overrides = overrides or {}
    passthrough = dict(passthrough or {})
    clash = sorted(set(passthrough) & set(DRIVER_PARAMETERS))
    if clash:
        flag = "--" + clash[0].replace("_", "-")
        raise ValueError(f"-p {clash[0]} …: set {', '.join(clash)} with its own flag ({flag})")
    plans = [Plan(nb, declared_parameters(nb)) for nb in notebooks]
    names = {p.name for p in plans}
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose {' or '.join(SCALES)}")
    full = [{"*": FULL_PRESET[profile]}] if scale == "full" and profile in FULL_PRESET else []
    sections = [overrides.get(profile, {}), *full] + ([{"*": TINY_PRESET},
                                                overrides.get("tiny", {})] if tiny else [])
    for section in sections:
        for key in section:
            if key != "*" and key not in names:
                raise ValueError(
                    f"{OVERRIDES_FILE}: {key!r} is not a notebook of the book ({', '.join(sorted(names))})"
                )
    for plan in plans:
        values: dict[str, Any] = {}
        for section in sections:
            for key in ("*", plan.name):
                for name, value in (section.get(key) or {}).items():
                    if name in plan.declared:
                        values[name] = value
                    elif key != "*":  # "*" entries go only to the notebooks that declare them
                        raise ValueError(
                            f"{OVERRIDES_FILE}: notebook {plan.name} has no parameter {name!r} "
                            f"(it declares {', '.join(plan.declared)})"
                        )
        values.update({k: v for k, v in driver.items() if k in plan.declared})
        values.update({k: v for k, v in passthrough.items() if k in plan.declared})
        plan.parameters = values
    undeclared = [k for k in passthrough if not any(k in p.declared for p in plans)]
    if undeclared:
        known = sorted({n for p in plans for n in p.declared})
        raise ValueError(f"-p {undeclared[0]}: no notebook of the book declares it (declared: "
                         f"{', '.join(known)})")
    return plans


def parse_passthrough(pairs: Iterable[Sequence[str]]) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs → dict; each VALUE is read as YAML (``4`` → int, ``[a, b]`` → list, text
    stays)."""
    import yaml

    out: dict[str, Any] = {}
    for name, raw in pairs:
        if not name.isidentifier():
            raise ValueError(f"-p {name!r}: a parameter name must be a Python identifier")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out[name] = raw if value is None and raw.strip() not in ("null", "~") else value
    return out


# --------------------------------------------------------------------------- execution


def _kernel_environment() -> None:
    """Environment the notebook kernels inherit: inline figures even where MPLBACKEND=Agg is exported."""
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def output_problems(nb: Mapping[str, Any]) -> list[str]:
    """Error outputs and stderr text of an executed notebook, one line each (the book must show neither)."""
    problems = []
    for index, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            label = f"cell {index} (In [{cell.get('execution_count')}])"
            if out.get("output_type") == "error":
                problems.append(f"{label} raised {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = "".join(out.get("text", "")).strip()
                problems.append(f"{label} wrote to stderr: {text[:500]}")
    return problems


def execute_notebook(plan: Plan, output: Path, *, kernel: str, timeout: float | None, progress: bool,
                     profile: str = "demo", tiny: bool = False) -> float:
    """Run one notebook with papermill into ``output``; returns the wall time in seconds.

    Raises :class:`BookError` naming the notebook and the failing cell.
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(plan.notebook),
            str(output),
            parameters=plan.parameters,
            kernel_name=kernel,
            cwd=str(plan.notebook.parent),
            progress_bar=progress,
            execution_timeout=timeout,
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],  # no kernel chatter in the driver's output
            request_save_on_cell_execute=False,  # one write at the end (pages with explorers weigh megabytes)
        )
    except PapermillExecutionError as err:
        raise BookError(
            f"notebook {plan.notebook.name} failed in cell {err.cell_index} (In [{err.exec_count}]): "
            f"{err.ename}: {err.evalue}\n  the executed copy with the traceback: {output}"
        ) from None
    except Exception as err:  # kernel died, timeout, missing kernel, ...
        raise BookError(f"notebook {plan.notebook.name} could not be executed: "
                        f"{type(err).__name__}: {err}") from None
    wall = time.perf_counter() - start
    nb = nbformat.read(str(output), as_version=4)
    problems = output_problems(nb)
    if problems:
        raise BookError(
            f"notebook {plan.notebook.name} shows error output (the book must not):\n  "
            + "\n  ".join(problems)
            + f"\n  the executed copy: {output}"
        )
    nb.metadata[METADATA_KEY] = {
        "profile": profile,
        "tiny": tiny,
        "demo_zoo": os.environ.get("CASEKIT_DEMO_ZOO") or "standard",
        "parameters": plan.parameters,
        "wall_s": round(wall, 1),
        "executed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    nbformat.write(nb, str(output))
    return wall


def study_dependencies(run: Sequence[tuple[str, Plan]]) -> dict[int, int]:
    """Which job of ``run`` waits for which: in each profile, every notebook that declares ``results_dir``
    after the first one that does waits for that first one (it computes the profile's shared study; the
    others read it).  Notebooks without a results folder (the quickstart) wait for nothing.  → ``{job:
    the job it waits for}``."""
    first: dict[str, int] = {}
    after: dict[int, int] = {}
    for i, (profile, plan) in enumerate(run):
        if "results_dir" not in plan.declared:
            continue
        if profile in first:
            after[i] = first[profile]
        else:
            first[profile] = i
    return after


def execute_all(jobs: Sequence[tuple[int, Callable[[], float]]], after: Mapping[int, int], workers: int,
                report: Callable[[int, str, float | None], None]) -> list[str]:
    """Run the callables of ``jobs`` (``(index, fn)``, ``fn() -> seconds``), at most ``workers`` at a time,
    each only once the job it waits for (``after``) has finished; a job whose prerequisite failed is not run.
    ``report(index, "done" | "FAILED" | "skipped", seconds)`` is called as each ends.  → the failure
    messages (:class:`BookError` texts), in the jobs' order."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pending = dict(jobs)
    done: set[int] = set()
    failed: dict[int, str] = {}
    running: dict[Any, int] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while pending or running:
            for i in list(pending):
                dep = after.get(i)
                if dep in failed:
                    failed[i] = f"not executed: it reads the study of a notebook that failed (job {dep + 1})"
                    report(i, "skipped", None)
                    del pending[i]
                elif (dep is None or dep in done) and len(running) < max(1, workers):
                    running[pool.submit(pending.pop(i))] = i
            if not running:
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                i = running.pop(future)
                try:
                    seconds = future.result()
                except BookError as err:
                    failed[i] = str(err)
                    report(i, "FAILED", None)
                else:
                    done.add(i)
                    report(i, "done", seconds)
    return [failed[i] for i in sorted(failed)]


def page_copy(executed: Mapping[str, Any]) -> Any:
    """The book's copy of an executed notebook: the injected-parameters cell removed from the page
    (myst-nb tag ``remove-cell``), a note that lists the injected values in its place, widget state dropped
    (the explorers render a static snapshot in the book)."""
    import nbformat

    nb = copy.deepcopy(executed)
    cells = []
    for cell in nb.cells:
        cells.append(cell)
        # a widget without a static form (progress bar, bare control) shows nothing useful
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs if not _bare_widget(o)]
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED_TAG in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
            params = nb.metadata.get(METADATA_KEY, {}).get("parameters", {})
            if params:
                listed = ", ".join(f"`{k} = {_shown_parameter(k, v)!r}`" for k, v in params.items())
                cells.append(nbformat.v4.new_markdown_cell(
                    "```{note}\nThis page was run by `python -m casekit.book` (`make book`) with "
                    f"{listed}; the cell above shows the defaults.\n```"
                ))
    nb.cells = results_first(cells)
    nb.metadata.pop("widgets", None)
    return nb


SUMMARY_TAG = "chapter-summary"  # a chapter's computed banner and summary, shown right under its title


def results_first(cells: list[Any]) -> list[Any]:
    """The cells with the ``chapter-summary`` tag moved to just under the page's title: the first markdown
    cell is split after its ``# `` heading line, so a reader sees the profile banner and the computed
    summary before the chapter's explanations and code. Without such cells (or a title) nothing moves."""
    import nbformat

    summary = [c for c in cells if SUMMARY_TAG in c.get("metadata", {}).get("tags", [])]
    if not summary:
        return cells
    rest = [c for c in cells if SUMMARY_TAG not in c.get("metadata", {}).get("tags", [])]
    for i, cell in enumerate(rest):
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.split("\n")
        if not lines or not lines[0].startswith("# "):
            return cells  # no title first: leave the page as the notebook has it
        title = nbformat.v4.new_markdown_cell(lines[0])
        body = "\n".join(lines[1:]).strip("\n")
        after = [nbformat.v4.new_markdown_cell(body)] if body else []
        return rest[:i] + [title, *summary, *after] + rest[i + 1:]
    return cells


def _shown_parameter(name: str, value: Any) -> Any:
    """A parameter as the book's note shows it: the results folder by its place in the checkout,
    ``results/<its name>`` (e.g. ``results/demo``), never the machine path it had in this build."""
    if name == "results_dir" and isinstance(value, str) and value:
        return f"results/{Path(value).name}"
    return value


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STATIC_MIME = ("text/html", "image/png", "image/svg+xml", "image/jpeg", "text/markdown")


def _bare_widget(output: Mapping[str, Any]) -> bool:
    data = output.get("data", {})
    return WIDGET_VIEW in data and not any(m in data for m in STATIC_MIME)


# --------------------------------------------------------------------------- build information


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is returned as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_info(profile: str, tiny: bool, device: str, repo: Path = REPO,
               scale: str = "default") -> dict[str, str]:
    """What built this book: profile(s) (``"demo, cifar10"``) and scale, date, casekit/torch versions, git
    commit, device."""
    import torch

    import casekit

    commit = _git(repo, "rev-parse", "--short", "HEAD") or "unknown"
    if commit != "unknown" and _git(repo, "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name()})"
    return {
        "profile": ", ".join(p + (" (tiny test sizes)" if tiny else "") for p in profile.split(", ")),
        "scale": ("full (every correctly classified image of each run's pool)" if scale == "full"
                  else "default (each profile's sample size)"),
        "built": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "casekit": casekit.__version__,
        "git commit": commit,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": dev,
    }


def build_info_markdown(info: Mapping[str, str], runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """The generated ``book/_build_info.md`` included by the landing and rebuild pages."""
    lines = ["| built with | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in info.items()]
    if runs:
        lines += ["", "| notebook | executed | wall time |", "| --- | --- | ---: |"]
        for name, meta in runs:
            lines.append(f"| `{name}` | {meta.get('executed_at', '?')} | "
                         f"{meta.get('wall_s', float('nan')):.1f} s |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- profiles


def book_profiles(choice: str) -> tuple[str, ...]:
    """``--profile`` → the profiles to build, in order: ``"both"`` → :data:`BOOK_PROFILES`."""
    if choice == "both":
        return BOOK_PROFILES
    if choice not in PROFILES:
        raise ValueError(f"unknown profile {choice!r}; choose both, {', '.join(PROFILES)}")
    return (choice,)


def profile_subdir(profile: str, profiles: Sequence[str]) -> str:
    """Where a profile's chapters live under ``notebooks/``: the first profile at the top (``""``), the
    others in ``<profile>/``."""
    return "" if profile == profiles[0] else profile


def profile_plans(plans: Sequence[Plan], profile: str, profiles: Sequence[str]) -> list[Plan]:
    """The notebooks a profile executes: all for the first profile, for the others only those whose
    parameters cell declares ``profile`` (a profile-free notebook such as the quickstart runs once)."""
    if profile == profiles[0]:
        return list(plans)
    return [p for p in plans if "profile" in p.declared]


def profile_toc(toc: Mapping[str, Any], profiles: Sequence[str], per_profile: Iterable[str],
                not_built: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The book's table of contents for several profiles.  Every part that holds a per-profile notebook
    (``notebooks/<name>`` with ``name`` in ``per_profile``) is repeated once per profile, captioned
    ``<caption> — <profile title>``; the copies of later profiles point to ``notebooks/<profile>/<name>`` and
    keep only the per-profile entries.  A profile in ``not_built`` gets one page,
    ``book/not_built_<profile>``, instead of its chapters.  One profile: the toc unchanged."""
    toc = copy.deepcopy(dict(toc))
    if len(profiles) < 2:
        return toc
    names = set(per_profile)
    not_built = not_built or {}

    def is_profile_entry(entry: Any) -> bool:
        return isinstance(entry, Mapping) and str(entry.get("file", "")).startswith("notebooks/") and \
            str(entry["file"]).split("/", 1)[1] in names

    def moved(entry: Mapping[str, Any], profile: str) -> dict[str, Any]:
        out = dict(entry)
        out["file"] = f"notebooks/{profile}/{str(entry['file']).split('/', 1)[1]}"
        return out

    if "parts" not in toc:
        if not any(is_profile_entry(c) for c in toc.get("chapters", [])):
            return toc  # nothing to repeat per profile
        toc["parts"] = [{"caption": "Chapters", "chapters": toc.pop("chapters")}]  # its chapters as one part
    parts = []
    for part in toc.get("parts", []):
        chapters = part.get("chapters", [])
        if not any(is_profile_entry(c) for c in chapters):
            parts.append(part)
            continue
        for profile in profiles:
            caption = f"{part.get('caption', 'Chapters')} — {PROFILE_TITLES.get(profile, profile)}"
            if profile == profiles[0]:
                parts.append({**part, "caption": caption})
            elif profile in not_built:
                parts.append({"caption": caption, "chapters": [{"file": f"book/not_built_{profile}"}]})
            else:
                parts.append({"caption": caption,
                              "chapters": [moved(c, profile) for c in chapters if is_profile_entry(c)]})
    toc["parts"] = parts
    return toc


def shown_paths(text: str, repo: Path = REPO) -> str:
    """``text`` with every absolute path written as a published page may show it: relative to the checkout
    (``data/…``, ``../shared/…``) when it lies beside it, else ``…/<parent>/<name>``; never a machine
    path."""
    import re

    def short(match: re.Match) -> str:
        path = Path(match.group(0))
        for base, prefix in ((repo, ""), (repo.parent, "../")):
            try:
                return prefix + path.relative_to(base).as_posix()
            except ValueError:
                continue
        return "…/" + "/".join(path.parts[-2:])

    return re.sub(r"(?<![\w.~/:-])/[^\s'\"<>),]+", short, text)


def not_built_page(profile: str, reasons: Sequence[str], repo: Path = REPO) -> str:
    """The page that stands in for a profile's chapters when its inputs are missing (the places casekit
    looked in written relative to the checkout, :func:`shown_paths`)."""
    title = PROFILE_TITLES.get(profile, profile)
    body = shown_paths("\n".join(reasons), repo)
    return (f"# Not built: the {profile} profile ({title})\n\n"
            f"This build has **no {title} chapters**: the inputs the {profile} profile needs were neither "
            "found on this machine nor downloaded, so nothing was run for it and no number of this book "
            f"comes from it. The other profile's chapters are complete. What was missing:\n\n"
            f"```text\n{body}\n```\n\n"
            "Provide the files as the message says and run `make book` again.\n")


def claims_table_markdown(results: Mapping[str, Any], profiles: Sequence[str],
                          chapters: Mapping[str, Sequence[str]] | None = None) -> str:
    """The landing page's claims table (``book/_claims_table.md``): ``results`` maps a profile to its
    results folder (a path) or to the reason it has none (a string starting with "not built"); casekit's
    claims about the diagnostic (chapter 08) join from the folder's diagnostic study where it was run.
    ``chapters``: profile → the chapters built for it, each linked from its claims (a profile's pages
    live under :func:`profile_subdir`)."""
    from .report.overview import claims_overview, overview_markdown
    from .study.diagnostic_study import load_diagnostic
    from .study.profiles import load_results

    loaded: dict[str, Any] = {}
    diagnostic: dict[str, Any] = {}
    for profile in sorted(profiles, key=lambda p: p == "demo"):  # real networks first, the demo last
        res = results.get(profile, "not built")
        if isinstance(res, Path):
            diagnostic[profile] = load_diagnostic(res)
            try:
                res = load_results(res)
            except (FileNotFoundError, ValueError) as err:  # the message names the folder: not for the page
                print(f"casekit book: no results for the claims table of {profile}: {err}", flush=True)
                res = f"no results in results/{profile}"
        loaded[profile] = res
    frame = claims_overview(loaded, diagnostic)
    titles = {p: f"{PROFILE_TITLES.get(p, p)}" for p in loaded}
    links: dict[str, dict[str, str]] = {}
    for profile in loaded:
        sub = profile_subdir(profile, profiles)
        for name in (chapters or {}).get(profile, ()):
            page = "/".join(x for x in ("..", "notebooks", sub, f"{name}.ipynb") if x)
            links.setdefault(name, {})[PROFILE_SHORT.get(profile, profile)] = page
    return overview_markdown(frame, titles, links)


def profile_fact_pages(repo: Path, built: Sequence[str], not_built: Mapping[str, str],
                       results_of: Mapping[str, Path]) -> dict[str, str | bytes]:
    """The computed includes of ``book/profiles.md``
    (:func:`casekit.report.profile_facts.profile_facts_pages`): tables of the demo classes, demo models and
    cifar10 networks and the class gallery.  Made only when a page of ``book/`` includes them (a test
    repository without that page pays nothing).  The demo models are listed when the demo profile was built,
    the cifar10 networks when that profile was built (their accuracies cached under ``$CASEKIT_CACHE``);
    otherwise the include says why in one sentence."""
    from .report import profile_facts as pf

    names = (pf.CLASSES_PAGE, pf.DEMO_MODELS_PAGE, pf.CIFAR10_PAGE)
    pages_dir = repo / "book"
    texts = [p.read_text() for p in pages_dir.glob("*.md")] if pages_dir.is_dir() else []
    if not any(name in text for text in texts for name in names):
        return {}
    if "cifar10" in built:
        reason = ""
    elif "cifar10" in not_built:
        reason = "the cifar10 profile was not built, its inputs are missing"
    else:
        reason = "the cifar10 profile was not part of this build"
    from ._io import cache_root

    # the measured accuracies are cached by content (checkpoint and image hashes), so one cache serves every
    # build of this checkout, tiny or full
    return pf.profile_facts_pages(demo_built="demo" in built,
                                  cifar10=cache_root() / "reference" if "cifar10" in built else None,
                                  cifar10_reason=reason)


# --------------------------------------------------------------------------- assembling and building


def assemble_source(repo: Path, src: Path, executed: Sequence[Path], info_md: str, *,
                    more: Mapping[str, Sequence[Path]] | None = None, toc: Mapping[str, Any] | None = None,
                    pages: Mapping[str, str | bytes] | None = None) -> None:
    """Fresh ``src/``: ``_config.yml``, ``_toc.yml`` (or ``toc``), ``book/`` (+ generated build info and
    ``pages``: name → Markdown, or bytes for an image), page copies of the executed notebooks (``more``:
    those of other profiles, under ``notebooks/<subdir>/``), and any non-notebook files of ``notebooks/``
    (images they reference)."""
    import nbformat
    import yaml

    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(repo / name, src / name)
    shutil.copytree(repo / "book", src / "book",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_build*"))
    (src / "book" / "_build_info.md").write_text(info_md)
    for name, text in (pages or {}).items():
        if isinstance(text, bytes):
            (src / "book" / name).write_bytes(text)
        else:
            (src / "book" / name).write_text(text)
    if toc is not None:
        (src / "_toc.yml").write_text("# generated by casekit.book from _toc.yml\n"
                                      + yaml.safe_dump(dict(toc), sort_keys=False, allow_unicode=True))
    (src / "notebooks").mkdir()
    for path in (repo / "notebooks").iterdir():
        if path.is_file() and path.suffix != ".ipynb" and path.name != Path(OVERRIDES_FILE).name:
            shutil.copy2(path, src / "notebooks" / path.name)
    for path in executed:
        nbformat.write(page_copy(nbformat.read(str(path), as_version=4)), str(src / "notebooks" / path.name))
    for sub, paths in (more or {}).items():
        (src / "notebooks" / sub).mkdir(parents=True, exist_ok=True)
        for path in paths:
            nbformat.write(page_copy(nbformat.read(str(path), as_version=4)),
                           str(src / "notebooks" / sub / path.name))


def build_html(src: Path, html: Path, *, strict: bool = True, verbose: bool = False) -> None:
    """``jupyter-book build`` of ``src`` into ``html`` with execution off; strict: ``-W -n --keep-going``.

    Calls the function behind ``jupyter-book build`` (``jupyter_book.sphinx.build_sphinx``) so that the
    HTML lands exactly in ``html`` (the command line always writes to ``<path-output>/_build/html``).
    """
    if html.exists():
        shutil.rmtree(html)
    with warnings.catch_warnings():
        # sphinx-external-toc scans gc.get_objects(); touching torch's deprecated aliases there warns.
        warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op", category=FutureWarning)
        result = _build_sphinx(src, html, strict, verbose)
    if isinstance(result, BaseException) or result != 0:
        detail = f": {type(result).__name__}: {result}" if isinstance(result, BaseException) else ""
        raise BookError(f"jupyter-book build failed{detail} (strict: every warning above is an error)")


def _build_sphinx(src: Path, html: Path, strict: bool, verbose: bool) -> int | BaseException:
    from jupyter_book.sphinx import build_sphinx

    return build_sphinx(
        src,
        html,
        doctreedir=html.parent / ".doctrees",
        use_external_toc=True,
        noconfig=True,
        path_config=str(src / "_config.yml"),
        confoverrides={"external_toc_path": (src / "_toc.yml").as_posix(), "latex_individualpages": False,
                       **({"nitpicky": True} if strict else {})},
        builder="html",
        freshenv=True,
        warningiserror=strict,
        keep_going=strict,
        quiet=not verbose,
    )


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m casekit.book",
        description="Run every notebook of the book (_toc.yml) with papermill, then build the HTML book "
        "with Jupyter Book (execution off, strict, offline).",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", choices=("both", *PROFILES), default="both",
                   help="both (default: demo and cifar10), demo, cifar10 or paper")
    p.add_argument("--scale", choices=SCALES, default="default",
                   help="default: each profile's sample (demo 300, cifar10 500 images per run); full: every "
                   "correctly classified image of each run's pool (make book SCALE=full), results in "
                   "results/<profile>-full")
    p.add_argument("--tiny", action="store_true",
                   help="tiny sizes and the tiny demo zoo (CASEKIT_DEMO_ZOO=tiny): every notebook runs in "
                   "seconds (tests)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a notebook parameter (VALUE read as YAML); repeatable")
    p.add_argument("--device", default="auto",
                   help="injected as `device` (default: cuda if available, else cpu)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="injected as `results_dir` (default: results/<profile>; "
                   "with --tiny: <build>/results/<profile>-tiny; with two profiles: <DIR>/<profile>)")
    p.add_argument("--recompute", action="store_true",
                   help="injected as `recompute=True`: ignore stored results")
    p.add_argument("--build-dir", type=Path, default=None,
                   help="where everything goes (default: <repo>/_build)")
    p.add_argument("--repo", type=Path, default=REPO,
                   help="the project folder with _toc.yml (default: this checkout)")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="execute only the notebooks whose name matches (glob; repeatable); the others' "
                   "executed copies are reused and must exist for the same profile")
    p.add_argument("--html-only", action="store_true", help="execute nothing; build from the executed copies")
    p.add_argument("--execute-only", action="store_true",
                   help="execute the notebooks and stop: no generated pages, no HTML (e.g. a CI that only "
                   "checks that every chapter runs)")
    p.add_argument("--force", action="store_true",
                   help="execute every notebook, also those whose executed copy is up to date (same "
                   "notebook, parameters, casekit code and result store as when it was executed)")
    p.add_argument("--dry-run", action="store_true", help="print each notebook's parameters and stop")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="execute up to N notebooks at a time (default 1); a profile's chapters start once "
                   "its first chapter, which computes the shared study, has finished")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3 = this Python)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per cell before it fails (default: none)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="let Sphinx warnings pass (not for CI)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no per-cell progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="show Sphinx's own output")
    return p


FINGERPRINT_KEY = "fingerprint"  # in an executed copy's casekit metadata: what it was executed from
_IGNORED_IN_STORES = (".lock", ".tmp", ".partial")


def code_fingerprint() -> str:
    """sha256 over casekit's own source files (the code every notebook calls)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def store_state(results: Path | None) -> str:
    """sha256 of what a results folder holds: every file's place and size, and the contents of its JSON
    files (store configs); lock and temporary files are left out. Part files are written once and never
    changed, so this changes exactly when a notebook adds, recomputes or deletes results."""
    h = hashlib.sha256()
    if results is None or not Path(results).is_dir():
        return h.hexdigest()
    for path in sorted(Path(results).rglob("*")):
        if not path.is_file() or path.name.endswith(_IGNORED_IN_STORES) or ".tmp" in path.name:
            continue
        rel = path.relative_to(results).as_posix()
        h.update(f"{rel}\0{path.stat().st_size}\0".encode())
        if path.suffix == ".json":
            h.update(path.read_bytes())
    return h.hexdigest()


def notebook_fingerprint(plan: Plan, profile: str, tiny: bool, code: str, state: str) -> str:
    """What an executed copy depends on: the notebook's source cells, its parameters, the profile, casekit's
    code (``code``) and the state of its result store (``state``)."""
    import nbformat

    nb = nbformat.read(str(plan.notebook), as_version=4)
    cells = [[c.cell_type, c.source] for c in nb.cells]
    blob = json.dumps({"cells": cells, "parameters": plan.parameters, "profile": profile, "tiny": tiny,
                       "code": code, "state": state}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _up_to_date(path: Path, fingerprint: str) -> bool:
    """True when the executed copy at ``path`` was made from exactly ``fingerprint`` and shows no error."""
    import nbformat

    if not path.exists():
        return False
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception:  # unreadable (e.g. a killed write): execute again
        return False
    return nb.metadata.get(METADATA_KEY, {}).get(FINGERPRINT_KEY) == fingerprint and not output_problems(nb)


def _record_fingerprints(paths: Mapping[Path, str]) -> None:
    """Write each executed copy's fingerprint into its metadata (at the end of the build, with the result
    stores as the build left them)."""
    import nbformat

    for path, fingerprint in paths.items():
        nb = nbformat.read(str(path), as_version=4)
        nb.metadata.setdefault(METADATA_KEY, {})[FINGERPRINT_KEY] = fingerprint
        nbformat.write(nb, str(path))


def _reusable(path: Path, profile: str, tiny: bool) -> str | None:
    """Why an executed copy cannot be reused for this profile (None when it can)."""
    import nbformat

    if not path.exists():
        return f"{path} does not exist (run without --only/--html-only first)"
    meta = nbformat.read(str(path), as_version=4).metadata.get(METADATA_KEY, {})
    if meta.get("profile") != profile or bool(meta.get("tiny")) != tiny:
        tiny_note = " (tiny)" if meta.get("tiny") else ""
        return f"{path} was executed with profile {meta.get('profile')!r}{tiny_note}"
    return None


def _missing_for(profile: str) -> list[str]:
    """What a profile needs and does not find (nothing for the demo)."""
    if profile == "demo":
        return []
    from .study.experiments import missing_inputs  # lazy: loads torch, which the other book steps never need

    return missing_inputs(profile)


def main(argv: Sequence[str] | None = None) -> int:
    # Long on purpose (~100 lines): the driver's steps in the order they run (plan, preflight, execute,
    # build), each a few lines calling the helpers above, so that the whole build reads top to bottom here.
    args = _parser().parse_args(argv)
    t0 = time.perf_counter()
    if args.tiny:
        os.environ.update(TINY_ENVIRONMENT)
    if args.jobs < 1:
        print(f"casekit book: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    repo = args.repo.resolve()
    build = (args.build_dir or repo / "_build").resolve()
    run: list[tuple[str, Plan]] = []
    try:
        profiles = book_profiles(args.profile)
        notebooks = book_notebooks(repo)
        device = resolve_device(args.device)
        overrides = load_overrides(repo / OVERRIDES_FILE)
        passthrough = parse_passthrough(args.parameter)
        plans_of: dict[str, list[Plan]] = {}
        results_of: dict[str, Path] = {}
        for profile in profiles:
            results = args.results_dir or (build / "results" / f"{profile}-tiny" if args.tiny
                                           else repo / "results" / (profile + ("-full" if args.scale == "full"
                                                                               else "")))
            if args.results_dir and len(profiles) > 1:
                results = args.results_dir / profile
            results_of[profile] = results.resolve()
            driver = {"profile": profile, "device": device, "results_dir": str(results.resolve()),
                      "recompute": bool(args.recompute)}
            plans = plan_parameters(notebooks, driver, profile=profile, tiny=args.tiny, scale=args.scale,
                                    overrides=overrides,
                                    passthrough=passthrough)
            plans_of[profile] = profile_plans(plans, profile, profiles)
        first = plans_of[profiles[0]]
        if args.only:
            unmatched = [pat for pat in args.only if not any(fnmatch.fnmatch(p.name, pat) for p in first)]
            if unmatched:
                raise ValueError(f"--only {unmatched[0]!r} matches no notebook of the book "
                                 f"({', '.join(p.name for p in first)})")
        if args.dry_run:
            for profile in profiles:
                sub = profile_subdir(profile, profiles)
                for plan in plans_of[profile]:
                    where = f"{sub}/{plan.notebook.name}" if sub else str(plan.notebook.relative_to(repo))
                    print(f"{where}: " + json.dumps(plan.parameters, default=str))
            return 0

        not_built: dict[str, str] = {}
        if not args.html_only:
            for profile in profiles:
                missing = _missing_for(profile)
                if missing and len(profiles) == 1:
                    raise BookError(f"the {profile} profile needs {len(missing)} item(s) that are not on "
                                    "this machine (nothing was run):\n\n" + "\n\n".join(missing))
                if missing:
                    not_built[profile] = "\n\n".join(missing)
                    print(f"casekit book: the {profile} profile is NOT built (its inputs are missing):\n"
                          f"{not_built[profile]}", flush=True)
        else:  # reuse what the last full build made: a profile without executed copies was not built
            for profile in profiles[1:]:
                if not (build / "notebooks" / profile_subdir(profile, profiles)).is_dir():
                    not_built[profile] = "no executed copies of this profile (it was not built last time)"

        executed_of = {p: build / "notebooks" / profile_subdir(p, profiles) for p in profiles}
        for profile in profiles:
            if profile in not_built:
                continue
            for plan in plans_of[profile]:
                if not args.html_only and (not args.only or any(fnmatch.fnmatch(plan.name, pat)
                                                                for pat in args.only)):
                    run.append((profile, plan))
                    continue
                why = _reusable(executed_of[profile] / plan.notebook.name, profile, args.tiny)
                if why:
                    raise ValueError(f"cannot reuse the executed copy of {plan.name}: {why}")
        if run:
            _kernel_environment()
            print(f"casekit book: profile(s) {', '.join(p for p in profiles if p not in not_built)}"
                  f"{' (tiny)' if args.tiny else ''}, device {device}, {len(run)} notebook(s) to execute, "
                  f"results in {', '.join(str(results_of[p]) for p in profiles)}", flush=True)
        code = code_fingerprint()
        fingerprinted: dict[Path, tuple[Plan, str]] = {}
        reused = 0
        todo: list[tuple[int, Callable[[], float]]] = []
        for i, (profile, plan) in enumerate(run):
            label = f"{profile}/{plan.name}"
            target = executed_of[profile] / plan.notebook.name
            fingerprinted[target] = (plan, profile)
            state = store_state(results_of.get(profile))
            if not args.force and _up_to_date(target, notebook_fingerprint(plan, profile, args.tiny, code,
                                                                           state)):
                print(f"[{i + 1}/{len(run)}] {label} is up to date (same notebook, parameters, code and "
                      "results): reused", flush=True)
                reused += 1
                continue

            def job(plan: Plan = plan, profile: str = profile, label: str = label, i: int = i) -> float:
                print(f"[{i + 1}/{len(run)}] {label} …", flush=True)
                return execute_notebook(plan, executed_of[profile] / plan.notebook.name, kernel=args.kernel,
                                        timeout=args.timeout, progress=args.progress and args.jobs == 1,
                                        profile=profile, tiny=args.tiny)
            todo.append((i, job))

        def report(i: int, how: str, seconds: float | None) -> None:
            label = f"{run[i][0]}/{run[i][1].name}"
            print(f"[{i + 1}/{len(run)}] {label} " + (f"done in {seconds:.1f} s" if how == "done" else how),
                  flush=True)

        if args.jobs > 1:  # each kernel one share of the cores
            os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
        failures = execute_all(todo, study_dependencies(run), args.jobs, report)
        if failures:
            raise BookError("\n".join(failures))
        # what each copy now stands for: the stores as this build leaves them (a later build whose stores,
        # notebooks and code are the same reuses the copies instead of executing them again)
        _record_fingerprints({path: notebook_fingerprint(plan, profile, args.tiny, code,
                                                         store_state(results_of.get(profile)))
                              for path, (plan, profile) in fingerprinted.items()})
        t_exec = time.perf_counter() - t0
        if args.execute_only:
            print(f"casekit book: {len(run) - reused} notebook(s) executed and {reused} up to date in "
                  f"{t_exec:.1f} s; no HTML (--execute-only)", flush=True)
            return 0

        import nbformat
        import yaml

        built = [p for p in profiles if p not in not_built]
        executed = {p: [executed_of[p] / plan.notebook.name for plan in plans_of[p]] for p in built}
        runs = []
        for p in built:
            sub = profile_subdir(p, profiles)
            for e in executed[p]:
                meta = nbformat.read(str(e), as_version=4).metadata.get(METADATA_KEY, {})
                runs.append(((f"{sub}/" if sub else "") + e.stem, meta))
        info_md = build_info_markdown(build_info(", ".join(built), args.tiny, device, repo, args.scale), runs)
        claims_in = {p: (f"not built: {not_built[p].splitlines()[0]}" if p in not_built else results_of[p])
                     for p in profiles}
        chapters = {p: [plan.name for plan in plans_of[p]] for p in built}
        pages = {"_claims_table.md": claims_table_markdown(claims_in, profiles, chapters)}
        pages.update({f"not_built_{p}.md": not_built_page(p, [why], repo) for p, why in not_built.items()})
        t_facts = time.perf_counter()
        facts = profile_fact_pages(repo, built, not_built, results_of)
        if facts:
            pages.update(facts)
            print("casekit book: the profiles page's facts computed in "
                  f"{time.perf_counter() - t_facts:.1f} s", flush=True)
        per_profile = [plan.name for plan in plans_of[profiles[-1]]] if len(profiles) > 1 else []
        toc = profile_toc(yaml.safe_load((repo / "_toc.yml").read_text()), profiles, per_profile, not_built)
        t1 = time.perf_counter()
        assemble_source(repo, build / "src", executed.get(profiles[0], []), info_md,
                        more={profile_subdir(p, profiles): executed[p] for p in built if p != profiles[0]},
                        toc=toc, pages=pages)
        print("building the HTML (jupyter-book, execution off, strict) …", flush=True)
        build_html(build / "src", build / "html", strict=args.strict, verbose=args.verbose)
        t_html = time.perf_counter() - t1
    except (BookError, ValueError) as err:
        print(f"\ncasekit book: FAILED\n{err}", file=sys.stderr, flush=True)
        return 1
    index = build / "html" / "index.html"
    print(f"casekit book: {len(run) - reused} notebook(s) executed and {reused} up to date in "
          f"{t_exec:.1f} s, HTML built in {t_html:.1f} s, total {time.perf_counter() - t0:.1f} s")
    print(f"open {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
