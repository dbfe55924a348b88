#!/usr/bin/env bash
# The benchmark of issue 5, in one command: sidekick tails a generated 1 GiB
# log from its start and ships it over OTLP/HTTP (gzip, then zstd) to the
# counting sink of ../shared/bench; in the same run, the compression floor
# (flate2 zlib-rs level 1 and the zstd crate level 1 alone, same bytes,
# batch-sized chunks, one thread), sidekick's own encode+compress without I/O,
# `gzip -1`, `zstd -1 -T1` and `cat`, and the peers that are installed.
# Then, per round, the phases of scripts/bench_phases.py against a receiver
# that decodes every request: latency at a steady 1,000 lines/s (line
# written -> acknowledged), and idle CPU/RSS with one file, with 1,000 files,
# and with one file plus a target whose metrics are sampled every 10 s.
# Prints the tables (medians over RUNS rounds, each value also per round) and
# the machine.
#
# usage: scripts/bench.sh            (from anywhere; builds release binaries)
#        ONLY=latency scripts/bench.sh     one part alone (see ONLY below)
#
# environment (defaults):
#   SIZE=1G            generated log size (gen.py); the file is made once
#   RUNS=2             rounds; each round runs every row once, side by side
#   IDLE_SECS=30       idle phase of sidekick's first gzip run (0 = skip)
#   NETNS=benchns      loopback-only network namespace ("" = host namespace)
#   HARNESS=/tmp/sidekick-bench-harness   where ../shared/bench is copied to
#   DATA_DIR=/tmp/bench/data  OUT_DIR=/tmp/bench/runs-<stamp>
#   SKIP_BUILD=1       use the binaries already in target/release
#   SIDEKICK_BIN=target/release/sidekick   the binary measured
#   ONLY=all           all | bulk | phases | a comma list of
#                      bulk,latency,idle,idle1000,idlemetrics
#   RATE=1000 LAT_SECS=30   steady rate and length of the latency phase
#   PHASE_IDLE_SECS=30      idle measurement of each idle phase
#   IDLE_FILES=1000         files of the idle1000 phase
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
HARNESS=${HARNESS:-/tmp/sidekick-bench-harness}
SIZE=${SIZE:-1G}
RUNS=${RUNS:-2}
IDLE_SECS=${IDLE_SECS:-30}
export NETNS=${NETNS-benchns}
export DATA_DIR=${DATA_DIR:-/tmp/bench/data}
ONLY=${ONLY:-all}
RATE=${RATE:-1000}
LAT_SECS=${LAT_SECS:-30}
PHASE_IDLE_SECS=${PHASE_IDLE_SECS:-30}
IDLE_FILES=${IDLE_FILES:-1000}
STAMP=$(date +%Y%m%d-%H%M%S)
export OUT_DIR=${OUT_DIR:-/tmp/bench/runs-$STAMP}
FILE=$DATA_DIR/app-$SIZE.log
mkdir -p "$OUT_DIR" "$DATA_DIR"

log() { printf '[bench.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
want() { # is part $1 selected by ONLY?
    [[ $ONLY == all || ,$ONLY, == *,$1,* ]] || [[ $ONLY == phases && $1 != bulk ]]
}
PHASES=
for ph in latency idle idle1000 idlemetrics; do want $ph && PHASES+=${PHASES:+,}$ph; done

# ---------------------------------------------------------------- machine
{
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc:   $(nproc)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel:  $(uname -r)"
    echo "memory:  $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "rustc:   $(rustc --version)"
    echo "commit:  $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2> /dev/null || echo ' (+ uncommitted changes)')"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT_DIR/machine.txt"

# ---------------------------------------------------------------- builds
if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -p sidekick -p sidekick-outputs --bin sidekick --example compress_floor)
fi
SIDEKICK_BIN=${SIDEKICK_BIN:-$ROOT/target/release/sidekick}
FLOOR_BIN=$ROOT/target/release/examples/compress_floor
[[ -x $SIDEKICK_BIN ]] || { log "missing $SIDEKICK_BIN"; exit 1; }
if want bulk && [[ ! -x $FLOOR_BIN ]]; then log "missing $FLOOR_BIN"; exit 1; fi
export SIDEKICK_BIN
echo "binary:  $SIDEKICK_BIN ($(stat -c '%s bytes, %y' "$SIDEKICK_BIN" | cut -d. -f1))" >> "$OUT_DIR/machine.txt"
if [[ -n $PHASES && -n $NETNS ]]; then
    ip netns list | grep -qw "^$NETNS" || ip netns add "$NETNS"
    ip netns exec "$NETNS" ip link set lo up
fi

if want bulk; then
if [[ ! -x $HARNESS/run.sh ]]; then
    [[ -d $SHARED ]] || { log "no benchmark harness at $SHARED (set SHARED=)"; exit 1; }
    log "copying $SHARED to $HARNESS"
    mkdir -p "$HARNESS" && cp -r "$SHARED"/. "$HARNESS"/
fi
if [[ ! -x $HARNESS/sink/target/release/bench-sink ]]; then
    log "building the counting sink"
    (cd "$HARNESS/sink" && cargo build --release)
fi
if [[ ! -s $FILE || ! -s $FILE.lines ]]; then
    log "generating $FILE"
    python3 "$HARNESS/gen.py" "$FILE" --size "$SIZE"
fi
BYTES=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null # page cache
fi

# ---------------------------------------------------------------- rounds
# Every row once per round, so that each round's ratios compare figures
# measured minutes apart on the same (noisy, shared) machine.
for r in $(seq "$RUNS"); do
    log "round $r/$RUNS (load $(cut -d' ' -f1 /proc/loadavg))"
    if want bulk; then
    for c in gzip zstd; do
        idle=0
        [[ $r == 1 && $c == gzip ]] && idle=$IDLE_SECS
        SK_COMPRESS=$c LABEL=sidekick-$c-r$r IDLE_SECS=$idle SIZE=$SIZE FILE=$FILE \
            "$HARNESS/run.sh" sidekick > "$OUT_DIR/sidekick-$c-r$r.out" 2>&1 \
            || log "sidekick $c run $r failed (see $OUT_DIR/sidekick-$c-r$r.out)"
        grep -E 'status|MiB/s|CPU s per GiB|peak RSS|idle' "$OUT_DIR/sidekick-$c-r$r.out" | sed 's/^/    /' >&2 || true
    done
    "$FLOOR_BIN" "$FILE" > "$OUT_DIR/floor-r$r.txt"
    sed 's/^/    /' "$OUT_DIR/floor-r$r.txt" >&2
    # The command-line tools, timed by the kernel (user + system of the child).
    for tool in "cat" "gzip -1 -c" "zstd -1 -T1 -c"; do
        bin=${tool%% *}
        command -v "$bin" > /dev/null || continue
        python3 - "$FILE" "$tool" "$bin-r$r" >> "$OUT_DIR/tools.txt" << 'EOF'
import os, resource, subprocess, sys, time
path, tool, label = sys.argv[1], sys.argv[2].split(), sys.argv[3]
t0 = time.monotonic()
with open(os.devnull, "wb") as null:
    subprocess.run(tool + [path], stdout=null, check=True)
wall = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{label} wall_s={wall:.3f} cpu_s={ru.ru_utime + ru.ru_stime:.3f}")
EOF
    done
    for peer in fluent-bit otelcol-contrib otelcol vector; do
        if command -v "$peer" > /dev/null && [[ -x $HARNESS/agents/$peer.sh ]]; then
            LABEL=$peer-r$r IDLE_SECS=0 SIZE=$SIZE FILE=$FILE "$HARNESS/run.sh" "$peer" \
                > "$OUT_DIR/$peer-r$r.out" 2>&1 || log "$peer run $r failed"
        fi
    done
    fi
    if [[ -n $PHASES ]]; then
        python3 "$ROOT/scripts/bench_phases.py" --bin "$SIDEKICK_BIN" --work "$OUT_DIR/phases" \
            --phases "$PHASES" --rate "$RATE" --lat-secs "$LAT_SECS" --idle-secs "$PHASE_IDLE_SECS" \
            --files "$IDLE_FILES" --netns "$NETNS" --label "r$r" >> "$OUT_DIR/phases.jsonl" \
            || log "phases of round $r failed"
    fi
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT_DIR/machine.txt"

# ---------------------------------------------------------------- table
if want bulk; then
python3 - "$OUT_DIR" "$BYTES" "$RUNS" << 'EOF'
import json, os, re, statistics, sys
out, nbytes, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
gib, mib = nbytes / 2**30, nbytes / 2**20
rows = {}
def add(name, **kw):
    r = rows.setdefault(name, {})
    for k, v in kw.items():
        r.setdefault(k, []).append(v)
for line in open(os.path.join(out, "results.jsonl")):
    j = json.loads(line)
    m = re.match(r"(.*)-r\d+$", j["agent"])
    name = m.group(1) if m else j["agent"]
    if j["status"] != "ok" or j["unique"] != j["expected"]:
        print(f"WARNING: {j['agent']}: status {j['status']}, {j['unique']}/{j['expected']} lines, {j['dup']} dup")
    kw = dict(mibs=float(j["mib_s"]), cpu=float(j["cpu_s_per_gib"]), rss=j["peak_rss_kb"] / 1024)
    if str(j["idle_rss_kb"]).isdigit():
        kw.update(idle_rss=int(j["idle_rss_kb"]) / 1024, idle_cpu=float(j["idle_cpu_pct"]))
    add(name, **kw)
for r in range(1, runs + 1):
    p = os.path.join(out, f"floor-r{r}.txt")
    if not os.path.exists(p):
        continue
    for line in open(p):
        label, _, kv = line.partition(" bytes_in=")
        f = dict(x.split("=") for x in ("bytes_in=" + kv).split())
        add(label, mibs=float(f["mib_per_cpu_s"]), cpu=float(f["cpu_s_per_gib"]))
if os.path.exists(os.path.join(out, "tools.txt")):
    for line in open(os.path.join(out, "tools.txt")):
        label, *kv = line.split()
        f = dict(x.split("=") for x in kv)
        add(re.sub(r"-r\d+$", "", label), mibs=mib / max(float(f["wall_s"]), 1e-9),
            cpu=float(f["cpu_s"]) / gib)
def med(name, k, fmt="{:.1f}"):
    v = rows.get(name, {}).get(k)
    if not v:
        return ""
    s = fmt.format(statistics.median(v))
    return s + (" (" + " / ".join(fmt.format(x) for x in v) + ")" if len(v) > 1 else "")
names = [
    ("sidekick-gzip", "sidekick, tail → OTLP/HTTP gzip"),
    ("sidekick-zstd", "sidekick, tail → OTLP/HTTP zstd"),
    ("encode+gzip", "sidekick encode+compress alone, gzip (no I/O, one thread, 8192-record batches)"),
    ("encode+zstd", "sidekick encode+compress alone, zstd (no I/O, one thread, 8192-record batches)"),
    ("floor gzip", "floor: flate2 zlib-rs gzip level 1 alone, 4 MiB chunks, one thread"),
    ("floor zstd", "floor: zstd crate level 1 alone, 4 MiB chunks, one thread"),
    ("gzip", "`gzip -1` command alone"),
    ("zstd", "`zstd -1 -T1` command alone"),
    ("cat", "`cat` (page cache)"),
] + [(p, p) for p in ("fluent-bit", "otelcol-contrib", "otelcol", "vector") if p in rows]
print()
print("| run | MiB/s | CPU s per GiB | peak RSS MiB | idle RSS MiB | idle CPU % |")
print("|---|---|---|---|---|---|")
for key, title in names:
    if key in rows:
        print(f"| {title} | {med(key, 'mibs')} | {med(key, 'cpu', '{:.2f}')} | {med(key, 'rss', '{:.0f}')} "
              f"| {med(key, 'idle_rss', '{:.1f}')} | {med(key, 'idle_cpu', '{:.2f}')} |")
print()
print("MiB/s: whole-process rows are wall-clock (start to last record at the sink); the floor and")
print("encode rows are bytes per CPU second of their one thread.")
def ratio(a, b):
    va, vb = rows.get(a, {}).get("cpu"), rows.get(b, {}).get("cpu")
    if va and vb:
        per = [x / y for x, y in zip(va, vb)]
        return f"{statistics.median(per):.2f}× (" + " / ".join(f"{x:.2f}" for x in per) + ")"
    return "n/a"
print(f"CPU s/GiB ratios, per round: sidekick gzip / gzip floor = {ratio('sidekick-gzip', 'floor gzip')}, "
      f"sidekick zstd / zstd floor = {ratio('sidekick-zstd', 'floor zstd')}, "
      f"sidekick gzip / `gzip -1` = {ratio('sidekick-gzip', 'gzip')}")
EOF
fi
if [[ -s $OUT_DIR/phases.jsonl ]]; then
    python3 "$ROOT/scripts/bench_phases.py" --table "$OUT_DIR/phases.jsonl"
fi
echo
cat "$OUT_DIR/machine.txt"
echo "results: $OUT_DIR"
