"""The inference log's writer and reader: what is added is written once, whole, by day;
a sink that fails or a full buffer never fails the caller and is counted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shipyard.inference_log import META, InferenceLog, LogConfig, read_log, source_name

DAY = dt.datetime(2026, 12, 5, tzinfo=dt.UTC).timestamp()


def _batch(n: int, start: int = 0, at: float | None = None) -> dict:
    at = DAY + 3600 + start if at is None else at
    rows = [{"transaction_id": f"t{start + i}", "customer_id": f"c{i % 3}", "amount": 10.0 * i}
            for i in range(n)]  # fmt: skip
    columns = {
        "amount": np.array([r["amount"] for r in rows]),
        "txn_count_24h": np.array([float(i) for i in range(n)]),
    }
    answers: list[dict] = [{"fraud_probability": i / 10, "is_fraud": i % 2 == 0,
                            "model_version": "3", "features_missing": []} for i in range(n)]  # fmt: skip
    return {"version": "3", "rows": rows, "columns": columns, "answers": answers,
            "served_at": [at + i for i in range(n)], "latency_ms": [1.5] * n}  # fmt: skip


def _log(tmp_path: Path, replica: str = "r1", **config) -> InferenceLog:  # type: ignore[no-untyped-def]
    return InferenceLog(LogConfig(uri=str(tmp_path / "log"), **config), "fraud-detector",
                        "stable", replica)  # fmt: skip


def test_rows_are_written_once_with_fields_features_outputs_and_meta(tmp_path: Path) -> None:
    log = _log(tmp_path)
    first = _batch(4)
    first["answers"][1] = {"error": "the model refused the input: x", "model_version": "3",
                           "status": 422}  # fmt: skip
    log.add(**first)
    log.add(**_batch(3, start=4))
    assert log.flush() == 7
    assert log.flush() == 0  # nothing twice
    out = read_log(str(tmp_path / "log"), "fraud-detector")
    assert list(out.columns[: len(META)]) == list(META)
    assert list(out["transaction_id"]) == [f"t{i}" for i in range(7)]
    assert list(out["status"]) == [200, 422, 200, 200, 200, 200, 200]
    assert out["error"][1].startswith("the model refused") and out["error"].isna().sum() == 6
    assert out["fraud_probability"].isna().tolist() == [False, True, False, False, False, False, False]  # fmt: skip
    assert list(out["txn_count_24h"]) == [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0]  # the features used
    assert set(out["model"]) == {"fraud-detector"} and set(out["variant"]) == {"stable"}
    assert set(out["model_version"]) == {"3"} and out["log_id"].is_unique
    assert out["served_at"].iloc[0] == pd.Timestamp(DAY + 3600, unit="s", tz="UTC")
    assert log.stats.written == 7 and log.stats.buffered == 0 and log.stats.files == 1
    assert not list((tmp_path / "log").rglob(".*"))  # no temporary file left behind


def test_rows_land_in_the_partition_of_their_day_and_read_by_time(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.add(**_batch(4, at=DAY - 2))  # two rows on the 4th, two on the 5th
    log.flush()
    days = sorted(p.name for p in (tmp_path / "log" / "fraud-detector").iterdir())
    assert days == ["date=2026-12-04", "date=2026-12-05"]
    uri = str(tmp_path / "log")
    since = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    assert list(read_log(uri, "fraud-detector", start=since)["transaction_id"]) == ["t2", "t3"]
    assert list(read_log(uri, "fraud-detector", end=since)["transaction_id"]) == ["t0", "t1"]
    assert read_log(uri, "another-model").empty


def test_an_unwritable_sink_keeps_the_rows_counts_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log's folder should be")
    log = _log(tmp_path)
    log.add(**_batch(3))
    assert log.flush() == 0
    assert log.stats.write_errors == 1 and log.stats.buffered == 3 and log.stats.written == 0
    assert "Error" in (log.stats.last_error or "")
    log.add(**_batch(2, start=3))  # serving goes on
    blocker.unlink()  # the sink comes back: everything held is written, once
    assert log.flush() == 5
    out = read_log(str(tmp_path / "log"), "fraud-detector")
    assert list(out["transaction_id"]) == [f"t{i}" for i in range(5)]
    assert log.stats.dropped == 0


def test_a_full_buffer_drops_new_rows_and_counts_them(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("unwritable")
    log = _log(tmp_path, max_buffered_rows=5)
    log.add(**_batch(3))
    log.flush()
    log.add(**_batch(3, start=3))  # 6 > 5: dropped, counted
    log.add(**_batch(2, start=6))
    assert log.stats.dropped == 3 and log.stats.buffered == 5 and log.stats.logged == 5


def test_close_writes_what_is_held_and_a_restart_adds_no_duplicates(tmp_path: Path) -> None:
    log = _log(tmp_path, replica="a", flush_interval_s=3600)
    log.add(**_batch(3))
    log.close()  # a graceful shutdown: Serve calls the replica's __del__
    restarted = _log(tmp_path, replica="b", flush_interval_s=3600)
    restarted.add(**_batch(2, start=3))
    restarted.close()
    out = read_log(str(tmp_path / "log"), "fraud-detector")
    assert list(out["transaction_id"]) == [f"t{i}" for i in range(5)]
    assert out["log_id"].is_unique


def test_sampling_keeps_the_configured_share(tmp_path: Path) -> None:
    np.random.seed(7)
    log = _log(tmp_path, sample_rate=0.25)
    for k in range(40):
        log.add(**_batch(10, start=10 * k))
    log.flush()
    out = read_log(str(tmp_path / "log"), "fraud-detector")
    assert len(out) == log.stats.logged == log.stats.written
    assert 60 <= len(out) <= 140  # 400 x 0.25 = 100, binomial sd ~8.7
    assert out["transaction_id"].is_unique


def test_a_field_of_mixed_types_is_written_as_text(tmp_path: Path) -> None:
    log = _log(tmp_path)
    batch = _batch(2)
    batch["rows"][0]["merchant_id"], batch["rows"][1]["merchant_id"] = 7, "m-7"
    log.add(**batch)
    assert log.flush() == 2
    out = read_log(str(tmp_path / "log"), "fraud-detector")
    assert list(out["merchant_id"]) == ["7", "m-7"]


def test_the_config_is_validated_and_the_source_name_is_feasts() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        LogConfig(uri="/tmp/x", sample_rate=0)
    with pytest.raises(ValueError, match="extra"):
        LogConfig.model_validate({"uri": "/tmp/x", "rate": 1})
    assert source_name("fraud-detector") == "inference_log_fraud_detector"


def test_the_log_is_registered_as_a_feast_source_that_reads_it(tmp_path: Path) -> None:
    from shipyard import serving
    from shipyard.feast_repo import open_store, write_repo
    from shipyard.settings import defaults

    settings = defaults(data_root=tmp_path)
    log = InferenceLog(LogConfig(uri=settings.inference_log_uri), "fraud-detector", "stable", "r")
    log.add(**_batch(3))
    log.flush()
    name = serving.register_log_source(settings, "fraud-detector")
    store = open_store(write_repo(settings))
    source = store.get_data_source(name)
    assert source.path == f"{settings.inference_log_uri}/fraud-detector"
    assert source.timestamp_field == "served_at"
    columns = dict(source.get_table_column_names_and_types(store.config))
    assert {"transaction_id", "fraud_probability", "served_at", "model_version"} <= set(columns)
    assert serving.register_log_source(defaults(data_root=tmp_path,
                                                monitor={"inference_log": False}), "x") is None  # fmt: skip


def test_files_whose_columns_are_all_null_read_with_the_others(tmp_path: Path) -> None:
    """A flush in which every record failed has no typed outputs; the log still reads."""
    log = _log(tmp_path)
    failed = _batch(2)
    failed["answers"] = [{"error": "model version 3 failed: x", "model_version": "3",
                          "status": 500}] * 2  # fmt: skip
    log.add(**failed)
    log.flush()
    log.add(**_batch(2, start=2))
    log.flush()
    out = read_log(str(tmp_path / "log"), "fraud-detector")
    assert list(out["status"]) == [500, 500, 200, 200]
    assert out["fraud_probability"].isna().tolist() == [True, True, False, False]


def test_a_request_field_of_objects_is_text_and_any_old_mixed_files_still_read(
    tmp_path: Path,
) -> None:
    """A field the contract leaves open (an id) may come as an object: its JSON text, so
    every file types it alike; files written with two types of a column read as text."""
    log = _log(tmp_path)
    odd = _batch(1)
    odd["rows"][0]["transaction_id"] = {"": 5}
    log.add(**odd)
    log.flush()
    log.add(**_batch(1, start=1))
    log.flush()
    out = read_log(str(tmp_path / "log"), "fraud-detector")
    assert list(out["transaction_id"]) == ['{"": 5}', "t1"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "log" / "fraud-detector" / "date=2026-12-05"
    first = next(folder.glob("*000001.parquet"))
    table = pq.ParquetFile(first).read()  # the file alone, no partition column
    i = table.schema.get_field_index("transaction_id")
    pq.write_table(table.set_column(i, "transaction_id", pa.array([{"x": 5}])), first)
    since = dt.datetime(2026, 12, 5, 1, 0, 1, tzinfo=dt.UTC)
    mixed = read_log(str(tmp_path / "log"), "fraud-detector", start=since)
    assert list(mixed["transaction_id"]) == ["t1"]
    assert list(read_log(str(tmp_path / "log"), "fraud-detector")["transaction_id"]) == [
        '{"x": 5}',
        "t1",
    ]
