"""``make demo`` (``shipyard demo``, ``workload.demo``): the platform's flow end to end on
the local platform, with the fraud workload.

Start the platform, generate raw transactions, summarise them in a Ray
job, build point-in-time features in a Ray job (Ray Data), register them in Feast,
materialize them into the online store (Feast's Ray engine), and print online
features for a few customers, then train, track, register and gate the fraud
model (Ray Train, MLflow); then serve it, roll a challenger out as a canary, roll a
planted bad version back, and print predictions (``pipelines.demo_serving``). The
platform is left running. Every step runs the way the CLI runs it: the workload's
entrypoints through ``shipyard.workload``, the rest through the platform's library.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from shipyard import features, jobs, workload
from shipyard.local import up
from shipyard.settings import Settings, load_settings

from pipelines.data.generate import GenerateConfig, generate
from pipelines.features import build, store
from pipelines.features import jobs as feature_jobs
from pipelines.training import job as training_job

Say = Callable[[str], None]
TRAIN_DAYS = 45  # the demo trains on recent data: the Feast join is its slowest step
HOLDOUT_DAYS = 7  # the last week is held out of training: the served traffic replays it


def _dataset_matches(path: Path, rows: int, seed: int) -> bool:
    manifest = path / "_manifest.json"
    if not manifest.exists():
        return False
    try:
        meta = json.loads(manifest.read_text())
    except ValueError:
        return False
    return (meta.get("rows") == rows and meta.get("config", {}).get("seed") == seed
            and not meta.get("extensions"))  # a shifted world from an earlier demo: regenerate  # fmt: skip


def train(settings: Settings, echo: Say, **overrides: object) -> dict:
    """Train as ``shipyard train`` does (a Ray job), with config ``overrides``."""
    spec = training_job.write_spec(settings, **overrides)
    return workload.run_module(settings, training_job, ["--spec", str(spec)], local=False,
                               echo=echo) or {}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from pipelines._cli import int_range

    parser = argparse.ArgumentParser(
        prog="shipyard demo",
        description="Run the platform's flow end to end on the local platform (leaves it running).",
    )
    parser.add_argument("--rows", type=int_range(1000), default=200_000, help="default 200000")
    parser.add_argument("--workers", type=int_range(0, 16), default=None,
                        help="Ray worker nodes besides the head (default: ray.workers)")  # fmt: skip
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    run_demo(load_settings(), rows=args.rows, workers=args.workers, say=say, echo=print)
    return 0


def run_demo(
    settings: Settings, *, rows: int, workers: int | None, say: Say, echo: Say, seed: int = 7
) -> dict[str, str]:
    began = time.monotonic()
    say("[1/17] starting the local platform")
    state = up(settings, workers=workers, progress=say)
    for name in state.already_running:
        say(f"      {name} already running")

    raw = settings.raw_data_dir
    say(f"[2/17] generating {rows:,} raw transactions in {raw}")
    if _dataset_matches(raw, rows, seed):
        say("      already there (same rows and seed); reusing it")
    else:
        result = generate(
            GenerateConfig(rows=rows, seed=seed), raw, overwrite=True,
            progress=lambda done, total: say(f"      {done:,}/{total:,} rows"),
        )  # fmt: skip
        say(
            f"      {result.fraud_rows:,} fraud rows ({result.fraud_rate:.2%}), {result.files} files"
        )

    report = settings.data_root / "reports" / "raw_summary.json"
    entry = ["python", "-m", "pipelines.data.summary", "--input", str(raw), "--out", str(report)]
    say("[3/17] submitting a Ray job that summarises them: " + " ".join(entry))
    job_id = jobs.submit_job(settings, entry, metadata={"shipyard": "demo"})
    say(f"      job {job_id}; streaming its logs")
    for chunk in jobs.tail_logs(settings, job_id):
        echo(chunk.rstrip("\n"))
    info = jobs.wait_for_job(settings, job_id)
    summary = json.loads(report.read_text())

    say("[4/17] building features in a Ray job (validate, quarantine, point-in-time windows)")
    manifest = workload.run_module(settings, build, [], local=False, echo=_quiet(echo)) or {}
    say(f"      {manifest['accepted']:,} rows accepted, "
        f"{sum(manifest['quarantined'].values()):,} quarantined; "
        f"{manifest['customer_rows']:,} customer rows, {manifest['merchant_rows']:,} merchant rows")  # fmt: skip
    say("[5/17] registering the feature repo in Feast and materializing the online store")
    for name in features.apply(settings):
        say(f"      applied {name}")
    workload.run_module(settings, feature_jobs, ["materialize"], local=False, echo=_quiet(echo))
    say("[6/17] reading online features for a few customers")
    samples = _samples(raw)
    feature_store = store.open_store(store.write_repo(settings))
    online = [store.online_features(feature_store, c, m, a) for c, m, a in samples]
    say("[7/17] training the fraud model with Ray Train (2 DDP workers), tracked in MLflow")
    end = _latest(raw) - timedelta(days=HOLDOUT_DAYS)
    start = end - timedelta(days=TRAIN_DAYS)
    say(f"      on {TRAIN_DAYS} days of data ({start:%Y-%m-%d} .. {end:%Y-%m-%d}); the last "
        f"{HOLDOUT_DAYS} days are held out: the traffic replays them")  # fmt: skip
    trained = train(settings, _quiet(echo), workers=2, start=start, end=end)
    say(f"      version {trained['version']}, aliases {', '.join(trained['aliases']) or 'none'}")
    from pipelines.demo_retrain import summary as retrain_summary
    from pipelines.demo_serving import run_serving
    from pipelines.demo_serving import summary as serving_summary

    served = run_serving(settings, trained, raw, start, end, say, echo, _quiet(echo))
    from pipelines.demo_retrain import run_retrain

    served["retrain"] = run_retrain(settings, trained["model_name"], served["url"], say, echo,
                                    _quiet(echo), 16, 17)  # fmt: skip

    echo("")
    echo("=" * 64)
    echo(f"Shipyard demo done in {time.monotonic() - began:.0f}s")
    echo(f"  Ray dashboard   {state.dashboard_url}")
    echo(f"  MLflow UI       {state.mlflow_url}")
    echo(f"  job             {job_id}: {info.status}")
    echo(f"  result          {summary['rows']:,} transactions, "
         f"{summary['fraud_rate']:.2%} fraud, {summary['days']} days, "
         f"read on {summary['ray_nodes']} Ray nodes")  # fmt: skip
    echo(f"  report          {report}")
    echo(f"  features        {manifest['out']} (build took {manifest['seconds']:.0f}s)")
    echo("  online features (Feast, fraud_model_v1):")
    echo(f"    {'customer':<10} {'merchant':<9} {'amount':>8} {'tx 24h':>6} {'tx 7d':>6} "
         f"{'mean 7d':>8} {'amt/mean':>8} {'merch fraud 30d':>15}")  # fmt: skip
    for (cust, merch, amount), row in zip(samples, online, strict=True):
        echo(f"    {cust:<10} {merch:<9} {amount:>8.2f} {_n(row['cust_tx_count_24h']):>6} "
             f"{_n(row['cust_tx_count_7d']):>6} {_f(row['cust_amount_mean_7d']):>8} "
             f"{_f(row['amount_to_cust_mean_7d']):>8} {_f(row['merch_fraud_rate_30d'], '.2%'):>15}")  # fmt: skip
    echo(
        "  try: shipyard features get --customer " + samples[0][0] + " --merchant " + samples[0][1]
    )
    metrics = trained["metrics"]
    echo(f"  MLflow run      {trained['run_url']}")
    echo(f"  model           {trained['model_name']} version {trained['version']}, aliases: "
         f"{', '.join(trained['aliases']) or 'none'}")  # fmt: skip
    echo(f"  validation      PR AUC {metrics['final_val_pr_auc']:.3f}, ROC AUC "
         f"{metrics['final_val_roc_auc']:.3f} (request-time baseline: PR AUC "
         f"{trained['baseline']['baseline_val_pr_auc']:.3f})")  # fmt: skip
    echo(f"  gate            {'passed' if trained['gate_passed'] else 'refused'}: "
         f"{trained['gate_reason']}")  # fmt: skip
    echo(f"  try: shipyard models show {trained['model_name']}@champion")
    serving_summary(served, echo)
    retrain_summary(served["retrain"], echo)
    echo("  the platform keeps running: `shipyard status`, `shipyard down` to stop it")
    echo("=" * 64)
    return {"job_id": job_id, "status": info.status, "report": str(report),
            "features": manifest["out"], "run_id": trained["run_id"],
            "version": trained["version"]}  # fmt: skip


def _quiet(echo: Say) -> Say:
    """Job logs minus Ray Data's per-operator progress chatter."""

    noise = ("logging_progress.py", "streaming_executor", "dataset.py", "WARNING", "Warning",
             "warnings.warn", "return ray.data", "np.datetime64")  # fmt: skip

    def show(chunk: str) -> None:
        for line in chunk.splitlines():
            if line.strip() and not any(n in line for n in noise):
                echo(line)

    return show


def _latest(raw: Path) -> datetime:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(raw, format="parquet", partitioning="hive").to_table(columns=["timestamp"])
    ts = table["timestamp"].cast(pa.timestamp("us", tz="UTC"))
    now = datetime.now(timezone.utc)
    return pc.max(pc.filter(ts, pc.less_equal(ts, now))).as_py()  # future rows are quarantined


def _samples(raw: Path, n: int = 5) -> list[tuple[str, str, float]]:
    """The last transactions of the data set: their customers have recent features."""
    import pyarrow.dataset as ds

    table = ds.dataset(raw, format="parquet", partitioning="hive").to_table(
        columns=["customer_id", "merchant_id", "amount", "timestamp"]
    )
    frame = table.to_pandas().sort_values("timestamp").drop_duplicates("customer_id", keep="last")
    last = frame.tail(n)
    return [(r.customer_id, r.merchant_id, float(r.amount)) for r in last.itertuples()]


def _n(value: object) -> str:
    return "-" if value is None else str(value)


def _f(value: object, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    import sys

    sys.exit(main())
