# Shared by install.sh, uninstall.sh and v4l2loopback.sh (sourced, not run): how a step that
# needs root is shown, asked for and run. The caller sets dry_run, yes and (optionally) manifest.
# shellcheck shell=bash

if [ "$(id -u)" = 0 ]; then sudo_word=""; else sudo_word="sudo "; fi

# Every root step goes through here: printed in a dry run, else run (through sudo unless root).
root() {
  if [ "${dry_run:-0}" = 1 ]; then
    echo "[dry-run] would run as root: ${sudo_word}$*"
    return 0
  fi
  echo "stylecam: running as root: ${sudo_word}$*"
  if [ -n "$sudo_word" ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "stylecam: this step needs root and sudo is missing: run it as root" >&2
      return 1
    fi
    sudo "$@"
  else
    "$@"
  fi
}

# Writes a root-owned file (mode 644) from stdin.
root_write() {
  local path="$1" content
  content="$(cat)"
  if [ "${dry_run:-0}" = 1 ]; then
    echo "[dry-run] would write as root: $path"
    printf '%s\n' "$content" | sed 's/^/[dry-run]     /'
    return 0
  fi
  echo "stylecam: writing $path (as root)"
  root mkdir -p "$(dirname "$path")" >/dev/null
  if [ -n "$sudo_word" ]; then
    printf '%s\n' "$content" | sudo tee "$path" >/dev/null
  else
    printf '%s\n' "$content" > "$path"
  fi
  root chmod 644 "$path" >/dev/null
}

# confirm QUESTION: 0 for yes. --yes answers yes; no answer at all (stdin closed) is a no.
confirm() {
  [ "${yes:-0}" = 1 ] && return 0
  local answer=""
  printf '%s [y/N] ' "$1"
  if ! read -r answer; then
    echo
    echo "stylecam: no answer (not interactive): nothing was run as root; pass --yes to allow it" >&2
    return 1
  fi
  case "$answer" in [yY]|[yY][eE][sS]) return 0 ;; *) return 1 ;; esac
}

# record LINE: one line of the install manifest (not in a dry run, where nothing was done).
record() {
  if [ -n "${manifest:-}" ] && [ "${dry_run:-0}" = 0 ]; then
    echo "$*" >> "$manifest"
  fi
  return 0
}
