#!/usr/bin/env bash
# Installs PostgreSQL 15's server binaries (initdb, pg_ctl, postgres under
# /usr/lib/postgresql/15/bin), which the ledger's conformance suite and the two-server test
# use to start throwaway databases. Idempotent and quiet; needs root (or sudo). Prints apt's
# log only on failure. The package's own cluster is not needed: the tests make their own.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
if [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && [ -x "$bin/postgres" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postgresql-15; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "postgres-deps: installing postgresql-15 failed" >&2
    exit 1
fi
test -x "$bin/initdb"
test -x "$bin/pg_ctl"
