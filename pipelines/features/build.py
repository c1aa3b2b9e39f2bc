"""The feature build: raw transactions -> validated rows -> point-in-time feature tables.

Runs as a Ray job on the cluster (``shipyard features build``) or in-process
(``--local``). Ray Data does the work in streaming passes over the parquet:

1. validate every row in the build window once, keep the good rows' feature
   columns in the object store, count reasons and collect a 64-bit hash of each
   good row's transaction id (8 bytes a row reach the driver);
2. only if step 1 found bad rows: write them to quarantine with their reason;
   only if some hashes repeat: fetch those few rows, keep the earliest of each
   duplicated id and quarantine the rest;
3. per customer and per merchant: shuffle the good rows into hash buckets of
   entities and compute each bucket's features with :mod:`.compute`;
4. put the rows in place: a full build replaces the tables, a ``--since/--until``
   build replaces exactly the rows of its window, so building twice gives the same
   tables, never duplicates. Tables are partitioned by month: every file costs
   each later reader (Feast opens one read task per file), so few large files.

``build_pandas`` is the same build in one process with pandas: the benchmark's
baseline, and a cross-check in the tests.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from shipyard.errors import DataError, ShipyardError

from pipelines._cli import fail
from pipelines.features import compute
from pipelines.features.validate import REQUIRED, check_files, id_hash, row_reasons

__all__ = ["BuildConfig", "BuildResult", "build", "build_pandas", "TABLES"]

TABLES = ("customer_features", "merchant_features")
QUARANTINE = "quarantine"
MANIFEST = "_build.json"
_COLUMNS = list(REQUIRED)
_CUSTOMER_COLUMNS = ["customer_id", "merchant_id", "amount", "timestamp"]
_MERCHANT_COLUMNS = ["merchant_id", "timestamp", "is_fraud", "label_available_at"]
_US = 1_000_000


@dataclass(frozen=True)
class BuildConfig:
    """What to build. ``since``/``until`` bound the rows that get feature rows; up to
    30 days before ``since`` are still read as history."""

    input: Path
    out: Path
    since: datetime | None = None
    until: datetime | None = None
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    buckets: int | None = None  # entity buckets per shuffle; default: see _buckets

    def __post_init__(self) -> None:
        for name in ("since", "until", "now"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=timezone.utc))
        if self.since and self.until and self.since >= self.until:
            raise DataError(f"--since {self.since} must be before --until {self.until}")
        if self.buckets is not None and self.buckets < 1:
            raise DataError(f"buckets must be at least 1, got {self.buckets}")

    @property
    def since_us(self) -> int | None:
        return None if self.since is None else int(self.since.timestamp() * _US)

    @property
    def until_us(self) -> int | None:
        return None if self.until is None else int(self.until.timestamp() * _US)

    @property
    def history_us(self) -> int | None:
        return None if self.since_us is None else self.since_us - compute.LOOKBACK


@dataclass
class BuildResult:
    rows_read: int
    accepted: int
    quarantined: dict[str, int]
    customer_rows: int
    merchant_rows: int
    seconds: float
    engine: str
    out: str
    since: str | None = None
    until: str | None = None

    def summary(self) -> str:
        lines = [
            f"rows read      {self.rows_read:>12,}",
            f"accepted       {self.accepted:>12,}",
            f"quarantined    {sum(self.quarantined.values()):>12,}",
        ]
        lines += [f"  {k:<24}{v:>10,}" for k, v in sorted(self.quarantined.items())]
        lines += [
            f"customer rows  {self.customer_rows:>12,}",
            f"merchant rows  {self.merchant_rows:>12,}",
            f"took           {self.seconds:>11.1f}s ({self.engine})",
            f"written to     {self.out}",
        ]
        return "\n".join(lines)


# -- row-level steps, module-level so Ray can ship them ----------------------------


def _ts_us(batch: pd.DataFrame, column: str = "timestamp") -> np.ndarray:
    """Microseconds since the epoch; nulls become the int64 minimum."""
    ts = batch[column]
    if ts.dt.tz is None:
        ts = ts.dt.tz_localize("UTC")
    values = ts.astype("datetime64[us, UTC]").astype("int64").to_numpy(copy=True)
    values[ts.isna().to_numpy()] = np.iinfo(np.int64).min
    return values


def _window(batch: pd.DataFrame, lo: int | None, hi: int | None) -> np.ndarray:
    t = _ts_us(batch)
    keep = np.ones(len(batch), dtype=bool)
    if lo is not None:
        keep &= t >= lo
    if hi is not None:
        keep &= t < hi
    return keep


def _in_build(batch: pd.DataFrame, cfg: BuildConfig) -> np.ndarray:
    """Rows this build answers for; null timestamps belong to full builds only."""
    keep = _window(batch, cfg.since_us, cfg.until_us)
    if cfg.since is None and cfg.until is None:
        keep |= batch["timestamp"].isna().to_numpy()
    return keep


_FEATURE_COLUMNS = sorted(set(_CUSTOMER_COLUMNS) | set(_MERCHANT_COLUMNS))


def _prepare(batch: pd.DataFrame, cfg: BuildConfig) -> pd.DataFrame:
    """Pass 1: every row the build reads, validated once, cut to what the feature
    steps need: the reason of in-build rows, the id hash of good ones, and whether a
    row is good (history rows count as input to windows only when they are)."""
    keep = _window(batch, cfg.history_us, cfg.until_us) | _in_build(batch, cfg)
    batch = batch[keep]
    in_build = _in_build(batch, cfg)
    reasons = row_reasons(batch, pd.Timestamp(cfg.now))
    good = pd.isna(reasons)
    hashes = np.zeros(len(batch), dtype="uint64")
    tagged = good & in_build
    hashes[tagged] = id_hash(batch["transaction_id"][tagged])
    out = batch[_FEATURE_COLUMNS].reset_index(drop=True)
    out["reason"] = pd.array(np.where(in_build, reasons, None), dtype="string")
    out["id_hash"] = hashes
    out["in_build"] = in_build
    out["good"] = good
    return out


def _select(
    batch: pd.DataFrame, suspects: np.ndarray, columns: list[str], buckets: int, key: str
) -> pd.DataFrame:
    """Good rows minus in-build rows whose id is a suspected duplicate (the driver adds
    their resolved keepers back), with an entity bucket."""
    good = batch["good"].to_numpy()
    if len(suspects):
        good &= ~(batch["in_build"].to_numpy() & np.isin(batch["id_hash"].to_numpy(), suspects))
    return _bucketed(batch.loc[good, columns], key, buckets)


def _bad_rows(batch: pd.DataFrame, cfg: BuildConfig) -> pd.DataFrame:
    batch = batch[_in_build(batch, cfg)]
    reasons = row_reasons(batch, pd.Timestamp(cfg.now))
    bad = ~pd.isna(reasons)
    out = batch[bad].copy()
    out["reason"] = pd.array(reasons[bad], dtype="string")
    return _with_month(out, "timestamp")


def _candidates(batch: pd.DataFrame, cfg: BuildConfig, suspects: np.ndarray) -> pd.DataFrame:
    batch = batch[_in_build(batch, cfg)]
    good = pd.isna(row_reasons(batch, pd.Timestamp(cfg.now)))
    batch = batch[good]
    return batch[np.isin(id_hash(batch["transaction_id"]), suspects)]


def _bucketed(frame: pd.DataFrame, key: str, buckets: int) -> pd.DataFrame:
    frame = frame.copy()
    frame["bucket"] = (pd.util.hash_array(frame[key].to_numpy(dtype=object)) % buckets).astype(
        "int64"
    )
    return frame


def _with_month(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    frame["month"] = frame[column].dt.strftime("%Y-%m").fillna("unknown").astype(str)
    return frame


def _customer_bucket(group: pd.DataFrame, since_us: int | None) -> pd.DataFrame:
    return _with_month(compute.customer_features(group, since_us), "event_timestamp")


def _merchant_bucket(group: pd.DataFrame, since_us: int | None) -> pd.DataFrame:
    return _with_month(compute.merchant_features(group, since_us), "event_timestamp")


def _resolve_duplicates(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Of rows sharing a transaction id keep the earliest (then by the other columns,
    so the choice is deterministic); the rest are duplicates."""
    order = ["transaction_id", "timestamp", "customer_id", "merchant_id", "amount", "currency",
             "category", "country"]  # fmt: skip
    rows = rows.sort_values(order, kind="stable").reset_index(drop=True)
    dup = rows.duplicated("transaction_id", keep="first").to_numpy()
    dups = rows[dup].copy()
    dups["reason"] = pd.array(["duplicate_transaction_id"] * len(dups), dtype="string")
    return rows[~dup], _with_month(dups, "timestamp")


# -- writing ------------------------------------------------------------------------


def _check_window(cfg: BuildConfig) -> None:
    if (cfg.since is None) != (cfg.until is None):
        raise DataError(
            "--since and --until go together",
            hint="give both for an incremental build, or neither to rebuild everything",
        )


_TIME_COLUMN = {"customer_features": "event_timestamp", "merchant_features": "event_timestamp",
                QUARANTINE: "timestamp"}  # fmt: skip


def _replace(staging: Path, target: Path, cfg: BuildConfig, time_column: str) -> None:
    """Put the build's rows in place. A full build replaces the table; a windowed one
    replaces exactly the rows in [since, until) of the months it touches, keeping the
    rest of each month (read, filter, rewrite)."""
    target.mkdir(parents=True, exist_ok=True)
    if cfg.since is None:
        for part in target.glob("month=*"):
            shutil.rmtree(part)
        for part in sorted(staging.glob("month=*")) if staging.exists() else []:
            shutil.move(str(part), str(target / part.name))
        return
    lo, hi = pd.Timestamp(cfg.since), pd.Timestamp(cfg.until)
    months = pd.period_range(lo.tz_convert(None), (hi - pd.Timedelta(1, "us")).tz_convert(None),
                             freq="M")  # fmt: skip
    for month in (str(m) for m in months):
        frames = []
        old_dir = target / f"month={month}"
        if old_dir.exists():
            old = pq.read_table(old_dir).to_pandas()
            t = old[time_column]
            frames.append(old[(t < lo) | (t >= hi)])
        new_dir = staging / f"month={month}"
        if new_dir.exists():
            frames.append(pq.read_table(new_dir).to_pandas())
        frames = [f.drop(columns=["month"], errors="ignore") for f in frames if len(f)]
        tmp = target / f".month={month}.new"
        shutil.rmtree(tmp, ignore_errors=True)
        if frames:
            tmp.mkdir()
            merged = pd.concat(frames, ignore_index=True)
            pq.write_table(pa.Table.from_pandas(merged, preserve_index=False),
                           tmp / "part-0.parquet")  # fmt: skip
        shutil.rmtree(old_dir, ignore_errors=True)
        if frames:
            tmp.rename(old_dir)


def _write_frame(frame: pd.DataFrame, root: Path) -> None:
    """Write a pandas frame as month partitions (one file per month) under ``root``."""
    if frame.empty:
        return
    for month, part in frame.groupby("month", sort=True):
        folder = root / f"month={month}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(part.drop(columns=["month"]), preserve_index=False)
        pq.write_table(table, folder / f"part-{uuid.uuid4().hex[:12]}.parquet")


def _count_rows(root: Path, cfg: BuildConfig, time_column: str) -> int:
    if not root.exists():
        return 0
    if cfg.since is None:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in root.glob("month=*/*.parquet"))
    t = pq.read_table(root, columns=[time_column]).column(time_column).to_pandas()
    return int(((t >= pd.Timestamp(cfg.since)) & (t < pd.Timestamp(cfg.until))).sum())


def _finish(cfg: BuildConfig, staging: Path, reasons: Counter, rows_read: int, started: float,
            engine: str) -> BuildResult:  # fmt: skip
    for name in (*TABLES, QUARANTINE):
        _replace(staging / name, cfg.out / name, cfg, _TIME_COLUMN[name])
    shutil.rmtree(staging, ignore_errors=True)
    quarantined = {k: int(v) for k, v in reasons.items() if v}
    result = BuildResult(
        rows_read=rows_read,
        accepted=rows_read - sum(quarantined.values()),
        quarantined=quarantined,
        customer_rows=_count_rows(cfg.out / "customer_features", cfg, "event_timestamp"),
        merchant_rows=_count_rows(cfg.out / "merchant_features", cfg, "event_timestamp"),
        seconds=round(time.perf_counter() - started, 3),
        engine=engine,
        out=str(cfg.out),
        since=cfg.since.isoformat() if cfg.since else None,
        until=cfg.until.isoformat() if cfg.until else None,
    )
    (cfg.out / MANIFEST).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def _staging(cfg: BuildConfig) -> Path:
    cfg.out.mkdir(parents=True, exist_ok=True)
    return cfg.out / f".staging-{uuid.uuid4().hex[:8]}"


# -- the Ray Data build -------------------------------------------------------------

BUCKET_ROWS = 500_000


def _buckets(rows: int, cpus: int) -> int:
    """Entity buckets for the shuffles: about 500k rows each, at most 2 per CPU. Each
    bucket writes one file per month, and small files cost every later reader."""
    return max(1, min(2 * max(cpus, 1), -(-rows // BUCKET_ROWS)))


def build(cfg: BuildConfig, say: Callable[[str], None] = print) -> BuildResult:
    """Build the feature tables with Ray Data on the connected Ray cluster."""
    import ray

    started = time.perf_counter()
    _check_window(cfg)
    files = [str(f) for f in check_files(cfg.input)]

    cpus = int(ray.cluster_resources().get("CPU", 1))
    # Few read tasks, each over several files: task start-up dominates on small files.
    blocks = min(len(files), 4 * max(cpus, 1))

    def read(columns: list[str]) -> Any:
        return ray.data.read_parquet(
            files, partitioning=None, override_num_blocks=blocks
        ).select_columns(columns)

    say(f"[1/5] validating {len(files)} files from {cfg.input}")
    reasons: Counter = Counter()
    hashes: list[np.ndarray] = []
    rows_read = 0
    # Validated once and kept in the object store (compact: 6 columns + tags) for
    # both shuffles; it spills to disk when larger than the store.
    prepared = read(_COLUMNS).map_batches(_prepare, fn_kwargs={"cfg": cfg}, batch_format="pandas")
    prepared = prepared.materialize()
    tags = prepared.select_columns(["reason", "id_hash", "in_build", "good"])
    for batch in tags.iter_batches(batch_format="pandas", batch_size=None):
        in_build = batch["in_build"].to_numpy()
        rows_read += int(in_build.sum())
        bad = batch["reason"].notna().to_numpy()
        reasons.update(batch.loc[bad, "reason"].tolist())
        hashes.append(batch["id_hash"].to_numpy()[in_build & batch["good"].to_numpy()])
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype="uint64")
    uniq, counts = np.unique(all_hashes, return_counts=True)
    suspects = uniq[counts > 1]
    del all_hashes, hashes, uniq, counts
    say(f"      {rows_read:,} rows, {sum(reasons.values()):,} break a rule, "
        f"{len(suspects):,} ids appear more than once")  # fmt: skip

    buckets = cfg.buckets or _buckets(rows_read, cpus)
    staging = _staging(cfg)
    try:
        say("[2/5] quarantining bad rows and duplicates")
        if reasons:
            read(_COLUMNS).map_batches(
                _bad_rows, fn_kwargs={"cfg": cfg}, batch_format="pandas"
            ).write_parquet(str(staging / QUARANTINE), partition_cols=["month"])
        keepers = pd.DataFrame(columns=_COLUMNS)
        if len(suspects):
            rows = (
                read(_COLUMNS)
                .map_batches(
                    _candidates, fn_kwargs={"cfg": cfg, "suspects": suspects}, batch_format="pandas"
                )
                .to_pandas()
            )
            keepers, dups = _resolve_duplicates(rows)
            reasons["duplicate_transaction_id"] += len(dups)
            _write_frame(dups, staging / QUARANTINE)

        for step, (name, columns, key, udf) in enumerate(
            (
                ("customer_features", _CUSTOMER_COLUMNS, "customer_id", _customer_bucket),
                ("merchant_features", _MERCHANT_COLUMNS, "merchant_id", _merchant_bucket),
            ),
            start=3,
        ):
            say(f"[{step}/5] computing {name} in {buckets} buckets")
            kwargs = {"suspects": suspects, "columns": columns, "buckets": buckets, "key": key}
            ds = prepared.map_batches(_select, fn_kwargs=kwargs, batch_format="pandas")
            if len(keepers):
                ds = ds.union(ray.data.from_pandas(_bucketed(keepers[columns], key, buckets)))
            ds.groupby("bucket", num_partitions=buckets).map_groups(
                udf, fn_kwargs={"since_us": cfg.since_us}, batch_format="pandas"
            ).write_parquet(str(staging / name), partition_cols=["month"])
        say("[5/5] swapping the new partitions into place")
        return _finish(cfg, staging, reasons, rows_read, started, "ray")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- the single-process pandas baseline ---------------------------------------------


def build_pandas(cfg: BuildConfig, say: Callable[[str], None] = print) -> BuildResult:
    """The same build, all in memory, in this process."""
    started = time.perf_counter()
    _check_window(cfg)
    files = check_files(cfg.input)
    say(f"[1/3] reading {len(files)} files from {cfg.input}")
    raw = pd.concat(
        [pq.read_table(f, columns=_COLUMNS).to_pandas() for f in files], ignore_index=True
    )
    in_build = _in_build(raw, cfg)
    frame = raw[in_build]
    reasons_arr = row_reasons(frame, pd.Timestamp(cfg.now))
    bad = ~pd.isna(reasons_arr)
    reasons: Counter = Counter(reasons_arr[bad].tolist())
    quarantine = frame[bad].copy()
    quarantine["reason"] = pd.array(reasons_arr[bad], dtype="string")
    good = frame[~bad]
    dup_ids = good["transaction_id"].duplicated(keep=False).to_numpy()
    keepers, dups = _resolve_duplicates(good[dup_ids])
    reasons["duplicate_transaction_id"] += len(dups)
    quarantine = pd.concat([_with_month(quarantine, "timestamp"), dups], ignore_index=True)
    accepted = pd.concat([good[~dup_ids], keepers], ignore_index=True)
    history = raw[~in_build]
    history = history[_window(history, cfg.history_us, cfg.until_us)]
    history = history[pd.isna(row_reasons(history, pd.Timestamp(cfg.now)))]
    rows = pd.concat([accepted, history], ignore_index=True)

    say("[2/3] computing customer and merchant features")
    staging = _staging(cfg)
    try:
        customers = _customer_bucket(rows[_CUSTOMER_COLUMNS], cfg.since_us)
        merchants = _merchant_bucket(rows[_MERCHANT_COLUMNS], cfg.since_us)
        say("[3/3] writing")
        _write_frame(customers, staging / "customer_features")
        _write_frame(merchants, staging / "merchant_features")
        _write_frame(quarantine, staging / QUARANTINE)
        return _finish(cfg, staging, reasons, len(frame), started, "pandas")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- the job entrypoint -------------------------------------------------------------


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DataError(f"{value!r} is not a time", hint="use ISO 8601, e.g. 2026-08-01") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.features.build")
    parser.add_argument("--input", required=True, help="raw transactions (parquet directory)")
    parser.add_argument("--out", required=True, help="feature root to write the tables under")
    parser.add_argument("--since", help="first time to emit features for (ISO 8601)")
    parser.add_argument("--until", help="end of the build window, exclusive (ISO 8601)")
    parser.add_argument("--engine", choices=("ray", "pandas"), default="ray")
    parser.add_argument("--buckets", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        cfg = BuildConfig(
            input=Path(args.input),
            out=Path(args.out),
            since=_parse_time(args.since),
            until=_parse_time(args.until),
            buckets=args.buckets,
        )
        _check_window(cfg)
        if args.engine == "ray":
            from pipelines.features._ray import connect

            connect()
            result = build(cfg, say=lambda m: print(m, flush=True))
        else:
            result = build_pandas(cfg, say=lambda m: print(m, flush=True))
    except ShipyardError as exc:
        return fail(exc, 2)
    print("feature build")
    print(result.summary())
    print("RESULT " + json.dumps(asdict(result)), flush=True)
    return 0


# -- the CLI side (``shipyard features build``, see shipyard.workload) --------------


def prepare(settings: Any, argv: list[str]) -> list[str]:
    """Check the arguments and the raw files before a job starts; fill in the paths."""
    import argparse

    from pipelines._cli import iso_time

    parser = argparse.ArgumentParser(prog="shipyard features build")
    parser.add_argument("--input", type=Path, default=None,
                        help="raw transactions (default: <data_root>/raw/transactions)")  # fmt: skip
    parser.add_argument("--since", type=iso_time, default=None,
                        help="emit features from this time on (ISO 8601); needs --until")  # fmt: skip
    parser.add_argument("--until", type=iso_time, default=None,
                        help="up to this time, exclusive (ISO 8601); needs --since")  # fmt: skip
    args, rest = parser.parse_known_args(argv)  # --engine, --buckets go to the job as given
    source = (args.input or settings.raw_data_dir).expanduser().resolve()
    cfg = BuildConfig(input=source, out=settings.features_dir, since=args.since,
                      until=args.until)  # fmt: skip
    _check_window(cfg)
    check_files(source)  # fail here, before a job starts, on unreadable input
    job = ["--input", str(source), "--out", str(cfg.out), *rest]
    if cfg.since is not None and cfg.until is not None:
        job += ["--since", cfg.since.isoformat(), "--until", cfg.until.isoformat()]
    return job


def report(argv: list[str], result: dict[str, Any], echo: Callable[[str], None]) -> None:
    quarantined = result["quarantined"]
    echo(
        f"rows read {result['rows_read']:,}, accepted {result['accepted']:,}, "
        f"quarantined {sum(quarantined.values()):,}"
        + "".join(f"\n  {k}: {v:,}" for k, v in sorted(quarantined.items()))
    )
    echo(f"feature tables in {result['out']}")


if __name__ == "__main__":
    sys.exit(main())
