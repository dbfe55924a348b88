#!/usr/bin/env bash
# Tries sidekick end to end on this machine, with no server to install:
# an app writes a log file, `sidekick run` tails it and ships gzip'd OTLP/HTTP
# to `sidekick receive` on 127.0.0.1, which writes what arrived as NDJSON.
# Usage: scripts/demo.sh [SECONDS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
# The dev profile (dependencies at opt-level 2) builds in a few minutes and is
# the binary the test suite uses; `cargo build --release` (fat LTO) is for shipping.
cargo build -p sidekick
bin=${CARGO_TARGET_DIR:-$PWD/target}/debug/sidekick
work=$(mktemp -d /tmp/sidekick-demo.XXXXXX)
mkdir -p "$work/app"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$bin" receive --listen 127.0.0.1:0 --out "$work/received" 2> "$work/receive.log" &
pids+=($!)
port=""
for _ in $(seq 100); do
  port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$work/receive.log" | grep -o '[0-9]*$' || true)
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || { cat "$work/receive.log"; echo "receiver did not start" >&2; exit 1; }

# The "application": a line every 10 ms.
( i=0; while :; do i=$((i+1)); echo "$(date -u +%FT%T.%3NZ) INFO checkout order=$i done" >> "$work/app/app.log"; sleep 0.01; done ) &
pids+=($!)

cat > "$work/sidekick.yaml" <<CONF
data_dir: $work/data
resource: { service.name: demo-app }
telemetry: { listen: "off" }
logs:
  - include: ["$work/app/*.log"]
    start_at: beginning
outputs:
  - type: otlp_http
    endpoint: http://127.0.0.1:$port
    compression: gzip
CONF
"$bin" run -c "$work/sidekick.yaml" 2> "$work/sidekick.log" &
agent=$!
sleep "$secs"
kill "${pids[1]}"           # the app stops writing
sleep 1.5
kill -TERM "$agent"; wait "$agent" || true

written=$(wc -l < "$work/app/app.log")
received=$(wc -l < "$work/received/logs.ndjson")
echo "lines written by the app:        $written"
echo "records received by the service: $received"
echo "first record as received:"
head -n 1 "$work/received/logs.ndjson"
echo "everything is in $work (sidekick.log, received/logs.ndjson)"
[[ $written == "$received" ]]
