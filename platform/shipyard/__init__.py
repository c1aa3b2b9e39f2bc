"""Shipyard: a Ray-based, end-to-end ML platform on Kubernetes.

The public API is small; each lifecycle verb lives in its own module:
``shipyard.settings`` (load_settings), ``shipyard.local`` (up/down/status),
``shipyard.jobs`` (Ray job submission), ``shipyard.errors`` (the hierarchy).
Importing shipyard starts nothing and configures nothing.
"""

from shipyard.errors import ShipyardError
from shipyard.settings import Settings, load_settings

__all__ = ["Settings", "ShipyardError", "__version__", "load_settings"]
__version__ = "0.1.0"
