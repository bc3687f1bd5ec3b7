"""`mmsearch index --engine ray` against the local engine: same ids, vectors and failures on the same catalogue,
kill -9 resume, worker writes and bulk import on the loopback Milvus server, an unreachable cluster.

Tiny random-weight Visualized BGE, real Milvus Lite, one local Ray cluster per session (`ray_cluster`).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from indexer_support import amazon_record, bad_payloads, product_image_bytes, serve_images, write_catalog

from mmsearch.config import Settings
from mmsearch.indexer.failures import read_failures
from mmsearch.store import ProductStore
from mmsearch.testing import tiny_visual_bge_encoder

N_RESUME = 16
FETCH = {"timeout": 2.0, "retries": 0, "max_pixels": 10**6}


def hostile_catalogue(root: Path, base_url: str) -> Path:
    """Good products (local files and URLs) mixed with every kind of bad record and image."""
    catalog = write_catalog(root, 5, images_per_product=2)
    records = [json.loads(line) for line in catalog.read_text().splitlines()]
    records += [
        amazon_record(
            "BHTTP", [f"{base_url}/img/good0.jpg", f"{base_url}/img/good1.jpg"], title="Web product"
        ),
        amazon_record("BCORRUPT", [f"{base_url}/img/corrupt.jpg"]),
        amazon_record("BBOMB", [f"{base_url}/img/bomb.png"]),
        amazon_record("B404", [f"{base_url}/img/missing.jpg"]),
        amazon_record("BLOCAL", ["img/not_there.jpg"]),
        {"title": "a record without parent_asin"},
    ]
    lines = [json.dumps(r) for r in records]
    lines.insert(3, "{not json")
    catalog.write_text("\n".join(lines) + "\n")
    return catalog


def settings_for(tmp: Path, name: str, uri: str | None = None) -> Settings:
    return Settings(
        milvus_uri=uri or str(tmp / f"{name}.db"), collection=f"c_{name}", cache_dir=tmp / "cache"
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_bge")


@pytest.fixture(scope="module")
def both_engines(ray_cluster, tiny_dir, tmp_path_factory):
    """The same hostile catalogue indexed by the local engine and by the Ray engine (driver writes to Lite)."""
    from mmsearch.pipelines.ray_engine import RayOptions, run_index_ray

    tmp = tmp_path_factory.mktemp("engines")
    files = {"good0.jpg": product_image_bytes(100), "good1.jpg": product_image_bytes(101), **bad_payloads()}
    with serve_images(files) as srv:
        catalog = hostile_catalogue(tmp / "data", srv.base)
        local = _run_local(settings_for(tmp, "local"), catalog, tmp, tiny_dir)
        ray_report = run_index_ray(
            settings_for(tmp, "ray"),
            source=str(catalog),
            failure_log=tmp / "ray_failures.jsonl",
            batch_size=4,
            progress=False,
            options=RayOptions(fetch_tasks=1, writers=1),
            encoder_factory=functools.partial(tiny_visual_bge_encoder, tiny_dir),
            fetch_overrides=FETCH,
        )
    return {"tmp": tmp, "catalog": catalog, "local": local, "ray": ray_report}


def _run_local(settings: Settings, catalog: Path, tmp: Path, tiny_dir: Path):
    """The local engine with the test's fetch options (timeouts, pixel bound)."""
    from mmsearch.indexer.failures import FailureLog
    from mmsearch.indexer.job import IndexJob
    from mmsearch.indexer.sources import JsonlSource
    from mmsearch.media.fetch import ImageFetcher

    with (
        ProductStore(settings.milvus_uri, collection=settings.collection) as store,
        ImageFetcher(cache_dir=tmp / "cache" / "images", **FETCH) as fetcher,
        FailureLog(tmp / "local_failures.jsonl") as failures,
    ):
        job = IndexJob(
            tiny_visual_bge_encoder(tiny_dir), store, fetcher, failures, batch_size=4, progress=False
        )
        return job.run(JsonlSource(catalog))


def stored(settings: Settings) -> dict[str, dict[str, np.ndarray]]:
    with ProductStore(settings.milvus_uri, collection=settings.collection) as store:
        ids = list(store.iter_ids())
        out = {"image": store.get_vectors(ids)}
        if store.has_text_vector:
            out["text"] = store.get_vectors(ids, field="text_vector")
        return out


@pytest.mark.slow
def test_ray_engine_stores_the_same_ids_and_vectors_as_the_local_engine(both_engines):
    tmp = both_engines["tmp"]
    local, ray_rows = stored(settings_for(tmp, "local")), stored(settings_for(tmp, "ray"))
    assert len(local["image"]) == 12  # 5 products x 2 local images + the 2 web images
    assert set(ray_rows["image"]) == set(local["image"])
    for field in ("image", "text"):
        for pid, vector in local[field].items():
            np.testing.assert_allclose(ray_rows[field][pid], vector, atol=1e-5, err_msg=f"{field} {pid}")


@pytest.mark.slow
def test_ray_engine_logs_the_same_failures_as_the_local_engine(both_engines):
    tmp = both_engines["tmp"]

    def entries(name: str) -> set[tuple[str, str, str, str]]:
        return {
            (r["id"], r["source"], r["stage"], r["reason"])
            for r in read_failures(tmp / f"{name}_failures.jsonl")
        }

    local = entries("local")
    assert {entry[0] for entry in local} == {"", "BCORRUPT:0", "BBOMB:0", "B404:0", "BLOCAL:0"}
    assert entries("ray") == local
    assert (both_engines["ray"].failed, both_engines["ray"].indexed) == (6, 12)


@pytest.mark.slow
def test_ray_summary_has_the_counts_and_per_stage_rates(both_engines):
    summary = both_engines["ray"].summary()
    assert summary.startswith("indexed 12, skipped 0 (already present), failed 6 (first: ")
    assert "(ray, per worker: fetch " in summary and ", encode " in summary and ", write " in summary
    assert both_engines["ray"].stages["encode"]["items"] == 12


# -- kill -9 and resume --------------------------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmsearch.cli", "-v", "index", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def _kill_after_first_write(proc: subprocess.Popen, timeout_s: float = 300) -> list[str]:
    """SIGKILL the driver as soon as it reports its first written batch; returns its stderr lines."""
    lines: list[str] = []
    written = threading.Event()

    def pump() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "rows written" in line:
                written.set()

    threading.Thread(target=pump, daemon=True).start()
    if not written.wait(timeout_s):
        proc.kill()
        pytest.fail("the driver wrote nothing in time:\n" + "".join(lines[-20:]))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return lines


def _resume_scenario(ray_cluster: str, tmp: Path, uri: str, collection: str) -> None:
    files = {f"p{i}.jpg": product_image_bytes(200 + i) for i in range(N_RESUME)}
    with serve_images(files, slow_s=1.0) as srv:  # slower than the encoder actor starts
        records = [
            amazon_record(f"BK{i:03d}", [srv.url("slow", f"p{i}.jpg")], title=f"p {i}")
            for i in range(N_RESUME)
        ]
        catalog = tmp / "slow.jsonl"
        catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
        env = {
            **os.environ,
            "MMSEARCH_CACHE_DIR": str(tmp / "cache"),
            "MMSEARCH_SMOKE": "1",
            "PYTHONPATH": os.pathsep.join(sys.path),
        }
        args = ["--engine", "ray", "--ray-address", ray_cluster, "--source", str(catalog), "--milvus-uri", uri,
                "--collection", collection, "--batch-size", "2", "--workers", "1", "--fetch-tasks", "1"]  # fmt: skip
        _kill_after_first_write(_cli(args, env))
        with ProductStore(uri, collection=collection) as store:
            partial = store.count(consistency="Strong")
        assert 0 < partial < N_RESUME, (
            f"the kill should land mid-run, {partial} of {N_RESUME} rows were stored"
        )
        done = subprocess.run(
            [sys.executable, "-m", "mmsearch.cli", "index", *args], env=env, capture_output=True, text=True
        )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert f"indexed {N_RESUME - partial}, skipped {partial} (already present), failed 0" in summary
    with ProductStore(uri, collection=collection) as store:
        ids = list(store.iter_ids())
        assert store.count(consistency="Strong") == N_RESUME
    assert sorted(ids) == [f"BK{i:03d}:0" for i in range(N_RESUME)]  # every id once: no duplicates


@pytest.mark.slow
def test_kill_9_of_the_driver_then_rerun_ends_with_every_row_once_on_lite(ray_cluster, tmp_path):
    _resume_scenario(ray_cluster, tmp_path, str(tmp_path / "resume.db"), "resume")


@pytest.mark.slow
@pytest.mark.server
def test_kill_9_of_the_driver_then_rerun_ends_with_every_row_once_on_a_server(
    ray_cluster, milvus_server, tmp_path
):
    _resume_scenario(ray_cluster, tmp_path, milvus_server.uri, f"resume_{os.getpid()}_{int(time.time())}")


# -- server: worker writes and bulk import ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("write", ["upsert", "bulk-import"])
def test_server_writes_store_the_local_engines_vectors(
    write, both_engines, milvus_server, tiny_dir, tmp_path
):
    from mmsearch.pipelines.ray_engine import RayOptions, run_index_ray

    tmp = both_engines["tmp"]
    settings = settings_for(tmp_path, f"srv_{write.replace('-', '_')}_{int(time.time())}", milvus_server.uri)
    catalog = write_catalog(tmp_path / "data", 5, images_per_product=2)  # the good part of the catalogue
    report = run_index_ray(
        settings,
        source=str(catalog),
        failure_log=tmp_path / "failures.jsonl",
        batch_size=4,
        progress=False,
        options=RayOptions(fetch_tasks=1, writers=2, write=write, bulk_dir=str(tmp_path / "bulk")),
        encoder_factory=functools.partial(tiny_visual_bge_encoder, tiny_dir),
        fetch_overrides=FETCH,
    )
    assert (report.indexed, report.failed, report.stored) == (10, 0, 10)
    local = stored(settings_for(tmp, "local"))["image"]
    server = stored(settings)["image"]
    assert set(server) == {pid for pid in local if pid.startswith("B0")}
    for pid, vector in server.items():
        np.testing.assert_allclose(vector, local[pid], atol=1e-5, err_msg=pid)


# -- errors --------------------------------------------------------------------------------------------------------


def test_unreachable_ray_address_is_a_one_line_error(tmp_path):
    from conftest import free_loopback_ports

    catalog = write_catalog(tmp_path / "data", 1, images_per_product=1)
    (port,) = free_loopback_ports(1)
    done = subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", "index", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
         "--source", str(catalog), "--milvus-uri", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "MMSEARCH_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"mmsearch index: error: cannot reach the Ray cluster at 127.0.0.1:{port} (Connection refused); "
        "start it (`ray start --head`) or omit --ray-address to run a local cluster"
    ]
