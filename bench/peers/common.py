"""common.py - the workloads' task bodies and the JSON result line shared by the peer scripts."""
import json
import os
import random
import subprocess
import sys
import time


def _count():
    # BENCH_COUNT_FILE: one byte per task body run, so a peer's figure can be checked
    path = os.environ.get("BENCH_COUNT_FILE")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, b".")
        os.close(fd)


def executed():
    path = os.environ.get("BENCH_COUNT_FILE")
    return os.path.getsize(path) if path and os.path.exists(path) else 0


def noop(*_args):
    _count()
    return None


def true_cmd(*_args):
    subprocess.run(["/bin/true"], check=True)
    _count()
    return None


def sleepy(seconds):
    # the seed's diamond: every task sleeps random() * sleep
    time.sleep(random.random() * seconds)


def inc(x, sleep):
    sleepy(sleep)
    return x + 1


def dec(x, sleep):
    sleepy(sleep)
    return x - 1


def add(x, y, sleep):
    sleepy(sleep)
    return x + y


def emit(peer, args, seconds, **extra):
    """Prints the one JSON line the harness reads: rate for fan-outs, per-hop for the chain."""
    out = {"peer": peer, "workload": args.workload, "n": args.n, "slots": args.slots, "seconds": round(seconds, 6)}
    if args.workload == "chain":
        out["per_hop_ms"] = round(seconds * 1000.0 / args.n, 4)
    elif args.workload in ("fanout", "commands"):
        out["rate"] = round(args.n / seconds, 1)
    out.update(extra)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def parse_args(argv=None):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True, choices=["fanout", "chain", "commands", "diamond"])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--slots", type=int, default=8, help="execution slots in all")
    p.add_argument("--procs", type=int, default=2, help="worker processes")
    p.add_argument("--sleep", type=float, default=0.1, help="diamond: max sleep per task")
    p.add_argument("--redis-port", type=int, default=0, help="celery: broker/backend port")
    return p.parse_args(argv)
