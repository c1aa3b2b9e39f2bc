"""The predictor deployment: one registered model version, online features, batching.

The version a replica serves arrives through ``user_config`` (``{"model_version":
"3"}``): Ray Serve calls :meth:`Predictor.reconfigure` on running replicas, so moving
the stable predictor to a new version loads it in place, without a new replica.
``null`` unloads (an idle canary). The version is always an explicit number, resolved
from an alias once, at deploy time.

Each request is one validated transaction (the router checked it). Requests are
batched with ``@serve.batch``: one Feast online lookup and one forward per batch.
Entities the online store has never seen get the model's own defaults (the
imputation learnt in training) and are named in ``features_missing``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pandas as pd
from ray import serve

from pipelines.features.compute import CUSTOMER_FEATURES, MERCHANT_FEATURES
from pipelines.features.repo import FEATURE_SERVICE

__all__ = ["Predictor", "request_model_input"]

log = logging.getLogger("ray.serve")


class ModelNotLoaded(RuntimeError):
    """This replica holds no model version (an idle canary, or a failed load)."""


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
        batch_wait_timeout_s: float = 0.005,
    ) -> None:
        self.model_name = model
        self.variant = variant
        self.tracking_uri = tracking_uri
        self.feature_repo = feature_repo
        self.online_features = online_features
        self.version: str | None = None
        self.model: Any = None
        self._store: Any = None
        self._features: Any = None
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    # -- configuration -------------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any]) -> None:
        version = config.get("model_version")
        version = None if version in (None, "") else str(version)
        if version == self.version and (version is None or self.model is not None):
            return
        if version is None:
            self.model, self.version = None, None
            log.info("%s: unloaded", self.variant)
            return
        import mlflow

        started = time.perf_counter()
        mlflow.set_tracking_uri(self.tracking_uri)
        model = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")
        if self.online_features:
            self._open_store()
        self.model, self.version = model, version
        log.info("%s: loaded %s version %s in %.1fs", self.variant, self.model_name, version,
                 time.perf_counter() - started)  # fmt: skip

    def _open_store(self) -> None:
        if self._store is None:
            from pathlib import Path

            from pipelines.features.store import open_store

            self._store = open_store(Path(self.feature_repo))
            self._features = self._store.get_feature_service(FEATURE_SERVICE)

    def check_health(self) -> None:
        """Serve's replica health check: a replica told to serve a version must hold it."""
        if self.version is not None and self.model is None:
            raise ModelNotLoaded(f"{self.variant}: version {self.version} is not loaded")

    def info(self) -> dict[str, Any]:
        return {"variant": self.variant, "model": self.model_name, "model_version": self.version,
                "loaded": self.model is not None}  # fmt: skip

    # -- predictions ---------------------------------------------------------------------------
    async def predict(self, tx: dict[str, Any]) -> dict[str, Any]:
        """One transaction → ``{fraud_probability, model_version, features_missing}``, or
        ``{"error": ...}`` when the model fails on it (the router counts it)."""
        if self.model is None:
            return {"error": f"{self.variant} predictor has no model loaded",
                    "model_version": self.version}  # fmt: skip
        return await self.predict_batch(tx)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict_batch(self, txs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.predict_many, txs)

    def predict_many(self, txs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Features + forward for many transactions; a failing batch is retried row by
        row, so one bad row fails only its own request."""
        version, model = self.version, self.model
        frame, missing = self.model_input(txs)
        try:
            probs = _probabilities(model, frame)
        except Exception:  # noqa: BLE001 - isolate the failing rows below
            probs = []
            for i in range(len(frame)):
                try:
                    probs.append(_probabilities(model, frame.iloc[[i]])[0])
                except Exception as exc:  # noqa: BLE001 - reported to the router per row
                    probs.append(exc)
        out = []
        for p, gaps in zip(probs, missing, strict=True):
            if isinstance(p, Exception):
                out.append({"error": f"model version {version} failed: {type(p).__name__}: {p}",
                            "model_version": version})  # fmt: skip
            else:
                out.append({"fraud_probability": float(p), "model_version": version,
                            "features_missing": gaps})  # fmt: skip
        return out

    def model_input(self, txs: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[list[str]]]:
        """The pyfunc's input for these transactions: online features from Feast plus
        the request's own fields; and, per row, the entities without online features."""
        from pipelines.training.model import to_model_input

        if not self.online_features:
            return request_model_input(txs)
        request = pd.DataFrame(txs)[["amount", "timestamp", "category", "country"]]
        self._open_store()
        rows = [{"customer_id": t["customer_id"], "merchant_id": t["merchant_id"],
                 "amount": float(t["amount"])} for t in txs]  # fmt: skip
        online = self._store.get_online_features(features=self._features, entity_rows=rows)
        features = pd.DataFrame(online.to_dict())
        customer = features[[c for c in CUSTOMER_FEATURES if c in features]].isna().all(axis=1)
        merchant = features[[c for c in MERCHANT_FEATURES if c in features]].isna().all(axis=1)
        missing = [[name for name, gap in (("customer", c), ("merchant", m)) if gap]
                   for c, m in zip(customer, merchant, strict=True)]  # fmt: skip
        frame = pd.concat([features.drop(columns=["amount"], errors="ignore"), request], axis=1)
        return to_model_input(frame), missing


def request_model_input(txs: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[list[str]]]:
    """The model input when clients send the features (``online_features`` off): a
    feature left out is NaN; a row without any is flagged ``request``."""
    from pipelines.training.model import FEATURE_INPUTS, to_model_input

    features = pd.DataFrame([{c: (t.get("features") or {}).get(c) for c in FEATURE_INPUTS}
                             for t in txs], dtype="float64")  # fmt: skip
    missing = [["request"] if gap else [] for gap in features.isna().all(axis=1)]
    request = pd.DataFrame(txs)[["amount", "timestamp", "category", "country"]]
    return to_model_input(pd.concat([features, request], axis=1)), missing


def _probabilities(model: Any, frame: pd.DataFrame) -> list[float]:
    result = model.predict(frame)
    if isinstance(result, pd.DataFrame):
        result = result["fraud_probability"]
    return [float(x) for x in list(result)]
