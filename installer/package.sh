#!/usr/bin/env bash
# Builds the frozen stylecam app (PyInstaller, one folder) outside the repository, then runs the
# headless smoke test on it. `make package` calls this; Windows uses installer/windows/build.ps1.
#
#   installer/package.sh [--out DIR] [--flavor cpu|cu130|classic] [--venv DIR] [--no-smoke]
#
#   --out DIR     where everything goes: DIR/src (a copy of the sources), DIR/venv-FLAVOR (the
#                 build venv), DIR/build-FLAVOR (PyInstaller's work), DIR/dist/FLAVOR/stylecam
#                 (the app; on macOS also DIR/dist/FLAVOR/stylecam.app). Default /tmp/stylecam-package.
#   --flavor F    cpu (default): torch's CPU build. cu130: torch for CUDA 13.0 (NVIDIA driver
#                 >= 580). classic: no torch at all (classic styles only, a fraction of the size).
#                 STYLECAM_TORCH overrides the pip arguments for torch (cpu and cu130 flavours).
#   --venv DIR    build venv to use (default DIR/venv-FLAVOR; created when missing, reused as
#                 it is when it has PyInstaller)
#   --no-smoke    skip installer/smoke_frozen.sh
#
# The build venv is separate from .venv on purpose: PyInstaller freezes what its interpreter can
# import, and an editable install or the test extras must not leak into the app.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out=/tmp/stylecam-package
flavor=cpu
venv=""
smoke=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --flavor) flavor="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$flavor" in cpu|cu130|classic) ;; *)
  echo "package.sh: --flavor $flavor: expected cpu, cu130 or classic" >&2; exit 2 ;;
esac
case "$out" in "$repo"|"$repo"/*)
  echo "package.sh: --out $out is inside the repository; build outside it (e.g. /tmp/stylecam-package)" >&2
  exit 2 ;;
esac
venv="${venv:-$out/venv-$flavor}"
python="${PYTHON:-python3}"
start=$(date +%s)
mkdir -p "$out"

echo "stylecam: copying the sources to $out/src"
rm -rf "$out/src"
mkdir -p "$out/src"
(cd "$repo" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' \
  pyproject.toml README.md core desktop icons installer) | (cd "$out/src" && tar -xf -)

if [ ! -x "$venv/bin/pyinstaller" ]; then
  echo "stylecam: creating the build venv $venv"
  "$python" -m venv "$venv"
  pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  grep -v '^torch==' "$repo/installer/constraints.txt" > "$venv/constraints.txt"
  if [ "$flavor" = classic ]; then
    # The runtime dependencies minus the diffusion stack.
    "$venv/bin/python" - "$out/src/pyproject.toml" > "$venv/requirements-classic.txt" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
heavy = {"torch", "diffusers", "transformers", "tokenizers"}
print("\n".join(d for d in deps if re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() not in heavy))
PY
    "${pip[@]}" install -c "$venv/constraints.txt" -r "$venv/requirements-classic.txt" pyinstaller
    "${pip[@]}" install --no-deps "$out/src"
  else
    if [ -n "${STYLECAM_TORCH:-}" ]; then
      torch_spec="$STYLECAM_TORCH"
    else
      version="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$repo/installer/constraints.txt" | head -n 1)"
      torch_spec="torch==$version --index-url https://download.pytorch.org/whl/$flavor"
    fi
    echo "stylecam: installing $torch_spec"
    # shellcheck disable=SC2086
    "${pip[@]}" install $torch_spec
    "${pip[@]}" install -c "$venv/constraints.txt" "$out/src" pyinstaller
  fi
fi
# The sources of this run, always: a reused venv would otherwise freeze the sources it was made with.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$out/src"
if [ "$(uname -s)" = Darwin ]; then "$venv/bin/python" -m pip install -q pillow; fi  # PNG -> .icns

echo "stylecam: freezing (flavour $flavor)"
frozen_start=$(date +%s)
STYLECAM_SRC="$out/src" STYLECAM_FLAVOR="$flavor" "$venv/bin/pyinstaller" --noconfirm --clean \
  --log-level WARN --distpath "$out/dist/$flavor" --workpath "$out/build-$flavor" \
  "$out/src/installer/pyinstaller/stylecam.spec"
end=$(date +%s)
app="$out/dist/$flavor/stylecam"
# smoke_frozen.sh reads the flavour to know whether a diffusion run is expected.
echo "$flavor" > "$app/.stylecam-flavor"
size_mb=$(du -sm "$app" | cut -f1)
files=$(find "$app" -type f | wc -l)
report="stylecam package: flavour $flavor, $app, ${size_mb} MB in $files files; freeze $((end - frozen_start)) s, total $((end - start)) s (venv + freeze) on $(getconf _NPROCESSORS_ONLN) cores"
echo "$report" | tee "$out/package-report.txt"

if [ "$smoke" = 1 ]; then
  bash "$repo/installer/smoke_frozen.sh" "$app"
fi
