"""Settings: defaults < file < environment, and errors that name field, value, fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from shipyard.errors import ConfigError
from shipyard.settings import load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults(shipyard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPYARD_DATA_ROOT")
    s = load_settings()
    assert s.profile == "local"
    assert s.host == "127.0.0.1"
    assert s.ray.head_port == 6380  # not Redis's 6379
    assert s.ray.workers == 1
    assert s.data_root == Path("~/.shipyard").expanduser().resolve()
    assert s.ray.address is None and s.mlflow.tracking_uri is None


def test_file_overrides_defaults_and_env_overrides_file(
    shipyard_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(
        tmp_path / "shipyard.yaml",
        "profile: cluster\nray:\n  head_port: 7000\n  workers: 3\nmlflow:\n  port: 5999\n",
    )
    s = load_settings(cfg)
    assert (s.profile, s.ray.head_port, s.ray.workers, s.mlflow.port) == ("cluster", 7000, 3, 5999)

    monkeypatch.setenv("SHIPYARD_RAY__HEAD_PORT", "7100")
    monkeypatch.setenv("SHIPYARD_PROFILE", "local")
    s = load_settings(cfg)
    assert (s.profile, s.ray.head_port, s.ray.workers) == ("local", 7100, 3)  # workers from file


def test_config_path_from_environment(
    shipyard_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path / "s.yaml", "ray:\n  dashboard_port: 9265\n")
    monkeypatch.setenv("SHIPYARD_CONFIG", str(cfg))
    assert load_settings().ray.dashboard_port == 9265


def test_data_root_is_expanded_and_absolute(
    shipyard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_DATA_ROOT", "relative/dir")
    assert load_settings().data_root.is_absolute()


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("SHIPYARD_PROFILE", "prod", ["profile='prod'", "'local' or 'cluster'", "SHIPYARD_PROFILE"]),
        ("SHIPYARD_RAY__HEAD_PORT", "70000", ["ray.head_port='70000'", "less than or equal to 65535",
                                              "SHIPYARD_RAY__HEAD_PORT"]),
        ("SHIPYARD_RAY__WORKERS", "many", ["ray.workers='many'", "valid integer"]),
        ("SHIPYARD_HOST", "0.0.0.0", ["host='0.0.0.0'", "127.0.0.1"]),
    ],
)  # fmt: skip
def test_invalid_environment_value_names_field_value_and_allowed(
    shipyard_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    value: str,
    expected: list[str],
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    for text in expected:
        assert text in str(err.value)


def test_invalid_file_values(shipyard_env: dict[str, str], tmp_path: Path) -> None:
    cfg = write(tmp_path / "bad.yaml", "ray:\n  min_worker_port: 5000\n  max_worker_port: 4000\n")
    with pytest.raises(ConfigError, match="min_worker_port .5000. must not exceed"):
        load_settings(cfg)
    cfg = write(tmp_path / "typo.yaml", "ray:\n  head_prot: 1\n")
    with pytest.raises(ConfigError, match=r"ray\.head_prot: unknown setting"):
        load_settings(cfg)
    cfg = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(cfg)
    cfg = write(tmp_path / "broken.yaml", "ray: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(cfg)


def test_missing_config_file(shipyard_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_settings(tmp_path / "nope.yaml")
    assert "--config" in (err.value.hint or "")


def test_the_workload_defaults_to_the_fraud_pipelines_and_names_a_bad_path(
    shipyard_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = load_settings().workload
    assert w.features_build == "pipelines.features.build"
    assert w.feature_definitions == "pipelines.features.repo:definitions"
    assert w.worker_setup_hook == "pipelines.features._feast_fixes.install"
    monkeypatch.setenv("SHIPYARD_WORKLOAD__TRAIN", "my_team.train")
    assert load_settings().workload.train == "my_team.train"
    bad = write(tmp_path / "s.yaml", "workload:\n  feature_definitions: repo.definitions\n")
    with pytest.raises(ConfigError, match=r"workload\.feature_definitions='repo\.definitions'"):
        load_settings(bad)
    typo = write(tmp_path / "t.yaml", "workload:\n  trian: x\n")
    with pytest.raises(ConfigError, match=r"workload\.trian: unknown setting"):
        load_settings(typo)


def test_an_entrypoint_gets_the_clis_settings_as_they_are(
    shipyard_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.settings import SETTINGS_ENV

    config = write(tmp_path / "s.yaml", "ray:\n  workers: 3\nworkload:\n  demo: my.demo\n")
    cli = load_settings(config)
    monkeypatch.setenv(SETTINGS_ENV, cli.model_dump_json())
    monkeypatch.setenv("SHIPYARD_RAY__WORKERS", "5")  # the job's own environment: ignored
    job = load_settings()
    assert job.model_dump() == cli.model_dump() and job.ray.workers == 3
    assert load_settings(config).ray.workers == 5  # an explicit file still wins
