#!/usr/bin/env python3
"""Runs a command (a sidekick binary and its arguments) and, when it exits,
writes the CPU time each of its threads used over its whole life, summed by
thread name, from `/proc/PID/task/*/stat` (polled every 100 ms, so a thread
that ends early counts up to its last poll).

usage: scripts/thread_cpu_run.py ARGS...      (runs $TW_BIN ARGS...)

environment: TW_BIN (default target/release/sidekick), TW_OUT (default
/tmp/threads.txt). SIGTERM and SIGINT are passed on; the exit code is the
command's.

It can stand in for the binary of the bench harness, e.g. for a 1 GiB gzip
run of the harness copied by scripts/bench.sh:

    SIDEKICK_BIN=$PWD/scripts/thread_cpu_run.py TW_BIN=$PWD/target/release/sidekick \\
      SK_COMPRESS=gzip IDLE_SECS=0 /tmp/sidekick-bench-harness/run.sh sidekick

Each line: thread name, CPU seconds, user and system seconds, share of the
total, and minor page faults.
"""
import collections
import os
import signal
import subprocess
import sys
import time

binary = os.environ.get("TW_BIN", "target/release/sidekick")
out_path = os.environ.get("TW_OUT", "/tmp/threads.txt")
child = subprocess.Popen([binary] + sys.argv[1:])
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda n, _f: child.send_signal(n))
hz = os.sysconf("SC_CLK_TCK")
last = {}


def poll():
    try:
        tids = os.listdir(f"/proc/{child.pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{child.pid}/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1 : s.rindex(")")]
        fields = s[s.rindex(")") + 2 :].split()
        # fields[7] minflt, [11] utime, [12] stime (stat fields 10, 14, 15)
        last[tid] = (comm, int(fields[11]), int(fields[12]), int(fields[7]))


while child.poll() is None:
    poll()
    time.sleep(0.1)

by_name = collections.defaultdict(lambda: [0, 0, 0])
for comm, user, system, minflt in last.values():
    a = by_name[comm]
    a[0] += user
    a[1] += system
    a[2] += minflt
total = sum(u + s for u, s, _ in by_name.values())
with open(out_path, "w") as o:
    for comm, (u, s, mf) in sorted(by_name.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        o.write(
            f"{comm:20s} {(u + s) / hz:7.2f} s  user {u / hz:6.2f}  sys {s / hz:6.2f}"
            f"  {100 * (u + s) / max(total, 1):5.1f} %  minflt {mf}\n"
        )
    o.write(f"{'total':20s} {total / hz:7.2f} s\n")
sys.exit(child.returncode)
