#!/usr/bin/env bash
# The HTTP server's cost (issue 16, item 6): the load scenarios of bench/run.sh with the HTTP
# server off, on with nobody looking, on with a client following the live feed (curl on
# /api/v1/events: what an open dashboard asks of the pool, without a browser's own CPU on the
# same cores), and on with the dashboard open in a real browser (Debian's chromium, headless,
# following the live feed), one after the other in each round, so a busy machine weighs on all
# alike; the ratios to "off" are per round.
#
#   a) latency:    1,000 connections x 5 shares/s (ack latency p50/p99)
#   b) throughput: 1,000 connections, each share sent when the previous is acknowledged
#
# Environment: POOL_BIN (default target/release/blvm-stratum-v2, built if missing), ROUNDS (3),
# DURATION (s, 10), SCENARIOS ("a b"), CHROMIUM (/usr/bin/chromium), KEEP=1 (keep $WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCENARIOS=${SCENARIOS:-"a b"}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
BIN=${POOL_BIN:-$PWD/target/release/blvm-stratum-v2}
WORK=$(mktemp -d -t blvm-dashboard-bench.XXXXXX)
BROWSER_PID=""
# shellcheck source=bench/side_by_side.sh
source bench/side_by_side.sh

close_browser() {
    if [[ -n "$BROWSER_PID" ]]; then
        kill "$BROWSER_PID" 2>/dev/null || true
        wait "$BROWSER_PID" 2>/dev/null || true
    fi
    BROWSER_PID=""
}
cleanup() {
    close_browser
    stop_pool
    [[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ensure_release_build

# open_dashboard NAME: headless chromium on the pool's dashboard (the flags of
# tests/dashboard_browser.rs), left open while the load runs.
open_dashboard() {
    local profile=$WORK/browser-$1
    mkdir -p "$profile"
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --remote-debugging-port=0 "$HTTP_URL" \
        >"$WORK/browser-$1.log" 2>&1 &
    BROWSER_PID=$!
    # The page loads, reads the API once and subscribes to the live feed.
    sleep 3
    # Which page the browser shows (its DevTools list), as evidence it is open.
    local devtools
    devtools=$(grep -o 'ws://127.0.0.1:[0-9]*' "$WORK/browser-$1.log" | head -1 | sed 's|ws://||' || true)
    if [[ -n "$devtools" ]]; then
        curl -s "http://$devtools/json/list" | python3 -c \
            'import json,sys; print("   browser:", [(p["title"], p["url"]) for p in json.load(sys.stdin) if p["type"] == "page"])' ||
            true
    fi
}

# follow_feed NAME: a client of the live feed (server-sent events), left open while the load runs.
follow_feed() {
    curl -sN "${HTTP_URL%/}/api/v1/events" >"$WORK/feed-$1.log" 2>&1 &
    BROWSER_PID=$!
    sleep 3
    echo "   feed: $(grep -c '^data:' "$WORK/feed-$1.log") summaries so far"
}

# variant NAME VARIANT PROTO LOADGEN-ARGS...
variant() {
    local name=$1 v=$2
    shift 2
    case $v in
    off) POOL_ARGS=(--http-enabled false) ;;
    *) POOL_ARGS=(--http-listen-addr 127.0.0.1:0) ;;
    esac
    start_pool "$name"
    [[ $v == open ]] && open_dashboard "$name"
    [[ $v == feed ]] && follow_feed "$name"
    run_loadgen "$name" "$@"
    close_browser
    stop_pool
}

for round in $(seq "$ROUNDS"); do
    for s in $SCENARIOS; do
        for v in off on feed open; do
            case $s in
            a) variant "r${round}_a_${v}" $v sv2 --connections 1000 --rate 5 --duration "$DURATION" ;;
            b) variant "r${round}_b_${v}" $v sv2 --connections 1000 --rate 0 --duration "$DURATION" ;;
            esac
        done
    done
done

WORK="$WORK" ROUNDS="$ROUNDS" python3 - <<'PY'
import json, os, statistics

work, rounds = os.environ["WORK"], int(os.environ["ROUNDS"])

def get(name, *path):
    try:
        r = json.load(open(f"{work}/{name}.json"))
    except (OSError, ValueError):
        return None
    for p in path:
        r = None if r is None else r.get(p)
    return r

FIGURES = [
    ("a", "ack latency p50 (µs), 1,000 x 5/s", ("latency", "p50_us")),
    ("a", "ack latency p99 (µs), 1,000 x 5/s", ("latency", "p99_us")),
    ("b", "shares acknowledged / s, 1,000 conns", ("acked_per_sec",)),
    ("b", "server CPU per acknowledged share (µs), 1,000 conns", ("server", "cpu_per_share_us")),
]
print("| scenario | figure | HTTP off (rounds) | on, nobody looking | on, live feed followed | on, dashboard open | feed / off per round | median | open / off per round | median |")
print("|---|---|---|---|---|---|---|---|---|---|")
for scen, label, path in FIGURES:
    cols = {v: [get(f"r{r}_{scen}_{v}", *path) for r in range(1, rounds + 1)] for v in ("off", "on", "feed", "open")}
    if all(x is None for xs in cols.values() for x in xs):
        continue
    fmt = lambda xs: " / ".join("n/a" if x is None else f"{x:,.1f}" for x in xs)
    cells = []
    for v in ("feed", "open"):
        ratios = [o / f for f, o in zip(cols["off"], cols[v]) if f and o]
        med = f"{statistics.median(ratios):.3f}" if ratios else "n/a"
        cells += [" / ".join(f"{x:.3f}" for x in ratios), med]
    print(f"| {scen} | {label} | {fmt(cols['off'])} | {fmt(cols['on'])} | {fmt(cols['feed'])} | {fmt(cols['open'])} | {' | '.join(cells)} |")
print()
for r in range(1, rounds + 1):
    for scen in ("a", "b"):
        for v in ("off", "on", "feed", "open"):
            name = f"r{r}_{scen}_{v}"
            try:
                load = open(f"{work}/{name}.load").read().strip()
            except OSError:
                continue
            errs = get(name, "errors") or {}
            print(f"- {name}: load average before {load}; errors {errs if errs else 'none'}")
PY
