"""Run one Ray *worker* node in the foreground, bound to loopback.

Why not ``ray start --address=127.0.0.1:PORT``: Ray rewrites a loopback address
to the machine's routable one unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and
with that flag ``ray start`` refuses to add worker nodes. Ray's own multi-node
test clusters (``ray.cluster_utils.Cluster``) start nodes through
``ray._private.node.Node``; this does the same, in a process of its own that
blocks like ``ray start --block``: SIGTERM stops the node's processes gracefully,
and if one of them dies the rest are stopped and the launcher exits non-zero.

Usage: python -m shipyard._raynode --gcs-address 127.0.0.1:6380 [--num-cpus N] ...
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shipyard._raynode")
    parser.add_argument("--gcs-address", required=True)
    parser.add_argument("--node-ip-address", default="127.0.0.1")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--object-store-memory", type=int, default=None)
    parser.add_argument("--min-worker-port", type=int, required=True)
    parser.add_argument("--max-worker-port", type=int, required=True)
    args = parser.parse_args(argv)

    # Loopback everywhere, for this process and everything the node spawns.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.node
    import ray._private.parameter

    params = ray._private.parameter.RayParams(
        node_ip_address=args.node_ip_address,
        gcs_address=args.gcs_address,
        num_cpus=args.num_cpus,
        object_store_memory=args.object_store_memory,
        min_worker_port=args.min_worker_port,
        max_worker_port=args.max_worker_port,
        node_manager_port=0,
        include_log_monitor=False,  # the head's monitor already tails this machine
    )
    # As in ray.cluster_utils: let Ray pick the dashboard agent's port.
    params.dashboard_agent_listen_port = None
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"ray worker node {node.node_id} started on {args.node_ip_address}", flush=True)

    def _stop(signum: int, _frame: object) -> None:
        print(f"received signal {signum}; stopping the node", flush=True)
        node.kill_all_processes(check_alive=False, allow_graceful=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while True:
        time.sleep(1)
        dead = node.dead_processes()
        if dead:
            names = ", ".join(kind for kind, _ in dead)
            print(f"ray processes exited unexpectedly: {names}; stopping the node", flush=True)
            node.kill_all_processes(check_alive=False, allow_graceful=False)
            os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
