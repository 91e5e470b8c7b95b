"""`make book`'s driver: every notebook of _toc.yml runs through papermill (tiny sizes) and the book builds,
strictly, from the executed copies.  One tiny build per test session, shared with test_browser.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from casekit import book

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@dataclass
class BookBuild:
    root: Path  # the --build-dir
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    started: float = 0.0  # time.time() when the build began

    @property
    def html(self) -> Path:
        return self.root / "html"

    def check(self) -> None:
        assert self.returncode == 0, (f"python -m casekit.book --tiny failed:\n{self.stdout}\n"
                                      f"{self.stderr[-5000:]}")


_BUILDS: dict[str, BookBuild] = {}


def run_driver(*args: str, repo: Path = REPO, timeout: float = 1800) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "casekit.book", "--no-progress", "--repo", str(repo), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def tiny_book(tmp_path_factory: pytest.TempPathFactory) -> BookBuild:
    """``python -m casekit.book --tiny`` into a temporary build folder, once per session."""
    if "tiny" not in _BUILDS:
        root = tmp_path_factory.mktemp("book")
        started, start = time.time(), time.perf_counter()
        proc = run_driver("--tiny", "--jobs", "2", "--build-dir", str(root))
        _BUILDS["tiny"] = BookBuild(root, proc.returncode, proc.stdout, proc.stderr,
                                    time.perf_counter() - start, started)
    return _BUILDS["tiny"]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> BookBuild:
    b = tiny_book(tmp_path_factory)
    b.check()
    return b


def page(build: BookBuild, entry: str) -> str:
    return (build.html / f"{entry}.html").read_text()


def article(html: str) -> str:
    start, end = html.find("<article"), html.find("</article>")
    assert start >= 0 and end > start, "no <article> in the page"
    return html[start:end]


# --------------------------------------------------------------------------- the real book, tiny sizes


def test_every_notebook_executes_with_tiny_parameters(built):
    notebooks = book.book_notebooks(REPO)
    assert notebooks, "_toc.yml lists no notebook"
    for path in notebooks:
        assert f"{path.stem} done in" in built.stdout
        executed = nbformat.read(str(built.root / "notebooks" / path.name), as_version=4)
        meta = executed.metadata[book.METADATA_KEY]
        assert meta["tiny"] is True and meta["profile"] == "demo" and meta["demo_zoo"] == "tiny"
        declared = book.declared_parameters(path)
        for name, value in book.TINY_PRESET.items():
            if name in declared:
                assert meta["parameters"][name] == value
        if "profile" in declared:
            assert meta["parameters"]["profile"] == "demo"
        if "results_dir" in declared:  # tiny results stay inside the build folder
            assert Path(meta["parameters"]["results_dir"]).is_relative_to(built.root)
        assert book.output_problems(executed) == []
        assert all(c.get("execution_count") for c in executed.cells if c.cell_type == "code"
                   and c.source.strip())
    print(f"tiny book built in {built.seconds:.0f} s")


def test_the_tiny_book_trains_no_model_at_the_full_demo_size(built):
    """The suite's time budget (book/architecture.md, "The test suite's time"): --tiny runs the demo profile
    on the tiny zoo, so no standard zoo member may be trained (or be half-trained) while the tiny book
    builds, and every kernel ran with the tiny zoo."""
    from casekit.subjects import demo, zoo

    assert book.TINY_ENVIRONMENT == {demo.ZOO_ENV: "tiny"}
    for family, seed in zoo.MEMBERS:
        path = zoo.member_checkpoint(zoo.training_config(family, seed, demo.CONFIG,
                                                         settings=zoo.TRAINING[family]))
        for p in (path, path.with_name(path.stem + ".partial.pt")):
            assert not p.exists() or p.stat().st_mtime < built.started, \
                f"the tiny book trained the standard {family} seed {seed} ({p.name})"
    for path in [*(built.root / "notebooks").glob("*.ipynb"), *(built.root / "notebooks").glob("*/*.ipynb")]:
        meta = nbformat.read(str(path), as_version=4).metadata[book.METADATA_KEY]
        assert meta["demo_zoo"] == "tiny", path.name


def test_book_is_built_from_the_executed_copies(built):
    assert (built.html / "index.html").exists()
    for entry in book.toc_files(REPO / "_toc.yml"):
        assert (built.html / f"{entry}.html").exists(), entry
    for path in book.book_notebooks(REPO):
        executed = nbformat.read(str(built.root / "notebooks" / path.name), as_version=4)
        body = article(page(built, f"notebooks/{path.stem}"))
        assert "cell_output" in body  # the source notebooks have no outputs
        assert body.count("<img") >= expected_images(executed) > 0
        assert body.count('class="dataframe"') == expected_tables(executed)


def shown_outputs(executed) -> list[dict]:
    """The outputs the book shows: rich data of executed cells, minus bare widgets (see book.page_copy)."""
    return [o.get("data", {}) for c in executed.cells for o in c.get("outputs", [])
            if o.get("output_type") in ("display_data", "execute_result") and not book._bare_widget(o)]


def expected_images(executed) -> int:
    """Figures (PNG without an HTML form) plus images inside HTML outputs (explorer snapshots)."""
    return sum(d["text/html"].count("<img") if "text/html" in d else int("image/png" in d)
               for d in shown_outputs(executed))


def expected_tables(executed) -> int:
    return sum(d.get("text/html", "").count('class="dataframe"') for d in shown_outputs(executed))


def test_injected_parameters_cell_is_hidden(built):
    for path in book.book_notebooks(REPO):
        executed = nbformat.read(str(built.root / "notebooks" / path.name), as_version=4)
        injected = [c for c in executed.cells if book.INJECTED_TAG in c.metadata.get("tags", [])]
        assert len(injected) == 1, "papermill adds exactly one injected-parameters cell"
        src = nbformat.read(str(built.root / "src" / "notebooks" / path.name), as_version=4)
        tagged = [c for c in src.cells if book.INJECTED_TAG in c.metadata.get("tags", [])]
        assert "remove-cell" in tagged[0].metadata.tags
        body = article(page(built, f"notebooks/{path.stem}"))
        assert "tag_injected-parameters" not in body
        assert "# Parameters" not in re.sub(r"<[^>]+>", "", body)  # papermill's first line of that cell
        assert "This page was run by" in body  # the note that lists the injected values instead
        assert "tag_parameters" in body  # the defaults stay visible


def test_landing_page_states_the_build(built):
    html = page(built, "book/intro")
    text = re.sub(r"<[^>]+>", " ", html)
    assert "demo (tiny test sizes)" in text
    import casekit

    assert casekit.__version__ in text and "torch" in text
    for path in book.book_notebooks(REPO):
        assert f"notebooks/{path.stem}.html" in html  # the table of contents links every chapter
    assert "make book" in text and "JupyterLab" in text
    assert "arXiv:2506.07327" in text or "2506.07327" in text


def test_pages_reference_no_network_resource(built):
    pattern = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    for html in built.html.rglob("*.html"):
        hits = pattern.findall(html.read_text())
        assert not hits, f"{html.relative_to(built.html)} loads a remote resource: {hits[:3]}"
    assert "thebe" not in (built.html / "book" / "intro.html").read_text()


# --------------------------------------------------------------------------- failures are loud


def make_repo(root: Path, notebooks: dict[str, list[str]], page: str = "# Intro\n") -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "book").mkdir()
    (root / "_config.yml").write_text((REPO / "_config.yml").read_text())
    (root / "book" / "references.bib").write_text((REPO / "book" / "references.bib").read_text())
    # _config.yml registers the book's CSS from book/_static
    shutil.copytree(REPO / "book" / "_static", root / "book" / "_static", dirs_exist_ok=True)
    (root / "book" / "intro.md").write_text(page)
    files = "".join(f"  - file: notebooks/{n}\n" for n in notebooks)
    toc = "format: jb-book\nroot: book/intro\nchapters:\n" + files
    (root / "_toc.yml").write_text(toc)
    for name, sources in notebooks.items():
        cells = [nbformat.v4.new_markdown_cell(f"# {name}")]
        params = nbformat.v4.new_code_cell(sources[0])
        params.metadata["tags"] = ["parameters"]
        cells += [params] + [nbformat.v4.new_code_cell(s) for s in sources[1:]]
        nb = nbformat.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(root / "notebooks" / f"{name}.ipynb"))
    return root


def test_a_failing_notebook_fails_the_build_naming_notebook_and_cell(tmp_path):
    repo = make_repo(tmp_path / "repo", {
        "01_raises": ["n_images = 2", "x = n_images * 2", "raise ValueError(f'boom {x}')"],
        "02_stderr": ["n_images = 2", "import sys; print('careful', file=sys.stderr)"],
    })
    proc = run_driver("--tiny", "--build-dir", str(tmp_path / "b"), repo=repo, timeout=600)
    assert proc.returncode == 1
    assert "01_raises.ipynb failed in cell 4" in proc.stderr  # markdown, parameters, injected, x = ..., raise
    assert "ValueError: boom 8" in proc.stderr  # n_images = 4 was injected by --tiny
    assert "02_stderr.ipynb shows error output" in proc.stderr and "wrote to stderr: careful" in proc.stderr
    assert not (tmp_path / "b" / "html").exists()


def test_a_sphinx_warning_fails_the_build(tmp_path):
    repo = make_repo(tmp_path / "repo", {}, page="# Intro\n\nSee {doc}`missing-page`.\n")
    (repo / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    strict = run_driver("--build-dir", str(tmp_path / "b"), repo=repo, timeout=600)
    assert strict.returncode == 1
    assert "missing-page" in strict.stderr and "jupyter-book build failed" in strict.stderr
    lenient = run_driver("--build-dir", str(tmp_path / "b"), "--no-strict", repo=repo, timeout=600)
    assert lenient.returncode == 0, lenient.stderr
    assert (tmp_path / "b" / "html" / "book" / "intro.html").exists()


# --------------------------------------------------------------------------- parameters


def write_nb(path: Path, params: str) -> Path:
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(path))
    return path


def test_declared_parameters(tmp_path):
    nb = write_nb(tmp_path / "a.ipynb", "n_images = 8  # comment\nk: float = 0.05\nmodels = ['resnet']\n"
                                        "root = Path.home()\nimport math\n")
    assert book.declared_parameters(nb) == {"n_images": 8, "k": 0.05, "models": ["resnet"],
                                            "root": "Path.home()"}
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]),
                   str(tmp_path / "b.ipynb"))
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        book.declared_parameters(tmp_path / "b.ipynb")


def test_parameter_precedence(tmp_path):
    a = write_nb(tmp_path / "01_a.ipynb", "profile = 'demo'\nn_images = 100\nseed = 0\nk = 0.05\n")
    b = write_nb(tmp_path / "02_b.ipynb", "n_images = 50\nmethods = ['case']\n")
    driver = {"profile": "paper", "device": "cpu", "results_dir": "/r", "recompute": False}
    overrides = {"paper": {"*": {"seed": 7, "n_images": 1000}, "02_b": {"n_images": 500}},
                 "tiny": {"01_a": {"k": 0.5}}}
    plans = book.plan_parameters([a, b], driver, profile="paper", overrides=overrides,
                                 passthrough={"seed": 3})
    assert plans[0].parameters == {"seed": 3, "n_images": 1000, "profile": "paper"}
    # "*" gives only declared names; the notebook's entry wins
    assert plans[1].parameters == {"n_images": 500}
    tiny = book.plan_parameters([a, b], driver, profile="paper", tiny=True, overrides=overrides)
    assert tiny[0].parameters == {"seed": 7, "n_images": 4, "k": 0.5, "profile": "paper"}
    assert tiny[1].parameters == {"n_images": 4}
    full = book.plan_parameters([a, b], driver, profile="cifar10", scale="full")
    assert full[0].parameters["n_images"] == "all" and full[1].parameters == {"n_images": "all"}
    assert book.plan_parameters([a, b], driver, profile="paper", scale="full")[1].parameters == {}
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        book.plan_parameters([a, b], driver, profile="demo", scale="huge")
    with pytest.raises(ValueError, match="-p mehtods: no notebook of the book declares it"):
        book.plan_parameters([a, b], driver, profile="demo", passthrough={"mehtods": ["case"]})
    with pytest.raises(ValueError, match="--profile"):
        book.plan_parameters([a, b], driver, profile="demo", passthrough={"profile": "paper"})
    with pytest.raises(ValueError, match="'03_c' is not a notebook of the book"):
        book.plan_parameters([a, b], driver, profile="demo", overrides={"demo": {"03_c": {"seed": 1}}})
    with pytest.raises(ValueError, match="notebook 02_b has no parameter 'seed'"):
        book.plan_parameters([a, b], driver, profile="demo", overrides={"demo": {"02_b": {"seed": 1}}})
    with pytest.raises(ValueError, match="unknown profile"):
        book.plan_parameters([a, b], driver, profile="imagenet")


def test_passthrough_values_are_yaml():
    parsed = book.parse_passthrough([("n_images", "4"), ("k", "0.05"), ("recompute_cam", "true"),
                                     ("models", "[resnet, vgg]"), ("name", "top-1"), ("empty", ""),
                                     ("x", "null")])
    assert parsed == {"n_images": 4, "k": 0.05, "recompute_cam": True, "models": ["resnet", "vgg"],
                      "name": "top-1", "empty": "", "x": None}
    with pytest.raises(ValueError, match="Python identifier"):
        book.parse_passthrough([("n-images", "4")])


def test_overrides_file_is_validated(tmp_path):
    assert book.load_overrides(tmp_path / "absent.yml") == {}
    bad = tmp_path / "p.yml"
    bad.write_text("imagenet: {}\n")
    with pytest.raises(ValueError, match="unknown section"):
        book.load_overrides(bad)
    bad.write_text("demo:\n  01_a: 3\n")
    with pytest.raises(ValueError, match="must map notebook names"):
        book.load_overrides(bad)


def test_toc_files_and_missing_entries(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nparts:\n  - caption: x\n    "
                                       "chapters:\n      - file: notebooks/01_a\n        sections:\n        "
                                       "  - file: book/more\n")
    assert book.toc_files(tmp_path / "_toc.yml") == ["book/intro", "notebooks/01_a", "book/more"]
    with pytest.raises(ValueError, match="do not exist: book/intro.md, notebooks/01_a.ipynb, book/more.md"):
        book.book_notebooks(tmp_path)


def test_page_copy_hides_injected_cell_and_bare_widgets():
    params = nbformat.v4.new_code_cell("# Parameters\nn_images = 4\n")
    params.metadata["tags"] = [book.INJECTED_TAG]
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}}
    bar = nbformat.v4.new_output("display_data", data={**view, "text/plain": "  0%|"})
    explorer = nbformat.v4.new_output("display_data", data={**view, "text/plain": "E", "text/html": "<img/>"})
    cell = nbformat.v4.new_code_cell("run()", outputs=[bar, explorer])
    nb = nbformat.v4.new_notebook(cells=[params, cell])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata[book.METADATA_KEY] = {"parameters": {"n_images": 4, "profile": "demo",
                                                     "results_dir": "/home/someone/casekit/results/demo"}}
    out = book.page_copy(nb)
    assert out.cells[0].metadata.tags == [book.INJECTED_TAG, "remove-cell"]
    assert out.cells[1].cell_type == "markdown" and "`n_images = 4`" in out.cells[1].source
    assert "`results_dir = 'results/demo'`" in out.cells[1].source and "/home" not in out.cells[1].source
    assert out.cells[2].outputs == [explorer]
    assert "widgets" not in out.metadata
    assert nb.cells[1].outputs == [bar, explorer]  # the executed copy is left as it was


def test_reuse_of_executed_copies_checks_the_profile(tmp_path):
    path = tmp_path / "01_a.ipynb"
    assert "does not exist" in book._reusable(path, "demo", False)
    nb = nbformat.v4.new_notebook()
    nb.metadata[book.METADATA_KEY] = {"profile": "paper", "tiny": False, "parameters": {}}
    nbformat.write(nb, str(path))
    assert book._reusable(path, "paper", False) is None
    assert "executed with profile 'paper'" in book._reusable(path, "demo", False)
    assert "executed with profile 'paper'" in book._reusable(path, "paper", True)


def test_help_documents_the_parameters():
    text = book._parser().format_help()
    for word in ("--profile", "--tiny", "-p NAME VALUE", "results_dir", "recompute", "--only", "--html-only",
                 "notebooks/parameters.yml"):
        assert word in text


def test_dry_run_prints_the_plan():
    proc = run_driver("--dry-run", "-p", "seed", "3", "--device", "cpu", timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.strip().splitlines())
    quick = json.loads(lines["notebooks/00_quickstart.ipynb"])
    assert quick["seed"] == 3 and quick["device"] == "cpu"


def test_paper_profile_without_inputs_stops_before_running_anything(tmp_path, monkeypatch):
    """Offline, `make book PROFILE=paper` lists everything that is missing once, and executes no notebook."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CASEKIT_CACHE", str(tmp_path / "cache"))
    proc = run_driver("--profile", "paper", "--build-dir", str(tmp_path / "build"), timeout=300)
    assert proc.returncode == 1
    err = proc.stderr
    assert "needs 7 item(s) that are not on this machine (nothing was run)" in err, err
    for name in ("resnet50-", "vgg19_bn-", "densenet201-", "convnext_large-", "seed(s) 0 1 2 3 4",
                 "ImageNet validation images not found", "CIFAR-100 (test split) not found"):
        assert name in err, name
    assert not (tmp_path / "build" / "notebooks").exists()
    assert "[1/" not in proc.stdout


def test_page_copy_puts_the_chapter_summary_under_the_title():
    title = nbformat.v4.new_markdown_cell("# Chapter\n\nWhat it is about.")
    code = nbformat.v4.new_code_cell("res = run()")
    summary = nbformat.v4.new_code_cell("Markdown(s)")
    summary.metadata["tags"] = ["remove-input", book.SUMMARY_TAG]
    tail = nbformat.v4.new_markdown_cell("## More")
    out = book.page_copy(nbformat.v4.new_notebook(cells=[title, code, summary, tail]))
    assert [c.source for c in out.cells] == ["# Chapter", "Markdown(s)", "What it is about.", "res = run()",
                                             "## More"]
    # no title first, or no summary: the order of the notebook is kept
    plain = nbformat.v4.new_notebook(cells=[code, summary, tail])
    assert [c.source for c in book.page_copy(plain).cells] == ["res = run()", "Markdown(s)", "## More"]
    assert [c.source for c in book.results_first([title, code])] == [title.source, code.source]


def test_profile_fact_pages_are_generated_only_where_a_page_includes_them(tmp_path):
    """The profiles page's includes: none for a book that does not include them; otherwise the class table,
    the gallery PNG, the demo models and one sentence for a cifar10 profile that was not built — written by
    assemble_source (text and image bytes) into src/book/."""
    from casekit.report import profile_facts as pf

    repo = make_repo(tmp_path / "repo", {})
    assert book.profile_fact_pages(repo, ["demo"], {}, {"demo": tmp_path / "r"}) == {}
    (repo / "book" / "profiles.md").write_text(f"# Profiles\n\n```{{include}} {pf.CLASSES_PAGE}\n```\n")
    pages = book.profile_fact_pages(repo, ["demo"], {"cifar10": "missing"}, {"demo": tmp_path / "r"})
    assert set(pages) == {pf.CLASSES_PAGE, pf.GALLERY_PNG, pf.DEMO_MODELS_PAGE, pf.CIFAR10_PAGE}
    assert pages[pf.CIFAR10_PAGE] == ("This build shows no numbers of the CIFAR-10 networks: the cifar10 "
                                      "profile was not built, its inputs are missing.\n")
    import casekit as ck

    acc = 100 * ck.demo.trained("resnet", 0, progress=False).test_accuracy
    models, classes = pages[pf.DEMO_MODELS_PAGE], pages[pf.CLASSES_PAGE]
    assert f"| ResNet | {acc:.1f} % | `layer4.0.conv2` (final convolution) | 8 × 8 |" in models
    test = ck.demo.dataset("test", progress=False)
    area = 100 * (test.parts[test.labels == 0] == 1).float().mean().item()
    assert f"| 0 | striped disk + orange dot | striped disk | orange dot | {area:.1f} % |" in classes
    only_paper = book.profile_fact_pages(repo, ["paper"], {}, {"paper": tmp_path / "r"})
    assert "not part of this build" in only_paper[pf.CIFAR10_PAGE]
    assert "not listed" in only_paper[pf.DEMO_MODELS_PAGE]
    src = tmp_path / "src"
    book.assemble_source(repo, src, [], "info", pages=pages)
    assert (src / "book" / pf.GALLERY_PNG).read_bytes() == pages[pf.GALLERY_PNG]
    assert (src / "book" / pf.CLASSES_PAGE).read_text() == pages[pf.CLASSES_PAGE]


def test_a_second_build_reuses_up_to_date_chapters(tmp_path):
    """A chapter is executed again only when its notebook, parameters, casekit's code or its result store
    changed since the last build (or with --force); otherwise its executed copy is reused."""
    counter = tmp_path / "executions.txt"
    repo = make_repo(tmp_path / "repo", {"01_count": [
        'profile = "demo"\nresults_dir = None\nn_images = 2',
        f"open({str(counter)!r}, 'a').write('x')",
    ]})
    args = ("--tiny", "--profile", "demo", "--build-dir", str(tmp_path / "b"), "--execute-only")

    def build(*more: str) -> str:
        proc = run_driver(*args, *more, repo=repo, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "01_count done" in build() and counter.read_text() == "x"
    assert "01_count is up to date" in build() and counter.read_text() == "x"  # reused, not executed
    store = tmp_path / "b" / "results" / "demo-tiny"
    store.mkdir(parents=True, exist_ok=True)
    (store / "part-1.parquet").write_bytes(b"new results")  # the result store changed
    assert "01_count done" in build() and counter.read_text() == "xx"
    assert "01_count is up to date" in build() and counter.read_text() == "xx"
    nb = nbformat.read(str(repo / "notebooks" / "01_count.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A new paragraph."))  # the notebook changed
    nbformat.write(nb, str(repo / "notebooks" / "01_count.ipynb"))
    assert "01_count done" in build() and counter.read_text() == "xxx"
    assert "01_count done" in build("--force") and counter.read_text() == "xxxx"
    assert "01_count done" in build("-p", "n_images", "3") and counter.read_text() == "xxxxx"  # parameters
    assert not (tmp_path / "b" / "html").exists()  # --execute-only: the notebooks, no HTML
