#!/usr/bin/env python3
"""CI's performance regression guard (issue 5): a short whole-process run,
judged as a ratio against `gzip -1` on the same data in the same run — never
an absolute time, since CI machines are shared and noisy.

It writes a log file (SIZE, default 64 MiB, lines like the benchmark's:
access-log and JSON, about 215 bytes), times `gzip -1` over it (CPU of the
child, best of two), then runs sidekick tailing the file from its start and
shipping it as OTLP/HTTP gzip to a sink in this script (which only reads the
bodies), until sidekick's checkpoint reaches the end of the file (that is, every
batch was acknowledged). sidekick's CPU (user + system, /proc) divided by
gzip's must stay under MAX_RATIO.

usage: scripts/perf_guard.py [--bin PATH] [--size 64M] [--max-ratio 2.5]
(default binary: target/debug/sidekick, the one CI builds; see README.)
Exit 0: within the ratio; 1: regression; 2: the run itself failed.
"""
import argparse
import http.server
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def size_arg(s):
    s = s.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(float(s.rstrip("KMG")) * mult)


def write_log(path, size):
    """Deterministic lines of the benchmark's two kinds (see ../shared/bench/gen.py)."""
    rng = random.Random(5)
    paths = ["/", "/api/v1/users/%d", "/api/v1/orders/%d/items", "/static/js/app.%d.js", "/healthz",
             "/api/v2/search?q=shoes&page=%d", "/images/products/%d.jpg", "/login"]
    uas = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
           "curl/8.5.0", "Go-http-client/1.1", "python-requests/2.31.0", "kube-probe/1.29"]
    msgs = ["order processed", "cache miss for product listing", "user session refreshed",
            "payment authorized by upstream provider", "slow database query detected"]
    written, seq, out = 0, 0, []
    with open(path, "w") as f:
        while written < size:
            if rng.random() < 0.6:
                p = rng.choice(paths)
                line = '%d.%d.%d.%d - - [24/Nov/2025:16:%02d:%02d +0000] "GET %s HTTP/1.1" %d %d "-" "%s" n=%010d rt=%.3f\n' % (
                    rng.choice([10, 172, 192]), rng.randrange(256), rng.randrange(256), rng.randrange(1, 255),
                    seq // 60000 % 60, seq // 1000 % 60, p % rng.randrange(1, 10 ** rng.randrange(2, 8)) if "%d" in p else p,
                    rng.choice([200] * 8 + [404, 500]), rng.randrange(200000), rng.choice(uas), seq, rng.random() * 2)
            else:
                line = ('{"ts":"2025-11-24T16:%02d:%02d.%03dZ","level":"%s","service":"checkout","host":"web-%02d",'
                        '"msg":"%s","user_id":%d,"latency_ms":%.2f,"trace_id":"%032x","n":%d}\n') % (
                    seq // 60000 % 60, seq // 1000 % 60, seq % 1000, rng.choice(["info"] * 6 + ["warn", "error"]),
                    rng.randrange(20), rng.choice(msgs), rng.randrange(10 ** 6), rng.random() * 300,
                    rng.getrandbits(128), seq)
            out.append(line)
            written += len(line)
            seq += 1
            if len(out) >= 10000:
                f.write("".join(out))
                out.clear()
        f.write("".join(out))
    return os.path.getsize(path)


def gzip_cpu(path):
    """CPU seconds of `gzip -1` over the file: best of two."""
    best = None
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.devnull, "wb") as null:
            subprocess.run(["gzip", "-1", "-c", path], stdout=null, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = cpu if best is None else min(best, cpu)
    return best


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies = 0

    def do_POST(self):
        left = int(self.headers.get("Content-Length", "0"))
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        Sink.bodies += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def committed(data_dir):
    try:
        with open(os.path.join(data_dir, "checkpoints.json")) as f:
            return max((s.get("offset", 0) for s in json.load(f).get("sources", {}).values()), default=0)
    except (OSError, ValueError):
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "sidekick"))
    ap.add_argument("--size", default=os.environ.get("GUARD_SIZE", "64M"))
    ap.add_argument("--max-ratio", type=float, default=float(os.environ.get("GUARD_MAX_RATIO", "2.5")))
    ap.add_argument("--timeout", type=float, default=90)
    a = ap.parse_args()
    if not shutil.which("gzip"):
        print("perf guard: no gzip command", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="sidekick-perf-guard-")
    try:
        log = os.path.join(work, "app.log")
        nbytes = write_log(log, size_arg(a.size))
        gz = gzip_cpu(log)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        data_dir = os.path.join(work, "data")
        cfg = os.path.join(work, "sidekick.yaml")
        with open(cfg, "w") as f:
            f.write(f"""data_dir: {data_dir}
telemetry: {{ listen: off }}
logs:
  - include: ["{log}"]
    start_at: beginning
outputs:
  - type: otlp_http
    endpoint: http://127.0.0.1:{server.server_address[1]}
    compression: gzip
""")
        agent_log = open(os.path.join(work, "agent.log"), "w")
        t0 = time.monotonic()
        agent = subprocess.Popen([a.bin, "run", "-c", cfg], stdout=agent_log, stderr=subprocess.STDOUT)
        cpu, done = 0.0, False
        while time.monotonic() - t0 < a.timeout and agent.poll() is None:
            time.sleep(0.05)
            cpu = proc_cpu(agent.pid)
            if committed(data_dir) >= nbytes:
                done = True
                break
        wall = time.monotonic() - t0
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
        server.shutdown()
        if not done:
            agent_log.close()
            print(f"perf guard: sidekick did not ship the {nbytes} bytes within {a.timeout:.0f} s "
                  f"(committed {committed(data_dir)}); its log:", file=sys.stderr)
            print(open(os.path.join(work, "agent.log")).read()[-3000:], file=sys.stderr)
            return 2
        gib = nbytes / 2**30
        ratio = cpu / gz
        print(f"perf guard: {nbytes / 2**20:.0f} MiB, {Sink.bodies} requests; sidekick {cpu:.2f} CPU s "
              f"({cpu / gib:.2f} s/GiB, {wall:.1f} s wall), gzip -1 {gz:.2f} CPU s ({gz / gib:.2f} s/GiB); "
              f"ratio {ratio:.2f} (limit {a.max_ratio}); guard took {time.monotonic() - t_start:.0f} s "
              f"(binary {a.bin})")
        if ratio > a.max_ratio:
            print("perf guard: REGRESSION: sidekick's CPU per byte is more than "
                  f"{a.max_ratio}x gzip -1's on the same data", file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
