#!/usr/bin/env bash
# The Linux virtual camera for stylecam: the v4l2loopback kernel module, set up so that it is
# there after every boot and apps (Zoom, Meet, Chrome, OBS) list it as "stylecam".
#
#   installer/linux/v4l2loopback.sh install|remove|status [options]
#
#   install   install the distribution's package (unless the module is already installed),
#             write /etc/modprobe.d/stylecam-v4l2loopback.conf (the options) and
#             /etc/modules-load.d/stylecam.conf (load at boot), then load the module now
#   remove    undo what install did: the two files, the loaded module and (only where install
#             put it there and --manifest says so) the package
#   status    what is installed, loaded and configured; changes nothing
#
#   --dry-run          print every root step instead of running it
#   --yes              do not ask before the root steps
#   --pkg MANAGER      apt | dnf | pacman (default: whichever this system has)
#   --manifest FILE    install: record what was done in FILE; remove: undo only what FILE records
#   --keep-package     remove: leave the package installed
#
# Root steps run directly when this script runs as root, else through sudo, and only after a
# yes to the question (or --yes).
set -euo pipefail

modprobe_conf=/etc/modprobe.d/stylecam-v4l2loopback.conf
modules_conf=/etc/modules-load.d/stylecam.conf
# exclusive_caps=1: the device shows capture-only caps once a writer opens it, which Chrome,
# Meet and other WebRTC apps need before they list it; card_label is the name apps show.
options_line="options v4l2loopback devices=1 exclusive_caps=1 card_label=stylecam"
marker="# Written by stylecam's installer (installer/linux/v4l2loopback.sh); its uninstaller removes this file."

action=""
dry_run=0
yes=0
pkg=""
manifest=""
keep_package=0
while [ $# -gt 0 ]; do
  case "$1" in
    install|remove|status) action="$1"; shift ;;
    --dry-run) dry_run=1; shift ;;
    --yes|-y) yes=1; shift ;;
    --pkg) pkg="${2:?--pkg needs apt, dnf or pacman}"; shift 2 ;;
    --manifest) manifest="${2:?--manifest needs a file}"; shift 2 ;;
    --keep-package) keep_package=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "v4l2loopback.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$action" ] || { echo "v4l2loopback.sh: say install, remove or status (see --help)" >&2; exit 2; }

release="$(uname -r)"
# shellcheck source=installer/linux/common.sh
. "$(dirname "$0")/common.sh"

detect_pkg() {
  if [ -n "$pkg" ]; then echo "$pkg"; return; fi
  if command -v apt-get >/dev/null 2>&1; then echo apt
  elif command -v dnf >/dev/null 2>&1; then echo dnf
  elif command -v pacman >/dev/null 2>&1; then echo pacman
  else echo none; fi
}

# The package names per manager, and what installs them. dkms builds the module for the running
# kernel, so it needs that kernel's headers.
packages_for() {
  case "$1" in
    apt)
      local p="v4l2loopback-dkms v4l2loopback-utils"
      [ -d "/lib/modules/$release/build" ] || p="$p linux-headers-$release"
      echo "$p" ;;
    dnf) echo "v4l2loopback" ;;  # from RPM Fusion (free); it pulls the akmod
    pacman) echo "v4l2loopback-dkms v4l2loopback-utils" ;;
    *) echo "" ;;
  esac
}
install_command() {
  case "$1" in
    apt) echo "apt-get install -y $2" ;;
    dnf) echo "dnf install -y $2" ;;
    pacman) echo "pacman -S --needed --noconfirm $2" ;;
  esac
}
remove_command() {
  case "$1" in
    apt) echo "apt-get remove -y $2" ;;
    dnf) echo "dnf remove -y $2" ;;
    pacman) echo "pacman -R --noconfirm $2" ;;
  esac
}

module_installed() { command -v modinfo >/dev/null 2>&1 && modinfo -n v4l2loopback >/dev/null 2>&1; }
module_loaded() { [ -d /sys/module/v4l2loopback ]; }
modules_loadable() { [ -d "/lib/modules/$release" ]; }

status() {
  echo "kernel: $release"
  if modules_loadable; then echo "kernel modules: loadable (/lib/modules/$release exists)"
  else echo "kernel modules: NOT loadable here (no /lib/modules/$release: a container or minimal VM; load v4l2loopback on the host)"; fi
  if module_installed; then echo "v4l2loopback module: installed ($(modinfo -n v4l2loopback))"; else echo "v4l2loopback module: not installed"; fi
  if module_loaded; then echo "v4l2loopback module: loaded"; else echo "v4l2loopback module: not loaded"; fi
  for f in "$modprobe_conf" "$modules_conf"; do
    if [ -f "$f" ]; then echo "$f: present"; else echo "$f: absent"; fi
  done
  local devices
  devices="$(compgen -G '/dev/video*' | tr '\n' ' ')" || true
  echo "video devices: ${devices:-none}"
}

do_install() {
  local manager packages=""
  manager="$(detect_pkg)"
  echo "stylecam: the virtual camera on Linux is a v4l2loopback device. These steps need root:"
  if module_installed; then
    echo "  - (the v4l2loopback module is already installed: no package to install)"
  elif [ "$manager" = none ]; then
    echo "  - install v4l2loopback with your distribution's package manager (none known found: apt-get, dnf, pacman)"
  else
    packages="$(packages_for "$manager")"
    echo "  - $(install_command "$manager" "$packages")"
    [ "$manager" = dnf ] && echo "    (Fedora: v4l2loopback comes from RPM Fusion free: https://rpmfusion.org/Configuration)"
  fi
  echo "  - write $modprobe_conf: $options_line"
  echo "  - write $modules_conf: v4l2loopback (load it at every boot)"
  if module_loaded; then
    echo "  - (the module is already loaded: the options apply after a reboot or a reload)"
  else
    echo "  - modprobe v4l2loopback (load it now)"
  fi
  if [ "$dry_run" = 0 ] && ! confirm "Run these steps as root now?"; then
    echo "stylecam: virtual camera not set up. Later: $0 install"
    return 0
  fi

  if [ -n "$packages" ]; then
    if [ "$manager" = apt ]; then root apt-get update; fi
    # shellcheck disable=SC2046
    root $(install_command "$manager" "$packages")
    # Kernel headers stay on uninstall: other dkms modules (an NVIDIA driver) build against them.
    record "root-package $manager $(echo "$packages" | tr ' ' '\n' | grep -v '^linux-headers-' | tr '\n' ' ' | sed 's/ $//')"
  fi
  root_write "$modprobe_conf" <<CONF
$marker
$options_line
CONF
  record "root-file $modprobe_conf"
  root_write "$modules_conf" <<CONF
$marker
v4l2loopback
CONF
  record "root-file $modules_conf"
  if module_loaded; then
    echo "stylecam: v4l2loopback is already loaded; to apply stylecam's options now (with no app using the camera):"
    echo "  ${sudo_word}modprobe -r v4l2loopback && ${sudo_word}modprobe v4l2loopback"
  elif ! modules_loadable && [ "$dry_run" = 0 ]; then
    echo "stylecam: this machine cannot load kernel modules (no /lib/modules/$release: a container or minimal VM)." >&2
    echo "stylecam: load v4l2loopback on the host with the options above and pass /dev/videoN in." >&2
  else
    [ "$dry_run" = 1 ] && ! modules_loadable && \
      echo "[dry-run] note: no /lib/modules/$release here, so modprobe would fail on this machine (a container?)"
    if root modprobe v4l2loopback; then
      record "root-module v4l2loopback"
    else
      echo "stylecam: modprobe failed. On a Secure Boot machine the dkms module must be signed (enrol the MOK key the package set up, then reboot); see docs/troubleshooting.md" >&2
      return 1
    fi
  fi
  [ "$dry_run" = 1 ] || echo "stylecam: virtual camera set up; \`stylecam doctor\` checks it"
}

do_remove() {
  # Without a manifest: the files (when they carry the marker) and the module, never a package.
  local files=() packages_line="" unload=0
  if [ -n "$manifest" ]; then
    [ -f "$manifest" ] || { echo "v4l2loopback.sh: no manifest $manifest" >&2; exit 1; }
    while read -r kind rest; do
      case "$kind" in
        root-file) files+=("$rest") ;;
        root-package) packages_line="$rest" ;;
        root-module) unload=1 ;;
      esac
    done < "$manifest"
  else
    files=("$modprobe_conf" "$modules_conf")
    unload=1
  fi
  local steps=0
  echo "stylecam: removing the virtual camera set-up. These steps need root:"
  for f in "${files[@]}"; do echo "  - rm -f $f"; steps=$((steps + 1)); done
  if [ "$unload" = 1 ]; then echo "  - modprobe -r v4l2loopback (if loaded and no app uses it)"; steps=$((steps + 1)); fi
  if [ -n "$packages_line" ] && [ "$keep_package" = 0 ]; then
    echo "  - $(remove_command "${packages_line%% *}" "${packages_line#* }") (installed by stylecam's installer)"
    steps=$((steps + 1))
  fi
  [ "$steps" -gt 0 ] || { echo "  (nothing: no root step was recorded)"; return 0; }
  if [ "$dry_run" = 0 ] && ! confirm "Run these steps as root now?"; then
    echo "stylecam: the virtual camera set-up was left in place. Later: $0 remove"
    return 1
  fi
  for f in "${files[@]}"; do
    if [ "$dry_run" = 1 ] || { [ -f "$f" ] && grep -qF "$marker" "$f"; }; then
      root rm -f "$f"
    elif [ -f "$f" ]; then
      echo "stylecam: $f was changed by someone else (no stylecam marker): left in place" >&2
    fi
  done
  if [ "$unload" = 1 ] && { [ "$dry_run" = 1 ] || module_loaded; }; then
    root modprobe -r v4l2loopback || echo "stylecam: v4l2loopback is in use; it unloads at the next reboot" >&2
  fi
  if [ -n "$packages_line" ] && [ "$keep_package" = 0 ]; then
    # shellcheck disable=SC2046
    root $(remove_command "${packages_line%% *}" "${packages_line#* }")
  fi
}

case "$action" in
  status) status ;;
  install) do_install ;;
  remove) do_remove ;;
esac
