#!/usr/bin/env bash
# Issue #17 "Closer to the hardware" in one device call (H100/H200): the kernel profile, the A/B
# rows of the new engine knobs, and StreamDiffusion beside our sd-turbo rows, in the same run.
#
#   OUT=/some/dir scripts/gpu_hw.sh               # = mllm sd-turbo (one 10-minute call)
#   OUT=/some/dir scripts/gpu_hw.sh mllm          # mllm-edit: checks (fp8 vs bf16), profile B=16,
#                                                 #   A/B e2e rows: baseline compiled, +fp8, +sdpa cudnn,
#                                                 #   channels-last TAESD off (it is on by default)
#   OUT=/some/dir scripts/gpu_hw.sh sd-turbo      # sd-turbo: profile B=8, compiled B=8 / B=1 rows,
#                                                 #   StreamDiffusion fb=8 / fb=1 (same process) + ratios
#   OUT=/some/dir scripts/gpu_hw.sh autotune      # mllm-edit B=16: compile_mode max-autotune vs default,
#                                                 #   then the same again in a new process (second start)
#
# Wall time (estimated, not measured: no GPU was lent while this was written; compile costs from
# docs/benchmarks.md, 38-89 s per mllm-edit start on an H200): set-up ~10 s; mllm ~6-7 min, capped at
# MLLM_LIMIT=370 s (bundle 15 s, checks ~30 s, profile with the first compile ~120 s, then each A/B
# row one e2e start: baseline ~30 s from the warm cache, fp8 and sdpa=cudnn ~60-90 s each (new
# graphs), channels-last TAESD ~30 s); sd-turbo ~3 min, capped at SD_LIMIT=180 s. Total <= ~570 s.
# Rows are written as they come ($OUT/*.jsonl.partial), so a part cut by its timeout keeps what it
# measured; the order inside each part is the order of priority. autotune is a call of its own
# (max-autotune searches for minutes): ~2 x AUTOTUNE_LIMIT=270 s.
#
# Expects in .whl/ the wheels the GPU image lacks: diffusers, platformdirs, pyvirtualcam (as
# scripts/gpu_app_path.sh) and streamdiffusion-0.1.1-py3-none-any.whl (installed --no-deps: it
# pins diffusers 0.24, and the parts we use run on 0.42). Runs stylecam from this checkout.
set -uo pipefail
PHASES=("${@:-mllm}")
[ $# -eq 0 ] && PHASES=(mllm sd-turbo)
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# "stylecam" is a namespace package: point stylecam.core / stylecam.desktop at this checkout.
mkdir -p /tmp/pkg/stylecam && ln -sfn "$PWD/core" /tmp/pkg/stylecam/core && ln -sfn "$PWD/desktop" /tmp/pkg/stylecam/desktop
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor} HF_HUB_OFFLINE=1

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'capability', torch.cuda.get_device_capability(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
  python3 -c "import importlib.metadata as m; print('streamdiffusion', m.version('streamdiffusion'))" || echo "streamdiffusion missing: the peer rows will say so"
  date -u; } 2>&1 | tee -a "$OUT/gpu.txt"

# One bench process with the plan in the environment; stdout and stderr kept apart, rows to $1.jsonl.
bench() {  # NAME LIMIT
  local name=$1 limit=$2 t0=$SECONDS
  timeout "$limit" python3 -m stylecam.core bench --backend diffusion --json "$OUT/rows-$name.jsonl" \
    > "$OUT/stdout-$name.txt" 2> "$OUT/bench-$name.log"
  local rc=$?
  [ -f "$OUT/rows-$name.jsonl" ] || cp "$OUT/rows-$name.jsonl.partial" "$OUT/rows-$name.jsonl" 2>/dev/null
  echo "== $name: exit $rc after $((SECONDS - t0)) s (limit $limit s)"
  grep -E "stylecam bench:|Error|Traceback|Timeout" "$OUT/bench-$name.log" | grep -v "Warning" | cut -c1-300 | tail -12
}

for PHASE in "${PHASES[@]}"; do
case $PHASE in
  mllm)
    STYLECAM_BENCH_STACKS=mllm-edit STYLECAM_BENCH_PROFILE=1 STYLECAM_BENCH_PROFILE_BATCH=16 STYLECAM_BENCH_CHECK=1 \
    STYLECAM_BENCH_MODES=stream STYLECAM_BENCH_BATCHES=16 STYLECAM_BENCH_REFRESH=4 STYLECAM_BENCH_COMPILE=0 \
    STYLECAM_BENCH_EXTRA=0 STYLECAM_BENCH_E2E=1 STYLECAM_BENCH_FRAMES=${STYLECAM_BENCH_FRAMES:-480} \
    STYLECAM_BENCH_AB_BASE='{"mode": "compile", "compile_mode": "default"}' STYLECAM_BENCH_AB_PATH=${AB_PATH:-e2e} \
    STYLECAM_BENCH_AB=${AB:-'[{"fp8": true}, {"sdpa_backend": "cudnn"}, {"channels_last_vae": false}]'} \
      bench mllm "${MLLM_LIMIT:-370}"
    ;;
  sd-turbo)
    STYLECAM_BENCH_STACKS=sd-turbo STYLECAM_BENCH_PROFILE=1 STYLECAM_BENCH_PROFILE_BATCH=8 STYLECAM_BENCH_CHECK=0 \
    STYLECAM_BENCH_MODES=stream,latency STYLECAM_BENCH_BATCHES=8 STYLECAM_BENCH_LATENCY_BATCHES=1 \
    STYLECAM_BENCH_REFRESH=1 STYLECAM_BENCH_COMPILE=1 STYLECAM_BENCH_EXTRA=0 STYLECAM_BENCH_E2E=${SD_E2E:-0} \
    STYLECAM_BENCH_FRAMES=${STYLECAM_BENCH_FRAMES:-480} STYLECAM_BENCH_PEER=1 \
      bench sd-turbo "${SD_LIMIT:-180}"
    ;;
  autotune)
    for start in first second; do
      STYLECAM_BENCH_STACKS=mllm-edit STYLECAM_BENCH_CHECK=0 STYLECAM_BENCH_MODES=stream STYLECAM_BENCH_BATCHES=16 \
      STYLECAM_BENCH_REFRESH=4 STYLECAM_BENCH_COMPILE=0 STYLECAM_BENCH_EXTRA=0 STYLECAM_BENCH_E2E=0 \
      STYLECAM_BENCH_AB_BASE='{"mode": "compile", "compile_mode": "max-autotune"}' \
      STYLECAM_BENCH_AB='[{"compile_mode": "default"}]' \
        bench "autotune-$start" "${AUTOTUNE_LIMIT:-270}"
    done
    ;;
  *) echo "unknown phase $PHASE (mllm | sd-turbo | autotune)"; exit 2 ;;
esac
done

# The short summary: the profile tables (also in $OUT/profile.md), then every A/B, peer and
# check row in one line each.
python3 - "$OUT" <<'PY'
import glob, json, sys
from stylecam.core.bench_profile import markdown
out = sys.argv[1]
rows = []
for path in sorted(glob.glob(f"{out}/rows-*.jsonl")):
    rows += [json.loads(line) for line in open(path) if line.strip()]
table = markdown([r for r in rows if r.get("bench") == "profile" and "error" not in r])
open(f"{out}/profile.md", "w").write(table)
print(table)
keys = ("stack", "ab", "mode", "path", "batch", "fps", "latency_p50_ms", "setup_s", "compile_s", "fp8",
        "sdpa_backend", "ratio_engine", "ratio_e2e", "error")
for r in rows:
    if r.get("bench") == "profile" and "error" not in r:
        continue
    if r.get("mode") == "check-equivalence":
        print("check", r.get("stack"), {k: r.get(k) for k in ("graphs_streams", "fp8", "fp8_vs_bf16", "error")})
        continue
    print(" ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None)[:400])
PY
exit 0
