# Shared by the side-by-side benchmarks (bench/sv1.sh, bench/dashboard.sh): a fresh release pool
# per scenario with the flags of bench/run.sh (a share target near 2^256, difficulty-1 blocks, no
# share-rate limit, admission limits lifted), driven by `loadgen` with the pool's pid for its CPU
# time and memory. Sourced, not run. The caller sets BIN and WORK and calls `trap cleanup EXIT`.

POOL_PID=""
# Extra flags for the next pool (e.g. --http-enabled false); reset by the caller.
POOL_ARGS=()

stop_pool() {
    if [[ -n "$POOL_PID" ]] && kill -0 "$POOL_PID" 2>/dev/null; then
        kill "$POOL_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$POOL_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$POOL_PID" 2>/dev/null || true
        wait "$POOL_PID" 2>/dev/null || true
    fi
    POOL_PID=""
}

ensure_release_build() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    if [[ ! -x "$BIN" ]]; then
        timeout 1800 cargo build --release --quiet
    fi
}

# start_pool NAME: a fresh pool; sets POOL_PID, ADDR (SV2), SV1_ADDR, KEY, HTTP_URL (if on).
start_pool() {
    local dir=$WORK/pool-$1
    mkdir -p "$dir"
    "$BIN" --listen-addr 127.0.0.1:0 --data-dir "$dir" \
        --min-difficulty 1e-12 --max-difficulty 1e-12 --chain-bits 0x1d00ffff \
        --share-rate-multiple 1e9 --handshakes-per-sec 1000000 --max-pre-setup-connections 20000 \
        --max-connections 20000 "${POOL_ARGS[@]}" >"$dir/out" 2>"$dir/err" &
    POOL_PID=$!
    for _ in $(seq 100); do
        grep -q "Stratum V1 miners" "$dir/out" 2>/dev/null && break
        sleep 0.1
    done
    ADDR=$(grep -o 'listening on [0-9.:]*' "$dir/out" | awk '{print $3}')
    KEY=$(awk '/authority public key/{print $4}' "$dir/out")
    SV1_ADDR=$(grep -o 'stratum+tcp://[0-9.:]*' "$dir/out" | sed 's|stratum+tcp://||')
    HTTP_URL=$(grep -o 'HTTP dashboard on http://[0-9.:]*/' "$dir/out" | awk '{print $4}' || true)
    if [[ -z "$ADDR" || -z "$KEY" || -z "$SV1_ADDR" ]]; then
        echo "pool did not start:" >&2
        cat "$dir/out" "$dir/err" >&2
        exit 1
    fi
}

# run_loadgen NAME PROTO LOADGEN-ARGS...: the load against the running pool; the report in
# $WORK/NAME.json, the load average before it in $WORK/NAME.load.
run_loadgen() {
    local name=$1 proto=$2
    shift 2
    local target=(--url "$ADDR" --authority-pubkey "$KEY")
    [[ $proto == sv1 ]] && target=(--sv1 --url "$SV1_ADDR")
    cut -d' ' -f1-3 /proc/loadavg >"$WORK/$name.load"
    echo "== $name: loadgen ${target[*]} $* (load $(cat "$WORK/$name.load"))"
    timeout 300 "$BIN" loadgen "${target[@]}" --server-pid "$POOL_PID" \
        --json "$WORK/$name.json" "$@" >"$WORK/$name.txt" 2>"$WORK/$name.err" ||
        echo "   (loadgen exit code $?)"
}

# run NAME PROTO LOADGEN-ARGS...: one scenario against a fresh pool.
run() {
    local name=$1
    start_pool "$name"
    run_loadgen "$@"
    stop_pool
}
