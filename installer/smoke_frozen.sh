#!/usr/bin/env bash
# Smoke test for the frozen app: starts the tray app headless (QT_QPA_PLATFORM=offscreen) on the
# bundled clip, lets it stream for a few seconds, quits it, and fails on a missing "ready" line or
# on any fatal line in its log or console. Then runs the frozen CLI: --version, styles, a short
# classic run to a video file, and (in a build with torch) a tiny random-weight diffusion bundle.
#
#   installer/smoke_frozen.sh APP [SECONDS]
#
# APP is the PyInstaller folder (dist/stylecam, holding stylecam-tray and stylecam), or
# stylecam.app on macOS. Everything the app writes goes to a temporary folder. Nothing is
# downloaded (HF_HUB_OFFLINE=1).
set -euo pipefail
app="${1:?usage: smoke_frozen.sh APP [SECONDS]}"
seconds="${2:-6}"
bundle="$app"
if [ -d "$app/Contents/MacOS" ]; then app="$app/Contents/MacOS"; fi
tray="$app/stylecam-tray"
cli="$app/stylecam"
# Windows builds (run from Git Bash) end in .exe.
[ -x "$tray" ] || [ ! -x "$tray.exe" ] || tray="$tray.exe"
[ -x "$cli" ] || [ ! -x "$cli.exe" ] || cli="$cli.exe"
for exe in "$tray" "$cli"; do
  [ -x "$exe" ] || { echo "smoke: FAIL: no executable $exe (build with installer/package.sh)" >&2; exit 1; }
done
# coreutils' timeout, or perl's alarm where there is none (macOS).
with_timeout() {
  local limit="$1"; shift
  if command -v timeout >/dev/null 2>&1; then timeout "$limit" "$@"
  else perl -e 'alarm shift; exec @ARGV or die "exec: $!"' "$limit" "$@"; fi
}

tmp="$(mktemp -d "${TMPDIR:-/tmp}/stylecam-smoke.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 STYLECAM_LOG_DIR="$tmp/log" \
  XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" XDG_CACHE_HOME="$tmp/cache"
# What a working start logs; STYLECAM_SMOKE_READY overrides it.
ready="${STYLECAM_SMOKE_READY:-(stylecam-tray ready|streaming [^ ]+ through)}"
# Lines that mean the frozen app is broken, whatever else it logged.
fatal='( CRITICAL | ERROR |Traceback \(most recent call last\)|No module named|Fatal Python error|could not (find|load) the Qt platform plugin|Segmentation fault)'
failed=0
fail() { echo "smoke: FAIL: $*" >&2; failed=1; }

echo "smoke: starting $tray headless for $seconds s"
t0=$(date +%s)
set +e
with_timeout $((seconds + 90)) "$tray" --source demo --quit-after "$seconds" --settings "$tmp/settings.ini" \
  > "$tmp/console.txt" 2>&1
rc=$?
set -e
echo "smoke: tray exited with $rc after $(( $(date +%s) - t0 )) s"
log="$tmp/log/stylecam.log"
[ "$rc" = 0 ] || fail "stylecam-tray exited with code $rc"
if [ ! -s "$log" ]; then
  fail "no log file at $log"
else
  grep -Eq "$ready" "$log" || fail "the log never says the app is ready (pattern: $ready)"
  if grep -Eq "$fatal" "$log" "$tmp/console.txt"; then
    fail "fatal lines:"; grep -Eh "$fatal" "$log" "$tmp/console.txt" | head -n 20 >&2
  fi
fi
if [ "$failed" = 1 ]; then
  echo "--- log" >&2; cat "$log" >&2 2>/dev/null || true
  echo "--- console" >&2; cat "$tmp/console.txt" >&2
  exit 1
fi
grep -Eh "$ready" "$log" | head -n 1 | sed 's/^/smoke: ready: /'

# The tray falls back to plain colour swatches without its icons, so their absence shows in no
# log: look where stylecam.desktop.icons.icon_dir() looks in a frozen app (<bundle>/stylecam/icons).
if [ -z "$(find -L "$bundle" -path '*/stylecam/icons/png/stylecam-running-22.png' 2>/dev/null | head -n 1)" ]; then
  fail "the icons are not bundled (no stylecam/icons/png/stylecam-running-22.png under $bundle)"
fi

echo "smoke: frozen CLI"
"$cli" --version
"$cli" styles > "$tmp/styles.txt" || fail "stylecam styles failed"
grep -q "oil" "$tmp/styles.txt" || fail "stylecam styles does not list oil"
"$cli" run --source demo --sink "file:$tmp/out.mp4" --style toon --frames 4 --size 160x120 \
  > "$tmp/run.txt" 2>&1 || { cat "$tmp/run.txt" >&2; fail "a classic run to a file failed"; }
[ -s "$tmp/out.mp4" ] || fail "the classic run wrote no video"

# A build with torch also runs a diffusion stack: a tiny random-weight bundle, built offline.
if grep -q classic "$app/.stylecam-flavor" 2>/dev/null; then
  echo "smoke: classic build (no torch): no diffusion check"
elif ! "$cli" models tiny --help >/dev/null 2>&1; then
  fail "this build's CLI has no \`models tiny\` (core/stylize/models_cli.py missing from the build?)"
else
  if "$cli" models tiny --stack sd-turbo --out "$tmp/tiny" > "$tmp/tiny.txt" 2>&1 \
     && "$cli" run --source pattern --sink null --backend diffusion --bundle "$tmp/tiny" --frames 2 \
        --size 64x64 >> "$tmp/tiny.txt" 2>&1; then
    echo "smoke: tiny diffusion bundle ran"
  else
    cat "$tmp/tiny.txt" >&2; fail "the tiny diffusion bundle did not run"
  fi
fi
[ "$failed" = 0 ] || exit 1
echo "smoke: ok"
