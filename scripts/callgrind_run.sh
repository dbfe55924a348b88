#!/usr/bin/env bash
# Instruction counts of one whole tail run, which do not drift with the
# machine's load: sidekick (BIN) tails FILE from its start under
# `valgrind --tool=callgrind` and ships it over OTLP/HTTP to the counting
# sink of ../shared/bench on 127.0.0.1; once the sink has every line, SIGTERM.
# Prints the total instructions; `callgrind_annotate OUT` gives the functions
# (a binary with symbols: `cargo build --profile profiling -p sidekick`).
#
# usage: scripts/callgrind_run.sh BIN OUT [gzip|zstd|none] [FILE]
#   FILE defaults to the first 64 MiB of /tmp/bench/data/app-1G.log (made by
#   scripts/bench.sh), cut to /tmp/app-64M.log.
# environment: SINK (default /tmp/sidekick-bench-harness/sink/target/release/bench-sink,
#   built by scripts/bench.sh), PORT (default 4399).
set -euo pipefail
BIN=${1:?usage: callgrind_run.sh BIN OUT [gzip|zstd|none] [FILE]}
OUT=${2:?usage: callgrind_run.sh BIN OUT [gzip|zstd|none] [FILE]}
COMPRESSION=${3:-gzip}
FILE=${4:-/tmp/app-64M.log}
SINK=${SINK:-/tmp/sidekick-bench-harness/sink/target/release/bench-sink}
PORT=${PORT:-4399}
command -v valgrind > /dev/null || { echo "valgrind is not installed" >&2; exit 2; }
if [[ ! -s $FILE ]]; then
    head -c 67108864 /tmp/bench/data/app-1G.log > "$FILE"
fi
LINES=$(wc -l < "$FILE")
WORK=$(mktemp -d /tmp/callgrind-run.XXXX)
"$SINK" --listen "127.0.0.1:$PORT" --max-seq $((LINES + 1000)) > "$WORK/sink.log" 2>&1 &
SINK_PID=$!
trap 'kill $SINK_PID 2> /dev/null || true' EXIT
sleep 0.5
cat > "$WORK/sidekick.yaml" <<CONF
data_dir: $WORK/data
telemetry: { listen: "off" }
logs:
  - include: ["$FILE"]
    start_at: beginning
outputs:
  - type: otlp_http
    endpoint: http://127.0.0.1:$PORT
    compression: $COMPRESSION
CONF
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" run -c "$WORK/sidekick.yaml" > "$WORK/agent.log" 2>&1 &
AGENT=$!
got=0
for _ in $(seq 1800); do
    got=$(curl -s "http://127.0.0.1:$PORT/stats" | grep -o '"records":[0-9]*' | cut -d: -f2 || true)
    [[ ${got:-0} -ge $LINES ]] && break
    sleep 1
done
kill -TERM "$AGENT"
wait "$AGENT" || true
echo "records at the sink: ${got:-0} of $LINES"
grep -E "^totals" "$OUT" | sed 's/^totals:/instructions:/'
