"""Sources: the feature tables ``shipyard features build`` writes, and request data."""

from pathlib import Path

from feast import Field, FileSource, RequestSource
from feast.data_format import ParquetFormat
from feast.types import Float64


def customer_source(root: Path) -> FileSource:
    return FileSource(
        name="customer_features_source",
        path=str(root / "customer_features"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description="per-customer windows as of each transaction (Ray Data build)",
    )


def merchant_source(root: Path) -> FileSource:
    return FileSource(
        name="merchant_features_source",
        path=str(root / "merchant_features"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description="per-merchant fraud rate from labels known at each transaction",
    )


# What the caller sends with a transaction; known at request time only.
transaction_request = RequestSource(
    name="transaction_request",
    schema=[Field(name="amount", dtype=Float64)],
)
