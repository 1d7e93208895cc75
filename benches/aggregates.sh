#!/usr/bin/env bash
# What the hourly aggregates cost at ingest (README, "Hourly aggregates and retention"):
# the same load twice into nfpg's private PostgreSQL, once with the aggregates updated every
# 10 s (lag 5 s, so they run during the load) and once with them off; then, on the second
# database, the time PostgreSQL takes to aggregate everything that run stored in one go.
# Usage (after cargo build --release --workspace): bash benches/aggregates.sh RATE SECONDS
# RATE: v5 datagrams/s of 30 flows from 4 exporters.
set -euo pipefail
R=$1; D=$2
cd "$(dirname "$0")/.."
W=${AGG_DIR:-/tmp/nfpg-aggbench}
run() { # name, extra nfpg args...
    local name=$1; shift
    rm -rf "$W/$name"; mkdir -p "$W/$name"
    target/release/nfpg run --data-dir "$W/$name/data" --spool-dir "$W/$name/spool" --port 2078 \
        --stats-interval 5 "$@" > "$W/$name/summary.json" 2> "$W/$name/nfpg.log" &
    local np=$!
    until grep -q "listening on udp" "$W/$name/nfpg.log"; do sleep 0.2; done
    local t0; t0=$(date +%s.%N)
    target/release/nfpg-loadgen --target 127.0.0.1:2078 --exporters 4 --rate "$R" --duration "$D" \
        > "$W/$name/report.json"
    python3 - "$W/$name" "$t0" <<'PY'
import json, subprocess, sys, time
d, t0 = sys.argv[1], float(sys.argv[2])
r = json.load(open(f"{d}/report.json"))
q = lambda sql: subprocess.run(["psql", "-XAt", f"host={d}/data/run user=nfpg dbname=netflow_db", "-c", sql],
                               capture_output=True, text=True, check=True).stdout.strip()
for _ in range(600):
    n = int(q("select count(*) from netflow.flows"))
    if n >= r["sent"]["flows"]: break
    time.sleep(0.5)
last = float(q("select extract(epoch from max(committed_at)) from netflow.nfpg_copies"))
agg = q("select coalesce(sum(flows), 0) from netflow.flow_aggregates_hourly")
print(f"{d.split('/')[-1]}: sent {r['sent']['flows']} flows at {r['rate_dps']:.0f} datagrams/s; stored {n}; "
      f"last commit {last - t0:.1f} s after the start: {n / (last - t0):.0f} flows/s; in the aggregates so far: {agg}")
PY
    kill -TERM $np; wait $np || true
    python3 -c "import json; s=json.loads(open('$W/$name/summary.json').read().strip().splitlines()[-1]); print('  kernel_drops', s['kernel_drops'], 'rows_spooled', s['rows_spooled'], 'queue_full', s['queue_full'], 'end_to_end p99 us', s['latency']['end_to_end_us']['p99'])"
}
run aggregates-on --aggregate-interval 10 --aggregate-lag 5
run aggregates-off --aggregate-interval 0
# Everything the second run stored, aggregated in one call (the server is started again).
rm -f "$W/server.json"
target/release/nfpg server --data-dir "$W/aggregates-off/data" > "$W/server.json" 2> "$W/server.log" &
sp=$!
until [ -s "$W/server.json" ]; do sleep 0.2; done
psql -XAt "host=$W/aggregates-off/data/run user=nfpg dbname=netflow_db" <<'SQL'
\timing on
SELECT count(*) AS flows FROM netflow.flows;
SELECT netflow.update_flow_aggregates(now(), interval '1 day') AS aggregated;
SELECT count(*) AS aggregate_rows FROM netflow.flow_aggregates_hourly;
SQL
kill -TERM $sp; wait $sp || true
