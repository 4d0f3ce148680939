# shellcheck shell=bash
# Sourced by the device scripts (gpu_app_path.sh, gpu_hw.sh), in the checkout's root: installs the
# wheels the GPU image lacks from .whl/ into /tmp/site and runs stylecam from this checkout
# without installing it. Exits the calling script when the wheels do not install.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# "stylecam" is a namespace package: point stylecam.core / stylecam.desktop at this checkout.
mkdir -p /tmp/pkg/stylecam && ln -sfn "$PWD/core" /tmp/pkg/stylecam/core && ln -sfn "$PWD/desktop" /tmp/pkg/stylecam/desktop
# /tmp/inductor unless told: a second call on the same machine measures a second start.
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor} HF_HUB_OFFLINE=1
