"""casekit.study.store: atomic batches, resume after SIGKILL, duplicate and config checks."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from casekit.study.store import ResultStore

KEY = ("model", "image_id", "method")
CONFIG = {"seed": 0, "k": 0.05, "methods": ["gradcam", "case"]}

# A miniature runner: 30 batches of 4 images × 2 methods, values seeded by the batch index.  Argument
# "after-commit N" dies (SIGKILL) right after its N-th commit, "mid-write N" while writing the temporary
# file of its N-th commit, "ready" prints a line once started (and paces its commits) so that the parent
# can kill it at a random moment.
RUNNER = textwrap.dedent(
    """
    import os, signal, sys, time, types
    import numpy as np
    if __name__ == "__main__":  # the store needs no torch: skip casekit/__init__ to start fast
        package = types.ModuleType("casekit")
        package.__path__ = [os.environ["CASEKIT_PACKAGE_DIR"]]
        sys.modules["casekit"] = package
    from casekit.study import store as store_module
    from casekit.study.store import ResultStore

    KEY = ("model", "image_id", "method")
    CONFIG = {"seed": 0, "k": 0.05, "methods": ["gradcam", "case"]}
    N_BATCHES = 30

    def make_rows(b):
        rng = np.random.default_rng(b)
        rows = []
        for i in range(4):
            for m in ("gradcam", "case"):
                rows.append({"model": f"net{b % 2}", "image_id": 4 * b + i, "method": m,
                             "agreement": float(rng.random()), "drop": np.float32(rng.random()),
                             "label": f"class{int(rng.integers(10))}"})
        return rows

    def run(path, mode="", n=0):
        store = ResultStore(path, key=KEY, config=CONFIG)
        done = store.done_keys()
        commits = 0
        if mode == "mid-write":
            real = store_module.pq.write_table
            def write(table, where, *args, **kwargs):
                if commits + 1 == n:  # a half-written temporary file, then death
                    with open(where, "wb") as fh:
                        fh.write(b"PAR1 half a file")
                    os.kill(os.getpid(), signal.SIGKILL)
                real(table, where, *args, **kwargs)
            store_module.pq.write_table = write
        if mode == "ready":
            print("ready", flush=True)
        for b in range(N_BATCHES):
            rows = [r for r in make_rows(b) if (r["model"], r["image_id"], r["method"]) not in done]
            if rows:
                store.append(rows)
                commits += 1
                if mode == "after-commit" and commits == n:
                    os.kill(os.getpid(), signal.SIGKILL)
                if mode == "ready":
                    time.sleep(0.005)  # a run of >= 0.15 s, longer than the parent's random wait
        return store

    if __name__ == "__main__":
        run(sys.argv[1], *(sys.argv[2:3]), *(int(a) for a in sys.argv[3:4]))
    """
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runner")
    script = folder / "runner.py"
    script.write_text(RUNNER)
    namespace = runpy.run_path(str(script), run_name="runner")
    reference = namespace["run"](folder / "reference").read()
    return script, namespace, reference


def _child(script: Path, *args: str, **kwargs) -> subprocess.Popen:
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), CASEKIT_PACKAGE_DIR=str(repo / "casekit"))
    return subprocess.Popen([sys.executable, str(script), *args], env=env, **kwargs)


def test_reference_run_is_complete_and_reproducible(runner, tmp_path):
    script, ns, reference = runner
    assert len(reference) == 30 * 4 * 2
    assert list(reference.columns) == ["model", "image_id", "method", "agreement", "drop", "label"]
    assert reference["drop"].dtype == np.float32
    again = ns["run"](tmp_path / "again").read()
    pd.testing.assert_frame_equal(again, reference, check_exact=True)  # bitwise equal floats
    sorted_ref = reference.sort_values(list(KEY)).reset_index(drop=True)
    pd.testing.assert_frame_equal(sorted_ref, reference)


@pytest.mark.parametrize("mode, n", [("after-commit", 7), ("mid-write", 12)])
def test_sigkill_then_resume_gives_the_uninterrupted_table(runner, tmp_path, mode, n):
    script, ns, reference = runner
    path = tmp_path / "store"
    proc = _child(script, str(path), mode, str(n))
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    committed = sorted(f for f in os.listdir(path) if f.endswith(".parquet"))
    assert len(committed) == (n if mode == "after-commit" else n - 1)
    if mode == "mid-write":
        assert any(f.endswith(".tmp") for f in os.listdir(path))  # the half-written file is there...
    assert len(ResultStore(path, KEY, CONFIG)) == 8 * len(committed)  # ...but not counted
    resumed = ns["run"](path)
    assert not any(f.endswith(".tmp") for f in os.listdir(path))  # and removed at the next commit
    pd.testing.assert_frame_equal(resumed.read(), reference, check_exact=True)


def test_sigkill_at_random_moments(runner, tmp_path):
    script, ns, reference = runner
    path = tmp_path / "store"
    rng = np.random.default_rng(0)
    partial = []  # rows found after each kill
    for attempt in range(3):
        before = len(list(path.glob("part-*.parquet"))) if path.exists() else 0
        proc = _child(script, str(path), "ready", stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            for _ in range(3000):  # wait for this child's first commit, then kill it a random moment later
                if len(list(path.glob("part-*.parquet"))) > before or proc.poll() is not None:
                    break
                time.sleep(0.002)
            try:
                proc.wait(timeout=float(rng.uniform(0.0, 0.1)))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if code == 0:
            break
        assert code == -signal.SIGKILL
        partial.append(len(ResultStore(path, KEY)))
    else:
        ns["run"](path)  # finish in-process if every child was killed
    assert partial and all(0 < n < 240 and n % 8 == 0 for n in partial)  # killed mid-run, whole batches only
    pd.testing.assert_frame_equal(ResultStore(path, KEY).read(), reference, check_exact=True)


# --------------------------------------------------------------------------- API and checks


def rows(ids, method="case", value=0.5):
    return [{"model": "net", "image_id": i, "method": method, "agreement": value} for i in ids]


def test_append_read_done_keys(tmp_path):
    store = ResultStore(tmp_path / "s", KEY, CONFIG)
    assert store.read().empty and store.done_keys() == set()
    assert store.append(rows([3, 1])) == 2
    assert store.append(pd.DataFrame(rows([2], method="gradcam"))) == 1
    assert store.append([]) == 0
    assert store.done_keys() == {("net", 3, "case"), ("net", 1, "case"), ("net", 2, "gradcam")}
    df = store.read()
    assert df["image_id"].tolist() == [1, 2, 3] and df["method"].tolist() == ["case", "gradcam", "case"]
    assert store.read(columns=["agreement"]).columns.tolist() == ["agreement"]
    assert ("net", 1, "case") in store and len(store) == 3
    assert store.run_config == CONFIG


def test_duplicates_are_refused_and_nothing_is_written(tmp_path):
    store = ResultStore(tmp_path / "s", KEY, CONFIG)
    store.append(rows([1, 2]))
    with pytest.raises(ValueError, match="already in the store"):
        store.append(rows([3, 2]))
    with pytest.raises(ValueError, match="repeated key"):
        store.append(rows([4, 4]))
    assert len(store) == 2 and len(list((tmp_path / "s").glob("part-*.parquet"))) == 1
    # a second handle (another process) sees the rows and refuses them too
    other = ResultStore(tmp_path / "s", KEY, CONFIG)
    with pytest.raises(ValueError, match="already in the store"):
        other.append(rows([1]))
    other.append(rows([5]))
    assert ("net", 5, "case") in store.done_keys()


def test_row_validation(tmp_path):
    store = ResultStore(tmp_path / "s", KEY, CONFIG)
    with pytest.raises(ValueError, match="lack the key column"):
        store.append([{"model": "net", "image_id": 1, "agreement": 0.1}])
    with pytest.raises(ValueError, match="missing values"):
        store.append([{"model": "net", "image_id": None, "method": "case", "agreement": 0.1}])
    store.append(rows([1]))
    with pytest.raises(ValueError, match=r"missing \['agreement'\], unexpected \['score'\]"):
        store.append([{"model": "net", "image_id": 2, "method": "case", "score": 0.1}])
    with pytest.raises(ValueError, match="column types"):
        store.append([{"model": "net", "image_id": 2, "method": "case", "agreement": "high"}])
    with pytest.raises(TypeError):
        store.append("not rows")
    store.append([{"agreement": 1, "method": "case", "image_id": 2, "model": "net"}])  # order and int → float
    assert store.read()["agreement"].tolist() == [0.5, 1.0]


def test_config_and_key_are_checked_on_resume(tmp_path):
    ResultStore(tmp_path / "s", KEY, CONFIG).append(rows([1]))
    with pytest.raises(ValueError, match=r"different run config \(seed: stored 0, given 1\)"):
        ResultStore(tmp_path / "s", KEY, {**CONFIG, "seed": 1})
    with pytest.raises(ValueError, match="not given"):
        ResultStore(tmp_path / "s", KEY, {"seed": 0, "k": 0.05})
    with pytest.raises(ValueError, match="has key"):
        ResultStore(tmp_path / "s", ("model", "image_id"), CONFIG)
    reader = ResultStore(tmp_path / "s", KEY)  # config=None: read whatever was stored
    assert reader.run_config == CONFIG and len(reader.read()) == 1
    same = ResultStore(tmp_path / "s", list(KEY),
                       {"methods": ("gradcam", "case"), "k": 0.05, "seed": np.int64(0)})
    assert len(same) == 1  # tuples/lists and numpy scalars compare as their JSON form
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("x")
    with pytest.raises(ValueError, match="not a result store"):
        ResultStore(tmp_path / "other", KEY)
    with pytest.raises(TypeError, match="JSON"):
        ResultStore(tmp_path / "t", KEY, {"model": object()})
    with pytest.raises(TypeError):
        ResultStore(tmp_path / "u", "image_id")
