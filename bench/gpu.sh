#!/usr/bin/env bash
# Items 1-3 of the benchmark suite on one CUDA GPU: the TSRN train step (float32, then bf16
# autocast), evaluation of a TextZoom-size test set and the data loader against the train
# step, each with samples/s and peak GPU memory, then item 6 (every zoo backbone's train step
# and eval). Writes bench/results_gpu_fp32.json, bench/results_gpu_bf16.json and
# bench/results_gpu_zoo.json (or $BENCH_OUT_DIR/...) and prints the tables; the card's name
# is in each file's "machine.gpu".
#
#   bash bench/gpu.sh                        # on the GPU machine, from anywhere
#   bash bench/gpu.sh --tsrn-file PATH       # extra arguments go to every python -m bench
#
# Without a CUDA device it dry-runs the same commands on the CPU in smoke mode (seconds),
# so the script is checked wherever the test suite runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
OUT_DIR="${BENCH_OUT_DIR:-bench}"
mkdir -p "$OUT_DIR"

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    DEVICE=cuda
    MODE=()
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    fi
else
    echo "gpu.sh: no CUDA device; dry run on the CPU in smoke mode" >&2
    DEVICE=cpu
    MODE=(--smoke --threads 1)
fi

status=0
# ${MODE[@]+...}: an empty array under `set -u` is an error in bash before 4.4
# float32 first: the loss agreement with the baseline is judged without autocast
"$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --amp none --only train \
    --out "$OUT_DIR/results_gpu_fp32.json" "$@" || status=1
"$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --amp bf16 --only train eval data \
    --out "$OUT_DIR/results_gpu_bf16.json" "$@" || status=1
# every backbone of experiments/zoo.toml: train step and eval samples/s, peak memory (fp32)
"$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --amp none --only zoo \
    --out "$OUT_DIR/results_gpu_zoo.json" "$@" || status=1
exit "$status"
