"""Feature services: one per model version, so a model's inputs never drift."""

from feast import FeatureService, FeatureView, OnDemandFeatureView

#: What the customer-spend model reads from ``customer_features``: the customer's
#: recent activity, no merchant and no request-time feature.
SPEND_FEATURES = (
    "cust_tx_count_24h", "cust_tx_count_7d", "cust_amount_sum_24h", "cust_amount_sum_7d",
    "cust_amount_mean_7d", "cust_distinct_merchants_24h", "cust_secs_since_prev_tx",
)  # fmt: skip


def fraud_model_v1(
    customer_view: FeatureView, merchant_view: FeatureView, amount_view: OnDemandFeatureView
) -> FeatureService:
    return FeatureService(
        name="fraud_model_v1",
        features=[customer_view, merchant_view, amount_view],
        description="inputs of the fraud model, version 1",
        tags={"model": "fraud", "version": "1"},
    )


def customer_spend_v1(customer_view: FeatureView) -> FeatureService:
    return FeatureService(
        name="customer_spend_v1",
        features=[customer_view[list(SPEND_FEATURES)]],
        description="inputs of the customer-spend model (next 7 days), version 1",
        tags={"model": "customer-spend", "version": "1"},
    )
