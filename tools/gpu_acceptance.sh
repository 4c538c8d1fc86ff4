#!/usr/bin/env bash
# GPU acceptance: on a machine with a CUDA GPU, run everything twins-trt can run there and print one table.
#
#   bash tools/gpu_acceptance.sh [OUT_DIR]        # default OUT_DIR: gpu-acceptance/ (logs, bench JSON, engines)
#
# Parts (each one row or more of the table, with its figures):
#   1. the gpu tests:   pytest -m gpu tests/trt (the TensorRT runner's CUDA path under the emulator in device
#                       memory runs on any GPU; the real-TensorRT tests skip themselves where it is missing)
#   2. twins-bench:     torch, torch-fp16, torch-compile, ort-cuda at batch 1, 8 and 64 (svt_s, 224 px)
#   3. the emulator:    trt-fp16 (batch 1, 8) through the TensorRT emulator in device memory (PYTHONPATH=tools/trt_emulator,
#                       TRT_EMULATOR_MEMORY=device): the runner's buffers, streams and copies on the GPU; its
#                       figures are the emulator's (ONNX Runtime on the host), labelled emulated, never TensorRT's
#   4. TensorRT:        where `import tensorrt` is the real one, trt-fp32/fp16/int8 in twins-bench at 1, 8, 64 and
#                       twins-verify of the fp16 and int8 engines (the paper's comparison)
# On a machine without a GPU (or without TensorRT) each part it cannot run is skipped with a one-line reason.
# Exit status: 0 when every part that ran passed (skips included), 1 when one failed.
# Knobs: PYTHON (default .venv/bin/python), BENCH_ITERS (default 30), BENCH_ROUNDS (default 1).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-gpu-acceptance}"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
BIN="$(dirname "$PYTHON")"
ITERS="${BENCH_ITERS:-30}"
ROUNDS="${BENCH_ROUNDS:-1}"
mkdir -p "$OUT"
ROWS="$OUT/table.tsv"
: > "$ROWS"
FAILED=0

row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$ROWS"; }
one_line() { tr '\n' ' ' | sed 's/  */ /g' | cut -c1-160; }

# What this machine has, asked once (torch and TensorRT exactly as twins-trt asks).
GPU="$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")' 2>/dev/null)"
NO_GPU="no CUDA GPU visible to torch on this machine"
TRT_WHY="$("$PYTHON" -c '
from twins_trt.trt import tensorrt_status
ok, why = tensorrt_status()
print("" if ok and "emulator" not in why else why)' 2>&1 | tail -1)"

bench() {  # bench NAME BACKENDS BATCHES [extra env...]: one row per (backend, batch) from the bench JSON
    local name="$1" backends="$2" batches="$3"; shift 3
    if ! env "$@" "$BIN/twins-bench" --variant svt_s --backends "$backends" --batch "$batches" --iters "$ITERS" \
            --rounds "$ROUNDS" --calib-synthetic --export-dir "$OUT/export" --engines-dir "$OUT/engines" \
            -o "$OUT" --name "$name" --no-plot -q > "$OUT/$name.log" 2>&1; then
        row "bench $name" FAIL "$(tail -1 "$OUT/$name.log" | one_line) (log: $OUT/$name.log)"
        FAILED=1
        return
    fi
    "$PYTHON" - "$OUT/$name.json" >> "$ROWS" <<'EOF' || { row "bench $name" FAIL "no result JSON"; FAILED=1; }
import json, sys
doc = json.load(open(sys.argv[1]))
for r in doc["results"]:
    what = f"bench {r['backend']} b{r['batch']}"
    if r.get("status") == "ok":
        print(f"{what}\tok\t{r['img_s']:.1f} img/s, p50 {r['latency_ms']['p50']:.2f} ms")
    else:
        print(f"{what}\tFAIL\t{r.get('reason', r.get('status'))}")
for s in doc.get("skipped", []):
    print(f"bench {s['backend']}\tSKIP\t{s['reason']}")
EOF
    grep -q $'\tFAIL\t' "$ROWS" && FAILED=1
}

# 1. the gpu tests
if [ -z "$GPU" ]; then
    row "gpu tests (pytest -m gpu)" SKIP "$NO_GPU"
else
    "$BIN/pytest" -q -m gpu -p no:cacheprovider tests/trt > "$OUT/gpu-tests.log" 2>&1
    rc=$?
    summary="$(tail -1 "$OUT/gpu-tests.log" | one_line)"
    if [ $rc -eq 0 ] || [ $rc -eq 5 ]; then row "gpu tests (pytest -m gpu)" PASS "$summary"
    else row "gpu tests (pytest -m gpu)" FAIL "$summary (log: $OUT/gpu-tests.log)"; FAILED=1; fi
fi

# 2. twins-bench on the GPU, without TensorRT
if [ -z "$GPU" ]; then
    row "bench torch, torch-fp16, torch-compile, ort-cuda" SKIP "$NO_GPU"
else
    bench gpu torch,torch-fp16,torch-compile,ort-cuda 1,8,64
fi

# 3. the TensorRT emulator in device memory (TrtRunner's CUDA path: device buffers, its stream, output copies)
if [ -z "$GPU" ]; then
    row "emulator trt-fp16 (device memory)" SKIP "$NO_GPU"
else
    # batch 1 and 8 only: the emulator computes on the host CPU (ONNX Runtime), a batch of 64 takes long there
    bench emulator trt-fp16 1,8 PYTHONPATH="tools/trt_emulator${PYTHONPATH:+:$PYTHONPATH}" TRT_EMULATOR_MEMORY=device
fi

# 4. real TensorRT, where it is installed
if [ -z "$GPU" ]; then
    row "TensorRT trt-fp32/fp16/int8, twins-verify" SKIP "$NO_GPU"
elif [ -n "$TRT_WHY" ]; then
    row "TensorRT trt-fp32/fp16/int8, twins-verify" SKIP "$TRT_WHY"
else
    bench tensorrt trt-fp32,trt-fp16,trt-int8 1,8,64
    for p in fp16 int8; do
        plan="$OUT/engines/svt_s.$p.plan"
        if [ ! -f "$plan" ]; then row "twins-verify $p" FAIL "no engine $plan"; FAILED=1; continue; fi
        if "$BIN/twins-verify" "$plan" --batch 8 > "$OUT/verify-$p.log" 2>&1; then
            row "twins-verify $p" PASS "$(grep -E '^PASS' "$OUT/verify-$p.log" | sed 's/^PASS //' | one_line)"
        else
            row "twins-verify $p" FAIL "$(grep -E '^FAIL|error' "$OUT/verify-$p.log" | head -2 | one_line)"
            FAILED=1
        fi
    done
fi

echo "GPU acceptance on: ${GPU:-this machine (no GPU)}; TensorRT: ${TRT_WHY:-present}"
"$PYTHON" - "$ROWS" <<'EOF'
import sys
rows = [line.rstrip("\n").split("\t", 2) for line in open(sys.argv[1]) if line.strip()]
w = [max(len(r[i]) for r in rows + [["part", "status", "detail"]]) for i in range(2)]
print(f"{'part':<{w[0]}}  {'status':<{w[1]}}  detail")
for part, status, detail in rows:
    print(f"{part:<{w[0]}}  {status:<{w[1]}}  {detail}")
EOF
exit $FAILED
