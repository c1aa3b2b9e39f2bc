"""The HTTP contract of ``POST /<model>/predict``: one transaction, or
``{"transactions": [...]}``; every bad field is named in a 4xx answer.

Validation lives here, in the ingress, so a client's mistake never reaches a model
replica and never becomes a 500.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pipelines.features.validate import CATEGORIES, CURRENCIES, MAX_AMOUNT

__all__ = ["MAX_BATCH", "RequestError", "Transaction", "parse_predict_body"]

#: Transactions one request may carry; larger batches are split by the client.
MAX_BATCH = 1000


class RequestError(Exception):
    """A client error: ``status`` and a JSON body naming each bad field."""

    def __init__(self, status: int, message: str, fields: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": message}
        if fields:
            self.body["fields"] = fields


class Transaction(BaseModel):
    """One card transaction as a client sends it."""

    model_config = ConfigDict(extra="ignore", strict=True)

    transaction_id: str = Field(min_length=1, max_length=128)
    customer_id: str = Field(min_length=1, max_length=128)
    merchant_id: str = Field(min_length=1, max_length=128)
    amount: float = Field(ge=0, le=MAX_AMOUNT)
    currency: str
    category: str
    country: str = Field(min_length=2, max_length=2)
    # ISO 8601; a time without a zone is read as UTC
    timestamp: Annotated[datetime, Field(strict=False)]
    # only for an application that takes features from the request (online_features off)
    features: dict[str, Annotated[float, Field(strict=False)] | None] | None = None

    @field_validator("amount")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("currency", "category")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        known = CURRENCIES if info.field_name == "currency" else CATEGORIES
        if value not in known:
            raise ValueError(
                f"unknown {info.field_name} {value!r}; one of {', '.join(sorted(known))}"
            )
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        if not value.isalpha() or not value.isupper():
            raise ValueError("must be an ISO 3166 alpha-2 code in capitals, e.g. US")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value: dict[str, float | None] | None) -> dict[str, float | None] | None:
        if value is None:
            return None
        from pipelines.training.model import FEATURE_INPUTS

        unknown = sorted(set(value) - set(FEATURE_INPUTS))
        if unknown:
            raise ValueError(f"unknown feature(s) {', '.join(unknown)}; known: "
                             f"{', '.join(FEATURE_INPUTS)}")  # fmt: skip
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value

    def payload(self) -> dict[str, Any]:
        """What a predictor replica receives (plain JSON types)."""
        data = self.model_dump()
        data["timestamp"] = self.timestamp.astimezone(timezone.utc).isoformat()
        return data


def _field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        entry: dict[str, Any] = {"field": f"{prefix}{loc}", "problem": msg}
        if err["type"] != "missing":
            entry["value"] = err.get("input")
        out.append(entry)
    return out


def parse_predict_body(raw: bytes, online_features: bool = True) -> tuple[list[Transaction], bool]:
    """The transactions of a request body, and whether it was the batch form.
    With ``online_features`` the model's features come from the online store, and a
    request that carries its own is refused rather than silently overridden.

    Raises :class:`RequestError` (400 malformed JSON, 413 too many transactions,
    422 bad fields, every one named as ``field`` or ``transactions[i].field``).
    """
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(
            400, 'the body must be a JSON object: one transaction, or {"transactions": [...]}'
        )
    if "transactions" in body:
        items = body["transactions"]
        if not isinstance(items, list) or not items:
            raise RequestError(422, "transactions must be a non-empty list",
                               [{"field": "transactions", "problem": "must be a non-empty list"}])  # fmt: skip
        if len(items) > MAX_BATCH:
            raise RequestError(
                413, f"{len(items)} transactions in one request; at most {MAX_BATCH}"
            )
        txs, errors = [], []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append({"field": f"transactions[{i}]", "problem": "must be an object"})
                continue
            try:
                txs.append(Transaction.model_validate(item))
            except ValidationError as exc:
                errors += _field_errors(exc, f"transactions[{i}].")
        errors += [{"field": f"transactions[{i}].features", "problem": _ONLINE}
                   for i, tx in enumerate(txs) if online_features and tx.features is not None]  # fmt: skip
        if errors:
            raise RequestError(422, "invalid transaction fields", errors)
        return txs, True
    try:
        tx = Transaction.model_validate(body)
    except ValidationError as exc:
        raise RequestError(422, "invalid transaction fields", _field_errors(exc)) from None
    if online_features and tx.features is not None:
        raise RequestError(
            422, "invalid transaction fields", [{"field": "features", "problem": _ONLINE}]
        )
    return [tx], False


_ONLINE = "this application reads features from the online store; leave features out"
