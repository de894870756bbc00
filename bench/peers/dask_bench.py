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
        raise SystemExit("dask: the diamond goes through diamond_once")
    return time.perf_counter() - t0


def diamond_once(client, body, n, sleep, commands):
    """One diamond: inc and dec map over range(n), add zips them element-wise (each add
    starts when its pair is done: no barrier), total sums. Returns the total."""
    if body == "commands":
        f, kw = common.command_body, {"sleep": sleep, "n": n}
        incs = client.map(f, range(n), command=commands["inc"], pure=False, **kw)
        decs = client.map(f, range(n), command=commands["dec"], pure=False, **kw)
        adds = client.map(f, incs, decs, command=commands["add"], pure=False, **kw)
    else:
        incs = client.map(common.inc, range(n), sleep=sleep, pure=False)
        decs = client.map(common.dec, range(n), sleep=sleep, pure=False)
        adds = client.map(common.add, incs, decs, sleep=sleep, pure=False)
    return client.submit(sum, adds, pure=False).result()


def main():
    args = common.parse_args()
    threads = max(1, args.slots // args.procs)
    with LocalCluster(n_workers=args.procs, threads_per_worker=threads, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as client:
        client.upload_file(common.__file__)
        if args.workload == "diamond":
            extra = common.run_diamond(args, lambda b, n, sleep, cmds: diamond_once(client, b, n, sleep, cmds))
            seconds = extra.pop("seconds", None)
        else:
            extra = {}
            seconds = run(client, args)
    common.emit("dask", args, seconds, procs=args.procs, threads_per_proc=threads, **extra)


if __name__ == "__main__":
    main()
