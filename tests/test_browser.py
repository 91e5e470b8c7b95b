"""The built book in a real browser: headless Chromium, driven over the DevTools protocol, against the HTML
served on 127.0.0.1.  Every chapter loads, every image has a size, no page shows a traceback or error
output, the tables are there, and nothing is fetched from another host.

Needs ``chromium`` (Debian package; ``.ci/run`` installs it) and ``websocket-client`` (installed with
jupyter_server); skips with the reason when either is missing.  Set ``CASEKIT_BOOK_SCREENSHOTS=<dir>`` to
keep a full-page PNG of every chapter.
"""

from __future__ import annotations

import base64
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
import pytest
from test_book import REPO, expected_images, expected_tables, tiny_book

from casekit import book

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900",
                  "--remote-debugging-port=0", "--remote-allow-origins=*"]
# Sphinx's default MathJax (only on pages with math): the one remote script a page may ask for.
ALLOWED_REMOTE = ("https://cdn.jsdelivr.net/npm/mathjax@",)
ERROR_IN_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*(?:Error|Exception): ")

PAGE_PROBE = """(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  const art = document.querySelector('article');
  const outputs = Array.from(document.querySelectorAll('.cell_output'));
  return JSON.stringify({
    title: document.title,
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


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The tiny book served on 127.0.0.1 (random free port) → base URL."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (install Debian's `chromium` package; .ci/run does) — browser test "
                    "skipped")
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.skip("websocket-client is not installed (it comes with jupyter_server) — browser test skipped")
    built = tiny_book(tmp_path_factory)
    built.check()
    handler = functools.partial(QuietHandler, directory=str(built.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield built, chromium, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def chrome(site):
    _, chromium, _ = site
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
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)


def visit(tools: DevTools, url: str, screenshot: Path | None = None) -> tuple[dict, list[dict]]:
    """Open ``url`` in a fresh tab; return the page probe and the tab's network/console events."""
    target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Network", "Runtime", "Log"):
            tools.send(f"{domain}.enable", session=session)
        start = len(tools.events)
        tools.send("Page.navigate", {"url": url}, session=session)
        tools.wait_for("Page.loadEventFired", session)
        result = tools.send("Runtime.evaluate", {"expression": PAGE_PROBE, "awaitPromise": True,
                                                 "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page probe failed on {url}: {result['exceptionDetails']}")
        probe = json.loads(result["result"]["value"])
        if screenshot is not None:
            size = tools.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            shot = tools.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
                session=session)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        events = [e for e in tools.events[start:] if e.get("sessionId") == session]
        return probe, events
    finally:
        tools.send("Target.closeTarget", {"targetId": target})


def problems_in_events(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith(("http://127.0.0.1", "data:", "blob:", "about:", *ALLOWED_REMOTE)):
                out.append(f"requested a remote resource: {url}")
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


def test_every_chapter_renders(site, chrome):
    built, _, base = site
    shots = os.environ.get("CASEKIT_BOOK_SCREENSHOTS")
    entries = book.toc_files(REPO / "_toc.yml")
    with urllib.request.urlopen(f"{base}/index.html") as r:  # the site's entry redirects to the first page
        assert f"{entries[0]}.html" in r.read().decode()
    failures = []
    for entry in entries:
        shot = Path(shots) / f"{entry.replace('/', '__')}.png" if shots else None
        probe, events = visit(chrome, f"{base}/{entry}.html", shot)
        where = f"{entry}.html"
        bad = problems_in_events(events)
        if probe["title"].startswith("Error response") or not probe["h1"].strip():
            bad.append(f"no chapter here (title {probe['title']!r})")
        bad += [f"image {i['src']!r} has no size ({i['w']}×{i['h']})"
                for i in probe["images"] if i["w"] == 0 or i["h"] == 0]
        if ERROR_IN_OUTPUT.search(probe["outputText"]) or "Traceback" in probe["text"]:
            bad.append("shows a Python traceback or an exception in its output")
        if probe["errorAreas"]:
            bad.append(f"{probe['errorAreas']} stderr/error output area(s)")
        if entry.startswith("notebooks/"):
            executed = nbformat.read(str(built.root / "notebooks" / f"{Path(entry).name}.ipynb"),
                                     as_version=4)
            n_img = sum(1 for i in probe["images"] if i["output"])
            if n_img < expected_images(executed):
                bad.append(f"{n_img} output images, expected {expected_images(executed)}")
            if probe["dataframes"] != expected_tables(executed):
                bad.append(f"{probe['dataframes']} tables, expected {expected_tables(executed)}")
        elif entry == entries[0] and probe["tables"] < 1:
            bad.append("the build-information table is missing")
        failures += [f"{where}: {b}" for b in bad]
    assert not failures, "\n".join(failures)
