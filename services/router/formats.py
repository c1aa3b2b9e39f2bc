"""The request formats one application speaks, each turned into records (dicts of
field: value) and each answer shaped back as its clients expect.

- Shipyard's own ``POST /predict``: one record (a JSON object), ``{"records": [...]}``
  or a JSON array of records.
- MLflow's scoring protocol, as ``mlflow models serve`` takes it on
  ``POST /invocations``: ``dataframe_records``, ``dataframe_split``, ``instances`` or
  ``inputs`` (records or columns); the answer is ``{"predictions": [...]}``.
- The Open Inference Protocol v2 (KServe, Seldon, Triton clients):
  ``POST /v2/models/NAME/infer`` with one tensor per field.

Errors name the field in the format's own terms (``records[3].amount``,
``dataframe_split.data[2].amount``, ``inputs[amount][2]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from services.router.schema import MAX_BATCH, RequestError

__all__ = [
    "Prefix",
    "mlflow_records",
    "oip_metadata",
    "oip_records",
    "oip_response",
    "predict_records",
]

Prefix = Callable[[int], str]
_MLFLOW_KEYS = ("dataframe_records", "dataframe_split", "instances", "inputs")


def _check_count(n: int, what: str) -> None:
    if n == 0:
        raise RequestError(422, f"{what} is empty; send at least one record",
                           [{"field": what, "problem": "must not be empty"}])  # fmt: skip
    if n > MAX_BATCH:
        raise RequestError(413, f"{n} records in one request; at most {MAX_BATCH}")


def predict_records(body: Any) -> tuple[list[Any], bool, Prefix]:
    """``POST /predict``: the records, whether it was one bare record, and how a
    record's fields are named in errors."""
    if isinstance(body, list):
        _check_count(len(body), "body")
        return body, False, lambda i: f"[{i}]."
    if not isinstance(body, dict):
        raise RequestError(400, 'the body must be a JSON object: one record, or {"records": [...]}')
    if "records" in body:
        records = body["records"]
        if not isinstance(records, list):
            raise RequestError(422, "records must be a list of objects",
                               [{"field": "records", "problem": "must be a list of objects"}])  # fmt: skip
        _check_count(len(records), "records")
        return records, False, lambda i: f"records[{i}]."
    return [body], True, lambda i: ""


def _columns(data: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Columnar input (``{"a": [..], "b": [..]}``) as records; a dict of scalars is one."""
    if not any(isinstance(v, list) for v in data.values()):
        return [data]
    lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise RequestError(422, f"{where} columns must all be lists of one length",
                           [{"field": where, "problem": "columns of different lengths"}])  # fmt: skip
    n = lengths.pop()
    _check_count(n, where)
    names = list(data)
    return [{name: data[name][i] for name in names} for i in range(n)]


def mlflow_records(body: Any) -> tuple[list[Any], Prefix]:
    """MLflow's scoring protocol (``mlflow models serve``'s JSON formats)."""
    if not isinstance(body, dict):
        raise RequestError(
            400, f"the body must be a JSON object with one of {', '.join(_MLFLOW_KEYS)}"
        )
    given = [k for k in _MLFLOW_KEYS if k in body]
    extra = sorted(set(body) - set(_MLFLOW_KEYS) - {"params"})
    if len(given) != 1 or extra:
        raise RequestError(400, f"the body must hold exactly one of {', '.join(_MLFLOW_KEYS)}"
                           + (f"; unknown keys: {', '.join(extra)}" if extra else "")
                           + (f"; got {', '.join(given)}" if len(given) > 1 else ""))  # fmt: skip
    if body.get("params"):
        raise RequestError(422, "this endpoint takes no params",
                           [{"field": "params", "problem": "is not supported; leave it out"}])  # fmt: skip
    key = given[0]
    data = body[key]
    if key == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or \
                not isinstance(data.get("data"), list):  # fmt: skip
            raise RequestError(422, "dataframe_split needs columns (a list of names) and data "
                               "(a list of rows)", [{"field": "dataframe_split",
                               "problem": "must be {\"columns\": [...], \"data\": [[...], ...]}"}])  # fmt: skip
        columns = data["columns"]
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise RequestError(422, "dataframe_split.columns must be distinct names",
                               [{"field": "dataframe_split.columns", "problem": "must be distinct strings"}])  # fmt: skip
        rows = data["data"]
        _check_count(len(rows), "dataframe_split.data")
        errors = [{"field": f"dataframe_split.data[{i}]",
                   "problem": f"must be a list of {len(columns)} values, one per column"}
                  for i, row in enumerate(rows)
                  if not isinstance(row, list) or len(row) != len(columns)]  # fmt: skip
        if errors:
            raise RequestError(422, "dataframe_split rows do not match its columns", errors)
        return [dict(zip(columns, row, strict=True)) for row in rows], (
            lambda i: f"dataframe_split.data[{i}]."
        )
    if isinstance(data, dict):
        records = _columns(data, key)
        return records, (lambda i: f"{key}[{i}].")
    if not isinstance(data, list):
        raise RequestError(422, f"{key} must be a list of records or an object of columns",
                           [{"field": key, "problem": f"must be a list or an object, got {type(data).__name__}"}])  # fmt: skip
    _check_count(len(data), key)
    return data, (lambda i: f"{key}[{i}].")


# -- Open Inference Protocol v2 --------------------------------------------------------------
_OIP_TYPES = {
    "double": ("FP64", {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64",
                        "UINT32", "UINT16", "UINT8"}),
    "float": ("FP32", {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT32",
                       "UINT16", "UINT8"}),
    "long": ("INT64", {"INT64", "INT32", "INT16", "INT8", "UINT32", "UINT16", "UINT8"}),
    "integer": ("INT32", {"INT32", "INT16", "INT8", "UINT16", "UINT8"}),
    "boolean": ("BOOL", {"BOOL"}),
    "string": ("BYTES", {"BYTES"}),
    "datetime": ("BYTES", {"BYTES"}),
    "binary": ("BYTES", {"BYTES"}),
}  # fmt: skip
_ALL_OIP = {"BOOL", "BYTES", "FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
            "UINT8", "UINT16", "UINT32", "UINT64"}  # fmt: skip


def oip_datatype(type_name: str) -> str:
    return _OIP_TYPES.get(type_name, ("BYTES", set()))[0]


def _flatten(data: Any, depth: int = 0) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if depth > 4:
        raise ValueError("is nested more than 4 levels deep")
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item, depth + 1) if isinstance(item, list) else [item])
    return out


def oip_records(
    body: Any, fields: dict[str, str], outputs: list[str] | None = None
) -> tuple[list[dict[str, Any]], list[str] | None, Any]:
    """An OIP v2 inference request as records; ``fields`` maps each request field to
    its column type, ``outputs`` names what an answer can hold (None: not checked).
    Returns the records, the outputs asked for (None: all) and the request's id."""
    if not isinstance(body, dict):
        raise RequestError(400, 'the body must be a JSON object: {"inputs": [{"name", "shape", '
                           '"datatype", "data"}, ...]}')  # fmt: skip
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(422, "inputs must be a non-empty list of tensors",
                           [{"field": "inputs", "problem": "must be a non-empty list of tensors"}])  # fmt: skip
    errors: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {}
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            errors.append(
                {"field": where, "problem": "must be an object with name, shape, datatype, data"}
            )
            continue
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            errors.append({"field": f"{where}.name", "problem": "is required (a string)"})
            continue
        where = f"inputs[{name}]"
        if name in columns:
            errors.append({"field": where, "problem": "is given twice"})
            continue
        if name not in fields:
            errors.append(
                {"field": where, "problem": f"unknown input; the model takes {', '.join(fields)}"}
            )
            continue
        datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
        if datatype not in _ALL_OIP:
            errors.append({"field": f"{where}.datatype", "problem": f"must be one of {', '.join(sorted(_ALL_OIP))}",
                           "value": datatype if isinstance(datatype, (str, int, float)) else None})  # fmt: skip
            continue
        expected, accepted = _OIP_TYPES.get(fields[name], ("BYTES", _ALL_OIP))
        if datatype not in accepted:
            errors.append({"field": f"{where}.datatype", "problem": f"must be {expected} for this input",
                           "value": datatype})  # fmt: skip
            continue
        if not (
            isinstance(shape, list) and shape and all(type(d) is int and d >= 0 for d in shape)
        ):
            errors.append(
                {
                    "field": f"{where}.shape",
                    "problem": "must be a list of non-negative integers, e.g. [3] or [3, 1]",
                }
            )
            continue
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            errors.append(
                {
                    "field": f"{where}.shape",
                    "problem": "must be [n] or [n, 1]: one value per row",
                    "value": str(shape),
                }
            )
            continue
        if not isinstance(data, list):
            errors.append({"field": f"{where}.data", "problem": "must be a list of values"})
            continue
        try:
            flat = _flatten(data)
        except ValueError as exc:
            errors.append({"field": f"{where}.data", "problem": str(exc)})
            continue
        if len(flat) != math.prod(shape):
            errors.append(
                {
                    "field": f"{where}.data",
                    "problem": f"holds {len(flat)} values; shape {shape} needs {math.prod(shape)}",
                }
            )
            continue
        columns[name] = flat
    if errors:
        raise RequestError(422, "invalid inference request", errors)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise RequestError(422, "every input tensor needs the same number of rows",
                           [{"field": f"inputs[{n}].shape", "problem": f"{len(v)} rows"}
                            for n, v in columns.items()])  # fmt: skip
    n = lengths.pop()
    _check_count(n, "inputs")
    asked = body.get("outputs")
    wanted = None
    if asked is not None:
        if not isinstance(asked, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked
        ):
            raise RequestError(422, "outputs must be a list of {\"name\": ...}",
                               [{"field": "outputs", "problem": "must be a list of {\"name\": ...}"}])  # fmt: skip
        wanted = [o["name"] for o in asked]
        unknown = [w for w in wanted if outputs is not None and w not in outputs]
        if unknown:  # refused before any prediction runs
            raise RequestError(422, "unknown outputs requested", [
                {"field": "outputs", "problem": f"unknown output {u}; one of {', '.join(outputs or [])}"}
                for u in unknown])  # fmt: skip
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(
            422, "id must be a string", [{"field": "id", "problem": "must be a string"}]
        )
    names = list(columns)
    return [{k: columns[k][i] for k in names} for i in range(n)], wanted, request_id


def _tensor(name: str, values: list[Any], type_name: str) -> dict[str, Any]:
    rows = len(values)
    if values and all(isinstance(v, list) for v in values):
        width = len(values[0])
        if all(len(v) == width for v in values):
            flat = [x for v in values for x in v]
            return {"name": name, "shape": [rows, width], "datatype": _guess(flat, type_name),
                    "data": flat}  # fmt: skip
    return {"name": name, "shape": [rows], "datatype": _guess(values, type_name), "data": values}


def _guess(values: list[Any], type_name: str) -> str:
    if type_name in _OIP_TYPES:
        return _OIP_TYPES[type_name][0]
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "FP64"
    return "BYTES"


def oip_response(model: str, results: list[dict[str, Any]], outputs: list[tuple[str, str]],
                 wanted: list[str] | None, request_id: Any) -> dict[str, Any]:  # fmt: skip
    """Answers as OIP output tensors: the model's outputs, then ``model_version`` and
    ``variant`` per row."""
    tensors = []
    for name, type_name in [*outputs, ("model_version", "string"), ("variant", "string")]:
        if wanted is None or name in wanted:
            tensors.append(_tensor(name, [r.get(name) for r in results], type_name))
    versions = sorted({str(r.get("model_version")) for r in results})
    doc: dict[str, Any] = {
        "model_name": model,
        "model_version": ",".join(versions),
        "outputs": tensors,
    }
    if request_id is not None:
        doc["id"] = request_id
    missing = [r.get("features_missing") or [] for r in results]
    if any(missing):
        doc["parameters"] = {"features_missing": [",".join(m) for m in missing]}
    return doc


def oip_metadata(model: str, versions: list[str], inputs: list[dict[str, Any]],
                 outputs: list[tuple[str, str]]) -> dict[str, Any]:  # fmt: skip
    return {
        "name": model,
        "versions": versions,
        "platform": "mlflow",
        "inputs": [
            {
                "name": f["name"],
                "datatype": oip_datatype(f["type"]),
                "shape": [-1],
                **({} if f["required"] else {"parameters": {"optional": True}}),
            }
            for f in inputs
        ],  # fmt: skip
        "outputs": [
            {"name": name, "datatype": oip_datatype(t), "shape": [-1]} for name, t in outputs
        ],  # fmt: skip
    }
