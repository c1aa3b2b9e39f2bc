"""The customer-spend model: how much a customer will spend over the next 7 days.

A regression on the same raw transactions as the fraud model, sharing nothing
model-specific with it: another flavor (a scikit-learn pipeline, logged with MLflow's
``sklearn`` flavor), another prediction (an amount, not a probability), another
entity (the customer only), other request fields (``customer_id`` and ``as_of``, the
time the forecast is for) and its own Feast feature service (``customer_spend_v1``).

Inputs (one row per forecast, see :func:`to_model_input`): the feature service's
features (as of the customer's latest transaction before ``as_of``) and ``as_of`` (an
ISO 8601 string, UTC: when the forecast starts), which gives the day of the week and
the hour. Served, the features are the online store's latest values, so ``as_of`` is
meant to be the time of the request: a past ``as_of`` would see features from after
it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipelines.features.repo import SPEND_SERVICE
from pipelines.features.repo.services import SPEND_FEATURES

__all__ = [
    "FEATURE_INPUTS",
    "HORIZON",
    "OUTPUT",
    "REQUEST_INPUTS",
    "calendar_features",
    "pipeline",
    "serving_contract",
    "to_model_input",
]

FEATURE_INPUTS: tuple[str, ...] = SPEND_FEATURES
REQUEST_INPUTS: tuple[str, ...] = ("as_of",)
OUTPUT = "spend_next_7d"
HORIZON = pd.Timedelta(days=7)


def serving_contract() -> dict[str, Any]:
    """How the platform serves the model (``shipyard.contract.register_model``): its
    feature service joined online by the customer, sticky per customer."""
    return {
        "feature_service": SPEND_SERVICE,
        "entity_keys": ["customer_id"],
        "online_inputs": list(FEATURE_INPUTS),
        "sticky_key": "customer_id",
        "id_field": "customer_id",
        "constraints": {
            "customer_id": {"max_length": 128, "pattern": r"[\w.:-]+"},
            "as_of": {"format": "date-time"},
        },
    }


def to_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's input contract: features as float64 (missing: NaN), ``as_of`` as
    an ISO 8601 UTC string, what a JSON client sends."""
    out = pd.DataFrame(index=frame.index)
    for column in FEATURE_INPUTS:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    ts = pd.to_datetime(frame["as_of"], utc=True, format="ISO8601")
    out["as_of"] = ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out.reset_index(drop=True)


def calendar_features(frame: pd.DataFrame) -> np.ndarray:
    """Day of week and hour of day of ISO 8601 times, as sin/cos pairs (module level,
    so the logged pipeline finds it through the model's code path)."""
    ts = pd.to_datetime(frame.iloc[:, 0], utc=True, format="ISO8601")
    hour = (ts.dt.hour + ts.dt.minute / 60.0).to_numpy(dtype=np.float64)
    day = ts.dt.dayofweek.to_numpy(dtype=np.float64) + hour / 24.0
    return np.stack([np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24),
                     np.sin(2 * np.pi * day / 7), np.cos(2 * np.pi * day / 7)], 1)  # fmt: skip


def pipeline(seed: int, *, max_iter: int = 200) -> Any:
    """Gradient-boosted trees with a Poisson loss (spend is a non-negative sum, heavy
    tailed); the trees take missing features (NaN) as they are."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipelines.spend import model

    columns = ColumnTransformer([
        ("features", "passthrough", list(FEATURE_INPUTS)),
        ("calendar", FunctionTransformer(model.calendar_features), ["as_of"]),
    ])  # fmt: skip
    # early stopping on a held-out tenth, at any size (sklearn's "auto" turns it on only
    # above 10,000 rows), so a small training set does not overfit 200 rounds
    trees = HistGradientBoostingRegressor(loss="poisson", max_iter=max_iter, learning_rate=0.08,
                                          max_leaf_nodes=31, early_stopping=True,
                                          validation_fraction=0.1, n_iter_no_change=10,
                                          random_state=seed)  # fmt: skip
    return Pipeline([("columns", columns), ("trees", trees)])
