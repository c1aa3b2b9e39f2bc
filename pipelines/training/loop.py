"""``train_loop_per_worker``: the code each Ray Train worker runs, and nothing else.

Each worker reads its shard of the training Dataset (once, into memory) and trains
a DDP-wrapped MLP;
rank 0 also scores the whole validation Dataset, logs the epoch to the MLflow run
the driver opened (Ray Train V2 has no MLflow callback), and reports a
checkpoint. A restarted worker group resumes from the latest checkpoint, so the
one MLflow run gets each epoch exactly once.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["epoch_batches", "evaluate", "load_shard", "train_epoch", "train_loop_per_worker"]

STATE = "state.pt"


def load_shard(shard: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """This worker's whole shard as two tensors, read from the object store once.

    The fraud model's data fits in a worker's memory many times over, and
    streaming it again every epoch (``iter_torch_batches``) costs more than the
    MLP's forward and backward passes; larger data would stream instead.
    """
    xs, ys = [], []
    for batch in shard.iter_torch_batches(batch_size=65536, dtypes={"x": torch.float32,
                                                                    "y": torch.float32}):  # fmt: skip
        xs.append(batch["x"])
        ys.append(batch["y"])
    return torch.cat(xs), torch.cat(ys)


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int | None) -> Any:
    """Mini-batches of one epoch, in a fresh random order per seed (None: in order)."""
    if seed is None:
        order = torch.arange(len(y))
    else:
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(y), batch_size):
        index = order[start : start + batch_size]
        yield {"x": x[index], "y": y[index]}


def _inject_fault(config: dict[str, Any], rank: int, epoch: int) -> None:
    fault = config.get("fault_injection")
    if not fault or fault["rank"] != rank or fault["epoch"] != epoch:
        return
    marker = Path(config["fault_marker"])
    if marker.exists():
        return  # once per training job
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"rank {rank} killed itself at epoch {epoch}\n")
    print(f"fault injection: rank {rank} kills its process (pid {os.getpid()}) at epoch {epoch}",
          flush=True)  # fmt: skip
    # Ray Train V2's controller learns of reported checkpoints when it polls the
    # workers (every 2 s); die after that, as a real mid-epoch crash would.
    time.sleep(5)
    os.kill(os.getpid(), signal.SIGKILL)


def train_epoch(
    model: torch.nn.Module, optimizer: Any, batches: Any, pos_weight: torch.Tensor
) -> torch.Tensor:
    """One pass over ``batches`` ({"x", "y"} tensors); returns [loss sum, rows]."""
    model.train()
    total = torch.zeros(2, dtype=torch.float64)
    for batch in batches:
        logits = model(batch["x"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, batch["y"], pos_weight=pos_weight
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += torch.tensor([float(loss.detach()) * len(batch["y"]), len(batch["y"])])
    return total


def evaluate(model: torch.nn.Module, shard: Any, batch_size: int, pos_weight: float) -> dict:
    """Loss, ROC AUC and PR AUC of ``model`` (not DDP-wrapped) over a whole Dataset."""
    model.eval()
    labels, probs, loss_sum = [], [], 0.0
    weight = torch.tensor(pos_weight)
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=batch_size,
                                              dtypes={"x": torch.float32, "y": torch.float32}):  # fmt: skip
            logits = model(batch["x"])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, batch["y"], pos_weight=weight, reduction="sum"
            )
            loss_sum += float(loss)
            labels.append(batch["y"].numpy())
            probs.append(torch.sigmoid(logits).numpy())
    y, p = np.concatenate(labels), np.concatenate(probs)
    return {
        "val_loss": loss_sum / max(len(y), 1),
        "val_roc_auc": float(roc_auc_score(y, p)),
        "val_pr_auc": float(average_precision_score(y, p)),
    }


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from pipelines.training.model import FraudMLP

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config["seed"])
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    net = FraudMLP(config["width"], config["hidden"], config["dropout"])
    model = ray.train.torch.prepare_model(net)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"]
    )
    pos_weight = torch.tensor(config["pos_weight"])
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE, weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
        if rank == 0:
            print(f"resumed from the checkpoint of epoch {state['epoch']}", flush=True)

    logger = None
    if rank == 0 and config.get("run_id"):
        from pipelines.training.tracking import EpochLogger

        logger = EpochLogger(config["tracking_uri"], config["run_id"])
    x_train, y_train = load_shard(ray.train.get_dataset_shard("train"))
    for epoch in range(start, config["epochs"]):
        _inject_fault(config, rank, epoch)
        began = time.perf_counter()
        batches = epoch_batches(x_train, y_train, config["batch_size"], config["seed"] + epoch)
        total = train_epoch(model, optimizer, batches, pos_weight)
        if world > 1 and dist.is_initialized():
            dist.all_reduce(total)
        metrics = {"epoch": epoch, "train_loss": float(total[0] / max(total[1], 1)),
                   "epoch_seconds": time.perf_counter() - began}  # fmt: skip
        if rank != 0:
            ray.train.report(metrics)
            continue
        if config.get("validate", True):
            metrics |= evaluate(net, ray.train.get_dataset_shard("val"), 4096,
                                float(pos_weight))  # fmt: skip
        if logger is not None:
            logger.log_epoch(epoch, metrics)
        print(f"epoch {epoch + 1}/{config['epochs']}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch"), flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch}, Path(folder) / STATE)  # fmt: skip
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
