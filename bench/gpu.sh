#!/usr/bin/env bash
# Items 1-3 of the benchmark suite on one CUDA GPU: the TSRN train step (float32 eager,
# channels_last and torch.compile, then bf16 autocast), evaluation of a TextZoom-size test set
# and the data loader against the train step, each with samples/s and peak GPU memory; then
# bench/bench_gpu_paths.py: the eval forward in fp32 / bf16 / channels_last / torch.compile /
# CUDA graph replay, and the data set kept decoded on the device against the train step;
# then item 6 (every zoo backbone's train step and eval, results_gpu_zoo.json).
# Writes results_gpu_{fp32,bf16,paths,zoo}.json under bench/
# (or $BENCH_OUT_DIR) and prints the tables; the card's name is in each file's "machine.gpu".
# Sized to finish in about 10 minutes on one GPU.
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
COMPILE=()
if [ "$DEVICE" = cuda ]; then COMPILE=(--compile); fi  # minutes of compiling on a CPU
"$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --amp none --only train \
    ${COMPILE[@]+"${COMPILE[@]}"} --out "$OUT_DIR/results_gpu_fp32.json" "$@" || status=1
"$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --amp bf16 --only train eval data \
    --out "$OUT_DIR/results_gpu_bf16.json" "$@" || status=1
SMOKE=()
if [ "$DEVICE" = cpu ]; then SMOKE=(--smoke --threads 1); fi
"$PY" -m bench.bench_gpu_paths ${SMOKE[@]+"${SMOKE[@]}"} --device "$DEVICE" \
    --out "$OUT_DIR/results_gpu_paths.json" || status=1
# every backbone of experiments/zoo.toml: train step and eval samples/s, peak memory (fp32)
"$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --amp none --only zoo \
    --out "$OUT_DIR/results_gpu_zoo.json" "$@" || status=1
exit "$status"
