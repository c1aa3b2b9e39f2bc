"""``shipyard predict --batch MODEL --input PATH --out PATH``: score a table on Ray Data
with a registered version, as the online path would have scored each row at its time.

The job (``python -m shipyard.batch``, a Ray job like training; ``--local`` runs it in
the CLI's process, on the same cluster):

1. resolves ``MODEL[@ALIAS|/VERSION]`` to one version, reads its serving contract;
2. reads the input (parquet file or folder, or CSV) and checks that every request
   field the contract needs is there (an error names the missing ones);
3. when the contract names a feature service: a point-in-time join through Feast's
   offline store (``get_historical_features``), each row's features as of its own time
   (``--timestamp-column``, by default the contract's only time input: a datetime, or
   a string constrained to ``date-time``), on-demand
   features included, so a backfill sees what the online path would have seen then;
4. scores on Ray Data: ``map_batches`` over an actor pool, one model load per actor;
5. writes the rows with the model's outputs and ``model_version`` as parquet.

Rows keep their order and their other columns; none is dropped (a row the model
fails on fails the job, naming it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard.errors import DataError, ShipyardError

__all__ = ["main", "prepare", "report", "score_table"]

_ROW = "__shipyard_row"
_NUMPY = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shipyard predict --batch")
    p.add_argument("--model", required=True, help="MODEL, MODEL@ALIAS or MODEL/VERSION")
    p.add_argument("--input", required=True, help="parquet file or folder, or a .csv file")
    p.add_argument("--out", required=True, help="parquet file to write")
    p.add_argument("--timestamp-column", default=None,
                   help="each row's time for point-in-time features (default: the contract's "
                   "only datetime input)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--actors", type=int, default=2, help="scoring actors (one model load each)")
    p.add_argument("--version", default=None, help=argparse.SUPPRESS)  # resolved by prepare
    return p


def prepare(settings: Any, argv: list[str]) -> list[str]:
    """In the CLI: resolve the version once (the job scores exactly that one), check the
    paths, and write the Feast repo the job opens."""
    from shipyard.serving import resolve_version

    args = _parser().parse_args(argv)
    if args.batch_size < 1 or args.actors < 1:
        raise DataError("--batch-size and --actors must be at least 1")
    if not Path(args.input).exists():
        raise DataError(f"the input {args.input} does not exist",
                        hint="pass a parquet file or folder, or a .csv file")  # fmt: skip
    resolved = resolve_version(settings, args.model)
    _check_fields(settings.tracking_uri, resolved.model, resolved.version,
                  _columns(args.input))  # fmt: skip
    out = Path(args.out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    source = str(Path(args.input).expanduser().resolve())  # the job may run elsewhere
    return [*argv, "--version", resolved.version, "--out", str(out), "--input", source]


def _columns(path: str) -> list[str]:
    """The input's column names, without reading its rows."""
    p = Path(path)
    try:
        if p.suffix == ".csv":
            return list(pd.read_csv(p, nrows=0).columns)
        import pyarrow.dataset as ds

        return list(ds.dataset(p, format="parquet", partitioning="hive").schema.names)
    except Exception as exc:  # noqa: BLE001 - any reader's failure, named
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}",
                        hint="pass a parquet file or folder, or a .csv file") from None  # fmt: skip


def _check_fields(tracking_uri: str, model: str, version: str, columns: list[str]) -> Any:
    """The version's contract, once the input has every request field it requires."""
    from shipyard.contract import read_contract, request_fields

    contract = read_contract(tracking_uri, model, version)
    online = bool(contract.feature_service)
    needed = [n for n, c in request_fields(contract, online=online).items() if c.required]
    missing = [n for n in needed if n not in columns]
    if missing:
        raise DataError(f"the input lacks the request field(s) {', '.join(missing)} that "
                        f"{model} version {version} needs",
                        hint=f"give the table the columns {', '.join(needed)}")  # fmt: skip
    return contract


def read_table(path: str) -> pd.DataFrame:
    p = Path(path)
    try:
        return pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any reader's failure, named
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}",
                        hint="pass a parquet file or folder, or a .csv file") from None  # fmt: skip


def _time_column(contract: Any, frame: pd.DataFrame, chosen: str | None) -> str:
    if chosen is not None:
        if chosen not in frame.columns:
            raise DataError(f"--timestamp-column {chosen!r} is not a column of the input")
        return chosen
    times = [c.name for c in contract.inputs if c.type == "datetime"
             or contract.constraints.get(c.name, {}).get("format") == "date-time"]  # fmt: skip
    if len(times) != 1:
        raise DataError(
            "which column is each row's time? the contract has "
            + (
                f"several time inputs {times}"
                if times
                else "no time input (a datetime, or a string of format date-time)"
            ),
            hint="pass --timestamp-column",
        )
    return times[0]


def with_features(settings: Any, contract: Any, frame: pd.DataFrame,
                  timestamp_column: str | None) -> pd.DataFrame:  # fmt: skip
    """``frame`` with the feature service's features as of each row's time (Feast's
    point-in-time join, on-demand features included), in the input's row order."""
    from shipyard.feast_repo import open_store, write_repo

    column = _time_column(contract, frame, timestamp_column)
    stamps = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    if stamps.isna().any():
        bad = frame.index[stamps.isna()][:5].tolist()
        raise DataError(f"{int(stamps.isna().sum())} rows have no valid time in {column!r} "
                        f"(rows {bad})", hint="give every row an ISO 8601 time")  # fmt: skip
    store = open_store(write_repo(settings))
    service = store.get_feature_service(contract.feature_service)
    produced = {f.name for p in service.feature_view_projections for f in p.features}
    entity = frame.drop(columns=[c for c in frame.columns if c in produced])
    entity = entity.assign(**{_ROW: np.arange(len(frame)), "event_timestamp": stamps})
    joined = store.get_historical_features(entity_df=entity, features=service).to_df()
    joined = joined.sort_values(_ROW).reset_index(drop=True)
    if len(joined) != len(frame):
        raise DataError(f"the point-in-time join returned {len(joined)} rows for {len(frame)}")
    return joined.drop(columns=[_ROW, "event_timestamp"], errors="ignore")


def model_columns(contract: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """The signature's columns, in its order and types (what the online predictor's
    ``model_frame`` builds from records)."""
    data = {}
    for col in contract.inputs:
        values = frame[col.name] if col.name in frame.columns else pd.Series([None] * len(frame))
        if col.type in ("double", "float"):
            data[col.name] = pd.to_numeric(values, errors="coerce").to_numpy(_NUMPY[col.type])
        elif col.type in ("long", "integer"):
            numbers = pd.to_numeric(values, errors="coerce")
            data[col.name] = (numbers.to_numpy(np.float64) if numbers.isna().any()
                              else numbers.to_numpy(_NUMPY[col.type]))  # fmt: skip
        elif col.type == "datetime":
            data[col.name] = pd.to_datetime(values, utc=True, format="ISO8601")
        else:
            data[col.name] = values.to_numpy(dtype=object)
    return pd.DataFrame(data)


class Scorer:
    """One Ray Data actor: the version loaded once, each batch scored in one call."""

    def __init__(self, tracking_uri: str, model: str, version: str) -> None:
        import mlflow

        from shipyard.contract import read_contract

        mlflow.set_tracking_uri(tracking_uri)
        self.contract = read_contract(tracking_uri, model, version)
        self.model = mlflow.pyfunc.load_model(f"models:/{model}/{version}")
        self.version = version

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = self.model.predict(model_columns(self.contract, batch))
        names = [c.name for c in self.contract.outputs] or ["prediction"]
        if isinstance(out, pd.DataFrame):
            answers = out.reset_index(drop=True)
        else:
            array = np.asarray(out)
            array = array.reshape(len(batch), -1) if array.ndim == 1 else array
            answers = pd.DataFrame(array, columns=names[: array.shape[1]])
        result = batch.reset_index(drop=True).copy()
        for name in answers.columns:
            result[str(name)] = answers[name].to_numpy()
        result["model_version"] = self.version
        return result


def blocks(frame: pd.DataFrame, batch_size: int, actors: int) -> list[pd.DataFrame]:
    """The frame in pieces for Ray Data: one DataFrame is one block, and one block goes
    to one actor; a few blocks per actor let every actor work."""
    count = max(1, min(-(-len(frame) // batch_size), 4 * actors))
    step = -(-len(frame) // count)
    return [frame.iloc[i : i + step] for i in range(0, len(frame), step)] or [frame]


def score_table(settings: Any, model: str, version: str, frame: pd.DataFrame, *,
                timestamp_column: str | None = None, batch_size: int = 1024,
                actors: int = 2, phases: dict[str, float] | None = None) -> pd.DataFrame:  # fmt: skip
    """``frame`` scored by ``model`` version ``version`` on Ray Data, with point-in-time
    features; the rows in input order with the outputs and ``model_version``.
    ``phases`` gets the seconds of each: ``features_s`` (the join), ``first_block_s``
    (Ray Data's start-up: actors started, the model loaded, the first block scored) and
    ``score_s`` (all of the scoring, that included)."""
    import ray

    phases = phases if phases is not None else {}
    contract = _check_fields(settings.tracking_uri, model, version, list(frame.columns))
    began = time.perf_counter()
    if contract.feature_service:
        frame = with_features(settings, contract, frame, timestamp_column)
    phases["features_s"] = time.perf_counter() - began
    frame = frame.assign(**{_ROW: np.arange(len(frame))})
    began = time.perf_counter()
    dataset = ray.data.from_pandas(blocks(frame, batch_size, actors)).map_batches(
        Scorer, fn_constructor_args=(settings.tracking_uri, model, version),
        batch_size=batch_size, batch_format="pandas", concurrency=actors, num_cpus=0.5,
    )  # fmt: skip
    parts = []
    for part in dataset.iter_batches(batch_size=None, batch_format="pandas"):
        if not parts:
            phases["first_block_s"] = time.perf_counter() - began
        parts.append(part)
    phases["score_s"] = time.perf_counter() - began
    scored = pd.concat(parts, ignore_index=True) if parts else frame.iloc[:0]
    return scored.sort_values(_ROW).drop(columns=_ROW).reset_index(drop=True)


def _connect(settings: Any) -> None:
    """Join the job's cluster, with the workload's worker setup hook (its fixes to
    Feast's offline store) in this driver too, as its jobs' workers have it."""
    import importlib
    import os

    import ray

    if not os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        raise DataError("the batch job runs on a Ray cluster",
                        hint="run it with `shipyard predict --batch ...` (a Ray job)")  # fmt: skip
    hook = settings.workload.worker_setup_hook
    if hook:
        module, _, function = hook.rpartition(".")
        getattr(importlib.import_module(module), function)()
    if not ray.is_initialized():
        ray.init(log_to_driver=True)


def main(argv: list[str] | None = None) -> int:
    from shipyard.settings import load_settings

    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.version is None:
            args = _parser().parse_args(prepare(settings, list(argv or sys.argv[1:])))
        model = args.model.split("@")[0].split("/")[0]
        phases: dict[str, float] = {}
        began = time.perf_counter()
        _connect(settings)
        phases["connect_s"] = time.perf_counter() - began
        started = time.perf_counter()
        frame = read_table(args.input)
        phases["read_s"] = time.perf_counter() - started
        print(f"[batch 1/3] {len(frame):,} rows from {args.input}; {model} version {args.version}",
              flush=True)  # fmt: skip
        print("[batch 2/3] point-in-time features (Feast offline store) and scoring on Ray Data "
              f"({args.actors} actors, batches of {args.batch_size})", flush=True)  # fmt: skip
        scored = score_table(settings, model, args.version, frame,
                             timestamp_column=args.timestamp_column,
                             batch_size=args.batch_size, actors=args.actors, phases=phases)  # fmt: skip
        print(f"      features {phases['features_s']:.1f}s; scoring {phases['score_s']:.1f}s "
              f"(the first block after {phases.get('first_block_s', 0.0):.1f}s)", flush=True)  # fmt: skip
        began = time.perf_counter()
        scored.to_parquet(args.out, index=False)
        phases["write_s"] = time.perf_counter() - began
        seconds = time.perf_counter() - started
        print(f"[batch 3/3] wrote {len(scored):,} rows to {args.out} in {seconds:.1f}s", flush=True)
    except ShipyardError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)  # fmt: skip
        return exc.exit_code
    result = {"model": model, "version": args.version, "rows": len(scored), "out": args.out,
              "seconds": round(seconds, 2), "rows_per_s": round(len(scored) / seconds, 1),
              "phases": {k: round(v, 3) for k, v in phases.items()}}  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def report(argv: list[str], result: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"scored {result['rows']:,} rows with {result['model']} version {result['version']} "
         f"in {result['seconds']}s ({result['rows_per_s']:,} rows/s): {result['out']}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
