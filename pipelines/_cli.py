"""Argument parsing and reporting shared by the workloads' entrypoints
(``shipyard.workload``): the CLI passes a command's arguments through, and each
entrypoint parses its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shipyard.errors import ShipyardError


def iso_time(value: str) -> datetime:
    """An ISO 8601 date or time; UTC when it names no zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO date such as 2026-07-01"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def int_range(low: int, high: int | None = None) -> type[int]:
    """An integer within ``[low, high]``, named in the error when it is not."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{number} is not {bound}")
        return number

    return parse  # type: ignore[return-value]


def fail(exc: ShipyardError, code: int | None = None) -> int:
    """An entrypoint's one-line error (and hint) on stderr, as the CLI prints one; the
    exit code: ``code``, else the error's own."""
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return exc.exit_code if code is None else code


def report_training(result: dict, validation: str, echo: Callable[[str], None]) -> None:
    """A training entrypoint's result for a person (``shipyard train``): the run, the
    registered version and its aliases, the ``validation`` metrics, the gate."""
    echo(f"MLflow run     {result['run_url']}")
    echo(f"registered     {result['model_name']} version {result['version']}"
         f" aliases: {', '.join(result['aliases']) or 'none'}")  # fmt: skip
    echo(f"validation     {validation}")
    echo(f"gate           {'PASSED' if result['gate_passed'] else 'REFUSED'}: "
         f"{result['gate_reason']}")  # fmt: skip
