#!/usr/bin/env python3
"""prefect_bench.py - the bench workloads on Prefect 3 with prefect-dask's DaskTaskRunner (the seeds' setup)."""
import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.request

import common

ARGS = common.parse_args()


def start_server():
    """One `prefect server start` on loopback for the flow and every Dask worker process.

    With PREFECT_API_URL unset each process (the flow's and each Dask worker's) starts its own
    ephemeral server, which on 2 cores makes tasks fail with "Failed to reach API"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # In this script's process group, not a session of its own: when the harness kills the
    # group of a peer that ran past its time limit, the server goes with it (atexit does not
    # run then; a server of its own session outlived the 2026-12-06 08:35 run by an hour).
    atexit.register(lambda: proc.terminate() if proc.poll() is None else None)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return url
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"prefect server start exited with {proc.returncode}")
        time.sleep(0.5)
    raise SystemExit("prefect server did not answer /api/health within 180 s")


# Every noop / true_cmd body counts itself: Prefect's figure is only printed if all n ran.
# setdefault: Dask's worker processes import this file again (as __mp_main__) and must keep
# the flow's file, not name one after their own pid (why every body seemed not to run).
os.environ.setdefault("BENCH_COUNT_FILE",
                      os.path.join(os.environ.get("PREFECT_HOME", "/tmp"), f"count-{os.getpid()}"))
if not os.environ.get("PREFECT_API_URL"):
    os.environ["PREFECT_API_URL"] = start_server()

from prefect import flow, task  # noqa: E402  (settings are read at import: the URL first)
from prefect import unmapped  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect_dask import DaskTaskRunner  # noqa: E402

THREADS = max(1, ARGS.slots // ARGS.procs)

# No result caching: Prefect 3 caches on the task's inputs by default, so the chain's
# noop(None) calls (all one input) ran once and came from the cache 199 times.
# One named parameter: Prefect's .map() maps over parameters, and common.noop(*args) has only
# varargs, which it took as one list (one task for all n: why only one body ran).
@task(name="noop", cache_policy=NO_CACHE)
def noop(x):
    return common.noop(x)


@task(name="true_cmd", cache_policy=NO_CACHE)
def true_cmd(x):
    return common.true_cmd(x)



inc = task(common.inc, name="inc", cache_policy=NO_CACHE)
dec = task(common.dec, name="dec", cache_policy=NO_CACHE)
add = task(common.add, name="add", cache_policy=NO_CACHE)


# the diamond's tasks as sluice runs them: the flow's argv (cmd, unmapped), integer stdout
@task(name="command", cache_policy=NO_CACHE)
def command(x, y, cmd, sleep, n):
    return common.command_body(x, y, command=cmd, sleep=sleep, n=n)


@task(cache_policy=NO_CACHE)
def total(values):
    return sum(values)


def diamond_once(body, n, sleep, commands):
    """One diamond inside the flow: add maps over inc's and dec's futures (element-wise, as
    with Dask). Returns the total."""
    if body == "commands":
        incs = command.map(range(n), unmapped(None), unmapped(commands["inc"]), sleep, n)
        decs = command.map(range(n), unmapped(None), unmapped(commands["dec"]), sleep, n)
        adds = command.map(incs, decs, unmapped(commands["add"]), sleep, n)
    else:
        incs = inc.map(range(n), sleep=sleep)
        decs = dec.map(range(n), sleep=sleep)
        adds = add.map(incs, decs, sleep=sleep)
    return total.submit(adds).result()


@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": ARGS.procs, "threads_per_worker": THREADS,
                                                  "processes": True, "dashboard_address": None}),
      log_prints=False)
def bench(args):
    if args.workload == "diamond":
        return common.run_diamond(args, diamond_once)
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
        raise SystemExit("prefect: the diamond goes through diamond_once")
    return time.perf_counter() - t0


if __name__ == "__main__":
    result = bench(ARGS)
    extra = result if isinstance(result, dict) else {}
    seconds = extra.pop("seconds", None) if extra else result
    ran = common.executed()
    want = ARGS.n if ARGS.workload in ("fanout", "commands", "chain") else 0
    if want and ran != want:
        raise SystemExit(f"prefect: only {ran} of {want} task bodies ran before the flow returned")
    common.emit("prefect", ARGS, seconds, procs=ARGS.procs, threads_per_proc=THREADS,
                note="timed inside the flow: flow start-up, API server and cluster start excluded", **extra)
