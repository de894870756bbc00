#!/usr/bin/env python3
"""Prints where a diamond run's slots went, per worker and time bin, from the instances file
that `bench/run --keep-logs DIR` writes (DIR/diamond-<run>.json): mean tasks running on each
worker over the bin, and how many dispatched tasks waited unstarted at its start. A worker at
0 while tasks wait is a worker starved by the transport, not by the flow.

    bench/diamond_timeline.py DIR/diamond-<run>.json [bin ms, default 100]
"""
import json
import sys


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        d = json.load(f)
    step = int(sys.argv[2]) if len(sys.argv) == 3 else 100
    t0, ti = d["t0_ms"], [i for i in d["instances"] if i["started_ms"] and i["finished_ms"]]
    workers = sorted({i["worker"] or "?" for i in ti})
    end = max(int(i["finished_ms"]) for i in ti) - t0
    print("ms from submit | running per worker (" + ", ".join(w[-6:] for w in workers) + ") | waiting")
    for b in range(0, end + step, step):
        row = []
        for w in workers:
            busy = 0
            for i in ti:
                if (i["worker"] or "?") != w:
                    continue
                s = max(int(i["started_ms"]) - t0, b)
                e = min(int(i["finished_ms"]) - t0, b + step)
                busy += max(0, e - s)
            row.append(f"{busy / step:4.1f}")
        waiting = sum(1 for i in ti if i["queued_ms"] and int(i["queued_ms"]) - t0 <= b < int(i["started_ms"]) - t0)
        print(f"{b:6d} | {' '.join(row)} | {waiting}")


if __name__ == "__main__":
    main()
