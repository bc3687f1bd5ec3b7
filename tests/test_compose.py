"""compose.yaml and the Dockerfile, checked statically (no Docker engine here): the services Milvus standalone needs,
pinned images, health checks, ports, volumes, start-up order, and the API wired to Milvus by environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
PINNED = re.compile(r"^[\w./-]+:(v?\d+\.\d+\.\d+[\w.-]*|RELEASE\.[\dT-]+Z)$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_compose_has_milvus_standalone_and_api_services(services):
    assert set(services) == {"etcd", "minio", "milvus", "mmsearch"}


def test_every_image_is_pinned_to_an_exact_tag(services):
    for name, svc in services.items():
        image = svc["image"]
        assert PINNED.match(image), f"{name}: image {image!r} is not pinned to an exact version tag"
        assert not image.endswith(":latest"), f"{name}: :latest is not allowed"


def test_milvus_is_a_2_6_release(services):
    assert re.fullmatch(r"milvusdb/milvus:v2\.6\.\d+", services["milvus"]["image"])


def test_every_service_has_a_health_check(services):
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
        assert {"interval", "timeout", "retries"} <= set(check), f"{name}: health check lacks timing"


def test_milvus_waits_for_healthy_etcd_and_minio(services):
    deps = services["milvus"]["depends_on"]
    assert deps == {"etcd": {"condition": "service_healthy"}, "minio": {"condition": "service_healthy"}}
    env = services["milvus"]["environment"]
    assert env["ETCD_ENDPOINTS"] == "etcd:2379"
    assert env["MINIO_ADDRESS"] == "minio:9000"


def test_api_waits_for_healthy_milvus_and_points_at_it(services):
    api = services["mmsearch"]
    assert api["depends_on"] == {"milvus": {"condition": "service_healthy"}}
    assert api["environment"]["MMSEARCH_MILVUS_URI"] == "http://milvus:19530"
    assert api["command"][:2] == ["mmsearch", "serve"] and "0.0.0.0" in api["command"]
    assert api["build"]["dockerfile"] == "Dockerfile"


def test_ports_are_published(services):
    assert "127.0.0.1:19530:19530" in services["milvus"]["ports"]
    assert "127.0.0.1:8000:8000" in services["mmsearch"]["ports"]


def test_stateful_services_keep_data_in_declared_volumes(compose, services):
    declared = set(compose["volumes"])
    mounts = {"etcd": "/etcd", "minio": "/minio_data", "milvus": "/var/lib/milvus", "mmsearch": "/data"}
    for name, target in mounts.items():
        volumes = services[name]["volumes"]
        assert any(v.split(":")[1] == target and v.split(":")[0] in declared for v in volumes), (
            f"{name}: no named volume mounted at {target}"
        )


def test_dockerfile_installs_the_lock_with_cpu_torch_and_serves_on_all_interfaces():
    text = (ROOT / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^RUN pip install --require-hashes --no-deps .*-r requirements\.lock", text, re.M)
    assert re.search(r"^RUN pip install --no-deps \.", text, re.M)
    assert 'CMD ["mmsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]' in text
    assert re.search(r"^USER (?!root)\w+", text, re.M), "the API must not run as root"
