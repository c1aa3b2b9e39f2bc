"""The training configuration: typed, validated, loaded from YAML or JSON.

Every field has a default, so ``shipyard train`` needs no file; a file (or a CLI
flag) overrides fields by name, and an unknown or invalid field is one error that
names it.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from shipyard.errors import ConfigError

__all__ = ["FaultInjection", "GateConfig", "TrainConfig", "load_config"]


class GateConfig(BaseModel):
    """The promotion gate between a registered version and the ``challenger`` alias."""

    model_config = ConfigDict(extra="forbid")

    pr_auc_floor: float = Field(default=0.2, ge=0.0, le=1.0,
                                description="validation PR AUC a version must exceed")  # fmt: skip
    champion_tolerance: float = Field(
        default=0.02, ge=0.0, le=1.0,
        description="how far below the champion's PR AUC (same validation set) is acceptable",
    )  # fmt: skip


class FaultInjection(BaseModel):
    """Chaos testing: the worker of this rank kills its own process, once, when this
    epoch begins. Training must resume from the last checkpoint."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=0)
    epoch: int = Field(ge=1)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(default="fraud-detector", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str = Field(default="fraud-detector")
    start: datetime | None = Field(default=None, description="data window start (inclusive)")
    end: datetime | None = Field(default=None, description="data window end (exclusive)")
    window_days: float | None = Field(
        default=None, gt=0, le=3660,
        description="train on the latest N days of data instead of start/end (retraining on "
        "a schedule): the window ends window_lag_days before the newest event",
    )  # fmt: skip
    window_lag_days: float = Field(
        default=0.0, ge=0, le=365,
        description="with window_days: end the window this many days before the newest "
        "event, so that its labels (which arrive late) are known",
    )  # fmt: skip
    training_set: str | None = Field(
        default=None,
        description="reuse the training set a previous run saved (its data.training_set tag) "
        "instead of joining through Feast again; start/end do not apply then",
    )
    validation_fraction: float = Field(
        default=0.2, gt=0.0, lt=0.9,
        description="the latest share of the window (by time) held out for validation",
    )  # fmt: skip
    workers: int = Field(default=2, ge=1, le=64)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    epochs: int = Field(default=5, ge=1, le=1000)
    batch_size: int = Field(default=512, ge=8, le=1 << 20)
    learning_rate: float = Field(default=2e-3, gt=0, le=1.0)
    weight_decay: float = Field(default=1e-4, ge=0)
    hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0)
    max_failures: int = Field(default=2, ge=0, description="worker failures to recover from")
    checkpoints_to_keep: int = Field(default=2, ge=1)
    gate: GateConfig = Field(default_factory=GateConfig)
    shuffle_labels: bool = Field(
        default=False,
        description="control experiment: train on shuffled labels; the gate must refuse it",
    )
    fault_injection: FaultInjection | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if any(h < 1 for h in self.hidden):
            raise ValueError("hidden layer sizes must be positive")
        if self.start and self.end and self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        if self.window_days is not None and (self.start or self.end):
            raise ValueError("window_days replaces start and end: give one or the other")
        if self.window_lag_days and self.window_days is None:
            raise ValueError("window_lag_days needs window_days")
        if self.fault_injection and self.fault_injection.rank >= self.workers:
            raise ValueError(
                f"fault_injection.rank {self.fault_injection.rank} needs more than "
                f"{self.workers} worker(s)"
            )
        return self


def load_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """The config from ``path`` (YAML or JSON) with non-None ``overrides`` on top."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
            loaded = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read training config {path}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"training config {path} must be a mapping of fields")
        data = loaded or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"invalid training config ({source}): {problems}",
            hint="see `shipyard train --help` and configs/train.yaml for the fields",
        ) from None
