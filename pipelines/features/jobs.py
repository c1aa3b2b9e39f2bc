"""Ray job entrypoints for the feature store: ``materialize`` and ``training-set``.

``python -m pipelines.features.jobs materialize --repo DIR [--end T]`` and
``python -m pipelines.features.jobs training-set --repo DIR --entities FILE --out PATH``.
Both open the rendered repo (``feature_store.yaml``) so the job sees exactly the
store the CLI configured. Errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from shipyard.errors import ShipyardError

from pipelines.features import store
from pipelines.features.build import _parse_time


def materialize_main(repo: Path, end: str | None) -> dict:
    result = store.materialize(repo, _parse_time(end))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.features.jobs")
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize")
    mat.add_argument("--repo", required=True, type=Path)
    mat.add_argument("--end", default=None)
    ts = sub.add_parser("training-set")
    ts.add_argument("--repo", required=True, type=Path)
    ts.add_argument("--entities", required=True, type=Path)
    ts.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        from pipelines.features._ray import connect

        connect()
        if args.command == "materialize":
            result = materialize_main(args.repo, args.end)
        else:
            result = training_set_main(args.repo, args.entities, args.out)
    except ShipyardError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
