#!/usr/bin/env python3
"""profile.py - where sluice's time goes on bench workloads 1 (noop fan-out) and 3 (/bin/true).

Run through `bench/run --profile [--size 1=N --size 3=N]`: same services as the bench, then per
workload: CPU seconds of every process (planner, workers, redis-server, Kafka) per task,
Redis commands per task (INFO commandstats), and a perf cpu-clock profile of the planner, the
workers and redis-server (perf record -g) with the top symbols. With --strace, a second run per workload
counts the syscalls of the planner and one worker (strace -c -f; slows them, so its timings
are not figures). With --callgrind, the planner and worker0 run under valgrind's callgrind
instead (no perf) and the report ends with instructions per task and the top functions. Output: text on stdout and in <out>/profile-<date>.txt.
"""
import datetime
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime+stime of pid and its reaped children, in s (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def pids_of(word):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if word in cmd:
            out.append(int(d))
    return out


def commandstats(redis):
    text = redis.cmd("INFO", "commandstats").decode()
    stats = {}
    for m in re.finditer(r"cmdstat_(\S+?):calls=(\d+),usec=(\d+)", text):
        stats[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return stats


class Profiler(harness.Bench):
    def callgrind_argv(self, name, argv):
        if not self.a.callgrind:
            return argv
        out = os.path.join(self.tmp, f"callgrind.{name}")
        self.callgrind_files.append((name, out))
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv

    def start_planner(self):
        self.planner = harness.Service("planner", self.callgrind_argv("planner", [
            os.path.join(self.bin, "sluice-planner"), "--flows-dir", os.path.join(harness.BENCH, "flows"),
            "--log-level", "warn"]), self.logdir)

    def start_workers(self):
        for i in range(self.a.workers):
            argv = [os.path.join(self.bin, "sluice-worker"), "--queue", "default", "--slots", str(self.a.slots),
                    "--log-level", "warn", "--work-dir", os.path.join(self.tmp, "work")]
            self.workers.append(harness.Service(f"worker{i}", self.callgrind_argv("worker0", argv) if i == 0
                                                else argv, self.logdir))

    def callgrind_report(self, report, tasks):
        report.append(f"\n## callgrind (planner and worker0 under valgrind; {tasks} tasks in all, "
                      "start-up and warm-up included)\n")
        for name, path in self.callgrind_files:
            if not os.path.exists(path):
                report.append(f"{name}: no {path}\n")
                continue
            out = subprocess.run(["callgrind_annotate", "--inclusive=no", path], capture_output=True, text=True)
            lines = out.stdout.splitlines()
            total = next((ln for ln in lines if "PROGRAM TOTALS" in ln), "?")
            m = re.match(r"\s*([\d,]+)", total)
            ir = int(m.group(1).replace(",", "")) if m else 0
            share = "about half of them" if name == "worker0" and self.a.workers > 1 else "all"
            report.append(f"\n{name}: {total.strip()}; {ir / max(tasks, 1):,.0f} Ir per task ({share})\n")
            start = next((i for i, ln in enumerate(lines) if "file:function" in ln), None)
            if start is not None:
                body = [ln for ln in lines[start + 1:] if ln.strip() and not ln.startswith("-")]
                report.extend("  " + ln.strip()[:140] + "\n" for ln in body[:18])

    def procs(self):
        kafka = [p for p in pids_of("kafka.Kafka") if p != os.getpid()]
        redis_pid = int(open(os.path.join(os.environ["SLUICE_REDIS_DATA"], "redis.pid")).read().strip())
        out = {"planner": [self.planner.proc.pid], "workers": [w.proc.pid for w in self.workers],
               "redis-server": [redis_pid], "kafka (JVM)": kafka}
        return out

    def idle(self, report, seconds=5.0):
        """CPU of each process with the services up and no work: the floor under every figure."""
        procs = self.procs()
        cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
        time.sleep(seconds)
        cpu1 = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
        report.append(f"\n## idle ({seconds:.0f} s, services up, no run)\n\n")
        for k in procs:
            report.append(f"  {k:14s} {(cpu1[k] - cpu0[k]) / seconds * 100:5.1f}% of one core\n")

    def measure(self, w, report):
        flow = {1: "fanout.yaml", 3: "commands.yaml"}[w]
        n = self.size(w)
        procs = self.procs()
        cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
        cs0 = commandstats(self.redis)
        perf = None
        pdata = os.path.join(self.tmp, f"perf-w{w}.data")
        if shutil.which("perf") and not self.a.no_perf:
            pids = ",".join(str(p) for p in procs["planner"] + procs["workers"] + procs["redis-server"])
            perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-o", pdata,
                                     "-p", pids], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
        t = time.time()
        r = self.sluice_run(w, os.path.join(harness.BENCH, "flows", flow), {"n": n})
        wall = time.time() - t
        if perf:
            perf.send_signal(2)
            perf.wait(timeout=60)
        cpu1 = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
        cs1 = commandstats(self.redis)
        report.append(f"\n## workload {w}: {n} tasks ({flow})\n")
        if "error" in r:
            report.append(f"run: {r['error']}\n")
        else:
            report.append(f"run {r['run']}: {r['seconds']:.2f} s submit->ended, {n / r['seconds']:.1f} tasks/s\n")
        report.append(f"\nCPU while it ran ({wall:.2f} s wall, {os.cpu_count()} cores = "
                      f"{wall * os.cpu_count():.1f} core-s available):\n")
        total = 0.0
        for k in procs:
            d = cpu1[k] - cpu0[k]
            total += d
            report.append(f"  {k:14s} {d:7.2f} core-s  {d / wall * 100:5.1f}% of one core  "
                          f"{d / n * 1e6:8.0f} us/task\n")
        report.append(f"  {'all':14s} {total:7.2f} core-s  {total / (wall * os.cpu_count()) * 100:5.1f}% of the machine\n")
        report.append("\nRedis commands per task (INFO commandstats delta):\n")
        rows = []
        for cmd, (calls, usec) in cs1.items():
            c0, u0 = cs0.get(cmd, (0, 0))
            if calls - c0 > 0:
                rows.append((calls - c0, usec - u0, cmd))
        for calls, usec, cmd in sorted(rows, reverse=True)[:8]:
            report.append(f"  {cmd:12s} {calls / n:6.2f}/task  {usec / max(calls, 1):7.1f} us/call in Redis\n")
        if perf and os.path.exists(pdata):
            for sort, title in (("comm,dso", "by process and library"), ("comm,sym", "top symbols")):
                out = subprocess.run(["perf", "report", "-i", pdata, "--stdio", "--no-children", "--sort", sort,
                                      "-g", "none", "--percent-limit", "1.5"], capture_output=True, text=True)
                lines = [ln for ln in out.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
                report.append(f"\nperf cpu-clock samples of planner, workers and redis-server, {title}:\n")
                report.extend("  " + ln.strip() + "\n" for ln in lines[:25])
        if self.a.strace and shutil.which("strace"):
            self.strace_pass(w, flow, report)

    def strace_pass(self, w, flow, report):
        n = max(200, self.size(w) // 5)
        outs = []
        tr = []
        for name, pid in (("planner", self.planner.proc.pid), ("worker0", self.workers[0].proc.pid)):
            path = os.path.join(self.tmp, f"strace-{name}-w{w}.txt")
            outs.append((name, path))
            tr.append(subprocess.Popen(["strace", "-c", "-f", "-o", path, "-p", str(pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        r = self.sluice_run(w, os.path.join(harness.BENCH, "flows", flow), {"n": n})
        for p in tr:
            p.send_signal(2)
            p.wait(timeout=60)
        report.append(f"\nsyscalls per task under strace -c -f ({n} tasks; worker0 ran about half of them; "
                      f"run {'ok' if 'error' not in r else r['error']}):\n")
        for name, path in outs:
            try:
                lines = open(path).read().splitlines()
            except OSError:
                continue
            rows = []
            for ln in lines:
                parts = ln.split()
                if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
                    try:
                        calls = int(parts[3])
                    except ValueError:
                        continue
                    rows.append((calls, parts[-1]))
            rows.sort(reverse=True)
            report.append(f"  {name}: " + ", ".join(f"{c / n:.1f} {s}" for c, s in rows[:8]) + "\n")


def main(argv):
    strace = "--strace" in argv
    no_perf = "--no-perf" in argv or "--callgrind" in argv
    callgrind = "--callgrind" in argv
    argv = [a for a in argv if a not in ("--strace", "--no-perf", "--profile", "--callgrind")]
    if "--args-only" in argv:
        harness.parse_args([a for a in argv if a != "--args-only"])
        return 0
    args = harness.parse_args(argv + ["--peers", "none"])
    args.strace, args.no_perf, args.callgrind = strace, no_perf, callgrind
    prof = Profiler(args)
    prof.callgrind_files = []
    report = [f"# sluice profile {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}, "
              f"{args.workers} workers x {args.slots} slots\n"]
    prof.start_planner()
    prof.start_workers()
    try:
        prof.warm_up()
        prof.idle(report)
        for w in (1, 3):
            if w in args.workloads:
                harness.log(f"profiling workload {w}, size {prof.size(w)}")
                prof.measure(w, report)
    finally:
        prof.stop_services()
    if callgrind:
        prof.callgrind_report(report, sum(prof.size(w) for w in (1, 3) if w in args.workloads) + 20)
    text = "".join(report)
    sys.stdout.write(text)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"profile-{datetime.date.today()}{'-callgrind' if callgrind else ''}.txt")
    with open(path, "w") as f:
        f.write(text)
    harness.log(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
