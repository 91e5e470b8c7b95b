"""A resumable, crash-safe table of experiment results.

Layout of a store folder::

    store.json            key columns, run config (+ its hash), format version — written once, atomically
    part-00000001.parquet one file per committed batch, in commit order
    part-00000002.parquet ...
    .lock                 advisory lock held while a batch is committed

A batch is committed by writing its Parquet file under a temporary name and renaming it into place
(:func:`casekit._io.atomic_path`), so each part file is either complete or absent: a run killed at any
moment (even SIGKILL) loses at most the batch it was writing, and :meth:`ResultStore.done_keys` tells the
rerun exactly what is already there.  There is no manifest to update, so a commit costs one file
write (linear in the batch's rows) and the set of committed rows is the set of part files.  Leftover
temporary files of a killed writer are removed at the next commit.

Every row has a declared key (e.g. ``("model", "layer", "method", "image_id", "target_rank")``);
a key already in the store, or twice in one batch, is an error, never a silent duplicate.  The store
remembers the run config it was created with and refuses to be resumed with another one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import atomic_path, atomic_write_text, config_hash

try:  # POSIX advisory locks; without them the store assumes a single writer
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

FORMAT_VERSION = 1
_META = "store.json"
_PART = re.compile(r"^part-(\d{8})\.parquet$")
_TMP = re.compile(r"^\.part-\d{8}\.parquet\..*\.tmp$")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        "the run config must be JSON-serialisable (numbers, strings, lists, dicts); got "
        f"{type(value).__name__} {value!r}"
    )


def _normalise_config(config: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    return json.loads(json.dumps(dict(config), sort_keys=True, default=_jsonable))


def _config_diff(stored: dict[str, Any], given: dict[str, Any]) -> str:
    parts = []
    for k in sorted(set(stored) | set(given)):
        if k not in given:
            parts.append(f"{k}: stored {stored[k]!r}, not given")
        elif k not in stored:
            parts.append(f"{k}: not stored, given {given[k]!r}")
        elif stored[k] != given[k]:
            parts.append(f"{k}: stored {stored[k]!r}, given {given[k]!r}")
    return "; ".join(parts)


class ResultStore:
    """Append-only result table in a folder, committed batch by batch (see the module docstring).

    ``ResultStore(path, key=(...), config={...})`` creates the store or opens an existing one; opening
    checks that ``key`` is the stored key and that ``config`` (if given) equals the stored run config.
    ``config=None`` opens an existing store for reading whatever its config; a new store created without
    a config stores ``{}``.
    """

    def __init__(self, path: str | os.PathLike, key: Sequence[str],
                 config: Mapping[str, Any] | None = None) -> None:
        if isinstance(key, str) or not isinstance(key, Sequence) or not key:
            raise TypeError(f"key must be a non-empty sequence of column names, got {key!r}")
        if not all(isinstance(k, str) and k for k in key):
            raise TypeError(f"key columns must be non-empty strings, got {key!r}")
        if len(set(key)) != len(key):
            raise ValueError(f"key has repeated columns: {list(key)}")
        self.path = Path(path)
        self.key: tuple[str, ...] = tuple(key)
        given = None if config is None else _normalise_config(config)
        meta_file = self.path / _META
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"{meta_file} has format {meta.get('format')!r}; this casekit reads "
                                 f"{FORMAT_VERSION}")
            if tuple(meta["key"]) != self.key:
                raise ValueError(f"the store at {self.path} has key {tuple(meta['key'])}, not {self.key}")
            if given is not None and meta["config"] != given:
                raise ValueError(
                    f"the store at {self.path} was written with a different run config "
                    f"({_config_diff(meta['config'], given)}); "
                    "resuming would mix results. Use another path, or delete the store to start over."
                )
            self._config = meta["config"]
        else:
            if self.path.exists():
                for f in self.path.iterdir():  # a store whose creation was killed leaves only these
                    if f.name.startswith(f".{_META}.") and f.name.endswith(".tmp"):
                        f.unlink(missing_ok=True)
                    elif f.name != ".lock":
                        raise ValueError(f"{self.path} is not empty and holds no {_META}: not a result store")
            self._config = given if given is not None else {}
            self.path.mkdir(parents=True, exist_ok=True)
            meta = {"format": FORMAT_VERSION, "key": list(self.key), "config": self._config,
                    "config_hash": config_hash(self._config)}
            atomic_write_text(meta_file, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        self._parts: list[str] = []  # part files whose keys are in self._keys
        self._keys: set[tuple] = set()
        self._schema: pa.Schema | None = None

    # ------------------------------------------------------------------ state

    @property
    def run_config(self) -> dict[str, Any]:
        """The run config stored at creation (a copy)."""
        return json.loads(json.dumps(self._config))

    def _part_files(self) -> list[str]:
        return sorted(f for f in os.listdir(self.path) if _PART.match(f))

    def _refresh(self) -> None:
        """Load the keys of part files committed since the last look (by this or another process)."""
        known = set(self._parts)
        new = [f for f in self._part_files() if f not in known]
        for f in new:
            table = pq.read_table(self.path / f, columns=list(self.key))
            self._keys.update(zip(*(table.column(k).to_pylist() for k in self.key)))
            self._parts.append(f)
            if self._schema is None:
                self._schema = pq.read_schema(self.path / f)

    def done_keys(self) -> set[tuple]:
        """Keys of all committed rows, as tuples in key-column order (to skip finished work)."""
        self._refresh()
        return set(self._keys)

    def __len__(self) -> int:
        self._refresh()
        return len(self._keys)

    def __contains__(self, key: tuple) -> bool:
        self._refresh()
        return tuple(key) in self._keys

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.path / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _to_table(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pa.Table:
        if isinstance(rows, pd.DataFrame):
            df = rows
        elif isinstance(rows, Sequence) and not isinstance(rows, (str, bytes)) and len(rows) == 0:
            return pa.table({})
        elif isinstance(rows, Sequence) and all(isinstance(r, Mapping) for r in rows):
            df = pd.DataFrame(list(rows))
        else:
            raise TypeError(f"rows must be a pandas DataFrame or a list of dicts, got {type(rows).__name__}")
        if df.columns.duplicated().any():
            raise ValueError("rows have repeated column names: "
                             f"{df.columns[df.columns.duplicated()].tolist()}")
        missing = [k for k in self.key if k not in df.columns]
        if missing:
            raise ValueError(f"rows lack the key column(s) {missing}; the key is {self.key}")
        null = [k for k in self.key if df[k].isna().any()]
        if null:
            raise ValueError(f"key column(s) {null} contain missing values")
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise ValueError(f"rows cannot be stored as a table (mixed types in a column?): {err}") from None
        if self._schema is not None:
            stored = set(self._schema.names)
            extra = sorted(set(table.column_names) - stored)
            lacking = sorted(stored - set(table.column_names))
            if extra or lacking:
                raise ValueError(
                    f"rows do not match the store's columns: missing {lacking}, unexpected {extra}"
                )
            table = table.select(self._schema.names)
            try:
                table = table.cast(self._schema.remove_metadata())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
                raise ValueError("rows do not fit the store's column types "
                                 f"{self._schema.remove_metadata()}: {err}") from None
        return table.replace_schema_metadata(None)

    def append(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> int:
        """Commit one batch of rows atomically; returns the number of rows written.

        Raises ``ValueError`` (and writes nothing) if a key occurs twice in the batch or is already
        stored, if key columns are missing or null, or if the columns differ from the stored ones.
        """
        with self._locked():
            self._refresh()  # also picks up the schema if another process committed first
            table = self._to_table(rows)
            if table.num_rows == 0:
                return 0
            keys = list(zip(*(table.column(k).to_pylist() for k in self.key)))
            seen: set[tuple] = set()
            twice = [k for k in keys if k in seen or seen.add(k)]
            if twice:
                raise ValueError(f"the batch holds {len(twice)} repeated key(s), e.g. {twice[:3]} (key "
                                 f"{self.key})")
            for f in os.listdir(self.path):  # a killed writer's temporary files (we hold the lock)
                if _TMP.match(f):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path / f)
            dup = [k for k in keys if k in self._keys]
            if dup:
                raise ValueError(
                    f"{len(dup)} row(s) of the batch are already in the store, e.g. {dup[:3]} (key "
                    f"{self.key}); "
                    "skip done work with store.done_keys()"
                )
            if self._schema is None:
                self._schema = table.schema
            last = self._part_files()
            seq = int(_PART.match(last[-1]).group(1)) + 1 if last else 1
            name = f"part-{seq:08d}.parquet"
            with atomic_path(self.path / name) as tmp:
                pq.write_table(table, tmp)
            self._parts.append(name)
            self._keys.update(keys)
        return table.num_rows

    # ------------------------------------------------------------------ reading

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All committed rows as one DataFrame sorted by the key (index 0..n-1)."""
        self._refresh()
        if not self._parts:
            return pd.DataFrame(columns=list(columns) if columns is not None else list(self.key))
        cols = None
        if columns is not None:
            cols = list(dict.fromkeys([*self.key, *columns]))
            unknown = [c for c in cols if c not in self._schema.names]
            if unknown:
                raise ValueError(f"unknown column(s) {unknown}; the store has {self._schema.names}")
        tables = [pq.read_table(self.path / f, columns=cols) for f in self._parts]
        df = pa.concat_tables(tables).to_pandas()
        df = df.sort_values(list(self.key), kind="mergesort").reset_index(drop=True)
        return df if columns is None else df[list(columns)]

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r}, key={self.key}, rows={len(self)}, parts={len(self._parts)})"
