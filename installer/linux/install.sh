#!/usr/bin/env bash
# Installs stylecam for the current user on Linux, from this source folder.
#
#   installer/linux/install.sh [options]
#
#   --prefix DIR        where launchers, the menu entry and icons go (default ~/.local):
#                       DIR/bin/stylecam-tray and DIR/bin/stylecam, DIR/share/applications,
#                       DIR/share/icons/hicolor, and the venv in DIR/lib/stylecam/venv
#   --venv DIR          the Python environment to use; an existing one that already has
#                       stylecam-tray is reused as it is (and kept on uninstall)
#   --skip-venv         do not create or update the venv (the launchers still point into it)
#   --autostart         start stylecam at login (same file as Settings > "Start stylecam when I log in")
#   --no-autostart      do not (the default with --yes; otherwise you are asked)
#   --no-virtual-camera skip the v4l2loopback set-up (installer/linux/v4l2loopback.sh does it later)
#   --pkg MANAGER       apt | dnf | pacman for the system packages (default: detected)
#   --yes               ask nothing: run the root steps, take the defaults
#   --dry-run           print every step that needs root, and the venv build (torch is a large
#                       download), instead of running them; the per-user files are still written
#
# The torch build is picked for this machine (installer/pick_torch.sh: CUDA 13.0 where an NVIDIA
# driver >= 580 answers, CPU otherwise; STYLECAM_TORCH overrides). Everything written is listed
# in DIR/share/stylecam/install-manifest, which installer/linux/uninstall.sh follows. Nothing
# runs as root without a question first (or --yes). Model weights are not installed: stylecam
# pulls them into the Hugging Face cache on first use (`stylecam models pull ...`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=installer/linux/common.sh
. "$here/common.sh"

prefix="$HOME/.local"
venv=""
skip_venv=0
autostart=ask
camera=1
pkg_args=()
yes=0
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
    --venv) venv="${2:?--venv needs a folder}"; shift 2 ;;
    --skip-venv) skip_venv=1; shift ;;
    --autostart) autostart=1; shift ;;
    --no-autostart) autostart=0; shift ;;
    --no-virtual-camera) camera=0; shift ;;
    --pkg) pkg_args=(--pkg "${2:?--pkg needs apt, dnf or pacman}"); shift 2 ;;
    --yes|-y) yes=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(uname -s)" != Linux ]; then
  echo "install.sh: this installer is for Linux; see docs/install.md for $(uname -s)" >&2
  exit 2
fi
if [ -n "${SUDO_USER:-}" ] && [ "$(id -u)" = 0 ]; then
  echo "install.sh: run it as yourself, not with sudo: it installs for your user and asks for sudo only for the steps that need it" >&2
  exit 2
fi
prefix="$(realpath -m "$prefix")"
venv="$(realpath -m "${venv:-$prefix/lib/stylecam/venv}")"
existing="$prefix"
while [ ! -e "$existing" ]; do existing="$(dirname "$existing")"; done
if [ ! -w "$existing" ]; then
  echo "install.sh: cannot write to $existing: pick a --prefix you own (the default is ~/.local)" >&2
  exit 2
fi
data="$prefix/share"
bin="$prefix/bin"
config="${XDG_CONFIG_HOME:-$HOME/.config}"
manifest="$data/stylecam/install-manifest"
[ "$dry_run" = 1 ] && echo "stylecam: dry run: root steps and the venv build are printed, not run"

# ---- the per-user files, each recorded in the manifest ------------------------------------

# mkdir -p that records each folder it creates (uninstall removes those again when empty).
make_dirs() {
  local d="$1" missing=()
  while [ ! -d "$d" ]; do missing=("$d" "${missing[@]}"); d="$(dirname "$d")"; done
  for d in "${missing[@]}"; do
    mkdir "$d"
    created_dirs+=("$d")
  done
}
created_dirs=()
make_dirs "$(dirname "$manifest")"
touch "$manifest"
# The manifest is written even in a dry run: the per-user files below are real.
for d in "${created_dirs[@]}"; do echo "dir $d" >> "$manifest"; done
created_dirs=()
add_line() { grep -qxF "$*" "$manifest" || echo "$*" >> "$manifest"; }

# Puts stdin at PATH with MODE. A file there that an earlier stylecam install did not write is
# kept as PATH.stylecam-backup and put back by the uninstaller.
put_file() {
  local path="$1" mode="$2" d
  make_dirs "$(dirname "$path")"
  for d in "${created_dirs[@]}"; do add_line "dir $d"; done
  created_dirs=()
  if [ -e "$path" ] && ! grep -qxF "file $path" "$manifest"; then
    mv "$path" "$path.stylecam-backup"
    add_line "backup $path"
    echo "stylecam: kept the existing $path as $path.stylecam-backup"
  fi
  cat > "$path.tmp-stylecam"
  chmod "$mode" "$path.tmp-stylecam"
  mv "$path.tmp-stylecam" "$path"
  add_line "file $path"
  echo "stylecam: wrote $path"
}

sh_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
# An argument of a desktop entry's Exec key: quoted where it holds a reserved character, "%"
# doubled, then the string escape (every backslash doubled) applied on top, as the spec says.
desktop_arg() {
  local a="${1//%/%%}"
  if [[ "$a" =~ [[:space:]\"\'\\\`\$\<\>~\|\&\;\*\?\#\(\)] ]]; then
    a="${a//\\/\\\\}"; a="${a//\"/\\\"}"; a="${a//\`/\\\`}"; a="${a//\$/\\\$}"
    a="\"$a\""
  fi
  printf '%s' "${a//\\/\\\\}"
}

# ---- python environment --------------------------------------------------------------------

if [ "$skip_venv" = 1 ]; then
  echo "stylecam: --skip-venv: using $venv as it is"
  [ -x "$venv/bin/stylecam-tray" ] || echo "stylecam: note: $venv/bin/stylecam-tray does not exist yet" >&2
elif [ -x "$venv/bin/stylecam-tray" ] && [ ! -f "$venv/.stylecam-installer-owned" ]; then
  echo "stylecam: reusing the environment at $venv (it has stylecam-tray; it stays on uninstall)"
else
  # A new environment, or the one an earlier run created (updated: setup_venv.sh keeps its torch
  # unless it is not the build picked here, e.g. a CPU build on a machine that now has a driver).
  python="${PYTHON:-python3}"
  if ! command -v "$python" >/dev/null 2>&1 \
     || ! "$python" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "install.sh: stylecam needs Python 3.10 or newer with its venv module ($python has not):" \
         "Debian/Ubuntu: sudo apt install python3 python3-venv; Fedora: sudo dnf install python3;" \
         "or pass PYTHON=/path/to/python3.11" >&2
    [ "$dry_run" = 1 ] || exit 1
  fi
  torch_spec="$("$repo/installer/pick_torch.sh")"
  if [ "$dry_run" = 1 ]; then
    echo "[dry-run] would run: STYLECAM_VENV=$(sh_quote "$venv") STYLECAM_TORCH=$(sh_quote "$torch_spec") bash $(sh_quote "$repo/installer/setup_venv.sh")"
  else
    echo "stylecam: creating the environment at $venv with $torch_spec (torch is a large download)"
    # Recorded first, so an interrupted build is still cleaned up by the uninstaller.
    make_dirs "$venv"
    for d in "${created_dirs[@]}"; do add_line "dir $d"; done
    created_dirs=()
    touch "$venv/.stylecam-installer-owned"
    add_line "venv $venv"
    STYLECAM_VENV="$venv" STYLECAM_TORCH="$torch_spec" bash "$repo/installer/setup_venv.sh"
  fi
fi

# ---- launchers, menu entry, icons ------------------------------------------------------------

for name in stylecam-tray stylecam; do
  put_file "$bin/$name" 755 <<SH
#!/bin/sh
# stylecam launcher, written by installer/linux/install.sh (installer/linux/uninstall.sh removes it).
exec $(sh_quote "$venv/bin/$name") "\$@"
SH
done

icons="$repo/icons"
[ -f "$icons/stylecam.svg" ] || { echo "install.sh: $icons/stylecam.svg is missing: the source folder is incomplete" >&2; exit 1; }
put_file "$data/icons/hicolor/scalable/apps/stylecam.svg" 644 < "$icons/stylecam.svg"
for size in 16 22 24 32 48 64 128 256; do
  png="$icons/png/stylecam-$size.png"
  # The app icon is the "running" tray icon (icons/stylecam.svg is the same drawing).
  [ -f "$png" ] || png="$icons/png/stylecam-running-$size.png"
  [ -f "$png" ] && put_file "$data/icons/hicolor/${size}x${size}/apps/stylecam.png" 644 < "$png"
done

# The icon by name where the menu searches this prefix (~/.local/share is always searched),
# else by path.
xdg_data_dirs="${XDG_DATA_HOME:-$HOME/.local/share}:${XDG_DATA_DIRS:-/usr/local/share:/usr/share}"
icon_value="$data/icons/hicolor/scalable/apps/stylecam.svg"
case ":$xdg_data_dirs:" in *":$data:"*|*":$data/:"*) icon_value=stylecam ;; esac
launcher="$bin/stylecam-tray"
exec_value="$(desktop_arg "$launcher")"

# desktop_entry AUTOSTART: the template with this install's launcher and icon filled in.
desktop_entry() {
  local line
  while IFS= read -r line; do
    case "$line" in
      "[Desktop Action"*) [ "$1" = 1 ] && break; echo "$line" ;;
      Exec=stylecam-tray*) echo "Exec=$exec_value${line#Exec=stylecam-tray}" ;;
      TryExec=*) echo "TryExec=${launcher//\\/\\\\}" ;;
      Icon=*) echo "Icon=${icon_value//\\/\\\\}" ;;
      Actions=*) [ "$1" = 1 ] || echo "$line" ;;
      "") [ "$1" = 1 ] || echo "$line" ;;
      *) echo "$line" ;;
    esac
  done < "$here/stylecam.desktop"
  [ "$1" = 1 ] && echo "X-GNOME-Autostart-enabled=true"
  return 0
}
desktop_entry 0 | put_file "$data/applications/stylecam.desktop" 644
case ":$xdg_data_dirs:" in *":$data:"*|*":$data/:"*) ;; *)
  echo "stylecam: note: $data is not in XDG_DATA_DIRS, so menus will not list stylecam; run $launcher" ;;
esac

if [ "$autostart" = ask ]; then
  if [ "$yes" = 1 ]; then autostart=0
  else
    autostart=0
    printf 'Start stylecam when you log in? [y/N] '
    if read -r answer; then case "$answer" in [yY]|[yY][eE][sS]) autostart=1 ;; esac; else echo; fi
  fi
fi
# The same file the tray's "Start on login" switch writes and removes.
if [ "$autostart" = 1 ]; then
  desktop_entry 1 | put_file "$config/autostart/stylecam.desktop" 644
fi

# ---- root steps ---------------------------------------------------------------------------

# Qt 6.5+ needs libxcb-cursor for its X11 plugin, and desktops often lack it. It is left in
# place on uninstall: other programs may have come to use it.
if command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libxcb-cursor\.so\.0'; then
  manager="${pkg_args[1]:-}"
  if [ -z "$manager" ]; then
    if command -v apt-get >/dev/null 2>&1; then manager=apt
    elif command -v dnf >/dev/null 2>&1; then manager=dnf
    elif command -v pacman >/dev/null 2>&1; then manager=pacman; fi
  fi
  case "$manager" in
    apt) qt_cmd=(apt-get install -y libxcb-cursor0) ;;
    dnf) qt_cmd=(dnf install -y xcb-util-cursor) ;;
    pacman) qt_cmd=(pacman -S --needed --noconfirm xcb-util-cursor) ;;
    *) qt_cmd=() ;;
  esac
  if [ "${#qt_cmd[@]}" -gt 0 ]; then
    echo "stylecam: Qt's X11 plugin needs libxcb-cursor, which is missing. This step needs root:"
    echo "  - ${qt_cmd[*]}"
    if [ "$dry_run" = 1 ] || confirm "Install it now?"; then
      root "${qt_cmd[@]}" || echo "stylecam: could not install it; the tray app may not start under X11" >&2
    fi
  else
    echo "stylecam: Qt's X11 plugin needs libxcb-cursor (xcb-util-cursor), which is missing: install it" >&2
  fi
fi

if [ "$camera" = 1 ]; then
  # The helper records what it did in the same manifest, so the uninstaller can undo it.
  helper_args=(install --manifest "$manifest" "${pkg_args[@]}")
  [ "$dry_run" = 1 ] && helper_args+=(--dry-run)
  [ "$yes" = 1 ] && helper_args+=(--yes)
  bash "$here/v4l2loopback.sh" "${helper_args[@]}" || \
    echo "stylecam: the virtual camera is not set up yet; stylecam still streams to a file or MJPEG (see docs/install.md)" >&2
fi

echo
echo "stylecam is installed."
echo "  start it:        the stylecam entry in your menu, or $launcher"
echo "  check the setup: $bin/stylecam doctor"
echo "  uninstall:       $repo/installer/linux/uninstall.sh${prefix:+ --prefix $(sh_quote "$prefix")}"
case ":$PATH:" in *":$bin:"*) ;; *) echo "  ($bin is not on your PATH; add it to run stylecam by name)" ;; esac
