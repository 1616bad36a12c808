#!/bin/bash
# Ledger on vs off (issue 15, BENCHMARKS.md "Ledger (issue 15)"): one fresh release pool per run
# (easy target, rare blocks, a fresh data dir: SQLite ledger there unless --no-ledger), one
# `blvm-stratum-v2 loadgen` run against it; its text report in OUTDIR/NAME.txt.
# usage: bench/ledger.sh NAME POOL-EXTRA-ARGS -- LOADGEN-ARGS   (OUTDIR, default /tmp/lbench)
# e.g.   bench/ledger.sh off --no-ledger -- --connections 1000 --rate 0 --duration 5 --hold 0
#        bench/ledger.sh on -- --connections 1000 --rate 0 --duration 5 --hold 0
#        bench/ledger.sh sqlite-normal --ledger-sqlite-sync normal -- ...
#        bench/ledger.sh pg --postgres -- ...
# --postgres (first pool argument): start a throwaway PostgreSQL for this run, as
# tests/common/postgres.rs does (initdb in a temporary directory, as nobody via runuser when
# root, 127.0.0.1 on an ephemeral port, fsync ON: a real commit's cost), point the pool at it
# with --ledger-url, stop and remove it at the end.
# POOL_BIN=PATH benches another build of the pool; PERF=FILE profiles the pool under the load;
# PERF_STAT=1 adds its context switches per acknowledged share (PERF_EVENTS=E1,E2 counts more
# events in OUTDIR/NAME.perfstat, e.g. syscalls:sys_enter_fsync for the commits a second).
# POOL_CPUS=LIST / LOADGEN_CPUS=LIST run the pool / the load generator under `taskset -c LIST`
# (e.g. POOL_CPUS=0 LOADGEN_CPUS=1: each on a core of its own, so the pool's CPU per share alone
# sets its throughput; steadier than sharing both cores, BENCHMARKS.md "Ledger, pinned").
# PG_CPUS=LIST runs the throwaway PostgreSQL (--postgres) under `taskset -c LIST` (e.g. on the
# load generator's core: the pool's core is then the pool's alone, as with a database server
# on another machine).
set -u
BIN=${POOL_BIN:-$(dirname "$0")/../target/release/blvm-stratum-v2}
LOADGEN=${LOADGEN_BIN:-$BIN}
OUT=${OUTDIR:-/tmp/lbench}
mkdir -p "$OUT"
name=$1; shift
pool_args=(); pg=
while [[ $1 != -- ]]; do
    if [[ $1 == --postgres ]]; then pg=1; else pool_args+=("$1"); fi
    shift
done
shift
d=$(mktemp -d)

pg_dir=; pg_user=
pg_run() { if [[ -n $pg_user ]]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi; }
if [[ -n $pg ]]; then
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [[ -x $pg_bin/initdb ]] || { echo "PostgreSQL is not installed (/usr/lib/postgresql/*/bin)" >&2; exit 1; }
    pg_dir=$(mktemp -d)
    if [[ $(id -u) == 0 ]]; then pg_user=nobody; chown -R nobody "$pg_dir"; fi
    pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    pg_run "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$pg_dir/initdb.log" 2>&1 \
        || { cat "$pg_dir/initdb.log" >&2; exit 1; }
    pg_run "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c fsync=on -c max_connections=50" start >/dev/null \
        || { cat "$pg_dir/server.log" >&2; exit 1; }
    if [[ -n ${PG_CPUS:-} ]]; then
        # The postmaster and the processes it started; the pool's backends, forked later,
        # inherit its affinity.
        pg_main=$(head -1 "$pg_dir/data/postmaster.pid")
        for p in $pg_main $(pgrep -P "$pg_main"); do taskset -cp "$PG_CPUS" "$p" >/dev/null; done
    fi
    pg_run "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE ledger" postgres
    pool_args+=(--ledger-url "postgres://postgres@127.0.0.1:$pg_port/ledger")
fi
pg_stop() {
    if [[ -n $pg_dir ]]; then
        pg_run "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1
        rm -rf "$pg_dir"
    fi
}
trap pg_stop EXIT

${POOL_CPUS:+taskset -c $POOL_CPUS} $BIN --listen-addr 127.0.0.1:0 --data-dir $d --min-difficulty 1e-12 --max-difficulty 1e-12 --chain-bits 0x1d00ffff --share-rate-multiple 1000000000 --max-connections 20000 "${pool_args[@]}" >$d/out 2>$d/err &
pid=$!
for i in $(seq 100); do grep -q "authority public key" $d/out 2>/dev/null && grep -q "listening on" $d/out && break; sleep 0.1; done
addr=$(grep "listening on" $d/out | sed 's/.*listening on \([^ ]*\).*/\1/')
key=$(grep "authority public key: " $d/out | sed 's/authority public key: //')
# PERF=FILE: profile the pool during the load (perf record -g).
# PERF_STAT=1: count the pool's context switches and CPU time (ms) during the load (perf stat),
# per acknowledged share (this VM has no hardware counters: no instructions or cycles).
perf_pid=; if [[ -n ${PERF:-} ]]; then perf record -g -o "$PERF" -p $pid >/dev/null 2>&1 & perf_pid=$!; fi
if [[ -n ${PERF_STAT:-} ]]; then perf stat -e context-switches,task-clock${PERF_EVENTS:+,$PERF_EVENTS} -p $pid -o $OUT/$name.perfstat >/dev/null 2>&1 & perf_pid=$!; fi
${LOADGEN_CPUS:+taskset -c $LOADGEN_CPUS} timeout 120 $LOADGEN loadgen --url $addr --authority-pubkey $key --server-pid $pid --json $OUT/$name.json "$@" > $OUT/$name.txt 2>&1
if [[ -n $perf_pid ]]; then kill -INT $perf_pid; wait $perf_pid; fi
kill -TERM $pid; wait $pid
if [[ -n ${PERF_STAT:-} ]]; then
    acked=$(grep -o '[0-9]* acknowledged =' $OUT/$name.txt | head -1 | grep -o '[0-9]*')
    awk -v n="$acked" '/context-switches/ { gsub(",", "", $1); printf "pool context switches per acknowledged share: %.3f\n", $1 / n }
        /task-clock/ { gsub(",", "", $1); printf "pool CPU per acknowledged share (connections set up included): %.2f µs\n", $1 * 1000 / n }' $OUT/$name.perfstat >> $OUT/$name.txt
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/$name.txt
ls -la $d >> $OUT/$name.txt
rm -rf $d
