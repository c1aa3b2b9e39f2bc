"""A registered model's serving contract: what the generic serving path needs to
validate requests, join online features, predict and name the outputs, for any
model whose flavor loads as an MLflow pyfunc.

The contract is read from the registry, never from Shipyard's code:

- the version's MLflow **signature**: input columns (name, type, required or not)
  and outputs;
- a few ``shipyard.*`` **tags** set at registration by :func:`register_model`, the
  one call every training pipeline uses:

  ================================  =================================================
  ``shipyard.feature_service``      the Feast feature service joined online (optional)
  ``shipyard.entity_keys``          request fields that are its entity keys
  ``shipyard.online_inputs``        signature inputs that the feature service supplies
  ``shipyard.sticky_key``           the request field a canary split sticks on
  ``shipyard.id_field``             a request field echoed back in each answer
  ``shipyard.constraints``          per-field checks beyond the type (JSON)
  ``shipyard.labels``               where the true outcomes arrive, late (JSON,
                                    :class:`LabelSpec`): the live-quality monitor
  ================================  =================================================

A version registered without them has no online features and a per-request split:
every signature input comes from the request.

Constraints (``{"field": {...}}``) take ``min``, ``max`` (numbers), ``one_of`` (a
list), ``pattern`` (a regular expression the whole string matches), ``max_length``,
``format: "date-time"`` (an ISO 8601 string, handed to the model in UTC as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``) and, for entity keys outside the signature,
``type`` (``string`` by default, or ``long``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard.errors import ConfigError

__all__ = [
    "CONSTRAINT_KEYS",
    "REFERENCE_TAG",
    "Column",
    "LabelSpec",
    "ServingContract",
    "check_challenger",
    "compatibility",
    "contract_from",
    "contract_tags",
    "label_spec",
    "log_reference_profile",
    "read_contract",
    "read_reference_profile",
    "register_model",
    "request_fields",
]

TAG = "shipyard."
CONTRACT_VERSION = "1"
CONSTRAINT_KEYS = frozenset({"min", "max", "one_of", "pattern", "max_length", "format", "type"})
#: Keys every answer carries besides the model's outputs, and the batch form's key.
RESERVED_OUTPUTS = frozenset({"error", "status", "model_version", "variant", "features_missing"})
RESERVED_FIELDS = frozenset({"records"})
#: Signature column types the generic path validates and converts.
COLUMN_TYPES = ("double", "float", "long", "integer", "string", "boolean", "datetime", "binary")


@dataclass(frozen=True)
class Column:
    """One named input or output of the signature."""

    name: str
    type: str  # one of COLUMN_TYPES, or "any" for an unnamed/complex output
    required: bool = True


class LabelSpec(BaseModel):
    """Where a model's true outcomes arrive (often days late: a chargeback, a sale) and
    how a served answer meets its own, for the live-quality monitor
    (``shipyard.quality``): a table (parquet file or folder; a relative path is under
    the data root, ``monitor.label_sources`` overrides it per model) whose ``key``
    column holds the request field of the same name, ``label`` the outcome and
    ``available_at`` when it became known (absent: known at once). ``score`` is the
    output held against it: a probability of the positive class (``task`` binary) or
    a predicted value (regression)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    key: str = Field(min_length=1)
    label: str = Field(min_length=1)
    score: str = Field(min_length=1)
    available_at: str | None = None
    task: Literal["binary", "regression"] = "binary"
    #: a request field with the event's time (ISO; default: when it was served) and the
    #: days after it by which nearly every label has arrived: until then an answer's
    #: quality is provisional (labels that arrive late, such as frauds, are missing) and
    #: it cannot raise an alert
    event_time: str | None = None
    maturity_days: float = Field(default=0.0, ge=0)


@dataclass
class ServingContract:
    """Everything the serving path knows of one registered version."""

    model: str
    version: str
    inputs: list[Column]
    outputs: list[Column]
    feature_service: str | None = None
    entity_keys: list[str] = field(default_factory=list)
    online_inputs: list[str] = field(default_factory=list)
    sticky_key: str | None = None
    id_field: str | None = None
    constraints: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: LabelSpec | None = None


def _schema_columns(schema: Any, what: str, *, outputs: bool = False) -> list[Column]:
    """Named columns of an MLflow schema. Inputs must be named columns; an unnamed
    output (a bare array) is one output called ``prediction``."""
    if schema is None:
        return [Column("prediction", "any")] if outputs else []
    out = []
    for i, spec in enumerate(schema.inputs):
        name = getattr(spec, "name", None)
        dtype = getattr(spec, "type", None)
        type_name = getattr(dtype, "name", None) or (str(dtype) if dtype is not None else "any")
        if schema.is_tensor_spec():
            type_name = "any"
        if not name:
            if not outputs:
                raise ConfigError(
                    f"the model's {what} signature has unnamed inputs",
                    hint="log the model with a named signature: a pandas DataFrame "
                    "input_example, or mlflow.models.infer_signature on a DataFrame",
                )
            name = "prediction" if len(schema.inputs) == 1 else f"output_{i}"
        if type_name not in COLUMN_TYPES:
            type_name = "any"
        out.append(Column(name, type_name, bool(getattr(spec, "required", True))))
    return out


def _split(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def contract_from(
    model: str, version: str, signature: Any, tags: dict[str, str]
) -> ServingContract:
    """The contract of a version from its signature and tags; every inconsistency is
    a :class:`ConfigError` that names the tag or input and the fix."""
    if signature is None or signature.inputs is None:
        raise ConfigError(
            f"{model} version {version} has no signature, so Shipyard cannot validate requests",
            hint="log the model with a signature (signature=infer_signature(X, model.predict(X)) "
            "or an input_example), register it again, and deploy that version",
        )
    contract = ServingContract(
        model=model,
        version=str(version),
        inputs=_schema_columns(signature.inputs, "input"),
        outputs=_schema_columns(signature.outputs, "output", outputs=True),
        feature_service=tags.get(f"{TAG}feature_service") or None,
        entity_keys=_split(tags.get(f"{TAG}entity_keys")),
        online_inputs=_split(tags.get(f"{TAG}online_inputs")),
        sticky_key=tags.get(f"{TAG}sticky_key") or None,
        id_field=tags.get(f"{TAG}id_field") or None,
    )
    raw = tags.get(f"{TAG}constraints")
    if raw:
        try:
            contract.constraints = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{model} version {version}: tag {TAG}constraints is not JSON: "
                              f"{exc}") from None  # fmt: skip
    raw = tags.get(f"{TAG}labels")
    if raw:
        contract.labels = label_spec(raw, f"{model} version {version}: tag {TAG}labels")
    _check(contract)
    return contract


def label_spec(value: Any, where: str) -> LabelSpec:
    """A :class:`LabelSpec` from its JSON text or a mapping; a bad one is a ConfigError."""
    try:
        if isinstance(value, LabelSpec):
            return value
        if isinstance(value, str):
            return LabelSpec.model_validate_json(value)
        return LabelSpec.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                             for e in exc.errors())  # fmt: skip
        raise ConfigError(f"{where} is invalid: {problems}",
                          hint="labels take source, key, label, score, and optionally "
                          "available_at and task (binary or regression)") from None  # fmt: skip


def _check(c: ServingContract) -> None:
    where = f"{c.model} version {c.version}"
    names = {col.name for col in c.inputs}
    clash = sorted({col.name for col in c.outputs} & (RESERVED_OUTPUTS | {c.id_field}))
    if clash:
        raise ConfigError(f"{where}: output(s) named {', '.join(map(str, clash))}, which every "
                          "answer uses for itself",
                          hint="name the signature's outputs otherwise and log the model again")  # fmt: skip
    reserved = sorted((names | set(c.entity_keys)) & RESERVED_FIELDS)
    if reserved:
        raise ConfigError(f"{where}: request field(s) named {', '.join(reserved)}, which "
                          "`POST /predict` reads as a batch of records",
                          hint="rename the input and log the model again")  # fmt: skip
    gaps = [col.name for col in c.inputs if col.type in ("long", "integer")
            and (not col.required or col.name in c.online_inputs)]  # fmt: skip
    if gaps:
        raise ConfigError(f"{where}: integer input(s) {', '.join(gaps)} may be missing (optional, "
                          "or supplied by the feature store), and a missing integer has no value",
                          hint="log them as double (a missing value is NaN) in the signature")  # fmt: skip
    unknown = [n for n in c.online_inputs if n not in names]
    if unknown:
        raise ConfigError(f"{where}: online inputs {', '.join(unknown)} are not signature inputs",
                          hint=f"the signature's inputs are {', '.join(sorted(names))}")  # fmt: skip
    if c.online_inputs and not c.feature_service:
        raise ConfigError(f"{where}: online inputs are set but no feature service",
                          hint="register with feature_service=... or without online_inputs")  # fmt: skip
    if c.feature_service and not c.entity_keys:
        raise ConfigError(f"{where}: feature service {c.feature_service} needs entity keys",
                          hint="register with entity_keys=[...] (request fields, e.g. user_id)")  # fmt: skip
    request = set(names) | set(c.entity_keys) | ({c.id_field} if c.id_field else set())
    if c.sticky_key and c.sticky_key not in request:
        raise ConfigError(f"{where}: sticky key {c.sticky_key!r} is not a request field",
                          hint=f"pick one of {', '.join(sorted(request))}")  # fmt: skip
    if c.labels is not None:
        if c.labels.key not in request:
            raise ConfigError(f"{where}: the labels' key {c.labels.key!r} is not a request field",
                              hint=f"request fields: {', '.join(sorted(request))}")  # fmt: skip
        outputs = [col.name for col in c.outputs]
        if c.labels.score not in outputs:
            raise ConfigError(f"{where}: the labels' score {c.labels.score!r} is not an output",
                              hint=f"the outputs are {', '.join(outputs)}")  # fmt: skip
    if not isinstance(c.constraints, dict):
        raise ConfigError(f"{where}: constraints must map field names to checks")
    for name, checks in c.constraints.items():
        if name not in request:
            raise ConfigError(f"{where}: constraint on {name!r}, which is not a request field",
                              hint=f"request fields: {', '.join(sorted(request))}")  # fmt: skip
        if not isinstance(checks, dict) or set(checks) - CONSTRAINT_KEYS:
            bad = sorted(set(checks) - CONSTRAINT_KEYS) if isinstance(checks, dict) else checks
            raise ConfigError(f"{where}: constraint on {name!r} has unknown checks {bad}",
                              hint=f"use {', '.join(sorted(CONSTRAINT_KEYS))}")  # fmt: skip
        if "pattern" in checks:
            try:
                re.compile(checks["pattern"])
            except re.error as exc:
                raise ConfigError(f"{where}: pattern for {name!r} is invalid: {exc}") from None
        if checks.get("format") not in (None, "date-time"):
            raise ConfigError(f"{where}: format for {name!r} must be 'date-time'")
        if checks.get("type") not in (None, "string", "long"):
            raise ConfigError(f"{where}: type for {name!r} must be 'string' or 'long'")


def contract_tags(
    *,
    feature_service: str | None = None,
    entity_keys: list[str] | tuple[str, ...] = (),
    online_inputs: list[str] | tuple[str, ...] = (),
    sticky_key: str | None = None,
    id_field: str | None = None,
    constraints: dict[str, dict[str, Any]] | None = None,
    labels: LabelSpec | dict[str, Any] | None = None,
) -> dict[str, str]:
    """The ``shipyard.*`` tags of a serving contract (see the module docstring)."""
    for name in [*entity_keys, *online_inputs]:
        if not name or "," in name:
            raise ConfigError(f"field name {name!r} is empty or holds a comma")
    tags = {f"{TAG}contract": CONTRACT_VERSION}
    if feature_service:
        tags[f"{TAG}feature_service"] = feature_service
    if entity_keys:
        tags[f"{TAG}entity_keys"] = ",".join(entity_keys)
    if online_inputs:
        tags[f"{TAG}online_inputs"] = ",".join(online_inputs)
    if sticky_key:
        tags[f"{TAG}sticky_key"] = sticky_key
    if id_field:
        tags[f"{TAG}id_field"] = id_field
    if constraints:
        tags[f"{TAG}constraints"] = json.dumps(constraints, sort_keys=True)
    if labels is not None:
        spec = label_spec(labels, "labels")
        tags[f"{TAG}labels"] = spec.model_dump_json(exclude_none=True)
    return tags


def register_model(
    tracking_uri: str,
    model_uri: str,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    reference: Any = None,
    **contract: Any,
) -> str:
    """Register ``model_uri`` (``runs:/...``, ``models:/m-...``) as a new version of
    ``name`` with its serving contract (``contract``: the keyword arguments of
    :func:`contract_tags`) and any other ``tags``; returns the version number.

    The contract is checked against the model's signature first, so a version that
    could not be served is never registered. ``reference``: the training data as the
    model sees it (a DataFrame of the signature's inputs, and its outputs on them); its
    profile (``shipyard.drift``) is logged on the model's run and named by the version's
    ``shipyard.reference_profile`` tag, for the drift monitor.
    """
    import mlflow

    from shipyard.registry import check_server

    check_server(tracking_uri)
    contract_tag = contract_tags(**contract)
    mlflow.set_tracking_uri(tracking_uri)
    info = mlflow.models.get_model_info(model_uri)
    checked = contract_from(name, "(new)", info.signature, contract_tag)
    extra = dict(tags or {})
    if reference is not None:
        extra[REFERENCE_TAG] = log_reference_profile(tracking_uri, info.run_id, checked, reference)
    return str(mlflow.register_model(model_uri, name, tags={**extra, **contract_tag}).version)


#: The version tag that names its reference profile's artifact (``runs:/<run>/<path>``).
REFERENCE_TAG = "shipyard.reference_profile"
REFERENCE_ARTIFACT = "shipyard/reference_profile.json"
_PROFILE_ROWS = 200_000


def log_reference_profile(tracking_uri: str, run_id: str | None, contract: ServingContract,
                          reference: Any) -> str:  # fmt: skip
    """Profile ``reference`` (the contract's inputs and outputs found in it; a sample of
    at most 200,000 rows) and log it on ``run_id``; returns its ``runs:/`` URI."""
    from mlflow import MlflowClient

    from shipyard.drift import profile_frame

    if run_id is None:
        raise ConfigError("a reference profile needs the model's run; this model has none",
                          hint="log the model inside an MLflow run")  # fmt: skip
    missing = [c.name for c in contract.inputs if c.name not in reference.columns]
    if missing:
        raise ConfigError(f"the reference data lacks the model's inputs {missing}",
                          hint="pass the frame the model was trained on, as it sees it")  # fmt: skip
    if len(reference) > _PROFILE_ROWS:
        reference = reference.sample(_PROFILE_ROWS, random_state=0)
    profile = profile_frame(reference, [c.name for c in contract.inputs],
                            [c.name for c in contract.outputs])  # fmt: skip
    MlflowClient(tracking_uri=tracking_uri).log_text(run_id, profile.to_json(), REFERENCE_ARTIFACT)
    return f"runs:/{run_id}/{REFERENCE_ARTIFACT}"


def read_reference_profile(tracking_uri: str, model: str, version: str,
                           tags: dict[str, str] | None = None) -> Any:  # fmt: skip
    """The version's reference profile (``shipyard.drift.Profile``), or None when it was
    registered without one. ``tags``: the version's, when the caller has them."""
    import mlflow
    from mlflow import MlflowClient

    from shipyard.drift import Profile

    if tags is None:
        tags = MlflowClient(tracking_uri=tracking_uri).get_model_version(model, str(version)).tags
    uri = (tags or {}).get(REFERENCE_TAG)
    if not uri:
        return None
    mlflow.set_tracking_uri(tracking_uri)
    import os

    quiet = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a bar per small file
    try:
        return Profile.from_json(mlflow.artifacts.load_text(uri))
    finally:
        if quiet is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = quiet


def read_contract(tracking_uri: str, model: str, version: str) -> ServingContract:
    """The contract of a registered version, from the registry over HTTP."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    mv = client.get_model_version(model, str(version))
    mlflow.set_tracking_uri(tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{model}/{version}")
    return contract_from(model, str(version), info.signature, dict(mv.tags or {}))


#: Integer types a wider numeric field accepts as they are.
_WIDER = {"double": {"float", "long", "integer"}, "float": {"long", "integer"},
          "long": {"integer"}}  # fmt: skip


def request_fields(c: ServingContract, *, online: bool = True) -> dict[str, Column]:
    """What a client sends for this version: its entity keys and every input the
    feature store does not supply (``online``: the application joins online
    features), and the id field it may echo back. The router's request schema
    (``services.router.schema``) checks exactly these."""
    online = online and bool(c.feature_service)
    fields: dict[str, Column] = {}
    for key in c.entity_keys if online else ():
        fields[key] = Column(key, c.constraints.get(key, {}).get("type", "string"), True)
    for col in c.inputs:
        if col.name in c.online_inputs and online:
            continue
        fields[col.name] = Column(
            col.name, col.type, col.required and col.name not in c.online_inputs
        )
    if c.id_field and c.id_field not in fields:
        fields[c.id_field] = Column(c.id_field, "any", False)
    return fields


def compatibility(champion: ServingContract, challenger: ServingContract, *,
                  online: bool = True) -> list[str]:  # fmt: skip
    """How the challenger would break the champion's clients, one line per field;
    empty when it accepts every request they send and answers with every output they
    read. The model's flavor, architecture and online features may differ freely."""
    sent = request_fields(champion, online=online)
    takes = request_fields(challenger, online=online)
    problems = []
    for name, col in takes.items():
        was = sent.get(name)
        if col.required and was is None:
            problems.append(f"{name}: the challenger requires it; the champion's clients "
                            "do not send it")  # fmt: skip
        elif col.required and not was.required:
            problems.append(f"{name}: the challenger requires it; for the champion it is "
                            "optional, so clients may leave it out")  # fmt: skip
        if was is None or "any" in (col.type, was.type) or col.type == was.type:
            continue
        if was.type not in _WIDER.get(col.type, set()):
            problems.append(f"{name}: the challenger takes {col.type}; the champion's clients "
                            f"send {was.type}")  # fmt: skip
    for name, checks in challenger.constraints.items():
        if name not in sent or name not in takes:
            continue
        before = champion.constraints.get(name, {})
        changed = sorted(k for k, v in checks.items() if before.get(k) != v)
        if changed:
            problems.append(f"{name}: the challenger checks {', '.join(f'{k}={checks[k]!r}' for k in changed)}"
                            f" where the champion checks {', '.join(f'{k}={before.get(k)!r}' for k in changed)}")  # fmt: skip
    refused = (
        set(challenger.online_inputs) & set(sent)
        if online and challenger.feature_service
        else set()
    )
    for name in sorted(refused - set(takes)):
        problems.append(f"{name}: the champion's clients send it; the challenger reads it from "
                        "the online feature store and refuses it in a request")  # fmt: skip
    outputs = {o.name for o in challenger.outputs}
    for out in champion.outputs:
        if out.name not in outputs:
            problems.append(f"output {out.name}: the champion's clients read it; the challenger "
                            f"answers {', '.join(sorted(outputs))}")  # fmt: skip
    return problems


def check_challenger(tracking_uri: str, model: str, stable: str, candidate: str, *,
                     online: bool = True) -> ServingContract:  # fmt: skip
    """The candidate's contract, or a :class:`ConfigError` naming every field in which
    it would break the clients of the stable version (see :func:`compatibility`)."""
    champion = read_contract(tracking_uri, model, stable)
    challenger = read_contract(tracking_uri, model, candidate)
    problems = compatibility(champion, challenger, online=online)
    if problems:
        raise ConfigError(
            f"{model} version {candidate} cannot replace version {stable} for its clients:\n  "
            + "\n  ".join(problems),
            hint="register the challenger with a signature and serving contract that accept "
            "what the stable version's clients send (or serve it under another model name)",
        )
    return challenger
