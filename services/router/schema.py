"""Requests, validated against a model's serving contract (``shipyard.contract``).

A :class:`RequestSchema` is compiled once per model version from its signature and
tags: which fields a client sends (entity keys, the inputs the feature service does
not supply, an id to echo), their types, whether they may be null, and the
workload's constraints. Checking a record is a loop over precompiled fields, a few
microseconds, so validation never becomes the hot path's cost.

Every bad field is named (``field``, ``problem``, ``value``) in a 4xx answer: a
client's mistake never reaches a model replica and never becomes a 500. Bodies come
in the ecosystem's formats (:mod:`services.router.formats`); each is turned into a
list of records first, then checked here.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from shipyard.contract import ServingContract, request_fields

__all__ = ["MAX_BATCH", "MAX_BODY_BYTES", "RequestError", "RequestSchema", "parse_json"]

#: Records one request may carry; larger batches are split by the client.
MAX_BATCH = 1000
MAX_BODY_BYTES = 8 * 1024 * 1024
_MISSING = object()
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_FLOAT32_MAX = 3.4028234663852886e38
# pandas' nanosecond timestamps cover 1677-09-21 .. 2262-04-11; stay inside whole years
_YEARS = (1678, 2261)


class RequestError(Exception):
    """A client error: ``status`` and a JSON body naming each bad field."""

    def __init__(self, status: int, message: str, fields: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": message}
        if fields:
            self.body["fields"] = fields[:100]
            if len(fields) > 100:
                self.body["fields_omitted"] = len(fields) - 100


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def parse_json(raw: bytes) -> Any:
    """The body as JSON: 413 when too large, 400 when it is not strict JSON (NaN,
    Infinity and numbers that overflow a double are not JSON numbers)."""
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(413, f"the body has {len(raw):,} bytes; at most {MAX_BODY_BYTES:,}")
    if not raw.strip():
        raise RequestError(400, "the body is empty; send a JSON object")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise RequestError(400, "the body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, our number checks
        raise RequestError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _echo(value: Any) -> Any:
    """The offending value as the error shows it: scalars as sent (long strings cut)."""
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "..."
    if isinstance(value, (list, dict)):
        return "<array>" if isinstance(value, list) else "<object>"
    return value


def parse_datetime(value: str) -> datetime:
    """An ISO 8601 string as an aware UTC datetime; a time without a zone is UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)  # ValueError on anything else
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        parsed = parsed.astimezone(timezone.utc)
    except OverflowError:  # an offset that pushes year 1 or 9999 out of range
        raise ValueError("the time in UTC is out of range") from None
    if not _YEARS[0] <= parsed.year <= _YEARS[1]:
        raise ValueError(f"year {parsed.year} is outside {_YEARS[0]}..{_YEARS[1]}")
    return parsed


def _utc_time(value: Any) -> datetime:
    """A request's time value, with the problem in a client's words when it is none."""
    if type(value) is not str:
        raise ValueError(f"must be an ISO 8601 time string, got {_kind(value)}")
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise ValueError(f"must be an ISO 8601 time, e.g. 2026-08-14T10:00:00Z ({exc})") from None


Check = Callable[[Any], Any]  # returns the converted value, raises ValueError(problem)


def _type_check(type_name: str) -> Check:
    if type_name in ("double", "float"):

        def number(value: Any) -> float:
            if type(value) not in (int, float):
                raise ValueError(f"must be a number, got {_kind(value)}")
            try:
                out = float(value)
            except OverflowError:
                raise ValueError("is out of range for a number") from None
            if type_name == "float" and abs(out) > _FLOAT32_MAX:
                raise ValueError("is out of range for a 32-bit float")
            return out

        return number
    if type_name in ("long", "integer"):
        low, high = _INT_RANGE[type_name]

        def integer(value: Any) -> int:
            if type(value) is float and value.is_integer():
                value = int(value)
            if type(value) is not int:
                raise ValueError(f"must be an integer, got {_kind(value)}")
            if not low <= value <= high:
                raise ValueError(f"must be within {low}..{high}")
            return value

        return integer
    if type_name == "string":

        def string(value: Any) -> str:
            if type(value) is not str:
                raise ValueError(f"must be a string, got {_kind(value)}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("is not valid UTF-8 text (a lone surrogate escape)") from None
            return value

        return string
    if type_name == "boolean":

        def boolean(value: Any) -> bool:
            if type(value) is not bool:
                raise ValueError(f"must be true or false, got {_kind(value)}")
            return value

        return boolean
    if type_name == "datetime":
        return lambda value: _utc_time(value).replace(tzinfo=None)  # MLflow's: naive UTC
    if type_name == "binary":

        def binary(value: Any) -> bytes:
            if type(value) is not str:
                raise ValueError(f"must be a base64 string, got {_kind(value)}")
            try:
                return base64.b64decode(value, validate=True)
            except ValueError:
                raise ValueError("must be base64 encoded") from None

        return binary
    return lambda value: value  # "any": whatever JSON value the client sends


def _constraint_checks(checks: dict[str, Any]) -> list[Check]:
    out: list[Check] = []
    if "format" in checks:  # date-time: canonical UTC string, one format for the model
        out.append(lambda value: _utc_time(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    if "min" in checks or "max" in checks:
        low, high = checks.get("min"), checks.get("max")

        def bounds(value: Any) -> Any:
            if low is not None and value < low:
                raise ValueError(f"must be at least {low}")
            if high is not None and value > high:
                raise ValueError(f"must be at most {high}")
            return value

        out.append(bounds)
    if "max_length" in checks:
        limit = int(checks["max_length"])

        def length(value: Any) -> Any:
            if len(value) > limit:
                raise ValueError(f"must be at most {limit} characters")
            return value

        out.append(length)
    if "pattern" in checks:
        pattern = re.compile(checks["pattern"])

        def matches(value: Any) -> Any:
            if not pattern.fullmatch(value):
                raise ValueError(f"must match {pattern.pattern}")
            return value

        out.append(matches)
    if "one_of" in checks:
        allowed = frozenset(checks["one_of"])
        listed = ", ".join(sorted(map(str, allowed)))

        def member(value: Any) -> Any:
            if value not in allowed:
                raise ValueError(f"unknown value {value!r}; one of {listed}")
            return value

        out.append(member)
    return out


class _Field:
    __slots__ = ("checks", "name", "required", "type")

    def __init__(self, name: str, type_name: str, required: bool, checks: dict[str, Any]):
        self.name = name
        self.type = type_name
        self.required = required
        self.checks = [_type_check(type_name), *_constraint_checks(checks)]


class RequestSchema:
    """What a client sends for one model version, and how it is checked.

    ``online`` (the application reads features from the online store): the inputs the
    feature service supplies are not request fields, and a request carrying one is
    refused rather than silently overridden. Without online features every signature
    input is a request field; the feature-service ones may be left out (the model's
    imputation fills them) and a record without any is flagged ``request``.
    """

    def __init__(self, contract: ServingContract, online: bool) -> None:
        self.contract = contract
        self.online = online and bool(contract.feature_service)
        online_inputs = set(contract.online_inputs)
        constraints = contract.constraints
        fields = {name: _Field(name, col.type, col.required, constraints.get(name, {}))
                  for name, col in request_fields(contract, online=online).items()}  # fmt: skip
        self.fields = list(fields.values())
        self.refused = sorted(online_inputs - set(fields)) if self.online else []

    def describe(self) -> list[dict[str, Any]]:
        """The request fields, as the metadata endpoints list them."""
        return [{"name": f.name, "type": f.type, "required": f.required} for f in self.fields]

    def validate(self, record: Any, prefix: str = "") -> tuple[dict[str, Any] | None, list[dict]]:
        """The record's fields converted for the model, or the problems with it."""
        if not isinstance(record, dict):
            where = prefix.rstrip(".") or "body"
            return None, [{"field": where, "problem": f"must be an object, got {_kind(record)}"}]
        out: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for spec in self.fields:
            value = record.get(spec.name, _MISSING)
            if value is _MISSING or value is None:
                if spec.required:
                    problem = "is required" if value is _MISSING else "must not be null"
                    errors.append({"field": prefix + spec.name, "problem": problem})
                else:
                    out[spec.name] = None
                continue
            try:
                for check in spec.checks:
                    value = check(value)
            except ValueError as exc:
                errors.append({"field": prefix + spec.name, "problem": str(exc),
                               "value": _echo(value)})  # fmt: skip
                continue
            except (TypeError, ArithmeticError, AttributeError):  # a check of another type
                errors.append({"field": prefix + spec.name, "problem": "has the wrong type",
                               "value": _echo(value)})  # fmt: skip
                continue
            out[spec.name] = value
        for name in self.refused:
            if name in record:
                errors.append({"field": prefix + name, "problem": _ONLINE})
        return (None, errors) if errors else (out, [])


_ONLINE = "this model reads it from the online feature store; leave it out"
