#!/usr/bin/env bash
# Makes the latency plots in tuning/README.md from real runs on this machine: nfpg (release
# build, private PostgreSQL) under nfpg-loadgen for 30 s, once with the defaults and once with
# a shorter flush interval, each with --hist-log; then `nfpg hist --plot`.
# Usage: tuning/make-plot.sh [RATE_DATAGRAMS_PER_S] (default 10000 = 300,000 flows/s)
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-10000}
cargo build --release --workspace -q
work=$(mktemp -d /tmp/nfpg-plot.XXXXXX)
chmod 755 "$work"  # the private PostgreSQL runs as the postgres user when this runs as root
trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$work"' EXIT
run() {
    local name=$1; shift
    local port=$((20000 + RANDOM % 20000))
    ./target/release/nfpg run --listen 127.0.0.1 --port "$port" --data-dir "$work/pg" \
        --hist-log "$work/$name.hlog" --hist-interval 5 --stats-interval 10 "$@" \
        > "$work/$name.json" 2> "$work/$name.log" &
    local pid=$!
    for _ in $(seq 100); do grep -q "listening on udp" "$work/$name.log" && break; sleep 0.2; done
    ./target/release/nfpg-loadgen --target "127.0.0.1:$port" --exporters 4 --rate "$rate" \
        --duration 30 --verify --verify-settle 3 \
        --database-url "host=$work/pg/run port=5432 user=nfpg dbname=netflow_db" > "$work/$name.loadgen.json"
    kill -TERM "$pid"; wait "$pid"
    ./target/release/nfpg hist "$work/$name.hlog" --plot "tuning/latency-$name.svg" \
        --title "nfpg at $rate datagrams/s ($((rate * 30)) flows/s), $name" | tee "tuning/latency-$name.txt"
    python3 -c "import json,sys; v=json.load(open('$work/$name.loadgen.json'))['verify']; print('lost flows:', v['lost']['flows'])" \
        | tee -a "tuning/latency-$name.txt"
}
run defaults
run flush-0.2s --flush-interval 0.2 --batch-size 4096
