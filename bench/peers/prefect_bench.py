#!/usr/bin/env python3
"""prefect_bench.py - the bench workloads on Prefect 3 with prefect-dask's DaskTaskRunner (the seeds' setup)."""
import time

from prefect import flow, task
from prefect_dask import DaskTaskRunner

import common

ARGS = common.parse_args()
THREADS = max(1, ARGS.slots // ARGS.procs)

noop = task(common.noop, name="noop")
true_cmd = task(common.true_cmd, name="true_cmd")
inc = task(common.inc, name="inc")
dec = task(common.dec, name="dec")
add = task(common.add, name="add")


@task
def total(values):
    return sum(values)


@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": ARGS.procs, "threads_per_worker": THREADS,
                                                  "processes": True, "dashboard_address": None}),
      log_prints=False)
def bench(args):
    n = args.n
    t0 = time.perf_counter()
    if args.workload in ("fanout", "commands"):
        t = noop if args.workload == "fanout" else true_cmd
        t.map(range(n)).result()
    elif args.workload == "chain":
        f = noop.submit(None)
        for _ in range(n - 1):
            f = noop.submit(None, wait_for=[f])
        f.result()
    else:
        incs = inc.map(range(n), sleep=args.sleep)
        decs = dec.map(range(n), sleep=args.sleep)
        adds = add.map(incs, decs, sleep=args.sleep)
        got = total.submit(adds).result()
        if got != n * (n - 1):
            raise SystemExit(f"prefect: diamond total {got}, expected {n * (n - 1)}")
    return time.perf_counter() - t0


if __name__ == "__main__":
    seconds = bench(ARGS)
    common.emit("prefect", ARGS, seconds, procs=ARGS.procs, threads_per_proc=THREADS,
                note="timed inside the flow: flow start-up, ephemeral server and cluster start excluded")
