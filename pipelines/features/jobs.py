"""Entrypoints for the feature store: ``materialize`` and ``training-set`` (Ray jobs),
and ``get`` (an online lookup, in the CLI's process).

``python -m pipelines.features.jobs materialize --repo DIR [--end T]``,
``python -m pipelines.features.jobs training-set --repo DIR --entities FILE --out PATH``
and ``python -m pipelines.features.jobs get --repo DIR --customer C --merchant M
[--amount A]``. Each opens the rendered repo (``feature_store.yaml``), so it sees exactly
the store the CLI configured; ``shipyard features materialize|training-set|get`` run
them (``workload.features_jobs``), with :func:`prepare` adding the repo. Errors print
one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from shipyard.errors import ConfigError, ShipyardError
from shipyard.feast_repo import write_repo

from pipelines._cli import fail
from pipelines.features import store
from pipelines.features.build import _parse_time


def materialize_main(repo: Path, end: datetime | str | None) -> dict:
    result = store.materialize(repo, _parse_time(end) if isinstance(end, str) else end)
    print(f"materialized {', '.join(result.views)} up to {result.end} in {result.seconds:.1f}s")
    return asdict(result)


def training_set_main(repo: Path, entities: Path, out: Path) -> dict:
    frame = store.read_entities(entities)
    print(f"point-in-time join of {len(frame):,} entity rows through {store.FEATURE_SERVICE}")
    result = store.training_set(store.open_store(repo), frame)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out, index=False)
    print(f"wrote {len(result):,} rows x {len(result.columns)} columns to {out}")
    return {"rows": len(result), "columns": list(result.columns), "out": str(out)}


def get_main(repo: Path, customer: str, merchant: str, amount: float | None) -> dict:
    """The online values of one customer and merchant (request-time ones with ``amount``)."""
    feature_store = store.open_store(repo)
    if not feature_store.list_feature_views():
        raise ConfigError(
            f"no feature views registered in project {feature_store.project!r}",
            hint="run `shipyard features apply` and `shipyard features materialize` first",
        )
    values = store.online_features(feature_store, customer, merchant, amount)
    if all(values[k] is None for k in values if k.startswith("cust_")):
        print(f"note: no online features for customer {customer} (unknown, or not "
              "materialized)", file=sys.stderr)  # fmt: skip
    return values


def _parser(prog: str = "python -m pipelines.features.jobs", repo: bool = True) -> Any:
    from pipelines._cli import iso_time

    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="load the latest values into the online store")
    mat.add_argument("--end", type=iso_time, default=None,
                     help="load values up to this time (ISO 8601; default: now)")  # fmt: skip
    ts = sub.add_parser("training-set", help="a point-in-time correct training set")
    ts.add_argument("--entities", required=True, type=Path,
                    help="parquet/CSV with customer_id, merchant_id, event_timestamp, amount")  # fmt: skip
    ts.add_argument("--out", required=True, type=Path, help="parquet to write")
    get = sub.add_parser("get", help="the online values of a customer and a merchant")
    get.add_argument("--customer", required=True, help="customer id, e.g. c_0000042")
    get.add_argument("--merchant", required=True, help="merchant id, e.g. m_000007")
    get.add_argument("--amount", type=float, default=None,
                     help="the transaction amount, to add request-time features")  # fmt: skip
    for command in (mat, ts, get):
        command.add_argument("--repo", required=repo, type=Path, help=argparse.SUPPRESS)
    return parser


def prepare(settings: Any, argv: list[str]) -> list[str]:
    """The CLI side: check the arguments (and the entities file) before a job starts,
    render the settings' Feast repo and name it."""
    args = _parser("shipyard features", repo=False).parse_args(argv)
    if args.command == "training-set":
        store.read_entities(args.entities.expanduser().resolve())  # fails here, not in a job
    repo = write_repo(settings)
    job = [args.command, "--repo", str(repo)]
    if args.command == "materialize" and args.end is not None:
        job += ["--end", args.end.isoformat()]
    elif args.command == "training-set":
        job += ["--entities", str(args.entities.expanduser().resolve()),
                "--out", str(args.out.expanduser().resolve())]  # fmt: skip
    elif args.command == "get":
        job += ["--customer", args.customer, "--merchant", args.merchant]
        if args.amount is not None:
            job += ["--amount", repr(args.amount)]
    return job


def report(argv: list[str], result: dict, echo: Callable[[str], None]) -> None:
    if argv[0] == "training-set":
        echo(f"training set written to {result['out']}")
    elif argv[0] == "get":
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = (
                "-" if value is None else (f"{value:.6g}" if isinstance(value, float) else value)
            )
            echo(f"{key:<{width}}  {shown}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "get":
            result = get_main(args.repo, args.customer, args.merchant, args.amount)
        else:
            from pipelines.features._ray import connect

            connect()
            if args.command == "materialize":
                result = materialize_main(args.repo, args.end)
            else:
                result = training_set_main(args.repo, args.entities, args.out)
    except ShipyardError as exc:
        return fail(exc, 2)
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
