"""One real local platform per test session: `shipyard up` with 1 worker node.

Ports are picked free for the session and the data root is private, so a
developer's own platform keeps running undisturbed. Teardown runs `shipyard
down` and checks that none of the processes it started are left, even when
tests failed.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from tests.conftest import shipyard_cmd
from tests.features_support import bad_rows, edge_cases, write_raw


def _free_ports(count: int, avoid: range) -> list[int]:
    """``count`` distinct free ports outside ``avoid`` (the workers' range: the OS hands
    out ephemeral ports that can fall inside it, and Ray then refuses to start). The
    sockets stay bound until all are chosen, so no port is handed out twice."""
    socks: list[socket.socket] = []
    chosen: list[int] = []
    try:
        while len(chosen) < count:
            sock = socket.socket()
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in avoid:
                chosen.append(port)
    finally:
        for sock in socks:
            sock.close()
    return chosen


def _free_range(size: int) -> int:
    for _ in range(50):
        base = random.randrange(20000, 40000 - size)
        socks = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range for Ray workers")


@dataclass
class Platform:
    env: dict[str, str]
    root: Path
    dashboard: str
    mlflow: str

    @property
    def serve(self) -> str:
        return f"http://127.0.0.1:{self.env['SHIPYARD_SERVE__HTTP_PORT']}"

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run_env(self.env, *args, timeout=timeout)

    def run_env(
        self, env: dict[str, str], *args: str, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*shipyard_cmd(), *args], capture_output=True, text=True, env=env, timeout=timeout
        )


def _recorded_pids(root: Path) -> list[psutil.Process]:
    state = root / "run" / "platform.json"
    procs = []
    if state.exists():
        for comp in json.loads(state.read_text())["components"].values():
            try:
                proc = psutil.Process(comp["pid"])
                procs.append(proc)
                procs.extend(proc.children(recursive=True))
            except psutil.Error:
                pass
    return procs


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    # A short root: Ray's unix socket paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="sy-"))
    base = _free_range(120)
    head, dashboard, client, agent, tracking, http = _free_ports(6, range(base, base + 120))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "RAY_"))}
    env.update(
        SHIPYARD_DATA_ROOT=str(root),
        SHIPYARD_RAY__HEAD_PORT=str(head),
        SHIPYARD_RAY__DASHBOARD_PORT=str(dashboard),
        SHIPYARD_RAY__CLIENT_SERVER_PORT=str(client),
        SHIPYARD_RAY__DASHBOARD_AGENT_PORT=str(agent),
        SHIPYARD_RAY__MIN_WORKER_PORT=str(base),
        SHIPYARD_RAY__MAX_WORKER_PORT=str(base + 119),
        SHIPYARD_RAY__CPUS_PER_NODE="2",
        SHIPYARD_RAY__OBJECT_STORE_MEMORY_MB="300",
        SHIPYARD_MLFLOW__PORT=str(tracking),
        SHIPYARD_SERVE__HTTP_PORT=str(http),
        SHIPYARD_MONITOR__LOG_FLUSH_INTERVAL_S="1",  # the inference log current within ~1 s
    )
    started: list[psutil.Process] = []
    up = subprocess.run([*shipyard_cmd(), "up", "--workers", "1"], capture_output=True,
                        text=True, env=env, timeout=240)  # fmt: skip
    try:
        started = _recorded_pids(root)
        assert up.returncode == 0, f"shipyard up failed:\n{up.stdout}\n{up.stderr}"
        lines = dict(
            line.split(":", 1)
            for line in up.stdout.splitlines()
            if line.startswith(("Ray d", "ML"))
        )
        yield Platform(env, root, lines["Ray dashboard"].strip(), lines["MLflow UI"].strip())
    finally:
        down = subprocess.run([*shipyard_cmd(), "down"], capture_output=True, text=True,
                              env=env, timeout=180)  # fmt: skip
        _, alive = psutil.wait_procs(started, timeout=10)
        for proc in alive:  # the test fails below; still leave nothing behind
            proc.kill()
        assert down.returncode == 0, down.stderr
        assert not alive, f"shipyard down left processes behind: {alive}"
        assert not (root / "run" / "platform.json").exists()


@dataclass
class Built:
    good: pd.DataFrame  # every accepted raw row
    expected: dict[str, str]  # planted bad rows and their reasons
    raw_dir: Path
    features: Path
    output: str


@pytest.fixture(scope="session")
def built(platform: Platform) -> Built:
    """Generated data plus planted edge cases and bad rows, built into features by
    a Ray job through the CLI; shared by the feature and training tests."""
    gen = platform.run("data", "generate", "--rows", "20000", "--seed", "13", "--days", "45")
    assert gen.returncode == 0, gen.stderr
    raw_dir = platform.root / "raw" / "transactions"
    generated = pd.read_parquet(raw_dir).drop(columns=["date"])
    good = pd.concat([generated, edge_cases()], ignore_index=True)
    bad, expected = bad_rows(good)
    write_raw(pd.concat([edge_cases(), bad]), raw_dir / "planted" / "part-0.parquet")
    result = platform.run("features", "build", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return Built(good, expected, raw_dir, platform.root / "features", result.stdout)


TRAINED_MODEL = f"it-fraud-{uuid.uuid4().hex[:6]}"
TRAIN_EPOCHS = 2


def train(platform: Platform, tmp: Path, **config: object) -> tuple[dict, str]:
    """``shipyard train --json`` with a small config; the result document and the logs."""
    cfg = {"model_name": TRAINED_MODEL, "experiment": TRAINED_MODEL, "epochs": TRAIN_EPOCHS,
           "workers": 2, "batch_size": 256, "hidden": [32, 16],
           "gate": {"pr_auc_floor": 0.05}, **config}  # fmt: skip
    path = tmp / f"train-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = platform.run("train", "--config", str(path), "--json", timeout=900)
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-4000:]
    start = result.stdout.index("{\n")  # the JSON document printed last
    return json.loads(result.stdout[start:]), logs


@pytest.fixture(scope="session")
def trained(platform: Platform, built: Built, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One training job on the session's features, shared by the training and serving
    tests: the first registered version of ``TRAINED_MODEL``."""
    applied = platform.run("features", "apply")
    assert applied.returncode == 0, applied.stderr
    result, _ = train(platform, tmp_path_factory.mktemp("train"))
    return result
