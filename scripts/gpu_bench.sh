#!/usr/bin/env bash
# One device call that sets up, checks and times the diffusion engine on a CUDA GPU (H100/H200).
#
#   OUT=/some/dir scripts/gpu_bench.sh smoke    # engine tests on CUDA + every mode once, 64 frames
#   OUT=/some/dir scripts/gpu_bench.sh full     # the whole issue-9 matrix, >= 480 frames each
#   OUT=/some/dir scripts/gpu_bench.sh compile  # mode=compile (torch.compile + graph), B=16
#   OUT=/some/dir scripts/gpu_bench.sh ab       # B=16 headline vs each optimisation off, + compile
#   OUT=/some/dir scripts/gpu_bench.sh diag     # engine CUDA tests + hang bisection
#
# Expects the wheels the GPU image lacks in .whl/ (diffusers, platformdirs; see docs/benchmarks.md)
# and runs stylecam from this checkout without installing it. Everything it writes lands in $OUT.
set -uo pipefail
PHASE=${1:-full}
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# "stylecam" is a namespace package: point stylecam.core / stylecam.desktop at this checkout.
mkdir -p /tmp/pkg/stylecam && ln -sfn "$PWD/core" /tmp/pkg/stylecam/core && ln -sfn "$PWD/desktop" /tmp/pkg/stylecam/desktop
export PYTHONPATH=/tmp/pkg:$PYTHONPATH PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
# The tests read the DAVIS blackswan clip; the bundled demo clip is that clip.
mkdir -p /tmp/media && ln -sfn "$PWD/core/data/blackswan.mp4" /tmp/media/davis_blackswan.mp4
export STYLECAM_MEDIA=/tmp/media

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
  date -u; } 2>&1 | tee "$OUT/gpu.txt"

case $PHASE in
  smoke)
    timeout 240 python3 -m pytest tests/test_engine.py -q -x -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -4
    export STYLECAM_BENCH_FRAMES=64 STYLECAM_BENCH_BATCHES=16 STYLECAM_BENCH_REFRESH=4 STYLECAM_BENCH_LATENCY_BATCHES=1
    STACKS="mllm-edit sd-turbo"; LIMITS="300 200"
    ;;
  full)
    # The engine's CUDA tests first (tiny bundles, graphs + side stream vs the reference); a
    # test that hangs prints every thread's stack after 40 s.
    timeout 60 python3 -m pytest tests/test_engine.py -q -p no:cacheprovider -k "cuda_graphs or (refresh and cuda and 2-2-3)" --timeout 25 2>&1 \
      | tee "$OUT/pytest.log" | tail -6
    STACKS="mllm-edit sd-turbo"; LIMITS="320 160"
    ;;
  compile)
    export STYLECAM_BENCH_MODES=stream STYLECAM_BENCH_BATCHES=${STYLECAM_BENCH_BATCHES:-16} STYLECAM_BENCH_REFRESH=${STYLECAM_BENCH_REFRESH:-4} \
           STYLECAM_BENCH_COMPILE=1 STYLECAM_BENCH_CHECK=0 STYLECAM_BENCH_MODES=stream
    STACKS="mllm-edit"; LIMITS="290"
    ;;
  ab)
    # The B=16 headline row with today's defaults, then each optimisation switched off in turn
    # (side by side in one process on one card), then mode=compile (U-Net + TAESD compiled).
    export STYLECAM_BENCH_MODES=${STYLECAM_BENCH_MODES:-stream} STYLECAM_BENCH_BATCHES=${STYLECAM_BENCH_BATCHES:-16} STYLECAM_BENCH_REFRESH=${STYLECAM_BENCH_REFRESH:-4} \
           STYLECAM_BENCH_CHECK=${STYLECAM_BENCH_CHECK:-0} STYLECAM_BENCH_LATENCY_BATCHES=${STYLECAM_BENCH_LATENCY_BATCHES:-1} \
           STYLECAM_BENCH_COMPILE=${STYLECAM_BENCH_COMPILE:-1} \
           STYLECAM_BENCH_AB=${STYLECAM_BENCH_AB:-'[{"text_bucket": 0, "channels_last_unet": false}, {"text_bucket": 0}, {"channels_last_unet": false}]'}
    STACKS="${AB_STACKS:-mllm-edit}"; LIMITS="${AB_LIMIT:-300}"
    ;;
  diag)
    # The engine's CUDA tests, then the hang bisection (each variant in its own process).
    # CUDA_LAUNCH_BLOCKING: a kernel that never ends shows in the stack at its own launch.
    timeout 150 python3 -m pytest tests/test_engine.py tests/test_qwen_vl.py tests/test_lllite.py -q -p no:cacheprovider \
      -k "cuda or gpu" -o faulthandler_timeout=60 2>&1 | tee "$OUT/pytest.log" | grep -v "site-packages" | tail -30
    DIAG_TIMEOUT=25 timeout "${DIAG_LIMIT:-200}" python3 scripts/engine_hang_bisect.py 2>&1 | tee "$OUT/bisect.log" \
      | grep -v "site-packages" | cut -c1-300 | tail -80
    exit 0
    ;;
  *) echo "unknown phase $PHASE (smoke | full | compile | ab | diag)"; exit 2 ;;
esac

# One process per stack: a stack that fails or hangs (the bench's watchdog ends it) leaves the
# other's rows intact. Rows are appended to bench.jsonl (and, as they come, bench.jsonl.partial).
status=0
# shellcheck disable=SC2086  # the limits are a space-separated list, split on purpose
set -- $LIMITS
for stack in $STACKS; do
  limit=$1; shift
  STYLECAM_BENCH_STACKS=$stack timeout "$limit" python3 -m stylecam.core bench --backend diffusion \
    --json "$OUT/bench.jsonl" 2>> "$OUT/bench.log" | tee -a "$OUT/table.txt" | tail -n 30
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
done
grep -E '"mode"|Error|error|Traceback|Timeout' "$OUT/bench.log" | cut -c1-400 | tail -n 40
python3 scripts/plot_bench.py "$OUT/bench.jsonl" "$OUT/bench_diffusion.png" || true
exit "$status"
