#!/bin/bash
# Ledger on vs off (issue 15, BENCHMARKS.md "Ledger (issue 15)"): one fresh release pool per run
# (easy target, rare blocks, a fresh data dir: SQLite ledger there unless --no-ledger), one
# `blvm-stratum-v2 loadgen` run against it; its text report in OUTDIR/NAME.txt.
# usage: bench/ledger.sh NAME POOL-EXTRA-ARGS -- LOADGEN-ARGS   (OUTDIR, default /tmp/lbench)
# e.g.   bench/ledger.sh off --no-ledger -- --connections 1000 --rate 0 --duration 5 --hold 0
#        bench/ledger.sh on -- --connections 1000 --rate 0 --duration 5 --hold 0
set -u
BIN=${POOL_BIN:-$(dirname "$0")/../target/release/blvm-stratum-v2}
OUT=${OUTDIR:-/tmp/lbench}
mkdir -p "$OUT"
name=$1; shift
pool_args=(); while [[ $1 != -- ]]; do pool_args+=("$1"); shift; done; shift
d=$(mktemp -d)
$BIN --listen-addr 127.0.0.1:0 --data-dir $d --min-difficulty 1e-12 --max-difficulty 1e-12 --chain-bits 0x1d00ffff --share-rate-multiple 1000000000 --max-connections 20000 "${pool_args[@]}" >$d/out 2>$d/err &
pid=$!
for i in $(seq 100); do grep -q "authority public key" $d/out 2>/dev/null && grep -q "listening on" $d/out && break; sleep 0.1; done
addr=$(grep "listening on" $d/out | sed 's/.*listening on \([^ ]*\).*/\1/')
key=$(grep "authority public key: " $d/out | sed 's/authority public key: //')
# PERF=FILE: profile the pool during the load (perf record -g).
perf_pid=; if [[ -n ${PERF:-} ]]; then perf record -g -o "$PERF" -p $pid >/dev/null 2>&1 & perf_pid=$!; fi
timeout 120 $BIN loadgen --url $addr --authority-pubkey $key --server-pid $pid --json $OUT/$name.json "$@" > $OUT/$name.txt 2>&1
if [[ -n $perf_pid ]]; then kill -INT $perf_pid; wait $perf_pid; fi
kill -TERM $pid; wait $pid
ls -la $d >> $OUT/$name.txt
rm -rf $d
