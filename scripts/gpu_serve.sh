#!/usr/bin/env bash
# `stylecam serve` on a GPU with the full-size sd-turbo bundle (random weights: speed does not
# depend on their values) and 4 local client sessions at 1280x720@30 over WebRTC, in one device
# call: per-session fps and round trip p50/p95, the batch sizes the server formed, the batches it
# had in flight at once, and backend milliseconds per batch -> $OUT/serve.json.
#
#   bash scripts/gpu_serve.sh wheels     # here, once: the wheels the GPU image lacks -> .whl-remote/
#   OUT=/some/dir bash scripts/gpu_serve.sh          # on the GPU machine (carry .whl and .whl-remote)
#   STYLECAM_SERVE_TINY=1 SIZE=320x180 SECONDS_=10 OUT=/tmp/o bash scripts/gpu_serve.sh   # any CPU
#
# Knobs (environment): SIZE (1280x720), SESSIONS (4), FPS (30), SECONDS_ (30), BATCH (4), STYLE
# (ai-oil), STYLECAM_SERVE_TINY=1 (the tiny sd-turbo bundle instead of the full-size one: runs
# end to end on a CPU), PYTHON (python3), LIMIT (330: seconds the measurement may take, the
# server's start and first CUDA-graph capture included).
#
# The GPU image has torch, transformers, aiohttp, numpy and opencv; the rest comes as wheels for
# CPython 3.12: .whl/ (diffusers, platformdirs, pyvirtualcam; see docs/benchmarks.md) and
# .whl-remote/ (aiortc 1.16.0 and what it needs that the image lacks). stylecam runs from this
# checkout without being installed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-python3}

if [ "${1:-}" = wheels ]; then
  # aiortc 1.16.0's requirements and theirs, less what the GPU image has (typing-extensions):
  # aioice (dnspython, ifaddr), av, cryptography (cffi -> pycparser), google-crc32c, pyee,
  # pylibsrtp (cffi), pyopenssl. One version each, the ones installer/constraints.txt tests.
  mkdir -p .whl-remote
  exec "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl-remote \
    aiortc==1.16.0 av==18.1.0 aioice==0.13.0 dnspython==2.9.2 ifaddr==0.2.0 cryptography==50.0.2 \
    cffi==2.1.1 pycparser==3.12 google-crc32c==1.9.0 pyee==13.0.1 pylibsrtp==1.0.0 pyopenssl==26.4.0
fi

OUT=${OUT:-$PWD/out}
SIZE=${SIZE:-1280x720} SESSIONS=${SESSIONS:-4} FPS=${FPS:-30} SECONDS_=${SECONDS_:-30} BATCH=${BATCH:-4}
STYLE=${STYLE:-ai-oil} LIMIT=${LIMIT:-330}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if ! "$PYTHON" -c "import aiortc, diffusers" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    .whl/*.whl .whl-remote/*.whl || exit 1
fi
# "stylecam" is a namespace package: point stylecam.core / stylecam.desktop at this checkout.
mkdir -p "$WORK/pkg/stylecam" && ln -sfn "$PWD/core" "$WORK/pkg/stylecam/core" && ln -sfn "$PWD/desktop" "$WORK/pkg/stylecam/desktop"
export PYTHONPATH=$WORK/pkg:$WORK/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no NVIDIA GPU"
  "$PYTHON" -c "import torch, aiortc, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'aiortc', aiortc.__version__, 'av', av.__version__)"
  nproc; date -u; } 2>&1 | tee "$OUT/gpu-serve.txt"

BUNDLE=$WORK/bundle
t0=$(date +%s)
if [ -n "${STYLECAM_SERVE_TINY:-}" ]; then
  "$PYTHON" -c "import sys; from stylecam.core.stylize.bundle import write_tiny_bundle; write_tiny_bundle('sd-turbo', sys.argv[1])" "$BUNDLE" || exit 1
else
  timeout 180 "$PYTHON" -c "import sys; from stylecam.core.bench_diffusion import build_bench_bundle; build_bench_bundle('sd-turbo').save(sys.argv[1])" "$BUNDLE" || exit 1
fi
echo "bundle built in $(( $(date +%s) - t0 )) s: $(du -sh "$BUNDLE" | cut -f1)" | tee -a "$OUT/gpu-serve.txt"

# The bench starts `stylecam serve --bundle ... --batch ...` on 127.0.0.1 (it prints the server's
# first lines when it is ready), then one client process per session.
timeout "$LIMIT" "$PYTHON" -m stylecam.core.remote.bench --sessions "$SESSIONS" --processes --size "$SIZE" \
  --fps "$FPS" --seconds "$SECONDS_" --bundle "$BUNDLE" --style "$STYLE" --batch "$BATCH" \
  --json "$OUT/serve-rows.jsonl" --summary "$OUT/serve.json" 2>&1 | grep -v "Warning\|warn(" | tee "$OUT/serve.log" | tail -20
rc=${PIPESTATUS[0]}
echo "exit $rc after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpu-serve.txt"
[ -f "$OUT/serve.json" ] && "$PYTHON" - "$OUT/serve.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["sessions"]:
    print(f"session {r['session']}: {r['fps_back']} fps back of {r['fps_target']}, round trip p50 {r['round_trip_p50_ms']} "
          f"p95 {r['round_trip_p95_ms']} ms, dropped {r['frames_dropped']} of {r['frames_sent']}, "
          f"server batch {r['server_batch']}, backend {r['server_gpu_ms']} ms per batch")
hub = (d.get("server") or {}).get("hub", {})
print("server:", d.get("server", {}).get("device"), "| batch sizes", hub.get("batch_sizes"), "| most in flight",
      hub.get("max_inflight"), "| backend ms per batch p50", hub.get("batch_ms_p50"))
EOF
exit "$rc"
