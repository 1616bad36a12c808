#!/usr/bin/env bash
# Stratum V1 beside Stratum V2 (issue 17, item 6): the same load scenarios over both protocols
# of the same release build, one after the other in each round, ROUNDS rounds, so a busy shared
# machine weighs on both alike; the ratios SV1 / SV2 are per round.
#
#   a) latency:    1,000 connections x 5 shares/s (ack latency p50/p99, server CPU per share)
#   b) throughput: 1,000 connections, each share sent when the previous is acknowledged
#                  (shares/s, server CPU per acknowledged share)
#   d) idle:       10,000 connections held (memory per idle connection: the pool's VmRSS with
#                  them idle minus before the first, divided by their number)
#
# Each scenario runs against a fresh pool (the same flags as bench/run.sh: a share target near
# 2^256, difficulty-1 blocks, no rate limit, admission limits lifted), driven by `loadgen` (SV2:
# Noise, one extended channel per connection; SV1: --sv1 on the pool's SV1 port, one
# subscribe+authorize per connection). Results: a markdown table on stdout and JSON in $WORK.
#
# Environment: POOL_BIN (default target/release/blvm-stratum-v2, built if missing), ROUNDS (3),
# DURATION (s, 10), SCENARIOS ("a b d"), KEEP=1 (keep $WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCENARIOS=${SCENARIOS:-"a b d"}
BIN=${POOL_BIN:-$PWD/target/release/blvm-stratum-v2}
WORK=$(mktemp -d -t blvm-sv1-bench.XXXXXX)
# shellcheck source=bench/side_by_side.sh
source bench/side_by_side.sh
cleanup() {
    stop_pool
    [[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ensure_release_build

for round in $(seq "$ROUNDS"); do
    for s in $SCENARIOS; do
        for proto in sv2 sv1; do
            case $s in
            a) run "r${round}_a_${proto}" $proto --connections 1000 --rate 5 --duration "$DURATION" ;;
            b) run "r${round}_b_${proto}" $proto --connections 1000 --rate 0 --duration "$DURATION" ;;
            d) run "r${round}_d_${proto}" $proto --connections 10000 --connect-concurrency 1000 \
                --duration 0 --hold 3 ;;
            esac
        done
    done
done

WORK="$WORK" ROUNDS="$ROUNDS" python3 - <<'PY'
import json, os, statistics

work, rounds = os.environ["WORK"], int(os.environ["ROUNDS"])

def load(name):
    try:
        return json.load(open(f"{work}/{name}.json"))
    except (OSError, ValueError):
        return None

def get(r, *path):
    for p in path:
        if r is None:
            return None
        r = r.get(p)
    return r

FIGURES = [
    ("a", "ack latency p50 (µs), 1,000 x 5/s", ("latency", "p50_us"), 1),
    ("a", "ack latency p99 (µs), 1,000 x 5/s", ("latency", "p99_us"), 1),
    ("a", "server CPU per acknowledged share (µs), 1,000 x 5/s", ("server", "cpu_per_share_us"), 2),
    ("b", "shares acknowledged / s, 1,000 conns", ("acked_per_sec",), 0),
    ("b", "server CPU per acknowledged share (µs), 1,000 conns", ("server", "cpu_per_share_us"), 2),
    ("b", "ack latency p50 (µs), 1,000 conns", ("latency", "p50_us"), 1),
    ("d", "connections held (of 10,000)", ("ready",), 0),
    ("d", "memory per idle connection (KiB)", ("server", "rss_idle_per_connection_bytes"), 1),
    ("d", "server CPU per new connection (µs)", ("server", "cpu_per_connection_us"), 1),
]
print("| scenario | figure | SV2 (rounds) | SV1 (rounds) | SV1 / SV2 per round | median ratio |")
print("|---|---|---|---|---|---|")
for scen, label, path, digits in FIGURES:
    v2, v1, ratios = [], [], []
    for r in range(1, rounds + 1):
        a = get(load(f"r{r}_{scen}_sv2"), *path)
        b = get(load(f"r{r}_{scen}_sv1"), *path)
        if path[-1] == "rss_idle_per_connection_bytes":
            a = None if a is None else a / 1024
            b = None if b is None else b / 1024
        v2.append(a)
        v1.append(b)
        if a and b:
            ratios.append(b / a)
    if all(x is None for x in v2 + v1):
        continue
    fmt = lambda xs: " / ".join("n/a" if x is None else f"{x:,.{digits}f}" for x in xs)
    med = f"{statistics.median(ratios):.2f}" if ratios else "n/a"
    print(f"| {scen} | {label} | {fmt(v2)} | {fmt(v1)} | {' / '.join(f'{x:.2f}' for x in ratios)} | {med} |")
print()
for r in range(1, rounds + 1):
    for scen in ("a", "b", "d"):
        for proto in ("sv2", "sv1"):
            name = f"r{r}_{scen}_{proto}"
            rep = load(name)
            if rep is None:
                continue
            load_avg = open(f"{work}/{name}.load").read().strip()
            errs = rep.get("errors") or {}
            print(f"- {name}: load average before {load_avg}; errors {errs if errs else 'none'}")
PY
