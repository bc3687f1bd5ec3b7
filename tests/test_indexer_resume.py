"""Resumability: `kill -9` on a real `mmsearch index` process mid-run, then a re-run ends with the exact count."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from indexer_support import amazon_record, product_image_bytes, serve_images

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.store import ProductStore

N_PRODUCTS, IMAGES_EACH = 40, 4
TOTAL = N_PRODUCTS * IMAGES_EACH


def _stderr_lines(proc: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.slow
def test_rerun_after_sigkill_mid_run_ends_with_exact_count_and_no_duplicates(tmp_path):
    files = {
        f"p{p}_{i}.jpg": product_image_bytes(p * IMAGES_EACH + i) for p in range(N_PRODUCTS) for i in range(4)
    }
    db, cache = tmp_path / "milvus.db", tmp_path / "cache"
    # Each image takes 0.2 s to serve, so the run lasts seconds and the kill lands mid-run.
    with serve_images(files, slow_s=0.2) as srv:
        catalog = tmp_path / "products.jsonl"
        catalog.write_text(
            "".join(
                json.dumps(amazon_record(f"B{p:05d}", [srv.url("slow", f"p{p}_{i}.jpg") for i in range(4)]))
                + "\n"
                for p in range(N_PRODUCTS)
            )
        )
        cmd = [sys.executable, "-m", "mmsearch.cli", "-v", "index", "--smoke", "--source", str(catalog)]
        cmd += ["--milvus-uri", str(db), "--collection", "products", "--batch-size", "4"]
        cmd += ["--failure-log", str(tmp_path / "failures.jsonl")]
        env = {**os.environ, "MMSEARCH_CACHE_DIR": str(cache)}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines, seen, deadline = _stderr_lines(proc), [], time.monotonic() + 120
        try:
            while sum("upserted batch" in s for s in seen) < 3:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                assert line is not None, "indexer exited before writing 3 batches:\n" + "".join(seen)
                seen.append(line)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

        with ProductStore(str(db), collection="products") as store:
            interrupted_count = store.count()
        assert 12 <= interrupted_count < TOTAL, (
            f"the kill should land mid-run, found {interrupted_count} rows"
        )

        srv.slow_s = 0.0  # the re-run need not be slow
        settings = Settings(milvus_uri=str(db), collection="products", cache_dir=cache, smoke=True)
        with Engine(settings=settings) as engine:
            report = engine.index(str(catalog), batch_size=16)

    assert report.skipped_existing == interrupted_count
    assert (report.indexed + report.skipped_existing, report.failed) == (TOTAL, 0)
    with ProductStore(str(db), collection="products") as store:
        assert store.count() == TOTAL
        ids = [f"B{p:05d}:{i}" for p in range(N_PRODUCTS) for i in range(IMAGES_EACH)]
        assert store.existing_ids(ids) == set(ids)
