"""Live quality from late labels (``shipyard.quality``): the inference log's answers
joined with the labels known by a clock, per version and variant, equal to an
independent computation on the same rows; the gate's floor as an alert."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shipyard.contract import LabelSpec
from shipyard.errors import ConfigError, DataError
from shipyard.inference_log import InferenceLog, LogConfig, read_log
from shipyard.monitor import summarize, window
from shipyard.quality import assess, join_labels, read_labels, resolve_source
from shipyard.settings import defaults

END = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
SPEC = LabelSpec(source="labels", key="transaction_id", label="is_fraud",
                 available_at="label_available_at", score="fraud_probability")  # fmt: skip


def _serve(log: InferenceLog, version: str, ids: list[str], scores: np.ndarray, errors: int = 0) -> None:  # fmt: skip
    rows = [{"transaction_id": t, "customer_id": "c1"} for t in ids]
    answers: list[dict] = [{"fraud_probability": float(s), "model_version": version,
                            "features_missing": []} for s in scores]  # fmt: skip
    for i in range(errors):
        answers[i] = {"error": "boom", "model_version": version, "status": 500}
    at = (END - dt.timedelta(hours=1)).timestamp()
    log.add(version, rows, {}, answers, [at] * len(ids), [1.0] * len(ids))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two versions (v1 stable, v2 split stable/canary) serving 3,000 transactions; their
    labels land over 20 days, a tenth never, and a few are corrected later."""
    tmp = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(3)
    n = 3000
    ids = [f"tx_{i:06d}" for i in range(n)]
    y = rng.random(n) < 0.1
    scores = np.clip(np.where(y, rng.beta(4, 3, n), rng.beta(2, 6, n)), 0, 1)
    uri = str(tmp / "log")
    logs = {("1", "stable"): InferenceLog(LogConfig(uri=uri), "m", "stable", "a"),
            ("2", "stable"): InferenceLog(LogConfig(uri=uri), "m", "stable", "b"),
            ("2", "canary"): InferenceLog(LogConfig(uri=uri), "m", "canary", "c")}  # fmt: skip
    for i, (key, log) in enumerate(logs.items()):
        part = slice(i * 1000, (i + 1) * 1000)
        _serve(log, key[0], ids[part], scores[part], errors=5 if i == 0 else 0)
        log.flush()
    arrives = pd.Timestamp("2026-11-20", tz="UTC") + pd.to_timedelta(rng.uniform(0, 20, n), "D")
    labels = pd.DataFrame({"transaction_id": ids, "is_fraud": y, "label_available_at": arrives,
                           "amount": rng.random(n)})  # fmt: skip
    labels = labels[rng.random(n) > 0.1]  # a tenth never labelled
    fixed = labels.sample(50, random_state=1).assign(  # corrected a day later
        is_fraud=lambda f: ~f["is_fraud"], label_available_at=lambda f: f["label_available_at"]
        + pd.Timedelta(days=1))  # fmt: skip
    folder = tmp / "labels"
    folder.mkdir()
    labels.to_parquet(folder / "part-0.parquet", index=False)
    fixed.to_parquet(folder / "part-1.parquet", index=False)
    (folder / "_manifest.json").write_text("{}")  # not data: ignored
    start, end = window(END, 24)
    return {"rows": read_log(uri, "m", start, end), "labels": pd.concat([labels, fixed]),
            "folder": folder, "start": start, "end": end}  # fmt: skip


def _independent(rows: pd.DataFrame, labels: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The labelled answers, joined by hand: the last label known by ``as_of``."""
    known = labels[labels["label_available_at"] <= as_of]
    last = known.sort_values("label_available_at").groupby("transaction_id").tail(1)
    ok = rows[rows["status"] == 200]
    return ok.merge(last[["transaction_id", "is_fraud"]], on="transaction_id", how="inner")


def _ap(y: np.ndarray, p: np.ndarray) -> float:
    order = np.argsort(-p)
    hits = y[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(y) + 1)
    return float((precision * hits).sum() / hits.sum())


def _roc(y: np.ndarray, p: np.ndarray) -> float:
    ranks = pd.Series(p).rank().to_numpy()
    pos = y.astype(bool)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def _ece(y: np.ndarray, p: np.ndarray) -> float:
    frame = pd.DataFrame({"y": y, "p": p, "bin": np.minimum(np.floor(p * 10), 9)})
    g = frame.groupby("bin")
    return float((g.size() * (g["p"].mean() - g["y"].mean()).abs()).sum() / len(frame))


@pytest.mark.parametrize("as_of", ["2026-11-27T00:00:00Z", "2026-12-20T00:00:00Z"])
def test_live_metrics_equal_an_independent_computation(world: dict, as_of: str) -> None:
    clock = pd.Timestamp(as_of)
    rows, labels = world["rows"], world["labels"]
    for version in ("1", "2"):
        part = rows[rows["model_version"] == version]
        got = {q.variant: q for q in assess(part, read_labels(str(world["folder"]), SPEC,
               part["transaction_id"]), SPEC, clock.to_pydatetime(), version=version)}  # fmt: skip
        assert set(got) == set(part["variant"])
        for variant, q in got.items():
            mine = part[part["variant"] == variant]
            expected = _independent(mine, labels, clock)
            y, p = expected["is_fraud"].to_numpy(), expected["fraud_probability"].to_numpy()
            assert q.answered == (mine["status"] == 200).sum()
            assert q.labelled == len(expected) and 0 < q.coverage < 1
            assert q.metrics["pr_auc"] == pytest.approx(_ap(y, p), abs=1e-9)
            assert q.metrics["roc_auc"] == pytest.approx(_roc(y, p), abs=1e-9)
            assert q.metrics["brier"] == pytest.approx(float(((p - y) ** 2).mean()), abs=1e-12)
            assert q.metrics["ece"] == pytest.approx(_ece(y, p), abs=1e-12)
            assert q.metrics["positive_rate"] == pytest.approx(y.mean())
            # the day-by-day series ends at the clock, and coverage only grows
            assert q.daily[-1]["labelled"] == q.labelled and q.daily[-1]["as_of"] == q.as_of
            assert q.daily[-1]["pr_auc"] == q.metrics["pr_auc"]
            coverage = [d["coverage"] for d in q.daily]
            assert coverage == sorted(coverage) and coverage[0] < coverage[-1]
            first = pd.Timestamp(q.daily[0]["as_of"])
            assert q.daily[0]["labelled"] == len(_independent(mine, labels, first))


def test_the_gate_floor_alerts_only_on_enough_labelled_answers(world: dict) -> None:
    rows = world["rows"][world["rows"]["model_version"] == "2"]
    labels = read_labels(str(world["folder"]), SPEC, rows["transaction_id"])
    late = END + dt.timedelta(days=30)
    high = assess(rows, labels, SPEC, late, version="2", gate=("PR AUC", 0.99))
    assert all(q.conclusive and q.below_floor for q in high)
    assert "live PR AUC" in high[0].alerts[0] and "floor 0.9900" in high[0].alerts[0]
    low = assess(rows, labels, SPEC, late, version="2", gate=("PR AUC", 0.05))
    assert not any(q.alerts for q in low)
    early = assess(rows, labels, SPEC, dt.datetime(2026, 11, 21, tzinfo=dt.UTC), version="2",
                   gate=("PR AUC", 0.99))  # fmt: skip
    assert all(not q.conclusive and not q.alerts and "no verdict" in q.note for q in early)
    odd = assess(rows, labels, SPEC, late, version="2", gate=("F1", 0.5))
    assert not odd[0].alerts and "not one computed live" in odd[0].note
    assert json.dumps([q.to_dict() for q in high])  # the report is JSON


def test_the_check_carries_quality_alerts_into_its_own(world: dict) -> None:
    rows = world["rows"]
    start, end = world["start"], world["end"]
    result = summarize("m", rows, start, end, lambda v: None, defaults())
    labels = read_labels(str(world["folder"]), SPEC, rows["transaction_id"])
    late = END + dt.timedelta(days=30)
    for v in result.versions:
        part = rows[rows["model_version"] == v.version]
        v.quality = assess(part, labels, SPEC, late, version=v.version, gate=("ROC AUC", 0.999))
    assert len(result.alerts) == 3 and all("live ROC AUC" in a for a in result.alerts)
    doc = json.loads(json.dumps(result.to_dict(), default=str))
    assert doc["versions"][1]["quality"][0]["variant"] == "canary"
    assert doc["alerts"] == result.alerts


def test_a_corrected_label_replaces_the_first_once_known(world: dict) -> None:
    labels = world["labels"]
    key = labels[labels.duplicated("transaction_id", keep=False)]["transaction_id"].iloc[0]
    first, second = (
        labels[labels["transaction_id"] == key].sort_values("label_available_at").itertuples()
    )
    rows = pd.DataFrame({"transaction_id": [key], "status": [200]})
    read = read_labels(str(world["folder"]), SPEC, [key])
    before = join_labels(rows, read, SPEC, first.label_available_at)
    after = join_labels(rows, read, SPEC, second.label_available_at)
    assert before["label"].iloc[0] == first.is_fraud and after["label"].iloc[0] == second.is_fraud
    never = join_labels(rows, read, SPEC, first.label_available_at - pd.Timedelta(seconds=1))
    assert never["label"].isna().all()


def test_regression_quality_and_labels_without_a_clock(tmp_path: Path) -> None:
    spec = LabelSpec(source="s", key="customer_id", label="spend", score="forecast",
                     task="regression")  # fmt: skip
    rng = np.random.default_rng(0)
    y = rng.gamma(2, 50, 400)
    p = y + rng.normal(0, 10, 400)
    pd.DataFrame({"customer_id": np.arange(400), "spend": y}).to_parquet(tmp_path / "l.parquet")
    rows = pd.DataFrame({"customer_id": [str(i) for i in range(400)], "forecast": p,
                         "status": 200, "variant": "stable"})  # fmt: skip
    labels = read_labels(str(tmp_path / "l.parquet"), spec, rows["customer_id"])  # int keys
    (q,) = assess(rows, labels, spec, END, version="4", gate=("R2", 0.5))
    ss = ((y - y.mean()) ** 2).sum()
    assert q.labelled == 400 and q.conclusive and not q.alerts
    assert q.metrics["r2"] == pytest.approx(1 - ((y - p) ** 2).sum() / ss)
    assert q.metrics["mae"] == pytest.approx(np.abs(y - p).mean())


def test_unreadable_or_wrong_labels_are_one_clear_error(tmp_path: Path, world: dict) -> None:
    with pytest.raises(ConfigError, match="cannot read labels"):
        read_labels(str(tmp_path / "none"), SPEC, ["a"])
    with pytest.raises(ConfigError, match="lack the column"):
        read_labels(str(world["folder"]), SPEC.model_copy(update={"label": "fraud"}), ["a"])
    odd = LabelSpec(source="s", key="transaction_id", label="amount", score="fraud_probability")
    rows = world["rows"]
    with pytest.raises(DataError, match="must be 0/1"):
        assess(rows, read_labels(str(world["folder"]), odd, rows["transaction_id"]), odd, END,
               version="1")  # fmt: skip
    assert resolve_source(SPEC, "m", Path("/data")) == "/data/labels"
    assert resolve_source(SPEC, "m", Path("/data"), {"m": "s3://b/l"}) == "s3://b/l"


def test_young_answers_are_provisional_and_cannot_alert(world: dict) -> None:
    """Frauds' labels come last: before an answer's event is maturity_days old its
    quality is shown, not judged; once mature, the same floor alerts."""
    rows = world["rows"][world["rows"]["model_version"] == "2"].copy()
    rows["timestamp"] = "2026-11-20T00:00:00Z"  # the events, as the requests carried them
    spec = SPEC.model_copy(update={"event_time": "timestamp", "maturity_days": 30})
    labels = read_labels(str(world["folder"]), spec, rows["transaction_id"])
    young = assess(rows, labels, spec, dt.datetime(2026, 12, 15, tzinfo=dt.UTC), version="2",
                   gate=("PR AUC", 0.99))  # fmt: skip
    assert all(q.labelled > 200 and q.mature == 0 and not q.alerts for q in young)
    assert all("younger than 30 days" in q.note and q.metrics["pr_auc"] for q in young)
    ripe = assess(rows, labels, spec, dt.datetime(2026, 12, 21, tzinfo=dt.UTC), version="2",
                  gate=("PR AUC", 0.99))  # fmt: skip
    assert all(q.mature == q.labelled and q.alerts for q in ripe)
    assert ripe[0].verdict["pr_auc"] == pytest.approx(ripe[0].metrics["pr_auc"])
