/* e2e_worker.c - the worker against the real stack: priority bands, /healthz /readyz /metrics,
 * drain on SIGTERM (finish, or hand back at the drain timeout), and a Redis outage longer than
 * the lease (the task is killed, nothing is published), a worker joining later gets its share
 * of the queue, dispatches leased ahead while every slot is busy, an idle worker takes what
 * waits in a stopped one's partitions. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/kafka.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

static pid_t planner;
static int planner_port;
static char planner_http[32];

static void start_services(void)
{
	const char *pargs[] = {"--flows-dir", E2E_FLOWS, "--lease-ttl", "3s", "--http",
			       planner_http, NULL};

	e2e_require_env();
	planner_port = e2e_free_port();
	snprintf(planner_http, sizeof(planner_http), "127.0.0.1:%d", planner_port);
	planner = e2e_spawn("worker-planner", "sluice-planner", pargs, NULL);
	ck_assert_int_gt(planner, 0);
}

/* Workers are started inside the (forked) tests; a failed assertion skips their stop, so
 * each one's pid also goes to a file that the suite's teardown sweeps. */
static const char *pid_file(void)
{
	static char path[600];

	if (!path[0])
		snprintf(path, sizeof(path), "%s/e2e_worker.pids", e2e_tmpdir("worker"));
	return path;
}

static pid_t spawn_worker(const char *label, const char *const *args)
{
	pid_t pid = e2e_spawn(label, "sluice-worker", args, NULL);
	FILE *fp = fopen(pid_file(), "a");

	if (fp) {
		fprintf(fp, "%d\n", (int)pid);
		fclose(fp);
	}
	return pid;
}

/* Kills the process group of every worker a test left behind (only sluice-workers). */
static void sweep_workers(void)
{
	FILE *fp = fopen(pid_file(), "r");
	int pid;

	while (fp && fscanf(fp, "%d", &pid) == 1) {
		char path[64], cmd[256] = "";
		FILE *c;
		size_t n = 0;

		snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
		if ((c = fopen(path, "r"))) {
			n = fread(cmd, 1, sizeof(cmd) - 1, c);
			fclose(c);
		}
		cmd[n] = '\0';
		if (pid > 0 && strstr(cmd, "sluice-worker"))
			kill(-pid, SIGKILL);
	}
	if (fp)
		fclose(fp);
	unlink(pid_file());
}

static void stop_services(void)
{
	sweep_workers();
	e2e_stop(planner, SIGTERM, 15000);
}

static char *ti_state(const char *run, const char *task, int idx)
{
	return e2e_ti_field(run, task, idx, "state");
}

/* Waits until instance (task, idx) of run is RUNNING; returns 1 if it got there. */
static int wait_running(const char *run, const char *task, int idx, long ms)
{
	int64_t until = sl_mono_ms() + e2e_ms(ms);

	while (sl_mono_ms() < until) {
		char *s = ti_state(run, task, idx);
		int ok = s && !strcmp(s, "RUNNING");

		free(s);
		if (ok)
			return 1;
		usleep(100000);
	}
	return 0;
}

/* Submits flow (its task "block" runs until the file gate exists: the gate parameter) with
 * a fresh gate file named name, whose path goes to gate, and waits until block runs.
 * Returns the run id (caller frees). */
static char *submit_gated(const char *flow, const char *name, char *gate, size_t cap)
{
	char param[700];
	const char *params[] = {param, NULL};
	char *run;

	snprintf(gate, cap, "%s/%s", e2e_tmpdir("worker"), name);
	unlink(gate);
	snprintf(param, sizeof(param), "gate=%s", gate);
	ck_assert_ptr_nonnull(run = e2e_submit(flow, params));
	ck_assert_msg(wait_running(run, "block", -1, 60000), "%s: block never ran", flow);
	return run;
}

/* Opens the gate file path. */
static void open_gate(const char *path)
{
	FILE *fp = fopen(path, "w");

	ck_assert_ptr_nonnull(fp);
	fclose(fp);
}

/* Lines of a file (0 when it does not exist). */
static int count_lines(const char *path)
{
	FILE *fp = fopen(path, "r");
	int n = 0, c;

	if (!fp)
		return 0;
	while ((c = fgetc(fp)) != EOF)
		n += c == '\n';
	fclose(fp);
	return n;
}

static int wait_lines(const char *path, int n, long ms)
{
	int64_t until = sl_mono_ms() + e2e_ms(ms);

	while (sl_mono_ms() < until && count_lines(path) < n)
		usleep(50000);
	return count_lines(path) >= n;
}

/* The pid the task wrote on line `line` (1-based: "<attempt> <pid>"), or -1. */
static pid_t task_pid(const char *path, int line)
{
	FILE *fp = fopen(path, "r");
	int attempt, pid = -1;

	for (int i = 0; fp && i < line; i++)
		if (fscanf(fp, "%d %d", &attempt, &pid) != 2)
			pid = -1;
	if (fp)
		fclose(fp);
	return (pid_t)pid;
}

static int process_gone(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *fp;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(fp = fopen(path, "r")))
		return 1;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return (p = strrchr(buf, ')')) && (p[2] == 'Z' || p[2] == 'X');
}

START_TEST(high_priority_dispatches_start_first)
{
	char gate[600], *block, *run, *state, *blk_state;
	int port = e2e_free_port();
	char http[32];
	pid_t w;
	long hi_max = 0, lo_min = -1;

	snprintf(http, sizeof(http), "127.0.0.1:%d", port);
	{
		/* --lease-ahead 0: a dispatch leased ahead while the slot is busy starts before
		 * a higher one that arrives after it (docs/worker.md, "Priorities"). */
		const char *wargs[] = {"--queue", "prio", "--slots", "1", "--lease-ahead", "0",
				       "--id", "e2e-prio-w", "--http", http, NULL};
		ck_assert_int_gt(w = spawn_worker("worker-prio", wargs), 0);
	}
	/* The one slot waits for a gate file while the twelve dispatches pile up. */
	block = submit_gated(E2E_FLOWS "/blocker.yaml", "prio-gate", gate, sizeof(gate));
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/priority.yaml", NULL));
	{
		int64_t until = sl_mono_ms() + e2e_ms(60000);
		long waiting = -1;

		while (sl_mono_ms() < until &&
		       (waiting = e2e_port_metric(port, "sluice_worker_dispatches_waiting")) < 12)
			usleep(100000);
		ck_assert_msg(waiting >= 12, "worker has %ld dispatches waiting, want 12", waiting);
	}
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_busy_slots"), 1);
	open_gate(gate);
	state = e2e_wait_run_end(run, e2e_ms(90000));
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "priority run ended %s",
		      state ? state : "-");
	blk_state = e2e_wait_run_end(block, e2e_ms(30000));
	ck_assert_str_eq(blk_state, "SUCCEEDED");
	for (int i = 0; i < 6; i++) {
		char *h = e2e_ti_field(run, "hi", i, "started_ms");
		char *l = e2e_ti_field(run, "lo", i, "started_ms");

		ck_assert(h && l);
		if (atol(h) > hi_max)
			hi_max = atol(h);
		if (lo_min < 0 || atol(l) < lo_min)
			lo_min = atol(l);
		free(h);
		free(l);
	}
	ck_assert_msg(hi_max < lo_min, "a low instance started at %ld, before the last high one "
		      "at %ld", lo_min, hi_max);
	ck_assert_int_ge(e2e_port_metric(port, "sluice_worker_tasks_succeeded_total"), 13);
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
	free(blk_state);
	free(state);
	free(block);
	free(run);
}
END_TEST

/* noop, echo and sum need no slot: they run on the consume thread while the only slot is
 * busy (docs/worker.md, Built-ins). */
START_TEST(inline_builtins_run_while_every_slot_is_busy)
{
	char gate[600], *run, *st, *out, *state;
	int port = e2e_free_port();
	char http[32];
	pid_t w;
	int64_t until;
	int done = 0;

	snprintf(http, sizeof(http), "127.0.0.1:%d", port);
	{
		const char *wargs[] = {"--queue", "inline", "--slots", "1", "--id", "e2e-inline-w",
				       "--http", http, NULL};
		ck_assert_int_gt(w = spawn_worker("worker-inline", wargs), 0);
	}
	run = submit_gated(E2E_FLOWS "/inline.yaml", "inline-gate", gate, sizeof(gate));
	until = sl_mono_ms() + e2e_ms(60000);
	while (!done && sl_mono_ms() < until) {
		st = e2e_ti_field(run, "total", -1, "state");
		done = st && !strcmp(st, "SUCCEEDED");
		free(st);
		if (!done)
			usleep(100000);
	}
	ck_assert_msg(done, "sum did not finish while the slot was busy");
	out = e2e_ti_field(run, "total", -1, "output");
	ck_assert_str_eq(out ? out : "(nil)", "10");
	free(out);
	st = ti_state(run, "block", -1);
	ck_assert_str_eq(st ? st : "(nil)", "RUNNING");
	free(st);
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_busy_slots"), 1);
	ck_assert_int_ge(e2e_port_metric(port, "sluice_worker_tasks_succeeded_total"), 6);
	open_gate(gate);
	state = e2e_wait_run_end(run, e2e_ms(30000));
	ck_assert_str_eq(state ? state : "-", "SUCCEEDED");
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
	free(state);
	free(run);
}
END_TEST

/* An inline built-in of a task without concurrency tags needs no lease (ADR 25): 20 such
 * instances run without one, the 5 of a tagged task take theirs (and their tag's slots). */
START_TEST(untagged_inline_builtins_run_without_a_lease)
{
	char http[32], *run, *state, *worker;
	int port = e2e_free_port();
	pid_t w;

	snprintf(http, sizeof(http), "127.0.0.1:%d", port);
	{
		const char *wargs[] = {"--queue", "nolease", "--slots", "2", "--id",
				       "e2e-nolease-w", "--http", http, NULL};
		ck_assert_int_gt(w = spawn_worker("worker-nolease", wargs), 0);
	}
	run = e2e_submit(E2E_FLOWS "/no_lease.yaml", NULL);
	ck_assert_ptr_nonnull(run);
	state = e2e_wait_run_end(run, e2e_ms(60000));
	ck_assert_str_eq(state ? state : "-", "SUCCEEDED");
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_tasks_succeeded_total"), 25);
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_leases_taken_total"), 5);
	/* the result still names who ran it */
	worker = e2e_ti_field(run, "free", 7, "worker");
	ck_assert_str_eq(worker ? worker : "(nil)", "e2e-nolease-w");
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
	free(worker);
	free(state);
	free(run);
}
END_TEST

START_TEST(health_endpoints_answer)
{
	static char body[65536];
	int port = e2e_free_port();
	char http[32];
	pid_t w;
	int64_t until;
	int ready = -1;

	snprintf(http, sizeof(http), "127.0.0.1:%d", port);
	{
		const char *wargs[] = {"--queue", "health", "--slots", "2", "--id", "e2e-health-w",
				       "--http", http, NULL};
		ck_assert_int_gt(w = spawn_worker("worker-health", wargs), 0);
	}
	until = sl_mono_ms() + e2e_ms(30000);
	while (sl_mono_ms() < until &&
	       (ready = e2e_http_get(port, "/readyz", body, sizeof(body))) != 200)
		usleep(100000);
	ck_assert_int_eq(ready, 200);
	ck_assert_int_eq(e2e_http_get(port, "/healthz", body, sizeof(body)), 200);
	ck_assert_int_eq(e2e_http_get(port, "/metrics", body, sizeof(body)), 200);
	ck_assert_msg(strstr(body, "# TYPE sluice_worker_tasks_started_total counter\n"), "%s",
		      body);
	ck_assert_int_eq(e2e_metric(body, "sluice_worker_slots"), 2);
	ck_assert_int_eq(e2e_metric(body, "sluice_worker_busy_slots"), 0);
	ck_assert_int_eq(e2e_metric(body, "sluice_worker_leases_lost_total"), 0);
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
}
END_TEST

/* Starts a worker of the drain queue with one slot and the given drain timeout. */
static pid_t drain_worker(const char *id, const char *drain_timeout)
{
	const char *wargs[] = {"--queue", "drain", "--slots", "1", "--id", id,
			       "--drain-timeout", drain_timeout, "--kill-grace", "1s", NULL};
	pid_t w = spawn_worker(id, wargs);

	ck_assert_int_gt(w, 0);
	return w;
}

/* Submits the sleeper flow; attempt 1 sleeps secs, later attempts do not. */
static char *submit_sleeper(const char *mark, int secs)
{
	char p1[700], p2[32];
	const char *params[] = {p1, p2, NULL};

	snprintf(p1, sizeof(p1), "mark=%s", mark);
	snprintf(p2, sizeof(p2), "secs=%d", secs);
	unlink(mark);
	return e2e_submit(E2E_FLOWS "/sleeper.yaml", params);
}

START_TEST(sigterm_lets_the_running_task_finish)
{
	char mark[600], *run, *state, *attempt;
	pid_t w = drain_worker("e2e-drain-finish", "60s");
	int status;

	snprintf(mark, sizeof(mark), "%s/drain-finish", e2e_tmpdir("worker"));
	ck_assert_ptr_nonnull(run = submit_sleeper(mark, 3));
	ck_assert_msg(wait_lines(mark, 1, 60000), "the task never started");
	kill(w, SIGTERM);
	/* The worker exits once its task is done, and not before. */
	status = e2e_stop(w, 0, e2e_ms(30000));
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker status %d", status);
	state = e2e_wait_run_end(run, e2e_ms(30000));
	ck_assert_str_eq(state, "SUCCEEDED");
	attempt = e2e_ti_field(run, "nap", -1, "attempt");
	ck_assert_str_eq(attempt, "1"); /* finished, not handed back */
	ck_assert_int_eq(count_lines(mark), 1);
	free(attempt);
	free(state);
	free(run);
}
END_TEST

START_TEST(sigterm_hands_back_at_the_drain_timeout)
{
	char mark[600], *run, *state, *attempt;
	pid_t w = drain_worker("e2e-drain-back", "1s"), w2, pid;
	int64_t t0;
	int status;

	snprintf(mark, sizeof(mark), "%s/drain-back", e2e_tmpdir("worker"));
	ck_assert_ptr_nonnull(run = submit_sleeper(mark, 120));
	ck_assert_msg(wait_lines(mark, 1, 60000), "the task never started");
	pid = task_pid(mark, 1);
	ck_assert_int_gt(pid, 0);
	t0 = sl_mono_ms();
	kill(w, SIGTERM);
	status = e2e_stop(w, 0, e2e_ms(20000));
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker status %d", status);
	ck_assert_msg(sl_mono_ms() - t0 < e2e_ms(15000), "drain took %lld ms",
		      (long long)(sl_mono_ms() - t0));
	ck_assert_msg(process_gone(pid), "task process %d survived its worker", (int)pid);
	/* handed back: the lease was released, not left to lapse */
	{
		redisReply *r = sl_state_command(e2e_state(), "EXISTS sluice:{%s}:lease:nap:-1", run);
		ck_assert_ptr_nonnull(r);
		ck_assert_msg(r->integer == 0, "lease still held after the hand-back");
		freeReplyObject(r);
	}
	/* another worker picks the re-dispatch up and finishes the run */
	w2 = drain_worker("e2e-drain-back2", "20s");
	state = e2e_wait_run_end(run, e2e_ms(90000));
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "run ended %s", state ? state : "-");
	attempt = e2e_ti_field(run, "nap", -1, "attempt");
	ck_assert_msg(attempt && atoi(attempt) >= 2, "attempt %s", attempt ? attempt : "-");
	ck_assert_int_ge(count_lines(mark), 2);
	ck_assert_int_eq(e2e_stop(w2, SIGTERM, 15000), 0);
	free(attempt);
	free(state);
	free(run);
}
END_TEST

/* A worker killed with SIGKILL takes its running task's process with it (the command's
 * parent-death signal, sl_exec's die_with_caller): before, the task went on running,
 * orphaned, while the reaper re-dispatched it elsewhere. */
START_TEST(a_worker_killed_with_sigkill_leaves_no_task_running)
{
	char mark[600], *run, *state;
	pid_t w = drain_worker("e2e-kill-w", "60s"), w2, pid;
	int64_t until;
	int gone = 0;

	snprintf(mark, sizeof(mark), "%s/killed", e2e_tmpdir("worker"));
	ck_assert_ptr_nonnull(run = submit_sleeper(mark, 120));
	ck_assert_msg(wait_lines(mark, 1, 60000), "the task never started");
	pid = task_pid(mark, 1);
	ck_assert_int_gt(pid, 0);
	kill(w, SIGKILL);
	e2e_stop(w, 0, e2e_ms(10000));
	for (until = sl_mono_ms() + e2e_ms(3000); !gone && sl_mono_ms() < until; usleep(20000))
		gone = process_gone(pid);
	if (!gone)
		kill(pid, SIGKILL); /* nothing left behind when the check fails */
	ck_assert_msg(gone, "task process %d outlived its SIGKILLed worker", (int)pid);
	/* the lease lapses and the reaper re-dispatches: another worker finishes the run */
	w2 = drain_worker("e2e-kill-w2", "20s");
	state = e2e_wait_run_end(run, e2e_ms(90000));
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "run ended %s", state ? state : "-");
	ck_assert_int_eq(e2e_stop(w2, SIGTERM, 15000), 0);
	free(state);
	free(run);
}
END_TEST

/* Number of TaskResults for (run, attempt) on sluice.tasks.results, read from the start by a
 * fresh group for up to ms. */
static int results_for(const char *run, unsigned attempt, long ms)
{
	struct e2e_result got[16];
	int n = e2e_run_results(run, 0, ms, got, 16), k = 0;

	for (int i = 0; i < n && i < 16; i++)
		k += got[i].attempt == attempt;
	return k;
}

static int redis_script(const char *verb)
{
	char cmd[8192];

	snprintf(cmd, sizeof(cmd), "'%s/scripts/redis' %s '%s' >>'%s/logs/redis-script.log' 2>&1",
		 SLUICE_SOURCE_DIR, verb, getenv("SLUICE_REDIS_DATA"), getenv("SLUICE_TEST_TMP"));
	return system(cmd);
}

START_TEST(redis_outage_past_the_lease_kills_the_task_and_publishes_nothing)
{
	char mark[600], *run, *state;
	pid_t w = drain_worker("e2e-redis-out", "20s"), pid;
	int64_t t0, took;
	int gone = 0;

	ck_assert_ptr_nonnull(getenv("SLUICE_REDIS_DATA"));
	snprintf(mark, sizeof(mark), "%s/redis-out", e2e_tmpdir("worker"));
	ck_assert_ptr_nonnull(run = submit_sleeper(mark, 120));
	ck_assert_msg(wait_lines(mark, 1, 60000), "the task never started");
	ck_assert_int_gt(pid = task_pid(mark, 1), 0);
	ck_assert_int_eq(redis_script("stop"), 0);
	t0 = sl_mono_ms();
	/* the lease is 3 s: the task must be gone within the lease (+ the 1 s kill grace and
	 * slack for a loaded machine), not at the end of its 120 s sleep */
	while (sl_mono_ms() - t0 < e2e_ms(10000) && !(gone = process_gone(pid)))
		usleep(50000);
	took = sl_mono_ms() - t0;
	if (gone)
		sleep(2); /* well past the lease */
	/* Redis comes back before any assertion, so a failure here spares the next tests. */
	ck_assert_int_eq(redis_script("start"), 0);
	ck_assert_msg(gone, "task %d still runs %lld ms into the redis outage", (int)pid,
		      (long long)took);
	ck_assert_msg(took < e2e_ms(6000), "task stopped only %lld ms into the outage (lease 3 s)",
		      (long long)took);
	/* the planner re-dispatches the lost attempt; attempt 2 finishes at once */
	state = e2e_wait_run_end(run, e2e_ms(120000));
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "run ended %s", state ? state : "-");
	ck_assert_msg(results_for(run, 1, 8000) == 0,
		      "a result of the killed attempt 1 was published");
	ck_assert_int_eq(results_for(run, 2, 8000), 1);
	ck_assert(e2e_alive(w));
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
	free(state);
	free(run);
}
END_TEST

/* 1 once the log of the service spawned as label holds needle, within ms. */
static int log_has(const char *label, const char *needle, long ms)
{
	char path[700];
	int64_t until = sl_mono_ms() + e2e_ms(ms);

	snprintf(path, sizeof(path), "%s/logs/%s.log", getenv("SLUICE_TEST_TMP"), label);
	do {
		FILE *fp = fopen(path, "r");
		char line[4096];
		int found = 0;

		while (fp && !found && fgets(line, sizeof(line), fp))
			found = strstr(line, needle) != NULL;
		if (fp)
			fclose(fp);
		if (found)
			return 1;
		usleep(100000);
	} while (sl_mono_ms() < until);
	return 0;
}

/* A second worker of a queue, started once the first holds all of the queue's partitions (the
 * way the autoscaler adds workers), gets a share of the normal band and runs tasks. With the
 * cooperative-sticky assignor it was given all 8 partitions of the normal band, and the first
 * worker ran nothing more (ADR 6). */
START_TEST(a_worker_joining_later_gets_a_share_of_the_normal_band)
{
	const char *aargs[] = {"--queue", "share", "--slots", "4", "--id", "e2e-share-a", NULL};
	const char *bargs[] = {"--queue", "share", "--slots", "4", "--id", "e2e-share-b", NULL};
	char *run, *state;
	int by_a = 0, by_b = 0;
	pid_t a, b;

	ck_assert_int_gt(a = spawn_worker("worker-share-a", aargs), 0);
	ck_assert_msg(log_has("worker-share-a", "kafka: assigned 24 partitions", 60000),
		      "the first worker never held the queue's 24 partitions");
	ck_assert_int_gt(b = spawn_worker("worker-share-b", bargs), 0);
	ck_assert_msg(log_has("worker-share-b", "kafka: assigned 12 partitions", 60000),
		      "the second worker never got 12 partitions");
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/share.yaml", NULL));
	state = e2e_wait_run_end(run, e2e_ms(90000));
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "share run ended %s",
		      state ? state : "-");
	for (int i = 0; i < 16; i++) {
		char *who = e2e_ti_field(run, "nap", i, "worker");

		ck_assert_ptr_nonnull(who);
		by_a += !strcmp(who, "e2e-share-a");
		by_b += !strcmp(who, "e2e-share-b");
		free(who);
	}
	/* 16 instances over 8 partitions: a worker holding 4 gets none with odds 2^-16. */
	ck_assert_msg(by_a > 0 && by_b > 0 && by_a + by_b == 16,
		      "first worker ran %d of 16 tasks, second %d", by_a, by_b);
	ck_assert_int_eq(e2e_stop(b, SIGTERM, 15000), 0);
	ck_assert_int_eq(e2e_stop(a, SIGTERM, 15000), 0);
	free(state);
	free(run);
}
END_TEST

/* Waits until metric name of the worker on port is want; returns the last value read. */
static long wait_metric(int port, const char *name, long want, long ms)
{
	int64_t until = sl_mono_ms() + e2e_ms(ms);
	long v;

	while ((v = e2e_port_metric(port, name)) != want && sl_mono_ms() < until)
		usleep(50000);
	return v;
}

/* With its one slot busy, the worker leases the next two dispatches ahead (ADR 22) and keeps
 * their leases alive past the lease ttl (3 s here) until the slot frees; a cancelled run's
 * leased-ahead dispatches are dropped without starting. */
START_TEST(dispatches_leased_ahead_keep_their_leases_and_drop_when_cancelled)
{
	char gate[600], *block, *run, *st;
	const char *cancel[] = {"cancel", NULL, NULL};
	int port = e2e_free_port();
	char http[32];
	pid_t w;

	snprintf(http, sizeof(http), "127.0.0.1:%d", port);
	{
		/* --lease-batch 1: the dispatches may arrive one at a time, and a refill of one
		 * (the second) must not wait for a second to arrive */
		const char *wargs[] = {"--queue", "ahead", "--slots",	  "1",	  "--lease-ahead",
				       "2",	  "--lease-batch", "1", "--id", "e2e-ahead-w",
				       "--http",  http,		   NULL};
		ck_assert_int_gt(w = spawn_worker("worker-ahead", wargs), 0);
	}
	block = submit_gated(E2E_FLOWS "/ahead_blocker.yaml", "ahead-gate-1", gate, sizeof(gate));
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/ahead.yaml", NULL));
	ck_assert_int_eq(wait_metric(port, "sluice_worker_dispatches_leased_ahead", 2, 30000), 2);
	/* 2 or 3: the blocker's own dispatch, when the worker took it from Redis (ADR 23) before
	 * Kafka brought it, waits here too until the slot frees, then is dropped as ended */
	ck_assert_int_ge(wait_metric(port, "sluice_worker_dispatches_waiting", 2, 30000), 2);
	/* Past the planner's 3 s lease ttl: only renewals keep the reaper from re-dispatching. */
	sleep(5);
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_dispatches_leased_ahead"), 2);
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_tasks_started_total"), 1);
	open_gate(gate);
	st = e2e_wait_run_end(run, e2e_ms(30000));
	ck_assert_str_eq(st ? st : "-", "SUCCEEDED");
	free(st);
	for (int i = 0; i < 4; i++) {
		char *a = e2e_ti_field(run, "quick", i, "attempt");

		ck_assert_msg(a && !strcmp(a, "1"), "quick[%d] ran as attempt %s", i, a ? a : "-");
		free(a);
	}
	st = e2e_wait_run_end(block, e2e_ms(30000));
	ck_assert_str_eq(st ? st : "-", "SUCCEEDED");
	free(st);
	free(block);
	free(run);
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_tasks_started_total"), 5);

	/* Again, and the run is cancelled while two of its dispatches are leased ahead. */
	block = submit_gated(E2E_FLOWS "/ahead_blocker.yaml", "ahead-gate-2", gate, sizeof(gate));
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/ahead.yaml", NULL));
	ck_assert_int_eq(wait_metric(port, "sluice_worker_dispatches_leased_ahead", 2, 30000), 2);
	cancel[1] = run;
	ck_assert_int_eq(e2e_cli(NULL, NULL, cancel), 0);
	/* the next renewal (every ttl/3) finds the leases gone */
	ck_assert_int_eq(wait_metric(port, "sluice_worker_dispatches_leased_ahead", 0, 10000), 0);
	open_gate(gate);
	st = e2e_wait_run_end(block, e2e_ms(30000));
	ck_assert_str_eq(st ? st : "-", "SUCCEEDED");
	free(st);
	st = e2e_run_field(run, "state");
	ck_assert_str_eq(st ? st : "-", "CANCELLED");
	free(st);
	/* the blocker only: nothing of the cancelled run started */
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_tasks_started_total"), 6);
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
	free(block);
	free(run);
}
END_TEST

/* With its one slot busy, the worker refills what it leases ahead only once two can be leased
 * (--lease-batch 2 of --lease-ahead 4): a lease round trip, with its fsync, for every two
 * tasks instead of every one. */
START_TEST(leases_ahead_are_refilled_two_at_a_time)
{
	char http[32], *run, *st;
	int port = e2e_free_port();
	long calls, leases;
	pid_t w;

	snprintf(http, sizeof(http), "127.0.0.1:%d", port);
	{
		const char *wargs[] = {"--queue", "lease-pairs", "--slots", "1", "--lease-ahead",
				       "4", "--lease-batch", "2", "--id", "e2e-pairs-w", "--http",
				       http, NULL};
		ck_assert_int_gt(w = spawn_worker("worker-pairs", wargs), 0);
	}
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/lease_pairs.yaml", NULL));
	st = e2e_wait_run_end(run, e2e_ms(60000));
	ck_assert_str_eq(st ? st : "-", "SUCCEEDED");
	free(st);
	leases = e2e_port_metric(port, "sluice_worker_leases_taken_total");
	calls = e2e_port_metric(port, "sluice_worker_lease_calls_total");
	/* one at a time (--lease-batch 1) takes about 60 calls */
	ck_assert_msg(leases == 60 && calls > 0 && calls <= 40,
		      "60 tasks: %ld leases in %ld calls", leases, calls);
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
	free(run);
}
END_TEST

/* A worker whose slots idle takes the dispatches that wait in the partitions of another
 * worker of its queue (ADR 23): here the other is stopped (SIGSTOP), so without that they
 * would wait for its session to time out (10 s) and the group to move its partitions. */
START_TEST(an_idle_worker_takes_dispatches_waiting_for_a_stopped_one)
{
	int aport = e2e_free_port(), bport = e2e_free_port();
	char ahttp[32], bhttp[32], *run, *state;
	int by_b = 0;
	int64_t submitted, took_ms;
	pid_t a, b;

	snprintf(ahttp, sizeof(ahttp), "127.0.0.1:%d", aport);
	snprintf(bhttp, sizeof(bhttp), "127.0.0.1:%d", bport);
	{
		const char *aargs[] = {"--queue", "take", "--slots", "4", "--id", "e2e-take-a",
				       "--http", ahttp, NULL};
		const char *bargs[] = {"--queue", "take", "--slots", "4", "--id", "e2e-take-b",
				       "--http", bhttp, NULL};

		ck_assert_int_gt(a = spawn_worker("worker-take-a", aargs), 0);
		ck_assert_msg(log_has("worker-take-a", "kafka: assigned 24 partitions", 60000),
			      "the first worker never held the queue's 24 partitions");
		ck_assert_int_gt(b = spawn_worker("worker-take-b", bargs), 0);
	}
	ck_assert_msg(log_has("worker-take-b", "kafka: assigned 12 partitions", 60000),
		      "the second worker never got 12 partitions");
	ck_assert_msg(log_has("worker-take-a", "kafka: assigned 12 partitions", 60000),
		      "the first worker never kept 12 partitions");
	ck_assert_int_eq(kill(a, SIGSTOP), 0);
	submitted = sl_mono_ms();
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/take.yaml", NULL));
	state = e2e_wait_run_end(run, 20000);
	took_ms = sl_mono_ms() - submitted;
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "take run ended %s",
		      state ? state : "-");
	ck_assert_msg(took_ms < 8000, "the run took %lld ms: its dispatches waited for the "
		      "stopped worker's session to time out", (long long)took_ms);
	for (int i = 0; i < 16; i++) {
		char *who = e2e_ti_field(run, "nap", i, "worker");
		char *att = e2e_ti_field(run, "nap", i, "attempt");

		ck_assert_ptr_nonnull(who);
		by_b += !strcmp(who, "e2e-take-b");
		ck_assert_msg(att && !strcmp(att, "1"), "nap[%d] ran as attempt %s", i,
			      att ? att : "-");
		free(who);
		free(att);
	}
	ck_assert_int_eq(by_b, 16);
	ck_assert_int_gt(e2e_port_metric(bport, "sluice_worker_tasks_taken_from_others_total"), 0);
	/* Woken, the first worker fetches the dispatches taken from it and runs none. */
	ck_assert_int_eq(kill(a, SIGCONT), 0);
	sleep(3);
	ck_assert_int_eq(e2e_port_metric(aport, "sluice_worker_tasks_started_total"), 0);
	ck_assert_int_eq(e2e_stop(b, SIGTERM, 15000), 0);
	ck_assert_int_eq(e2e_stop(a, SIGTERM, 15000), 0);
	free(state);
	free(run);
}
END_TEST

/* A copy of a dispatch whose task already ended here, fetched before the planner recorded its
 * result (the lease still names this worker, so the lease script says "ok"), is not run again:
 * such copies come from Kafka after the worker took the instance from Redis (ADR 23), or from
 * a redelivery. The planner is stopped so that the result stays unrecorded. */
START_TEST(a_copy_of_a_task_that_ended_here_is_not_run_again)
{
	char gate[600], log[600], p1[700], p2[700], key[700], *run, *st;
	const char *params[] = {p1, p2, NULL};
	int port = e2e_free_port();
	char http[32];
	redisReply *r;
	long done;
	int stored;
	pid_t w;

	snprintf(http, sizeof(http), "127.0.0.1:%d", port);
	{
		const char *wargs[] = {"--queue", "again", "--slots", "1", "--id", "e2e-again-w",
				       "--http", http, NULL};
		ck_assert_int_gt(w = spawn_worker("worker-again", wargs), 0);
	}
	snprintf(gate, sizeof(gate), "%s/again-gate", e2e_tmpdir("worker"));
	snprintf(log, sizeof(log), "%s/again-log", e2e_tmpdir("worker"));
	unlink(gate);
	unlink(log);
	snprintf(p1, sizeof(p1), "log=%s", log);
	snprintf(p2, sizeof(p2), "gate=%s", gate);
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/again.yaml", params));
	ck_assert_msg(wait_lines(log, 1, 60000), "the task never ran");
	/* Nothing may fail while the planner is stopped: the suite's other tests need it. */
	kill(planner, SIGSTOP);
	open_gate(gate);
	done = wait_metric(port, "sluice_worker_tasks_succeeded_total", 1, 30000);
	snprintf(key, sizeof(key), "sluice:{%s}:disp:once", run);
	r = sl_state_command(e2e_state(), "HGET %s -1", key);
	stored = r && r->type == REDIS_REPLY_STRING;
	if (done == 1 && stored) {
		e2e_produce("sluice.tasks.again", run, r->str, r->len);
		sleep(2);
	}
	if (r)
		freeReplyObject(r);
	kill(planner, SIGCONT);
	ck_assert_int_eq(done, 1);
	ck_assert_msg(stored, "no stored dispatch at %s", key);
	st = e2e_wait_run_end(run, e2e_ms(30000));
	ck_assert_str_eq(st ? st : "-", "SUCCEEDED");
	ck_assert_int_eq(count_lines(log), 1);
	ck_assert_int_eq(e2e_port_metric(port, "sluice_worker_tasks_started_total"), 1);
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
	free(st);
	free(run);
}
END_TEST

/* The same past the 64 instances the worker remembers: a copy of a dispatch whose task ended
 * here 99 tasks ago, whose result is not recorded yet (the lease still names this worker),
 * is refused by the lease script ("held") and dropped. Before that, the script said "ok" to
 * a lease's holder, and a planner restarted after a big fan-out ran such tasks twice. */
START_TEST(a_copy_reaching_the_holder_after_many_other_tasks_is_not_run_again)
{
	char gate[600], log[600], p1[700], p2[700], key[700], lease[700], *run, *st;
	const char *params[] = {p1, p2, NULL};
	int port = e2e_free_port();
	char http[32];
	redisReply *r = NULL, *ttl = NULL, *got = NULL;
	long done, dropped = -1, dropped_before = -1, started;
	int first = -1;
	pid_t w;

	snprintf(http, sizeof(http), "127.0.0.1:%d", port);
	{
		const char *wargs[] = {"--queue", "again-many", "--slots", "1", "--id",
				       "e2e-again-many-w", "--http", http, NULL};
		ck_assert_int_gt(w = spawn_worker("worker-again-many", wargs), 0);
	}
	snprintf(gate, sizeof(gate), "%s/again-many-gate", e2e_tmpdir("worker"));
	snprintf(log, sizeof(log), "%s/again-many-log", e2e_tmpdir("worker"));
	unlink(gate);
	unlink(log);
	snprintf(p1, sizeof(p1), "log=%s", log);
	snprintf(p2, sizeof(p2), "gate=%s", gate);
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/again_many.yaml", params));
	ck_assert_msg(wait_lines(log, 1, 60000), "no task ran");
	sleep(1); /* every dispatch sent (one chunk of 100) */
	kill(planner, SIGSTOP); /* the results stay unrecorded */
	open_gate(gate);
	done = wait_metric(port, "sluice_worker_tasks_succeeded_total", 100, 30000);
	snprintf(key, sizeof(key), "sluice:{%s}:disp:once", run);
	/* the task that ran first (the log is in the order they ran): 99 ended after it */
	{
		FILE *f = fopen(log, "r");

		if (!f || fscanf(f, "%d", &first) != 1)
			first = -1;
		if (f)
			fclose(f);
	}
	snprintf(lease, sizeof(lease), "sluice:{%s}:lease:once:%d", run, first);
	if (done == 100 && first >= 0) {
		r = sl_state_command(e2e_state(), "HGET %s %d", key, first);
		ttl = sl_state_command(e2e_state(), "PTTL %s", lease);
	}
	if (r && r->type == REDIS_REPLY_STRING && ttl && ttl->type == REDIS_REPLY_INTEGER &&
	    ttl->integer > 700) {
		int64_t until = sl_mono_ms() + e2e_ms(10000);

		dropped_before = e2e_port_metric(port, "sluice_worker_dispatches_dropped_total");
		e2e_produce("sluice.tasks.again-many", run, r->str, r->len);
		while ((dropped = e2e_port_metric(port, "sluice_worker_dispatches_dropped_total")) <=
			       dropped_before &&
		       sl_mono_ms() < until)
			usleep(20000);
		/* still there: the copy met the lease, not its lapse */
		got = sl_state_command(e2e_state(), "GET %s", lease);
	}
	started = e2e_port_metric(port, "sluice_worker_tasks_started_total");
	kill(planner, SIGCONT);
	ck_assert_int_eq(done, 100);
	ck_assert_msg(r && r->type == REDIS_REPLY_STRING, "no stored dispatch at %s", key);
	ck_assert_msg(ttl && ttl->type == REDIS_REPLY_INTEGER && ttl->integer > 700,
		      "the lease of once[%d] lapses in %lld ms: too soon to send a copy",
		      first, ttl ? (long long)ttl->integer : -1LL);
	printf("again-many: the copy sent %lld ms before the lease would lapse; dispatches "
	       "dropped: %ld before it, %ld after\n",
	       ttl && ttl->type == REDIS_REPLY_INTEGER ? (long long)ttl->integer : -1LL,
	       dropped_before, dropped);
	ck_assert_int_ge(dropped_before, 0);
	ck_assert_int_gt(dropped, dropped_before);
	ck_assert_str_eq(got && got->type == REDIS_REPLY_STRING ? got->str : "-",
			 "e2e-again-many-w:1");
	ck_assert_int_eq(started, 100);
	st = e2e_wait_run_end(run, e2e_ms(30000));
	ck_assert_str_eq(st ? st : "-", "SUCCEEDED");
	ck_assert_int_eq(count_lines(log), 100);
	ck_assert_int_eq(e2e_stop(w, SIGTERM, 15000), 0);
	freeReplyObject(r);
	freeReplyObject(ttl);
	freeReplyObject(got);
	free(st);
	free(run);
}
END_TEST

START_TEST(planner_serves_metrics)
{
	static char body[65536];

	ck_assert_int_eq(e2e_http_get(planner_port, "/healthz", body, sizeof(body)), 200);
	ck_assert_int_eq(e2e_http_get(planner_port, "/readyz", body, sizeof(body)), 200);
	ck_assert_int_eq(e2e_http_get(planner_port, "/metrics", body, sizeof(body)), 200);
	/* the runs of the tests above went through this planner */
	ck_assert_msg(e2e_metric(body, "sluice_planner_run_requests_total") >= 4, "%s", body);
	ck_assert_msg(e2e_metric(body, "sluice_planner_task_results_total") >= 4, "%s", body);
	ck_assert_msg(e2e_metric(body, "sluice_planner_flows") >= 4, "%s", body);
}
END_TEST

int main(void)
{
	const TTest *const tests[] = {
		health_endpoints_answer,
		high_priority_dispatches_start_first,
		inline_builtins_run_while_every_slot_is_busy,
		untagged_inline_builtins_run_without_a_lease,
		sigterm_lets_the_running_task_finish,
		sigterm_hands_back_at_the_drain_timeout,
		a_worker_killed_with_sigkill_leaves_no_task_running,
		redis_outage_past_the_lease_kills_the_task_and_publishes_nothing,
		planner_serves_metrics,
		a_worker_joining_later_gets_a_share_of_the_normal_band,
		dispatches_leased_ahead_keep_their_leases_and_drop_when_cancelled,
		leases_ahead_are_refilled_two_at_a_time,
		an_idle_worker_takes_dispatches_waiting_for_a_stopped_one,
		a_copy_of_a_task_that_ended_here_is_not_run_again,
		a_copy_reaching_the_holder_after_many_other_tasks_is_not_run_again,
		NULL,
	};

	return e2e_run_suite("e2e_worker", start_services, stop_services, 300, tests);
}
