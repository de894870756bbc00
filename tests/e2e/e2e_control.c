/* e2e_control.c - run control end to end: cancellation kills the run's tasks on every worker,
 * cached results skip execution (and reprocess bypasses them), concurrency limits per tag
 * hold across workers and free the slot of a crashed worker. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/util.h"

#define LEASE_TTL_MS 1500

static pid_t planner, workers[2];
/* Workers a test starts for itself; stopped here too, in case the test failed halfway. */
static pid_t extra[4];

static pid_t spawn_extra(const char *label, const char *const *args)
{
	pid_t pid = e2e_spawn(label, "sluice-worker", args, NULL);

	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		if (extra[i] <= 0) {
			extra[i] = pid;
			break;
		}
	return pid;
}

static void stop_extra(pid_t pid, int sig)
{
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		if (extra[i] == pid)
			extra[i] = 0;
	if (pid > 0)
		e2e_stop(pid, sig, 15000);
}

static void start_services(void)
{
	const char *pargs[] = {"--flows-dir", SLUICE_SOURCE_DIR "/examples", "--lease-ttl", "1500ms",
			       NULL};
	const char *w1[] = {"--slots", "4", "--id", "ctl-w1", NULL};
	const char *w2[] = {"--slots", "4", "--id", "ctl-w2", NULL};

	e2e_require_env();
	planner = e2e_spawn("control-planner", "sluice-planner", pargs, NULL);
	workers[0] = e2e_spawn("control-worker1", "sluice-worker", w1, NULL);
	workers[1] = e2e_spawn("control-worker2", "sluice-worker", w2, NULL);
	ck_assert_int_gt(planner, 0);
	ck_assert_int_gt(workers[0], 0);
	ck_assert_int_gt(workers[1], 0);
}

static void stop_services(void)
{
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		stop_extra(extra[i], SIGKILL);
	e2e_stop(workers[0], SIGTERM, 15000);
	e2e_stop(workers[1], SIGTERM, 15000);
	e2e_stop(planner, SIGTERM, 15000);
}

/* Submits flow with one "dir=<dir>" parameter (dir may be NULL) and the given intent, waits
 * for the end; returns the exit code and the run id (caller frees). */
static int submit_wait(const char *flow, const char *dir, const char *intent, char **run)
{
	char param[600];
	const char *args[12];
	char *out = NULL, *nl;
	int n = 0, code;

	args[n++] = "submit";
	args[n++] = flow;
	args[n++] = "--wait";
	if (dir) {
		snprintf(param, sizeof(param), "dir=%s", dir);
		args[n++] = "-p";
		args[n++] = param;
	}
	if (intent) {
		args[n++] = "--intent";
		args[n++] = intent;
	}
	args[n] = NULL;
	code = e2e_cli(&out, NULL, args);
	if (out && (nl = strchr(out, '\n')))
		*nl = '\0';
	*run = out;
	return code;
}

static char *submit_dir(const char *flow, const char *dir)
{
	char param[600];
	const char *params[] = {param, NULL};

	snprintf(param, sizeof(param), "dir=%s", dir);
	return e2e_submit(flow, params);
}

/* The pid written to <dir>/<i>.pid, or 0 when not there yet. */
static pid_t pid_file(const char *dir, int i)
{
	char path[700];
	FILE *f;
	long pid = 0;

	snprintf(path, sizeof(path), "%s/%d.pid", dir, i);
	if (!(f = fopen(path, "r")))
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return (pid_t)pid;
}

/* A process counts as gone when it does not exist or is a zombie. */
static int pid_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	int alive = 0;

	if (kill(pid, 0) != 0 && errno == ESRCH)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return 0;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) && p[1] == ' ')
		alive = p[2] != 'Z' && p[2] != 'X';
	fclose(f);
	return alive;
}

/* Number of live processes whose environment has SLUICE_RUN_ID=<run>. */
static int processes_of_run(const char *run)
{
	char needle[256], path[300], env[16384];
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	snprintf(needle, sizeof(needle), "SLUICE_RUN_ID=%s", run);
	while ((e = readdir(d))) {
		int fd;
		ssize_t len;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/environ", e->d_name);
		if ((fd = open(path, O_RDONLY)) < 0)
			continue;
		len = read(fd, env, sizeof(env) - 1);
		close(fd);
		if (len <= 0)
			continue;
		env[len] = '\0';
		for (ssize_t off = 0; off < len; off += (ssize_t)strlen(env + off) + 1)
			if (!strcmp(env + off, needle) && pid_alive(atoi(e->d_name)))
				n++;
	}
	closedir(d);
	return n;
}

static int count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	int n = 0, c;

	if (!f)
		return 0;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static int ti_is(const char *run, const char *task, int idx, const char *field, const char *want)
{
	char *v = e2e_ti_field(run, task, idx, field);
	int eq = v && !strcmp(v, want);

	free(v);
	return eq;
}

/* Task and map index of pid file i of control_cancel.yaml. */
static const char *cancel_task(int i, int *idx)
{
	*idx = i % 2;
	return i < 2 ? "long" : "other";
}

START_TEST(cancel_kills_tasks_on_every_worker)
{
	const char *dir = e2e_tmpdir("cancel");
	const char *args[3] = {"cancel", NULL, NULL};
	const char *za[] = {"--slots", "2", "--id", "ctl-cancelz", "--queue", "ctlcancel", NULL};
	pid_t z = spawn_extra("control-cancelz", za);
	char *run, *state, *w[4];
	pid_t pids[4] = {0};
	int64_t deadline, cancelled_at, all_gone_ms = -1;
	int running = 0, idx, spread = 0;

	ck_assert_int_gt(z, 0);
	run = submit_dir(E2E_FLOWS "/control_cancel.yaml", dir);
	ck_assert_ptr_nonnull(run);
	deadline = sl_mono_ms() + e2e_ms(30000);
	while (running < 4 && sl_mono_ms() < deadline) {
		running = 0;
		for (int i = 0; i < 4; i++) {
			const char *task = cancel_task(i, &idx);
			if ((pids[i] = pid_file(dir, i)) > 0 && pid_alive(pids[i]) &&
			    ti_is(run, task, idx, "state", "RUNNING"))
				running++;
		}
		if (running < 4)
			usleep(100000);
	}
	ck_assert_msg(running == 4, "only %d of 4 tasks started", running);
	ck_assert_int_eq(processes_of_run(run), 4);
	for (int i = 0; i < 4; i++) {
		const char *task = cancel_task(i, &idx);
		w[i] = e2e_ti_field(run, task, idx, "worker");
		ck_assert_ptr_nonnull(w[i]);
	}
	for (int i = 1; i < 4; i++)
		spread |= strcmp(w[i], w[0]) != 0;
	for (int i = 0; i < 4; i++)
		free(w[i]);
	ck_assert_msg(spread, "the tasks should run on more than one worker");

	args[1] = run;
	ck_assert_int_eq(e2e_cli(NULL, NULL, args), 0);
	cancelled_at = sl_mono_ms();
	deadline = cancelled_at + e2e_ms(15000);
	while (sl_mono_ms() < deadline) {
		int alive = 0;
		for (int i = 0; i < 4; i++)
			alive += pid_alive(pids[i]);
		if (!alive && !processes_of_run(run)) {
			all_gone_ms = sl_mono_ms() - cancelled_at;
			break;
		}
		usleep(100000);
	}
	ck_assert_msg(all_gone_ms >= 0, "task processes of run %s still alive after cancel", run);
	/* renewals run every ttl/3, and SIGTERM ends sleep at once */
	ck_assert_msg(all_gone_ms <= e2e_ms(3 * LEASE_TTL_MS + 2000),
		      "tasks took %lld ms to die", (long long)all_gone_ms);
	state = e2e_run_field(run, "state");
	ck_assert_str_eq(state, "CANCELLED");
	free(state);
	/* no worker published a result for the killed attempts: they stay CANCELLED */
	sleep(1);
	for (int i = 0; i < 4; i++) {
		const char *task = cancel_task(i, &idx);
		ck_assert_msg(ti_is(run, task, idx, "state", "CANCELLED"), "%s[%d] is not CANCELLED",
			      task, idx);
	}
	state = e2e_run_field(run, "state");
	ck_assert_str_eq(state, "CANCELLED");
	free(state);
	stop_extra(z, SIGTERM);
	free(run);
}
END_TEST

START_TEST(second_run_is_served_from_cache_and_reprocess_runs_again)
{
	const char *dir = e2e_tmpdir("cache");
	char count[700], keyed[700];
	char *r1 = NULL, *r2 = NULL, *r3 = NULL, *r4 = NULL, *v;
	json_t *out;

	snprintf(count, sizeof(count), "%s/count", dir);
	snprintf(keyed, sizeof(keyed), "%s/keyed", dir);
	ck_assert_int_eq(submit_wait(E2E_FLOWS "/control_cache.yaml", dir, NULL, &r1), 0);
	ck_assert_int_eq(count_lines(count), 1);
	ck_assert_int_eq(count_lines(keyed), 1);
	ck_assert(!ti_is(r1, "compute", -1, "worker", "cache"));

	/* same inputs: nothing executes, outputs and downstream as before */
	ck_assert_int_eq(submit_wait(E2E_FLOWS "/control_cache.yaml", dir, NULL, &r2), 0);
	ck_assert_int_eq(count_lines(count), 1);
	ck_assert_int_eq(count_lines(keyed), 1);
	ck_assert(ti_is(r2, "compute", -1, "state", "SUCCEEDED"));
	ck_assert(ti_is(r2, "compute", -1, "worker", "cache"));
	ck_assert(ti_is(r2, "compute", -1, "cached", r1));
	ck_assert(ti_is(r2, "keyed", -1, "cached", r1));
	out = e2e_task_output(r2, "compute", -1);
	ck_assert(json_is_integer(out) && json_integer_value(out) == 42);
	json_decref(out);
	out = e2e_task_output(r2, "report", -1);
	ck_assert(json_is_integer(out) && json_integer_value(out) == 42);
	json_decref(out);
	v = e2e_ti_field(r2, "report", -1, "worker");
	ck_assert(v && strcmp(v, "cache")); /* not cached: it executed */
	free(v);

	/* reprocess bypasses the cache and refreshes it */
	ck_assert_int_eq(submit_wait(E2E_FLOWS "/control_cache.yaml", dir, "reprocess", &r3), 0);
	ck_assert_int_eq(count_lines(count), 2);
	ck_assert_int_eq(count_lines(keyed), 2);
	ck_assert(!ti_is(r3, "compute", -1, "worker", "cache"));

	/* keyed has cache_ttl 2s: once that passed it runs again; compute (1h) still hits,
	 * now with the entry reprocess wrote */
	sleep(3);
	ck_assert_int_eq(submit_wait(E2E_FLOWS "/control_cache.yaml", dir, NULL, &r4), 0);
	ck_assert_int_eq(count_lines(count), 2);
	ck_assert_int_eq(count_lines(keyed), 3);
	ck_assert(ti_is(r4, "compute", -1, "cached", r3));
	ck_assert(!ti_is(r4, "keyed", -1, "worker", "cache"));
	free(r1);
	free(r2);
	free(r3);
	free(r4);
}
END_TEST

START_TEST(tag_limit_holds_across_workers)
{
	char *run = NULL, *w;
	long start[6], end[6];
	int max_overlap = 0, workers_seen = 0;
	char first_worker[128] = "";

	ck_assert_int_eq(submit_wait(E2E_FLOWS "/control_limit.yaml", NULL, NULL, &run), 0);
	for (int i = 0; i < 6; i++) {
		char *s = e2e_ti_field(run, "nap", i, "started_ms");
		char *f = e2e_ti_field(run, "nap", i, "finished_ms");
		ck_assert(s && f);
		start[i] = atol(s);
		end[i] = atol(f);
		free(s);
		free(f);
		w = e2e_ti_field(run, "nap", i, "worker");
		ck_assert_ptr_nonnull(w);
		if (!first_worker[0])
			sl_strlcpy(first_worker, w, sizeof(first_worker));
		else if (strcmp(first_worker, w))
			workers_seen = 2;
		free(w);
	}
	/* the most instances running at any instant is reached at some instance's start */
	for (int i = 0; i < 6; i++) {
		int n = 0;
		for (int j = 0; j < 6; j++)
			n += start[j] <= start[i] && start[i] < end[j];
		if (n > max_overlap)
			max_overlap = n;
	}
	for (int i = 0; i < 6; i++)
		fprintf(stderr, "nap[%d]: %ld .. %ld\n", i, start[i] - start[0], end[i] - start[0]);
	ck_assert_msg(max_overlap <= 2, "%d instances of tag ctl_db ran at once", max_overlap);
	ck_assert_msg(max_overlap == 2, "the limit was never used fully (max %d)", max_overlap);
	if (workers_seen < 2)
		fprintf(stderr, "note: all instances ran on one worker this time\n");
	free(run);
}
END_TEST

START_TEST(crashed_holder_frees_its_slot)
{
	const char *dir = e2e_tmpdir("crash");
	const char *xa[] = {"--slots", "2", "--id", "ctl-crashx", "--queue", "ctlcrash", NULL};
	const char *ya[] = {"--slots", "2", "--id", "ctl-crashy", "--queue", "ctlcrash", NULL};
	pid_t x, y = -1, orphan;
	char *run;
	int held = -1, waiting = -1;
	int64_t deadline;

	x = spawn_extra("control-crashx", xa);
	ck_assert_int_gt(x, 0);
	run = submit_dir(E2E_FLOWS "/control_crash.yaml", dir);
	ck_assert_ptr_nonnull(run);
	/* x runs one instance; the other waits for the tag's only slot */
	deadline = sl_mono_ms() + e2e_ms(30000);
	while ((held < 0 || waiting < 0) && sl_mono_ms() < deadline) {
		held = waiting = -1;
		for (int i = 0; i < 2; i++) {
			if (ti_is(run, "hold", i, "state", "RUNNING"))
				held = i;
			else if (ti_is(run, "hold", i, "waiting_for", "ctl_solo"))
				waiting = i;
		}
		usleep(50000);
	}
	ck_assert_msg(held >= 0 && waiting >= 0, "no instance held the slot while one waited");
	ck_assert(ti_is(run, "hold", held, "worker", "ctl-crashx"));
	deadline = sl_mono_ms() + e2e_ms(10000);
	while (!(orphan = pid_file(dir, held)) && sl_mono_ms() < deadline)
		usleep(50000);

	stop_extra(x, SIGKILL);
	if (orphan > 0)
		kill(orphan, SIGKILL); /* the task itself is not what is tested here */
	y = spawn_extra("control-crashy", ya);
	ck_assert_int_gt(y, 0);

	/* the slot of x lapses with its lease; the waiting instance then runs on y */
	deadline = sl_mono_ms() + e2e_ms(30000);
	while (!ti_is(run, "hold", waiting, "state", "SUCCEEDED") && sl_mono_ms() < deadline)
		usleep(100000);
	ck_assert_msg(ti_is(run, "hold", waiting, "state", "SUCCEEDED"),
		      "the waiting instance never got the slot of the crashed worker");
	ck_assert(ti_is(run, "hold", waiting, "worker", "ctl-crashy"));
	stop_extra(y, SIGTERM);
	free(run);
}
END_TEST

int main(void)
{
	const TTest *const tests[] = {
		cancel_kills_tasks_on_every_worker,
		second_run_is_served_from_cache_and_reprocess_runs_again,
		tag_limit_holds_across_workers,
		crashed_holder_frees_its_slot,
		NULL,
	};

	return e2e_run_suite("e2e_control", start_services, stop_services, 180, tests);
}
