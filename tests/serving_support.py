"""Kept for the benchmark: the traffic helpers live in ``shipyard.traffic``."""

from shipyard.traffic import Load, transaction

__all__ = ["Load", "transaction"]
