#!/usr/bin/env bash
# Every GPU figure mmsearch tracks, on one GPU, in under 8 minutes: encode throughput in bf16, query latency end
# to end, rerank latency, and API throughput at concurrency 1/8/32. Random full-size weights: speed, not quality.
#
#   bash benchmarks/gpu_suite.sh                 # on a machine with one CUDA GPU
#   bash benchmarks/gpu_suite.sh --dry-run       # print the plan and check every script accepts its options
#   bash benchmarks/gpu_suite.sh --smoke         # the same pipeline on CPU with tiny sizes (checks the plumbing)
#
# Writes benchmarks/out/gpu/<step>.json, benchmarks/out/gpu/summary.json and benchmarks/out/gpu/RESULTS_section.md
# (append the latter to benchmarks/RESULTS.md with --append-results). Each step has its own time limit, so one
# slow step cannot take the suite past its budget; a failed step is reported and the others still run.
set -uo pipefail

MODE=gpu
APPEND=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry ;;
    --smoke) MODE=smoke ;;
    --append-results) APPEND=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown option $arg (expected --dry-run, --smoke, --append-results)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"
OUT="${MMSEARCH_GPU_SUITE_OUT:-$ROOT/benchmarks/out/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

# step: name|time limit (s)|command. The GPU limits add up to 480 s, the 8-minute budget; encoder_compare has the
# tightest one (four random full-size models are built on the CPU first), so it encodes 128 images once.
GPU_STEPS=(
  "encode_bf16|100|benchmarks/encode_throughput.py --device cuda --dtype bfloat16 --also-dtype float32 --batch-size 64 --n-images 512 --loop-images 32 --rounds 2"
  "query_latency|90|benchmarks/query_latency.py --full-size --device cuda --n-vectors 10000 --queries 50 --modes joint,weighted,fused"
  "rerank_latency|120|benchmarks/rerank_latency.py --size full --device cuda --dtype bfloat16 --k 9"
  "api_throughput|140|benchmarks/api_throughput.py --device cuda --concurrency 1 8 32 --requests-per-client 8 --encoder-seconds 5"
  "encoder_compare|30|benchmarks/encode_throughput.py --device cuda --dtype bfloat16 --encoder visualized-bge-base --encoder visualized-bge-m3 --encoder clip --encoder siglip --batch-size 64 --n-images 128 --rounds 1"
)
SMOKE_STEPS=(
  "encode_bf16|300|benchmarks/encode_throughput.py --device cpu --dtype bfloat16 --batch-size 2 --n-images 2 --loop-images 1 --rounds 1 --source-size 64 64"
  "query_latency|300|benchmarks/query_latency.py --device cpu --n-vectors 200 --queries 2 --warmup 1 --modes joint"
  "rerank_latency|300|benchmarks/rerank_latency.py --size tiny --device cpu --dtype float32 --k 3"
  "api_throughput|300|benchmarks/api_throughput.py --tiny --device cpu --concurrency 1 2 --requests-per-client 1 --n-vectors 200 --encoder-seconds 0.2"
  "encoder_compare|300|benchmarks/encode_throughput.py --device cpu --dtype float32 --encoder clip --encoder siglip --batch-size 1 --n-images 1 --rounds 1 --source-size 64 64"
)
case "$MODE" in
  gpu)
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
      echo "gpu_suite.sh: no CUDA GPU visible to torch; use --smoke for a CPU plumbing check" >&2
      exit 2
    fi
    STEPS=("${GPU_STEPS[@]}") ;;
  smoke) STEPS=("${SMOKE_STEPS[@]}") ;;
  dry) STEPS=("${GPU_STEPS[@]}" "${SMOKE_STEPS[@]}") ;;
esac

status=0
start_all=$(date +%s)
for step in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$step"
  script="${cmd%% *}"
  if [ "$MODE" = dry ]; then
    echo "[$name] limit ${limit}s: $PY $cmd --out $OUT/$name.json"
    if [ ! -f "$ROOT/$script" ]; then
      echo "gpu_suite.sh: $script is missing" >&2; status=1; continue
    fi
    # Every option the step passes must be one its script declares (as an argparse string literal).
    for opt in $(grep -o -- ' --[a-z0-9-]*' <<<" ${cmd#* }") --out; do
      grep -q -- "\"$opt\"" "$ROOT/$script" || { echo "gpu_suite.sh: $script has no option $opt" >&2; status=1; }
    done
    continue
  fi
  echo "[$name] ($(( $(date +%s) - start_all )) s elapsed) $PY $cmd" >&2
  t0=$(date +%s)
  (cd "$ROOT" && timeout "$limit" "$PY" $cmd --out "$OUT/$name.json" >"$OUT/$name.log" 2>&1)
  rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 )), \"limit_s\": $limit}" >"$OUT/$name.status.json"
  if [ $rc -ne 0 ]; then
    echo "gpu_suite.sh: step $name failed (exit $rc; 124 = over its ${limit}s limit); see $OUT/$name.log" >&2
    status=1
  fi
done
[ "$MODE" = dry ] && exit $status

"$PY" "$ROOT/benchmarks/gpu_summary.py" "$OUT" --mode "$MODE" --total-s $(( $(date +%s) - start_all )) || status=1
if [ $APPEND -eq 1 ] && [ -f "$OUT/RESULTS_section.md" ]; then
  cat "$OUT/RESULTS_section.md" >>"$ROOT/benchmarks/RESULTS.md"
fi
exit $status
