"""The CLI as a user meets it: help everywhere, one-line errors, exit codes."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import click
import pytest
from shipyard.cli import cli

from tests.conftest import shipyard_cmd


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*shipyard_cmd(), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += all_commands(cmd, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def test_every_command_has_help() -> None:
    from click.testing import CliRunner

    runner = CliRunner()
    commands = all_commands(cli)
    assert ("job", "submit") in commands and ("data", "generate") in commands
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_errors_are_one_line_without_traceback_unless_debug(shipyard_env: dict[str, str]) -> None:
    env = dict(shipyard_env, SHIPYARD_PROFILE="staging")
    result = run("status", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: invalid settings: profile='staging'")
    assert len(result.stderr.strip().splitlines()) == 1
    debug = run("--debug", "status", env=env)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_port_in_use_is_one_clear_error(shipyard_env: dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = dict(shipyard_env, SHIPYARD_RAY__DASHBOARD_PORT=str(port))
        result = run("up", env=env)
    assert result.returncode == 1
    assert f"error: port {port} on 127.0.0.1 is already in use (setting ray.dashboard_port)" in (
        result.stderr
    )
    assert "SHIPYARD_RAY__DASHBOARD_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_refuses_the_cluster_profile(shipyard_env: dict[str, str]) -> None:
    result = run("up", env=dict(shipyard_env, SHIPYARD_PROFILE="cluster"))
    assert result.returncode == 1 and "Helm chart" in result.stderr


def test_unreachable_cluster_and_missing_working_dir(
    shipyard_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    result = run("job", "list", "--address", f"http://127.0.0.1:{dead}", env=shipyard_env)
    assert result.returncode == 1
    assert f"cannot reach the Ray Job API at http://127.0.0.1:{dead}" in result.stderr
    assert "shipyard up" in result.stderr
    result = run("job", "submit", "--working-dir", str(tmp_path / "missing"), "--", "echo", "hi",
                 env=shipyard_env)  # fmt: skip
    assert result.returncode == 1
    assert "working dir" in result.stderr and "does not exist" in result.stderr
    result = run("job", "submit", "--", env=shipyard_env)
    assert result.returncode == 1 and "no entrypoint given" in result.stderr


def test_status_exits_non_zero_when_down(shipyard_env: dict[str, str]) -> None:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        env = dict(shipyard_env, SHIPYARD_RAY__DASHBOARD_PORT=str(a.getsockname()[1]),
                   SHIPYARD_MLFLOW__PORT=str(b.getsockname()[1]))  # fmt: skip
        result = run("status", env=env)
    assert result.returncode == 1
    assert "ray" in result.stdout and "DOWN" in result.stdout


def test_down_with_nothing_running(shipyard_env: dict[str, str]) -> None:
    result = run("down", env=shipyard_env)
    assert result.returncode == 0 and "nothing was running" in result.stdout


def test_data_generate_cli(shipyard_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "tx"
    result = run("data", "generate", "--rows", "5000", "--seed", "3", "--out", str(out),
                 env=shipyard_env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote 5,000 transactions" in result.stdout
    assert "5,000/5,000 rows" in result.stderr  # progress
    again = run("data", "generate", "--rows", "5000", "--out", str(out), env=shipyard_env)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    bad = run("data", "generate", "--rows", "0", env=shipyard_env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args", [["job", "status"], ["data", "generate"], ["nosuch"]])
def test_usage_errors_exit_2(args: list[str], shipyard_env: dict[str, str]) -> None:
    result = run(*args, env=shipyard_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_feature_commands_refuse_bad_input_with_one_line(
    shipyard_env: dict[str, str], tmp_path: Path
) -> None:
    missing = run("features", "build", "--input", str(tmp_path / "nothing"), env=shipyard_env)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    half = run("features", "build", "--since", "2026-08-01", env=shipyard_env)
    assert half.returncode == 2 and "--since and --until go together" in half.stderr
    bad_time = run("features", "materialize", "--end", "yesterday", env=shipyard_env)
    assert bad_time.returncode == 2 and "is not an ISO date" in bad_time.stderr
    no_repo = run("features", "get", "--customer", "c_1", "--merchant", "m_1", env=shipyard_env)
    assert no_repo.returncode != 0 and "Traceback" not in no_repo.stderr


def test_serving_commands_refuse_bad_input_with_one_line(shipyard_env: dict[str, str]) -> None:
    env = dict(shipyard_env, SHIPYARD_RAY__DASHBOARD_PORT=str(_closed_port()))
    plan = run("canary", "start", "m", "--version", "2", "--steps", "50,10", env=env)
    assert plan.returncode == 2 and "steps must increase" in plan.stderr
    interval = run("canary", "start", "m", "--version", "2", "--interval", "soon", env=env)
    assert interval.returncode == 2 and "not a duration" in interval.stderr
    ref = run("deploy", "not a ref!", env=env)
    assert ref.returncode == 2 and "is not a model reference" in ref.stderr
    down = run("serve", "status", env=env)
    assert down.returncode == 5 and "cannot reach Serve's REST API" in down.stderr
    for result in (plan, interval, ref, down):
        assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_jobs_reason_names_the_error_not_a_traceback() -> None:
    """The last log line shown with a failed job is the error, never a traceback's
    scaffolding, even when the logs were read while the traceback was arriving."""
    from shipyard.jobs import _last_line, _mid_traceback, _reason

    logs = (
        "epoch 1 ...\n"
        "(RayTrainWorker pid=11626) Traceback (most recent call last):\n"
        '(RayTrainWorker pid=11626)   File "/x/loop.py", line 3, in train\n'
        "(RayTrainWorker pid=11626)     ^^^^^^^^\n"
        "(RayTrainWorker pid=11626) RuntimeError: injected fault on rank 1\n"
        "(RayTrainWorker pid=11626) Traceback (most recent call last):\n"
    )
    assert _last_line(logs) == "(RayTrainWorker pid=11626) RuntimeError: injected fault on rank 1"
    reason = _reason("Job failed. Last available logs (truncated to 20,000 chars):", logs)
    assert "Traceback" not in reason and reason.endswith("RuntimeError: injected fault on rank 1")
    assert _last_line("Traceback (most recent call last):\n") == ""
    assert _mid_traceback(logs)  # so the CLI waits a little for the error line
    assert not _mid_traceback(logs.rsplit("(RayTrainWorker pid=11626) Traceback", 1)[0])


def test_a_workload_of_ones_own_plugs_in_through_settings(
    shipyard_env: dict[str, str], tmp_path: Path
) -> None:
    """`data generate` and `features get` run the modules that workload.* names, with
    the arguments as given; prepare/report frame them, the RESULT line is the result."""
    (tmp_path / "my_flow.py").write_text(
        "import json, sys\n"
        "from shipyard.settings import load_settings\n"
        "def prepare(settings, argv):\n"
        "    return [*argv, '--root', str(settings.data_root)]\n"
        "def main(argv):\n"
        "    print('running', ' '.join(argv), load_settings().ray.workers)\n"
        "    print('RESULT ' + json.dumps({'argv': argv}))\n"
        "    return 3 if '--fail' in argv else 0\n"
        "def report(argv, result, echo):\n"
        "    echo(f\"reported {result['argv'][:2]}\")\n"
    )  # fmt: skip
    env = dict(shipyard_env, PYTHONPATH=str(tmp_path), SHIPYARD_WORKLOAD__GENERATE="my_flow",
               SHIPYARD_WORKLOAD__FEATURES_JOBS="my_flow", SHIPYARD_RAY__WORKERS="4")  # fmt: skip
    root = shipyard_env["SHIPYARD_DATA_ROOT"]
    ran = run("data", "generate", "--rows", "7", env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"running --rows 7 --root {root} 4\nreported ['--rows', '7']\n"
    got = run("features", "get", "--customer", "c", "--json", env=env)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("running get")
    result = json.loads(got.stdout.split("\n", 1)[1])
    assert result["argv"] == ["get", "--customer", "c", "--root", root]
    failed = run("data", "generate", "--fail", env=env)
    assert failed.returncode == 3 and "reported" not in failed.stdout
    missing = run("data", "generate", env=dict(env, SHIPYARD_WORKLOAD__GENERATE="no_such_flow"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: cannot import workload.generate='no_such_flow'")
