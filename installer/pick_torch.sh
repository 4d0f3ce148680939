#!/usr/bin/env bash
# Prints the pip arguments that install the right torch build for this machine, for
# STYLECAM_TORCH (installer/setup_venv.sh). The version comes from installer/constraints.txt.
#
#   NVIDIA driver >= 580 (nvidia-smi answers)  ->  torch==V --index-url https://download.pytorch.org/whl/cu130
#   Linux, anything else                       ->  torch==V --index-url https://download.pytorch.org/whl/cpu
#   macOS                                      ->  torch==V   (PyPI's macOS wheel has MPS)
#
# Why an index URL for the CPU build too: on Linux, PyPI's plain `torch` is the CUDA build with
# its multi-GB NVIDIA libraries, useless without an NVIDIA GPU. CUDA 13.0 builds need driver
# 580 or newer; an older driver gets the CPU build and a note saying so (update the driver, or
# set STYLECAM_TORCH yourself, e.g. to a cu126 build).
#
# Reasons go to stderr, the spec alone to stdout. STYLECAM_TORCH, when set, wins unchanged.
# NVIDIA_SMI names the nvidia-smi to ask (tests point it at a stand-in); --quiet drops the reasons.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

quiet=0
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pick_torch.sh: unknown option $arg (known: --quiet)" >&2; exit 2 ;;
  esac
done
say() { [ "$quiet" = 1 ] || echo "stylecam: $*" >&2; }

if [ -n "${STYLECAM_TORCH:-}" ]; then
  say "torch from STYLECAM_TORCH: $STYLECAM_TORCH"
  echo "$STYLECAM_TORCH"
  exit 0
fi

version="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$here/constraints.txt" | head -n 1)"
if [ -z "$version" ]; then
  echo "pick_torch.sh: no torch==VERSION line in $here/constraints.txt" >&2
  exit 1
fi
index=https://download.pytorch.org/whl
min_driver=580

case "$(uname -s)" in
  Darwin)
    say "macOS: torch $version from PyPI (Apple GPU through MPS where present)"
    echo "torch==$version"
    exit 0 ;;
  Linux) ;;
  *)
    say "$(uname -s): torch $version from PyPI"
    echo "torch==$version"
    exit 0 ;;
esac

smi="${NVIDIA_SMI:-nvidia-smi}"
driver=""
if command -v "$smi" >/dev/null 2>&1; then
  # nvidia-smi exists with a broken driver too; only a driver version on stdout counts.
  driver="$("$smi" --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' \r')" || driver=""
fi
major="${driver%%.*}"
if [ -n "$driver" ] && [[ "$major" =~ ^[0-9]+$ ]]; then
  gpu="$("$smi" --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)" || gpu=""
  if [ "$major" -ge "$min_driver" ]; then
    say "NVIDIA GPU ${gpu:+($gpu) }with driver $driver: torch $version for CUDA 13.0"
    echo "torch==$version --index-url $index/cu130"
    exit 0
  fi
  say "NVIDIA GPU ${gpu:+($gpu) }found, but driver $driver is older than the $min_driver that CUDA 13.0 builds" \
      "need: installing the CPU build. Update the driver and run the installer again, or set" \
      "STYLECAM_TORCH=\"torch==$version --index-url $index/cu126\" for a CUDA 12.6 build."
else
  say "no working NVIDIA GPU ($smi is missing or reports no driver): torch $version CPU build"
fi
echo "torch==$version --index-url $index/cpu"
