#!/usr/bin/env bash
# The benchmark suite on one CUDA GPU, in five stages, each bounded in time:
#   1. the TSRN train step in float32: eager, channels_last, torch.compile (compile time
#      reported), against the reference structure            -> results_gpu_fp32.json
#   2. the same in bf16 autocast, the eval of a TextZoom-size test set and the data loader
#      against the train step's consumption                  -> results_gpu_bf16.json
#   3. bench/bench_gpu_paths.py: the eval forward in fp32 / bf16 / channels_last /
#      torch.compile / CUDA graph replay, and the data set kept decoded on the device
#                                                            -> results_gpu_paths.json
#   4. every backbone of experiments/zoo.toml: train step and eval, peak memory
#                                                            -> results_gpu_zoo.json
#   5. the judges (CRNN, ASTER, MORAN on the GPU; ppocr on the host CPU) reading one SR
#      batch each, on the full TextZoom test size            -> results_gpu_judges.json
#   6. torch.profiler's kernel-time table of the TSRN train step, tsrx and the reference
#                                                            -> profile_gpu_{tsrx,baseline}.txt
# Files go under bench/ (or $BENCH_OUT_DIR); the card's name is in each file's "machine.gpu".
# Sized to finish in about 6 minutes on one H200; a stage that overruns STAGE_LIMIT_S
# (default 200 s) is stopped and the next one runs (the exit status is then 1).
#
#   bash bench/gpu.sh                        # on the GPU machine, from anywhere
#   GPU_STAGES="eval-paths profile" bash bench/gpu.sh   # only these stages
#   bash bench/gpu.sh --tsrn-file PATH       # extra arguments go to stages 1, 2 and 4
#
# Without a CUDA device it dry-runs the same stages on the CPU in smoke mode (seconds),
# so the script is checked wherever the test suite runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
OUT_DIR="${BENCH_OUT_DIR:-bench}"
LIMIT="${STAGE_LIMIT_S:-200}"
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
stage() {  # stage NAME COMMAND...: run one stage under the time limit, keep going on failure
    local name="$1"
    shift
    case " ${GPU_STAGES:-$name} " in *" $name "*) ;; *) return 0 ;; esac
    echo "== gpu.sh stage: $name ($(date -u +%H:%M:%S))"
    local start=$SECONDS
    timeout --signal=INT --kill-after=10 "$LIMIT" "$@" || {
        echo "gpu.sh: stage $name failed or overran ${LIMIT}s (exit $?)" >&2
        status=1
    }
    echo "== gpu.sh stage: $name took $((SECONDS - start)) s"
}
# ${MODE[@]+...}: an empty array under `set -u` is an error in bash before 4.4
# float32 first: the loss agreement with the baseline is judged without autocast
COMPILE=()
if [ "$DEVICE" = cuda ]; then COMPILE=(--compile); fi  # minutes of compiling on a CPU
stage train-fp32 "$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --precision fp32 \
    --only train ${COMPILE[@]+"${COMPILE[@]}"} --out "$OUT_DIR/results_gpu_fp32.json" "$@"
stage bf16-eval-data "$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --precision bf16 \
    --only train eval data --out "$OUT_DIR/results_gpu_bf16.json" "$@"
stage eval-paths "$PY" -m bench.bench_gpu_paths ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" \
    --out "$OUT_DIR/results_gpu_paths.json"
stage zoo "$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --precision fp32 --only zoo \
    --out "$OUT_DIR/results_gpu_zoo.json" "$@"
stage judges "$PY" -m bench ${MODE[@]+"${MODE[@]}"} --device "$DEVICE" --only judges \
    --out "$OUT_DIR/results_gpu_judges.json"
PROFILE=(--steps 2)
if [ "$DEVICE" = cpu ]; then PROFILE=(--steps 1 --batch 2); fi
for model in tsrx baseline; do
    stage profile sh -c '"$@" > "$0"' "$OUT_DIR/profile_gpu_$model.txt" "$PY" -m bench.profile_tsrn \
        --model "$model" --device "$DEVICE" --rows 30 "${PROFILE[@]}"
done
exit "$status"
