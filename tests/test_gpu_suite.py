"""benchmarks/gpu_suite.sh (issue 12): its plan names only options its scripts declare, and its summariser turns
the step JSON files into summary.json and a RESULTS.md section, marking a missing step instead of inventing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_checks_every_step_option():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    steps = [line.split("]")[0] for line in done.stdout.splitlines()]
    gpu_steps = ["[encode_bf16", "[query_latency", "[rerank_latency", "[api_throughput", "[encoder_compare"]
    assert steps == gpu_steps * 2
    limits = [
        int(line.split("limit ")[1].split("s:")[0]) for line in done.stdout.splitlines()[: len(gpu_steps)]
    ]
    assert sum(limits) <= 8 * 60, "the GPU steps' limits must fit the 8-minute budget"


def test_unknown_option_is_a_usage_error():
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--fast"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "unknown option --fast" in done.stderr


def test_summary_reports_each_step_and_marks_a_missing_one(tmp_path):
    level = {"concurrency": 8, "requests": 64, "throughput_rps": 90.5, "p50_ms": 80.1, "p95_ms": 120.3,
             "server_batches": 9, "mean_batch": 7.1, "encoder_items_per_s_at_batch_c": 95.0, "api_over_encoder": 0.953}  # fmt: skip
    (tmp_path / "api_throughput.json").write_text(json.dumps({"levels": [level]}))
    (tmp_path / "encode_bf16.json").write_text(
        json.dumps({"dtype": "bfloat16", "batched": {"images_per_s": 812.0}})
    )
    (tmp_path / "query_latency.json").write_text(json.dumps({"modes": {"joint": {"timings_ms": {"total_ms": {"p50": 9.5, "p95": 12.0}}}}}))  # fmt: skip
    (tmp_path / "rerank_latency.status.json").write_text(json.dumps({"step": "rerank_latency", "rc": 124}))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_summary.py"), str(tmp_path), "--total-s", "300"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, "a missing step must fail the suite"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"]["rerank_latency"] == {"missing": "exit 124; see rerank_latency.log"}
    assert summary["steps"]["encode_bf16"]["summary"]["batched_images_per_s"] == 812.0
    section = (tmp_path / "RESULTS_section.md").read_text()
    assert "| 8 | 90.5 | 80.1 | 120.3 | 7.1 | 95.0 | 0.953 |" in section
    assert "- **rerank_latency**: no result (exit 124" in section
