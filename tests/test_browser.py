"""The built book in a real browser: headless Chromium, driven over the DevTools protocol, against the HTML
served on 127.0.0.1.  Every chapter loads, every image has a size, no page shows a traceback or error
output, the tables are there, and nothing is fetched from another origin.  Issue 11's readability checks
(:func:`page_problems`): at 1280 px no element of the main column extends past it except inside a scrolling
box; at 420 px no page scrolls sideways; in every static explorer each control changes the displayed image;
no request leaves the page's origin; no absolute machine path appears in a page's text.  Each check is first
shown to fail on a hand-made page (``test_checks_catch_*``), which needs Chromium but not the book.

Needs ``chromium`` (Debian package; ``.ci/run`` installs it) and ``websocket-client`` (installed with
jupyter_server); skips with the reason when either is missing.  Set ``CASEKIT_BOOK_SCREENSHOTS=<dir>`` to
keep a full-page PNG of every chapter, ``CASEKIT_BOOK_BUILD=<dir>`` to check an existing tiny build.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from test_book import (
    REPO,
    BookBuild,
    expected_images,
    expected_tables,
    make_repo,
    run_driver,
    shown_outputs,
    tiny_book,
)

from casekit import book
from casekit.report import explorer as ex
from casekit.report import format as fmt

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900",
                  "--remote-debugging-port=0", "--remote-allow-origins=*"]
# Remote scripts a page may still ask for (none: MathJax is served from the book's own _static).
ALLOWED_REMOTE: tuple[str, ...] = ()
WIDE, NARROW = 1280, 420
# An absolute path of this machine in a page's text: /work/..., /tmp/..., /home/..., C:\...
MACHINE_PATH = re.compile(r"(?<![\w.~/:-])/(?:work|tmp|root|home|Users|mnt|var|opt|srv|scratch|private)/"
                          r"[^\s'\"<>)]*"
                          r"|\b[A-Za-z]:\\[^\s'\"<>]+")
ERROR_IN_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*(?:Error|Exception): ")

PAGE_PROBE = """(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  const art = document.querySelector('article');
  const outputs = Array.from(document.querySelectorAll('.cell_output'));
  return JSON.stringify({
    title: document.title,
    bodyText: document.body ? document.body.innerText : '',
    h1: (document.querySelector('article h1') || {innerText: ''}).innerText,
    text: art ? art.innerText : '',
    outputText: outputs.map(o => o.innerText).join('\\n'),
    images: imgs.map(i => ({src: (i.currentSrc || i.src).slice(0, 100), w: i.naturalWidth, h: i.naturalHeight,
                            output: !!i.closest('.cell_output')})),
    tables: art ? art.querySelectorAll('table').length : 0,
    dataframes: art ? art.querySelectorAll('table.dataframe').length : 0,
    errorAreas: document.querySelectorAll('.output.stderr, .output.traceback, .output.error').length,
  });
})()"""


# Elements of the main column whose box extends past it, unless an ancestor inside the column scrolls
# (overflow-x auto/scroll).  Descendants of a reported element are not reported again.
OVERFLOW_PROBE = """(() => {
  const main = document.querySelector('main article') || document.querySelector('article') || document.body;
  const box = main.getBoundingClientRect();
  const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const bad = [];
  for (const el of main.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || getComputedStyle(el).position === 'fixed') continue;
    if (r.right <= box.right + 1 && r.left >= box.left - 1) continue;
    let a = el.parentElement, inside = false;
    while (a && a !== main) { if (scrolls(a)) { inside = true; break; } a = a.parentElement; }
    if (inside || bad.some(b => b.contains(el))) continue;
    bad.push(el);
  }
  return JSON.stringify({column: [Math.round(box.left), Math.round(box.right)],
                         elements: bad.slice(0, 5).map(el => {
    const r = el.getBoundingClientRect();
    return {tag: el.tagName.toLowerCase(), cls: String(el.className).slice(0, 60),
            left: Math.round(r.left), right: Math.round(r.right), text: (el.innerText || '').slice(0, 60)};
  }), count: bad.length});
})()"""

SIDEWAYS_PROBE = ("JSON.stringify({scrollWidth: document.scrollingElement.scrollWidth, "
                  "innerWidth: window.innerWidth})")

# Each static explorer: every control is set to its other options in turn (input + change events) until an
# image's src changes; a control that changes no image is reported.  The control is set back afterwards.
EXPLORER_PROBE = """(async () => {
  const failures = [];
  const roots = Array.from(document.querySelectorAll('.casekit-explorer'));
  for (const [n, root] of roots.entries()) {
    const srcs = () => Array.from(root.querySelectorAll('img')).map(i => i.src).join('\\n');
    const controls = Array.from(root.querySelectorAll('select, input[type=range]'));
    if (!controls.length) { failures.push(`explorer ${n + 1} has no control`); continue; }
    if (!root.querySelector('img')) { failures.push(`explorer ${n + 1} shows no image`); continue; }
    for (const c of controls) {
      const label = c.closest('label');
      const name = (label && label.firstChild.nodeType === 3 ? label.firstChild.textContent.trim()
                    : c.tagName);
      const original = c.value, before = srcs();
      const values = c.tagName === 'SELECT' ? Array.from(c.options).map(o => o.value)
        : Array.from({length: Number(c.max) - Number(c.min) + 1}, (_, i) => String(Number(c.min) + i));
      let changed = false;
      for (const v of values.filter(v => v !== original).slice(0, 12)) {
        c.value = v;
        c.dispatchEvent(new Event('input', {bubbles: true}));
        c.dispatchEvent(new Event('change', {bubbles: true}));
        await new Promise(r => setTimeout(r, 0));
        if (srcs() !== before) { changed = true; break; }
      }
      if (!changed) failures.push(`explorer ${n + 1}: changing '${name}' `
                                  + `does not change the displayed image`);
      c.value = original;
      c.dispatchEvent(new Event('change', {bubbles: true}));
    }
  }
  return JSON.stringify({count: roots.length, failures});
})()"""


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate ``proc``; kill it if it has not exited after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def find_chromium() -> str | None:
    for name in (os.environ.get("CASEKIT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client over one websocket (flattened target sessions)."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            data = json.loads(self.ws.recv())
            if data.get("id") == self.next_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
            self.events.append(data)

    def wait_for(self, method: str, session: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def close(self) -> None:
        self.ws.close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # the browser may hang up early (favicon)
        pass


@pytest.fixture(scope="module")
def chromium():
    """Path of the Chromium binary; skips (with the reason) when it or websocket-client is missing."""
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found (install Debian's `chromium` package; .ci/run does) — browser test "
                    "skipped")
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.skip("websocket-client is not installed (it comes with jupyter_server) — browser test skipped")
    return path


@contextlib.contextmanager
def serve(directory: Path):
    """``directory`` served on 127.0.0.1 (a random free port) → base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, chromium):
    """The tiny book served on 127.0.0.1 (random free port) → (build, chromium, base URL).

    ``CASEKIT_BOOK_BUILD=<dir>`` reuses a finished ``python -m casekit.book --tiny --build-dir <dir>``
    instead of building one (to iterate on the checks)."""
    reuse = os.environ.get("CASEKIT_BOOK_BUILD")
    if reuse:
        built = BookBuild(Path(reuse), 0 if (Path(reuse) / "html" / "index.html").exists() else 1, "",
                          f"CASEKIT_BOOK_BUILD={reuse} holds no built book", 0.0)
    else:
        built = tiny_book(tmp_path_factory)
    built.check()
    with serve(built.html) as base:
        yield built, chromium, base


@pytest.fixture(scope="module")
def chrome(chromium):
    profile = Path(tempfile.mkdtemp(prefix="casekit-chromium-"))
    log = open(profile.parent / f"{profile.name}.log", "wb")
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=log, stderr=subprocess.STDOUT)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"Chromium did not start (exit {proc.poll()}); see {log.name}")
        time.sleep(0.1)
    port, path = port_file.read_text().splitlines()[:2]
    tools = DevTools(f"ws://127.0.0.1:{port}{path}")
    try:
        yield tools
    finally:
        tools.close()
        stop_process(proc)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)


def evaluate(tools: DevTools, session: str, expression: str, url: str) -> dict:
    result = tools.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, session=session)
    if "exceptionDetails" in result:
        raise RuntimeError(f"page probe failed on {url}: {result['exceptionDetails']}")
    return json.loads(result["result"]["value"])


def press_arrow_on_first_slider(tools: DevTools, session: str, url: str) -> dict:
    """Focus the first explorer slider and press → with real key events; did an image's src change?"""
    srcs = "JSON.stringify(Array.from(document.querySelectorAll('.casekit-explorer img')).map(i => i.src))"
    found = evaluate(tools, session, "JSON.stringify(!!(() => { const r = document.querySelector("
                     "'.casekit-explorer input[type=range]'); if (r) { r.focus(); } return r; })())", url)
    if not found:
        return {"tried": False, "changed": False}
    before = evaluate(tools, session, srcs, url)
    for kind in ("rawKeyDown", "keyUp"):
        tools.send("Input.dispatchKeyEvent", {"type": kind, "key": "ArrowRight", "code": "ArrowRight",
                                              "windowsVirtualKeyCode": 39}, session=session)
    return {"tried": True, "changed": evaluate(tools, session, srcs, url) != before}


def visit(tools: DevTools, url: str, screenshot: Path | None = None, *, width: int = WIDE,
          readability: bool = False, keyboard: bool = False,
          after: str | None = None) -> tuple[dict, list[dict]]:
    """Open ``url`` in a fresh tab ``width`` CSS px wide; return the page probe and the tab's network/console
    events.  ``readability`` adds the overflow, sideways-scroll and explorer probes (``overflow``,
    ``sideways``, ``explorers``); ``keyboard`` presses → on the first explorer slider (``keyboard``);
    ``after``: a JS expression returning a JSON string, evaluated last (``after``)."""
    target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Network", "Runtime", "Log"):
            tools.send(f"{domain}.enable", session=session)
        tools.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": 900, "deviceScaleFactor": 1,
                    "mobile": False}, session=session)
        start = len(tools.events)
        tools.send("Page.navigate", {"url": url}, session=session)
        tools.wait_for("Page.loadEventFired", session)
        probe = evaluate(tools, session, PAGE_PROBE, url)
        if screenshot is not None:
            size = tools.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            shot = tools.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
                session=session)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        if readability:
            probe["overflow"] = evaluate(tools, session, OVERFLOW_PROBE, url)
            probe["sideways"] = evaluate(tools, session, SIDEWAYS_PROBE, url)
            probe["explorers"] = evaluate(tools, session, EXPLORER_PROBE, url)
        if keyboard:
            probe["keyboard"] = press_arrow_on_first_slider(tools, session, url)
        if after is not None:
            probe["after"] = evaluate(tools, session, after, url)
        events = [e for e in tools.events[start:] if e.get("sessionId") == session]
        return probe, events
    finally:
        tools.send("Target.closeTarget", {"targetId": target})


def problems_in_events(events: list[dict], origin: str = "http://127.0.0.1") -> list[str]:
    """Requests that leave ``origin`` (scheme://host:port of the page), HTTP errors, failed loads, JS
    exceptions and console errors."""
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not (url == origin or url.startswith((f"{origin}/", "data:", "blob:", "about:",
                                                     *ALLOWED_REMOTE))):
                out.append(f"requested a resource from another origin: {url}")
        elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
            # the browser asks on its own; the book has none
            if p["response"]["url"].endswith("/favicon.ico"):
                continue
            out.append(f"HTTP {p['response']['status']} for {p['response']['url']}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"failed to load a resource ({p.get('errorText')})")
        elif method == "Runtime.exceptionThrown":
            out.append(f"JavaScript exception: {p['exceptionDetails'].get('text')} "
                       f"{p['exceptionDetails'].get('exception', {}).get('description', '')[:200]}")
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            url = p["entry"].get("url", "")
            if not url.startswith(ALLOWED_REMOTE) and not url.endswith("/favicon.ico"):
                out.append(f"console error: {p['entry']['text']}")
    return out


CHECKS = ("overflow", "sideways", "explorers", "requests", "paths")


def page_checks(probe: dict, events: list[dict], origin: str, width: int) -> dict[str, list[str]]:
    """Issue 11's checks on one visited page (``visit(..., readability=True)``), by kind: ``requests``
    (requests outside ``origin`` and the other event problems), ``overflow`` (at ≥ 1280 px, elements past
    the main column outside a scrolling box), ``sideways`` (at narrower widths, a page that scrolls
    sideways), ``explorers`` (a control that changes no image), ``paths`` (absolute machine paths)."""
    out: dict[str, list[str]] = {kind: [] for kind in CHECKS}
    out["requests"] = problems_in_events(events, origin)
    over = probe["overflow"]
    if width >= WIDE and over["count"]:
        left, right = over["column"]
        out["overflow"] = [f"at {width} px <{e['tag']} class={e['cls']!r}> spans {e['left']}–{e['right']} "
                           f"px, past the main column ({left}–{right} px), outside a scrolling box: "
                           f"{e['text']!r}"
                           for e in over["elements"]]
        if over["count"] > len(over["elements"]):
            out["overflow"].append(f"… {over['count'] - len(over['elements'])} more element(s) past the main "
                                   "column")
    side = probe["sideways"]
    if width < WIDE and side["scrollWidth"] > side["innerWidth"]:
        out["sideways"] = [(f"at {width} px the page scrolls sideways (scrollWidth {side['scrollWidth']} px "
                            f"> {side['innerWidth']} px)")]
    out["explorers"] = list(probe["explorers"]["failures"])
    paths = sorted(set(MACHINE_PATH.findall(probe["bodyText"])))
    out["paths"] = [f"shows an absolute machine path: {m!r}" for m in paths]
    return out


def page_problems(probe: dict, events: list[dict], origin: str, width: int) -> list[str]:
    """All of :func:`page_checks`' findings in one list."""
    return [p for found in page_checks(probe, events, origin, width).values() for p in found]


def built_pages(built: BookBuild) -> list[str]:
    """Every page of a build, from the table of contents the driver generated (with each profile's copies of
    the chapters, e.g. ``notebooks/cifar10/01_diagnostic``); the repository's own toc when there is none."""
    toc = built.root / "src" / "_toc.yml"
    return book.toc_files(toc if toc.exists() else REPO / "_toc.yml")


def test_every_chapter_renders(site, chrome):
    built, _, base = site
    shots = os.environ.get("CASEKIT_BOOK_SCREENSHOTS")
    entries = built_pages(built)
    with urllib.request.urlopen(f"{base}/index.html") as r:  # the site's entry redirects to the first page
        assert f"{entries[0]}.html" in r.read().decode()
    failures = []
    for entry in entries:
        shot = Path(shots) / f"{entry.replace('/', '__')}.png" if shots else None
        probe, events = visit(chrome, f"{base}/{entry}.html", shot)
        where = f"{entry}.html"
        bad = problems_in_events(events, base)
        if probe["title"].startswith("Error response") or not probe["h1"].strip():
            bad.append(f"no chapter here (title {probe['title']!r})")
        bad += [f"image {i['src']!r} has no size ({i['w']}×{i['h']})"
                for i in probe["images"] if i["w"] == 0 or i["h"] == 0]
        if ERROR_IN_OUTPUT.search(probe["outputText"]) or "Traceback" in probe["text"]:
            bad.append("shows a Python traceback or an exception in its output")
        if probe["errorAreas"]:
            bad.append(f"{probe['errorAreas']} stderr/error output area(s)")
        if entry.startswith("notebooks/"):
            executed = nbformat.read(str(built.root / f"{entry}.ipynb"), as_version=4)
            n_img = sum(1 for i in probe["images"] if i["output"])
            if n_img < expected_images(executed):
                bad.append(f"{n_img} output images, expected {expected_images(executed)}")
            if probe["dataframes"] != expected_tables(executed):
                bad.append(f"{probe['dataframes']} tables, expected {expected_tables(executed)}")
        elif entry == entries[0] and probe["tables"] < 1:
            bad.append("the build-information table is missing")
        failures += [f"{where}: {b}" for b in bad]
    assert not failures, "\n".join(failures)


def shown_explorers(executed) -> int:
    """Static explorers among the outputs the book shows."""
    return sum(d.get("text/html", "").count(f'class="{ex.EXPLORER_CLASS}"') for d in shown_outputs(executed))


@pytest.fixture(scope="module")
def readability(site, chrome) -> dict[str, list[str]]:
    """Every page of the tiny book at 1280 px and 420 px through :func:`page_checks` → findings by kind
    (plus ``explorers``: static explorers missing from their page)."""
    built, _, base = site
    found: dict[str, list[str]] = {kind: [] for kind in CHECKS}
    shots = os.environ.get("CASEKIT_BOOK_SCREENSHOTS")
    for entry in built_pages(built):
        for width in (WIDE, NARROW):
            narrow_shot = shots and width == NARROW  # the 1280 px shots come from test_every_chapter_renders
            shot = Path(shots) / f"{entry.replace('/', '__')}-{width}px.png" if narrow_shot else None
            probe, events = visit(chrome, f"{base}/{entry}.html", shot, width=width, readability=True)
            for kind, problems in page_checks(probe, events, base, width).items():
                found[kind] += [f"{entry}.html: {p}" for p in problems]
        if entry.startswith("notebooks/"):
            executed = nbformat.read(str(built.root / f"{entry}.ipynb"), as_version=4)
            if probe["explorers"]["count"] != shown_explorers(executed):
                found["explorers"].append(f"{entry}.html: {probe['explorers']['count']} static explorers on "
                                          f"the page, expected {shown_explorers(executed)}")
    return {kind: sorted(set(v), key=v.index) for kind, v in found.items()}


# Known failures of the book before issue 11's wiring (found with this test on the tiny build); strict, so
# the marker must go as soon as the wiring fixes them.
KNOWN: dict[str, str] = {}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=KNOWN[k]))
                                  if k in KNOWN else k for k in CHECKS])
def test_book_is_readable(readability, kind):
    """Issue 11 on every page of the tiny book: ``overflow`` (1280 px), ``sideways`` (420 px), ``explorers``,
    ``requests`` (same origin only), ``paths`` (no absolute machine path)."""
    assert not readability[kind], "\n".join(readability[kind])


# --------------------------------------------------------------------------- the checks can fail


def colour_png(rgb: tuple[int, int, int]) -> bytes:
    import numpy as np

    return ex.encode_image(np.broadcast_to(np.array(rgb, dtype=np.uint8), (8, 8, 3)).copy())


def toy_explorer() -> ex.StaticExplorer:
    """3 images (slider) × 2 methods (menu), one combination missing; each view a different colour."""
    controls = [ex.Control("image", ["image 0", "image 1", "image 2"], "range"),
                ex.Control("method", ["A", "B"])]
    views = {(i, m): ex.View([colour_png((80 * i, 200 * m, 90))], [("view", f"{i}-{m}")])
             for i in range(3) for m in range(2) if (i, m) != (2, 0)}
    return ex.StaticExplorer(controls, views, slots=["map"], title="toy")


def write_pages(root: Path) -> None:
    wide = pd.DataFrame({f"column {j}": [f"value {j} " * 4] for j in range(12)})
    shutil.copy(REPO / "book" / "_static" / "casekit.css", root / "casekit.css")
    head = '<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="casekit.css">'
    good = (f"{head}<title>good</title></head><body style='margin:0'><main><article style='max-width:600px;"
            "margin:0 auto'><h1>A readable page</h1>"
            f"{fmt.table(wide)._repr_html_()}"
            "<div class='cell_output'><div class='output text_html'><table class='dataframe' "
            "style='width:1000px'><tr><td>a raw DataFrame dump, boxed by "
            f"casekit.css</td></tr></table></div></div><img src='{ex._data_uri(colour_png((0, 0, 255)))}' "
            "style='width:900px' alt='a wide figure'><p>The results are in <code>results/demo</code>; see "
            f"https://example.org/home/page.</p>{toy_explorer().html}</article></main></body></html>")
    # controls without code
    broken = re.sub(r"<script>.*?</script>", "", toy_explorer().html, flags=re.DOTALL)
    bad = (f"{head}<title>bad</title></head><body style='margin:0'><main><article style='width:600px;"
           "margin:0 auto'><h1>An unreadable page</h1>"
           "<table id='wide' class='casekit-table' style='width:1000px'><tr><td>a wide table in no scroll "
           "box</td></tr></table><p>The results are in /work/main/results/demo and "
           "C:\\Users\\me\\results.</p><img src='http://127.0.0.2:9/pixel.png' alt='remote' width='10' "
           f"height='10'>{broken}</article></main></body></html>")
    (root / "good.html").write_text(good)
    (root / "bad.html").write_text(bad)


# The toy explorer (after the → key moved it to image 1): pick method B, back to A, then slide to image 2
# (A is missing there: the explorer keeps image 2 and moves to B).
DRIVE_TOY = """(() => {
  const root = document.querySelector('.casekit-explorer');
  const [slider, menu] = root.querySelectorAll('[data-control]');
  const state = () => ({src: root.querySelector('img').src,
                        numbers: root.querySelector('tbody').innerText.trim(), menu: menu.value,
                        readout: root.querySelector('[data-readout]').innerText});
  const first = state();
  menu.value = '1'; menu.dispatchEvent(new Event('change', {bubbles: true}));
  const second = state();
  menu.value = '0'; menu.dispatchEvent(new Event('change', {bubbles: true}));
  slider.value = '2'; slider.dispatchEvent(new Event('input', {bubbles: true}));
  return JSON.stringify([first, second, state()]);
})()"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory, chromium):
    root = tmp_path_factory.mktemp("pages")
    write_pages(root)
    with serve(root) as base:
        yield base


def test_checks_catch_an_unreadable_page(pages, chrome):
    probe, events = visit(chrome, f"{pages}/bad.html", width=WIDE, readability=True)
    wide = page_problems(probe, events, pages, WIDE)
    assert any("<table" in p and "past the main column" in p and "a wide table in no scroll box" in p
               for p in wide)
    assert "explorer 1: changing 'image' does not change the displayed image" in wide
    assert "explorer 1: changing 'method' does not change the displayed image" in wide
    assert "requested a resource from another origin: http://127.0.0.2:9/pixel.png" in wide
    assert "shows an absolute machine path: '/work/main/results/demo'" in wide
    assert "shows an absolute machine path: 'C:\\\\Users\\\\me\\\\results.'" in wide
    probe, events = visit(chrome, f"{pages}/bad.html", width=NARROW, readability=True)
    narrow = page_problems(probe, events, pages, NARROW)
    assert f"at {NARROW} px the page scrolls sideways (scrollWidth 1000 px > {NARROW} px)" in narrow
    # another port of the same host is another origin
    port = int(pages.rsplit(":", 1)[1])
    other = f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/x.css"
    assert problems_in_events([{"method": "Network.requestWillBeSent",
                                "params": {"request": {"url": other}}}],
                              pages) == [f"requested a resource from another origin: {other}"]
    assert problems_in_events([{"method": "Network.requestWillBeSent",
                                "params": {"request": {"url": f"{pages}/x.css"}}}], pages) == []


def test_checks_pass_a_readable_page_and_drive_its_explorer(pages, chrome):
    for width in (WIDE, NARROW):
        probe, events = visit(chrome, f"{pages}/good.html", width=width, readability=True, keyboard=True,
                              after=DRIVE_TOY)
        assert page_problems(probe, events, pages, width) == [], width
        assert probe["explorers"] == {"count": 1, "failures": []}
        assert probe["keyboard"] == {"tried": True, "changed": True}  # → on the slider: a real key press
        first, second, third = probe["after"]
        # after the → key
        assert first["numbers"].split() == ["view", "1-0"] and first["readout"] == "image 1"
        assert second["src"] != first["src"] and second["numbers"].split() == ["view", "1-1"]
        assert second["menu"] == "1"
        # image 2 has no view for method A: the explorer keeps the slider's choice and moves to method B
        assert (third["numbers"].split() == ["view", "2-1"] and third["menu"] == "1"
                and third["readout"] == "image 2")


# --------------------------------------------------------------------------- the pipeline, end to end

# The lines issue 11's wiring adds to _config.yml (sphinx: config:), applied here to a copy.
CSS_CONFIG = {"html_static_path": ["book/_static"], "html_css_files": ["casekit.css"]}

MINI_CELLS = [
    "n_images = 3",
    """import pandas as pd
import torch
from torch import nn
from casekit.report import explorer as ex
from casekit.report import format as fmt
from casekit.report.widgets import SaliencyExplorer

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
images = torch.randn(n_images, 3, 12, 12)
live = SaliencyExplorer(model, images, "2", methods=["gradcam", "case"], max_rank=3)
ex.display_explorer(live, ex.static_saliency(live))""",
    "fmt.table(pd.DataFrame({f'a long column name {j}': [0.123456 * j, 0.5] for j in range(14)}))",
    "pd.DataFrame({f'raw column {j}': ['x' * 12] for j in range(16)})  # a raw dump, boxed by casekit.css",
]


@pytest.fixture(scope="module")
def mini_book(tmp_path_factory, chromium):
    """A one-notebook book with a live+static explorer, a casekit table and a raw DataFrame, built by the
    real driver (papermill, page copy, myst-nb, _config.yml + the CSS lines) → (html folder, base URL)."""
    import yaml

    root = tmp_path_factory.mktemp("mini")
    repo = make_repo(root / "repo", {"01_mini": MINI_CELLS})
    config = yaml.safe_load((repo / "_config.yml").read_text())
    config["sphinx"]["config"].update(CSS_CONFIG)
    (repo / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(REPO / "book" / "_static", repo / "book" / "_static", dirs_exist_ok=True)
    proc = run_driver("--tiny", "--build-dir", str(root / "b"), repo=repo, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with serve(root / "b" / "html") as base:
        yield root / "b" / "html", base


def test_static_explorer_and_tables_in_a_built_book(mini_book, chrome):
    html_dir, base = mini_book
    page = (html_dir / "notebooks" / "01_mini.html").read_text()
    assert page.count(f'class="{ex.EXPLORER_CLASS}"') == 1  # myst-nb chose text/html ...
    assert "application/vnd.jupyter.widget-view+json" not in page  # ... and dropped the widget view
    assert 'href="../_static/casekit.css' in page and (html_dir / "_static" / "casekit.css").exists()
    for width in (WIDE, NARROW):
        probe, events = visit(chrome, f"{base}/notebooks/01_mini.html", width=width, readability=True,
                              keyboard=True)
        assert page_problems(probe, events, base, width) == [], width
        assert probe["explorers"] == {"count": 1, "failures": []}
        assert probe["keyboard"] == {"tried": True, "changed": True}
