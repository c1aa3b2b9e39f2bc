"""The predictor deployment: one registered model version of any pyfunc flavor, its
online features, batching.

The version a replica serves arrives through ``user_config`` (``{"model_version":
"3"}``): Ray Serve calls :meth:`Predictor.reconfigure` on running replicas, so moving
the stable predictor to a new version loads it in place, without a new replica.
``null`` unloads (an idle canary). The version is always an explicit number, resolved
from an alias once, at deploy time.

What the replica does with a request comes from the version's serving contract
(``shipyard.contract``), never from code of a model: each request is one record the
router already validated; requests are batched with ``@serve.batch``, and a batch
makes one Feast online lookup (the contract's feature service, by its entity keys,
through ``shipyard.online``: the service resolved once, each view's ``online_read``),
builds the signature's columns as arrays, and runs one ``predict``. Entities the
online store has never seen get the model's own defaults (its imputation) and are
named in ``features_missing``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from ray import serve
from shipyard.contract import ServingContract, read_contract
from shipyard.inference_log import InferenceLog, LogConfig
from shipyard.online import OnlineFeatures

__all__ = ["Placement", "Predictor", "model_columns", "model_frame", "named_outputs"]

log = logging.getLogger("ray.serve")


class ModelNotLoaded(RuntimeError):
    """This replica holds no model version (an idle canary, or a failed load)."""


_NUMPY = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}


def _column(values: list[Any], type_name: str) -> Any:
    """One signature column as an array of the signature's type."""
    if type_name in ("double", "float"):
        return np.array([np.nan if v is None else v for v in values], dtype=_NUMPY[type_name])
    if type_name in ("long", "integer"):
        if any(v is None for v in values):  # integers cannot hold a gap: float, NaN for it
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return np.array(values, dtype=_NUMPY[type_name])
    if type_name == "boolean" and all(v is not None for v in values):
        return np.array(values, dtype=bool)
    if type_name == "datetime":
        return pd.to_datetime(pd.Series(values, dtype="object"))
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def model_columns(contract: ServingContract, rows: list[dict[str, Any]],
                  features: dict[str, list[Any]] | None) -> dict[str, Any]:  # fmt: skip
    """The signature's columns in its order, as arrays of its types, from the records
    and (for the feature service's inputs) the online features."""
    online = set(contract.online_inputs) if features is not None else set()
    data = {}
    for col in contract.inputs:
        values = features.get(col.name, [None] * len(rows)) if col.name in online else \
            [r.get(col.name) for r in rows]  # fmt: skip
        data[col.name] = _column(values, col.type)
    return data


def model_frame(contract: ServingContract, rows: list[dict[str, Any]],
                features: dict[str, list[Any]] | None) -> pd.DataFrame:  # fmt: skip
    """The pyfunc's input: :func:`model_columns` as a DataFrame."""
    return pd.DataFrame(model_columns(contract, rows, features))


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def named_outputs(contract: ServingContract, result: Any, rows: int) -> list[dict[str, Any]]:
    """A pyfunc's answer (DataFrame, Series, array, list or dict of columns) as one
    dict per row, named by the signature's outputs."""
    names = [c.name for c in contract.outputs] or ["prediction"]
    if isinstance(result, pd.DataFrame):
        columns = {str(c): result[c].tolist() for c in result.columns}
    elif isinstance(result, pd.Series):
        columns = {names[0] if len(names) == 1 else str(result.name): result.tolist()}
    elif isinstance(result, dict):
        columns = {str(k): list(np.asarray(v).tolist()) for k, v in result.items()}
    else:
        array = np.asarray(result)
        if array.ndim == 2 and array.shape[1] == len(names) and len(names) > 1:
            columns = {n: array[:, i].tolist() for i, n in enumerate(names)}
        elif array.ndim == 2 and array.shape[1] == 1 and len(names) == 1:
            columns = {names[0]: array[:, 0].tolist()}
        else:
            columns = {names[0] if len(names) == 1 else "prediction": list(array)}
    lengths = {len(v) for v in columns.values()}
    if lengths != {rows}:
        raise ValueError(f"the model answered {sorted(lengths)} rows for {rows} inputs")
    return [{k: _plain(v[i]) for k, v in columns.items()} for i in range(rows)]


def _client_error(exc: Exception) -> bool:
    """MLflow's schema enforcement refusing an input is the client's mistake."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "INVALID_PARAMETER_VALUE"


def raw_predict(model: Any) -> Any:
    """The flavor's own predict function behind a loaded ``PyFuncModel``, without
    MLflow's per-call schema enforcement: the router has already validated every record
    against the same signature and ``model_frame`` builds the signature's columns with
    its types, so enforcing again would only cost time (~0.5 ms a call). Failures go
    back through ``model.predict``, whose enforcement then names what the model refuses.
    ``_model_impl`` is MLflow's stable developer API for the flavor's implementation.

    Only where enforcing does nothing but check: a model with a params schema gets its
    params' defaults from ``model.predict``, and one whose signature came from an input
    example gets its frame converted to the example's format, so those keep
    ``model.predict``."""
    meta = model.metadata
    if meta.get_params_schema() is not None or getattr(meta, "_is_type_hint_from_example",
                                                        lambda: True)():  # fmt: skip
        return model.predict
    conf = meta.flavors.get("python_function", {})
    impl = model._model_impl
    if conf.get("loader_module") == "mlflow.pyfunc.model":  # a PythonModel
        direct = _python_model_predict(model.unwrap_python_model(), getattr(impl, "context", None))
        if direct is not None:
            return direct
    return getattr(impl, conf.get("predict_fn", "predict"))


def _python_model_predict(python_model: Any, context: Any) -> Any:
    """A ``PythonModel``'s own predict, called as MLflow's wrapper calls it (with its
    context when it takes one, ``params=None`` when it takes params) but with predict's
    signature looked at once: the wrapper inspects it on every call (~0.1 ms). Only for
    models whose input is a DataFrame (or untyped): the wrapper converts other typed
    inputs (lists of strings or dicts, dataclasses); None for those."""
    import inspect

    hints = getattr(python_model, "predict_type_hints", None)
    if hints is None or hints.input not in (None, Any, pd.DataFrame):
        return None
    parameters = inspect.signature(python_model.predict).parameters
    kwargs = {"params": None} if "params" in parameters else {}
    positional = [p for p in parameters if p not in ("self", "params")]
    if "context" in parameters or len(positional) == 2:  # predict(self, context, model_input)
        return lambda frame: python_model.predict(context, frame, **kwargs)
    return lambda frame: python_model.predict(frame, **kwargs)


class Placement:
    """Where a batch runs: on the replica's event loop while batches are short, in a
    worker thread when they are not.

    A thread keeps the loop free (health checks, other requests, the next batch) while
    a slow model or store works, but costs a hop and GIL hand-offs that, for a batch
    of ~1 ms, are most of the time a prediction takes. So batches run inline while a
    moving average of their measured seconds stays under ``inline_below_s``; above it
    they go to a thread, and every ``probe_every``-th batch runs inline once to see
    whether they became short again (a thread's wall time, shared with the loop, would
    overstate it). The first batch is such a probe."""

    def __init__(self, inline_below_s: float = 0.005, probe_every: int = 64) -> None:
        self.inline_below_s = inline_below_s
        self.probe_every = probe_every
        self.batch_s = math.inf  # moving average of an inline batch's seconds
        self._calls = 0

    def inline(self) -> bool:
        """Whether the next batch runs on the loop."""
        self._calls += 1
        return self.batch_s < self.inline_below_s or self._calls % self.probe_every == 1

    def took(self, seconds: float) -> None:
        """An inline batch's seconds: a probe's replaces the average, others move it."""
        if self.batch_s < self.inline_below_s:
            self.batch_s = 0.8 * self.batch_s + 0.2 * seconds
        else:
            self.batch_s = seconds


@dataclass
class Loaded:
    version: str
    model: Any  # the PyFuncModel: enforces the signature, used to classify failures
    contract: ServingContract
    online: OnlineFeatures | None
    fast: Any = None  # raw_predict(model)

    def __post_init__(self) -> None:
        if self.fast is None:
            self.fast = raw_predict(self.model)


@serve.deployment
class Predictor:
    def __init__(
        self,
        model: str,
        variant: str,
        tracking_uri: str,
        feature_repo: str,
        online_features: bool = True,
        max_batch_size: int = 32,
        batch_wait_timeout_s: float = 0.0,
        inference_log: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = model
        self.variant = variant
        self.tracking_uri = tracking_uri
        self.feature_repo = feature_repo
        self.online_features = online_features
        self.version: str | None = None
        self.loaded: Loaded | None = None
        self.placement = Placement()
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.inference_log: InferenceLog | None = None
        self.shadow_log: InferenceLog | None = None  # the mirrored records, made on the first
        if inference_log is not None:
            replica = serve.get_replica_context().replica_id.unique_id
            self.inference_log = InferenceLog(LogConfig.model_validate(inference_log), model,
                                              variant, replica)  # fmt: skip

    # -- configuration -------------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any]) -> None:
        version = config.get("model_version")
        version = None if version in (None, "") else str(version)
        loaded = self.loaded.version if self.loaded is not None else None
        self.version = version  # what the replica is told to serve; check_health holds it to it
        if version == loaded:
            return
        if version is None:
            self.loaded = None
            log.info("%s: unloaded", self.variant)
            return
        import mlflow

        started = time.perf_counter()
        contract = read_contract(self.tracking_uri, self.model_name, version)
        mlflow.set_tracking_uri(self.tracking_uri)
        model = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")
        online = None
        if self.online_features and contract.feature_service:
            online = OnlineFeatures.open(self.feature_repo, contract)
        self.loaded = Loaded(version, model, contract, online)
        self.placement = Placement()  # another model: its batches are measured afresh
        log.info("%s: loaded %s version %s in %.1fs", self.variant, self.model_name, version,
                 time.perf_counter() - started)  # fmt: skip

    def check_health(self) -> None:
        """Serve's replica health check: a replica told to serve a version must hold it."""
        held = self.loaded.version if self.loaded is not None else None
        if self.version is not None and held != self.version:
            raise ModelNotLoaded(f"{self.variant}: version {self.version} is not loaded"
                                 + (f" (it holds {held})" if held else ""))  # fmt: skip

    def info(self) -> dict[str, Any]:
        held = self.loaded.version if self.loaded is not None else None
        return {"variant": self.variant, "model": self.model_name, "model_version": held,
                "loaded": held is not None and held == self.version,
                "inference_log": self.inference_log.stats.to_dict()
                if self.inference_log is not None else None}  # fmt: skip

    def flush_log(self) -> dict[str, Any] | None:
        """Write the replica's buffered log rows now (tests, and a user who wants the log
        current); returns its counts."""
        if self.inference_log is None:
            return None
        if self.shadow_log is not None:
            self.shadow_log.flush()
        self.inference_log.flush()
        return self.inference_log.stats.to_dict()

    def __del__(self) -> None:
        """Serve calls this on a graceful shutdown: the log's buffer is written first."""
        for name in ("inference_log", "shadow_log"):
            if getattr(self, name, None) is not None:
                getattr(self, name).close()

    # -- predictions ---------------------------------------------------------------------------
    async def predict(self, row: dict[str, Any], shadow: bool = False) -> dict[str, Any]:
        """One validated record → its named outputs, ``model_version`` and
        ``features_missing``; or ``{"error", "status"}`` (422 when the model refuses the
        input, 500 when the model fails on it; the router counts only the latter).
        ``shadow``: a record mirrored in a rollout's shadow phase, whose answer no client
        sees; the log records it as variant ``shadow``."""
        if self.loaded is None:
            return self._unloaded()
        return await self.predict_batch((row, time.time(), time.perf_counter(), shadow))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def predict_batch(self, items: list[tuple[dict[str, Any], float, float, bool]]) -> list[dict[str, Any]]:  # fmt: skip
        """Records with their arrival (wall clock, perf counter) and shadow flag →
        answers; the scored batch goes to the inference log (an append; written off the
        request path)."""
        rows = [item[0] for item in items]
        if not self.placement.inline():
            answers, scored = await asyncio.to_thread(self._score, rows)
        else:
            started = time.perf_counter()
            try:
                answers, scored = self._score(rows)
            finally:
                self.placement.took(time.perf_counter() - started)
        if self.inference_log is not None and scored is not None:
            self._log(items, rows, scored, answers)
        return answers

    def _log(self, items: list[tuple[dict[str, Any], float, float, bool]],
             rows: list[dict[str, Any]], scored: tuple[str, dict[str, Any]],
             answers: list[dict[str, Any]]) -> None:  # fmt: skip
        """The batch to the log: mirrored records to the shadow log (variant ``shadow``),
        the rest to the variant's own; one append each, the batch split only when mixed."""
        assert self.inference_log is not None
        now = time.perf_counter()
        served_at = [i[1] for i in items]
        latency = [(now - i[2]) * 1000 for i in items]
        flags = [i[3] for i in items]
        if not any(flags):
            self.inference_log.add(scored[0], rows, scored[1], answers, served_at, latency)
            return
        if self.shadow_log is None:
            self.shadow_log = InferenceLog(self.inference_log.config, self.model_name, "shadow",
                                           f"{self.inference_log.replica}.shadow")  # fmt: skip
        for target, keep in ((self.shadow_log, True), (self.inference_log, False)):
            idx = [i for i, flag in enumerate(flags) if flag is keep]
            if not idx:
                continue
            if len(idx) == len(items):
                target.add(scored[0], rows, scored[1], answers, served_at, latency)
                continue
            columns = {name: (values.iloc[idx].reset_index(drop=True) if hasattr(values, "iloc")
                              else np.asarray(values)[idx]) for name, values in scored[1].items()}  # fmt: skip
            target.add(scored[0], [rows[i] for i in idx], columns, [answers[i] for i in idx],
                       [served_at[i] for i in idx], [latency[i] for i in idx])  # fmt: skip

    def predict_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Features + one predict for many records; a failing batch is retried (see
        ``_enforced``), so one bad row fails only its own request."""
        return self._score(rows)[0]

    def _score(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], tuple[str, dict[str, Any]] | None]:  # fmt: skip
        """The answers, and what the model scored (version and input columns; None when
        nothing was: no model, no features), for the log."""
        loaded = self.loaded
        if loaded is None:
            return [self._unloaded() for _ in rows], None
        version = loaded.version
        try:
            columns, missing = self.model_input(loaded, rows)
            frame = pd.DataFrame(columns)
        except Exception as exc:  # noqa: BLE001 - the feature store, not the model or the client
            log.warning("%s: online features failed: %r", self.variant, exc)
            return [{"error": f"online features are unavailable ({type(exc).__name__}); retry "
                              "later", "model_version": version, "status": 503} for _ in rows], None  # fmt: skip
        try:
            answers: list[Any] = named_outputs(loaded.contract, loaded.fast(frame), len(rows))
        except Exception:  # noqa: BLE001 - the same batch through MLflow's enforcement, then by row
            answers = self._enforced(loaded, frame)
        out = []
        for answer, gaps in zip(answers, missing, strict=True):
            if isinstance(answer, Exception):
                client = _client_error(answer)
                what = (
                    "the model refused the input" if client else f"model version {version} failed"
                )
                out.append({"error": f"{what}: {type(answer).__name__}: {str(answer)[:300]}",
                            "model_version": version, "status": 422 if client else 500})  # fmt: skip
            else:
                answer.update(model_version=version, features_missing=gaps)
                out.append(answer)
        return out, (version, columns)

    def _unloaded(self) -> dict[str, Any]:
        return {"error": f"{self.variant} predictor has no model loaded",
                "model_version": self.version, "status": 503}  # fmt: skip

    def _enforced(self, loaded: Loaded, frame: pd.DataFrame) -> list[Any]:
        """After the fast path failed: the batch through ``model.predict`` (if that
        answers, the flavor needs MLflow's conversions, and the replica keeps using it),
        else row by row, so one bad row fails only its own request."""
        if loaded.fast != loaded.model.predict:
            try:
                answers: list[Any] = named_outputs(loaded.contract, loaded.model.predict(frame),
                                                   len(frame))  # fmt: skip
            except Exception:  # noqa: BLE001 - some rows are bad: isolate them below
                pass
            else:
                log.warning("%s: model version %s needs MLflow's input conversion; it now "
                            "predicts through model.predict", self.variant, loaded.version)  # fmt: skip
                loaded.fast = loaded.model.predict
                return answers
        answers = []
        for i in range(len(frame)):
            try:
                one = loaded.model.predict(frame.iloc[[i]].reset_index(drop=True))
                answers.append(named_outputs(loaded.contract, one, 1)[0])
            except Exception as exc:  # noqa: BLE001 - reported to the router per row
                answers.append(exc)
        return answers

    def model_input(self, loaded: Loaded, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[list[str]]]:  # fmt: skip
        """The pyfunc's input columns for these records (:func:`model_columns`), and per
        record the entities (or ``request``) whose features are missing."""
        contract = loaded.contract
        if loaded.online is not None:
            features, missing = loaded.online.read(rows)
            return model_columns(contract, rows, features), missing
        columns = model_columns(contract, rows, None)
        names = [n for n in contract.online_inputs if n in columns]
        if not names:
            return columns, [[] for _ in rows]
        gaps = pd.DataFrame({n: columns[n] for n in names}).isna().all(axis=1)
        return columns, [["request"] if gap else [] for gap in gaps]
