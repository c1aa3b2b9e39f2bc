"""Feature services: one per model version, so a model's inputs never drift."""

from feast import FeatureService, FeatureView, OnDemandFeatureView


def fraud_model_v1(
    customer_view: FeatureView, merchant_view: FeatureView, amount_view: OnDemandFeatureView
) -> FeatureService:
    return FeatureService(
        name="fraud_model_v1",
        features=[customer_view, merchant_view, amount_view],
        description="inputs of the fraud model, version 1",
        tags={"model": "fraud", "version": "1"},
    )
