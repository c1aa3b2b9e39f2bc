"""The MLflow Model Registry as Shipyard uses it: the server check, the aliases a
rollout moves, and the one call every training pipeline registers a model with.

Everything goes through the tracking server over HTTP (``MlflowClient(uri)``).
"""

from __future__ import annotations

from shipyard.errors import ShipyardError

__all__ = ["CHALLENGER", "CHAMPION", "TrackingError", "check_server"]

#: The version serving traffic, and the candidate a rollout tries next.
CHAMPION, CHALLENGER = "champion", "challenger"


class TrackingError(ShipyardError):
    """The MLflow tracking server is unreachable or refused a request."""

    exit_code = 3


def check_server(uri: str, timeout: float = 5.0) -> None:
    """One clear error when the server does not answer, before any work starts."""
    import requests

    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:160]
        raise TrackingError(
            f"the MLflow tracking server at {uri} is not reachable ({reason})",
            hint="start the local platform with `shipyard up`, or point mlflow.tracking_uri "
            "(SHIPYARD_MLFLOW__TRACKING_URI) at a running server",
        ) from None
