#!/usr/bin/env bash
# Benchmarks of blvm-stratum-v2, written to BENCHMARKS.md.
#
# 1. Builds the release binary.
# 2. Load scenarios, each against a fresh pool on 127.0.0.1 (temp data dir, a share target
#    near 2^256 so the first nonce is a share, difficulty-1 blocks so blocks are rare), driven
#    by `blvm-stratum-v2 loadgen` (real Noise-encrypted SV2, one extended channel per
#    connection) with the pool's pid for its CPU time and memory:
#      a) latency:    1,000 connections x 5 shares/s
#      b) throughput: 1,000 connections, each share sent when the previous is acknowledged
#      b8) pipelined: 1,000 connections with 8 shares in flight each (fewer syscalls per share)
#      c) handshakes: a burst of 1,000 simultaneous connects
#      d) memory:     10,000 connections held idle (if the open-files limit allows)
#      r) refresh:    10,000 connections held idle 12 s with a job refresh every 5 s (not in
#                     the default set): the server CPU of the periodic same-tip job refresh,
#                     reported as "server CPU while the connections were held idle"
#    Side by side (SRI=1, the default): the same scenarios against SRI's pool_sv2, fed by our
#    `template-provider` subcommand (Template Distribution over Noise, the same embedded regtest
#    chain and nBits), with pool_sv2's pid for its CPU time and memory. If pool_sv2 is not
#    installed, it is installed first (`apt-get install -y capnproto libcapnp-dev` when
#    missing and running as root, then `cargo install --locked pool_sv2 --version
#    $SRI_VERSION`), bounded in time; if that fails the run goes on with our pool only.
# 3. The criterion micro-benchmarks codec, noise and share_validation (ours beside SRI's
#    crates), skipping any that does not exist.
# 4. BENCHMARKS.md: every figure, the ratio to SRI where there is one, date, CPU, cores.
#
# Environment: POOL_BIN (another pool binary to measure, e.g. an older commit's release build;
# default this tree's), DURATION (s, default 10), SCENARIOS (default "a b b8 c d"), SKIP_BENCH=1 (keep
# the criterion results already in target/criterion),
# OUT (default BENCHMARKS.md), LOADGEN_THREADS (default 1), SRI (default 1; 0: our pool only),
# SRI_VERSION (default 0.7.0), SRI_RUST_LOG (pool_sv2's log filter, default warn: at info it
# logs two lines per share), SRI_SHARES_PER_MINUTE (default 1000: keeps its vardiff target at
# the loadgen's max target and its per-channel share budget, 1,200 x this, out of reach).
# Every step is bounded in time; the pool is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10}
SCENARIOS=${SCENARIOS:-"a b b8 c d"}
OUT=${OUT:-BENCHMARKS.md}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
WORK=$(mktemp -d -t blvm-bench.XXXXXX)
SRI=${SRI:-1}
SRI_VERSION=${SRI_VERSION:-0.7.0}
SRI_RUST_LOG=${SRI_RUST_LOG:-warn}
SRI_SHARES_PER_MINUTE=${SRI_SHARES_PER_MINUTE:-1000}
POOL_PID=""
TP_PID=""
BIN=$ROOT/target/release/blvm-stratum-v2
# POOL_BIN: another build of the pool to measure (an older commit's, for a before/after pair);
# the load generator is always this tree's.
POOL_BIN=${POOL_BIN:-$BIN}

# stop_pid PID: SIGTERM, then SIGKILL after 5 s.
stop_pid() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
stop_pool() {
    stop_pid "$POOL_PID"
    stop_pid "$TP_PID"
    POOL_PID=""
    TP_PID=""
}
cleanup() {
    stop_pool
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both the pool and the load generator need a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ "$NOFILE" == unlimited ]] && NOFILE=1048576

echo "== building (release)"
timeout 1800 cargo build --release --quiet

# find_pool_sv2: sets SRI_BIN to pool_sv2 (installing it if missing), or "" if unavailable.
SRI_BIN=""
find_pool_sv2() {
    SRI_BIN=$(command -v pool_sv2 || true)
    [[ -z "$SRI_BIN" && -x "$HOME/.cargo/bin/pool_sv2" ]] && SRI_BIN=$HOME/.cargo/bin/pool_sv2
    [[ -n "$SRI_BIN" ]] && return 0
    echo "== pool_sv2 not found: installing pool_sv2 $SRI_VERSION (about 15 min on 2 cores)"
    if ! command -v capnp >/dev/null 2>&1; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            timeout 900 apt-get install -y capnproto libcapnp-dev >"$WORK/apt.log" 2>&1 ||
                { timeout 300 apt-get update >>"$WORK/apt.log" 2>&1 &&
                    timeout 900 apt-get install -y capnproto libcapnp-dev >>"$WORK/apt.log" 2>&1; } ||
                echo "   apt-get install capnproto libcapnp-dev failed; trying cargo install anyway"
            tail -3 "$WORK/apt.log"
        else
            echo "   capnp is missing and this is not root with apt-get: pool_sv2 needs capnproto and libcapnp-dev"
        fi
    fi
    if timeout 3600 cargo install --locked pool_sv2 --version "$SRI_VERSION" >"$WORK/sri-install.log" 2>&1; then
        SRI_BIN=$HOME/.cargo/bin/pool_sv2
    else
        echo "== could not install pool_sv2 (last lines below): running our pool only"
        tail -5 "$WORK/sri-install.log"
        SRI_BIN=""
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_sri NAME: a fresh template provider and a fresh pool_sv2 fed by it; sets POOL_PID
# (pool_sv2's), TP_PID, ADDR, KEY. Returns 1 if either did not start.
start_sri() {
    local dir=$WORK/sri-$1
    mkdir -p "$dir"
    "$BIN" template-provider --listen-addr 127.0.0.1:0 --data-dir "$dir/tp" \
        --chain-bits 0x1d00ffff >"$dir/tp.out" 2>"$dir/tp.err" &
    TP_PID=$!
    for _ in $(seq 100); do
        grep -q "authority public key" "$dir/tp.out" 2>/dev/null && break
        sleep 0.1
    done
    local tp_addr tp_key secret port
    tp_addr=$(grep -o 'listening on [0-9.:]*' "$dir/tp.out" | awk '{print $3}')
    tp_key=$(awk '/authority public key/{print $4}' "$dir/tp.out")
    if [[ -z "$tp_addr" || -z "$tp_key" ]]; then
        echo "template provider did not start:" >&2
        cat "$dir/tp.err" >&2
        return 1
    fi
    KEY=$("$BIN" keygen --out "$dir/authority_secret_key" 2>/dev/null)
    secret=$(cat "$dir/authority_secret_key")
    port=$(free_port)
    ADDR=127.0.0.1:$port
    cat >"$dir/pool-config.toml" <<CONFIG
# SRI pool_sv2, written by bench/run.sh
authority_public_key = "$KEY"
authority_secret_key = "$secret"
cert_validity_sec = 86400
listen_address = "$ADDR"
coinbase_reward_script = "addr(bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080)"
server_id = 1
pool_signature = "SRI pool_sv2 bench"
shares_per_minute = $SRI_SHARES_PER_MINUTE
share_batch_size = 1

[template_provider_type.Sv2Tp]
address = "$tp_addr"
public_key = "$tp_key"
CONFIG
    RUST_LOG=$SRI_RUST_LOG "$SRI_BIN" -c "$dir/pool-config.toml" >"$dir/out" 2>&1 &
    POOL_PID=$!
    # It listens once it has the first template from the template provider.
    for _ in $(seq 300); do
        kill -0 "$POOL_PID" 2>/dev/null || break
        python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))" && return 0
        sleep 0.1
    done
    echo "pool_sv2 did not start (last lines of its log):" >&2
    tail -20 "$dir/out" >&2
    return 1
}

# start_pool NAME: a fresh pool; sets POOL_PID, ADDR, KEY.
start_pool() {
    local dir=$WORK/pool-$1
    mkdir -p "$dir"
    # A capacity test at a fixed difficulty: the per-channel share rate limit and the
    # admission limits on connects (where the pool has them) are lifted, so that 10,000
    # connections come in at the speed the pool can take them, not at its default 2,000
    # handshakes a second.
    local rate="" help
    help=$("$POOL_BIN" --help 2>/dev/null || true)
    grep -q -- --share-rate-multiple <<<"$help" && rate="--share-rate-multiple 1e9"
    grep -q -- --handshakes-per-sec <<<"$help" &&
        rate="$rate --handshakes-per-sec 1000000 --max-pre-setup-connections 20000"
    # shellcheck disable=SC2086
    "$POOL_BIN" --listen-addr 127.0.0.1:0 --data-dir "$dir" \
        --min-difficulty 1e-12 --max-difficulty 1e-12 --chain-bits 0x1d00ffff \
        $rate --max-connections 20000 ${POOL_EXTRA:-} >"$dir/out" 2>"$dir/err" &
    POOL_PID=$!
    for _ in $(seq 100); do
        grep -q "authority public key" "$dir/out" 2>/dev/null && break
        sleep 0.1
    done
    ADDR=$(grep -o 'listening on [0-9.:]*' "$dir/out" | awk '{print $3}')
    KEY=$(awk '/authority public key/{print $4}' "$dir/out")
    if [[ -z "$ADDR" || -z "$KEY" ]]; then
        echo "pool did not start:" >&2
        cat "$dir/err" >&2
        exit 1
    fi
}

# scenario NAME LOADGEN-ARGS...: fresh pool, one load generator run, JSON in $WORK/NAME.json.
# A NAME starting with sri_ runs against pool_sv2 (fed by our template provider) instead.
# TcpExt ListenOverflows and ListenDrops from /proc/net/netstat.
listen_counters() {
    awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else { print $n["ListenOverflows"], $n["ListenDrops"] } }' /proc/net/netstat 2>/dev/null || echo "0 0"
}

scenario() {
    local name=$1
    shift
    if [[ $name == sri_* ]]; then
        echo "== scenario $name (SRI pool_sv2): loadgen $*"
        if ! start_sri "$name"; then
            echo "   (pool_sv2 did not start: scenario skipped)"
            echo "skipped: pool_sv2 did not start" >"$WORK/$name.skipped"
            stop_pool
            return 0
        fi
    else
        echo "== scenario $name: loadgen $*"
        start_pool "$name"
    fi
    cut -d' ' -f1-3 /proc/loadavg >"$WORK/$name.load"
    local listen_before
    listen_before=$(listen_counters)
    local rc=0
    timeout 300 "$BIN" loadgen --url "$ADDR" --authority-pubkey "$KEY" \
        --server-pid "$POOL_PID" --threads "$LOADGEN_THREADS" \
        --json "$WORK/$name.json" "$@" 2>"$WORK/$name.err" | tee "$WORK/$name.txt" || rc=$?
    [[ $rc -ne 0 ]] && echo "   (loadgen exit code $rc: see errors above)"
    echo "$*" >"$WORK/$name.cmd"
    # SYNs the kernel dropped or overflowed on listen queues during the run (machine-wide; a
    # dropped SYN is retried by the client a second later).
    echo "$listen_before $(listen_counters)" | awk '{print $3 - $1, $4 - $2}' >"$WORK/$name.listen"
    stop_pool
}

if [[ "$SRI" == 1 ]]; then
    find_pool_sv2
    [[ -n "$SRI_BIN" ]] && echo "== side by side with $("$SRI_BIN" --version 2>/dev/null || echo pool_sv2) ($SRI_BIN)"
fi
PREFIXES=""
[[ -n "$SRI_BIN" ]] && PREFIXES="sri_"

for s in $SCENARIOS; do
    for p in "" $PREFIXES; do
        case $s in
        a) scenario "${p}a_latency" --connections 1000 --rate 5 --duration "$DURATION" ;;
        b) scenario "${p}b_throughput" --connections 1000 --rate 0 --duration "$DURATION" ;;
        b8) scenario "${p}b8_pipelined" --connections 1000 --rate 0 --window 8 --duration "$DURATION" ;;
        c) scenario "${p}c_handshakes" --connections 1000 --connect-concurrency 1000 --duration 0 --hold 1 ;;
        d)
            if ((NOFILE >= 10100)); then
                scenario "${p}d_idle_10k" --connections 10000 --connect-concurrency 1000 --duration 0 --hold 3
            else
                echo "== scenario ${p}d skipped: open-files limit $NOFILE < 10100"
                echo "skipped: open-files limit $NOFILE" >"$WORK/${p}d_idle_10k.skipped"
            fi
            ;;
        r)
            if [[ -z $p ]] && ((NOFILE >= 10100)); then
                POOL_EXTRA="--job-refresh-secs 5" scenario "r_refresh_10k" --connections 10000 \
                    --connect-concurrency 1000 --duration 0 --hold 12
            fi
            ;;
        esac
    done
done
SRI_VERSION_TEXT=""
[[ -n "$SRI_BIN" ]] && SRI_VERSION_TEXT=$("$SRI_BIN" --version 2>/dev/null || echo "pool_sv2 $SRI_VERSION")

BENCHES=""
if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
    for b in codec noise share_validation; do
        if [[ -f benches/$b.rs ]] && grep -q "name = \"$b\"" Cargo.toml; then
            BENCHES="$BENCHES --bench $b"
        else
            echo "== bench $b missing: skipped"
        fi
    done
    if [[ -n "$BENCHES" ]]; then
        echo "== cargo bench$BENCHES"
        touch "$WORK/bench.start"
        # shellcheck disable=SC2086
        timeout 3600 cargo bench $BENCHES -- --warm-up-time 1 --measurement-time 2 \
            >"$WORK/bench.log" 2>&1 || echo "   (cargo bench failed: see below)"
        tail -5 "$WORK/bench.log"
    fi
fi

echo "== writing $OUT"
CPU=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
CORES=$(nproc)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
SKIP_BENCH="${SKIP_BENCH:-0}" WORK="$WORK" OUT="$OUT" CPU="$CPU" CORES="$CORES" COMMIT="$COMMIT" NOFILE="$NOFILE" \
    BENCHES="$BENCHES" DURATION="$DURATION" SRI_VERSION_TEXT="$SRI_VERSION_TEXT" \
    SRI_RUST_LOG="$SRI_RUST_LOG" SRI_SHARES_PER_MINUTE="$SRI_SHARES_PER_MINUTE" python3 - <<'PY'
import glob, json, os, time

work, out = os.environ["WORK"], os.environ["OUT"]

def load(name):
    try:
        with open(f"{work}/{name}.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def cmd(name):
    try:
        return open(f"{work}/{name}.cmd").read().strip()
    except OSError:
        return ""

def loadavg(name):
    try:
        return open(f"{work}/{name}.load").read().strip()
    except OSError:
        return ""

def text(name):
    try:
        return open(f"{work}/{name}.txt").read().rstrip()
    except OSError:
        return ""

def f(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"

def get(r, *path):
    for p in path:
        if r is None:
            return None
        r = r.get(p)
    return r

def errors(r):
    if r is None:
        return "not run"
    n = r.get("error_count", 0)
    if n == 0:
        return "none"
    return ", ".join(f"{k}: {v}" for k, v in r["errors"].items())

SCEN = ("a_latency", "b_throughput", "b8_pipelined", "c_handshakes", "d_idle_10k")
a, b, b8, c, d = (load(n) for n in SCEN)
rows = []
def row(scenario, figure, value, target=""):
    rows.append(f"| {scenario} | {figure} | {value} | {target} |")

if a:
    row("a", "ack latency p50 / p99 / p99.9 (1,000 conns x 5 shares/s)",
        f"{f(get(a,'latency','p50_us'))} / {f(get(a,'latency','p99_us'))} / {f(get(a,'latency','p999_us'))} µs",
        "p99 ≤ 500 µs, p99.9 ≤ 1,000 µs")
    row("a", "shares acknowledged / s", f(a["acked_per_sec"], 0), "5,000 offered")
    row("a", "server CPU per acknowledged share", f"{f(get(a,'server','cpu_per_share_us'), 2)} µs", "≤ 4 µs")
    row("a", "errors (rejected, unacknowledged, disconnects)", errors(a))
if b:
    row("b", "shares acknowledged / s (1,000 conns, 1 in flight each)", f(b["acked_per_sec"], 0), "≥ 100,000")
    row("b", "server CPU per acknowledged share", f"{f(get(b,'server','cpu_per_share_us'), 2)} µs", "≤ 4 µs")
    row("b", "server CPU busy under load", f"{f(get(b,'server','load_cores'), 2)} cores", "")
    row("b", "ack latency p50 / p99 / p99.9", f"{f(get(b,'latency','p50_us'))} / {f(get(b,'latency','p99_us'))} / {f(get(b,'latency','p999_us'))} µs", "")
    row("b", "load generator CPU per acknowledged share", f"{f(b['client_cpu_per_share_us'], 2)} µs", "(same 2 cores)")
    row("b", "server memory per connection at the end of the run", f"{f(get(b,'server','rss_end_per_connection_bytes')/1024 if get(b,'server','rss_end_per_connection_bytes') is not None else None)} KiB", "")
    row("b", "errors", errors(b))
if b8:
    row("b8", "shares acknowledged / s (1,000 conns, 8 in flight each)", f(b8["acked_per_sec"], 0), "≥ 100,000")
    row("b8", "server CPU per acknowledged share", f"{f(get(b8,'server','cpu_per_share_us'), 2)} µs", "≤ 4 µs")
    row("b8", "server CPU busy under load", f"{f(get(b8,'server','load_cores'), 2)} cores", "")
    row("b8", "ack latency p50 / p99 / p99.9", f"{f(get(b8,'latency','p50_us'))} / {f(get(b8,'latency','p99_us'))} / {f(get(b8,'latency','p999_us'))} µs", "")
    row("b8", "load generator CPU per acknowledged share", f"{f(b8['client_cpu_per_share_us'], 2)} µs", "(same 2 cores)")
    row("b8", "server memory per connection at the end of the run", f"{f(get(b8,'server','rss_end_per_connection_bytes')/1024 if get(b8,'server','rss_end_per_connection_bytes') is not None else None)} KiB", "")
    row("b8", "errors", errors(b8))
if c:
    row("c", "handshakes / s (burst of 1,000: connect + Noise + SetupConnection + channel + first job)", f(c["handshakes_per_sec"], 0), "")
    row("c", "server CPU per new connection", f"{f(get(c,'server','cpu_per_connection_us'))} µs", "≤ 300 µs")
    row("c", "load generator CPU per new connection", f"{f(c['client_cpu_per_connection_us'])} µs", "")
    row("c", "server memory per idle connection", f"{f(get(c,'server','rss_idle_per_connection_bytes')/1024 if get(c,'server','rss_idle_per_connection_bytes') is not None else None)} KiB", "")
    try:
        with open(f"{work}/c_handshakes.listen") as fh:
            ov, dr = fh.read().split()
        row("c", "listen queue overflows / SYNs dropped during the burst (kernel counters)", f"{ov} / {dr}", "0 (no SYN retries)")
    except (OSError, ValueError):
        pass
    row("c", "errors", errors(c))
if d:
    row("d", "connections held", f"{d['ready']:,} / {d['connections']:,}", "10,000")
    row("d", "server memory per idle connection", f"{f(get(d,'server','rss_idle_per_connection_bytes')/1024 if get(d,'server','rss_idle_per_connection_bytes') is not None else None)} KiB", "≤ 16 KiB")
    row("d", "handshakes / s (10,000, 1,000 at a time)", f(d["handshakes_per_sec"], 0), "")
    row("d", "server CPU per new connection", f"{f(get(d,'server','cpu_per_connection_us'))} µs", "≤ 300 µs")
    row("d", "errors", errors(d))
elif os.path.exists(f"{work}/d_idle_10k.skipped"):
    row("d", "10,000 idle connections", open(f"{work}/d_idle_10k.skipped").read().strip(), "")

# Side by side: the same scenarios against SRI's pool_sv2 (names prefixed sri_).
SRI_SCEN = tuple("sri_" + n for n in SCEN)
sri = {n: load("sri_" + n) for n in SCEN}
ours = dict(zip(SCEN, (a, b, b8, c, d)))
srows = []
def kib(x):
    return None if x is None else x / 1024
def side(scenario, figure, path, unit, digits, higher_better, conv=None):
    o, t = ours.get(scenario), sri.get(scenario)
    if o is None and t is None:
        return
    ov, tv = get(o, *path), get(t, *path)
    if conv:
        ov, tv = conv(ov), conv(tv)
    ratio = "n/a" if higher_better is not None else ""
    if ov and tv and higher_better is not None:
        r = ov / tv if higher_better else tv / ov
        ratio = f"{r:,.2f}x"
    short = scenario.split("_")[0]
    srows.append(f"| {short} | {figure} | {f(ov, digits)}{unit} | {f(tv, digits)}{unit} | {ratio} |")
def side_errors(scenario):
    o, t = ours.get(scenario), sri.get(scenario)
    if o is None and t is None:
        return
    short = scenario.split("_")[0]
    srows.append(f"| {short} | errors | {errors(o)} | {errors(t)} | |")

side("a_latency", "ack latency p50", ("latency", "p50_us"), " µs", 1, False)
side("a_latency", "ack latency p99", ("latency", "p99_us"), " µs", 1, False)
side("a_latency", "ack latency p99.9", ("latency", "p999_us"), " µs", 1, False)
side("a_latency", "shares acknowledged / s (5,000 offered)", ("acked_per_sec",), "", 0, True)
side("a_latency", "server CPU per acknowledged share", ("server", "cpu_per_share_us"), " µs", 2, False)
side_errors("a_latency")
for n, label in (("b_throughput", "1 in flight"), ("b8_pipelined", "8 in flight")):
    side(n, f"shares acknowledged / s (1,000 conns, {label})", ("acked_per_sec",), "", 0, True)
    side(n, "server CPU per acknowledged share", ("server", "cpu_per_share_us"), " µs", 2, False)
    side(n, "server CPU busy under load", ("server", "load_cores"), " cores", 2, None)
    side(n, "ack latency p50", ("latency", "p50_us"), " µs", 1, False)
    side(n, "ack latency p99", ("latency", "p99_us"), " µs", 1, False)
    side(n, "server memory per connection at the end", ("server", "rss_end_per_connection_bytes"), " KiB", 1, False, kib)
    side_errors(n)
side("c_handshakes", "handshakes / s (burst of 1,000)", ("handshakes_per_sec",), "", 0, True)
side("c_handshakes", "server CPU per new connection", ("server", "cpu_per_connection_us"), " µs", 1, False)
side("c_handshakes", "server memory per idle connection", ("server", "rss_idle_per_connection_bytes"), " KiB", 1, False, kib)
side_errors("c_handshakes")
side("d_idle_10k", "connections held (of 10,000)", ("ready",), "", 0, True)
side("d_idle_10k", "server memory per idle connection", ("server", "rss_idle_per_connection_bytes"), " KiB", 1, False, kib)
side("d_idle_10k", "server CPU per new connection", ("server", "cpu_per_connection_us"), " µs", 1, False)
side("d_idle_10k", "handshakes / s (10,000, 1,000 at a time)", ("handshakes_per_sec",), "", 0, True)
side_errors("d_idle_10k")
sri_skipped = [n for n in SRI_SCEN if os.path.exists(f"{work}/{n}.skipped")]

# Criterion: this run's results only (with SKIP_BENCH=1: whatever target/criterion holds).
stamp = f"{work}/bench.start"
if os.environ.get("SKIP_BENCH") == "1":
    since = 0
else:
    since = os.path.getmtime(stamp) if os.path.exists(stamp) else time.time() + 1
bench = {}
for bj in glob.glob("target/criterion/**/new/benchmark.json", recursive=True):
    est = os.path.join(os.path.dirname(bj), "estimates.json")
    if not os.path.exists(est) or os.path.getmtime(est) < since:
        continue
    meta, e = json.load(open(bj)), json.load(open(est))
    bench[(meta["group_id"], meta["function_id"], meta.get("value_str"))] = e["mean"]["point_estimate"]

SRI_NAMES = ("sri", "noise_sv2", "codec_sv2", "channels_sv2")
def tokens(fid):
    return fid.replace("/", " / ").replace("_", " _ ").split(" ")
def sri_twin(key):
    g, fid, v = key
    # aead: ours is built on ring, SRI's noise_sv2 on the chacha20poly1305 crate.
    if g == "aead" and fid.startswith("ring/"):
        twin = (g, "chacha20poly1305/" + fid[len("ring/"):], v)
        return twin if twin in bench else None
    t = tokens(fid)
    if "ours" not in t:
        return None
    for name in SRI_NAMES:
        twin = "".join(name if x == "ours" else x for x in t)
        if (g, twin, v) in bench:
            return (g, twin, v)
    return None

def ns(x):
    if x >= 1e6:
        return f"{x/1e6:,.2f} ms"
    if x >= 1e3:
        return f"{x/1e3:,.2f} µs"
    return f"{x:,.1f} ns"

brows = []
paired = set()
for key in sorted(bench):
    twin = sri_twin(key)
    if twin is None:
        continue
    paired.update((key, twin))
    g, fid, v = key
    name = f"{g}/{fid}" + (f"/{v}" if v else "")
    brows.append(f"| {name} | {ns(bench[key])} | {twin[1]}: {ns(bench[twin])} | {bench[twin]/bench[key]:.2f}x |")
orows = []
for key in sorted(bench):
    if key in paired:
        continue
    g, fid, v = key
    name = f"{g}/{fid}" + (f"/{v}" if v else "")
    orows.append(f"| {name} | {ns(bench[key])} |")

md = []
md.append("# Benchmarks\n")
md.append(f"Generated by `bench/run.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"commit {os.environ['COMMIT']}, CPU: {os.environ['CPU']}, {os.environ['CORES']} cores "
          f"(shared by the pool, the load generator and anything else running), open-files limit {os.environ['NOFILE']}.\n")
md.append("The pool runs as a release build on 127.0.0.1 with `--min-difficulty 1e-12 --max-difficulty 1e-12 "
          "--chain-bits 0x1d00ffff --max-connections 20000` (a share target near 2^256, so the first nonce "
          "tried is a share; difficulty-1 blocks, so blocks are rare) and a fresh data directory per scenario. "
          "The load generator (`blvm-stratum-v2 loadgen`, one worker thread) speaks real Noise-encrypted SV2, one "
          "extended channel per connection. Server CPU is utime+stime of the pool from /proc/PID/stat over the "
          "phase; memory is VmRSS from /proc/PID/status, minus the value before the first connection, per "
          "connection.\n")
md.append("## Load\n")
md.append("| scenario | figure | measured | target |")
md.append("|---|---|---|---|")
md.extend(rows)
md.append("")
md.append("Scenarios: (a) latency, (b) throughput, (b8) throughput with 8 shares in flight per connection, "
          "(c) handshake burst, (d) 10,000 idle connections.\n")
md.append("Commands (`loadgen --url ADDR --authority-pubkey KEY --server-pid PID` plus):\n")
for n in SCEN:
    if cmd(n):
        md.append(f"- {n}: `{cmd(n)}` (load average before: {loadavg(n) or 'n/a'})")
md.append("")
md.append("## Side by side: SRI's pool_sv2\n")
if srows:
    md.append(f"`{os.environ.get('SRI_VERSION_TEXT') or 'pool_sv2'}` under the same load generator and scenarios, "
              "one after the other in the same run, each against a fresh process. pool_sv2 takes its templates "
              "from our `template-provider` subcommand (Template Distribution Protocol over Noise; the same "
              "embedded regtest chain with nBits 0x1d00ffff, so both pools mine comparable work) and runs with "
              f"`shares_per_minute = {os.environ.get('SRI_SHARES_PER_MINUTE')}`, `share_batch_size = 1`, "
              f"`RUST_LOG={os.environ.get('SRI_RUST_LOG')}` (at info it logs two lines per share; ours logs two "
              "per connection at info). Its first target comes from the channel's nominal hashrate (0) "
              "clamped to the load generator's max target (all 0xff), so every nonce is a share, as with ours. "
              "Its CPU and memory are pool_sv2's process only (not the template provider's). "
              "The last column is how many times better ours is (above 1: ours is better; "
              "for rates ours / SRI, for costs SRI / ours).\n")
    md.append("| scenario | figure | ours | pool_sv2 | ours better by |")
    md.append("|---|---|---|---|---|")
    md.extend(srows)
    md.append("")
    for n in SRI_SCEN:
        if cmd(n):
            md.append(f"- {n}: `{cmd(n)}` (load average before: {loadavg(n) or 'n/a'})")
    md.append("")
else:
    md.append("Not run (SRI=0, or pool_sv2 could not be installed or started).\n")
for n in sri_skipped:
    md.append(f"- {n}: {open(f'{work}/{n}.skipped').read().strip()}")
if sri_skipped:
    md.append("")
md.append("## Micro-benchmarks (criterion means)\n")
if os.environ.get("SKIP_BENCH") == "1" and (brows or orows):
    md.append("(SKIP_BENCH=1: the results target/criterion held from an earlier `cargo bench`.)\n")
if brows:
    md.append("Ours beside SRI's crates measuring the same work; the last column is SRI's time / ours (above 1: we are faster).\n")
    md.append("| benchmark | ours | SRI | SRI / ours |")
    md.append("|---|---|---|---|")
    md.extend(brows)
    md.append("")
if orows:
    md.append("Without an SRI twin:\n")
    md.append("| benchmark | mean |")
    md.append("|---|---|")
    md.extend(orows)
    md.append("")
if not brows and not orows:
    md.append(f"Not run (benches: `{os.environ.get('BENCHES','').strip() or 'none'}`).\n")
md.append("## Load generator output\n")
for n in SCEN + SRI_SCEN:
    t = text(n)
    if t:
        md.append(f"### {n}\n\n```\n{t}\n```\n")
# Hand-written notes after this marker survive regeneration.
MARKER = "<!-- notes below are kept by bench/run.sh -->"
notes = ""
if os.path.exists(out):
    old = open(out).read()
    if MARKER in old:
        notes = old[old.index(MARKER):]
md.append(notes or MARKER + "\n")
with open(out, "w") as fh:
    fh.write("\n".join(md))
PY
echo "== done: $OUT"
