#!/usr/bin/env bash
# One spoofed-flood run at full speed (README, "Hostile input"): release nfpg with its private
# PostgreSQL and default settings, nfpg-loadgen with 4 valid exporters (one datagram in 100
# skipped) plus --hostile-rate from 65,536 forged sources. Prints nfpg's RSS every 0.5 s, the
# stored totals against the sent ones, and each valid exporter's row of the exporters table
# against what it skipped and the impostor datagrams sent under its address.
# Usage (after cargo build --release --workspace): bash benches/flood.sh VALID HOSTILE SECONDS
set -euo pipefail
V=$1; H=$2; D=$3
cd "$(dirname "$0")/.."
W=${FLOOD_DIR:-/tmp/nfpg-flood}; rm -rf $W; mkdir -p $W
target/release/nfpg run --data-dir $W/data --spool-dir $W/spool --port 2077 --stats-interval 5 \
  > $W/summary.json 2> $W/nfpg.log &
NP=$!
until grep -q "listening on udp" $W/nfpg.log; do sleep 0.2; done
( for i in $(seq 1 $((D*2))); do sleep 0.5; awk '/VmRSS/{print $2}' /proc/$NP/status; done > $W/rss.txt ) &
RP=$!
T0=$(date +%s.%N)
target/release/nfpg-loadgen --target 127.0.0.1:2077 --exporters 4 --rate $V --duration $D \
  --drop-every 100 --hostile-rate $H --hostile-sources 65536 --source-mode pktinfo > $W/report.json 2> $W/loadgen.log
wait $RP || true
echo "rss KiB samples (every 0.5 s):"; tr '\n' ' ' < $W/rss.txt; echo
python3 - "$W" "$T0" <<'PY'
import json, subprocess, sys, time
W = sys.argv[1]; t0 = float(sys.argv[2])
r = json.load(open(f"{W}/report.json"))
h = r["hostile"]
def q(sql):
    return subprocess.run(["psql", "-XAt", f"host={W}/data/run user=nfpg dbname=netflow_db", "-c", sql],
                          capture_output=True, text=True, check=True).stdout.strip()
exp_total = r["sent"]["flows"] + h["spoofed"]["flows"] + h["future"]["flows"] + h["impostor"]["flows"]
for _ in range(240):
    n = int(q("select count(*) from netflow.flows"))
    if n >= exp_total: break
    time.sleep(0.5)
t_done = time.time()
last_commit = q("select extract(epoch from max(committed_at)) from netflow.nfpg_copies")
print("offered valid dgram/s", round(r["rate_dps"]), "hostile dgram/s", h["rate"], "seconds", round(r["elapsed_s"] if "elapsed_s" in r else 0, 1))
print("sent valid", r["sent"], "hostile datagrams", h["datagrams"], "kinds", {k: h[k]["datagrams"] for k in ("spoofed","malformed","future","impostor")})
print("stored", n, "expected", exp_total, "last commit after start (s):", round(float(last_commit) - t0, 1))
time.sleep(6)
for i, e in enumerate(r["exporters"]):
    a = e["address"]; imp = h["impostor"]["by_exporter"].get(a, {"flows": 0, "datagrams": 0})
    built = e["datagrams"] + e["dropped_on_purpose"]["datagrams"]
    lost = e["dropped_on_purpose"]["flows"] - (30 if built % 100 == 0 else 0)
    row = q(f"select flows, flows_lost, restarts, suspect_datagrams from netflow.exporters where host(exporter)='{a}' and engine_id={i}")
    stored = q(f"select count(*) from netflow.flows where host(exporter)='{a}'")
    print(a, "stored", stored, "expected", e["flows"] + imp["flows"], "| table flows|lost|restarts|suspect", row,
          "| expected lost", lost, "suspect", imp["datagrams"])
PY
kill -TERM $NP; wait $NP || true
python3 -c "
import json; s=json.loads(open('$W/summary.json').read().strip().splitlines()[-1])
print({k: s[k] for k in ['datagrams','decoded_datagrams','kernel_drops','not_allowed','flows','flows_time_suspect','rows_written','rows_spooled','rows_replayed','queue_full','exporters_tracked','exporters_evicted','exporters_untracked_datagrams']}, 'malformed', s['malformed']['total'])
print('latency end_to_end', s['latency'].get('end_to_end_us'))"
