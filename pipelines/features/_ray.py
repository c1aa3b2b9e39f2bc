"""Connecting a pipeline to Ray: the job's cluster, a given address, or a local one.

Inside a Ray job ``RAY_ADDRESS`` is set and ``ray.init()`` joins that cluster. For
``--local`` runs we start a private single-node Ray bound to 127.0.0.1; Ray would
otherwise advertise the machine's network address.
"""

from __future__ import annotations

import os


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
) -> None:
    """Initialise Ray once for this process (idempotent)."""
    import ray

    from pipelines.features._feast_fixes import SETUP_HOOK, install

    install()  # in this process; Ray workers get it from the setup hook
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        # A job's workers take the hook from the job's runtime env (set at submission).
        ray.init(address=address, log_to_driver=True)
        return
    # Ray reads this switch at import; the driver has imported Ray already (Feast
    # does), so set it for the processes ray.init starts and for this one.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # A new local ray.init() would otherwise switch token auth on and write
    # ~/.ray/auth_token, which then turns auth on for every later `ray start` too.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    if num_cpus is None and os.environ.get("SHIPYARD_SETTINGS_JSON"):  # `shipyard ... --local`
        from shipyard.settings import load_settings

        num_cpus = load_settings().ray.cpus_per_node
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        log_to_driver=True,
        runtime_env={"worker_process_setup_hook": SETUP_HOOK},
    )
