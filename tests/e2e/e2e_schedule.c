/* e2e_schedule.c - schedules on the real stack: two planner replicas fire each tick of an
 * `every: 2s` flow exactly once; after both planners were down, `catchup: all` fires every
 * missed tick once and `catchup: none` fires none of them. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/util.h"

#define EVERY_MS 2000
#define MAX_RUNS 4096

static pid_t worker;
static pid_t planners[8]; /* running planners, 0 = free slot */

struct tick_run {
	int64_t tick;
	char id[96];
	char state[24];
};

static void start_worker(void)
{
	const char *wargs[] = {"--slots", "4", "--id", "e2e-sched-w1", NULL};

	e2e_require_env();
	worker = e2e_spawn("schedule-worker", "sluice-worker", wargs, NULL);
	ck_assert_int_gt(worker, 0);
}

static void stop_worker(void)
{
	e2e_stop(worker, SIGTERM, 15000);
}

/* Writes tests/e2e/flows/schedule_every.yaml into a flows dir of its own as flow `name`,
 * with a top-level `catchup:` when catchup is not NULL. Returns the dir (static lifetime). */
static const char *flows_dir(const char *name, const char *catchup)
{
	const char *dir = e2e_tmpdir(name);
	char path[4096], line[512];
	FILE *in = fopen(E2E_FLOWS "/schedule_every.yaml", "r"), *out;

	ck_assert_ptr_nonnull(in);
	snprintf(path, sizeof(path), "%s/%s.yaml", dir, name);
	out = fopen(path, "w");
	ck_assert_ptr_nonnull(out);
	while (fgets(line, sizeof(line), in)) {
		if (!strncmp(line, "flow:", 5))
			fprintf(out, "flow: %s\n", name);
		else
			fputs(line, out);
	}
	if (catchup)
		fprintf(out, "catchup: %s\n", catchup);
	fclose(in);
	fclose(out);
	return dir;
}

static pid_t start_planner(const char *label, const char *dir)
{
	const char *args[] = {"--flows-dir", dir, NULL};
	pid_t pid = e2e_spawn(label, "sluice-planner", args, NULL);

	ck_assert_int_gt(pid, 0);
	for (size_t i = 0; i < sizeof(planners) / sizeof(planners[0]); i++) {
		if (planners[i] <= 0) {
			planners[i] = pid;
			break;
		}
	}
	return pid;
}

static void stop_planner(pid_t pid)
{
	e2e_stop(pid, SIGTERM, 15000);
	for (size_t i = 0; i < sizeof(planners) / sizeof(planners[0]); i++)
		if (planners[i] == pid)
			planners[i] = 0;
}

/* After each test, passed or not: no planner of it may fire into the next one. */
static void stop_planners(void)
{
	for (size_t i = 0; i < sizeof(planners) / sizeof(planners[0]); i++)
		if (planners[i] > 0)
			stop_planner(planners[i]);
}

/* The runs of flow, each with the tick from its scheduled_at parameter. Checks on the way
 * that each was requested by the schedule and that its idempotency key names its tick. */
static size_t runs_of(const char *flow, struct tick_run *out, size_t cap)
{
	redisReply *ids = sl_state_command(e2e_state(), "ZRANGE sluice:runs 0 -1");
	size_t n = 0;

	ck_assert_ptr_nonnull(ids);
	ck_assert_int_eq(ids->type, REDIS_REPLY_ARRAY);
	for (size_t i = 0; i < ids->elements; i++) {
		const char *id = ids->element[i]->str;
		redisReply *r = sl_state_command(e2e_state(),
						 "HMGET sluice:{%s}:run flow params state requested_by",
						 id);
		redisReply *idem;
		json_t *params, *tick;

		ck_assert_ptr_nonnull(r);
		if (r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, flow)) {
			freeReplyObject(r);
			continue;
		}
		ck_assert_msg(r->element[3]->str && !strcmp(r->element[3]->str, "schedule"),
			      "run %s requested by %s", id, r->element[3]->str);
		params = json_loads(r->element[1]->str, 0, NULL);
		tick = json_object_get(params, "scheduled_at");
		ck_assert_msg(json_is_integer(tick), "run %s has no scheduled_at: %s", id,
			      r->element[1]->str);
		ck_assert_str_eq(json_string_value(json_object_get(params, "label")), "scheduled");
		ck_assert_int_lt(n, cap);
		out[n].tick = (int64_t)json_integer_value(tick);
		ck_assert_msg(out[n].tick % EVERY_MS == 0, "tick %lld of run %s is off the grid",
			      (long long)out[n].tick, id);
		sl_strlcpy(out[n].id, id, sizeof(out[n].id));
		sl_strlcpy(out[n].state, r->element[2]->str ? r->element[2]->str : "",
			   sizeof(out[n].state));
		idem = sl_state_command(e2e_state(), "GET sluice:idem:%s:schedule:%lld", flow,
					(long long)out[n].tick);
		ck_assert_msg(idem && idem->type == REDIS_REPLY_STRING && !strcmp(idem->str, id),
			      "idempotency key of tick %lld does not name run %s",
			      (long long)out[n].tick, id);
		freeReplyObject(idem);
		json_decref(params);
		freeReplyObject(r);
		n++;
	}
	freeReplyObject(ids);
	return n;
}

static int runs_at(const struct tick_run *runs, size_t n, int64_t tick)
{
	int c = 0;

	for (size_t i = 0; i < n; i++)
		c += runs[i].tick == tick;
	return c;
}

static int64_t newest_tick(const struct tick_run *runs, size_t n)
{
	int64_t t = -1;

	for (size_t i = 0; i < n; i++)
		if (runs[i].tick > t)
			t = runs[i].tick;
	return t;
}

static int64_t oldest_tick(const struct tick_run *runs, size_t n)
{
	int64_t t = INT64_MAX;

	for (size_t i = 0; i < n; i++)
		if (runs[i].tick < t)
			t = runs[i].tick;
	return t;
}

/* The schedule's cursor: the last tick handled (its request is stored in Kafka). */
static int64_t cursor_of(const char *flow)
{
	redisReply *r = sl_state_command(e2e_state(), "GET sluice:sched:{%s}:last", flow);
	int64_t t;

	ck_assert_msg(r && r->type == REDIS_REPLY_STRING, "flow %s has no schedule cursor", flow);
	t = atoll(r->str);
	freeReplyObject(r);
	return t;
}

/* Polls until each tick in [from, to] has a run: a request the planner stored may still wait
 * in Kafka for a planner to make its run. Asserts nothing: the caller looks afterwards. */
static void wait_all_fired(const char *flow, int64_t from, int64_t to, struct tick_run *runs,
			   long timeout_ms)
{
	int64_t deadline = sl_mono_ms() + e2e_ms(timeout_ms);

	while (sl_mono_ms() < deadline) {
		size_t n = runs_of(flow, runs, MAX_RUNS);
		int64_t t = from;
		while (t <= to && runs_at(runs, n, t))
			t += EVERY_MS;
		if (t > to)
			return;
		usleep(200000);
	}
}

/* No tick has two runs. */
static void assert_no_tick_twice(const struct tick_run *runs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(runs_at(runs, n, runs[i].tick) == 1, "tick %lld has %d runs",
			      (long long)runs[i].tick, runs_at(runs, n, runs[i].tick));
}

/* Polls until flow has a run whose tick is after `after`; returns the number of runs. */
static size_t wait_tick_after(const char *flow, int64_t after, struct tick_run *runs,
			      long timeout_ms)
{
	int64_t deadline = sl_mono_ms() + e2e_ms(timeout_ms);
	size_t n;

	for (;;) {
		n = runs_of(flow, runs, MAX_RUNS);
		if (newest_tick(runs, n) > after)
			return n;
		ck_assert_msg(sl_mono_ms() < deadline, "flow %s: no run for a tick after %lld",
			      flow, (long long)after);
		usleep(200000);
	}
}

/* Sleeps until the wall clock is `offset` ms past a tick. */
static void align(int64_t offset)
{
	int64_t now = sl_now_ms(), wait = (offset - now % EVERY_MS + 2 * EVERY_MS) % EVERY_MS;

	usleep((useconds_t)(wait * 1000));
}

START_TEST(two_replicas_fire_each_tick_once)
{
	static struct tick_run runs[MAX_RUNS];
	/* catchup all: a planner stalled past a tick on a busy machine still fires it */
	const char *dir = flows_dir("sched_twice", "all");
	int64_t started = sl_now_ms(), first, end;
	pid_t a = start_planner("schedule-planner-a", dir);
	pid_t b = start_planner("schedule-planner-b", dir);
	size_t n;
	char *state;

	/* The first tick: a flow seen for the first time starts from now, no backfill. */
	n = wait_tick_after("sched_twice", 0, runs, 60000);
	first = oldest_tick(runs, n);
	ck_assert_msg(first > started, "first tick %lld is before the planners started (%lld)",
		      (long long)first, (long long)started);
	sleep(9);
	end = sl_now_ms();
	/* Let the ticks up to `end` be fired even on a loaded machine, then look. */
	n = wait_tick_after("sched_twice", end, runs, 60000);
	wait_all_fired("sched_twice", first, end, runs, 30000);
	ck_assert(e2e_alive(a) && e2e_alive(b));
	stop_planner(a);
	stop_planner(b);
	n = runs_of("sched_twice", runs, MAX_RUNS);
	assert_no_tick_twice(runs, n);
	for (int64_t t = first; t <= end; t += EVERY_MS)
		ck_assert_msg(runs_at(runs, n, t) == 1, "tick %lld has %d runs", (long long)t,
			      runs_at(runs, n, t));
	/* ~9 s at 2 s: the window [first, end] holds 5 or 6 ticks, each fired once. */
	ck_assert_int_ge((end - first) / EVERY_MS + 1, 5);
	/* and the runs really ran */
	state = e2e_wait_run_end(runs[0].id, e2e_ms(60000));
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "run %s ended %s", runs[0].id,
		      state ? state : "-");
	free(state);
}
END_TEST

/* Runs a planner for flow until its schedule fires, stops it for a few ticks and starts it
 * again 1.2 s after a tick. *stop_tick is the newest tick fired before the stop and *restart
 * the time the planner was started again; returns the runs once one after that has fired. */
static size_t down_and_up(const char *flow, const char *catchup, struct tick_run *runs,
			  int64_t *stop_tick, int64_t *restart)
{
	const char *dir = flows_dir(flow, catchup);
	char label[64];
	pid_t p;
	size_t n;

	snprintf(label, sizeof(label), "%s-planner-1", flow);
	p = start_planner(label, dir);
	n = wait_tick_after(flow, 0, runs, 60000);
	stop_planner(p);
	*stop_tick = cursor_of(flow);
	ck_assert_int_eq(*stop_tick % EVERY_MS, 0);
	/* down for at least three ticks */
	usleep(3 * EVERY_MS * 1000);
	align(1200);
	*restart = sl_now_ms();
	ck_assert_int_ge(*restart - *stop_tick, 3 * EVERY_MS);
	snprintf(label, sizeof(label), "%s-planner-2", flow);
	p = start_planner(label, dir);
	n = wait_tick_after(flow, *restart, runs, 60000);
	if (catchup && !strcmp(catchup, "all"))
		wait_all_fired(flow, *stop_tick, *restart, runs, 30000);
	else
		sleep(1); /* time for a wrongly fired missed tick to show */
	stop_planner(p);
	n = runs_of(flow, runs, MAX_RUNS);
	assert_no_tick_twice(runs, n);
	return n;
}

START_TEST(catchup_all_fires_every_missed_tick_once)
{
	static struct tick_run runs[MAX_RUNS];
	int64_t stop_tick, restart, missed = 0;
	size_t n = down_and_up("sched_all", "all", runs, &stop_tick, &restart);

	for (int64_t t = stop_tick + EVERY_MS; t <= restart; t += EVERY_MS, missed++)
		ck_assert_msg(runs_at(runs, n, t) == 1, "missed tick %lld has %d runs",
			      (long long)t, runs_at(runs, n, t));
	ck_assert_int_ge(missed, 3);
}
END_TEST

START_TEST(catchup_none_skips_missed_ticks)
{
	static struct tick_run runs[MAX_RUNS];
	int64_t stop_tick, restart, missed = 0;
	size_t n = down_and_up("sched_none", "none", runs, &stop_tick, &restart);

	/* Every tick up to the restart was at least 1.2 s old when the planner could see it. */
	for (int64_t t = stop_tick + EVERY_MS; t <= restart; t += EVERY_MS, missed++)
		ck_assert_msg(runs_at(runs, n, t) == 0, "missed tick %lld fired (catchup none)",
			      (long long)t);
	ck_assert_int_ge(missed, 3);
	/* ... and the schedule goes on with the next one */
	ck_assert_int_gt(newest_tick(runs, n), restart);
}
END_TEST

START_TEST(catchup_latest_fires_only_the_newest)
{
	static struct tick_run runs[MAX_RUNS];
	int64_t stop_tick, restart, fired = 0, newest_missed = -1;
	size_t n = down_and_up("sched_latest", NULL, runs, &stop_tick, &restart);

	for (int64_t t = stop_tick + EVERY_MS; t <= restart; t += EVERY_MS) {
		fired += runs_at(runs, n, t);
		newest_missed = t;
	}
	/* The restarted planner saw either only the missed ticks (fires the newest) or, when
	 * its first look came after the next tick, that one too (fires only that). */
	ck_assert_int_le(fired, 1);
	if (fired)
		ck_assert_int_eq(runs_at(runs, n, newest_missed), 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("e2e_schedule");
	TCase *tc = tcase_create("schedule");
	SRunner *sr;
	int failed;

	tcase_add_unchecked_fixture(tc, start_worker, stop_worker);
	tcase_add_checked_fixture(tc, NULL, stop_planners);
	tcase_set_timeout(tc, (double)e2e_ms(180));
	tcase_add_test(tc, two_replicas_fire_each_tick_once);
	tcase_add_test(tc, catchup_all_fires_every_missed_tick_once);
	tcase_add_test(tc, catchup_none_skips_missed_ticks);
	tcase_add_test(tc, catchup_latest_fires_only_the_newest);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
