"""Feature views, with explicit typed schemas.

Rows exist at every transaction time, so a lookup at a transaction's time finds
the row written for exactly that time; no TTL (0 = never expires) is needed for
correctness, and a TTL would hide the latest values of quiet customers from
materialization.
"""

from datetime import timedelta
from typing import Any

from feast import FeatureView, Field, FileSource, OnDemandFeatureView, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from pipelines.features.compute import CUSTOMER_FEATURES, MERCHANT_FEATURES
from pipelines.features.repo.entities import customer, merchant

_TYPES = {"int64": Int64, "float64": Float64}


def customer_features(source: FileSource) -> FeatureView:
    return FeatureView(
        name="customer_features",
        entities=[customer],
        ttl=timedelta(0),
        schema=[Field(name=n, dtype=_TYPES[t]) for n, t in CUSTOMER_FEATURES.items()],
        source=source,
        online=True,
        tags={"owner": "shipyard", "built_by": "pipelines.features.build"},
    )


def merchant_features(source: FileSource) -> FeatureView:
    return FeatureView(
        name="merchant_features",
        entities=[merchant],
        ttl=timedelta(0),
        schema=[Field(name=n, dtype=_TYPES[t]) for n, t in MERCHANT_FEATURES.items()],
        source=source,
        online=True,
        tags={"owner": "shipyard", "built_by": "pipelines.features.build"},
    )


def transaction_amount_features(inputs: dict[str, Any]) -> dict[str, Any]:
    """The transaction's amount relative to the customer's 7-day mean (1.0 with no
    history, or no positive mean), computed the same way offline and online.

    Python mode: Feast hands it columns as lists (offline: the training set's; online:
    the batch's), so serving runs it without pandas. Self-contained: Feast ships this
    function's source to wherever it runs.
    """
    ratios = []
    for amount, mean in zip(inputs["amount"], inputs["cust_amount_mean_7d"], strict=True):
        ok = amount is not None and mean is not None and mean > 0
        ratio = float(amount) / float(mean) if ok else 1.0
        ratios.append(ratio if ratio == ratio else 1.0)  # a NaN amount: 1.0 too
    return {"amount_to_cust_mean_7d": ratios}


def amount_view(customer_view: FeatureView, request: RequestSource) -> OnDemandFeatureView:
    return on_demand_feature_view(
        sources=[customer_view[["cust_amount_mean_7d"]], request],
        schema=[Field(name="amount_to_cust_mean_7d", dtype=Float64)],
        mode="python",
        description="request-time amount against the customer's recent spend",
    )(transaction_amount_features)
