#!/usr/bin/env python3
"""celery_bench.py - the bench workloads on Celery: --procs prefork workers, Redis broker + backend."""
import os
import signal
import subprocess
import sys
import time

import common


def start_workers(args):
    conc = max(1, args.slots // args.procs)
    procs = []
    here = os.path.dirname(os.path.abspath(__file__))
    for i in range(args.procs):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=prefork",
             f"--concurrency={conc}", "-Q", "bench", "-n", f"bench{i}@%h", "--loglevel=WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=here, stdout=subprocess.DEVNULL, stderr=sys.stderr, start_new_session=True))
    return procs, conc


def wait_ready(app, want, deadline_s=60):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        if len(replies) >= want:
            return
    raise SystemExit(f"celery: {want} workers did not answer ping within {deadline_s}s")


def run(t, args):
    from celery import chain, group

    n = args.n
    t0 = time.perf_counter()
    if args.workload in ("fanout", "commands"):
        task = t.noop if args.workload == "fanout" else t.true_cmd
        res = group(task.s(i) for i in range(n)).apply_async()
        res.join_native(timeout=None, propagate=True)
    elif args.workload == "chain":
        res = chain([t.noop.si()] + [t.noop.si() for _ in range(n - 1)]).apply_async()
        res.get(timeout=None, propagate=True)
    else:
        raise SystemExit("celery: the diamond goes through diamond_once")
    return time.perf_counter() - t0


def diamond_once(t, body, n, sleep, commands):
    """One diamond: inc and dec fan out, add zips them once both groups are done (a barrier,
    like sluice's), total reduces. Returns the total."""
    from celery import chord, group

    if body == "commands":
        incs = group(t.command.s(i, None, commands["inc"], sleep, n) for i in range(n)).apply_async()
        decs = group(t.command.s(i, None, commands["dec"], sleep, n) for i in range(n)).apply_async()
    else:
        incs = group(t.inc.s(i, sleep) for i in range(n)).apply_async()
        decs = group(t.dec.s(i, sleep) for i in range(n)).apply_async()
    xs = incs.join_native(propagate=True)
    ys = decs.join_native(propagate=True)
    if body == "commands":
        adds = (t.add_command.s((x, y), commands["add"], sleep, n) for x, y in zip(xs, ys))
    else:
        adds = (t.add.s((x, y), sleep) for x, y in zip(xs, ys))
    return chord(adds, t.total.s()).apply_async().get(timeout=None, propagate=True)


def main():
    args = common.parse_args()
    os.environ["BENCH_CELERY_REDIS_PORT"] = str(args.redis_port)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import celery_tasks

    # The workers run in sessions of their own (their pool children with them); when the
    # harness stops this script at its time limit (SIGTERM to its group), the finally below
    # must still run, or the workers outlive the bench (found running an hour after the
    # 2026-12-08 00:50 run, whose Celery fan-out timed out).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs, conc = start_workers(args)
    try:
        wait_ready(celery_tasks.app, args.procs)
        if args.workload == "diamond":
            extra = common.run_diamond(args, lambda b, n, sleep, cmds: diamond_once(celery_tasks, b, n, sleep, cmds))
            seconds = extra.pop("seconds", None)
        else:
            extra = {}
            seconds = run(celery_tasks, args)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    common.emit("celery", args, seconds, procs=args.procs, concurrency_per_proc=conc,
                note="diamond: add starts after all inc/dec (a barrier, like sluice)" if args.workload == "diamond" else None,
                **extra)


if __name__ == "__main__":
    main()
