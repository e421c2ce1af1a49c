#!/usr/bin/env bash
# Installs the tools the postage tests need: an independent PDF417 decoder (ZXingReader from
# zxing-cpp-tools) and a PKCS#11 token (SoftHSM2). Idempotent and quiet; needs root (or sudo).
set -euo pipefail
need=()
command -v ZXingReader >/dev/null 2>&1 || need+=(zxing-cpp-tools)
if ! command -v softhsm2-util >/dev/null 2>&1 || ! dpkg -s libsofthsm2 >/dev/null 2>&1; then
    need+=(softhsm2)
fi
if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v ZXingReader >/dev/null
dpkg -L libsofthsm2 | grep -q 'libsofthsm2\.so$'
