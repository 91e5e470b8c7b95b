"""The runner: :func:`run` one :class:`~casekit.study.config.RunConfig` batch by batch into two resumable
:class:`~casekit.study.store.ResultStore` folders (``maps/``: one row per ``(model, seed, layer, method,
image_id, target)``; ``sparsity/``: one row per ``(model, seed, layer, image_id)``), and :func:`run_all` for
several runs (:class:`Results`).

A run killed at any moment and started again skips the committed batches and ends with the same tables as an
uninterrupted run (batches are fixed slices of the sample).  Same config → same tables.

Imports: :mod:`.config`, :mod:`.subject`, :mod:`.batch`, :mod:`.rows`, :mod:`.store`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from .._io import atomic_write_text
from . import precision as P
from .batch import BatchContext, batch_context, explain_batch, target_fn
from .config import MAP_KEY, ROW_FORMAT, SPARSITY_KEY, RunConfig, default_results_dir
from .rows import agreement_rows, fidelity_rows
from .store import ResultStore
from .subject import Subject, load_batch, load_subject, sample_with_counts


@dataclass
class RunResult:
    """What :func:`run` produced: the config, the two result tables, where they live, and timings (s)."""

    config: RunConfig
    maps: pd.DataFrame
    sparsity: pd.DataFrame
    path: Path
    seconds: dict[str, float] = field(default_factory=dict)
    computed_batches: int = 0
    skipped_batches: int = 0
    #: CASE's contrast slots decided by the confusion counts / the tiebreak / the class index (None when the
    #: run has no confusion-based contrast)
    contrast_decisions: dict[str, int] | None = None
    #: how the sample was drawn (:meth:`casekit.subjects.data.SampleCounts.to_dict`: pool, scanned, correct,
    #: drawn, available); also in ``<path>/sample.json``
    sample: dict[str, int | None] | None = None


def _store_config(config: RunConfig, subject: Subject, decisions: Mapping[str, int] | None = None,
                  precision: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The store config that identifies a run: its fields (not the device), the subject's fingerprint, the
    row format, how CASE's contrast slots were decided (so a changed contrast rule is a new run) and the
    precision each method ran at (rows of two precisions never mix)."""
    d = config.to_dict()
    d.pop("device")  # where it ran is not what it is
    out = {"run": d, "subject": subject.fingerprint, "row_format": ROW_FORMAT}
    if decisions is not None:
        out["contrast_decisions"] = dict(decisions)
    if precision is not None:
        out["precision"] = dict(precision)
    return out


def _precision(config: RunConfig, subject: Subject, ctx: BatchContext, ids: Sequence[int],
               path: Path) -> dict[str, str]:
    """The run's precision per method (:mod:`.precision`): the stored check of this run folder when it was
    made for the same run, subject and candidates, else the check on the sample's first images (written to
    ``<path>/precision.json``)."""
    if not config.methods or not (config.rq1 or config.rq2):
        return {}
    candidates = P.candidate_dtypes(config)
    run_cfg = config.to_dict()
    run_cfg.pop("device")
    identity = {"run": run_cfg, "subject": subject.fingerprint, "candidates": candidates,
                "rule": [P.CHECK_IMAGES, P.CHECK_TOLERANCE, P.CHECK_SHARE, P.CHECK_MEDIAN_R]}
    records = P.read_precision(path, identity)
    if records is None:
        check = list(ids[: P.CHECK_IMAGES])
        images, labels, _ = load_batch(subject.dataset, check, config.device)
        records = P.precision_check(config, subject.model, images, ctx.layer_name, target_fn(ctx, labels),
                                    ctx.contrast, candidates)
        P.write_precision(path, identity, records)
    return P.decided(records)


def _outdated(path: Path, config: Mapping[str, Any]) -> bool:
    """True when ``path`` is a result store written by an older casekit (another row format than ``config``'s,
    a run config without a field of today's :class:`RunConfig`, or the same run on the same subject whose
    contrast slots an older contrast rule decided otherwise, or whose methods ran at another precision): its
    rows are recomputed, never mixed."""
    try:
        stored = json.loads((path / "store.json").read_text()).get("config")
    except (ValueError, OSError, AttributeError):
        return False
    if not stored or "run" not in stored:
        return False
    fields = set(RunConfig.__dataclass_fields__) - {"device"}
    if stored.get("row_format") != config.get("row_format") or not fields <= set(stored["run"]):
        return True
    same_run = stored["run"] == config.get("run") and stored.get("subject") == config.get("subject")
    return same_run and (stored.get("contrast_decisions") != config.get("contrast_decisions")
                         or stored.get("precision") != config.get("precision"))


def _open_store(path: Path, key: tuple[str, ...], config: dict[str, Any], recompute: bool) -> ResultStore:
    """Open (or create) a run's store; ``recompute`` deletes it first (only if it is a result store), as
    does a store of an older casekit (:func:`_outdated`)."""
    if not recompute and _outdated(path, config):
        warnings.warn(f"{path} was written by an older casekit (row format or run fields differ); "
                      "recomputing it", RuntimeWarning, stacklevel=3)
        recompute = True
    if recompute and path.exists():
        if not (path / "store.json").exists():
            raise ValueError(f"recompute=True would delete {path}, which is not a result store; remove it "
                             "yourself")
        shutil.rmtree(path)
    try:
        return ResultStore(path, key=key, config=config)
    except ValueError as err:
        if "different run config" in str(err):
            raise ValueError(f"{err} (or pass recompute=True to start this run's store afresh)") from None
        raise


def _needs_computing(batch: list[int], store: ResultStore | None, done: set,
                     keys: Callable[[int], list[tuple]]) -> bool:
    """True when the batch still needs computing for this store (all of its rows absent); a batch with only
    some of its rows stored was not written by this runner and is refused."""
    if store is None:
        return False
    expected = [key for i in batch for key in keys(i)]
    present = sum(key in done for key in expected)
    if present == len(expected):
        return False
    if present:
        raise ValueError(f"the store {store.path} holds {present} of the {len(expected)} rows of one batch; "
                         "it was not written by this runner's batches. Use recompute=True.")
    return True


def _plan(ctx: BatchContext, batches: list[list[int]], maps_store: ResultStore | None,
          sp_store: ResultStore | None) -> list[tuple[list[int], bool, bool]]:
    """``(batch, needs map rows, needs sparsity rows)`` for every batch of the sample."""
    config = ctx.config
    done_maps = maps_store.done_keys() if maps_store is not None else set()
    done_sp = sp_store.done_keys() if sp_store is not None else set()

    def map_keys(i: int) -> list[tuple]:
        return [(config.model, config.seed, config.layer, m, i,
                 t) for m in config.methods for t in ctx.targets]

    def sp_keys(i: int) -> list[tuple]:
        return [(config.model, config.seed, role, i) for role in config.sparsity]

    return [(b, _needs_computing(b, maps_store, done_maps, map_keys),
             _needs_computing(b, sp_store, done_sp, sp_keys))
            for b in batches]


def run(config: RunConfig, subject: Subject | None = None, *, results_dir: str | os.PathLike | None = None,
        recompute: bool = False, progress: bool = True) -> RunResult:
    """Run (or resume) one experiment and return its tables.

    Stores live in ``results_dir / config.name / {maps, sparsity}`` (``results_dir`` default
    :func:`default_results_dir`).  Committed batches are skipped; ``recompute=True`` deletes this run's stores
    first.  Resuming with a different config (or another model's weights) is refused.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    if subject is None:
        subject = load_subject(config)
    elif not isinstance(subject, Subject):
        raise TypeError(f"subject must be a casekit.experiments.Subject, got {type(subject).__name__}")
    subject.model.to(config.device)
    seconds["load"] = time.perf_counter() - t0
    root = Path(results_dir) if results_dir is not None else default_results_dir(config.profile)
    path = root / config.name
    ctx = batch_context(config, subject)
    t = time.perf_counter()
    ids, counts = sample_with_counts(config, subject, progress=False)
    sample = write_sample(path, config, counts)
    seconds["sample"] = time.perf_counter() - t
    t = time.perf_counter()
    precision = _precision(config, subject, ctx, ids, path)
    ctx.amp = P.amp_of(precision) if precision else None
    seconds["precision"] = time.perf_counter() - t
    store_cfg = _store_config(config, subject, ctx.decisions, precision or None)
    maps_store = _open_store(path / "maps", MAP_KEY, store_cfg,
                             recompute) if (config.rq1 or config.rq2) else None
    sp_store = _open_store(path / "sparsity", SPARSITY_KEY, store_cfg, recompute) if config.sparsity else None

    batches = [ids[i : i + config.batch_size] for i in range(0, len(ids), config.batch_size)]
    plan = _plan(ctx, batches, maps_store, sp_store)
    todo = [(b, nm, ns) for b, nm, ns in plan if nm or ns]
    skipped = len(batches) - len(todo)
    bar = tqdm(total=len(ids), initial=sum(len(b) for b, nm, ns in plan if not (nm or ns)), unit="img",
               desc=f"{config.model} seed {config.seed} {config.layer}"
               + (f" [{config.tag}]" if config.tag else ""),
               disable=not progress, dynamic_ncols=True)
    t = time.perf_counter()
    try:
        for batch, need_maps, need_sp in todo:
            rows, sp_rows = explain_batch(ctx, batch, need_maps, need_sp)
            if rows is not None:
                maps_store.append(rows)
            if sp_rows is not None:
                sp_store.append(sp_rows)
            bar.update(len(batch))
    finally:
        bar.close()
    seconds["compute"] = time.perf_counter() - t
    maps_df = maps_store.read() if maps_store is not None else pd.DataFrame(columns=list(MAP_KEY))
    sp_df = sp_store.read() if sp_store is not None else pd.DataFrame(columns=list(SPARSITY_KEY))
    seconds["total"] = time.perf_counter() - t0
    return RunResult(config, maps_df, sp_df, path, seconds, len(todo), skipped, ctx.decisions, sample)


@dataclass
class Results:
    """Tables of several runs: ``maps`` (one row per model, seed, layer, method, image, target) and
    ``sparsity`` (one row per model, seed, layer, image), and the runs' configs and timings."""

    maps: pd.DataFrame
    sparsity: pd.DataFrame
    runs: list[RunResult] = field(default_factory=list)
    #: the sample records of runs read back from disk (:func:`casekit.study.profiles.load_results`)
    stored_samples: pd.DataFrame | None = None

    def agreement(self, **filters: Any) -> pd.DataFrame:
        """One row per (model, seed, layer, method, image, comparison): see :func:`agreement_rows`."""
        return agreement_rows(self.maps, **filters)

    def fidelity(self, k: float | None = None, **filters: Any) -> pd.DataFrame:
        """The top-1 maps' confidence drops: see :func:`fidelity_rows`."""
        return fidelity_rows(self.maps, k=k, **filters)

    def samples(self) -> pd.DataFrame:
        """One row per run: ``model, seed, layer, n_images`` (drawn) and ``available`` (correctly classified
        images in the run's pool; NaN where the pool was too large to classify in full), ``pool``,
        ``scanned``, ``correct``."""
        if not self.runs and self.stored_samples is not None:
            return self.stored_samples.copy()
        return samples_frame(r.sample and {"model": r.config.model, "seed": r.config.seed,
                                           "layer": r.config.layer, **r.sample} for r in self.runs)

    def timings(self) -> pd.DataFrame:
        """Seconds per run (load, sample, compute, total) and computed/skipped batches."""
        return pd.DataFrame([{"run": r.config.name, **r.seconds, "computed_batches": r.computed_batches,
                              "skipped_batches": r.skipped_batches} for r in self.runs])


SAMPLE_FILE = "sample.json"
SAMPLE_COLUMNS = ("model", "seed", "layer", "n_images", "available", "pool", "scanned", "correct")


def write_sample(path: Path, config: RunConfig, counts: Any) -> dict[str, Any]:
    """Record how the run's sample was drawn in ``<path>/sample.json`` (checked by every run, so it always
    describes the stored sample; left untouched when unchanged) and return it."""
    record = {"model": config.model, "seed": config.seed, "layer": config.layer, **counts.to_dict()}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    f = path / SAMPLE_FILE
    if not f.exists() or f.read_text() != text:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(f, text)
    return counts.to_dict()


def read_sample(run_dir: Path) -> dict[str, Any] | None:
    """The record :func:`write_sample` left in ``run_dir`` (None when there is none)."""
    f = Path(run_dir) / SAMPLE_FILE
    return json.loads(f.read_text()) if f.exists() else None


def samples_frame(records: Any) -> pd.DataFrame:
    """:data:`SAMPLE_COLUMNS` from sample records (None entries skipped); ``drawn`` becomes ``n_images``."""
    rows = [{**{k: v for k, v in r.items() if k != "drawn"}, "n_images": r["drawn"]} for r in records if r]
    df = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    return df.astype({"available": "float"}) if len(df) else df


def concat_runs(frames: list[pd.DataFrame], key: tuple[str, ...]) -> pd.DataFrame:
    """The rows of several runs, sorted by ``key``; a key repeated across runs is refused."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(key))
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(subset=list(key))
    if dup.any():
        raise ValueError(f"{int(dup.sum())} rows repeat a key {key} across runs, e.g. "
                         f"{df.loc[dup, list(key)].iloc[0].to_dict()}: two runs describe the same model, "
                         "seed and layer (give variant runs a tag and keep them in separate results folders)")
    return df.sort_values(list(key), kind="mergesort").reset_index(drop=True)


def run_all(configs: Sequence[RunConfig], *, results_dir: str | os.PathLike | None = None,
            recompute: bool = False,
            progress: bool = True, subjects: Mapping[str, Subject] | None = None) -> Results:
    """Run (or resume) every config in order and return all their rows together.

    ``subjects`` maps a config's ``name`` to its :class:`Subject` (required for profile ``"custom"``); the
    demo and paper subjects are loaded once per (model, seed) and shared by that model's runs.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"two configs share a run name (model-seed-layer-tag): {twice}")
    cache: dict[tuple, Subject] = {}
    runs = []
    for c in configs:
        subject = (subjects or {}).get(c.name)
        if subject is None:
            key = (c.profile, c.model, c.seed, c.device, c.heldout,
                   c.sample_seed if c.profile != "demo" else 0)
            if key not in cache:
                cache[key] = load_subject(c)
            subject = cache[key]
        runs.append(run(c, subject, results_dir=results_dir, recompute=recompute, progress=progress))
    return Results(concat_runs([r.maps for r in runs], MAP_KEY),
                   concat_runs([r.sparsity for r in runs], SPARSITY_KEY), runs)


