#!/usr/bin/env python3
"""The phases of issue 5's benchmark that the harness's run.sh does not
measure, each against a fresh `sidekick run` and a receiver in this script:

  latency   lines written at a steady rate (1,000/s) into a file sidekick
            tails; each line carries its write time (time.time_ns()); the
            receiver decodes every OTLP/HTTP request (gzip/zstd/none) and
            takes arrival - write time for each record, before it answers
            200 (= the acknowledgement). p50/p99/max against batch.timeout
            + 50 ms. Every line must arrive exactly once.
  idle      one idle file (1,000 lines) -> all delivered -> CPU time (schedstat) and
            RSS of the process over IDLE_SECS.
  idle1000  the same with 1,000 idle files of 10 lines each (10,000 lines).
  idlemetrics  one idle file plus `target: {pid: <a sleeping process>}` and
            `metrics: {interval: 10s}` (process + cgroup), idle CPU and RSS.

Prints one JSON object per phase on stdout (appended to OUT by bench.sh).

usage: bench_phases.py --bin target/release/sidekick --work DIR
                       [--phases latency,idle,idle1000,idlemetrics]
                       [--rate 1000] [--lat-secs 30] [--idle-secs 30]
                       [--netns benchns] [--port 4320] [--compression gzip]
                       [--label r1]
       bench_phases.py --table phases.jsonl     the Markdown tables
"""
import argparse
import gzip
import http.server
import json
import os
import re
import shutil
import signal
import socketserver
import statistics
import subprocess
import sys
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
SEQ_T = re.compile(rb"lat_seq=(\d+) lat_t=(\d+)")


def log(msg):
    print(f"[bench_phases {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------ protobuf
def varint(b, i):
    shift = v = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def fields(b):
    """(field number, wire type, value) of one message; length-delimited
    values as memoryview slices."""
    i, n = 0, len(b)
    while i < n:
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 2:
            ln, i = varint(b, i)
            v, i = b[i:i + ln], i + ln
        else:
            raise ValueError(f"wire type {wt}")
        yield f, wt, v


def log_bodies(req):
    """Bodies (string values) of every LogRecord of an ExportLogsServiceRequest."""
    for f, _, rl in fields(req):  # resource_logs = 1
        if f != 1:
            continue
        for f2, _, sl in fields(rl):  # scope_logs = 2
            if f2 != 2:
                continue
            for f3, _, lr in fields(sl):  # log_records = 2
                if f3 != 2:
                    continue
                body = b""
                for f4, _, v in fields(lr):  # body = 5 (AnyValue)
                    if f4 == 5:
                        for f5, _, s in fields(v):  # string_value = 1
                            if f5 == 1:
                                body = bytes(s)
                yield body


def decompress(data, enc):
    enc = (enc or "").lower()
    if enc == "gzip":
        return gzip.decompress(data)
    if enc == "zstd":
        try:
            import zstandard  # noqa: PLC0415

            return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 30)
        except ImportError:
            return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


# ------------------------------------------------------------ receiver
class Receiver:
    """Counts log records and, for bodies carrying lat_seq/lat_t, the
    arrival - write time of each; answers 200 after decoding."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = 0
        self.idle_records = 0  # bodies of the idle files (not events)
        self.requests = 0
        self.metric_requests = 0
        self.lat = {}  # seq -> latency ns (first arrival)
        self.dup = 0

    def handle(self, path, data, enc):
        arrival = time.time_ns()
        body = decompress(data, enc)
        with self.lock:
            self.requests += 1
            if path.endswith("/v1/metrics"):
                self.metric_requests += 1
                return
            for b in log_bodies(body):
                self.records += 1
                if b" /idle/" in b:
                    self.idle_records += 1
                m = SEQ_T.search(b)
                if m:
                    seq = int(m.group(1))
                    if seq in self.lat:
                        self.dup += 1
                    else:
                        self.lat[seq] = arrival - int(m.group(2))


def serve(port, rec):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n)
            try:
                rec.handle(self.path, data, self.headers.get("Content-Encoding"))
                code = 200
            except Exception as e:  # noqa: BLE001
                log(f"receiver: {e!r}")
                code = 400
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = S(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# ------------------------------------------------------------ process
def cpu_ns(pid):
    """CPU time of every live thread of pid, in ns (/proc/PID/task/*/schedstat:
    the scheduler's own account, exact, where /proc/PID/stat counts whole
    clock ticks: 10 ms, about what an idle agent spends in a minute)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def cpu_ticks(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0
    f = s.rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime


def status_kb(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rollup_kb(pid):
    out = {}
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            p = line.split()
            if len(p) == 3 and p[2] == "kB":
                out[p[0].rstrip(":")] = int(p[1])
    except OSError:
        pass
    return out


def start_agent(args, work, yaml_text):
    cfg = os.path.join(work, "sidekick.yaml")
    with open(cfg, "w") as f:
        f.write(yaml_text)
    cmd = [args.bin, "run", "-c", cfg]
    if args.netns:
        cmd = ["ip", "netns", "exec", args.netns] + cmd
    out = open(os.path.join(work, "agent.log"), "wb")
    # `ip netns exec` execs the command: the PID is sidekick's own.
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(pred, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def config(args, work, include, extra=""):
    return (
        f"data_dir: {work}/data\n"
        f"logs:\n  - include: {json.dumps(include)}\n    start_at: beginning\n"
        f"outputs:\n  - type: otlp_http\n    endpoint: http://127.0.0.1:{args.port}\n"
        f"    compression: {args.compression}\n" + extra
    )


def in_netns(args, fn):
    """Run fn() with this thread's network namespace switched to args.netns
    (the receiver's listening socket is created there)."""
    if not args.netns:
        return fn()
    import ctypes  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{args.netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
        return fn()
    finally:
        libc.setns(own, 0x40000000)
        os.close(fd)
        os.close(own)


# ------------------------------------------------------------ phases
def phase_latency(args, work):
    rec = Receiver()
    srv = in_netns(args, lambda: serve(args.port, rec))
    path = os.path.join(work, "steady.log")
    open(path, "wb").close()
    p = start_agent(args, work, config(args, work, [path]))
    pid = p.pid
    time.sleep(2.0)  # startup
    c0 = cpu_ticks(pid)
    total = int(args.rate * args.lat_secs)
    pad = b"x" * 120  # ~200 B lines, like the bulk file
    t_start = time.monotonic()
    n = 0
    with open(path, "ab", buffering=0) as f:
        while n < total:
            due = min(total, int((time.monotonic() - t_start) * args.rate) + 1)
            while n < due:
                # one write(2) per line, its time taken just before
                f.write(b"GET /steady lat_seq=%d lat_t=%d %s\n" % (n, time.time_ns(), pad))
                n += 1
            time.sleep(0.001)
    write_secs = time.monotonic() - t_start
    ok = wait_for(lambda: len(rec.lat) >= total, 30)
    time.sleep(1.0)
    c1 = cpu_ticks(pid)
    rss = status_kb(pid, "VmRSS")
    hwm = status_kb(pid, "VmHWM")
    stop(p)
    srv.shutdown()
    # the first 2 s are left out (the first batch opens on the first line)
    lats = sorted(v / 1e6 for k, v in rec.lat.items() if k >= 2 * args.rate)
    q = statistics.quantiles(lats, n=100) if len(lats) >= 100 else [float("nan")] * 99
    return {
        "phase": "latency",
        "status": "ok" if ok and rec.dup == 0 and rec.records == total else "incomplete",
        "rate": args.rate,
        "written": total,
        "write_secs": round(write_secs, 2),
        "unique": len(rec.lat),
        "dup": rec.dup,
        "records": rec.records,
        "requests": rec.requests,
        "p50_ms": round(q[49], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(lats[-1], 1) if lats else None,
        "cpu_pct": round((c1 - c0) / HZ / (time.monotonic() - t_start) * 100, 2),
        "rss_kb": rss,
        "hwm_kb": hwm,
    }


def idle_common(args, work, name, include, expected, nfiles, extra=""):
    rec = Receiver()
    srv = in_netns(args, lambda: serve(args.port, rec))
    p = start_agent(args, work, config(args, work, include, extra))
    pid = p.pid
    ok = wait_for(lambda: rec.idle_records >= expected, 120)
    time.sleep(5)
    c0, n0, t0 = cpu_ticks(pid), cpu_ns(pid), time.monotonic()
    time.sleep(args.idle_secs)
    c1, n1, t1 = cpu_ticks(pid), cpu_ns(pid), time.monotonic()
    alive = p.poll() is None
    rss = status_kb(pid, "VmRSS")
    roll = rollup_kb(pid)
    threads = status_kb(pid, "Threads")
    stop(p)
    srv.shutdown()
    return {
        "phase": name,
        "status": "ok" if ok and alive and rec.idle_records == expected else
        f"delivered {rec.idle_records}/{expected}, alive={alive}",
        "other_records": rec.records - rec.idle_records,
        "files": nfiles,
        "idle_secs": round(t1 - t0, 1),
        # schedstat's ns (threads alive at both ends: an idle agent starts
        # none); the ticks of /proc/PID/stat beside it as a cross-check.
        "idle_cpu_pct": round((n1 - n0) / 1e9 / (t1 - t0) * 100, 4),
        "idle_ticks": c1 - c0,
        "idle_rss_kb": rss,
        "anon_kb": roll.get("Anonymous", 0),
        "file_kb": roll.get("Rss", 0) - roll.get("Anonymous", 0),
        "threads": threads,
        "metric_requests": rec.metric_requests,
    }


def gen_lines(path, n, seed):
    with open(path, "wb") as f:
        for i in range(n):
            f.write(b"127.0.0.1 - - GET /idle/%d/%d HTTP/1.1 200 %s\n" % (seed, i, b"y" * 150))


def phase_idle(args, work):
    path = os.path.join(work, "idle.log")
    gen_lines(path, 1000, 0)
    return idle_common(args, work, "idle", [path], 1000, 1)


def phase_idle1000(args, work):
    d = os.path.join(work, "files")
    os.makedirs(d)
    for i in range(args.files):
        gen_lines(os.path.join(d, f"app-{i:04d}.log"), 10, i)
    return idle_common(args, work, "idle1000", [os.path.join(d, "*.log")], 10 * args.files, args.files)


def phase_idlemetrics(args, work):
    path = os.path.join(work, "idle.log")
    gen_lines(path, 1000, 0)
    target = subprocess.Popen(["sleep", str(args.idle_secs + 300)])
    try:
        extra = (
            f"target: {{ pid: {target.pid}, exit_with_target: false }}\n"
            "metrics: { interval: 10s, process: true, cgroup: true }\n"
        )
        r = idle_common(args, work, "idlemetrics", [path], 1000, 1, extra)
    finally:
        target.kill()
        target.wait()
    return r


def table(path):
    rows = {}
    for line in open(path):
        j = json.loads(line)
        rows.setdefault(j["phase"], []).append(j)
        if j["status"] != "ok":
            print(f"WARNING: {j['phase']} {j['label']}: {j['status']}")

    def med(rs, k, fmt):
        v = [r[k] for r in rs if r.get(k) is not None]
        if not v:
            return ""
        m = fmt.format(statistics.median(v))
        return m + (" (" + " / ".join(fmt.format(x) for x in v) + ")" if len(v) > 1 else "")

    def loads(rs):
        return "load " + " / ".join(r["load"] for r in rs)

    if "latency" in rows:
        rs = rows["latency"]
        print()
        print("| latency, line written → acknowledged at the receiver | p50 ms | p99 ms | max ms "
              "| agent CPU % | every line exactly once |")
        print("|---|---|---|---|---|---|")
        print(f"| sidekick, {rs[0]['rate']:,} lines/s for {rs[0]['written'] // rs[0]['rate']} s, "
              f"default batch (timeout 1 s: target ≤ 1,050 ms), {loads(rs)} "
              f"| {med(rs, 'p50_ms', '{:.0f}')} | {med(rs, 'p99_ms', '{:.0f}')} | {med(rs, 'max_ms', '{:.0f}')} "
              f"| {med(rs, 'cpu_pct', '{:.1f}')} | {' / '.join('yes' if r['status'] == 'ok' else 'NO' for r in rs)} |")
    titles = [
        ("idle", "one idle file (1,000 lines)"),
        ("idle1000", "1,000 idle files (10 lines each)"),
        ("idlemetrics", "one idle file + a target, process and cgroup metrics every 10 s"),
    ]
    if any(k in rows for k, _ in titles):
        print()
        print("| idle, after every line was delivered | idle CPU % of a core | idle RSS MiB "
              "| anonymous / file-backed MiB | threads |")
        print("|---|---|---|---|---|")
        for k, t in titles:
            if k not in rows:
                continue
            rs = rows[k]
            for r in rs:
                r["rss"], r["anon"], r["file"] = (r[x] / 1024 for x in ("idle_rss_kb", "anon_kb", "file_kb"))
            print(f"| {t}, {rs[0]['idle_secs']:.0f} s, {loads(rs)} | {med(rs, 'idle_cpu_pct', '{:.3f}')} "
                  f"| {med(rs, 'rss', '{:.1f}')} | {med(rs, 'anon', '{:.1f}')} / {med(rs, 'file', '{:.1f}')} "
                  f"| {med(rs, 'threads', '{:.0f}')} |")
        if "idle" in rows and "idle1000" in rows:
            m = {k: {x: statistics.median(r[x] for r in rows[k]) for x in ("idle_rss_kb", "idle_cpu_pct")}
                 for k in ("idle", "idle1000")}
            print(f"1,000 files / one file (target ≤ 2×): RSS {m['idle1000']['idle_rss_kb'] / m['idle']['idle_rss_kb']:.2f}×, "
                  f"idle CPU {m['idle1000']['idle_cpu_pct']:.3f} % vs {m['idle']['idle_cpu_pct']:.3f} %")


PHASES = {
    "latency": phase_latency,
    "idle": phase_idle,
    "idle1000": phase_idle1000,
    "idlemetrics": phase_idlemetrics,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    ap.add_argument("--work")
    ap.add_argument("--table", help="print the tables of this phases.jsonl and exit")
    ap.add_argument("--phases", default="latency,idle,idle1000,idlemetrics")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--lat-secs", type=float, default=30)
    ap.add_argument("--idle-secs", type=float, default=30)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--netns", default="")
    ap.add_argument("--port", type=int, default=4320)
    ap.add_argument("--compression", default="gzip")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    if args.table:
        return table(args.table)
    if not args.bin or not args.work:
        ap.error("--bin and --work are required")
    for name in args.phases.split(","):
        work = os.path.join(args.work, f"{name}{'-' + args.label if args.label else ''}")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        log(f"phase {name} (load {open('/proc/loadavg').read().split()[0]})")
        r = PHASES[name](args, work)
        r["label"] = args.label
        r["load"] = open("/proc/loadavg").read().split()[0]
        log(json.dumps(r))
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
