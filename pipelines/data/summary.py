"""A Ray job that summarises raw transactions with Ray Data.

Run on the cluster (``shipyard job submit -- python -m pipelines.data.summary
--input PATH``): it reads the partitioned parquet in parallel across the nodes,
aggregates, prints a readable summary, and writes it as JSON when ``--out`` is
given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd


def _partials(batch: pd.DataFrame) -> pd.DataFrame:
    """Per (day, category) partial aggregates of one block; a module-level UDF as Ray wants."""
    delay_h = (batch["label_available_at"] - batch["timestamp"]).dt.total_seconds() / 3600
    frame = pd.DataFrame(
        {
            "day": batch["timestamp"].dt.strftime("%Y-%m-%d"),
            "category": batch["category"],
            "rows": 1,
            "fraud": batch["is_fraud"].astype("int64"),
            "amount": batch["amount"],
            "min_delay_h": delay_h,
        }
    )
    return frame.groupby(["day", "category"], as_index=False).agg(_AGG)


_AGG = {"rows": "sum", "fraud": "sum", "amount": "sum", "min_delay_h": "min"}


def summarise(input_path: str) -> dict[str, Any]:
    """Aggregate the dataset in one Ray Data pass; the partials are tiny."""
    import ray

    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=False)
    columns = ["amount", "category", "timestamp", "is_fraud", "label_available_at"]
    ds = ray.data.read_parquet(input_path).select_columns(columns)
    parts = ds.map_batches(_partials, batch_format="pandas").to_pandas()
    parts = parts.groupby(["day", "category"], as_index=False).agg(_AGG)
    daily = parts.groupby("day").agg(_AGG)
    by_category = parts.groupby("category")["rows"].sum().sort_values(ascending=False)
    rows = int(daily["rows"].sum())
    fraud = int(daily["fraud"].sum())
    amount = float(daily["amount"].sum())
    nodes = [n for n in ray.nodes() if n["Alive"]]
    return {
        "input": input_path,
        "rows": rows,
        "fraud_rows": fraud,
        "fraud_rate": round(fraud / rows, 5) if rows else 0.0,
        "amount_total": round(amount, 2),
        "amount_mean": round(amount / rows, 2) if rows else 0.0,
        "days": int(len(daily)),
        "first_day": str(daily.index.min()),
        "last_day": str(daily.index.max()),
        "min_label_delay_hours": round(float(daily["min_delay_h"].min()), 2),
        "rows_by_category": {str(k): int(v) for k, v in by_category.items()},
        "ray_nodes": len(nodes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.summary")
    parser.add_argument("--input", required=True, help="directory of raw transactions")
    parser.add_argument("--out", help="write the summary here as JSON")
    args = parser.parse_args(argv)
    if not Path(args.input).is_dir():
        print(f"error: input directory {args.input} does not exist", file=sys.stderr)
        return 2
    summary = summarise(args.input)
    print("transactions summary")
    for key, value in summary.items():
        if key != "rows_by_category":
            print(f"  {key:<24} {value}")
    print("  rows by category:")
    for cat, count in summary["rows_by_category"].items():
        print(f"    {cat:<22} {count}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2))
        print(f"summary written to {args.out}")
    print("SUMMARY_JSON " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
