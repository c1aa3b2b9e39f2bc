"""Shipyard's exception hierarchy.

Every error a user can cause or meet derives from :class:`ShipyardError`; the CLI
turns one into a single line (``error: <message>`` plus a hint) and a non-zero exit.

    ShipyardError
    ├── ConfigError            invalid settings, unreadable config or input files
    ├── PlatformError          the local platform (shipyard up/down/status)
    │   ├── PortInUseError     a configured port is taken
    │   └── ComponentStartError  a process did not come up
    ├── JobError               Ray job submission and tracking
    │   ├── ClusterUnreachableError
    │   ├── JobNotFoundError
    │   └── JobFailedError     the job ended FAILED or STOPPED
    └── DataError              bad arguments or data for a pipeline

Exit codes: 1 a ShipyardError, 2 ConfigError/DataError (and click's usage errors), 3
the MLflow server, 4 the registry or the rollout controller, 5 the Serve backend;
:data:`ALERT_EXIT_CODE` (10) is no error: `monitor check` raised an alert.
"""

from __future__ import annotations

__all__ = [
    "ALERT_EXIT_CODE",
    "ClusterUnreachableError",
    "ComponentStartError",
    "ConfigError",
    "DataError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "PlatformError",
    "PortInUseError",
    "ShipyardError",
]


#: `shipyard monitor check` raised an alert (for a scheduler; errors exit 1-5)
ALERT_EXIT_CODE = 10


class ShipyardError(Exception):
    """Root of every error Shipyard raises on purpose.

    ``hint`` says what to do about it; the CLI prints it after the message.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(ShipyardError):
    """Settings or a configuration file are invalid."""

    exit_code = 2


class PlatformError(ShipyardError):
    """The local platform could not be started, inspected or stopped."""


class PortInUseError(PlatformError):
    """A port from settings is already taken by another process."""


class ComponentStartError(PlatformError):
    """A component's process exited or did not become ready in time."""


class JobError(ShipyardError):
    """A Ray job could not be submitted, found or tracked."""


class ClusterUnreachableError(JobError):
    """The Ray dashboard (Job Submission API) does not answer."""


class JobNotFoundError(JobError):
    """No job with that id exists on the cluster."""


class JobFailedError(JobError):
    """A job ended in FAILED or STOPPED; the message carries Ray's reason."""


class DataError(ShipyardError):
    """Bad arguments or input data for a data pipeline."""

    exit_code = 2
