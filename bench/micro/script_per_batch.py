#!/usr/bin/env python3
"""What one Redis script call per batch would save against one call per instance.

A lease-like script (the reads and writes of lease_acquire.lua for an instance without
concurrency tags) is run for 64 instances either as 64 pipelined EVALSHA calls (what
sl_state_lease_acquire_many does today) or as one EVALSHA looping over the 64, against a
redis-server started here with the AOF on and appendfsync always (as scripts/redis runs it).
Prints Redis's own CPU per instance (INFO cpu) and the wall rate, three rounds interleaved.

usage: ~/.cache/sluice/bench-venv/bin/python bench/micro/script_per_batch.py [--port P]
(the bench venv has the redis client; bench/run creates it)
"""
import argparse
import shutil
import subprocess
import tempfile
import time

import redis

ONE = """
local s = redis.call('HGET', KEYS[1], 'state')
local t = redis.call('HMGET', KEYS[2], 'state', 'attempt')
if redis.call('EXISTS', KEYS[3]) == 1 then return 'busy' end
redis.call('SET', KEYS[3], 'w:1', 'PX', 60000)
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('HSET', KEYS[2], 'state', 'RUNNING', 'worker', ARGV[1], 'started_ms', ARGV[2])
redis.call('HDEL', KEYS[2], 'waiting_for')
redis.call('DEL', KEYS[3])
return 'ok'
"""

# The same body in a loop: KEYS 1 run hash, 2 lease set, then (instance hash, lease key) pairs.
MANY = """
local r = {}
for i = 0, (#KEYS - 2) / 2 - 1 do
  local ti, lk = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  repeat
    local s = redis.call('HGET', KEYS[1], 'state')
    local t = redis.call('HMGET', ti, 'state', 'attempt')
    if redis.call('EXISTS', lk) == 1 then r[#r + 1] = 'busy' break end
    redis.call('SET', lk, 'w:1', 'PX', 60000)
    redis.call('SADD', KEYS[2], lk)
    redis.call('HSET', ti, 'state', 'RUNNING', 'worker', ARGV[1], 'started_ms', ARGV[2])
    redis.call('HDEL', ti, 'waiting_for')
    redis.call('DEL', lk)
    r[#r + 1] = 'ok'
  until true
end
return r
"""


def cpu(r):
    i = r.info("cpu")
    return i["used_cpu_user"] + i["used_cpu_sys"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=23999)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="sluice-micro-")
    srv = subprocess.Popen(["redis-server", "--port", str(args.port), "--save", "",
                            "--appendonly", "yes", "--appendfsync", "always", "--dir", d],
                           stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=args.port)
        for _ in range(50):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        one, many = r.script_load(ONE), r.script_load(MANY)
        n, rounds = args.batch, args.rounds
        for trial in range(3):
            c0, t0 = cpu(r), time.time()
            for _ in range(rounds):
                p = r.pipeline(transaction=False)
                for j in range(n):
                    p.evalsha(one, 4, "{R}run", f"{{R}}ti:{j}", f"{{R}}lease:{j}", "{R}leases",
                              "w", "123")
                p.execute()
            c1, t1 = cpu(r), time.time()
            print(f"round {trial + 1}: one call per instance: {(c1 - c0) / (rounds * n) * 1e6:.1f} us "
                  f"of Redis CPU per instance, {rounds * n / (t1 - t0):,.0f}/s")
            c0, t0 = cpu(r), time.time()
            for _ in range(rounds):
                keys = ["{R}run", "{R}leases"]
                for j in range(n):
                    keys += [f"{{R}}ti:{j}", f"{{R}}lease:{j}"]
                r.evalsha(many, len(keys), *keys, "w", "123")
            c1, t1 = cpu(r), time.time()
            print(f"round {trial + 1}: one call per batch:    {(c1 - c0) / (rounds * n) * 1e6:.1f} us "
                  f"of Redis CPU per instance, {rounds * n / (t1 - t0):,.0f}/s")
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
