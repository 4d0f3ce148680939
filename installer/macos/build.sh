#!/usr/bin/env bash
# Builds stylecam.app and a disk image on macOS (Apple silicon or Intel), outside the repository.
#
#   installer/macos/build.sh [--out DIR] [--flavor cpu|classic] [--sign IDENTITY]
#
# 1. installer/package.sh freezes the app with PyInstaller (installer/pyinstaller/stylecam.spec
#    makes DIR/dist/FLAVOR/stylecam.app on macOS: a menu-bar app, LSUIElement, with a camera usage text)
#    and runs the headless smoke test on it. On macOS the "cpu" flavour is PyPI's torch, which
#    also drives Apple GPUs through MPS.
# 2. The app is signed: ad hoc by default (runs on this Mac; elsewhere Gatekeeper asks), or with
#    --sign "Developer ID Application: NAME (TEAMID)" (then notarize, see README.md).
# 3. hdiutil makes DIR/stylecam-VERSION-macos-ARCH.dmg with the app and an Applications link.
# Needs Python 3.11 from python.org or Homebrew, and Xcode's command line tools (codesign).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out=/tmp/stylecam-package
flavor=cpu
identity=-
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --flavor) flavor="$2"; shift 2 ;;
    --sign) identity="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(uname -s)" = Darwin ] || { echo "build.sh: this builds the macOS app; run it on a Mac" >&2; exit 2; }
case "$flavor" in cpu|classic) ;; *) echo "build.sh: --flavor $flavor: macOS has cpu (with MPS) or classic" >&2; exit 2 ;; esac

version="$(sed -n 's/^torch==\(.*\)/\1/p' "$repo/installer/constraints.txt" | head -n 1)"
# PyPI's macOS torch wheel is the right one (no CUDA on a Mac); no index URL.
[ "$flavor" = cpu ] && export STYLECAM_TORCH="${STYLECAM_TORCH:-torch==$version}"
bash "$repo/installer/package.sh" --out "$out" --flavor "$flavor"

app="$out/dist/$flavor/stylecam.app"
[ -d "$app" ] || { echo "build.sh: PyInstaller made no $app" >&2; exit 1; }
echo "stylecam: signing $app (identity: $identity)"
sign_args=(--force --deep --sign "$identity")
# The hardened runtime is what notarization requires; an ad hoc signature cannot use it.
[ "$identity" = - ] || sign_args+=(--options runtime --timestamp)
codesign "${sign_args[@]}" "$app"
codesign --verify --deep --strict "$app"

stage="$out/dmg"
rm -rf "$stage"
mkdir -p "$stage"
cp -R "$app" "$stage/"
ln -s /Applications "$stage/Applications"
app_version="$("$app/Contents/MacOS/stylecam" --version | awk '{print $2}')"
dmg="$out/stylecam-$app_version-macos-$(uname -m).dmg"
rm -f "$dmg"
hdiutil create -volname stylecam -srcfolder "$stage" -fs HFS+ -format UDZO "$dmg" >/dev/null
echo "stylecam: $dmg ($(du -sh "$dmg" | cut -f1))"
