#!/usr/bin/env python3
"""CPU time of each thread of a running process over a window, from the
scheduler's own account (`/proc/PID/task/*/schedstat`: nanoseconds on CPU
and the number of times the thread was run).

usage: scripts/thread_cpu.py PID [SECS]      (SECS defaults to 60)

Prints one line per thread (name, ms on CPU, runs, µs per run), most first,
then the total as a percentage of one core. Threads started or ended inside
the window count from their start or up to their end. Used for the idle
figures of issue 5, e.g. against a `sidekick run` with metrics every 10 s.
"""
import os
import sys
import time


def snap(pid):
    d = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                ns, _, runs = f.read().split()
            d[t] = (name, int(ns), int(runs))
        except OSError:
            pass  # the thread ended
    return d


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    pid = int(sys.argv[1])
    secs = float(sys.argv[2]) if len(sys.argv) == 3 else 60.0
    a = snap(pid)
    time.sleep(secs)
    b = snap(pid)
    rows = []
    for t, (name, ns, runs) in b.items():
        _, ns0, runs0 = a.get(t, (name, 0, 0))
        rows.append((ns - ns0, runs - runs0, name))
    total = 0
    for ns, runs, name in sorted(rows, reverse=True):
        total += ns
        print(f"{name:16s} {ns / 1e6:8.2f} ms  {runs:6d} runs  {ns / max(runs, 1) / 1e3:7.1f} us/run")
    print(f"total {total / 1e6:.2f} ms over {secs:.0f} s = {total / 1e9 / secs * 100:.4f} % of a core")


if __name__ == "__main__":
    main()
