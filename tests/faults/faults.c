/* faults.c - the fault-injection suite: kills, pauses and restarts services, Redis and Kafka
 * at random moments while runs are in flight, then checks the invariants of
 * docs/guarantees.md (every accepted run ends, every instance recorded once from its final
 * attempt, no fencing token executed twice, one run per dropped file). SLUICE_SOAK=N repeats
 * each scenario N times as often. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

#define MAX_RUNS 64
#define MAX_WORKERS 64
#define FLOW FAULTS_FLOWS "/faults.yaml"

static char base[4096], exec_log[4200], pidfile[4200];

/* The runs a scenario submitted (accepted by the CLI), checked by check_invariants(). */
static char *runs[MAX_RUNS];
static int runs_n[MAX_RUNS];
static int nruns;

static pid_t planner;
static pid_t wpid[MAX_WORKERS];
static char wid[MAX_WORKERS][32];
static int nworkers;
static int spawned; /* labels of log files */

static int reps(int n)
{
	const char *s = getenv("SLUICE_SOAK");
	int k = s ? atoi(s) : 1;

	return n * (k > 0 ? k : 1);
}

static long rnd(long lo, long hi)
{
	return lo + random() % (hi - lo + 1);
}

static void msleep(long ms)
{
	usleep((useconds_t)ms * 1000);
}

/* Every spawned pid goes to a file so the parent can kill whatever a failed test left. */
static pid_t track(pid_t pid)
{
	FILE *f = fopen(pidfile, "a");

	ck_assert_int_gt(pid, 0);
	if (f) {
		fprintf(f, "%d\n", (int)pid);
		fclose(f);
	}
	return pid;
}

static pid_t spawn_planner_with(const char *const *env, const char *redis_url)
{
	const char *args[] = {"--flows-dir", SLUICE_SOURCE_DIR "/examples", "--lease-ttl", "2s",
			      "--lease-grace", "2s", "--dispatch-timeout", "6s", "--reap-interval",
			      "500ms", redis_url ? "--redis-url" : NULL, redis_url, NULL};
	char label[64];

	snprintf(label, sizeof(label), "faults-planner-%d", ++spawned);
	return track(e2e_spawn(label, "sluice-planner", args, env));
}

static void start_planner(const char *const *env)
{
	planner = spawn_planner_with(env, NULL);
}

/* Starts a worker of the faults queue; returns its slot in wpid/wid. */
static int start_worker_at(const char *redis_url)
{
	int i = nworkers++;
	const char *args[] = {"--queue",     "faults", "--slots", "2",
			      "--lease-ttl", "2s",     "--id",    wid[i],
			      "--heartbeat", "500ms",  redis_url ? "--redis-url" : NULL,
			      redis_url,     NULL};
	char label[64];

	ck_assert_int_lt(i, MAX_WORKERS);
	snprintf(wid[i], sizeof(wid[i]), "faults-w%d-%d", i, (int)getpid());
	snprintf(label, sizeof(label), "faults-worker-%d", ++spawned);
	wpid[i] = track(e2e_spawn(label, "sluice-worker", args, NULL));
	return i;
}

static int start_worker(void)
{
	return start_worker_at(NULL);
}

static void stop_all(void)
{
	for (int i = 0; i < nworkers; i++)
		if (wpid[i] > 0) {
			kill(wpid[i], SIGCONT);
			e2e_stop(wpid[i], SIGTERM, e2e_ms(15000));
			wpid[i] = 0;
		}
	nworkers = 0;
	e2e_stop(planner, SIGTERM, e2e_ms(15000));
	planner = 0;
}

static int worker_slot(const char *id)
{
	for (int i = 0; i < nworkers; i++)
		if (id && !strcmp(wid[i], id))
			return i;
	return -1;
}

/* Submits the faults flow with n instances sleeping ms each; records the run. */
static char *submit(int n, const char *ms)
{
	char pn[32], ps[64], pl[4300];
	const char *params[] = {pn, ps, pl, NULL};
	char *run;

	snprintf(pn, sizeof(pn), "n=%d", n);
	snprintf(ps, sizeof(ps), "ms=%s", ms);
	snprintf(pl, sizeof(pl), "log=%s", exec_log);
	run = e2e_submit(FLOW, params);
	ck_assert_msg(run != NULL, "submit failed");
	ck_assert_int_lt(nruns, MAX_RUNS);
	runs[nruns] = run;
	runs_n[nruns++] = n;
	return run;
}

/* Waits until some work instance of run is RUNNING; returns the worker slot holding it
 * (-1 on timeout). */
static int wait_running(const char *run, int n, long timeout_ms)
{
	int64_t deadline = sl_mono_ms() + e2e_ms(timeout_ms);

	while (sl_mono_ms() < deadline) {
		for (int i = 0; i < n; i++) {
			char *st = e2e_ti_field(run, "work", i, "state");
			char *w = st && !strcmp(st, "RUNNING") ? e2e_ti_field(run, "work", i, "worker")
							       : NULL;
			int slot = worker_slot(w);

			free(st);
			free(w);
			if (slot >= 0 && wpid[slot] > 0)
				return slot;
		}
		msleep(50);
	}
	return -1;
}

static long field_long(const char *run, const char *field)
{
	char *s = e2e_run_field(run, field);
	long v = s ? atol(s) : 0;

	free(s);
	return v;
}

/* Checks one instance: SUCCEEDED, output {"v": want, "a": attempt} with attempt the
 * instance's current (final) attempt. Returns that attempt. */
static long check_instance(const char *scenario, const char *run, const char *task, int idx,
			   long want)
{
	char *st = e2e_ti_field(run, task, idx, "state");
	char *att = e2e_ti_field(run, task, idx, "attempt");
	json_t *out = e2e_task_output(run, task, idx);
	long a = att ? atol(att) : -1;

	ck_assert_msg(st && !strcmp(st, "SUCCEEDED"), "%s: run %s %s[%d] is %s", scenario, run,
		      task, idx, st ? st : "missing");
	ck_assert_msg(out && json_is_object(out), "%s: run %s %s[%d] has no output object",
		      scenario, run, task, idx);
	ck_assert_msg(json_integer_value(json_object_get(out, "v")) == want,
		      "%s: run %s %s[%d] output %lld, want %ld", scenario, run, task, idx,
		      (long long)json_integer_value(json_object_get(out, "v")), want);
	/* a stale attempt's result applied is the bug fencing exists for */
	ck_assert_msg(json_integer_value(json_object_get(out, "a")) == a,
		      "%s: run %s %s[%d] output comes from attempt %lld, final attempt is %ld",
		      scenario, run, task, idx,
		      (long long)json_integer_value(json_object_get(out, "a")), a);
	json_decref(out);
	free(st);
	free(att);
	return a;
}

struct exec_line {
	char key[256]; /* run|task|idx|attempt */
	int count;
};

/* Reads the execution log: per distinct line, how often it was written. */
static struct exec_line *read_exec_log(size_t *n)
{
	FILE *f = fopen(exec_log, "r");
	struct exec_line *v = NULL;
	size_t cap = 0;
	char line[512];

	*n = 0;
	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		size_t i;

		line[strcspn(line, "\n")] = '\0';
		for (i = 0; i < *n && strcmp(v[i].key, line); i++)
			;
		if (i < *n) {
			v[i].count++;
			continue;
		}
		if (*n == cap) {
			cap = cap ? cap * 2 : 256;
			v = realloc(v, cap * sizeof(*v));
			ck_assert_ptr_nonnull(v);
		}
		sl_strlcpy(v[*n].key, line, sizeof(v[*n].key));
		v[(*n)++].count = 1;
	}
	fclose(f);
	return v;
}

/* Executions of one instance in the log, and whether its attempt `a` is among them. */
static int executions(const struct exec_line *v, size_t n, const char *run, const char *task,
		      int idx, long a, int *has_final)
{
	char prefix[256], final[300];
	int count = 0;

	snprintf(prefix, sizeof(prefix), "%s|%s|%d|", run, task, idx);
	snprintf(final, sizeof(final), "%s%ld", prefix, a);
	*has_final = 0;
	for (size_t i = 0; i < n; i++)
		if (!strncmp(v[i].key, prefix, strlen(prefix))) {
			count += v[i].count;
			if (!strcmp(v[i].key, final))
				*has_final = 1;
		}
	return count;
}

/* The invariant checker, run after every scenario on the runs it submitted. max_dups < 0:
 * duplicate executions are reported only; else they must not exceed it. */
static void check_invariants(const char *scenario, int max_dups)
{
	size_t nlines = 0;
	struct exec_line *log;
	int ended = 0, instances = 0, execs = 0, dups = 0;
	long stale = 0, reaped = 0;

	for (int r = 0; r < nruns; r++) {
		char *state = e2e_wait_run_end(runs[r], 180000);

		ck_assert_msg(state != NULL, "%s: run %s did not end", scenario, runs[r]);
		ck_assert_msg(!strcmp(state, "SUCCEEDED"), "%s: run %s ended %s: %s", scenario,
			      runs[r], state, e2e_run_field(runs[r], "error"));
		free(state);
		ended++;
	}
	log = read_exec_log(&nlines);
	for (size_t i = 0; i < nlines; i++)
		ck_assert_msg(log[i].count == 1,
			      "%s: %s executed %d times with the same attempt (fencing token "
			      "reused)",
			      scenario, log[i].key, log[i].count);
	for (int r = 0; r < nruns; r++) {
		int n = runs_n[r], has_final, c;
		long a;

		for (int i = 0; i <= n; i++) {
			const char *task = i < n ? "work" : "total";
			int idx = i < n ? i : -1;

			a = check_instance(scenario, runs[r], task, idx,
					   i < n ? 2L * i : (long)n * (n - 1));
			c = executions(log, nlines, runs[r], task, idx, a, &has_final);
			ck_assert_msg(has_final, "%s: run %s %s[%d]: attempt %ld never executed",
				      scenario, runs[r], task, idx, a);
			instances++;
			execs += c;
			if (c > 1) {
				dups += c - 1;
				printf("%s: run %s %s[%d] executed %d times (final attempt %ld)\n",
				       scenario, runs[r], task, idx, c, a);
			}
		}
		/* recorded once: a result applied twice would count twice */
		ck_assert_msg(field_long(runs[r], "tasks_done") == n + 1,
			      "%s: run %s tasks_done %ld, want %d", scenario, runs[r],
			      field_long(runs[r], "tasks_done"), n + 1);
		stale += field_long(runs[r], "stale_results");
		reaped += field_long(runs[r], "reaped");
	}
	printf("%s: %d/%d runs ended SUCCEEDED; %d instances recorded once from their final "
	       "attempt; %d executions (%d duplicate); %ld stale results fenced; %ld "
	       "re-dispatched by the reaper\n",
	       scenario, ended, nruns, instances, execs, dups, stale, reaped);
	fflush(stdout);
	if (max_dups >= 0)
		ck_assert_msg(dups <= max_dups, "%s: %d duplicate executions, at most %d allowed",
			      scenario, dups, max_dups);
	free(log);
	for (int r = 0; r < nruns; r++)
		free(runs[r]);
	nruns = 0;
}

static void setup(void)
{
	e2e_require_env();
	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	snprintf(base, sizeof(base), "%s", e2e_tmpdir("faults"));
	snprintf(exec_log, sizeof(exec_log), "%s/executions.log", base);
	snprintf(pidfile, sizeof(pidfile), "%s/pids", base);
}

static int redis_full_pid(void);

/* Whether pid is still a process running program (by /proc/<pid>/cmdline): a pid recorded
 * earlier may have been reused by now. */
static int is_ours(int pid, const char *program)
{
	char path[64], cmd[4096] = "";
	FILE *f;
	size_t n = 0;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
	if ((f = fopen(path, "r"))) {
		n = fread(cmd, 1, sizeof(cmd) - 1, f);
		fclose(f);
	}
	cmd[n] = '\0';
	return strstr(cmd, program) != NULL;
}

/* Runs in the parent after each test, even a failed one: nothing spawned may survive. */
static void kill_leftovers(void)
{
	FILE *f;
	int pid;

	setup();
	if ((f = fopen(pidfile, "r"))) {
		while (fscanf(f, "%d", &pid) == 1)
			if (pid > 0 && is_ours(pid, "sluice-")) {
				kill(pid, SIGCONT);
				kill(pid, SIGKILL);
			}
		fclose(f);
		unlink(pidfile);
	}
	/* redis_disk_full's daemonized redis-server and its tmpfs */
	if ((pid = redis_full_pid()) > 0 && is_ours(pid, "redis-server"))
		kill(pid, SIGKILL);
	{
		char dir[4300];
		snprintf(dir, sizeof(dir), "%s/redis-full", base);
		umount2(dir, MNT_DETACH);
	}
}

/* 1. kill -9 a worker mid-task: its instances are re-dispatched elsewhere. */
START_TEST(worker_killed_mid_task)
{
	start_planner(NULL);
	start_worker();
	start_worker();
	for (int rep = 0; rep < reps(2); rep++) {
		char *run = submit(6, "1500");
		int victim = wait_running(run, 6, 30000);

		ck_assert_msg(victim >= 0, "no instance started");
		msleep(rnd(0, 1000));
		printf("worker_killed_mid_task: kill -9 %s\n", wid[victim]);
		kill(wpid[victim], SIGKILL);
		waitpid(wpid[victim], NULL, 0);
		wpid[victim] = 0;
		start_worker();
		e2e_wait_run_end(run, 120000);
	}
	check_invariants("worker_killed_mid_task", -1);
	stop_all();
}
END_TEST

/* 2. SIGSTOP a worker past its lease, SIGCONT it after the task ran elsewhere: its late
 * result is fenced, the instance recorded once, from the final attempt. */
START_TEST(worker_paused_past_lease)
{
	start_planner(NULL);
	start_worker();
	start_worker();
	for (int rep = 0; rep < reps(1); rep++) {
		char *run = submit(4, "2000"), *state;
		int victim = wait_running(run, 4, 30000);

		ck_assert_msg(victim >= 0, "no instance started");
		msleep(rnd(0, 1000));
		printf("worker_paused_past_lease: SIGSTOP %s\n", wid[victim]);
		kill(wpid[victim], SIGSTOP);
		state = e2e_wait_run_end(run, 120000);
		ck_assert_msg(state && !strcmp(state, "SUCCEEDED"),
			      "run did not succeed while a worker was paused: %s",
			      state ? state : "timeout");
		free(state);
		kill(wpid[victim], SIGCONT);
		msleep(e2e_ms(4000)); /* its late result, if any, arrives and is fenced */
	}
	check_invariants("worker_paused_past_lease", -1);
	stop_all();
}
END_TEST

/* 3. kill -9 the planner: right after node_start (started with its first 1,000 instances,
 * none produced), right after its second batch is written by ti_add (a 1,500-instance
 * fan-out: 1,000 sent, 500 recorded and not sent), right after result_apply (ready nodes not
 * started), and at random moments. */
START_TEST(planner_killed)
{
	const char *points[] = {"after_node_start", "after_ti_add", "after_result_apply", NULL};

	start_worker();
	start_worker();
	for (int rep = 0; rep < reps(1); rep++) {
		for (int k = 0; k < 4; k++) {
			char at[64], after[64];
			const char *env[] = {at, after, NULL};
			char *run;
			int status = 0;

			snprintf(at, sizeof(at), "SLUICE_FAULT_CRASH_AT=%s",
				 points[k] ? points[k] : "none");
			snprintf(after, sizeof(after), "SLUICE_FAULT_CRASH_AFTER=%ld",
				 k == 2 ? rnd(1, 6) : 1);
			start_planner(env);
			/* after_ti_add needs a node of more than one 1,000-instance chunk */
			run = k == 1 ? submit(1500, "0") : submit(5, "1000");
			if (points[k]) {
				int64_t deadline = sl_mono_ms() + e2e_ms(60000);
				while (e2e_alive(planner) && sl_mono_ms() < deadline)
					msleep(50);
				ck_assert_msg(!e2e_alive(planner), "planner did not crash at %s",
					      points[k]);
				printf("planner_killed: planner crashed at %s\n", points[k]);
			} else {
				msleep(rnd(200, 3000));
				printf("planner_killed: kill -9 planner\n");
				kill(planner, SIGKILL);
			}
			waitpid(planner, &status, 0);
			msleep(rnd(0, 1000));
			start_planner(NULL);
			e2e_wait_run_end(run, 120000);
			e2e_stop(planner, SIGTERM, e2e_ms(15000));
		}
	}
	start_planner(NULL);
	check_invariants("planner_killed", -1);
	stop_all();
}
END_TEST

/* Runs of flow ingest created since since_ms whose params mention name, by state. */
static int runs_for_file(int64_t since_ms, const char *name, int *duplicates)
{
	redisReply *r = sl_state_command(e2e_state(), "ZRANGEBYSCORE sluice:runs %lld +inf",
					 (long long)since_ms);
	int count = 0;

	*duplicates = 0;
	ck_assert_ptr_nonnull(r);
	for (size_t i = 0; i < r->elements; i++) {
		char *flow = e2e_run_field(r->element[i]->str, "flow");
		char *params = e2e_run_field(r->element[i]->str, "params");
		char *state = e2e_run_field(r->element[i]->str, "state");

		if (flow && !strcmp(flow, "ingest") && params && strstr(params, name)) {
			if (state && !strcmp(state, "DUPLICATE"))
				(*duplicates)++;
			else
				count++;
		}
		free(flow);
		free(params);
		free(state);
	}
	freeReplyObject(r);
	return count;
}

/* 4. kill the watcher after its RunRequest was delivered, before the cursor is written:
 * the restarted watcher publishes again and the planner's idempotency key makes one run. */
START_TEST(watcher_killed_before_cursor)
{
	const char *crash_env[] = {"SLUICE_FAULT_CRASH_BEFORE_CURSOR=1", NULL};
	char inbox[4400], wbase[4300];
	const char *wargs[] = {"--flows-dir", SLUICE_SOURCE_DIR "/examples", "--base-dir", wbase,
			       NULL};
	const char *pwargs[] = {"--slots", "2", "--id", "faults-ingest", NULL};
	pid_t watcher, w;

	snprintf(wbase, sizeof(wbase), "%s/watch-%d", base, (int)getpid());
	mkdir(wbase, 0755);
	snprintf(inbox, sizeof(inbox), "%s/inbox", wbase);
	mkdir(inbox, 0755);
	start_planner(NULL);
	w = track(e2e_spawn("faults-ingest-worker", "sluice-worker", pwargs, NULL));
	for (int rep = 0; rep < reps(2); rep++) {
		char name[64], path[4500], tmp[4500];
		int64_t since = sl_now_ms() - 1000, deadline;
		int one = 0, dups = 0, status = 0;
		FILE *f;

		watcher = track(e2e_spawn("faults-watcher", "sluice-watcher", wargs, crash_env));
		msleep(e2e_ms(2000));
		snprintf(name, sizeof(name), "drop-%d-%ld.csv", rep, rnd(0, 1000000000));
		snprintf(tmp, sizeof(tmp), "%s/.%s.part", inbox, name);
		snprintf(path, sizeof(path), "%s/%s", inbox, name);
		ck_assert_ptr_nonnull(f = fopen(tmp, "w"));
		fprintf(f, "a,b\n%s,%ld\n", name, rnd(0, 1000000));
		fclose(f);
		ck_assert_int_eq(rename(tmp, path), 0);
		deadline = sl_mono_ms() + e2e_ms(30000);
		while (e2e_alive(watcher) && sl_mono_ms() < deadline)
			msleep(50);
		ck_assert_msg(!e2e_alive(watcher), "watcher did not crash before its cursor");
		waitpid(watcher, &status, 0);
		watcher = track(e2e_spawn("faults-watcher", "sluice-watcher", wargs, NULL));
		/* the restart scan publishes the file again; wait for its request to be handled */
		deadline = sl_mono_ms() + e2e_ms(60000);
		while (sl_mono_ms() < deadline && (one = runs_for_file(since, name, &dups)) < 1)
			msleep(200);
		msleep(e2e_ms(5000));
		one = runs_for_file(since, name, &dups);
		printf("watcher_killed_before_cursor: %s -> %d run(s), %d duplicate request(s)\n",
		       name, one, dups);
		ck_assert_msg(one == 1, "file %s made %d runs", name, one);
		e2e_stop(watcher, SIGTERM, e2e_ms(15000));
	}
	e2e_stop(w, SIGTERM, e2e_ms(15000));
	stop_all();
}
END_TEST

static int run_script(const char *script, const char *verb, const char *dir)
{
	char cmd[8400];

	snprintf(cmd, sizeof(cmd), "%s/scripts/%s %s '%s' >>'%s/scripts.log' 2>&1",
		 SLUICE_SOURCE_DIR, script, verb, dir, base);
	return system(cmd);
}

/* 5. kill -9 redis-server mid-run and restart it (AOF, appendfsync always). */
START_TEST(redis_killed)
{
	const char *dir = getenv("SLUICE_REDIS_DATA");
	char pidpath[4200];

	ck_assert_msg(dir != NULL, "SLUICE_REDIS_DATA unset");
	snprintf(pidpath, sizeof(pidpath), "%s/redis.pid", dir);
	start_planner(NULL);
	start_worker();
	start_worker();
	for (int rep = 0; rep < reps(2); rep++) {
		char *run = submit(6, "1000");
		FILE *f;
		int pid = 0;

		ck_assert_int_ge(wait_running(run, 6, 30000), 0);
		msleep(rnd(0, 2000));
		ck_assert_ptr_nonnull(f = fopen(pidpath, "r"));
		ck_assert_int_eq(fscanf(f, "%d", &pid), 1);
		fclose(f);
		printf("redis_killed: kill -9 redis-server %d\n", pid);
		kill(pid, SIGKILL);
		while (kill(pid, 0) == 0)
			msleep(20);
		msleep(rnd(0, 2000));
		ck_assert_int_eq(run_script("redis", "start", dir), 0);
		e2e_wait_run_end(run, 120000);
	}
	check_invariants("redis_killed", -1);
	stop_all();
}
END_TEST

/* 6. stop the Kafka broker mid-run and start it again. */
START_TEST(kafka_restarted)
{
	const char *dir = getenv("SLUICE_KAFKA_DATA");

	ck_assert_msg(dir != NULL, "SLUICE_KAFKA_DATA unset");
	start_planner(NULL);
	start_worker();
	start_worker();
	for (int rep = 0; rep < reps(1); rep++) {
		char *run = submit(8, "1000");

		ck_assert_int_ge(wait_running(run, 8, 30000), 0);
		msleep(rnd(0, 2000));
		printf("kafka_restarted: stopping the broker\n");
		ck_assert_int_eq(run_script("kafka", "stop", dir), 0);
		msleep(rnd(1000, 4000));
		ck_assert_int_eq(run_script("kafka", "start", dir), 0);
		printf("kafka_restarted: broker started again\n");
		e2e_wait_run_end(run, 180000);
	}
	check_invariants("kafka_restarted", -1);
	stop_all();
}
END_TEST

/* 7. workers join and leave every couple of seconds (kill -9 or SIGTERM). */
START_TEST(rebalance_storm)
{
	int64_t until;

	start_planner(NULL);
	start_worker();
	for (int rep = 0; rep < reps(1); rep++) {
		submit(10, "1000");
		submit(6, "500");
		until = sl_mono_ms() + 14000;
		while (sl_mono_ms() < until) {
			int i = start_worker();
			msleep(rnd(1000, 2500));
			if (random() % 2) {
				kill(wpid[i], SIGKILL);
				waitpid(wpid[i], NULL, 0);
			} else {
				e2e_stop(wpid[i], SIGTERM, e2e_ms(15000));
			}
			wpid[i] = 0;
		}
		start_worker();
	}
	check_invariants("rebalance_storm", -1);
	stop_all();
}
END_TEST

/* 8. scale-down while workers are busy: the autoscaler only ever asks a worker to drain
 * (sl_state_worker_request_drain, what its scale-down does); the worker finishes what it
 * holds and exits; no running task is killed, so nothing runs twice. */
START_TEST(scale_down_while_busy)
{
	start_planner(NULL);
	start_worker();
	start_worker();
	for (int rep = 0; rep < reps(1); rep++) {
		char *run = submit(6, "2000");
		int victim = wait_running(run, 6, 30000);
		int64_t deadline;

		ck_assert_int_ge(victim, 0);
		msleep(rnd(0, 800));
		printf("scale_down_while_busy: draining busy %s\n", wid[victim]);
		ck_assert_int_eq(sl_state_worker_request_drain(e2e_state(), wid[victim]), SL_OK);
		deadline = sl_mono_ms() + e2e_ms(60000);
		while (e2e_alive(wpid[victim]) && sl_mono_ms() < deadline)
			msleep(100);
		ck_assert_msg(!e2e_alive(wpid[victim]), "drained worker did not exit");
		wpid[victim] = 0;
		start_worker();
	}
	check_invariants("scale_down_while_busy", 0);
	stop_all();
}
END_TEST

/* 9. malformed messages on every consumed topic: dead-lettered, services stay up, a run
 * afterwards still succeeds. */
START_TEST(malformed_messages)
{
	const char *topics[] = {SL_TOPIC_RUNS_REQUESTED, SL_TOPIC_RESULTS, SL_TOPIC_CONTROL,
				"sluice.tasks.faults"};
	Sluice__V1__RunRequest req = SLUICE__V1__RUN_REQUEST__INIT;
	uint8_t valid[512], junk[64], wrong[512];
	size_t vlen, wlen;
	Sluice__V1__TaskResult res = SLUICE__V1__TASK_RESULT__INIT;
	int w;

	start_planner(NULL);
	w = start_worker();
	req.schema_version = 1;
	req.flow = "no_such_flow_in_faults";
	req.run_id = "faults-unknown-flow";
	req.requested_by = "faults";
	vlen = sluice__v1__run_request__pack(&req, valid);
	res.schema_version = 1;
	res.run_id = "faults-no-such-run";
	res.task = "x";
	res.attempt = 1;
	res.status = SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	wlen = sluice__v1__task_result__pack(&res, wrong);
	for (size_t t = 0; t < sizeof(topics) / sizeof(topics[0]); t++) {
		/* wire type 7 does not exist: undecodable whatever the schema */
		memset(junk, 0xff, sizeof(junk));
		junk[0] = (uint8_t)(0x0f | (t << 4));
		junk[1] = (uint8_t)rnd(0, 255);
		e2e_produce(topics[t], "faults", junk, sizeof(junk));
		ck_assert_msg(e2e_find_deadletter("", junk, sizeof(junk), 60000),
			      "junk on %s not dead-lettered", topics[t]);
		/* truncated in the middle of a length-delimited field */
		e2e_produce(topics[t], "faults", valid, vlen - 3);
		ck_assert_msg(e2e_find_deadletter("", valid, vlen - 3, 60000),
			      "truncated message on %s not dead-lettered", topics[t]);
	}
	/* wrong type on the results topic: a TaskResult for nothing known */
	e2e_produce(SL_TOPIC_RUNS_REQUESTED, "faults", wrong, wlen);
	e2e_produce(SL_TOPIC_RESULTS, "faults", wrong, wlen);
	ck_assert_msg(e2e_find_deadletter("unknown run", wrong, wlen, 60000),
		      "result for an unknown run not dead-lettered");
	/* unknown flow */
	e2e_produce(SL_TOPIC_RUNS_REQUESTED, "faults", valid, vlen);
	ck_assert_msg(e2e_find_deadletter("", valid, vlen, 60000),
		      "request for an unknown flow not dead-lettered");
	printf("malformed_messages: oversized messages are refused by the broker "
	       "(message.max.bytes 1 MiB); each consumer checks the size cap before unpacking\n");
	ck_assert_msg(e2e_alive(planner), "planner died on malformed input");
	ck_assert_msg(e2e_alive(wpid[w]), "worker died on malformed input");
	submit(3, "200");
	check_invariants("malformed_messages", 0);
	stop_all();
}
END_TEST

/* Starts a redis-server on port with its AOF (appendfsync always) in dir. */
static void start_redis_in(const char *dir, int port)
{
	char cmd[9000];

	snprintf(cmd, sizeof(cmd),
		 "redis-server --port %d --bind 127.0.0.1 --dir '%s' --appendonly yes "
		 "--appendfsync always --save '' --daemonize yes --pidfile '%s/redis-full.pid' "
		 "--logfile '%s/redis-full.log'",
		 port, dir, base, base);
	ck_assert_int_eq(system(cmd), 0);
}

static int redis_full_pid(void)
{
	char path[4300];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof(path), "%s/redis-full.pid", base);
	if ((f = fopen(path, "r"))) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid > 0 && kill(pid, 0) == 0 ? pid : 0;
}

/* 10. Redis's disk fills up (a 4 MiB tmpfs). With appendfsync always Redis cannot keep a
 * write it could not log, so it refuses or stops before replying: nothing is acknowledged
 * that was not stored. The services retry; once space is back (and Redis restarted, as a
 * supervisor would) the run completes from the AOF. */
START_TEST(redis_disk_full)
{
	char dir[4300], fill[4400], cmd[9000], url[64];
	int port = 0;
	struct sl_state *st;
	char err[256];
	char *run, *state = NULL;
	int64_t deadline;
	int gone = 0;

	snprintf(dir, sizeof(dir), "%s/redis-full", base);
	mkdir(dir, 0755);
	if (mount("tmpfs", dir, "tmpfs", 0, "size=4m") != 0) {
		printf("redis_disk_full: SKIPPED: cannot mount a tmpfs (%s); run as root\n",
		       strerror(errno));
		return;
	}
	snprintf(cmd, sizeof(cmd), "%s/scripts/lib/freeport > '%s/port'", SLUICE_SOURCE_DIR,
		 base);
	if (system(cmd) == 0) {
		FILE *f;
		snprintf(fill, sizeof(fill), "%s/port", base);
		if ((f = fopen(fill, "r"))) {
			if (fscanf(f, "%d", &port) != 1)
				port = 0;
			fclose(f);
		}
	}
	ck_assert_int_gt(port, 0);
	start_redis_in(dir, port);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
	deadline = sl_mono_ms() + e2e_ms(10000);
	while (!(st = sl_state_new(url, err, sizeof(err))) && sl_mono_ms() < deadline)
		msleep(100);
	ck_assert_msg(st != NULL, "redis on tmpfs: %s", err);
	planner = spawn_planner_with(NULL, url);
	start_worker_at(url);
	msleep(e2e_ms(2000));
	snprintf(fill, sizeof(fill), "%s/filler", dir);
	snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of='%s' bs=64k 2>/dev/null; sync", fill);
	if (system(cmd) < 0)
		ck_abort_msg("dd failed");
	{
		char pn[32], pl[4300];
		const char *params[] = {pn, "ms=200", pl, NULL};
		snprintf(pn, sizeof(pn), "n=%d", 3);
		snprintf(pl, sizeof(pl), "log=%s", exec_log);
		run = e2e_submit(FLOW, params);
	}
	ck_assert_ptr_nonnull(run);
	deadline = sl_mono_ms() + e2e_ms(8000);
	while (sl_mono_ms() < deadline && !(gone = !redis_full_pid()))
		msleep(100);
	{
		redisReply *r = gone ? NULL : sl_state_command(st, "HGET sluice:{%s}:run state", run);
		printf("redis_disk_full: disk full: redis-server %s; run %s is %s\n",
		       gone ? "stopped (it cannot log a write under appendfsync always)"
			    : "still up",
		       run, r && r->type == REDIS_REPLY_STRING ? r->str : "not stored");
		/* a finished run would mean writes were acknowledged that never reached the AOF */
		ck_assert_msg(!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, "SUCCEEDED"),
			      "run succeeded while the AOF could not be written");
		if (r)
			freeReplyObject(r);
	}
	ck_assert_msg(e2e_alive(planner), "planner died on a full disk");
	unlink(fill);
	if (!redis_full_pid())
		start_redis_in(dir, port);
	printf("redis_disk_full: space is back\n");
	deadline = sl_mono_ms() + e2e_ms(120000);
	while (sl_mono_ms() < deadline) {
		redisReply *r = sl_state_command(st, "HGET sluice:{%s}:run state", run);
		if (r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "RUNNING")) {
			state = strdup(r->str);
			freeReplyObject(r);
			break;
		}
		if (r)
			freeReplyObject(r);
		msleep(200);
	}
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "run %s after recovery: %s", run,
		      state ? state : "not ended");
	free(state);
	free(run);
	stop_all();
	snprintf(cmd, sizeof(cmd), "redis-cli -p %d shutdown nosave >/dev/null 2>&1", port);
	if (system(cmd) < 0)
		printf("redis_disk_full: redis-cli failed\n");
	snprintf(cmd, sizeof(cmd), "%s/redis-full.pid", base);
	unlink(cmd);
	sl_state_destroy(st);
	umount2(dir, MNT_DETACH);
}
END_TEST

static TCase *scenario(const char *name, const TTest *t, int timeout)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_unchecked_fixture(tc, NULL, kill_leftovers);
	tcase_set_timeout(tc, (double)e2e_ms(timeout) * reps(1));
	tcase_add_test(tc, t);
	return tc;
}

int main(void)
{
	Suite *s = suite_create("faults");
	SRunner *sr;
	int failed;

	setvbuf(stdout, NULL, _IOLBF, 0);
	suite_add_tcase(s, scenario("worker_killed", worker_killed_mid_task, 240));
	suite_add_tcase(s, scenario("worker_paused", worker_paused_past_lease, 240));
	suite_add_tcase(s, scenario("planner_killed", planner_killed, 400));
	suite_add_tcase(s, scenario("watcher_killed", watcher_killed_before_cursor, 240));
	suite_add_tcase(s, scenario("redis_killed", redis_killed, 300));
	suite_add_tcase(s, scenario("kafka_restarted", kafka_restarted, 400));
	suite_add_tcase(s, scenario("rebalance_storm", rebalance_storm, 300));
	suite_add_tcase(s, scenario("scale_down", scale_down_while_busy, 240));
	suite_add_tcase(s, scenario("malformed", malformed_messages, 300));
	suite_add_tcase(s, scenario("redis_disk_full", redis_disk_full, 300));
	sr = srunner_create(s);
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
