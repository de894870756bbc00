#!/usr/bin/env python3
"""Redis's own CPU per task instance in the two scripts a noop fan-out costs it: ti_add
(creating instances, 1,000 per call) and result_apply (settling their results, 512 per call).

Starts a redis-server here as scripts/redis runs it (AOF on, appendfsync always), loads the
scripts from libs/state/lua (with _common.lua prepended, as embed_lua.cmake does), writes a
node of N instances with the dispatch bytes of a noop, applies a SUCCEEDED result to each
with the arguments the planner sends, and prints Redis's main-thread CPU per instance (INFO
cpu) for each script. Variants take one part out to show what it costs (the run's outcome is
then wrong, the figure is what matters):

  current       the scripts as they are
  args-only     result_apply replaced by a script that only answers: reading the arguments
                and writing the replies
  no-create     ti_add without the instance's HSET
  no-write      result_apply without the result's HSET
  no-read       result_apply without the instance's HMGET (the fence's read)

Rounds alternate the variants (the machine's speed drifts; compare within a round).

usage: ~/.cache/sluice/bench-venv/bin/python bench/micro/redis_cost.py [--n N] [--rounds R]
       [variant ...]   (the bench venv has the redis client; bench/run creates it)
"""
import argparse
import os
import random
import shutil
import subprocess
import tempfile
import time

import redis

LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "libs", "state", "lua")
RUN = "r-01a252d8da06fd2a007820"
WORKER = "w-vm-22899-01a2527503136d6253d6ad"


def read(name):
    with open(os.path.join(LUA, name + ".lua")) as f:
        return f.read()


def cut(text, part, by=""):
    """text with part (which must be there: a variant that changes nothing is a bug) replaced."""
    if part not in text:
        raise SystemExit(f"variant: {part!r} not found in the script; update redis_cost.py")
    return text.replace(part, by)


CREATE_HSET = """      redis.call('HSET', key, 'state', 'DISPATCHED', 'attempt', '1',
                 'max_attempts', max_attempts, 'queued_ms', now)"""
RESULT_HSET = """    redis.call('HSET', ti_key, 'state', 'SUCCEEDED', 'output', output, 'worker', worker,
               'started_ms', started, 'finished_ms', finished, 'exit_code', exit_code)"""
RESULT_HMGET = """redis.call('HMGET', ti_key, 'state', 'attempt', 'max_attempts', 'dispatch',
                        'error', 'lease_call')"""
ARGS_ONLY = """local replies = {}
local n = #KEYS - 1 - 2 * tonumber(ARGV[1])
for i = 1, n do replies[i] = {'applied', 'RUNNING'} end
return replies
"""


def scripts(variant):
    common, ti_add, apply = read("_common"), read("ti_add"), read("result_apply")
    if variant == "args-only":
        apply = ARGS_ONLY
    elif variant == "no-create":
        common = cut(common, CREATE_HSET)
    elif variant == "no-write":
        apply = cut(apply, RESULT_HSET)
    elif variant == "no-read":
        apply = cut(apply, RESULT_HMGET, "{'DISPATCHED', attempt_arg, '1', false, false, false}")
    return common + "\n" + ti_add, common + "\n" + apply


def start_redis(tmp):
    port = random.randint(20000, 40000)
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--appendonly", "yes",
                    "--appendfsync", "always", "--save", "", "--dir", tmp, "--daemonize", "yes",
                    "--logfile", os.path.join(tmp, "redis.log")], check=True)
    r = redis.Redis(port=port)
    for _ in range(200):
        try:
            r.ping()
            return r
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not answer")


def cpu(r):
    i = r.info("cpu")
    return i["used_cpu_sys_main_thread"] + i["used_cpu_user_main_thread"]


def calls(n):
    """The ti_add and result_apply calls of a node of n noop instances, built before timing."""
    base = f"sluice:{{{RUN}}}:"
    run_key, node_key, now = base + "run", base + "node:t", str(int(time.time() * 1000))
    disp = b"\x08\x01" + bytes(random.getrandbits(8) for _ in range(140))
    adds, applies = [], []
    for f in range(0, n, 1000):
        args = [run_key, node_key, base + "ti:t:", "1", now]
        for i in range(f, min(n, f + 1000)):
            args += [str(i), disp]
        adds.append(args)
    for f in range(0, n, 512):
        m = min(n, f + 512) - f
        keys = ["sluice:timers", run_key, node_key] + [f"{base}ti:t:{i}" for i in range(f, f + m)]
        argv = ["1", base + "node:", "t", str(m), now, "ok", WORKER]
        for _ in range(m):
            argv += ["1", "null", now, now]
        applies.append((len(keys), keys + argv))
    return run_key, node_key, adds, applies


def measure(variant, n):
    tmp = tempfile.mkdtemp(prefix="sluice-redis-cost.")
    r = start_redis(tmp)
    try:
        add_src, apply_src = scripts(variant)
        ti_add, apply = r.script_load(add_src), r.script_load(apply_src)
        run_key, node_key, adds, applies = calls(n)
        r.hset(run_key, mapping={"state": "RUNNING", "tasks": "t", "nodes_left": 1})
        r.hset(node_key, mapping={"state": "ACTIVE", "total": n, "written": 0, "down": ""})
        c0 = cpu(r)
        for args in adds:
            r.evalsha(ti_add, 2, *args)
        c1 = cpu(r)
        for nkeys, args in applies:
            r.evalsha(apply, nkeys, *args)
        c2 = cpu(r)
        state = (r.hget(run_key, "state") or b"?").decode()
        return 1e6 * (c1 - c0) / n, 1e6 * (c2 - c1) / n, state
    finally:
        try:
            r.shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("variants", nargs="*", default=["current"])
    a = ap.parse_args()
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    print(f"# bench/micro/redis_cost.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{' '.join(out[2:3])}, appendfsync always, {a.n} instances, Redis main-thread CPU per instance")
    for rnd in range(1, a.rounds + 1):
        for v in a.variants:
            add, apply, state = measure(v, a.n)
            print(f"round {rnd}: {v:10s} ti_add {add:5.1f} us  result_apply {apply:5.1f} us  "
                  f"(run {state})", flush=True)


if __name__ == "__main__":
    main()
