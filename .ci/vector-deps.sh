#!/usr/bin/env bash
# Prints the path of a Python 3 that has PyNaCl and pyca/cryptography (the independent check
# of docs/vectors.md), installing Debian's python3-nacl and python3-cryptography with apt-get
# when no Python on the PATH has them. Idempotent; prints apt's log only on failure.
set -euo pipefail
has() { "$1" -c 'import nacl.signing, cryptography' >/dev/null 2>&1; }
for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && has "$py"; then
        command -v "$py"
        exit 0
    fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends python3 python3-nacl python3-cryptography; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "vector-deps: installing python3-nacl and python3-cryptography failed" >&2
    exit 1
fi
has /usr/bin/python3
echo /usr/bin/python3
