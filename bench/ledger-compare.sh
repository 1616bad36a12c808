#!/bin/bash
# The BENCHMARKS.md "Ledger (issue 15)" table: ledger off, SQLite (FULL, and NORMAL), PostgreSQL
# (throwaway, fsync on), run alternately ROUNDS times (default 2) with bench/ledger.sh, at full
# rate (1,000 connections, 1 share in flight each) and at 1,000 connections x 5 shares/s; then a
# summary line per run (shares/s, ack p50/p99, server CPU per share, load average).
# usage: bench/ledger-compare.sh [ROUNDS]   (OUTDIR, default /tmp/lbench; BEFORE_BIN=PATH adds
#        the same runs of another build of the pool, for a before/after pair)
set -u
here=$(dirname "$0")
rounds=${1:-2}
OUT=${OUTDIR:-/tmp/lbench}
export OUTDIR=$OUT
full=(--connections 1000 --rate 0 --duration 5 --hold 0)
paced=(--connections 1000 --rate 5 --duration 10 --hold 0)
for load in full paced; do
    declare -n args=$load
    for r in $(seq "$rounds"); do
        "$here/ledger.sh" "$load-off-$r" --no-ledger -- "${args[@]}"
        "$here/ledger.sh" "$load-sqlite-$r" -- "${args[@]}"
        if [[ -n ${BEFORE_BIN:-} ]]; then
            POOL_BIN=$BEFORE_BIN "$here/ledger.sh" "$load-sqlite-before-$r" -- "${args[@]}"
        fi
        "$here/ledger.sh" "$load-sqlite-normal-$r" --ledger-sqlite-sync normal -- "${args[@]}"
        "$here/ledger.sh" "$load-postgres-$r" --postgres -- "${args[@]}"
        if [[ -n ${BEFORE_BIN:-} ]]; then
            POOL_BIN=$BEFORE_BIN "$here/ledger.sh" "$load-postgres-before-$r" --postgres -- "${args[@]}"
        fi
    done
done
for f in "$OUT"/*.txt; do
    printf '%-28s %s | %s | %s | %s\n' "$(basename "$f" .txt)" \
        "$(grep -o '= [0-9]* shares/s' "$f")" \
        "$(grep -o 'p50 [0-9.]* µs' "$f" | head -1), $(grep -o 'p99 [0-9.]* µs' "$f" | head -1)" \
        "$(grep -o '[0-9.]* µs per acknowledged share ([0-9.]* cores' "$f" | head -1)" \
        "$(grep -o 'load average at the end: .*' "$f")"
done
