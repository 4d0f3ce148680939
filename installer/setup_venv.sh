#!/usr/bin/env bash
# Creates or refreshes .venv for stylecam.
#
# torch is installed first and on its own: asked for unpinned, or through another package, pip
# picks the newest release, which on Linux is a multi-GB CUDA build. The pin is torch==2.13.0:
# taken from a local wheel when pip's configuration offers one (the build machines do), else
# from the build installer/pick_torch.sh chooses for this machine (the CPU build without an
# NVIDIA GPU, so no multi-GB CUDA libraries land on a laptop that cannot use them). STYLECAM_TORCH
# overrides both (e.g. STYLECAM_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126").
# Run again, it keeps the torch it finds unless that is not the build wanted (installer/torch_wanted.py):
# another build STYLECAM_TORCH names, or a CPU build where an NVIDIA driver now answers.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${STYLECAM_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
torch_spec="${STYLECAM_TORCH:-torch==2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
  echo "stylecam: creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  probe="$(mktemp -d)"
  # A local wheel of the pin (pip's find-links)? Then pip takes it as it is; else ask pick_torch.
  if [ -z "${STYLECAM_TORCH:-}" ] && ! "${pip[@]}" download -q --no-index --no-deps -d "$probe" "$torch_spec" 2>/dev/null; then
    torch_spec="$(bash "$here/installer/pick_torch.sh")"
  fi
  rm -rf "$probe"
  echo "stylecam: installing $torch_spec (first, so no other package pulls a different build)"
  # shellcheck disable=SC2086
  "${pip[@]}" install $torch_spec
else
  # torch is there: keep it unless it is not the build wanted (installer/torch_wanted.py says
  # when: another build the user named, or a CPU build on a machine that now has an NVIDIA driver).
  explicit=()
  if [ -n "${STYLECAM_TORCH:-}" ]; then explicit=(--explicit); else torch_spec="$(bash "$here/installer/pick_torch.sh" --quiet)"; fi
  verdict="$("$venv/bin/python" "$here/installer/torch_wanted.py" "$torch_spec" ${explicit[@]+"${explicit[@]}"})"
  if [ "${verdict%%:*}" = replace ]; then
    echo "stylecam: ${verdict#replace: }: installing $torch_spec instead"
    "${pip[@]}" uninstall -q -y torch
    # shellcheck disable=SC2086
    "${pip[@]}" install $torch_spec
  fi
fi
echo "stylecam: installing stylecam and its dependencies"
# The constraints file pins what CI tested; torch is left as installed above.
grep -v '^torch==' "$here/installer/constraints.txt" > "$venv/constraints.txt"
"${pip[@]}" install -c "$venv/constraints.txt" -e "${here}[test]"
# StreamDiffusion, only for the benchmark's peer rows (tests/test_bench_peer.py): without its
# dependencies, which pin diffusers 0.24; the parts the bench uses run on stylecam's diffusers.
"${pip[@]}" install -q --no-deps streamdiffusion==0.1.1
# A stamp newer than pyproject.toml tells make the venv is current.
touch "$venv/.stylecam-stamp"
echo "stylecam: environment ready in $venv"
