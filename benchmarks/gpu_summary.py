"""Collects the JSON files `benchmarks/gpu_suite.sh` wrote into `summary.json` and a RESULTS.md section.

Run by the suite: `python benchmarks/gpu_summary.py OUT_DIR --mode gpu --total-s 412`. A step whose JSON is
missing (failed or over its time limit) is listed as such; nothing is invented for it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

STEPS = ("encode_bf16", "query_latency", "rerank_latency", "api_throughput", "encoder_compare")


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a nested dict, keyed by its dotted path."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_numbers(value, f"{prefix}{key}."))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        out[prefix.rstrip(".")] = data
    return out


def summarise(step: str, data: dict) -> dict[str, Any]:
    if step == "encode_bf16":
        return {
            "dtype": data.get("dtype"),
            "batch_size": data.get("batch_size"),
            "batched_images_per_s": _get(data, "batched", "images_per_s"),
            "per_image_loop_images_per_s": _get(data, "per_image_loop", "images_per_s"),
            "speedup_batched_vs_loop": data.get("speedup_batched_vs_loop"),
        }
    if step == "query_latency":
        return {
            mode: {
                "total_p50_ms": _get(rep, "timings_ms", "total_ms", "p50"),
                "total_p95_ms": _get(rep, "timings_ms", "total_ms", "p95"),
                "encode_p50_ms": _get(rep, "timings_ms", "encode_ms", "p50"),
                "search_p50_ms": _get(rep, "timings_ms", "search_ms", "p50"),
            }
            for mode, rep in (data.get("modes") or {}).items()
        }
    if step == "rerank_latency":
        return {"k": data.get("k"), "tokens": data.get("tokens"), **_numbers(data.get("timing"), "timing.")}
    if step == "api_throughput":
        return {"levels": data.get("levels")}
    if step == "encoder_compare":
        return {
            name: {key: rep.get(key) for key in ("images_per_s", "dim", "dtype")}
            for name, rep in (data.get("encoders") or {}).items()
        }
    return {}


def section(summary: dict[str, Any]) -> str:
    lines = [
        f"\n## GPU suite ({summary['mode']}, {summary['date']})\n",
        f"Command: `bash benchmarks/gpu_suite.sh` ({summary['total_s']} s in all; random full-size weights: "
        "speed, not quality). JSON: `benchmarks/out/gpu/`.\n",
    ]
    for step in STEPS:
        entry = summary["steps"][step]
        if entry.get("missing"):
            lines.append(f"- **{step}**: no result ({entry['missing']})")
            continue
        data = entry["summary"]
        if step == "api_throughput":
            lines.append("- **api_throughput**:\n")
            lines.append(
                "  | concurrency | req/s | p50 ms | p95 ms | mean batch | encoder items/s at batch c | ratio |"
            )
            lines.append("  |---:|---:|---:|---:|---:|---:|---:|")
            for lv in data.get("levels") or []:
                lines.append(
                    f"  | {lv['concurrency']} | {lv['throughput_rps']} | {lv['p50_ms']} | {lv['p95_ms']} | "
                    f"{lv['mean_batch']} | {lv['encoder_items_per_s_at_batch_c']} | {lv['api_over_encoder']} |"
                )
        else:
            lines.append(f"- **{step}**: `{json.dumps(data)}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--mode", default="gpu")
    ap.add_argument("--total-s", type=int, default=0)
    args = ap.parse_args()
    summary: dict[str, Any] = {
        "benchmark": "gpu_suite",
        "mode": args.mode,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total_s": args.total_s,
        "platform": platform.platform(),
        "steps": {},
    }
    for step in STEPS:
        path = args.out / f"{step}.json"
        status = args.out / f"{step}.status.json"
        if not path.is_file():
            why = json.loads(status.read_text()) if status.is_file() else {"rc": None}
            summary["steps"][step] = {"missing": f"exit {why.get('rc')}; see {step}.log"}
            continue
        data = json.loads(path.read_text())
        summary["steps"][step] = {"summary": summarise(step, data), "file": path.name}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "RESULTS_section.md").write_text(section(summary))
    print(json.dumps(summary, indent=2))
    missing = [s for s, e in summary["steps"].items() if e.get("missing")]
    raise SystemExit(1 if missing else 0)


if __name__ == "__main__":
    main()
