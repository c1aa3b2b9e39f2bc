"""One typed settings object for every Shipyard command and job.

Precedence, lowest to highest: defaults < YAML file (``--config`` or
``SHIPYARD_CONFIG``) < ``SHIPYARD_*`` environment variables (nested keys with a
double underscore: ``SHIPYARD_RAY__HEAD_PORT=6390``). Nothing is read at import
time; call :func:`load_settings`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shipyard.errors import ConfigError

__all__ = [
    "DriftThresholds",
    "KubernetesSettings",
    "MlflowSettings",
    "MonitorSettings",
    "RaySettings",
    "ServeSettings",
    "Settings",
    "WorkloadSettings",
    "defaults",
    "load_settings",
]

ENV_PREFIX = "SHIPYARD_"
#: The settings a workload's entrypoint runs with, as JSON: the CLI sets it for the
#: entrypoint (in a Ray job's runtime env, or in this process with --local), and
#: :func:`load_settings` returns exactly those settings when it is set.
SETTINGS_ENV = "SHIPYARD_SETTINGS_JSON"
_MODULE = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
#: A dotted Python module path (``pipelines.features.build``).
ModulePath = Annotated[str, Field(pattern=f"^{_MODULE}$")]


class RaySettings(BaseModel):
    """The Ray cluster: the local one that ``shipyard up`` starts, or a remote one."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        default=None,
        description="Job Submission API (dashboard) URL of a running cluster, e.g. "
        "http://ray-head:8265. Unset: the local cluster from `shipyard up`.",
    )
    head_port: int = Field(default=6380, ge=1, le=65535)  # 6379 is Redis's
    dashboard_port: int = Field(default=8265, ge=1, le=65535)
    client_server_port: int = Field(default=10001, ge=1, le=65535)
    dashboard_agent_port: int = Field(default=52365, ge=1, le=65535)
    min_worker_port: int = Field(default=11000, ge=1, le=65535)
    max_worker_port: int = Field(default=11999, ge=1, le=65535)
    workers: int = Field(default=1, ge=0, le=16, description="worker nodes besides the head")
    cpus_per_node: int | None = Field(default=None, ge=1, description="unset: Ray detects")
    object_store_memory_mb: int = Field(default=512, ge=78)
    start_timeout_s: float = Field(default=90.0, gt=0)

    @model_validator(mode="after")
    def _worker_port_range(self) -> RaySettings:
        if self.min_worker_port > self.max_worker_port:
            raise ValueError(
                f"min_worker_port ({self.min_worker_port}) must not exceed "
                f"max_worker_port ({self.max_worker_port})"
            )
        return self


class MlflowSettings(BaseModel):
    """The MLflow tracking server: local (started by ``shipyard up``) or remote."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str | None = Field(
        default=None,
        description="http(s) URL of a running MLflow server. Unset: the local one.",
    )
    port: int = Field(default=5050, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=16)
    start_timeout_s: float = Field(default=90.0, gt=0)


class FeatureSettings(BaseModel):
    """The Feast feature store. The profile picks the backing services: ``local`` uses a
    file registry and SQLite under the data root, ``cluster`` a SQL registry in
    Postgres and a Redis online store."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(
        default="shipyard",
        pattern=r"^[A-Za-z0-9_]+$",
        description="Feast project name: letters, digits and underscores",
    )
    root: Path | None = Field(
        default=None, description="feature tables and the local stores. Unset: <data_root>/features"
    )
    registry_url: str = Field(
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        description="SQLAlchemy URL of the SQL registry (cluster profile)",
    )
    redis: str = Field(
        default="127.0.0.1:6379",
        description="Redis online store as Feast's connection string: host:port[,password=..]",
    )


class TrainingSettings(BaseModel):
    """Where Ray Train keeps checkpoints; a path every Ray node can reach."""

    model_config = ConfigDict(extra="forbid")

    storage: str | None = Field(
        default=None,
        description="checkpoint storage: a shared path or a URI (s3://, gs://). "
        "Unset: <data_root>/training",
    )


class DriftThresholds(BaseModel):
    """When a column, the data set, or the data's quality raises an alert
    (``shipyard.drift``)."""

    model_config = ConfigDict(extra="forbid")

    psi: float = Field(default=0.1, gt=0, description="PSI at or above which a column may drift")
    p_value: float = Field(default=0.05, gt=0, lt=1, description="two-sample test's level")
    drift_share: float = Field(
        default=0.5, gt=0, le=1, description="share of drifted features that is dataset drift"
    )
    min_rows: int = Field(default=500, ge=10, description="fewer rows in a window: no verdict")
    null_rate_increase: float = Field(
        default=0.1, ge=0, le=1, description="rise of a column's null rate over the reference's"
    )
    out_of_range_share: float = Field(
        default=0.05, ge=0, le=1, description="share of numbers outside the reference's range"
    )
    unseen_share: float = Field(
        default=0.05, ge=0, le=1, description="share of categories the reference never saw"
    )


class MonitorSettings(BaseModel):
    """What serving records, for the monitoring jobs: the inference log."""

    model_config = ConfigDict(extra="forbid")

    inference_log: bool = Field(default=True, description="record what the predictors serve")
    log_uri: str | None = Field(
        default=None,
        description="the inference log: a path every Serve replica can reach, or an object "
        "store URI (s3://, gs://). Unset: <data_root>/inference-log",
    )
    log_sample_rate: float = Field(
        default=1.0, gt=0, le=1, description="share of served records the log keeps"
    )
    log_flush_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="seconds between a replica's log writes"
    )
    log_max_buffered_rows: int = Field(
        default=100_000,
        ge=1,
        description="rows a replica holds while its log writes fail; beyond, new rows are "
        "dropped and counted",
    )
    window_hours: float = Field(
        default=24.0, gt=0, le=24 * 366, description="the traffic a `monitor check` looks at"
    )
    drift: DriftThresholds = Field(default_factory=DriftThresholds)
    label_sources: dict[str, str] = Field(
        default_factory=dict,
        description="per model, where its labels are (a parquet file or folder, relative to "
        "the data root or absolute, or an object store URI); overrides the source its "
        "versions registered (shipyard.contract.LabelSpec)",
    )
    quality_min_labels: int = Field(
        default=200,
        ge=1,
        description="labelled answers a variant needs before its live quality can alert",
    )
    experiment: str = Field(
        default="shipyard-monitoring",
        min_length=1,
        description="MLflow experiment of the monitoring runs (one run per model)",
    )
    webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="where `monitor check` POSTs its alerts as JSON; unset: none",
    )


class KubernetesSettings(BaseModel):
    """Where the Shipyard chart runs, for commands that talk to Kubernetes itself
    (``shipyard job submit --k8s``). Credentials come from KUBECONFIG or the pod."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(default="shipyard", description="namespace of the Shipyard release")
    jobs_cluster: str = Field(
        default="shipyard-jobs", description="the chart's RayCluster that RayJobs run on"
    )


class ServeSettings(BaseModel):
    """Ray Serve: where the HTTP endpoint listens, and which backend changes the
    Serve config (the local cluster's REST API, or the RayService on Kubernetes)."""

    model_config = ConfigDict(extra="forbid")

    http_port: int = Field(default=8000, ge=1, le=65535, description="the Serve HTTP proxy")
    backend: Literal["auto", "local", "kubernetes"] = Field(
        default="auto",
        description="auto: `local` for the local profile, `kubernetes` for the cluster profile",
    )
    namespace: str = Field(default="shipyard", description="Kubernetes namespace of the RayService")
    rayservice: str = Field(default="shipyard-serve", description="name of the RayService")
    feature_repo: str | None = Field(
        default=None,
        description="the Feast repo directory the replicas open. Unset: the rendered "
        "<features>/repo/<profile>",
    )
    online_features: bool = Field(
        default=True,
        description="predictors read features from the Feast online store; false: clients "
        "send them as fields of the request",
    )
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="seconds a predictor waits for more requests before scoring a batch; 0: "
        "it scores what queued while the previous batch ran, and a lone request never waits",
    )
    stable_min_replicas: int = Field(
        default=2,
        ge=1,
        le=64,
        description="stable predictor replicas kept up, so that one replica's death or "
        "restart is not a stall",
    )
    access_log: bool = Field(
        default=False,
        description="Serve's access log line per request (proxy and replicas); off: the "
        "router's per-variant counts and Ray's metrics still count every request",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="the MLflow server as the Serve replicas and the rollout controller "
        "reach it (in a cluster: http://<release>-mlflow:5000). Unset: mlflow.tracking_uri",
    )
    url: str | None = Field(
        default=None,
        description="the Serve endpoint as clients reach it (a NodePort, an Ingress). "
        "Unset: http://<host>:<http_port>",
    )
    dashboard_address: str | None = Field(
        default=None,
        description="Ray dashboard URL of the cluster that runs Serve, where the rollout "
        "controller is started (on Kubernetes: the RayService's head). Unset: ray.address, "
        "or the local cluster",
    )


class WorkloadSettings(BaseModel):
    """The workload behind the CLI's workload commands (``data generate``, ``features
    ...``, ``train``, ``demo``): Python module paths, imported by name when a command
    runs (see ``shipyard.workload``), the fraud workload by default. The platform
    imports nothing from a workload otherwise."""

    model_config = ConfigDict(extra="forbid")

    generate: ModulePath = Field(
        default="pipelines.data.generate",
        description="`shipyard data generate ARGS`: runs in the CLI process",
    )
    features_build: ModulePath = Field(
        default="pipelines.features.build",
        description="`shipyard features build ARGS`: a Ray job (`python -m` it), --local here",
    )
    features_jobs: ModulePath = Field(
        default="pipelines.features.jobs",
        description="`shipyard features materialize|training-set|get ARGS`: the subcommand "
        "and ARGS go to it; materialize and training-set as Ray jobs, get here",
    )
    feature_definitions: str = Field(
        default="pipelines.features.repo:definitions",
        pattern=f"^{_MODULE}:[A-Za-z_][A-Za-z0-9_]*$",
        description="`shipyard features apply`: MODULE:FUNCTION returning the Feast objects "
        "(entities, sources, views, feature services), given the feature tables' root",
    )
    train: ModulePath = Field(
        default="pipelines.training.job",
        description="`shipyard train ARGS`: a Ray job (`python -m` it), --local here",
    )
    demo: ModulePath = Field(
        default="pipelines.demo",
        description="`shipyard demo ARGS`: runs in the CLI process",
    )
    worker_setup_hook: ModulePath | None = Field(
        default="pipelines.features._feast_fixes.install",
        description="MODULE.FUNCTION every Ray worker of a workload job runs first (Ray's "
        "`worker_process_setup_hook`); null: none",
    )


class Settings(BaseSettings):
    """Everything configurable in Shipyard, validated on load."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    profile: Literal["local", "cluster"] = "local"
    data_root: Path = Field(
        default=Path("~/.shipyard"),
        description="where data, run state, logs and the local MLflow store live",
    )
    host: Literal["127.0.0.1", "localhost", "::1"] = Field(
        default="127.0.0.1", description="local services bind to loopback only"
    )
    ray: RaySettings = Field(default_factory=RaySettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    k8s: KubernetesSettings = Field(default_factory=KubernetesSettings)
    workload: WorkloadSettings = Field(default_factory=WorkloadSettings)

    @model_validator(mode="after")
    def _expand(self) -> Settings:
        self.data_root = self.data_root.expanduser().resolve()
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Init values carry the YAML file; the environment overrides them.
        return (env_settings, init_settings)

    # Derived locations, so no module builds paths of its own.
    @property
    def run_dir(self) -> Path:
        return self.data_root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.data_root / "logs"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_root / "mlflow"

    @property
    def raw_data_dir(self) -> Path:
        return self.data_root / "raw" / "transactions"

    @property
    def tracking_uri(self) -> str:
        """The MLflow server: the configured one, else the local platform's."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        uri = self.mlflow.tracking_uri or f"http://{host}:{self.mlflow.port}"
        return uri.rstrip("/")

    @property
    def training_storage(self) -> str:
        return self.training.storage or str(self.data_root / "training")

    @property
    def serve_backend(self) -> str:
        if self.serve.backend != "auto":
            return self.serve.backend
        return "kubernetes" if self.profile == "cluster" else "local"

    @property
    def serve_url(self) -> str:
        if self.serve.url:
            return self.serve.url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.serve.http_port}"

    @property
    def serve_tracking_uri(self) -> str:
        """The MLflow server as seen from the cluster that runs Serve."""
        return (self.serve.tracking_uri or self.tracking_uri).rstrip("/")

    @property
    def inference_log_uri(self) -> str:
        return self.monitor.log_uri or str(self.data_root / "inference-log")

    @property
    def features_dir(self) -> Path:
        root = self.features.root
        return root.expanduser().resolve() if root else self.data_root / "features"


class _Defaults(Settings):
    """Settings from defaults and arguments only, ignoring SHIPYARD_* variables."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   **_: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:  # fmt: skip
        return (init_settings,)


def defaults(**values: Any) -> Settings:
    """Settings from the defaults and ``values`` alone, whatever the environment says:
    for artifacts that must not depend on who generates them (the chart's Serve config)."""
    return _Defaults(**values)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist",
            hint="pass an existing file with --config or SHIPYARD_CONFIG, or drop it",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of settings, got {type(data).__name__}"
        )
    return data


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(root)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting (check the spelling; see README 'Settings')")
            continue
        value = err.get("input")
        msg = err["msg"]
        lines.append(f"{key}={value!r}: {msg} (set by {source} or {_env_name(loc)})")
    return "; ".join(lines)


def load_settings(config: str | os.PathLike[str] | None = None) -> Settings:
    """Load settings: defaults < YAML file < ``SHIPYARD_*`` environment.

    ``config`` defaults to ``$SHIPYARD_CONFIG``; when neither is given no file is read.
    Inside a workload entrypoint that the CLI runs, ``$SHIPYARD_SETTINGS_JSON`` holds the
    CLI's settings, and they are returned as they are (unless ``config`` is given).
    """
    exported = os.environ.get(SETTINGS_ENV) if config is None else None
    if exported:
        try:
            return defaults(**json.loads(exported))
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"invalid settings in ${SETTINGS_ENV}: {exc}") from None
    path_text = config if config is not None else os.environ.get(f"{ENV_PREFIX}CONFIG")
    path = Path(path_text).expanduser() if path_text else None
    file_values = _read_yaml(path) if path else {}
    source = f"config file {path}" if path else "a config file"
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {_describe(exc, source)}") from None
