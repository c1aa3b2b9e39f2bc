"""The inference log: what every predictor replica served, as partitioned parquet.

A replica hands each scored batch to :class:`InferenceLog` (``add``: one append under
a lock, nothing converted on the request path); a background thread writes what
gathered every ``flush_interval_s`` seconds, one parquet file per flush and day::

    <uri>/<model>/date=2026-12-05/<variant>-<replica>-<seq>.parquet

Each row is one answered record: the request's fields, the model's inputs as it saw
them (the online features actually used), its outputs, and ``log_id``, ``served_at``,
``model``, ``model_version``, ``variant``, ``status`` (200, or the 4xx/5xx it got),
``error``, ``latency_ms`` (in the replica: from arrival to answer) and
``features_missing``. ``uri`` is a folder or an object-store URI (``s3://``, ``gs://``;
pyarrow's filesystems).

Losing the log never fails a prediction: a failed write keeps the rows buffered for
the next flush, and a full buffer drops new rows; both are counted (``stats``, Ray
metrics) and logged, never silent. Files appear whole (written under a hidden name,
then renamed) and each row is written once, so a restarted replica adds no
duplicates; a replica that stops gracefully (Serve calls ``__del__``) writes what it
holds first.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LogConfig",
    "LogStats",
    "InferenceLog",
    "log_path",
    "read_log",
    "register_source",
    "source_name",
]

log = logging.getLogger("ray.serve")


@functools.cache
def _meta_types() -> dict[str, Any]:
    """The meta columns' Arrow types (one dict, built once)."""
    import pyarrow as pa

    return {"log_id": pa.string(), "served_at": pa.timestamp("us", tz="UTC"),
            "model": pa.string(), "model_version": pa.string(), "variant": pa.string(),
            "status": pa.int32(), "error": pa.string(), "latency_ms": pa.float64(),
            "features_missing": pa.list_(pa.string())}  # fmt: skip


#: The columns every log row has, whatever the model.
META = ("log_id", "served_at", "model", "model_version", "variant", "status", "error",
        "latency_ms", "features_missing")  # fmt: skip


class LogConfig(BaseModel):
    """Where and how a model's predictors record what they serve (part of the Serve
    application's args)."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, description="folder or s3:// / gs:// URI of the log")
    sample_rate: float = Field(default=1.0, gt=0, le=1, description="share of records logged")
    flush_interval_s: float = Field(default=5.0, gt=0, le=3600)
    max_buffered_rows: int = Field(default=100_000, ge=1)


@dataclass
class LogStats:
    """Counts since the replica started: rows taken, written, dropped (buffer full),
    failed writes, and rows waiting."""

    logged: int = 0
    written: int = 0
    dropped: int = 0
    write_errors: int = 0
    buffered: int = 0
    files: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Batch:
    served_at: list[float]  # wall-clock seconds of each record's arrival
    latency_ms: list[float]
    version: str
    rows: list[dict[str, Any]]  # the validated request records
    columns: dict[str, Any]  # the model's input columns (arrays), as the model saw them
    answers: list[dict[str, Any]]
    keep: np.ndarray | None = None  # sampled rows; None: all

    def __len__(self) -> int:
        return len(self.rows) if self.keep is None else int(self.keep.sum())


def source_name(model: str) -> str:
    """The Feast data source that names a model's log."""
    return "inference_log_" + "".join(c if c.isalnum() else "_" for c in model)


def log_path(uri: str, model: str) -> str:
    return f"{uri.rstrip('/')}/{model}"


@dataclass
class InferenceLog:
    config: LogConfig
    model: str
    variant: str
    replica: str
    stats: LogStats = field(default_factory=LogStats)

    def __post_init__(self) -> None:
        import pyarrow.compute  # noqa: F401 - imported now, not in the first flush
        import pyarrow.parquet  # noqa: F401
        from pyarrow import fs

        _meta_types()
        self._fs, self._base = fs.FileSystem.from_uri(log_path(self.config.uri, self.model))
        self._local = isinstance(self._fs, fs.LocalFileSystem)
        self._lock = threading.Lock()
        self._pending: list[_Batch] = []
        self._seq = 0
        self._ids = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics: dict[str, Any] | None = None
        self._warned = 0.0
        self._failures = 0

    # -- the request path -----------------------------------------------------------------
    def add(self, version: str, rows: list[dict[str, Any]], columns: dict[str, Any],
            answers: list[dict[str, Any]], served_at: list[float],
            latency_ms: list[float]) -> None:  # fmt: skip
        """Record a scored batch; never raises, never blocks on I/O."""
        keep = None
        if self.config.sample_rate < 1:
            keep = np.random.random(len(rows)) < self.config.sample_rate
            if not keep.any():
                return
        batch = _Batch(served_at, latency_ms, version, rows, columns, answers, keep)
        n = len(batch)
        with self._lock:
            if self.stats.buffered + n > self.config.max_buffered_rows:
                self.stats.dropped += n
                dropped = True
            else:
                self._pending.append(batch)
                self.stats.buffered += n
                self.stats.logged += n
                dropped = False
        if dropped:
            self._count("dropped", n)
            self._warn(f"inference log buffer full ({self.config.max_buffered_rows:,} rows): "
                       f"{self.stats.dropped:,} rows dropped so far")  # fmt: skip
        if self._thread is None:
            self._start()

    # -- writing --------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        # after failed writes, retry less often (up to 16x): each try converts the buffer
        while not self._stop.wait(self.config.flush_interval_s * 2 ** min(self._failures, 4)):
            self.flush()

    def flush(self) -> int:
        """Write what is buffered; returns the rows written. A failed write keeps them
        for the next flush (room allowing: beyond the buffer's bound they are dropped and
        counted)."""
        with self._lock:
            batches, self._pending = self._pending, []
        if not batches:
            return 0
        rows = sum(len(b) for b in batches)
        try:
            table = self._table(batches)
            written = self._write(table)
        except Exception as exc:  # noqa: BLE001 - the log never fails serving: count, keep
            with self._lock:  # still within the bound: add() only admits what fits
                self._pending[:0] = batches
                self.stats.write_errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                self._failures += 1
            self._count("write_errors", 1)
            self._warn(f"inference log write to {self.config.uri} failed ({self.stats.last_error}); "
                       f"{self.stats.buffered:,} rows held, {self.stats.dropped:,} dropped")  # fmt: skip
            return 0
        self._failures = 0
        with self._lock:
            self.stats.buffered -= rows
            self.stats.written += rows
            self.stats.files += written
        self._count("written", rows)
        return rows

    def close(self) -> None:
        """Stop the writer thread and write what is left (a replica shutting down)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self.flush()

    def _table(self, batches: list[_Batch]) -> Any:
        """The batches as one table: meta columns, the request's fields, the model's
        inputs and its outputs, in that order. Built column by column from arrays and
        lists (no frame per batch): a flush runs in the replica's process, so its time
        is time the replica's loop may wait for the GIL."""
        import pyarrow as pa

        kept = [(b, np.flatnonzero(b.keep) if b.keep is not None else None) for b in batches]

        def rows_of(b: _Batch, pick: Any, values: list[Any]) -> list[Any]:
            return values if pick is None else [values[i] for i in pick]

        rows = [r for b, pick in kept for r in rows_of(b, pick, b.rows)]
        answers = [a for b, pick in kept for a in rows_of(b, pick, b.answers)]
        n = len(rows)
        with self._lock:
            first, self._ids = self._ids, self._ids + n
        data: dict[str, Any] = {
            "log_id": [f"{self.replica}:{i}" for i in range(first, first + n)],
            "served_at": pa.array((np.concatenate([_pick(np.asarray(b.served_at), 0, pick)
                                                   for b, pick in kept]) * 1e6).astype(np.int64),
                                  pa.timestamp("us", tz="UTC")),
            "model": [self.model] * n,
            "model_version": [b.version for b, pick in kept for _ in rows_of(b, pick, b.rows)],
            "variant": [self.variant] * n,
            "status": [int(a.get("status", 500)) if "error" in a else 200 for a in answers],
            "error": [a.get("error") for a in answers],
            "latency_ms": [x for b, pick in kept for x in rows_of(b, pick, b.latency_ms)],
            "features_missing": [a.get("features_missing") or [] for a in answers],
        }  # fmt: skip
        inputs = dict.fromkeys(k for b, _ in kept for k in b.columns)
        for key in dict.fromkeys(k for r in rows for k in r):
            if key not in inputs and key not in data:  # a field the client sent: a scalar
                data[key] = [_scalar(r.get(key)) for r in rows]
        for name in inputs:
            if name not in data:
                data[name] = _concat([_pick(b.columns.get(name), len(b.rows), pick)
                                      for b, pick in kept])  # fmt: skip
        skip = {"model_version", "features_missing", "variant", "error", "status"}
        for name in dict.fromkeys(k for a in answers if "error" not in a for k in a):
            if name not in data and name not in skip:
                data[name] = [None if "error" in a else a.get(name) for a in answers]
        arrays, names = [], []
        for name, values in data.items():
            names.append(name)
            arrays.append(_arrow(values, _meta_types().get(name)))
        return pa.Table.from_arrays(arrays, names=names)

    def _write(self, table: Any) -> int:
        """One file per day the rows fall on; returns the files written."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        days = pc.strftime(table["served_at"], format="%Y-%m-%d")
        files = 0
        for day in sorted(set(days.to_pylist())):
            part = table.filter(pc.equal(days, day))
            with self._lock:
                self._seq += 1
                seq = self._seq
            folder = f"{self._base}/date={day}"
            name = f"{self.variant}-{self.replica}-{seq:06d}.parquet"
            self._fs.create_dir(folder, recursive=True)
            if self._local:  # whole or not at all: readers skip names starting with "."
                tmp = f"{folder}/.{name}.tmp"
                pq.write_table(part, tmp, filesystem=self._fs)
                self._fs.move(tmp, f"{folder}/{name}")
            else:  # an object store's PUT is atomic
                pq.write_table(part, f"{folder}/{name}", filesystem=self._fs)
            files += 1
        return files

    # -- reporting ------------------------------------------------------------------------
    def _count(self, outcome: str, n: int) -> None:
        """Ray's metrics (Prometheus scrapes them with the rest of Ray's), in a replica."""
        try:
            if self._metrics is None:
                import ray

                if not ray.is_initialized():
                    return
                from ray.util.metrics import Counter

                self._metrics = {
                    "rows": Counter("shipyard_inference_log_rows",
                                    description="inference log rows by outcome (written, "
                                    "dropped) or failed writes (write_errors)",
                                    tag_keys=("model", "variant", "outcome")),
                }  # fmt: skip
            self._metrics["rows"].inc(n, tags={"model": self.model, "variant": self.variant,
                                               "outcome": outcome})  # fmt: skip
        except Exception:  # noqa: BLE001 - metrics are best effort, the counts stay in stats
            self._metrics = {}

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned > 30:  # once per 30 s, not once per batch
            self._warned = now
            log.warning("%s/%s: %s", self.model, self.variant, message)


def _scalar(value: Any) -> Any:
    """A request field as one column value: an object or a list (a field the contract
    leaves open, as an id may be) as its JSON text, so that every file types it alike."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _pick(values: Any, n: int, pick: Any) -> Any:
    """One batch's column (an array, a Series, None when absent), sampled rows only."""
    if values is None:
        values = np.full(n, None, dtype=object)
    if pick is None:
        return values
    return values.iloc[pick] if isinstance(values, pd.Series) else np.asarray(values)[pick]


def _concat(parts: list[Any]) -> Any:
    if any(isinstance(p, pd.Series) for p in parts):
        return pd.concat([p if isinstance(p, pd.Series) else pd.Series(p) for p in parts],
                         ignore_index=True)  # fmt: skip
    return np.concatenate([np.asarray(p) for p in parts]) if len(parts) > 1 else parts[0]


def _arrow(values: Any, type_: Any = None) -> Any:
    """A column as an Arrow array of ``type_`` (the meta columns), else of the type
    Arrow infers; values it cannot type as one (numbers mixed with strings) as strings,
    so that one odd record never fails a whole flush."""
    import pyarrow as pa

    if isinstance(values, pa.Array):
        return values
    try:
        return pa.array(values, type=type_, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def read_log(uri: str, model: str, start: dt.datetime | None = None,
             end: dt.datetime | None = None, columns: list[str] | None = None) -> pd.DataFrame:  # fmt: skip
    """A model's log rows served in ``[start, end)`` (UTC), oldest first; an empty frame
    when nothing was logged yet."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    filesystem, base = fs.FileSystem.from_uri(log_path(uri, model))
    if filesystem.get_file_info(base).type == fs.FileType.NotFound:
        return pd.DataFrame(columns=list(META))
    dataset = ds.dataset(base, filesystem=filesystem, format="parquet", partitioning="hive")
    # a model's columns may be all null in one file (every record of a flush failed) and
    # typed in another: read them with the schema that holds them all
    fragments = list(dataset.get_fragments())
    schemas = [f.physical_schema for f in fragments]
    if len(schemas) > 1:
        import pyarrow as pa

        try:
            unified = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # one column typed two ways: as text
            return _read_apart(fragments, start, end, columns)
        for field_ in dataset.schema:
            if unified.get_field_index(field_.name) < 0:
                unified = unified.append(field_)  # the partition column
        dataset = ds.dataset(base, filesystem=filesystem, format="parquet",
                             partitioning="hive", schema=unified)  # fmt: skip
    expr = None
    for bound, op in ((start, "ge"), (end, "lt")):
        if bound is not None:
            stamp = pd.Timestamp(bound)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            term = getattr(ds.field("served_at"), f"__{op}__")(stamp.to_pydatetime())
            expr = term if expr is None else expr & term
    table = dataset.to_table(filter=expr, columns=columns)
    return _ordered(table.to_pandas(), columns)


def _ordered(frame: pd.DataFrame, columns: list[str] | None) -> pd.DataFrame:
    if "date" in frame.columns and (columns is None or "date" not in columns):
        frame = frame.drop(columns="date")
    return frame.sort_values(["served_at", "log_id"] if "log_id" in frame else ["served_at"],
                             kind="stable").reset_index(drop=True)  # fmt: skip


def _read_apart(fragments: list[Any], start: Any, end: Any, columns: list[str] | None) -> pd.DataFrame:  # fmt: skip
    """Files whose columns disagree on a type (written before a field's values were
    made text): each read alone, a column typed two ways as text, then joined."""
    tables = [f.to_table(columns=columns) for f in fragments]
    types: dict[str, set[str]] = {}
    for table in tables:
        for field_ in table.schema:
            if str(field_.type) != "null":
                types.setdefault(field_.name, set()).add(str(field_.type))
    mixed = [c for c, kinds in types.items() if len(kinds) > 1]
    parts = [t.to_pandas() for t in tables]
    for part in parts:
        for col in mixed:
            if col in part.columns:
                part[col] = [None if v is None or v is np.nan else
                             json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
                             for v in part[col]]  # fmt: skip
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(META))
    stamps = frame["served_at"]
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= stamps >= pd.Timestamp(start).tz_convert("UTC") if pd.Timestamp(start).tzinfo \
            else stamps >= pd.Timestamp(start, tz="UTC")  # fmt: skip
    if end is not None:
        keep &= stamps < pd.Timestamp(end).tz_convert("UTC") if pd.Timestamp(end).tzinfo \
            else stamps < pd.Timestamp(end, tz="UTC")  # fmt: skip
    return _ordered(frame[keep], columns)


def register_source(store: Any, uri: str, model: str) -> str:
    """Register a model's log as a Feast ``FileSource`` (timestamp ``served_at``), so it
    joins like any other table (a feature view over it, a point-in-time join with
    labels); returns the source's name."""
    from feast import FileSource
    from feast.data_format import ParquetFormat

    name = source_name(model)
    source = FileSource(name=name, path=log_path(uri, model), timestamp_field="served_at",
                        file_format=ParquetFormat(),
                        description=f"what Shipyard served for model {model} (inference log)",
                        tags={"shipyard.model": model, "shipyard.kind": "inference-log"})  # fmt: skip
    # the registry's own call: ``store.apply`` would also update the infrastructure,
    # which starts the Ray compute engine (a local Ray) for a data source that needs none
    store.registry.apply_data_source(source, store.project, commit=True)
    return name
