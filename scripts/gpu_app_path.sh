#!/usr/bin/env bash
# One device call that checks and times the path a user runs (the runner at 1280x720 with the
# diffusion backend and a virtual camera) beside the engine alone, on a CUDA GPU (H100/H200).
#
#   OUT=/some/dir scripts/gpu_app_path.sh tests      # the app path's CUDA tests (compile mode per stack;
#                                                    #   TEST_FILES / TEST_K pick others)
#   OUT=/some/dir scripts/gpu_app_path.sh STACK      # engine + e2e rows of one stack (mllm-edit, sd-turbo)
#   OUT=/some/dir scripts/gpu_app_path.sh tests mllm-edit sd-turbo   # several phases in one call
#   OUT=/some/dir scripts/gpu_app_path.sh cli        # what a user types: `stylecam run --style ai-edit-oil`
#                                                    #   on a saved full-size mllm-edit bundle, compiled, B=16 then B=1
#
# Expects the wheels the GPU image lacks in .whl/ (diffusers, platformdirs, pyvirtualcam; see
# docs/benchmarks.md) and runs stylecam from this checkout without installing it. Rows go to
# $OUT/rows-STACK.jsonl; TORCHINDUCTOR_CACHE_DIR is /tmp/inductor, so a second call on the same
# machine measures a second start (the compile rows' setup_s).
set -uo pipefail
PHASES=("${@:-tests}")
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
  date -u; } 2>&1 | tee -a "$OUT/gpu.txt"

for PHASE in "${PHASES[@]}"; do
case $PHASE in
  tests)
    read -r -a files <<< "${TEST_FILES:-tests/test_app_path.py tests/test_engine.py tests/test_pacing.py tests/test_backend_outputs.py}"
    timeout "${TEST_LIMIT:-240}" python3 -m pytest -q -p no:cacheprovider -o faulthandler_timeout=120 \
      "${files[@]}" \
      -k "${TEST_K:-cuda or gpu or compile or geometry or io}" 2>&1 \
      | tee "$OUT/pytest.log" | tail -15
    ;;
  cli)
    # What a user types, through the CLI itself: a full-size random-weight mllm-edit bundle saved
    # to disk and loaded back as a user's would be, the shipped vision-aware style, a 1280x720
    # clip looped, compiled (the Inductor cache of an earlier phase in this call makes it a second
    # start), to the null sink. The last line of each run is its steady output rate.
    BUNDLE=/tmp/bundle-mllm-edit
    [ -d "$BUNDLE" ] || timeout 240 python3 -c "import sys; from stylecam.core.bench_diffusion import build_bench_bundle; build_bench_bundle('mllm-edit').save(sys.argv[1])" "$BUNDLE"
    CLIP=$(python3 -c "from stylecam.core.bench_e2e import e2e_clip; print(e2e_clip())")
    for B in ${CLI_BATCHES:-16 1}; do
      t0=$SECONDS
      STYLECAM_COMPILE=1 timeout "${CLI_LIMIT:-200}" python3 -m stylecam.core run --backend diffusion --bundle "$BUNDLE" \
        --style ai-edit-oil --source "file:$CLIP" --loop --sink null --frames $((B == 1 ? 960 : 1920)) --batch "$B" \
        > "$OUT/cli-b$B.log" 2>&1
      echo "== stylecam run --batch $B: exit $? after $((SECONDS - t0)) s"
      grep -E "^stylecam|Error" "$OUT/cli-b$B.log" | tail -4
    done
    ;;
  *)
    # The headline rows and their twins: B=16 (graphs, compiled) and latency B=1 (graphs, compiled,
    # and compiled without just-in-time submits: STYLECAM_BENCH_PACE_AB; without the deferred
    # conditioning refresh, on there by default, and with the output frames copied out instead of
    # lent: STYLECAM_BENCH_LATENCY_AB).
    # The vision refresh is the app's own for each B (every 64 frames: 4 batches of 16, 64 of 1);
    # STYLECAM_BENCH_LATENCY_AB='[{"refresh": 4}]' adds the latency row of the sessions before.
    # STYLECAM_BENCH_MODES set and empty: no timed rows (with STYLECAM_BENCH_CHECK=1, the checks alone).
    export STYLECAM_BENCH_STACKS=$PHASE STYLECAM_BENCH_MODES=${STYLECAM_BENCH_MODES-stream,latency} STYLECAM_BENCH_BATCHES=16 \
           STYLECAM_BENCH_LATENCY_BATCHES=1 STYLECAM_BENCH_COMPILE=${STYLECAM_BENCH_COMPILE:-1} \
           STYLECAM_BENCH_CHECK=${STYLECAM_BENCH_CHECK:-0} STYLECAM_BENCH_E2E=1 \
           STYLECAM_BENCH_FRAMES=${STYLECAM_BENCH_FRAMES:-480} STYLECAM_BENCH_EXTRA=${STYLECAM_BENCH_EXTRA:-0} \
           STYLECAM_BENCH_PACE_AB=${STYLECAM_BENCH_PACE_AB:-1} \
           STYLECAM_BENCH_LATENCY_AB=${STYLECAM_BENCH_LATENCY_AB:-'[{"deferred_refresh": false}, {"lend_frames": false}]'}
    # Last, e2e only over the compiled B=16 row: the host's wait for the GPU, blocking events
    # (default) against CUDA's spin (the host CPU per frame of each), the deferred refresh, and
    # output frames copied out instead of lent (lend_frames).
    # HOST_AB=0 leaves them out.
    if [ "${HOST_AB:-1}" = 1 ]; then
      export STYLECAM_BENCH_AB_BASE='{"mode": "compile", "compile_mode": "default"}' STYLECAM_BENCH_AB_PATH=e2e \
             STYLECAM_BENCH_AB=${AB:-'[{"host_wait": "spin"}, {"deferred_refresh": true}, {"lend_frames": false}]'}
    fi
    timeout "${BENCH_LIMIT:-400}" python3 -m stylecam.core bench --backend diffusion --json "$OUT/rows-$PHASE.jsonl" \
      2>&1 | grep -v "Warning\|warn(" | tee "$OUT/bench-$PHASE.log" | grep -E "stylecam bench|Error|error" | tail -20
    [ -f "$OUT/rows-$PHASE.jsonl.partial" ] && cp "$OUT/rows-$PHASE.jsonl.partial" "$OUT/rows-$PHASE.partial.jsonl"
    ;;
esac
done
exit 0
