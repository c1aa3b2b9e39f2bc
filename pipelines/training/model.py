"""The fraud model: preprocessing, the MLP, and the MLflow pyfunc that carries both.

A model artifact describes itself: the fitted :class:`Preprocessor` (imputation
values, scales, category vocabularies) travels inside the pyfunc next to the
network's weights, so ``mlflow.pyfunc.load_model("models:/fraud-detector@champion")``
turns a frame of raw inputs into fraud probabilities with nothing else.

Inputs (one row per transaction, see :func:`to_model_input`): the feature
service's features, plus the request-time fields ``amount``, ``timestamp`` (an ISO
8601 string, UTC), ``category`` and ``country``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = [
    "CATEGORICAL",
    "FEATURE_INPUTS",
    "REQUEST_INPUTS",
    "FraudMLP",
    "FraudPyfunc",
    "Preprocessor",
    "input_columns",
    "serving_contract",
    "to_model_input",
]

#: Features from the feature service ``fraud_model_v1``, in model order.
FEATURE_INPUTS: tuple[str, ...] = (
    "cust_tx_count_1h", "cust_tx_count_24h", "cust_tx_count_7d",
    "cust_amount_sum_1h", "cust_amount_sum_24h", "cust_amount_sum_7d",
    "cust_amount_mean_1h", "cust_amount_mean_24h", "cust_amount_mean_7d",
    "cust_distinct_merchants_24h", "cust_secs_since_prev_tx",
    "merch_labeled_count_30d", "merch_fraud_count_30d", "merch_fraud_rate_30d",
    "amount_to_cust_mean_7d",
)  # fmt: skip
#: Supplied by the caller at request time.
REQUEST_INPUTS: tuple[str, ...] = ("amount", "timestamp", "category", "country")
CATEGORICAL: tuple[str, ...] = ("category", "country")
# Heavy-tailed, non-negative: compressed with log1p before scaling.
_LOG = frozenset(
    {c for c in FEATURE_INPUTS if "count" in c or "sum" in c or "mean" in c or "secs" in c}
    | {"amount_to_cust_mean_7d", "amount", "cust_distinct_merchants_24h"}
)


def input_columns() -> list[str]:
    return [*FEATURE_INPUTS, *REQUEST_INPUTS]


def serving_contract() -> dict[str, Any]:
    """How the platform serves a model on these inputs, registered with each version
    (``shipyard.contract.register_model``): the feature service joined online by the
    customer and merchant, the request fields and their domain, sticky per customer,
    and where the true outcomes arrive (for the live-quality monitor)."""
    from pipelines.features.repo import FEATURE_SERVICE
    from pipelines.features.validate import CATEGORIES, MAX_AMOUNT

    key = {"max_length": 128, "pattern": r"[\w.:-]+"}
    return {
        "feature_service": FEATURE_SERVICE,
        "entity_keys": ["customer_id", "merchant_id"],
        "online_inputs": list(FEATURE_INPUTS),
        "sticky_key": "customer_id",
        "id_field": "transaction_id",
        "constraints": {
            "customer_id": key,
            "merchant_id": key,
            "amount": {"min": 0, "max": MAX_AMOUNT},
            "category": {"one_of": sorted(CATEGORIES)},
            "country": {"pattern": "[A-Z]{2}"},
            "timestamp": {"format": "date-time"},
        },
        # the chargebacks: the raw transactions, each labelled days after it happened
        "labels": {
            "source": "raw/transactions",
            "key": "transaction_id",
            "label": "is_fraud",
            "available_at": "label_available_at",
            "score": "fraud_probability",
            # chargebacks: most within 30 days of the transaction (pipelines.data.generate)
            "event_time": "timestamp",
            "maturity_days": 30,
        },
    }


def to_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's input contract from any frame holding the inputs: numbers as
    float64 (a missing feature is NaN), ``timestamp`` as an ISO 8601 UTC string
    (what a JSON client sends; MLflow's datetime type refuses time zones),
    ``category`` and ``country`` as strings."""
    out = pd.DataFrame(index=frame.index)
    for column in [*FEATURE_INPUTS, "amount"]:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    out["timestamp"] = ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for column in CATEGORICAL:
        out[column] = frame[column].astype(str)
    return out.reset_index(drop=True)


@dataclass
class Preprocessor:
    """Turns raw inputs into the network's float matrix; fitted on the training split.

    Numeric columns: missing values (a first transaction has no previous one)
    become the training median plus a missing-indicator column; heavy-tailed ones
    are log1p-compressed; all are standardised. The hour of day enters as sin/cos.
    Categorical columns are one-hot over the vocabulary seen in training (an
    unseen value is all zeros).
    """

    numeric: list[str] = field(default_factory=list)
    fill: list[float] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    indicators: list[str] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> Preprocessor:
        numeric = [*FEATURE_INPUTS, "amount"]
        raw = _numeric({c: frame[c].to_numpy() for c in numeric}, numeric)
        fill = np.nanmedian(np.where(np.isnan(raw).all(axis=0), 0.0, raw), axis=0)
        fill = np.nan_to_num(fill)
        indicators = [c for c, col in zip(numeric, raw.T, strict=True) if np.isnan(col).any()]
        shaped = _shape(np.where(np.isnan(raw), fill, raw), _log_mask(numeric))
        std = shaped.std(axis=0)
        vocab = {
            c: sorted(frame[c].astype("string").dropna().unique().tolist()) for c in CATEGORICAL
        }
        return cls(numeric, fill.tolist(), shaped.mean(axis=0).tolist(),
                   np.where(std > 1e-9, std, 1.0).tolist(), indicators, vocab)  # fmt: skip

    @property
    def width(self) -> int:
        return len(self.numeric) + len(self.indicators) + 2 + sum(map(len, self.vocab.values()))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The network's input, in numpy on the columns' arrays: no per-column pandas
        conversions, so one row costs microseconds, not milliseconds (it runs on every
        request; ``benchmarks/contract_bench.py`` measures it against the forward)."""
        missing = [c for c in [*self.numeric, "timestamp", *self.vocab] if c not in frame.columns]
        if missing:
            raise ValueError(f"model inputs lack column(s): {', '.join(missing)}")
        arrays = {name: column.to_numpy() for name, column in frame.items()}  # one pass
        raw = _numeric(arrays, self.numeric)
        gaps = np.isnan(raw)
        filled = np.where(gaps, self._fill, raw)
        scaled = (_shape(filled, self._log) - self._mean) / self._std
        parts = [scaled]
        if self.indicators:
            parts.append(gaps[:, self._indicator_index].astype(np.float64))
        hour = _hours(arrays["timestamp"])
        parts.append(np.stack([np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)], 1))
        for column, index in self._codes.items():
            parts.append(_one_hot(arrays[column], index))  # unseen: all zeros
        return np.concatenate(parts, axis=1).astype(np.float32)

    # derived once per loaded model (cached_property: not fields, so not in to_dict)
    @cached_property
    def _fill(self) -> np.ndarray:
        return np.asarray(self.fill, dtype=np.float64)

    @cached_property
    def _mean(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float64)

    @cached_property
    def _std(self) -> np.ndarray:
        return np.asarray(self.std, dtype=np.float64)

    @cached_property
    def _log(self) -> np.ndarray:
        return _log_mask(self.numeric)

    @cached_property
    def _indicator_index(self) -> list[int]:
        return [self.numeric.index(c) for c in self.indicators]

    @cached_property
    def _codes(self) -> dict[str, dict[str, int]]:
        return {c: {v: i for i, v in enumerate(values)} for c, values in self.vocab.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        return cls(**data)


def _numeric(arrays: dict[str, np.ndarray], columns: list[str]) -> np.ndarray:
    """The columns (from a frame's arrays by name) as one float64 matrix; a column that
    is not numeric already (strings, objects) goes through ``pd.to_numeric``
    (unparseable: NaN)."""
    rows = len(arrays[columns[0]]) if columns else 0
    out = np.empty((rows, len(columns)), dtype=np.float64)
    for i, column in enumerate(columns):
        values = arrays[column]
        if values.dtype.kind in "fiub":
            out[:, i] = values
        else:
            out[:, i] = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    return out


def _shape(values: np.ndarray, log: np.ndarray) -> np.ndarray:
    """``values`` with the heavy-tailed columns (``log``, a mask) log1p-compressed."""
    out = values.copy()
    out[:, log] = np.log1p(np.clip(out[:, log], 0.0, None))
    return out


def _log_mask(columns: list[str]) -> np.ndarray:
    return np.array([c in _LOG for c in columns], dtype=bool)


def _hours(values: np.ndarray) -> np.ndarray:
    """The hour of day (with minutes as a fraction) of each timestamp. The strings the
    model is served (``to_model_input``'s and the router's ``...THH:MM:SS.ffffffZ``, UTC)
    are read by position; anything else (another offset, datetimes) through pandas."""
    if all(isinstance(v, str) and len(v) >= 17 and v[10] == "T" and v[-1] == "Z" and v[13] == ":"
           for v in values):  # fmt: skip
        try:
            return np.array([int(v[11:13]) + int(v[14:16]) / 60.0 for v in values], np.float64)
        except ValueError:
            pass  # not digits where the hour and minute go: let pandas say what it is
    ts = pd.to_datetime(pd.Series(values), utc=True, format="ISO8601")
    return (ts.dt.hour + ts.dt.minute / 60.0).to_numpy(dtype=np.float64)


def _one_hot(values: np.ndarray, index: dict[str, int]) -> np.ndarray:
    out = np.zeros((len(values), len(index)), dtype=np.float64)
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and value != value):
            continue  # missing: all zeros
        code = index.get(value if isinstance(value, str) else str(value), -1)
        if code >= 0:
            out[row, code] = 1.0
    return out


class FraudMLP(nn.Module):
    """A plain MLP giving one logit per row."""

    def __init__(self, width: int, hidden: list[int], dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = width
        for size in hidden:
            layers += [nn.Linear(last, size), nn.ReLU(), nn.Dropout(dropout)]
            last = size
        layers.append(nn.Linear(last, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


_OUTPUT = pd.Index(["fraud_probability"])


class FraudPyfunc(mlflow.pyfunc.PythonModel):
    """The logged model: preprocessing + weights; ``predict`` gives probabilities."""

    def __init__(self, preprocessor: dict[str, Any], arch: dict[str, Any], state: dict) -> None:
        self.preprocessor = preprocessor
        self.arch = arch
        self.state = {k: v.detach().cpu().numpy() for k, v in state.items()}
        self._net: FraudMLP | None = None
        self._prep: Preprocessor | None = None

    def _load(self) -> tuple[Preprocessor, FraudMLP]:
        if self._net is None or self._prep is None:
            self._prep = Preprocessor.from_dict(self.preprocessor)
            net = FraudMLP(**self.arch)
            net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.state.items()})
            self._net = net.eval()
        return self._prep, self._net

    def load_context(self, context: Any) -> None:
        self._load()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_net", "_prep")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._net, self._prep = None, None

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        prep, net = self._load()
        with torch.no_grad():
            logits = net(torch.from_numpy(prep.transform(frame)))
        return torch.sigmoid(logits).numpy().astype(np.float64)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        # from the 2-D array and a built Index: ~20 us a call, a dict of columns ~110 us
        return pd.DataFrame(self.predict_proba(model_input)[:, None], columns=_OUTPUT, copy=False)
