#!/usr/bin/env bash
# Removes what installer/linux/install.sh installed, exactly: it follows the install manifest
# (PREFIX/share/stylecam/install-manifest) and touches nothing else.
#
#   installer/linux/uninstall.sh [--prefix DIR] [--yes] [--dry-run] [--keep-venv]
#                                [--keep-virtual-camera] [--keep-package]
#
#   --prefix DIR            the prefix given to install.sh (default ~/.local)
#   --yes                   ask nothing: undo the root steps too
#   --dry-run               print the root steps instead of running them (their record is kept,
#                           so a later run can still undo them); the per-user files are removed
#   --keep-venv             leave the Python environment the installer created
#   --keep-virtual-camera   leave the v4l2loopback set-up (module, its files, the package)
#   --keep-package          leave the v4l2loopback package but undo the rest
#
# Files an earlier program had where install.sh wrote are put back (FILE.stylecam-backup). Your
# settings, logs and downloaded models are yours and stay; the end of the run says where.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=installer/linux/common.sh
. "$here/common.sh"

prefix="$HOME/.local"
yes=0
dry_run=0
keep_venv=0
keep_camera=0
helper_extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
    --yes|-y) yes=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --keep-venv) keep_venv=1; shift ;;
    --keep-virtual-camera) keep_camera=1; shift ;;
    --keep-package) helper_extra+=(--keep-package); shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
prefix="$(realpath -m "$prefix")"
manifest="$prefix/share/stylecam/install-manifest"
if [ ! -f "$manifest" ]; then
  echo "uninstall.sh: no stylecam installation under $prefix (no $manifest); pass the --prefix you installed with" >&2
  exit 1
fi

files=() backups=() dirs=() venvs=() root_lines=()
while IFS= read -r line; do
  kind="${line%% *}"
  path="${line#* }"
  case "$kind" in
    file|backup|dir|venv)
      # Only absolute paths below / are ever acted on: a damaged manifest must not turn into
      # "rm -rf" of something else.
      case "$path" in /?*) ;; *) echo "uninstall.sh: ignoring a manifest line without an absolute path: $line" >&2; continue ;; esac
      case "$kind" in
        file) files+=("$path") ;;
        backup) backups+=("$path") ;;
        dir) dirs+=("$path") ;;
        venv) venvs+=("$path") ;;
      esac ;;
    root-*) root_lines+=("$line") ;;
    "") ;;
    *) echo "uninstall.sh: ignoring an unknown manifest line: $line" >&2 ;;
  esac
done < "$manifest"

# ---- root steps first: if they are declined, their record must survive ------------------------
root_left=0
if [ "${#root_lines[@]}" -gt 0 ]; then
  if [ "$keep_camera" = 1 ]; then
    echo "stylecam: --keep-virtual-camera: the v4l2loopback set-up stays"
  else
    root_manifest="$(mktemp)"
    printf '%s\n' "${root_lines[@]}" > "$root_manifest"
    args=(remove --manifest "$root_manifest" "${helper_extra[@]}")
    [ "$dry_run" = 1 ] && args+=(--dry-run)
    [ "$yes" = 1 ] && args+=(--yes)
    if ! bash "$here/v4l2loopback.sh" "${args[@]}" || [ "$dry_run" = 1 ]; then
      root_left=1
    fi
    rm -f "$root_manifest"
  fi
fi

# ---- per-user files ----------------------------------------------------------------------
for path in "${files[@]}"; do
  if [ -f "$path" ] || [ -L "$path" ]; then
    rm -f "$path"
    echo "stylecam: removed $path"
  fi
done
for path in "${backups[@]}"; do
  if [ -e "$path.stylecam-backup" ]; then
    mv "$path.stylecam-backup" "$path"
    echo "stylecam: put back $path"
  fi
done
for path in "${venvs[@]}"; do
  if [ "$keep_venv" = 1 ]; then
    echo "stylecam: --keep-venv: $path stays"
  elif [ -f "$path/.stylecam-installer-owned" ]; then
    rm -rf "$path"
    echo "stylecam: removed the environment $path"
  elif [ -d "$path" ]; then
    echo "stylecam: $path lacks the installer's marker file: left in place" >&2
  fi
done

if [ "$root_left" = 1 ] || { [ "$keep_venv" = 1 ] && [ "${#venvs[@]}" -gt 0 ]; }; then
  # What is left stays on record for a later uninstall.
  { [ "$root_left" = 1 ] && printf '%s\n' "${root_lines[@]}"
    [ "$keep_venv" = 1 ] && printf 'venv %s\n' "${venvs[@]}"
    printf 'dir %s\n' "${dirs[@]}"; } > "$manifest.tmp" || true
  mv "$manifest.tmp" "$manifest"
  echo "stylecam: $manifest keeps the record of what is still installed"
else
  rm -f "$manifest"
fi

# Folders the installer created, deepest first; a folder that is not empty (something else
# lives there now) stays.
if [ "${#dirs[@]}" -gt 0 ]; then
  while IFS= read -r d; do
    if [ -d "$d" ]; then rmdir "$d" 2>/dev/null || true; fi
  done < <(printf '%s\n' "${dirs[@]}" | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-)
fi

echo "stylecam is uninstalled."
echo "  kept (yours): settings in ${XDG_CONFIG_HOME:-$HOME/.config}/stylecam, logs in ${XDG_STATE_HOME:-$HOME/.local/state}/stylecam,"
echo "  compiled kernels in ${XDG_CACHE_HOME:-$HOME/.cache}/stylecam and downloaded models in"
echo "  ${HF_HUB_CACHE:-${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface}/hub} (delete those folders to free the space)"
