#!/usr/bin/env bash
# Installs the tools the postage tests need: an independent PDF417 decoder (ZXingReader from
# zxing-cpp-tools), an SVG rasteriser (rsvg-convert from librsvg2-bin) and a PKCS#11 token
# (SoftHSM2). Idempotent and quiet; needs root (or sudo). Prints apt's log only on failure.
set -euo pipefail
need=()
command -v ZXingReader >/dev/null 2>&1 || need+=(zxing-cpp-tools)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
if ! command -v softhsm2-util >/dev/null 2>&1 || ! dpkg -s libsofthsm2 >/dev/null 2>&1; then
    need+=(softhsm2)
fi
if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "postage-deps: installing ${need[*]} failed" >&2
    exit 1
fi
command -v ZXingReader >/dev/null
command -v rsvg-convert >/dev/null
dpkg -L libsofthsm2 | grep -q 'libsofthsm2\.so$'
