"""Shared pytest fixtures. Sections: Milvus (Lite and a real loopback server). Other sections follow below."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mmsearch.pipelines.ray_cluster import LOOPBACK_ENV

# Any local Ray cluster a test starts (the fixture below, subprocess `mmsearch index --engine ray` runs) stays on
# 127.0.0.1: Ray reads this when it is first imported, so it is set before any test module imports it.
for _key, _value in LOOPBACK_ENV.items():
    os.environ.setdefault(_key, _value)

# =====================================================================================================
# Milvus
#
# `store_backend` is parametrized over "lite" (Milvus Lite in tmp_path) and "server" (a real Milvus
# standalone process on 127.0.0.1, from `pip install milvus`, started once per session). Set
# MMSEARCH_TEST_MILVUS_URI=http://host:19530 to run the server half against an existing server instead
# (e.g. compose.yaml's 2.6, where the hybrid tests run too), or MMSEARCH_TEST_MILVUS_SERVER=0 to skip it.
# =====================================================================================================

SERVER_START_TIMEOUT_S = 90.0
# Shorter coordinator intervals: Strong reads wait for the next time tick and loads poll the query
# coordinator, so the defaults (200 ms ticks, 1 s checks, skip mode when idle) make each test seconds slower.
TEST_SERVER_TUNING = {
    "proxy.timeTickInterval": 20,
    "queryCoord.checkInterval": 100,
    "queryCoord.distPullInterval": 50,
    "dataNode.dataSync.skipMode.enable": "false",
}
TEST_ENCODER_ID = "test-encoder/random-unit-vectors"


def free_loopback_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 right now (the OS picks them, so parallel runs don't clash)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class MilvusServerHandle:
    uri: str
    version: str
    log_dir: Path | None = None

    @property
    def version_tuple(self) -> tuple[int, int]:
        digits = self.version.lstrip("v").split("-")[0].split(".")
        return tuple(int(d) for d in digits[:2])

    @property
    def supports_multi_vector(self) -> bool:
        """Multi-vector collections and hybrid_search arrived in Milvus 2.4."""
        return self.version_tuple >= (2, 4)

    @property
    def supports_bm25(self) -> bool:
        """BM25 functions (sparse fields Milvus fills from analysed text) arrived in Milvus 2.5."""
        return self.version_tuple >= (2, 5)


def _log_tail(log_dir: Path, lines: int = 15) -> str:
    out = []
    for name in ("milvus-stdout.log", "milvus-stderr.log"):
        path = log_dir / name
        if path.is_file():
            out += path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(out) or "(no log output)"


def _wait_ready(server, health_port: int, uri: str, deadline: float) -> str:
    """Poll /healthz, then a real gRPC call, until the server answers or `deadline` passes."""
    from pymilvus import MilvusClient

    health = f"http://127.0.0.1:{health_port}/healthz"
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.server_proc is None or server.server_proc.poll() is not None:
            raise RuntimeError(f"Milvus server process exited during start-up: {last}")
        try:
            with urllib.request.urlopen(health, timeout=2) as resp:
                if b"OK" in resp.read():
                    client = MilvusClient(uri, timeout=5)
                    try:
                        client.list_collections(timeout=5)
                        return client.get_server_version(timeout=5)
                    finally:
                        client.close()
        except Exception as err:  # noqa: BLE001 - any failure here just means "not ready yet"
            last = f"{type(err).__name__}: {err}"
        time.sleep(0.5)
    raise TimeoutError(f"Milvus server not ready after {SERVER_START_TIMEOUT_S:.0f} s ({last})")


@contextlib.contextmanager
def run_milvus_server(base_dir: Path) -> Iterator[MilvusServerHandle]:
    """Start Milvus standalone (the `milvus` 2.3.5 wheel) in `base_dir` on free loopback ports; stop it after.

    The wheel's own port scan starts at fixed numbers and its embedded etcd always takes 2379/2380, so two
    test runs on one machine would collide: we pick every port ourselves and give etcd a config file of its
    own. etcd listens on 127.0.0.1 only; Milvus 2.3 binds its gRPC ports on all interfaces (not configurable)
    but advertises 127.0.0.1 (`*.ip`), so nothing talks over other interfaces.
    """
    from milvus import MilvusServer, MilvusServerConfig

    port_keys = [k for k in MilvusServerConfig().configurable_items if k.endswith("_port")]
    ports = dict(
        zip([*port_keys, "etcd_peer", "metrics"], free_loopback_ports(len(port_keys) + 2), strict=True)
    )
    etcd_conf = base_dir / "embed-etcd.yaml"
    base_dir.mkdir(parents=True, exist_ok=True)
    client_url = f"http://127.0.0.1:{ports['etcd_port']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    etcd_conf.write_text(
        f"listen-client-urls: {client_url}\nadvertise-client-urls: {client_url}\n"
        f"listen-peer-urls: {peer_url}\ninitial-advertise-peer-urls: {peer_url}\n"
        f"initial-cluster: default={peer_url}\n"
    )
    server = MilvusServer(MilvusServerConfig(), wait_for_started=False)
    server.set_base_dir(str(base_dir))
    for key in port_keys:
        server.config.configs[key] = ports[key]
    for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode"):
        server.config.set(f"{component}.ip", "127.0.0.1")
    for key, value in TEST_SERVER_TUNING.items():
        server.config.set(key, value)
    # The wheel reads METRICS_PORT from its own attribute, and Milvus maps ETCD_CONFIG_PATH to etcd.config.path.
    server.webservice_port = ports["metrics"]
    server.config.resolve_port = lambda start: (ports["metrics"], socket.socket())
    uri = f"http://127.0.0.1:{ports['proxy_port']}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ETCD_CONFIG_PATH", str(etcd_conf))
        try:
            server.start()
            version = _wait_ready(server, ports["metrics"], uri, time.monotonic() + SERVER_START_TIMEOUT_S)
        except BaseException as err:
            server.stop()
            raise RuntimeError(f"{err}\n--- server log tail ---\n{_log_tail(base_dir / 'logs')}") from None
    try:
        yield MilvusServerHandle(uri=uri, version=version, log_dir=base_dir / "logs")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[MilvusServerHandle]:
    """A Milvus server for the session: MMSEARCH_TEST_MILVUS_URI if set, else a fresh loopback process."""
    external = os.environ.get("MMSEARCH_TEST_MILVUS_URI")
    if external:
        from pymilvus import MilvusClient

        client = MilvusClient(external, timeout=10)
        try:
            yield MilvusServerHandle(uri=external, version=client.get_server_version(timeout=10))
        finally:
            client.close()
        return
    if os.environ.get("MMSEARCH_TEST_MILVUS_SERVER", "1") == "0":
        pytest.skip("server tests disabled by MMSEARCH_TEST_MILVUS_SERVER=0")
    try:
        import milvus  # noqa: F401
    except ImportError:
        pytest.skip("no Milvus server: `pip install milvus` (2.3.5, Linux x86_64) provides one")
    start_error = None
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(run_milvus_server(tmp_path_factory.mktemp("milvus-server")))
        except Exception as err:  # noqa: BLE001 - reported as the skip reason
            start_error = f"Milvus server could not start on this machine: {err}"
        if start_error is None:
            yield handle
            return
    pytest.skip(start_error)


@dataclass
class StoreBackend:
    """Where a test's store lives, plus a factory for stores on a fresh, test-private collection."""

    name: str  # "lite" or "server"
    uri: str
    collection: str
    server: MilvusServerHandle | None = None

    @property
    def supports_hybrid(self) -> bool:
        return self.server is None or self.server.supports_multi_vector

    def skip_without_hybrid(self) -> None:
        if not self.supports_hybrid:
            pytest.skip(
                f"Milvus {self.server.version} has no multi-vector collections or hybrid_search (needs >= 2.4)"
            )

    @property
    def supports_bm25(self) -> bool:
        return self.server is None or self.server.supports_bm25

    def skip_without_bm25(self) -> None:
        if not self.supports_bm25:
            pytest.skip(
                f"Milvus {self.server.version} has no BM25 functions (hybrid-bm25 needs Milvus >= 2.5)"
            )

    def open(self, **kwargs):
        from mmsearch.store import ProductStore

        # Tests read right after they write: Strong, unless a test asks for another level.
        kwargs.setdefault("consistency", "Strong")
        return ProductStore(self.uri, collection=self.collection, **kwargs)


BACKENDS = ["lite", pytest.param("server", marks=pytest.mark.server)]


def _backend(request, path: Path) -> Iterator[StoreBackend]:
    collection = f"t_{uuid.uuid4().hex[:12]}"
    if request.param == "lite":
        yield StoreBackend("lite", str(path / "milvus.db"), collection)
        return
    server = request.getfixturevalue("milvus_server")
    yield StoreBackend("server", server.uri, collection, server)
    from pymilvus import MilvusClient

    client = MilvusClient(server.uri, timeout=10)
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def store_backend(request, tmp_path) -> Iterator[StoreBackend]:
    """A fresh collection per test, on each backend."""
    yield from _backend(request, tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_backend(request, tmp_path_factory) -> Iterator[StoreBackend]:
    """One collection per test module and backend, for read-only tests over a shared catalogue."""
    yield from _backend(request, tmp_path_factory.mktemp("milvus-module"))


@pytest.fixture
def open_store(store_backend) -> Iterator[Callable[..., object]]:
    """`open_store(dim=8, with_text_vector=True, **store_kwargs)`: a store with its collection ensured."""
    opened = []

    def make(*, dim: int = 8, with_text_vector: bool = True, encoder_id: str = TEST_ENCODER_ID, **kwargs):
        store = store_backend.open(**kwargs)
        opened.append(store)
        store.ensure_collection(encoder_id=encoder_id, dim=dim, with_text_vector=with_text_vector)
        return store

    yield make
    for store in opened:
        store.close()


def random_unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 rows of unit length."""
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def unit_vectors() -> Callable[..., np.ndarray]:
    return random_unit_vectors


# =====================================================================================================
# (end of the Milvus section)
# =====================================================================================================


# =====================================================================================================
# Ray
#
# One local Ray cluster per test session, started only when a test asks for `ray_cluster` (the Ray engine
# tests), so no other test pays its start-up: 127.0.0.1 only, 2 CPUs, no dashboard.
# =====================================================================================================


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """The GCS address of a local Ray cluster; this process is connected to it as a driver."""
    import logging

    ray = pytest.importorskip("ray", reason="the Ray engine tests need `pip install mmsearch[ray]`")

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:"), f"the test cluster must stay on loopback, got {address}"
    try:
        yield address
    finally:
        ray.shutdown()


# =====================================================================================================
# (end of the Ray section)
# =====================================================================================================
