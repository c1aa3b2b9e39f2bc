"""Batch inference's table handling: the signature's columns typed as the online
predictor types them, each row's time found or asked for, inputs read or refused with
a message naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shipyard.batch import _columns, _time_column, model_columns, read_table
from shipyard.contract import Column, ServingContract
from shipyard.errors import DataError

from services.predictor.app import model_frame

CONTRACT = ServingContract(
    model="m", version="1",
    inputs=[Column("amount", "double"), Column("count", "long"), Column("category", "string"),
            Column("timestamp", "datetime"), Column("flag", "boolean")],
    outputs=[Column("score", "double")],
)  # fmt: skip


def test_model_columns_equal_the_online_predictors_frame() -> None:
    rows = [{"amount": 1.5, "count": 3, "category": "grocery", "timestamp": "2026-12-01T10:00:00Z",
             "flag": True},
            {"amount": None, "count": 4, "category": "fuel", "timestamp": "2026-12-01T11:00:00Z",
             "flag": False}]  # fmt: skip
    batch = model_columns(CONTRACT, pd.DataFrame(rows))
    online = model_frame(CONTRACT, rows, None)
    assert list(batch.columns) == list(online.columns)
    for col in ("amount", "count", "category"):
        np.testing.assert_array_equal(batch[col].to_numpy(), online[col].to_numpy())
        assert batch[col].dtype == online[col].dtype, col
    assert (batch["timestamp"] == online["timestamp"]).all()


def test_an_integer_column_with_gaps_is_float_as_online() -> None:
    batch = model_columns(CONTRACT, pd.DataFrame({"count": [1, None]}))
    assert batch["count"].dtype == np.float64 and np.isnan(batch["count"][1])


def test_the_rows_time_is_the_only_datetime_input_or_must_be_named() -> None:
    assert _time_column(CONTRACT, pd.DataFrame({"timestamp": []}), None) == "timestamp"
    with pytest.raises(DataError, match="not a column"):
        _time_column(CONTRACT, pd.DataFrame({"timestamp": []}), "as_of")
    two = ServingContract("m", "1", [Column("a", "datetime"), Column("b", "datetime")], [])
    with pytest.raises(DataError, match="several time inputs") as err:
        _time_column(two, pd.DataFrame(), None)
    assert "--timestamp-column" in (err.value.hint or "")
    text = ServingContract("m", "1", [Column("as_of", "string"), Column("x", "double")], [],
                           constraints={"as_of": {"format": "date-time"}})  # fmt: skip
    assert _time_column(text, pd.DataFrame({"as_of": []}), None) == "as_of"


def test_inputs_are_read_or_refused_naming_the_file(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert _columns(str(tmp_path / "t.parquet")) == _columns(str(tmp_path / "t.csv")) == ["a", "b"]
    assert read_table(str(tmp_path / "t.csv")).equals(frame)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="junk.parquet"):
        _columns(str(tmp_path / "junk.parquet"))
