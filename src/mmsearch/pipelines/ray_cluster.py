"""Joining or starting the Ray cluster for `mmsearch index --engine ray`, and the engine's options.

Entry points: `RayOptions` and `connect(options) -> started_here`. Without an address a local cluster starts on
127.0.0.1 with no dashboard; inside a Ray job `RAY_ADDRESS` names the cluster; an unreachable address fails in
seconds with `ClusterUnavailableError` (Ray itself retries for minutes).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Literal

from mmsearch.errors import ClusterUnavailableError, ConfigError

_CONNECT_TIMEOUT_S = 5.0

WRITE_MODES = ("upsert", "bulk-import")
_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RayOptions:
    """How the Ray engine runs. Defaults suit one machine; docs/SCALING.md says what to raise on a cluster.

    Args:
        address: a running cluster (`host:6379`, `ray://host:10001`, `auto`); None starts a local one on
            127.0.0.1 without a dashboard.
        num_cpus: CPUs of the local cluster (None: all cores).
        encode_actors: encoder replicas (one GPU each on a GPU cluster).
        gpus_per_actor: None: 1 when the cluster has GPUs, else 0 (CPU actors).
        encode_threads: torch threads per CPU actor (None: the node's cores / actors).
        fetch_tasks: fetch/decode tasks running at once; fetch_threads: downloads in flight per task.
        writers: upsert (server) or bulk-file actors.
        write: "upsert", or "bulk-import" for a first load of an empty server collection.
        bulk_dir: where import files go (must be readable by the Milvus server); None: a temporary folder.
        bulk_rows: rows per import file.
    """

    address: str | None = None
    num_cpus: int | None = None
    encode_actors: int = 1
    gpus_per_actor: float | None = None
    encode_threads: int | None = None
    fetch_tasks: int = 2
    fetch_threads: int = 8
    fetch_cpus: float = 0.5
    writers: int = 2
    write: Literal["upsert", "bulk-import"] = "upsert"
    bulk_dir: str | None = None
    bulk_rows: int = 8192

    def __post_init__(self) -> None:
        for name in ("encode_actors", "fetch_tasks", "fetch_threads", "writers", "bulk_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.write not in WRITE_MODES:
            raise ConfigError(f"write must be one of {WRITE_MODES}, got {self.write!r}")


# -- cluster ---------------------------------------------------------------------------------------------------


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes: Ray itself retries an unreachable address for a long time."""
    if address == "auto" or address.startswith(("http://", "https://")):
        return  # resolved by Ray itself (a local cluster file; the job API's address)
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ClusterUnavailableError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it (`ray start --head`) "
            "or omit --ray-address to run a local cluster"
        ) from None


# Ray turns `_node_ip_address="127.0.0.1"` into the host's routable address on Linux; with this variable unset to 0
# it keeps a local cluster on loopback (its desktop default). Read when ray is imported, so set it before that.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def connect(options: RayOptions) -> bool:
    """Connect to (or start) a Ray cluster; True when this call started it (the caller shuts it down)."""
    address = options.address or os.environ.get("RAY_ADDRESS")
    if not address:
        for key, value in LOOPBACK_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return False  # a caller (a test session, a notebook) already connected
    # Inside a Ray job (a KubeRay RayJob's entrypoint) RAY_ADDRESS names the cluster to join.
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, RuntimeError) as e:
            raise ClusterUnavailableError(f"cannot connect to the Ray cluster at {address}: {e}") from None
        return True
    ray.init(
        num_cpus=options.num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
    )
    return True


__all__ = ["LOOPBACK_ENV", "WRITE_MODES", "RayOptions", "connect"]
