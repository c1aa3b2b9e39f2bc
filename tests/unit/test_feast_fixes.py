"""Our replacement for Feast's quadratic fallback join gives exactly what Feast's own
loop gives (the oracle here), fast, and is installed idempotently."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.features._feast_fixes import install, point_in_time_join


def _frames(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    base = pd.Timestamp("2026-08-01", tz="UTC")
    feats = pd.DataFrame({
        "customer_id": rng.choice([f"c{i}" for i in range(12)], 300),
        "event_timestamp": base + pd.to_timedelta(rng.integers(0, 40, 300), unit="s"),
        "count": rng.integers(0, 9, 300).astype("int64"),
        "mean": np.where(rng.random(300) < 0.2, np.nan, rng.random(300)),
    }).drop_duplicates(["customer_id", "event_timestamp"])  # fmt: skip
    batch = pd.DataFrame({
        "customer_id": rng.choice([f"c{i}" for i in range(15)], 120),  # some unknown keys
        "event_timestamp": base + pd.to_timedelta(rng.integers(-5, 45, 120), unit="s"),
        "amount": rng.random(120),
    }, index=rng.permutation(np.arange(1000, 1120)))  # fmt: skip
    return batch, feats


def test_join_equals_feasts_own_loop_including_ties_misses_and_nans() -> None:
    from feast.infra.offline_stores.contrib.ray_offline_store.ray import RayDataProcessor

    install()
    install()  # idempotent
    assert RayDataProcessor._shipyard_patched
    feasts_loop = RayDataProcessor._shipyard_original_join  # the oracle: Feast's own code
    for seed in range(3):
        batch, feats = _frames(seed)
        args = (["customer_id"], ["customer_id"], "event_timestamp", ["count", "mean"])
        ours = point_in_time_join(batch, feats, *args)
        theirs = feasts_loop(None, batch, feats, *args)
        assert list(ours.index) == list(batch.index)
        columns = ["customer_id", "amount", "count", "mean"]
        pd.testing.assert_frame_equal(ours[columns].astype({"count": "float64"}),
                                      theirs[columns].astype({"count": "float64"}))  # fmt: skip
        assert ours["count"].notna().sum() > 50 and ours["count"].isna().sum() > 5


def test_worker_hook_imports_nothing_and_patches_feast_when_it_loads() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pipelines.features._feast_fixes import install\n"
        "install()\n"
        "assert 'feast' not in sys.modules and 'pandas' not in sys.modules\n"
        "from feast.infra.offline_stores.contrib.ray_offline_store.ray import RayDataProcessor\n"
        "assert RayDataProcessor._shipyard_patched\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_started_processes_do_not_inherit_feasts_temporary_metrics_folder() -> None:
    """Importing Feast points PROMETHEUS_MULTIPROC_DIR at a folder it deletes when this
    process exits; a Ray cluster started from here must not inherit it, or every replica
    started after that exit fails importing Feast."""
    import os

    import feast.metrics
    from shipyard.local import _child_env

    owned = feast.metrics._prometheus_mp_dir
    if not feast.metrics._owns_mp_dir:  # the folder came from outside: kept, as given
        assert _child_env().get("PROMETHEUS_MULTIPROC_DIR") == os.environ.get(
            "PROMETHEUS_MULTIPROC_DIR"
        )
        return
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == owned
    env = _child_env()
    assert owned not in (
        env.get("PROMETHEUS_MULTIPROC_DIR"),
        env.get("PROMETHEUS_MULTIPROCESS_DIR"),
    )
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
