"""``make demo``: the platform's flow end to end on the local platform.

Today: start the platform, generate raw transactions, summarise them in a Ray
job (logs streamed), and print where everything is. Later stages (features,
training, serving, canary) extend this flow. The platform is left running.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from shipyard import jobs
from shipyard.local import up
from shipyard.settings import Settings

Say = Callable[[str], None]


def _dataset_matches(path: Path, rows: int, seed: int) -> bool:
    manifest = path / "_manifest.json"
    if not manifest.exists():
        return False
    try:
        meta = json.loads(manifest.read_text())
    except ValueError:
        return False
    return meta.get("rows") == rows and meta.get("config", {}).get("seed") == seed


def run_demo(
    settings: Settings, *, rows: int, workers: int | None, say: Say, echo: Say, seed: int = 7
) -> dict[str, str]:
    from pipelines.data.generate import GenerateConfig, generate

    began = time.monotonic()
    say("[1/3] starting the local platform")
    state = up(settings, workers=workers, progress=say)
    for name in state.already_running:
        say(f"      {name} already running")

    raw = settings.raw_data_dir
    say(f"[2/3] generating {rows:,} raw transactions in {raw}")
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
    say("[3/3] submitting a Ray job that summarises them: " + " ".join(entry))
    job_id = jobs.submit_job(settings, entry, metadata={"shipyard": "demo"})
    say(f"      job {job_id}; streaming its logs")
    for chunk in jobs.tail_logs(settings, job_id):
        echo(chunk.rstrip("\n"))
    info = jobs.wait_for_job(settings, job_id)
    summary = json.loads(report.read_text())

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
    echo("  the platform keeps running: `shipyard status`, `shipyard down` to stop it")
    echo("=" * 64)
    return {"job_id": job_id, "status": info.status, "report": str(report)}
