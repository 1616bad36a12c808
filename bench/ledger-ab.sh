#!/bin/bash
# Alternating rounds of ledger runs, summarised as medians: this machine moves a lot between
# runs (ledger off alone 81k-117k shares/s within an hour), so a comparison is only as good as
# its rounds are interleaved. Each round runs every SPEC once with bench/ledger.sh (PERF_STAT=1),
# then one line per SPEC: the median rate, the median and each round's ratio against the first
# SPEC of the same round, the load generator's and the pool's CPU per share, the pool's context
# switches per share.
# usage: bench/ledger-ab.sh ROUNDS 'NAME|ENV=V ...::POOL ARGS' ...   (OUTDIR, default a new
#        temporary directory, where each run leaves NAME-ROUND.txt and .log; CONNS, default 1000; SECONDS_EACH, default 4; LOADGEN_ARGS, more
#        load generator arguments, e.g. "--window 4"; RATE, shares a second per connection,
#        default 0: as fast as acknowledged)
# e.g.   bench/ledger-ab.sh 5 'off|POOL_CPUS=0 LOADGEN_CPUS=1::--no-ledger' \
#            'sqlite|POOL_CPUS=0 LOADGEN_CPUS=1::' 'pg|POOL_CPUS=0 LOADGEN_CPUS=1::--postgres'
#        (BENCHMARKS.md, "Ledger, pinned"; POOL_BIN=PATH in a SPEC's ENV benches another build)
set -u
here=$(cd "$(dirname "$0")" && pwd)
rounds=$1; shift
out=${OUTDIR:-$(mktemp -d)}
export OUTDIR=$out
for r in $(seq "$rounds"); do
    for spec in "$@"; do
        name=${spec%%|*}; rest=${spec#*|}
        envs=${rest%%::*}; pool_args=${rest#*::}
        # shellcheck disable=SC2086 # ENV assignments and pool arguments are words on purpose
        env $envs PERF_STAT=1 "$here/ledger.sh" "$name-$r" $pool_args -- --connections "${CONNS:-1000}" \
            --rate "${RATE:-0}" --duration "${SECONDS_EACH:-4}" --hold 0 ${LOADGEN_ARGS:-} >"$out/$name-$r.log" 2>&1 \
            || echo "run $name-$r failed: $out/$name-$r.log" >&2
    done
done
first=${1%%|*}
python3 - "$out" "$rounds" "$first" "$@" <<'P'
import math, re, statistics, sys
out, rounds, first = sys.argv[1], int(sys.argv[2]), sys.argv[3]
specs = [s.split('|')[0] for s in sys.argv[4:]]
def read(name, r):
    try:
        t = open(f"{out}/{name}-{r}.txt").read()
    except OSError:
        return None
    num = lambda pat: float(m.group(1)) if (m := re.search(pat, t)) else float('nan')
    return dict(rate=num(r'= (\d+) shares/s'), lg=num(r'([\d.]+) µs per acknowledged share'),
                pool=num(r'pool CPU per acknowledged share[^:]*: ([\d.]+)'),
                cs=num(r'pool context switches per acknowledged share: ([\d.]+)'),
                p99=num(r'ack latency: .*p99 ([\d.]+) µs') / 1000,
                unacked=num(r'(\d+) unacknowledged'),
                server=num(r'server CPU: [\d.]+ µs per new connection, ([\d.]+) µs per acknowledged share'),
                tenth=num(r'busiest tenth of the connections had ([\d.]+)%'))
# Only this invocation's rounds, and only runs that reported a rate (a failed run is named above).
ok = lambda x: x is not None and not math.isnan(x['rate']) and x['rate'] > 0
for name in specs:
    runs = {r: x for r in range(1, rounds + 1) if ok(x := read(name, r))}
    base = {r: x for r in range(1, rounds + 1) if ok(x := read(first, r))}
    if not runs:
        print(f"{name:<12} no run reported a rate")
        continue
    ratios = [runs[r]['rate'] / base[r]['rate'] for r in runs if r in base]
    med = lambda k: statistics.median(x[k] for x in runs.values())
    ratio = f"{statistics.median(ratios):.3f}" if ratios else "-"
    # The pool's CPU per share during the load alone (the load generator's reading of /proc):
    # first SPEC's over this one's, per round; at a fixed RATE below both limits, what the
    # throughput ratio would be if each ran out of CPU at the same per-share cost.
    cpu = [base[r]['server'] / runs[r]['server'] for r in runs if r in base]
    cpu_ratio = f"{statistics.median(cpu):.3f}" if cpu else "-"
    print(f"{name:<12} {med('rate'):>9.0f}/s  on/off median {ratio} "
          f"[{' '.join(f'{q:.2f}' for q in ratios)}]  load generator {med('lg'):.2f} µs  "
          f"pool {med('pool'):.2f} µs (load alone {med('server'):.2f} µs, off/on {cpu_ratio})  pool context switches {med('cs'):.3f} a share  "
          f"ack p99 {med('p99'):.2f} ms  unacknowledged {med('unacked'):.0f}  "
          f"busiest tenth of the connections {med('tenth'):.1f}% of the acknowledgements")
print(f"(runs in {out})")
P
