"""common.py - the workloads' task bodies and the JSON result line shared by the peer scripts.

Workload 4 (the diamond) has two kinds of bodies:
- "commands": exactly the argv of examples/diamond.yaml's inc, dec and add tasks (`sh -c` with
  the flow's own script text, positional args x / y / sleep), read from that YAML with PyYAML
  (a dependency of dask and prefect, so it is in the bench venv) by the peer's driver and passed
  to every body; the body fills in the same ${...} references sluice fills in, runs the argv
  and parses its integer stdout. This is the figure compared with sluice.
- "python": the seed's Python functions, time.sleep(random() * sleep) in-process (the older
  figure, kept for reference).
"""
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DIAMOND_YAML = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "diamond.yaml")
DIAMOND_BODIES = ("commands", "python")
# the only ${...} references the diamond's commands may use, and what fills them in
_REF = re.compile(r"\$\{([^}]*)\}")
_KNOWN_REFS = {"x", "y", "params.sleep", "params.n"}


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


def diamond_commands(path=None):
    """{"inc": argv, "dec": argv, "add": argv} of the diamond flow's command tasks, as written
    in the YAML (templates unfilled). Fails if the flow no longer has that shape."""
    import yaml

    path = path or DIAMOND_YAML
    with open(path) as f:
        doc = yaml.safe_load(f)
    out = {}
    for name in ("inc", "dec", "add"):
        t = (doc.get("tasks") or {}).get(name) or {}
        argv = t.get("command")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise SystemExit(f"{path}: task {name} has no command argv (list of strings)")
        for a in argv:
            for ref in _REF.findall(a):
                if ref not in _KNOWN_REFS:
                    raise SystemExit(f"{path}: task {name} uses ${{{ref}}}, which the peers cannot fill in")
        out[name] = argv
    if "${y}" not in " ".join(out["add"]):
        raise SystemExit(f"{path}: add does not take ${{y}}: not the diamond the bench knows")
    return out


def render_real(d):
    # sluice's template.c writes a float param in its shortest form with a '.', which for the
    # values the bench uses is Python's repr (0.1 -> "0.1", 1.0 -> "1.0")
    return repr(float(d))


def command_argv(command, x, y=None, sleep=0.0, n=0):
    """command with its ${...} filled in as sluice fills them in (ints as decimal text)."""
    vals = {"x": str(x), "y": "" if y is None else str(y), "params.sleep": render_real(sleep), "params.n": str(n)}
    return [_REF.sub(lambda m: vals[m.group(1)], a) for a in command]


def command_body(x, y=None, *, command, sleep, n=0):
    """One diamond task as sluice runs it: the flow's argv, stdout parsed as an integer."""
    argv = command_argv(command, x, y, sleep, n)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[:2]}... exited {p.returncode}: {p.stderr.decode(errors='replace')[-200:]}")
    _count()
    return int(p.stdout.decode().strip())


def diamond_summary(runs):
    """{"runs": [s, ...], "seconds": median} of one body kind (errors kept as text)."""
    ok = [r for r in runs if isinstance(r, (int, float))]
    out = {"runs": [round(r, 6) if isinstance(r, float) else r for r in runs]}
    if ok and len(ok) == len(runs):
        out["seconds"] = round(statistics.median(ok), 6)
    else:
        out["error"] = next((r for r in runs if not isinstance(r, (int, float))), "no run")
    return out


def run_diamond(args, once):
    """Workload 4 for a peer: an untimed warm-up of each body kind (n=2, no sleep), then
    args.repeat rounds of each kind in args.bodies, interleaved so drifting load hits all
    kinds alike. once(body, n, sleep, commands) runs one diamond and returns its total; a
    wrong total or an exception is recorded as that run's error. Returns the extra fields of
    the JSON line: "bodies" {kind: {"runs", "seconds" (median) or "error"}} and "seconds" of
    the first kind (the one the harness compares)."""
    commands = diamond_commands(args.diamond_yaml)
    bodies = [b for b in args.bodies.split(",") if b]
    for b in bodies:
        if b not in DIAMOND_BODIES:
            raise SystemExit(f"unknown diamond body {b!r} (one of {', '.join(DIAMOND_BODIES)})")
    runs = {b: [] for b in bodies}
    broken = {}  # kind -> why its warm-up failed (its timed runs are then not made)
    for b in bodies:
        try:
            got = once(b, 2, 0.0, commands)
            if got != 2:
                broken[b] = f"warm-up total {got}, expected 2"
        except Exception as e:  # noqa: BLE001
            broken[b] = f"warm-up: {type(e).__name__}: {e}"[:300]
        if b in broken:
            runs[b].append(broken[b])
            sys.stderr.write(f"diamond {b}: {broken[b]}\n")
    n = args.n
    for _ in range(args.repeat):
        for b in bodies:
            if b in broken:
                continue
            t0 = time.perf_counter()
            try:
                got = once(b, n, args.sleep, commands)
                dt = time.perf_counter() - t0
                runs[b].append(dt if got == n * (n - 1) else f"total {got}, expected {n * (n - 1)}")
            except Exception as e:  # noqa: BLE001 - one failed run must not hide the others
                runs[b].append(f"{type(e).__name__}: {e}"[:300])
            sys.stderr.write(f"diamond {b}: {runs[b][-1]}\n")
    out = {"bodies": {b: diamond_summary(r) for b, r in runs.items()},
           "example_argv": {k: command_argv(v, 0, 1 if k == "add" else None, args.sleep, n)
                            for k, v in commands.items()},
           "diamond_yaml": os.path.abspath(args.diamond_yaml or DIAMOND_YAML)}
    first = out["bodies"][bodies[0]]
    if "seconds" in first:
        out["seconds"] = first["seconds"]
    return out


def emit(peer, args, seconds, **extra):
    """Prints the one JSON line the harness reads: rate for fan-outs, per-hop for the chain."""
    out = {"peer": peer, "workload": args.workload, "n": args.n, "slots": args.slots}
    if seconds is None:  # the diamond when its compared body kind has no figure (see "bodies")
        out.update(extra)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
        return
    out["seconds"] = round(seconds, 6)
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
    p.add_argument("--bodies", default="commands,python",
                   help="diamond: comma list of body kinds, commands (the flow's sh argv) and/or python")
    p.add_argument("--repeat", type=int, default=1, help="diamond: timed runs of each body kind")
    p.add_argument("--diamond-yaml", default=DIAMOND_YAML, help="diamond: the flow whose commands are run")
    return p.parse_args(argv)
