"""Benchmark: the training loop under Ray Train's ``TorchTrainer`` (1 worker) against
the same loop in plain PyTorch, the cost of per-epoch MLflow logging, and the
``TorchTrainer`` start-up time.

    .venv/bin/python benchmarks/training_bench.py --rows 400000 --epochs 5

Same data (a synthetic float32 matrix as wide as the fraud model's input), same
model, same optimizer, same batch size, same ``train_epoch`` function
(``pipelines.training.loop``), same torch threads (1), no shuffling in either.
Plain PyTorch slices in-memory tensors; ``TorchTrainer`` reads its Ray Dataset
shard with ``iter_torch_batches``, as the real job does. Loop time is measured
inside the loop (first batch to last step); start-up is ``fit()`` to the first
batch. MLflow cost: each epoch's ``log_batch`` to a real ``mlflow server`` this
script starts on 127.0.0.1 (and stops), against the epoch's time.
Results: benchmarks/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
WIDTH, HIDDEN, BATCH = 44, [64, 32], 512


def _data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, WIDTH)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.standard_normal(rows) > 2.5).astype(np.float32)
    return x, y


def _model() -> tuple[torch.nn.Module, Any]:
    from pipelines.training.model import FraudMLP

    torch.manual_seed(0)
    model = FraudMLP(WIDTH, HIDDEN, 0.1)
    return model, torch.optim.AdamW(model.parameters(), lr=2e-3)


def plain(x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, Any]:
    from pipelines.training.loop import epoch_batches, train_epoch

    torch.set_num_threads(1)
    model, optimizer = _model()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    times = []
    for epoch in range(epochs):
        began = time.perf_counter()
        train_epoch(model, optimizer, epoch_batches(tx, ty, BATCH, epoch), torch.tensor(3.0))
        times.append(time.perf_counter() - began)
    return {"epoch_seconds": times, "loop_seconds": sum(times)}


def _worker(config: dict[str, Any]) -> None:
    import ray.train

    from pipelines.training.loop import epoch_batches, load_shard, train_epoch
    from pipelines.training.tracking import EpochLogger

    torch.set_num_threads(1)
    model, optimizer = _model()
    model = ray.train.torch.prepare_model(model)
    x, y = load_shard(ray.train.get_dataset_shard("train"))
    logger = EpochLogger(config["uri"], config["run_id"]) if config.get("run_id") else None
    first = time.time()
    times, log_times = [], []
    for epoch in range(config["epochs"]):
        began = time.perf_counter()
        total = train_epoch(model, optimizer, epoch_batches(x, y, BATCH, epoch), torch.tensor(3.0))
        times.append(time.perf_counter() - began)
        if logger is not None:
            t = time.perf_counter()
            logger.log_epoch(epoch, {"train_loss": float(total[0] / total[1]),
                                     "epoch_seconds": times[-1]})  # fmt: skip
            log_times.append(time.perf_counter() - t)
        ray.train.report({"epoch": epoch})
    Path(config["out"]).write_text(json.dumps(
        {"worker_started": first, "epoch_seconds": times, "log_seconds": log_times}))  # fmt: skip


def trainer(x: np.ndarray, y: np.ndarray, epochs: int, storage: Path, **extra: Any) -> dict:
    import pandas as pd
    import ray.data
    import ray.train
    from ray.data.extensions import TensorArray
    from ray.train.torch import TorchTrainer

    data = ray.data.from_pandas(pd.DataFrame({"x": TensorArray(x), "y": y})).materialize()
    out = storage / f"worker-{time.time_ns()}.json"
    config = {"epochs": epochs, "out": str(out), **extra}
    fit_called = time.time()
    TorchTrainer(
        _worker, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(storage_path=str(storage), name=out.stem),
        datasets={"train": data},
    ).fit()  # fmt: skip
    measured = json.loads(out.read_text())
    return {
        "epoch_seconds": measured["epoch_seconds"],
        "loop_seconds": sum(measured["epoch_seconds"]),
        "log_seconds": measured["log_seconds"],
        "startup_seconds": measured["worker_started"] - fit_called,
    }


def _mlflow(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    import requests

    for _ in range(120):
        try:
            if requests.get(f"{uri}/health", timeout=1).ok:
                return proc, uri
        except requests.RequestException:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    from mlflow import MlflowClient

    from pipelines.features._ray import connect

    x, y = _data(args.rows)
    with tempfile.TemporaryDirectory(prefix="sy-bench-") as tmp:
        root = Path(tmp)
        server, uri = _mlflow(root)
        try:
            connect(num_cpus=2)
            print(f"{args.rows:,} rows x {WIDTH}, {args.epochs} epochs, batch {BATCH}", flush=True)
            base = plain(x, y, args.epochs)
            print(f"plain PyTorch loop          {base['loop_seconds']:.2f}s", flush=True)
            ray_run = trainer(x, y, args.epochs, root)
            print(f"TorchTrainer (1 worker)     {ray_run['loop_seconds']:.2f}s, "
                  f"start-up {ray_run['startup_seconds']:.2f}s", flush=True)  # fmt: skip
            client = MlflowClient(tracking_uri=uri)
            run_id = client.create_run(client.create_experiment("bench")).info.run_id
            logged = trainer(x, y, args.epochs, root, uri=uri, run_id=run_id)
            client.set_terminated(run_id)
        finally:
            server.terminate()
            server.wait(timeout=30)
    log_share = sum(logged["log_seconds"]) / logged["loop_seconds"]
    ratio = ray_run["loop_seconds"] / base["loop_seconds"]
    print(f"TorchTrainer + MLflow       {logged['loop_seconds']:.2f}s loop, "
          f"{sum(logged['log_seconds']) * 1000:.1f} ms logging ({log_share:.2%})")  # fmt: skip
    print(f"TorchTrainer / plain        {ratio:.3f}x")
    result = {
        "benchmark": "training",
        "command": f"python benchmarks/training_bench.py --rows {args.rows} --epochs {args.epochs}",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "rows": args.rows, "width": WIDTH, "epochs": args.epochs, "batch": BATCH, "threads": 1,
        "plain": base, "torch_trainer": ray_run, "torch_trainer_with_mlflow": logged,
        "trainer_over_plain": round(ratio, 4),
        "mlflow_logging_share": round(log_share, 5),
        "startup_seconds": round(ray_run["startup_seconds"], 2),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS / 'training.json'}")


if __name__ == "__main__":
    main()
