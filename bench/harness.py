#!/usr/bin/env python3
"""harness.py - body of bench/run: sluice's services, its peers and the baselines on one table.

bench/run starts Kafka and Redis (scripts/testenv) and runs this with SLUICE_KAFKA_BROKERS,
SLUICE_REDIS_URL and SLUICE_TEST_TMP set. Standard library only (peers live in their venv).
Exit status: 0 every target met (smoke: the harness worked), 1 a target missed (smoke: a
sluice workload or a baseline gave no figure), 2 the harness itself could not run.
"""
import argparse
import datetime
import hashlib
import heapq
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
PEERS = ("dask", "celery", "prefect")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "REJECTED")

# Workload id -> (name, default size, default sluice timeout in s)
WORKLOADS = {
    1: ("fan-out noop", 100000, 300),
    2: ("chain noop", 200, 120),
    3: ("commands /bin/true", 10000, 300),
    4: ("diamond with sleeps", 100, 120),
    5: ("1M noop: memory", 1000000, 900),
    6: ("autoscaler reaction", 10000, 120),
}
SMOKE_SIZES = {1: 200, 2: 10, 3: 40, 4: 10, 5: 500, 6: 40}
PEER_WORKLOAD = {1: "fanout", 2: "chain", 3: "commands", 4: "diamond"}
# Workload 4's peer bodies: "commands" (examples/diamond.yaml's own sh argv, what sluice runs:
# the compared figure) and "python" (the seed's in-process time.sleep functions: shown too).
DIAMOND_BODIES = ("commands", "python")
DIAMOND_BODY_TEXT = {"commands": "same commands", "python": "Python bodies"}


def diamond_schedules(ti, slots):
    """What the diamond's own task durations (started..finished) would take on `slots` slots
    with no overhead at all, scheduled greedily (a free slot takes the oldest ready task): with
    the node barrier (every inc and dec before any add) and element-wise (add[i] ready once
    inc[i] and dec[i] are done). The run's wall time minus these is the orchestration's cost;
    their difference is the barrier's."""
    dur = {}
    for i in ti:
        task, idx = i["key"].split(":ti:", 1)[1].rsplit(":", 1)
        dur[(task, int(idx))] = (int(i["finished_ms"]) - int(i["started_ms"])) / 1000.0
    n = 1 + max((k[1] for k in dur if k[0] == "inc"), default=-1)
    if n == 0 or any((t, j) not in dur for t in ("inc", "dec", "add") for j in range(n)):
        return {}
    first = [(t, j) for j in range(n) for t in ("inc", "dec")]

    def makespan(elementwise):
        free = [0.0] * slots
        heapq.heapify(free)
        finish, ready_at = {}, {}  # inc/dec end times; add j -> when its pair was done
        queue = list(first)
        if not elementwise:
            queue += [("add", j) for j in range(n)]
        end_all = 0.0
        while queue or ready_at:
            t = heapq.heappop(free)
            if not elementwise and queue and queue[0][0] == "add":
                t = max(t, max(finish.values()))  # the barrier
            # the oldest ready add goes before the rest of the inc/dec queue
            ready = [j for j, r in ready_at.items() if r <= t]
            if ready or (not queue and ready_at):
                j = min(ready or ready_at, key=ready_at.get)
                key, t = ("add", j), max(t, ready_at.pop(j))
            else:
                key = queue.pop(0)
            end = t + dur[key]
            heapq.heappush(free, end)
            end_all = max(end_all, end)
            if key[0] != "add":
                finish[key] = end
                j = key[1]
                if elementwise and ("inc", j) in finish and ("dec", j) in finish:
                    ready_at[j] = max(finish[("inc", j)], finish[("dec", j)])
        return round(end_all + dur.get(("total", -1), 0.0), 4)

    return {"sim_barrier_s": makespan(False), "sim_elementwise_s": makespan(True)}


class HarnessError(Exception):
    pass


def log(msg):
    sys.stderr.write(f"bench: {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- Redis (RESP over a socket)

class Redis:
    """The few commands the harness needs, with pipelining; replies as bytes/int/list."""

    def __init__(self, url):
        m = re.match(r"redis://(?:[^@/]*@)?([^:/]+):(\d+)(?:/(\d+))?$", url)
        if not m:
            raise HarnessError(f"cannot parse SLUICE_REDIS_URL {url!r}")
        self.host, self.port = m.group(1), int(m.group(2))
        self.sock = socket.create_connection((self.host, self.port), timeout=30)
        self.f = self.sock.makefile("rb")
        if m.group(3) and m.group(3) != "0":
            self.cmd("SELECT", m.group(3))

    @staticmethod
    def _enc(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _read(self):
        line = self.f.readline()
        if not line:
            raise HarnessError("Redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest
        if t == b"-":
            raise HarnessError(f"Redis error: {rest.decode(errors='replace')}")
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise HarnessError(f"unexpected Redis reply {line[:40]!r}")

    def cmd(self, *args):
        self.sock.sendall(self._enc(args))
        return self._read()

    def pipeline(self, cmds, chunk=1000):
        out = []
        for i in range(0, len(cmds), chunk):
            part = cmds[i:i + chunk]
            self.sock.sendall(b"".join(self._enc(c) for c in part))
            out.extend(self._read() for _ in part)
        return out

    def info(self, section):
        text = self.cmd("INFO", section).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- processes

class Service:
    """A child in its own session, output to a log file; stop() = SIGTERM, then SIGKILL."""

    def __init__(self, name, argv, logdir, env=None):
        self.name = name
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                                     start_new_session=True, env=env, cwd=ROOT)

    def alive(self):
        return self.proc.poll() is None

    def vm(self, field):
        """A /proc/<pid>/status field in kB (VmHWM, VmRSS), None once the process is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} still running after {timeout}s: SIGKILL")
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.logf.close()


def run_capture(argv, timeout, env=None, cwd=None):
    """Runs argv in its own session; returns (rc, stdout, stderr), rc None on timeout (group killed)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, env=env, cwd=cwd)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                out, err = p.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            out, err = b"", b""
        return None, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")


def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def tail(text, n=3):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-300:]


def first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not found"


# ---------------------------------------------------------------- the harness

class Bench:
    def __init__(self, args):
        self.a = args
        self.tmp = os.environ.get("SLUICE_TEST_TMP") or "/tmp"
        self.logdir = os.path.join(self.tmp, "bench-logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.bin = os.path.join(args.build_dir, "bin")
        self.redis = Redis(os.environ.get("SLUICE_REDIS_URL", "redis://127.0.0.1:6379/0"))
        self.planner = None
        self.workers = []
        self.autoscaler = None
        self.celery_redis_dir = None
        self.results = {}   # workload id -> row dict
        self.baselines = {}
        self.peer_info = {}
        self.slots_total = args.workers * args.slots
        self.loadavg_start = os.getloadavg()
        # experiments with configuration levers: services and CLI inherit these
        os.environ.update(args.service_env)
        if args.redis_appendfsync:
            self.redis.cmd("CONFIG", "SET", "appendfsync", args.redis_appendfsync)

    # ---- sizes and timeouts

    def size(self, w):
        if w in self.a.size:
            return self.a.size[w]
        if self.a.smoke:
            return SMOKE_SIZES[w]
        base = WORKLOADS[w][1]
        minimum = {2: 10, 4: 10}.get(w, 10)
        return max(minimum, int(round(base * self.a.scale)))

    def timeout(self, w):
        if self.a.timeout:
            return self.a.timeout
        return 90 if self.a.smoke else WORKLOADS[w][2]

    def diamond_sleep(self):
        return 0.02 if self.a.smoke else self.a.diamond_sleep

    def diamond_repeat(self):
        # one diamond run is noisy (random sleeps: +-0.06 s at n=100): medians of several
        if self.a.diamond_repeat:
            return self.a.diamond_repeat
        return 1 if self.a.smoke else 3

    # ---- sluice services

    def start_planner(self):
        self.planner = Service("planner", [os.path.join(self.bin, "sluice-planner"), "--flows-dir",
                                           os.path.join(BENCH, "flows"), "--log-level", self.a.service_log_level], self.logdir)

    def start_workers(self):
        for i in range(self.a.workers):
            self.workers.append(Service(f"worker{i}", [
                os.path.join(self.bin, "sluice-worker"), "--queue", "default", "--slots", str(self.a.slots),
                "--log-level", self.a.service_log_level, "--work-dir", os.path.join(self.tmp, "work")], self.logdir))

    def stop_services(self):
        if self.autoscaler:
            self.autoscaler.stop(timeout=45)
            self.autoscaler = None
        for w in self.workers:
            w.stop()
        self.workers = []
        if self.planner:
            self.planner.stop()
            self.planner = None
        if self.a.keep_logs:
            os.makedirs(self.a.keep_logs, exist_ok=True)
            subprocess.run(["cp", "-r", self.logdir, self.a.keep_logs], check=False)

    def check_alive(self):
        for s in [self.planner] + self.workers:
            if s and not s.alive():
                raise HarnessError(f"{s.name} exited with status {s.proc.returncode} (log: {s.log_path})")

    def submit(self, flow_path, params):
        argv = [os.path.join(self.bin, "sluice"), "submit", flow_path]
        for k, v in params.items():
            argv += ["-p", f"{k}={v}"]
        t0 = time.time()
        rc, out, err = run_capture(argv, timeout=60)
        if rc != 0 or not out.strip():
            raise HarnessError(f"sluice submit {flow_path} failed (exit {rc}): {tail(err)}")
        return out.strip().splitlines()[0].strip(), t0

    def run_hash(self, run):
        vals = self.redis.cmd("HGETALL", f"sluice:{{{run}}}:run") or []
        return {vals[i].decode(): vals[i + 1].decode() for i in range(0, len(vals), 2)}

    def wait_run(self, run, timeout, poll=0.02):
        """Waits for the run to end; returns its hash, or None after timeout (the run is cancelled)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.redis.cmd("HGET", f"sluice:{{{run}}}:run", "state")
            if state and state.decode() in TERMINAL:
                return self.run_hash(run)
            time.sleep(poll)
            if int(time.time() * 10) % 20 == 0:
                self.check_alive()
        run_capture([os.path.join(self.bin, "sluice"), "cancel", run], timeout=30)
        return None

    def instances(self, run, fields):
        """Every task instance of run: list of dicts of the asked fields (SCAN, pipelined HMGET)."""
        keys, cursor = [], b"0"
        while True:
            cursor, batch = self.redis.cmd("SCAN", cursor, "MATCH", f"sluice:{{{run}}}:ti:*", "COUNT", 2000)
            keys.extend(batch)
            if cursor == b"0":
                break
        replies = self.redis.pipeline([["HMGET", k] + list(fields) for k in keys])
        out = []
        for k, r in zip(keys, replies):
            d = {"key": k.decode()}
            for f, v in zip(fields, r):
                d[f] = v.decode() if v is not None else None
            out.append(d)
        return out

    def warm_up(self):
        """An untimed run of each kind so consumer groups have joined and topics exist."""
        deadline = 120
        for flow, n in (("fanout.yaml", 16), ("commands.yaml", 4)):
            run, _ = self.submit(os.path.join(BENCH, "flows", flow), {"n": n})
            h = self.wait_run(run, deadline)
            if not h or h.get("state") != "SUCCEEDED":
                raise HarnessError(f"warm-up run {run} of {flow} did not succeed within {deadline}s "
                                   f"(state {h and h.get('state')}; logs in {self.logdir})")

    def sluice_run(self, w, flow_path, params):
        """Submit, wait; returns (row fields) with seconds measured submit -> run ended_ms."""
        run, t0 = self.submit(flow_path, params)
        h = self.wait_run(run, self.timeout(w))
        if h is None:
            return {"run": run, "error": f"timed out after {self.timeout(w)} s"}
        if h.get("state") != "SUCCEEDED":
            return {"run": run, "error": f"run {h.get('state')}: {h.get('error', '')}"[:200]}
        ended = int(h["ended_ms"]) / 1000.0
        return {"run": run, "t0": t0, "seconds": ended - t0, "hash": h}

    # ---- workloads (sluice side)

    def w1(self):
        n = self.size(1)
        r = self.sluice_run(1, os.path.join(BENCH, "flows", "fanout.yaml"), {"n": n})
        if "error" in r:
            return r
        out = {"run": r["run"], "seconds": r["seconds"], "rate": n / r["seconds"]}
        # When instances were written, started and finished, from every 100th one (s after
        # submit): how much of the run the planner spent writing and how much applying.
        idx = list(range(0, n, 100)) + [n - 1]
        reps = self.redis.pipeline([["HMGET", f"sluice:{{{r['run']}}}:ti:t:{i}", "queued_ms",
                                     "started_ms", "finished_ms"] for i in idx])
        t0_ms = r["t0"] * 1000.0
        cols = [[(int(x[j]) - t0_ms) / 1000.0 for x in reps if x[j] is not None] for j in range(3)]
        if all(cols):
            # ended - last_finished: applying results the planner could not take while it
            # wrote the node's instances (it writes them all first)
            out["timeline_s"] = {"first_written": min(cols[0]), "last_written": max(cols[0]),
                                 "first_started": min(cols[1]), "last_finished": max(cols[2]),
                                 "ended": r["seconds"]}
        return out

    def chain_flow(self, n):
        if n == 200:
            return os.path.join(BENCH, "flows", "chain.yaml")
        sys.path.insert(0, os.path.join(BENCH, "flows"))
        import gen_chain
        path = os.path.join(self.tmp, f"chain{n}.yaml")
        with open(path, "w") as f:
            f.write(gen_chain.chain_yaml(n))
        return path

    def w2(self):
        n = self.size(2)
        r = self.sluice_run(2, self.chain_flow(n), {})
        if "error" in r:
            return r
        keys = [f"sluice:{{{r['run']}}}:ti:t{i:04d}:-1" for i in range(n)]
        reps = self.redis.pipeline([["HMGET", k, "started_ms", "finished_ms", "queued_ms"] for k in keys])
        fin = [int(x[1]) for x in reps if x[1] is not None]
        first_start = int(reps[0][0]) if reps and reps[0][0] is not None else None
        if len(fin) != n:
            return {"run": r["run"], "error": f"only {len(fin)}/{n} instances have finished_ms"}
        hops = [b - a for a, b in zip(fin, fin[1:])]
        # Where a hop goes, from the instances' own ms timestamps (means: sub-ms over n): the
        # planner writes queued_ms with the instance, the worker started_ms with its lease
        # and finished_ms when the task ended.
        # A task a worker ran carried with its upstream (ADR 31) started before the planner
        # recorded it (queued_ms): its hop crossed no broker. The parts are of the others.
        parts = None
        if all(x[0] is not None and x[2] is not None for x in reps):
            q = [int(x[2]) for x in reps]
            st = [int(x[0]) for x in reps]
            sent = [i for i in range(1, n) if q[i] < st[i]]
            carried = sum(1 for i in range(1, n) if st[i] < q[i])
            parts = {"carried": carried, "dispatched": len(sent),
                     "same_ms": n - 1 - carried - len(sent)}
            if sent:
                parts.update({
                    "queued_to_started": statistics.mean(st[i] - q[i] for i in sent),
                    "started_to_finished": statistics.mean(fin[i] - st[i] for i in sent),
                    "finished_to_next_queued": statistics.mean(q[i] - fin[i - 1] for i in sent),
                    "dispatched_median_hop_ms": statistics.median(fin[i] - fin[i - 1] for i in sent)})
        # span: first start to last finish, i.e. without the CLI's start and the run's creation
        return {"run": r["run"], "seconds": r["seconds"], "per_hop_ms": r["seconds"] * 1000.0 / n,
                "span_per_hop_ms": (fin[-1] - first_start) / n if first_start else None,
                "median_hop_ms": statistics.median(hops), "p90_hop_ms": sorted(hops)[int(0.9 * (len(hops) - 1))],
                "hop_parts_ms": parts}

    def w3(self):
        n = self.size(3)
        r = self.sluice_run(3, os.path.join(BENCH, "flows", "commands.yaml"), {"n": n})
        if "error" in r:
            return r
        return {"run": r["run"], "seconds": r["seconds"], "rate": n / r["seconds"]}

    def diamond_ideal(self, n, sleep):
        # expected total sleep of 3n tasks of random()*sleep, over the slots, plus the
        # critical path bound inc/dec -> add (two sleeps of at most `sleep`; total is a builtin)
        return 3 * n * sleep / 2 / self.slots_total + 2 * sleep

    def w4(self):
        """diamond_repeat() runs; the figure is their median, every run is kept in "runs"."""
        n, sleep = self.size(4), self.diamond_sleep()
        runs = []
        for i in range(self.diamond_repeat()):
            r = self.w4_once(n, sleep)
            runs.append(r)
            log(f"  sluice diamond run {i + 1}: {r.get('seconds', r.get('error'))}")
        out = {"runs": runs, "repeat": len(runs), "ideal_s": self.diamond_ideal(n, sleep)}
        bad = [r for r in runs if "error" in r]
        if bad:
            out["error"] = bad[0]["error"] + (f" ({len(bad)} of {len(runs)} runs)" if len(runs) > 1 else "")
            return out
        out["seconds"] = statistics.median(r["seconds"] for r in runs)
        # a worker that ran no task of a run (dead, or never given a partition) shows in the table
        out["runs_with_idle_worker"] = sum(1 for r in runs if len(r.get("per_worker", {})) < self.a.workers)
        for k in ("slot_busy_s", "slot_utilisation", "median_queued_to_started_ms"):
            vals = [r[k] for r in runs if r.get(k) is not None]
            if vals:
                out[k] = statistics.median(vals)
        return out

    def w4_once(self, n, sleep):
        r = self.sluice_run(4, os.path.join(ROOT, "examples", "diamond.yaml"), {"n": n, "sleep": sleep})
        if "error" in r:
            return r
        out = {"run": r["run"], "seconds": r["seconds"]}
        # where the wall time went: slots busy (started..finished) and dispatch waits (queued..started)
        ti = [i for i in self.instances(r["run"], ["queued_ms", "started_ms", "finished_ms", "worker"])
              if i["started_ms"] and i["finished_ms"]]
        if ti:
            busy = sum(int(i["finished_ms"]) - int(i["started_ms"]) for i in ti) / 1000.0
            out["slot_busy_s"] = busy
            out["slot_utilisation"] = busy / (r["seconds"] * self.slots_total)
            waits = [int(i["started_ms"]) - int(i["queued_ms"]) for i in ti if i["queued_ms"]]
            if waits:
                out["median_queued_to_started_ms"] = statistics.median(waits)
            # tasks and busy seconds per worker, the most instances running at once, and the
            # node barrier: last inc/dec finished -> first add started
            per = {}
            for i in ti:
                w = per.setdefault(i["worker"] or "?", {"tasks": 0, "busy_s": 0.0})
                w["tasks"] += 1
                w["busy_s"] = round(w["busy_s"] + (int(i["finished_ms"]) - int(i["started_ms"])) / 1000.0, 3)
            out["per_worker"] = per
            edges = sorted([(int(i["started_ms"]), 1) for i in ti] + [(int(i["finished_ms"]), -1) for i in ti])
            running = peak = 0
            for _, d in edges:
                running += d
                peak = max(peak, running)
            out["max_running"] = peak
            task = lambda i: i["key"].split(":ti:", 1)[1].split(":", 1)[0]  # noqa: E731
            first = [int(i["finished_ms"]) for i in ti if task(i) in ("inc", "dec")]
            adds = [int(i["started_ms"]) for i in ti if task(i) == "add"]
            if first and adds:
                out["barrier_gap_ms"] = min(adds) - max(first)
            out.update(diamond_schedules(ti, self.slots_total))
            if self.a.keep_logs:
                os.makedirs(self.a.keep_logs, exist_ok=True)
                with open(os.path.join(self.a.keep_logs, f"diamond-{r['run']}.json"), "w") as f:
                    json.dump({"t0_ms": int(r["t0"] * 1000), "instances": ti}, f)
            # the wall time outside the tasks: submit -> first start, last finish -> run ended
            out["submit_to_first_start_ms"] = min(int(i["started_ms"]) for i in ti) - int(r["t0"] * 1000)
            out["last_finish_to_end_ms"] = int(r["hash"]["ended_ms"]) - max(int(i["finished_ms"]) for i in ti)
            # hand-offs on a full worker: a slot frees (running falls below its slots) -> the
            # next task starts there; their median, and their sum over every slot
            gaps = []
            for w in per:
                ev = sorted([(int(i["finished_ms"]), 0) for i in ti if (i["worker"] or "?") == w] +
                            [(int(i["started_ms"]), 1) for i in ti if (i["worker"] or "?") == w])
                running, freed = 0, []
                for t, kind in ev:
                    if kind == 0:
                        if running == self.a.slots:
                            freed.append(t)
                        running -= 1
                    else:
                        if freed:
                            gaps.append(t - freed.pop(0))
                        running += 1
            if gaps:
                out["handoff_median_ms"] = statistics.median(gaps)
                out["handoff_sum_s"] = sum(gaps) / 1000.0
        return out

    def w5(self):
        n = self.size(5)
        # a fresh planner so its VmHWM is this run's peak
        self.planner.stop()
        self.start_planner()
        time.sleep(1.0)
        before = int(self.redis.info("memory")["used_memory"])
        r = self.sluice_run(5, os.path.join(BENCH, "flows", "fanout.yaml"), {"n": n})
        hwm = self.planner.vm("VmHWM")
        after = int(self.redis.info("memory")["used_memory"])
        worker_hwm = max((w.vm("VmHWM") or 0) for w in self.workers)
        base = {"planner_hwm_mb": hwm / 1024.0 if hwm else None, "worker_hwm_mb": worker_hwm / 1024.0,
                "redis_bytes_per_instance": (after - before) / n, "redis_delta_mb": (after - before) / 2**20}
        if "error" in r:
            base.update(r)
            return base
        base.update({"run": r["run"], "seconds": r["seconds"], "rate": n / r["seconds"]})
        return base

    def w6(self):
        n = self.size(6)
        pools = os.path.join(self.tmp, "bench-pools.yaml")
        with open(pools, "w") as f:
            f.write("# bench workload 6: a pool with no worker until there is work.\n"
                    "pools:\n  bench-auto:\n    queue: bench-auto\n    backend: process\n    min: 0\n"
                    f"    max: {self.a.workers}\n    target_per_worker: {self.a.slots}\n    slots: {self.a.slots}\n"
                    f"    scale_up_step: {self.a.workers}\n    scale_up_cooldown: 0s\n    scale_down_window: 5s\n"
                    "    idle_to_zero: 5s\n")
        alog = os.path.join(self.logdir, "autoscaled")
        os.makedirs(alog, exist_ok=True)
        self.autoscaler = Service("autoscaler", [
            os.path.join(self.bin, "sluice-autoscaler"), "--pools", pools, "--worker-bin",
            os.path.join(self.bin, "sluice-worker"), "--log-dir", alog, "--drain-timeout", "10s",
            "--log-level", "info"], self.logdir)
        try:
            # the autoscaler creates the queue's topic at start and then writes its pool view
            self.redis.cmd("DEL", "sluice:pool:bench-auto")
            deadline = time.time() + 60
            while time.time() < deadline and self.autoscaler.alive():
                if self.redis.cmd("EXISTS", "sluice:pool:bench-auto"):
                    break
                time.sleep(0.1)
            if not self.autoscaler.alive():
                return {"error": f"autoscaler exited (log {self.autoscaler.log_path})"}
            # The first start is what counts: poll the node's done count (a noop finishes within
            # milliseconds of starting), then take the earliest started_ms; the rest is cancelled.
            run, t0 = self.submit(os.path.join(BENCH, "flows", "autoscale.yaml"), {"n": n})
            limit = self.timeout(6)
            deadline = t0 + limit
            while time.time() < deadline:
                done = self.redis.cmd("HGET", f"sluice:{{{run}}}:node:t", "done")
                if done and int(done) > 0:
                    break
                time.sleep(0.02)
            started = [int(i["started_ms"]) for i in self.instances(run, ["started_ms"]) if i["started_ms"]]
            run_capture([os.path.join(self.bin, "sluice"), "cancel", run], timeout=30)
            if not started:
                return {"run": run, "error": f"timed out after {limit} s (no task started)"}
            return {"run": run, "first_running_s": min(started) / 1000.0 - t0, "tasks_started": len(started)}
        finally:
            self.autoscaler.stop(timeout=45)
            self.autoscaler = None

    # ---- baselines

    def baseline_spawn(self):
        exe = self.a.spawn_loop
        n = self.size(3)
        res = {}
        for jobs in (1, self.slots_total):
            rc, out, err = run_capture([exe, str(n), str(jobs), "/bin/true"], timeout=self.timeout(3))
            j = last_json_line(out)
            if rc != 0 or not j:
                res[f"j{jobs}"] = {"error": f"exit {rc}: {tail(err)}" if rc is not None else "timed out"}
            else:
                res[f"j{jobs}"] = j
        self.baselines["spawn"] = res

    def baseline_redis(self):
        n = 20000 if self.a.smoke else 200000
        rc, out, err = run_capture(["redis-benchmark", "-h", self.redis.host, "-p", str(self.redis.port),
                                    "-P", "16", "-t", "set,get", "-q", "-n", str(n), "-r", "100000"], timeout=120)
        figures = {}
        for m in re.finditer(r"(SET|GET): ([0-9.]+) requests per second", out.replace("\r", "\n")):
            figures[m.group(1)] = float(m.group(2))
        if rc != 0 or not figures:
            self.baselines["redis"] = {"error": f"exit {rc}: {tail(out + err)}"}
        else:
            self.baselines["redis"] = {"n": n, "pipeline": 16, "rps": figures}

    def baseline_hop(self):
        """The floor of one chain hop on this machine, measured with nothing of sluice in the way:
        a message produced until a waiting consumer has it (kafka_trip, sluice's producer and
        consumer settings) and one durable Redis write answered to a single client. A hop of the
        chain's noop tasks needs at least two trips (the dispatch and the result cross the
        broker) and one write (the result and the next task's start, written together: ADR 30;
        a noop takes no lease, ADR 25)."""
        res = {}
        if self.a.kafka_trip:
            n = 50 if self.a.smoke else 500
            rc, out, err = run_capture([self.a.kafka_trip, os.environ["SLUICE_KAFKA_BROKERS"],
                                        "sluice.bench.trip", str(n)], timeout=120)
            j = last_json_line(out)
            res["kafka_trip"] = j if rc == 0 and j else {"error": f"exit {rc}: {tail(err)}"}
        n = 500 if self.a.smoke else 3000
        rc, out, err = run_capture(["redis-benchmark", "-h", self.redis.host, "-p", str(self.redis.port),
                                    "-c", "1", "-t", "set", "-q", "-n", str(n)], timeout=120)
        m = re.search(r"SET: ([0-9.]+) requests per second, p50=([0-9.]+) msec", out.replace("\r", "\n"))
        res["redis_write"] = ({"n": n, "clients": 1, "rps": float(m.group(1)), "p50_ms": float(m.group(2))}
                              if rc == 0 and m else {"error": f"exit {rc}: {tail(out + err)}"})
        trip, write = res.get("kafka_trip", {}), res["redis_write"]
        if "median_ms" in trip and "p50_ms" in write:
            res["hop_floor_ms"] = 2 * trip["median_ms"] + write["p50_ms"]
        self.baselines["hop"] = res

    # ---- peers

    def venv_python(self):
        return os.path.join(self.a.venv, "bin", "python")

    def ensure_venv(self):
        """Creates/updates the peers' venv from bench/peers/requirements.txt; '' or why not."""
        req = os.path.join(BENCH, "peers", "requirements.txt")
        with open(req, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        stamp = os.path.join(self.a.venv, ".bench-requirements.sha256")
        if os.path.exists(stamp) and open(stamp).read().strip() == digest and os.path.exists(self.venv_python()):
            return ""
        if not self.a.install:
            return "peers venv not installed (bench/run installs it; smoke does not)"
        log(f"installing the peers into {self.a.venv} (pip, PyPI)")
        rc, out, err = run_capture([sys.executable, "-m", "venv", self.a.venv], timeout=300)
        if rc != 0:
            return f"python3 -m venv failed: {tail(err)}"
        rc, out, err = run_capture([self.venv_python(), "-m", "pip", "install", "-q", "-r", req], timeout=1200)
        if rc != 0:
            return f"pip install failed: {tail(err, 2)}"
        with open(stamp, "w") as f:
            f.write(digest + "\n")
        return ""

    def peer_versions(self):
        code = ("import importlib.metadata as m, json, sys\nv={}\n"
                "for p in ('dask','distributed','celery','redis','prefect','prefect-dask','fastapi'):\n"
                "  try: v[p]=m.version(p)\n  except Exception: v[p]=None\n"
                "v['python']=sys.version.split()[0]\nprint(json.dumps(v))")
        rc, out, _ = run_capture([self.venv_python(), "-c", code], timeout=60)
        return last_json_line(out) or {} if rc == 0 else {}

    def start_celery_redis(self):
        d = os.path.join(self.tmp, "celery-redis")
        os.makedirs(d, exist_ok=True)
        port = subprocess.run([os.path.join(ROOT, "scripts", "lib", "freeport"), "1"], capture_output=True,
                              text=True, check=True).stdout.strip()
        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
                        "--dir", d, "--daemonize", "yes", "--pidfile", os.path.join(d, "redis.pid"),
                        "--logfile", os.path.join(d, "redis.log")], check=True, capture_output=True)
        for _ in range(100):
            try:
                r = Redis(f"redis://127.0.0.1:{port}/0")
                if r.cmd("PING") == b"PONG":
                    r.close()
                    self.celery_redis_dir = d
                    return int(port)
            except (OSError, HarnessError):
                pass
            time.sleep(0.1)
        raise HarnessError("the Celery Redis did not start")

    def stop_celery_redis(self):
        if not self.celery_redis_dir:
            return
        try:
            pid = int(open(os.path.join(self.celery_redis_dir, "redis.pid")).read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"redis-server" in f.read():
                    os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass
        self.celery_redis_dir = None

    def run_peer(self, peer, w, celery_port):
        n = self.size(w)
        argv = [self.venv_python(), os.path.join(BENCH, "peers", f"{peer}_bench.py"), "--workload", PEER_WORKLOAD[w],
                "--n", str(n), "--slots", str(self.slots_total), "--procs", str(self.a.workers)]
        runs = 1
        if w == 4:
            # both body kinds, interleaved, diamond_repeat() timed runs of each (plus an untimed
            # warm-up of each): "commands" runs examples/diamond.yaml's own argv, "python" the
            # seed's time.sleep functions
            argv += ["--sleep", str(self.diamond_sleep()), "--repeat", str(self.diamond_repeat()),
                     "--bodies", ",".join(DIAMOND_BODIES), "--diamond-yaml",
                     os.path.join(ROOT, "examples", "diamond.yaml")]
            runs = self.diamond_repeat() * len(DIAMOND_BODIES) + 1
        if peer == "celery":
            argv += ["--redis-port", str(celery_port)]
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("SLUICE_") or k.startswith("PREFECT_"):
                del env[k]
        env.update({"PREFECT_HOME": os.path.join(self.tmp, "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    # a loaded 2-core machine needs more than the default 20 s to start the server
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                    "PREFECT_LOGGING_LEVEL": "WARNING", "DASK_DISTRIBUTED__WORKER__DAEMON": "True",
                    "PYTHONUNBUFFERED": "1"})
        limit = self.a.peer_timeout or (60 if self.a.smoke else 180)
        t = time.time()
        # the limit is per timed run; the process gets it once per run it makes
        rc, out, err = run_capture(argv, timeout=limit * runs + 60, env=env, cwd=os.path.join(BENCH, "peers"))
        with open(os.path.join(self.logdir, f"peer-{peer}-w{w}.log"), "w") as f:
            f.write(out + "\n--- stderr ---\n" + err)
        j = last_json_line(out)
        if rc is None or (j and j.get("seconds", 0) > limit):
            return {"error": f"timed out after {limit} s" if rc is None or not j else
                    f"took {j['seconds']:.0f} s (over the {limit} s limit)", **({"seconds": j["seconds"]} if j else {})}
        if rc != 0 or not j:
            return {"error": f"failed (exit {rc}): {tail(err, 1)}"}
        j["wall_s"] = time.time() - t
        if w == 4:
            # per body kind: any timed run over the limit makes that kind's figure an error
            for kind, b in (j.get("bodies") or {}).items():
                over = [x for x in b.get("runs", []) if isinstance(x, (int, float)) and x > limit]
                if over and "error" not in b:
                    b["error"] = f"took {max(over):.0f} s (over the {limit} s limit)"
                    b.pop("seconds", None)
            first = (j.get("bodies") or {}).get(DIAMOND_BODIES[0], {})
            if "seconds" not in first:
                j.pop("seconds", None)
                j["error"] = f"{DIAMOND_BODIES[0]}: {first.get('error', 'no figure')}"
        return j

    # ---- the whole thing

    def run(self):
        todo = self.a.workloads
        log(f"workloads {todo}, sizes {[self.size(w) for w in todo]}, {self.a.workers} workers x "
            f"{self.a.slots} slots, peers {self.a.peers or 'none'}")
        self.baseline_spawn()
        self.baseline_redis()
        log(f"baselines: {json.dumps(self.baselines)}")
        self.start_planner()
        self.start_workers()
        try:
            self.warm_up()
            for w in todo:
                if w == 2:
                    self.baseline_hop()  # right before the chain: the broker as warm as for it
                    log(f"hop floor: {json.dumps(self.baselines['hop'])}")
                log(f"workload {w} ({WORKLOADS[w][0]}), size {self.size(w)}: sluice")
                try:
                    row = getattr(self, f"w{w}")()
                except HarnessError as e:
                    row = {"error": str(e)}
                row["size"] = self.size(w)
                self.results[w] = {"sluice": row}
                log(f"  sluice: {json.dumps(row)}")
                self.check_alive()
        finally:
            self.stop_services()
        peers = [p for p in self.a.peers if p]
        why = self.ensure_venv() if peers else "not run (--peers none)"
        if peers and not why:
            self.peer_info = self.peer_versions()
        celery_port = 0
        try:
            for w in todo:
                for p in PEERS:
                    if w not in PEER_WORKLOAD:
                        self.results[w][p] = {"na": "sluice-only target"}
                    elif p not in peers:
                        self.results[w][p] = {"na": "not run (--peers)"}
                    elif why:
                        self.results[w][p] = {"error": why}
                    else:
                        if p == "celery" and not celery_port:
                            celery_port = self.start_celery_redis()
                        log(f"workload {w} ({WORKLOADS[w][0]}), size {self.size(w)}: {p}")
                        self.results[w][p] = self.run_peer(p, w, celery_port)
                        log(f"  {p}: {json.dumps(self.results[w][p])}")
        finally:
            self.stop_celery_redis()


# ---------------------------------------------------------------- judging and the table

def fmt(x, unit="", prec=None):
    if x is None:
        return "-"
    if prec is None:
        prec = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    return f"{x:,.{prec}f}{unit}"


def cell(res, w):
    """The figure of one system on workload w, as text."""
    if res is None:
        return "-"
    if "na" in res:
        return "n/a"
    if w == 4 and "bodies" in res:
        return diamond_peer_cell(res)
    if "error" in res:
        return res["error"]
    if w in (1, 3):
        return fmt(res.get("rate"), "/s")
    if w == 2:
        if "median_hop_ms" in res:
            return (f"{fmt(res['median_hop_ms'], ' ms')} median hop ({fmt(res['per_hop_ms'], ' ms')} total/n, "
                    f"{fmt(res.get('span_per_hop_ms'), ' ms')} first start to last finish /n)")
        return f"{fmt(res.get('per_hop_ms'), ' ms')}/hop (total/n)"
    if w == 4:
        n, idle = res.get("repeat", 1), res.get("runs_with_idle_worker", 0)
        return (fmt(res.get("seconds"), " s") + (f" (median of {n})" if n > 1 else "")
                + (f" ({idle} of {n} runs had a worker that ran no task)" if idle else ""))
    if w == 5:
        s = (f"planner peak {fmt(res.get('planner_hwm_mb'), ' MB')}, Redis "
             f"{fmt(res.get('redis_bytes_per_instance'), ' B')}/instance")
        return s + (f", {res['error']}" if "error" in res else f", {fmt(res.get('rate'), '/s')}")
    if w == 6:
        return f"first task running after {fmt(res.get('first_running_s'), ' s')}"
    return "?"


def diamond_peer_cell(res):
    """A peer's workload 4: the same-commands median first (compared), the Python bodies' after."""
    parts = []
    for kind in DIAMOND_BODIES:
        b = res["bodies"].get(kind)
        if b is None:
            continue
        n = len(b.get("runs", []))
        if "seconds" in b:
            parts.append(f"{fmt(b['seconds'], ' s')} {DIAMOND_BODY_TEXT[kind]}" + (f" (median of {n})" if n > 1 else ""))
        else:
            parts.append(f"{DIAMOND_BODY_TEXT[kind]}: {str(b.get('error', 'no figure'))[:120]}")
    return parts[0] + (" [" + "; ".join(parts[1:]) + "]" if parts[1:] else "")


def diamond_notes(bench, args):
    """Every individual workload-4 figure, one line per system, so the medians hide nothing."""
    if 4 not in args.workloads or 4 not in bench.results:
        return ""
    row = bench.results[4]

    def figs(xs):
        return ", ".join(f"{x:.3f}" if isinstance(x, (int, float)) else str(x)[:80] for x in xs) or "-"

    s = row["sluice"]
    lines = [f"Workload 4, every timed run in s (n={s['size']}, sleep={bench.diamond_sleep()}; sluice runs "
             "examples/diamond.yaml, whose tasks are `sh -c` commands; the ratio and the pass/fail use the "
             "median of Dask's same-commands runs):",
             "- sluice: " + figs([r.get("seconds", r.get("error")) for r in s.get("runs", [])]),
             "- sluice's own task durations scheduled with no overhead on the same slots, with the node "
             "barrier: " + figs([r.get("sim_barrier_s", "-") for r in s.get("runs", [])]) +
             "; element-wise: " + figs([r.get("sim_elementwise_s", "-") for r in s.get("runs", [])]),
             "- tasks per worker: " + "; ".join(
                 "/".join(str(w["tasks"]) for w in r.get("per_worker", {}).values()) for r in s.get("runs", []))]
    for p in PEERS:
        res = row.get(p) or {}
        if "bodies" in res:
            for kind in DIAMOND_BODIES:
                if kind in res["bodies"]:
                    lines.append(f"- {p}, {DIAMOND_BODY_TEXT[kind]}: {figs(res['bodies'][kind].get('runs', []))}")
        elif "error" in res:
            lines.append(f"- {p}: {res['error']}")
    return "\n".join(lines)


def judge(w, row, baselines, slots_total):
    """(ratio text, target text, verdict) for workload w; verdict PASS, FAIL or n/a."""
    s = row["sluice"]
    dask = row.get("dask", {})
    ok_dask = dask and "error" not in dask and "na" not in dask
    if w == 1:
        target = ">= 30,000/s and >= 30x Dask"
        if "error" in s:
            return "-", target, "FAIL"
        ratio = s["rate"] / dask["rate"] if ok_dask else None
        passed = s["rate"] >= 30000 and ratio is not None and ratio >= 30
        return (f"{ratio:.2f}x Dask" if ratio else "no Dask figure"), target, "PASS" if passed else "FAIL"
    if w == 2:
        target = "median hop <= 2 ms and >= 4x faster than Dask (total/n)"
        if "error" in s:
            return "-", target, "FAIL"
        ratio = dask["per_hop_ms"] / s["per_hop_ms"] if ok_dask else None
        passed = s["median_hop_ms"] <= 2 and ratio is not None and ratio >= 4
        return (f"{ratio:.2f}x Dask" if ratio else "no Dask figure"), target, "PASS" if passed else "FAIL"
    if w == 3:
        target = f">= 70% of posix_spawn loop ({slots_total} in flight)"
        base = baselines.get("spawn", {}).get(f"j{slots_total}", {})
        if "error" in s or "rate" not in base:
            return "-", target, "FAIL"
        ratio = s["rate"] / base["rate"]
        return f"{ratio * 100:.1f}% of loop", target, "PASS" if ratio >= 0.7 else "FAIL"
    if w == 4:
        target = ("<= 1.1x ideal and <= Dask (Dask running the same sh commands"
                  + (f"; medians of {s['repeat']} runs" if s.get("repeat", 1) > 1 else "") + ")")
        if "error" in s:
            return "-", target, "FAIL"
        ratio = s["seconds"] / s["ideal_s"]
        dask_s = dask.get("seconds") if ok_dask else None   # the same-commands median
        text = f"{ratio:.2f}x ideal ({s['ideal_s']:.2f} s)"
        if dask_s:
            text += f", {s['seconds'] / dask_s:.2f}x Dask same commands"
            py = (dask.get("bodies") or {}).get("python", {}).get("seconds")
            if py:
                text += f" ({s['seconds'] / py:.2f}x Dask Python bodies)"
        passed = ratio <= 1.1 and dask_s is not None and s["seconds"] <= dask_s
        verdict = "PASS" if passed else "FAIL"
        if not passed and ratio <= 1.1:
            verdict += " (ideal met, Dask not)" if dask_s else " (ideal met, no Dask figure)"
        return text, target, verdict
    if w == 5:
        target = "completes; planner peak RSS <= 256 MB; Redis <= 512 B/instance"
        if "error" in s:
            return "-", target, "FAIL"
        passed = (s.get("planner_hwm_mb") or 1e9) <= 256 and s["redis_bytes_per_instance"] <= 512
        return "-", target, "PASS" if passed else "FAIL"
    if w == 6:
        target = "first task running <= 2 s after submit"
        if "error" in s or s.get("first_running_s") is None:
            return "-", target, "FAIL"
        return "-", target, "PASS" if s["first_running_s"] <= 2 and "note" not in s else "FAIL"
    return "-", "-", "n/a"


def machine_info(args, bench):
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rinfo = bench.redis.info("server")
    persistence = bench.redis.cmd("CONFIG", "GET", "appendfsync")
    return {
        "host": socket.gethostname(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "sluice": first_line([os.path.join(args.build_dir, "bin", "sluice"), "version"]),
        "librdkafka": first_line(["pkg-config", "--modversion", "rdkafka"]),
        "hiredis": first_line(["pkg-config", "--modversion", "hiredis"]),
        "redis": rinfo.get("redis_version", "?"),
        "redis_appendfsync": persistence[1].decode() if persistence and len(persistence) > 1 else "?",
        "kafka": os.path.basename(os.environ.get("SLUICE_KAFKA_HOME", "")) or first_kafka_version(),
        "python": platform.python_version(),
        "peers": bench.peer_info,
        "loadavg_start": " ".join(f"{x:.2f}" for x in bench.loadavg_start),
        "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "service_env": " ".join(f"{k}={v}" for k, v in args.service_env.items()) or "-",
        "workers": args.workers,
        "slots_per_worker": args.slots,
        "scale": args.scale,
        "smoke": args.smoke,
    }


def first_kafka_version():
    cache = os.path.join(os.environ.get("SLUICE_CACHE", os.path.expanduser("~/.cache/sluice")))
    try:
        return ",".join(sorted(d for d in os.listdir(cache) if d.startswith("kafka-") and not d.endswith(".log")))
    except OSError:
        return "?"


def build_table(bench, args):
    rows = []
    for w in args.workloads:
        row = bench.results[w]
        ratio, target, verdict = judge(w, row, bench.baselines, bench.slots_total)
        size, target_size = row["sluice"]["size"], WORKLOADS[w][1]
        if size < target_size and w not in (2, 4):
            # a rate measured on a smaller run is reported as such, never extrapolated;
            # workload 5's target is that the full size completes
            verdict = ("FAIL" if w == 5 else verdict) + f" (ran {size:,}, target size {target_size:,})"
        rows.append({"id": w, "workload": WORKLOADS[w][0], "size": row["sluice"]["size"],
                     "sluice": cell(row["sluice"], w), "dask": cell(row.get("dask"), w),
                     "celery": cell(row.get("celery"), w), "prefect": cell(row.get("prefect"), w),
                     "ratio": ratio, "target": target, "result": verdict})
    return rows


def render(rows, bench, info):
    head = ["#", "workload", "size", "sluice", "dask", "celery", "prefect", "ratio", "target", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k in ("id", "workload", "size", "sluice", "dask", "celery",
                                                             "prefect", "ratio", "target", "result")) + " |")
    sp = bench.baselines.get("spawn", {})
    rb = bench.baselines.get("redis", {})
    base = []
    for k, v in sp.items():
        base.append(f"- posix_spawn+wait of /bin/true, {k[1:]} in flight: "
                    + (f"{v['rate']:,.0f}/s ({v['n']} in {v['seconds']:.2f} s)" if "rate" in v else v["error"]))
    base.append("- redis-benchmark -P 16 -t set,get (same Redis, appendfsync "
                f"{info['redis_appendfsync']}): " + (", ".join(f"{k} {v:,.0f}/s" for k, v in rb["rps"].items())
                                                       if "rps" in rb else rb.get("error", "?")))
    hop = bench.baselines.get("hop")
    if hop:
        trip, write = hop.get("kafka_trip", {}), hop.get("redis_write", {})
        if trip:
            base.append("- one Kafka hop, produced (idempotent, acks=all, linger 0) until a waiting group "
                        "consumer has it, one message at a time (bench/micro/kafka_trip.c): "
                        + (f"median {trip['median_ms']:.3f} ms (p10 {trip['p10_ms']:.3f}, p90 "
                           f"{trip['p90_ms']:.3f}; {trip['n']} trips)" if "median_ms" in trip else trip["error"]))
        base.append(f"- one durable Redis write (SET, appendfsync {info['redis_appendfsync']}), one client "
                    "(redis-benchmark -c 1): " + (f"p50 {write['p50_ms']:.3f} ms ({write['rps']:,.0f}/s)"
                                                  if "p50_ms" in write else write.get("error", "?")))
        if "hop_floor_ms" in hop:
            line = (f"- floor of a chain hop (2 Kafka hops + 1 durable write: the result and the next "
                    f"task's start written together, ADR 30; no processing): "
                    f"{hop['hop_floor_ms']:.2f} ms")
            dask = (bench.results.get(2) or {}).get("dask") or {}
            if dask.get("per_hop_ms"):
                line += (f"; 4x faster than Dask's {dask['per_hop_ms']:.2f} ms/hop needs <= "
                         f"{dask['per_hop_ms'] / 4:.2f} ms")
            base.append(line)
    parts = ((bench.results.get(2) or {}).get("sluice") or {}).get("hop_parts_ms")
    if parts and "carried" in parts:
        base.append(f"- sluice's chain hops: {parts['carried']} carried (the worker ran the task right after "
                    "its upstream, before the planner recorded it, ADR 31: no broker in the hop), "
                    f"{parts['dispatched']} dispatched through the planner and the broker (started after "
                    f"it recorded them), {parts.get('same_ms', 0)} started in the ms they were recorded "
                    "(either)")
    if parts and "queued_to_started" in parts:
        base.append("- sluice's dispatched chain hop in parts (means over its instances' own ms timestamps): "
                    f"median {parts.get('dispatched_median_hop_ms', float('nan')):.2f} ms; written by "
                    f"the planner -> started on a worker {parts['queued_to_started']:.2f} ms (the one durable "
                    "write of the result and the next node's start, ADR 30, the dispatch's Kafka hop, and a "
                    "lease's write for a task that takes one: a noop takes none, ADR 25), started -> finished "
                    f"{parts['started_to_finished']:.2f} ms, finished -> the next one written "
                    f"{parts['finished_to_next_queued']:.2f} ms (the result's Kafka hop and the next node's "
                    "expansion; its queued_ms is taken as the write is sent)")
    return "\n".join(lines), "\n".join(base)


def write_results(rows, bench, info, args):
    table, base = render(rows, bench, info)
    notes = diamond_notes(bench, args)
    if notes:
        table += "\n\n" + notes
    os.makedirs(args.out, exist_ok=True)
    stem = f"{info['date_utc'][:10]}-{info['host']}" + ("-smoke" if args.smoke else "")
    md = os.path.join(args.out, stem + ".md")
    js = os.path.join(args.out, stem + ".json")
    peers = info.get("peers") or {}
    with open(md, "w") as f:
        f.write(f"# bench/run {info['date_utc']} on {info['host']}\n\n")
        f.write(f"Command: `bench/run {' '.join(args.argv)}`. {info['workers']} workers x {info['slots_per_worker']} "
                f"slots for sluice; each peer gets {info['workers']} worker processes and the same "
                f"{bench.slots_total} slots.\n\n")
        f.write(table + "\n\nBaselines (same run):\n\n" + base + "\n\n")
        f.write("How each figure is taken: sluice times run from just before `sluice submit` to the run's "
                "`ended_ms` in Redis; workload 2's median hop is the median of consecutive instances' "
                "`finished_ms` differences (ms resolution), the ratio uses total/n for sluice and Dask alike; "
                "peers are timed from their first submit to their last result, cluster start-up excluded "
                "(Prefect: inside the flow). Workload 4's ideal is the expected total sleep "
                "(3n x sleep/2) / slots + 2 x sleep; each system runs the diamond --diamond-repeat times and "
                "is compared on its median; the peers run it twice over, with examples/diamond.yaml's own "
                "`sh -c` argv as task bodies (\"same commands\", compared) and with the seed's Python "
                "functions (time.sleep in-process, \"Python bodies\", shown), interleaved, after an untimed "
                "warm-up of each. Workload 5's Redis figure is INFO used_memory after "
                "minus before, over the instances.\n\n")
        f.write("## Machine\n\n")
        for k in ("cores", "cpu", "memory_gib", "kernel", "sluice", "librdkafka", "hiredis", "redis",
                  "redis_appendfsync", "kafka", "python", "loadavg_start", "loadavg_end", "service_env"):
            f.write(f"- {k}: {info[k]}\n")
        if peers:
            f.write("- peers: " + ", ".join(f"{k} {v}" for k, v in peers.items() if v) + "\n")
    with open(js, "w") as f:
        json.dump({"machine": info, "rows": rows, "raw": {str(k): v for k, v in bench.results.items()},
                   "baselines": bench.baselines}, f, indent=1, default=str)
        f.write("\n")
    return md, js, table, base


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description="sluice vs Dask, Celery, Prefect and baselines")
    p.add_argument("--smoke", action="store_true", help="tiny sizes; exit status says whether the harness works")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every workload size (default 1)")
    p.add_argument("--size", action="append", default=[], metavar="W=N", help="size of workload W (repeatable)")
    p.add_argument("--workloads", default="1,2,3,4,5,6", help="comma list of workload numbers")
    p.add_argument("--peers", default=None, help="comma list of dask,celery,prefect or none "
                   "(default: all; smoke: dask when its venv exists)")
    p.add_argument("--timeout", type=float, default=0, help="sluice per-workload timeout in s (default per workload)")
    p.add_argument("--peer-timeout", type=float, default=0, help="peer per-workload timeout in s (default 180)")
    p.add_argument("--workers", type=int, default=2, help="sluice workers (and peer worker processes)")
    p.add_argument("--slots", type=int, default=4, help="slots per sluice worker")
    p.add_argument("--diamond-sleep", type=float, default=0.1, help="workload 4: max sleep per task")
    p.add_argument("--diamond-repeat", type=int, default=0, metavar="N",
                   help="workload 4: timed runs per system (and per peer body kind); medians are compared "
                   "(default 3; smoke 1)")
    p.add_argument("--service-env", action="append", default=[], metavar="K=V",
                   help="environment for sluice's services and CLI, e.g. SLUICE_KAFKA_LINGER_MS=20 (repeatable)")
    p.add_argument("--redis-appendfsync", choices=["always", "everysec", "no"], default=None,
                   help="CONFIG SET appendfsync on the bench's Redis (default: as scripts/redis starts it)")
    p.add_argument("--keep-logs", default=None, metavar="DIR",
                   help="copy the services' logs to DIR at the end, with each diamond run's task instances "
                        "(diamond-<run>.json: queued/started/finished ms, worker)")
    p.add_argument("--service-log-level", default="warn", help="--log-level of planner and workers (default warn)")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    p.add_argument("--spawn-loop", required=True, help="the built bench/spawn_loop.c")
    p.add_argument("--kafka-trip", default=None, help="the built bench/micro/kafka_trip.c (workload 2's floor)")
    p.add_argument("--out", default=None, help="results dir (default bench/results; smoke: $SLUICE_TEST_TMP)")
    p.add_argument("--venv", default=os.path.join(os.environ.get("SLUICE_CACHE", os.path.expanduser("~/.cache/sluice")),
                                                  "bench-venv"))
    p.add_argument("--no-install", dest="install", action="store_false", default=None)
    a = p.parse_args(argv)
    a.argv, skip = [], False
    for x in argv:  # the command as typed to bench/run (it adds --spawn-loop; --build-dir is shown)
        if skip:
            skip = False
        elif x == "--spawn-loop":
            skip = True
        elif not x.startswith("--spawn-loop="):
            a.argv.append(x)
    a.workloads = [int(x) for x in a.workloads.split(",") if x.strip()]
    if any(w not in WORKLOADS for w in a.workloads):
        p.error(f"workloads are 1..{len(WORKLOADS)}")
    sizes = {}
    for s in a.size:
        k, _, v = s.partition("=")
        if not k.isdigit() or int(k) not in WORKLOADS or not v.isdigit() or int(v) < 1:
            p.error(f"bad --size {s!r} (W=N)")
        sizes[int(k)] = int(v)
    a.size = sizes
    env = {}
    for kv in a.service_env:
        k, eq, v = kv.partition("=")
        if not eq or not re.match(r"^SLUICE_[A-Z0-9_]+$", k):
            p.error(f"bad --service-env {kv!r} (SLUICE_NAME=VALUE)")
        env[k] = v
    a.service_env = env
    if a.install is None:
        a.install = not a.smoke
    if a.peers is None:
        a.peers = "dask" if a.smoke else ",".join(PEERS)
    a.peers = [] if a.peers == "none" else [x.strip() for x in a.peers.split(",") if x.strip()]
    if any(x not in PEERS for x in a.peers):
        p.error(f"peers are {', '.join(PEERS)} or none")
    if a.out is None:
        a.out = os.path.join(os.environ.get("SLUICE_TEST_TMP", "/tmp"), "bench-results") if a.smoke \
            else os.path.join(BENCH, "results")
    if a.scale <= 0 or a.workers < 1 or a.slots < 1 or a.diamond_repeat < 0:
        p.error("--scale, --workers, --slots and --diamond-repeat must be positive")
    return a


def main(argv):
    if "--args-only" in argv:  # bench/run checks the options before it starts Kafka
        parse_args([a for a in argv if a != "--args-only"])
        return 0
    args = parse_args(argv)
    try:
        bench = Bench(args)
        bench.run()
        info = machine_info(args, bench)
        rows = build_table(bench, args)
        md, js, table, base = write_results(rows, bench, info, args)
    except HarnessError as e:
        log(f"error: {e}")
        return 2
    print(table)
    print("\nBaselines:\n" + base)
    print(f"\nwritten: {md}\n         {js}")
    if args.smoke:
        bad = [w for w in args.workloads if "error" in bench.results[w]["sluice"]]
        bad += [k for k, v in bench.baselines.items() if "error" in v or any("error" in x for x in v.values()
                                                                             if isinstance(x, dict))]
        with open(js) as f:
            json.load(f)
        if bad:
            log(f"smoke: no figure for {bad}")
            return 1
        log("smoke: the harness works (targets are not judged in smoke mode)")
        return 0
    return 0 if all(r["result"] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
