"""Shipyard's Feast feature repo, split by kind as in Feast's templates.

Sources point at the feature tables the build writes, so they are built for a
feature root (``definitions(root)``) instead of at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.features.repo.entities import customer, merchant
from pipelines.features.repo.services import customer_spend_v1, fraud_model_v1
from pipelines.features.repo.sources import customer_source, merchant_source, transaction_request
from pipelines.features.repo.views import (
    amount_view,
    customer_features,
    merchant_features,
)

__all__ = ["FEATURE_SERVICE", "SPEND_SERVICE", "definitions"]

FEATURE_SERVICE = "fraud_model_v1"
SPEND_SERVICE = "customer_spend_v1"


def definitions(root: Path) -> list[Any]:
    """Every Feast object of the repo, with sources under ``root``."""
    customer_view = customer_features(customer_source(root))
    merchant_view = merchant_features(merchant_source(root))
    amount_features = amount_view(customer_view, transaction_request)
    return [
        customer,
        merchant,
        customer_view,
        merchant_view,
        amount_features,
        fraud_model_v1(customer_view, merchant_view, amount_features),
        customer_spend_v1(customer_view),
    ]
