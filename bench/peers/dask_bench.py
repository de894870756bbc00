#!/usr/bin/env python3
"""dask_bench.py - the bench workloads on Dask distributed (LocalCluster, --procs worker processes)."""
import time

from distributed import Client, LocalCluster, wait

import common


def run(client, args):
    n = args.n
    t0 = time.perf_counter()
    if args.workload == "fanout":
        wait(client.map(common.noop, range(n), pure=False))
    elif args.workload == "commands":
        futs = client.map(common.true_cmd, range(n), pure=False)
        wait(futs)
        if any(f.status != "finished" for f in futs):
            raise SystemExit("dask: a command task failed")
    elif args.workload == "chain":
        f = client.submit(common.noop, None, pure=False)
        for _ in range(n - 1):
            f = client.submit(common.noop, f, pure=False)
        f.result()
    else:
        incs = client.map(common.inc, range(n), sleep=args.sleep, pure=False)
        decs = client.map(common.dec, range(n), sleep=args.sleep, pure=False)
        adds = client.map(common.add, incs, decs, sleep=args.sleep, pure=False)
        total = client.submit(sum, adds).result()
        if total != n * (n - 1):
            raise SystemExit(f"dask: diamond total {total}, expected {n * (n - 1)}")
    return time.perf_counter() - t0


def main():
    args = common.parse_args()
    threads = max(1, args.slots // args.procs)
    with LocalCluster(n_workers=args.procs, threads_per_worker=threads, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as client:
        client.upload_file(common.__file__)
        seconds = run(client, args)
    common.emit("dask", args, seconds, procs=args.procs, threads_per_proc=threads)


if __name__ == "__main__":
    main()
