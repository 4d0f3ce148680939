#!/usr/bin/env bash
# Issue #17 "Closer to the hardware" in two device calls (H100/H200): StreamDiffusion beside our
# compiled sd-turbo rows, the kernel profiles, and the A/B rows of the engine knobs.
#
#   OUT=/some/dir scripts/gpu_hw.sh               # = sd-turbo (call 1)
#   OUT=/some/dir scripts/gpu_hw.sh sd-turbo      # compiled B=8 and B=1 rows (engine + e2e twins), then
#                                                 #   StreamDiffusion fb=1 / fb=8 in the same process + ratios,
#                                                 #   then the B=8 kernel profile (last: a cut run keeps the rest)
#   SD_BATCH=16 OUT=... scripts/gpu_hw.sh sd-turbo  # sd-turbo at B=16 instead (issue #13's e2e twin): CUDA-graph
#                                                 #   and compiled rows, engine + e2e; no peer (it has no fb=16), no profile
#   OUT=/some/dir scripts/gpu_hw.sh mllm          # call 2, mllm-edit: checks (fp8 vs bf16), profile B=16, then the
#                                                 #   A/B e2e rows: baseline compiled, sdpa cudnn, channels-last TAESD
#                                                 #   off (it is on by default), fp8
#   OUT=/some/dir scripts/gpu_hw.sh autotune      # mllm-edit B=16 max-autotune (first start), then in a new process
#                                                 #   the second start with the A/B rows over the default mode, e2e;
#                                                 #   the second only once a first start has finished: with DEADLINE
#                                                 #   and the carried cache, repeat the phase until both rows appear
#   OUT=... scripts/gpu_hw.sh autotune-first      # the first start alone (AUTOTUNE_BASE=none: max-autotune alone);
#   OUT=... scripts/gpu_hw.sh autotune-second     #   the second in the next call on the same warm machine
#   DEADLINE=<epoch s> ...                        # (any phase) no part runs past it: chained parts share one call
#   SNAPSHOT=<tool $OUT>/r.tgz ...                # (any phase) $OUT as a tarball every 30 s and at the end: a call
#                                                 #   the tool cuts short still brings back what it found (below)
#   (the autotune phases resume the search where the last call left it: see the phase below)
#   OUT=... scripts/gpu_hw.sh profile             # the kernel profile of PROFILE_STACKS (pix2pix) at B=16, alone
#
# Wall time, from the first H100 80GB run (2026-12-06; every machine starts with an empty Inductor
# cache, so each new shape compiles from scratch): set-up ~15 s (wheels, versions; the mllm-edit
# bench bundle builds in 3.7 s). A first compile costs, per engine shape: sd-turbo B=8 54 s, B=1 42 s;
# mllm-edit B=16 73 s, B=1 68 s, with fp8 89 s; a shape compiled before in the same process 0.05-3 s.
# Each row then runs ~3-10 s (480 frames; its e2e twin warms up first). The first run's single call
# ran out: its sd-turbo part (profile first, then CUDA-graph rows, compiled rows) was cut at 170 s
# before the StreamDiffusion rows; its mllm part (checks, profile, A/B) took ~150 s from a warm cache.
# Budgets now (estimates from those figures; StreamDiffusion's own compile, reduce-overhead once per
# buffer size, was not reached yet, taken as ~60 s each):
#   sd-turbo: compiled B=8 ~70 s + B=1 ~55 s + StreamDiffusion 2 x ~70 s + profile ~30 s (re-traced after
#     the peer's Dynamo reset, kernels from the cache) = ~300 s; SD_LIMIT=400 (B=16: ~150 s, SD_LIMIT=240).
#   mllm: checks ~20 s, profile with the first compile ~90 s, CUDA-graph row ~20 s, A/B baseline ~10 s (the
#     profile's kernels), sdpa cudnn ~80 s (new attention graphs), channels-last off ~60 s (new TAESD
#     graphs, the rest from the cache), fp8 ~95 s = ~375 s; MLLM_LIMIT=480.
# Each call stays under the 600 s a device command may run. Rows are written as they come
# ($OUT/*.jsonl.partial, each with elapsed_s), so a part cut by its timeout keeps what it
# measured; the order inside each part is the order of priority. autotune: mllm-edit B=16's first
# start under max-autotune took ~2255 s over five calls (H100, 72 ops, 4-43 s of search each; the
# second start 56 s; a fresh cache seeded with the whole search still over 407 s): repeat the
# autotune phase with DEADLINE, each call resuming the search. A cut process writes no
# bench row; the summary below reads each autotune log's choices into ops-autotune-*.jsonl
# (core/bench_autotune.py).
#
# Expects in .whl/ the wheels the GPU image lacks: diffusers, platformdirs, pyvirtualcam (as
# scripts/gpu_app_path.sh) and streamdiffusion-0.1.1-py3-none-any.whl (installed --no-deps: it
# pins diffusers 0.24, and the parts we use run on 0.42). Runs stylecam from this checkout.
set -uo pipefail
PHASES=("${@:-sd-turbo}")
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh

# SNAPSHOT=<file.tgz> (optional; put it under the device tool's $OUT): every SNAPSHOT_EVERY s
# (30) and on exit, $OUT, with the autotune cache packed into $OUT/autotune-cache, is written to
# that tarball (whole or not at all: written beside it, then renamed). Why: a device call can run
# shorter than the timeout asked for (the tool gives what device time is left after the machine's
# start: a call asked for 360 s ran 289 s, twelfth session), and a command killed by the tool
# brings back only the files already under the tool's $OUT, so that call's search came back with
# nothing. A DEADLINE inside the real limit still lets the script end on its own; the snapshot is
# for when it does not.
snapshot() {
  [ -n "${SNAPSHOT:-}" ] || return 0
  python3 -m stylecam.core.bench_autotune_cache pack "$TORCHINDUCTOR_CACHE_DIR" "$OUT/autotune-cache" > /dev/null 2>&1
  tar czf "$SNAPSHOT.part" -C "$(dirname "$OUT")" "$(basename "$OUT")" 2> /dev/null && mv -f "$SNAPSHOT.part" "$SNAPSHOT"
}
if [ -n "${SNAPSHOT:-}" ]; then
  mkdir -p "$(dirname "$SNAPSHOT")"
  # Before the version checks below (importing torch takes seconds); ends with this script.
  ( while sleep "${SNAPSHOT_EVERY:-30}" && kill -0 $$ 2> /dev/null; do snapshot; done ) &
  snapshot_loop=$!
  trap 'kill "$snapshot_loop" 2> /dev/null; snapshot' EXIT
fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'capability', torch.cuda.get_device_capability(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
  python3 -c "import importlib.metadata as m; print('streamdiffusion', m.version('streamdiffusion'))" || echo "streamdiffusion missing: the peer rows will say so"
  # The threads Inductor compiles candidates on, and the environment's Inductor settings.
  # (Its log gives ~0 s of "precompiling" per op because the candidates compile in parallel
  # before any op is benchmarked: TORCH_LOGS=torch._inductor.select_algorithm showed it, H100,
  # eleventh session; the 4-38 s per op are benchmarking.)
  python3 -c "import os, torch._inductor.config as c; print('inductor compile_threads', c.compile_threads, 'env', {k: v for k, v in os.environ.items() if k.startswith(('TORCHINDUCTOR', 'TRITON'))})"
  date -u; } 2>&1 | tee -a "$OUT/gpu.txt"

# One bench process with the plan in the environment; stdout and stderr kept apart, rows to $1.jsonl.
# DEADLINE (epoch seconds, optional): no part runs past it, so parts chained in one device call
# (several invocations of this script included) share its 10 minutes; a part with under 30 s left
# is skipped and says so.
bench() {  # NAME LIMIT
  local name=$1 limit=$2 t0=$SECONDS
  rm -f "$OUT/rows-$name.jsonl" "$OUT/rows-$name.jsonl.partial"  # a row on disk is this run's
  if [ -n "${DEADLINE:-}" ]; then
    local left=$((DEADLINE - $(date +%s)))
    if (( left < limit )); then limit=$left; fi
    if (( limit < 30 )); then echo "== $name: skipped, $left s left before DEADLINE"; return; fi
  fi
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
    # Profile first (the A/B baseline then reuses its compiled steps), then the A/B rows: the ones
    # the first run lost (sdpa cudnn reused the baseline's kernels; channels-last off failed) before fp8.
    STYLECAM_BENCH_STACKS=mllm-edit STYLECAM_BENCH_PROFILE=1 STYLECAM_BENCH_PROFILE_BATCH=16 STYLECAM_BENCH_CHECK=1 \
    STYLECAM_BENCH_MODES=stream STYLECAM_BENCH_BATCHES=16 STYLECAM_BENCH_REFRESH=4 STYLECAM_BENCH_COMPILE=0 \
    STYLECAM_BENCH_EXTRA=0 STYLECAM_BENCH_E2E=1 STYLECAM_BENCH_FRAMES=${STYLECAM_BENCH_FRAMES:-480} \
    STYLECAM_BENCH_DEVICES='' \
    STYLECAM_BENCH_AB_BASE='{"mode": "compile", "compile_mode": "default"}' STYLECAM_BENCH_AB_PATH=${AB_PATH:-e2e} \
    STYLECAM_BENCH_AB=${AB:-'[{"sdpa_backend": "cudnn"}, {"channels_last_vae": false}, {"fp8": true}]'} \
      bench mllm "${MLLM_LIMIT:-480}"
    ;;
  sd-turbo)
    if [ "${SD_BATCH:-8}" = 8 ]; then
      # The rows StreamDiffusion is compared with (compiled B=8 and B=1), the peer, then the profile.
      STYLECAM_BENCH_STACKS=sd-turbo STYLECAM_BENCH_CHECK=0 STYLECAM_BENCH_MODES=stream,latency \
      STYLECAM_BENCH_BATCHES=8 STYLECAM_BENCH_LATENCY_BATCHES=1 STYLECAM_BENCH_REFRESH=1 STYLECAM_BENCH_COMPILE=only \
      STYLECAM_BENCH_EXTRA=0 STYLECAM_BENCH_DEVICES='' STYLECAM_BENCH_E2E=${SD_E2E:-1} \
      STYLECAM_BENCH_FRAMES=${STYLECAM_BENCH_FRAMES:-480} STYLECAM_BENCH_PEER=1 \
      STYLECAM_BENCH_PROFILE=1 STYLECAM_BENCH_PROFILE_BATCH=8 STYLECAM_BENCH_PROFILE_AT=last \
        bench sd-turbo "${SD_LIMIT:-400}"
    else
      STYLECAM_BENCH_STACKS=sd-turbo STYLECAM_BENCH_CHECK=0 STYLECAM_BENCH_MODES=stream \
      STYLECAM_BENCH_BATCHES="$SD_BATCH" STYLECAM_BENCH_REFRESH=1 STYLECAM_BENCH_COMPILE=1 STYLECAM_BENCH_EXTRA=0 \
      STYLECAM_BENCH_DEVICES='' STYLECAM_BENCH_E2E=1 STYLECAM_BENCH_FRAMES=${STYLECAM_BENCH_FRAMES:-480} \
        bench "sd-turbo-b$SD_BATCH" "${SD_LIMIT:-240}"
    fi
    ;;
  autotune|autotune-first|autotune-second)
    # mllm-edit B=16 compiled under max-autotune, the engine row and its e2e twin (1280x720 in
    # and out: the path a user runs; each row's setup_s is its start, compiling included), then
    # the A/B rows over Inductor's default mode, e2e only: the baseline and AUTOTUNE_AB's variants
    # (AUTOTUNE_BASE=none leaves them out). "autotune" runs a first and a second start in two
    # processes; autotune-first and autotune-second run one each, so a first start that takes
    # most of a device call's 10 minutes has its second start in the next call on the same warm
    # machine (TORCHINDUCTOR_CACHE_DIR is /tmp/inductor there, kept while the machine is).
    # The search outlasts one session's device time (H100, 2026-12-07: 1105 s over two calls in
    # the ninth session, 989 s in the tenth, neither finished), and each session gets a fresh
    # machine and a fresh checkout. So the results so far travel (core/bench_autotune_cache.py):
    # max-autotune's per-op choices (one file per torch, Triton and card; another card's is
    # inert) and coordinate descent's per-kernel ones. Each call returns them in
    # $OUT/autotune-cache/; commit that folder as docs/data/autotune-cache/ (or carry it as
    # .autotune-cache/, git-ignored, which is unpacked first and so wins where both hold an op).
    # AUTOTUNE_ANY_CARD=1 reuses another card's choices on this one (H100 <-> H200: the same
    # sm_90 kernels; see unpack's as_system), when the card that came is not the one searched on.
    as_system=()
    if [ "${AUTOTUNE_ANY_CARD:-0}" = 1 ]; then
      as_system=(--as-system "$(python3 -c "from torch._inductor.codecache import CacheBase; print(CacheBase.get_system()['hash'])")")
    fi
    for seed in ${AUTOTUNE_SEED:-.autotune-cache docs/data/autotune-cache}; do
      if [ -d "$seed" ]; then
        echo "== autotune cache seeded from $seed ${as_system[*]}: $(python3 -m stylecam.core.bench_autotune_cache unpack "$seed" "$TORCHINDUCTOR_CACHE_DIR" "${as_system[@]}")" \
          | tee -a "$OUT/gpu.txt"
      fi
    done
    case $PHASE in autotune) starts="first second" ;; *) starts=${PHASE#autotune-} ;; esac
    for start in $starts; do
      # "autotune" goes on to the second start only once a first start has finished (its row
      # is written when its run ends); a cut one is resumed by running the phase again.
      if [ "$PHASE" = autotune ] && [ "$start" = second ] && ! grep -qs '"fps"' "$OUT/rows-autotune-first.jsonl"; then
        echo "== autotune-second: skipped, the first start wrote no row (cut: run the phase again, it resumes)"
        continue
      fi
      (
        # The app's own refresh for B=16 (STYLECAM_BENCH_REFRESH unset).
        export STYLECAM_BENCH_STACKS=mllm-edit STYLECAM_BENCH_CHECK=0 STYLECAM_BENCH_MODES=stream \
               STYLECAM_BENCH_BATCHES=16 STYLECAM_BENCH_COMPILE=only STYLECAM_BENCH_COMPILE_MODE=max-autotune \
               STYLECAM_BENCH_EXTRA=0 STYLECAM_BENCH_E2E=1 STYLECAM_BENCH_FRAMES=${STYLECAM_BENCH_FRAMES:-480}
        # The A/B rows over the default mode: with the second start (in "autotune") or where
        # asked; a first start in "autotune" times max-autotune alone, its compiling is the figure.
        if [ "${AUTOTUNE_BASE:-default}" != none ] && { [ "$PHASE" != autotune ] || [ "$start" = second ]; }; then
          export STYLECAM_BENCH_AB_BASE='{"mode": "compile", "compile_mode": "default"}' STYLECAM_BENCH_AB_PATH=e2e \
                 STYLECAM_BENCH_AB=${AUTOTUNE_AB:-'[]'}
        fi
        bench "autotune-$start" "${AUTOTUNE_LIMIT:-270}"
      )
    done
    echo "== autotune cache returned in $OUT/autotune-cache: $(python3 -m stylecam.core.bench_autotune_cache pack "$TORCHINDUCTOR_CACHE_DIR" "$OUT/autotune-cache")" \
      | tee -a "$OUT/gpu.txt"
    ;;
  profile)
    # The kernel profile of one batch (PROFILE_BATCH, 16) of each of PROFILE_STACKS (pix2pix: the
    # stack the calls above leave out), compiled as shipped, nothing else.
    for stack in ${PROFILE_STACKS:-pix2pix}; do
      STYLECAM_BENCH_STACKS=$stack STYLECAM_BENCH_MODES='' STYLECAM_BENCH_CHECK=0 STYLECAM_BENCH_DEVICES='' \
      STYLECAM_BENCH_PROFILE=1 STYLECAM_BENCH_PROFILE_BATCH=${PROFILE_BATCH:-16} \
        bench "profile-$stack" "${PROFILE_LIMIT:-200}"
    done
    ;;
  *) echo "unknown phase $PHASE (mllm | sd-turbo | autotune | autotune-first | autotune-second | profile)"; exit 2 ;;
esac
done

# The short summary: the profile tables (also in $OUT/profile.md), then every A/B, peer and
# check row in one line each.
python3 - "$OUT" <<'PY'
import glob, json, os, sys
from stylecam.core.bench_autotune import parse_autotune_log, summarize
from stylecam.core.bench_profile import markdown
out = sys.argv[1]
# max-autotune's choices op by op, from the log: a first start cut by its limit writes no bench
# row, but its log says what the search found so far.
for log in sorted(glob.glob(f"{out}/bench-autotune-*.log")):
    ops = parse_autotune_log(open(log, errors="replace").read())
    name = os.path.basename(log)[len("bench-"):-len(".log")]
    with open(f"{out}/ops-{name}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in ops)
    print(name, *summarize(ops), sep="\n  ")
rows = []
for path in sorted(glob.glob(f"{out}/rows-*.jsonl")):
    rows += [json.loads(line) for line in open(path) if line.strip()]
table = markdown([r for r in rows if r.get("bench") == "profile"])
open(f"{out}/profile.md", "w").write(table)
print(table)
keys = ("stack", "ab", "mode", "path", "batch", "fps", "latency_p50_ms", "setup_s", "compile_s", "fp8",
        "sdpa_backend", "ours_engine_fps", "ratio_engine", "ours_e2e_fps", "ratio_e2e", "elapsed_s", "error")
for r in rows:
    if r.get("bench") == "profile":
        continue
    if r.get("mode") == "check-equivalence":
        print("check", r.get("stack"), {k: r.get(k) for k in ("graphs_streams", "fp8", "fp8_vs_bf16", "fused_vae_vs_plain",
                                                             "fused_vae_note", "error")})
        continue
    print(" ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None)[:400])
PY
exit 0
