"""The explorers live in JupyterLab, as a user meets them after ``make lab`` (issue 13).

JupyterLab runs on 127.0.0.1 with a token, headless Chromium opens a copy of ``00_quickstart.ipynb`` (small
parameters injected the way papermill does), runs all cells through Lab's own command, and the test checks
that the explorer is rendered by the ipywidgets manager (live controls, not the static HTML snapshot) and
that choosing another method in its menu redraws the map.  The kernel reuses the session's model zoo.

Needs ``chromium`` (Debian; ``.ci/run`` installs it) and ``websocket-client``; skips when either is missing.
On a failure the page is saved as ``lab-failure.png`` in the test's temporary folder.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from test_browser import CHROMIUM_FLAGS, DevTools, find_chromium, stop_process

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "00_quickstart.ipynb"
SMALL = {"n_images": 4}  # the quickstart's own parameter; the explorer needs no more
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.5):
    """Poll ``check()`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (free port, random token) serving a folder with the small quickstart copy."""
    if find_chromium() is None:
        pytest.skip("no Chromium found (Debian package `chromium`; .ci/run installs it) — Lab test skipped")
    pytest.importorskip("websocket", reason="websocket-client is not installed — Lab test skipped")
    import papermill

    root = tmp_path_factory.mktemp("lab")
    notebooks, home = root / "notebooks", root / "jupyter"
    notebooks.mkdir()
    papermill.execute_notebook(str(QUICKSTART), str(notebooks / QUICKSTART.name), parameters=dict(SMALL),
                               prepare_only=True, progress_bar=False)  # injects the parameters, runs nothing
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1", "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={notebooks}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.workspaces_dir={home / 'workspaces'}",
           f"--LabApp.user_settings_dir={home / 'settings'}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "lab.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            tail = (root / "lab.log").read_text()[-3000:]
            raise RuntimeError(f"JupyterLab exited ({proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(up, 120, "JupyterLab answering on 127.0.0.1")
        yield {"url": f"{base}/lab/tree/{QUICKSTART.name}?token={token}", "root": root}
    finally:
        stop_process(proc, timeout=30)
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    """A Chromium tab (fresh profile) → ``evaluate(js)`` returning the awaited value."""
    chromium = find_chromium()
    profile = Path(tempfile.mkdtemp(prefix="casekit-lab-chromium-"))
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    try:
        wait_until(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 2, 60,
                   "Chromium starting", 0.1)
        port, path = port_file.read_text().splitlines()[:2]
        tools = DevTools(f"ws://127.0.0.1:{port}{path}")
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tools.send("Page.enable", session=session)
        tools.send("Runtime.enable", session=session)

        def evaluate(js: str):
            result = tools.send("Runtime.evaluate", {"expression": js, "awaitPromise": True,
                                                     "returnByValue": True}, session=session)
            if "exceptionDetails" in result:
                raise RuntimeError(f"in the page: {result['exceptionDetails']}")
            return result["result"].get("value")

        def screenshot(path: Path) -> None:
            shot = tools.send("Page.captureScreenshot", {"format": "png"}, session=session)
            path.write_bytes(base64.b64decode(shot["data"]))

        tools.send("Page.navigate", {"url": lab["url"]}, session=session)
        yield evaluate, screenshot, tools, session
        tools.close()
    finally:
        stop_process(proc)
        shutil.rmtree(profile, ignore_errors=True)


# JavaScript run in the page.  NB binds `nb`: the open notebook panel (the server exposes Lab's app object).
NB = ("const app = window.jupyterapp; const w = app && app.shell.currentWidget;"
      "const nb = w && w.content && w.sessionContext ? w : null;")
STATE = NB + """
  if (!nb) return JSON.stringify({ready: false});
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code' && c.model.sharedModel.source.trim());
  const errors = [];
  for (const c of cells) for (let i = 0; i < c.model.outputs.length; i++) {
    const o = c.model.outputs.get(i);
    if (o.type === 'error') errors.push(o.toJSON().ename + ': ' + o.toJSON().evalue);
  }
  return JSON.stringify({ready: true, status: kernel ? kernel.status : 'none', cells: cells.length,
    executed: cells.filter(c => c.model.executionCount).length, errors});"""
EXPLORER = """
  const box = document.querySelector('.jp-OutputArea-output .jupyter-widgets.widget-vbox');
  const img = box && box.querySelector('img.widget-image');
  const method = box && Array.from(box.querySelectorAll('.widget-dropdown'))
      .find(d => (d.querySelector('label') || {}).textContent === 'method');
  const select = method && method.querySelector('select');
  return JSON.stringify({
    live: !!box, dropdowns: document.querySelectorAll('.jupyter-widgets.widget-dropdown').length,
    sliders: document.querySelectorAll('.jupyter-widgets.widget-slider').length,
    snapshot: document.querySelectorAll('.casekit-explorer-snapshot').length,
    widgetErrors: (document.body.innerText.match(/Error displaying widget|Error rendering view/g) || [])
        .length,
    src: img ? img.src : null, width: img ? img.naturalWidth : 0,
    options: select ? Array.from(select.options).map(o => o.textContent) : [],
    selected: select ? select.selectedIndex : -1});"""


def js(body: str) -> str:
    return f"(async () => {{ {body} }})()"


def test_quickstart_explorer_is_live_in_jupyterlab(lab, page):
    evaluate, screenshot, _, _ = page
    t0 = time.perf_counter()
    try:
        wait_until(lambda: json.loads(evaluate(js(STATE)))["ready"] and evaluate(js(NB + """
            await nb.sessionContext.ready; await nb.revealed;
            return !!(nb.sessionContext.session && nb.sessionContext.session.kernel);""")),
            180, "the notebook open in JupyterLab with a kernel", 1)
        opened = time.perf_counter() - t0
        evaluate(js("await window.jupyterapp.commands.execute('notebook:run-all-cells'); return true;"))
        def finished():
            s = json.loads(evaluate(js(STATE)))
            return s if s["executed"] == s["cells"] and s["status"] == "idle" else None

        state = wait_until(finished, 300, "every cell executed", 1)
        assert state["errors"] == [], state["errors"]
        ran = time.perf_counter() - t0

        view = wait_until(lambda: (lambda v: v if (v["live"] and v["src"] and v["width"]) or v["snapshot"]
                                   else None)(json.loads(evaluate(js(EXPLORER)))), 60, "the explorer's view")
        assert view["snapshot"] == 0, "JupyterLab shows the static snapshot: the widget manager is missing"
        assert view["widgetErrors"] == 0
        # dropdowns: layer, method, two targets, contrast strategy; sliders: image, K, k
        assert view["dropdowns"] >= 5 and view["sliders"] >= 3
        assert "CASE" in view["options"] and "Grad-CAM" in view["options"]
        before = view["src"]
        other = view["options"].index("Grad-CAM")
        assert other != view["selected"]
        evaluate(js(f"""{EXPLORER.split('return')[0]}
            select.selectedIndex = {other}; select.dispatchEvent(new Event('change', {{bubbles: true}}));
            return true;"""))
        after = wait_until(lambda: (lambda v: v if v["src"] and v["src"] != before and v["width"] else None)(
            json.loads(evaluate(js(EXPLORER)))), 60, "a new map after choosing Grad-CAM in the method menu")
        assert after["selected"] == other
        print(f"Lab: notebook open {opened:.0f} s, all cells run {ran:.0f} s, "
              f"method change redrawn {time.perf_counter() - t0:.0f} s after opening")
    except BaseException:
        screenshot(lab["root"] / "lab-failure.png")
        tail = (lab["root"] / "lab.log").read_text()[-3000:]
        print(f"screenshot: {lab['root'] / 'lab-failure.png'}\nJupyterLab log:\n{tail}")
        raise
