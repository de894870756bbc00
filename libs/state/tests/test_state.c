/* test_state.c - the Lua transitions against a real redis-server (db 9 of the session's
 * Redis when SLUICE_REDIS_URL is set, else a private redis-server started here). */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sluice/state.h"
#include "sluice/util.h"

static char url[256];
static pid_t own_redis;
static struct sl_state *st;

static void start_private_redis(void)
{
	int port = 20000 + (int)(getpid() % 20000);
	char portstr[16];

	snprintf(portstr, sizeof(portstr), "%d", port);
	own_redis = fork();
	if (own_redis == 0) {
		execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
		       "--save", "", "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
		_exit(127);
	}
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/9", port);
}

static void setup(void)
{
	char err[256];

	for (int i = 0; i < 100 && !st; i++) {
		st = sl_state_new(url, err, sizeof(err));
		if (!st)
			usleep(50000);
	}
	ck_assert_msg(st != NULL, "redis: %s", err);
	redisReply *r = sl_state_command(st, "FLUSHDB");
	ck_assert_ptr_nonnull(r);
	freeReplyObject(r);
}

static void teardown(void)
{
	sl_state_destroy(st);
	st = NULL;
}

static char *hget(const char *key, const char *field)
{
	redisReply *r = sl_state_command(st, "HGET %s %s", key, field);
	char *v = NULL;

	if (r && r->type == REDIS_REPLY_STRING)
		v = strdup(r->str);
	if (r)
		freeReplyObject(r);
	return v;
}

static void ck_field(const char *key, const char *field, const char *want)
{
	char *v = hget(key, field);
	ck_assert_msg(v && !strcmp(v, want), "%s %s: want %s, got %s", key, field, want,
		      v ? v : "(nil)");
	free(v);
}

/* A run a -> b (b depends on a), c independent; a has 3 attempts. */
static void create_run(const char *run, const char *idem)
{
	struct sl_run_node nodes[] = {{"a", 0, "b", 3}, {"b", 1, "", 1}, {"c", 0, "", 1}};
	struct sl_run_new rn = {.run_id = run, .flow = "f", .params_json = "{}", .intent = "normal",
				.source = "flow: f", .source_len = 7, .idem_key = idem,
				.requested_by = "test", .trace_id = "t", .tasks_csv = "a,b,c",
				.nodes = nodes, .nnodes = 3, .now_ms = 1000};
	char dup[64];

	ck_assert_int_eq(sl_state_run_create(st, &rn, dup, sizeof(dup)), SL_OK);
}

static void start_node(const char *run, const char *task, size_t n, int max_attempts,
		       struct sl_transition *t)
{
	struct sl_ti_new tis[8];

	for (size_t i = 0; i < n; i++) {
		tis[i].idx = (int)i;
		tis[i].dispatch = "blob";
		tis[i].len = 4;
	}
	ck_assert_int_eq(sl_state_node_start(st, run, task, n, max_attempts, tis, n, 1000, t),
			 SL_OK);
}

/* The result the tests apply: output 42 from worker w1, recorded at 5000 ms. */
static struct sl_result_in result_in(const char *run, const char *task, int idx,
				     unsigned attempt, const char *status)
{
	return (struct sl_result_in){.run = run, .task = task, .idx = idx, .attempt = attempt,
				     .status = status, .output = "42", .output_len = 2,
				     .error = "", .worker = "w1", .started_ms = 1, .finished_ms = 2,
				     .now_ms = 5000, .retry_delay_ms = 100};
}

static enum sl_err apply(const char *run, const char *task, int idx, unsigned attempt,
			 const char *status, struct sl_transition *t)
{
	struct sl_result_in res = result_in(run, task, idx, attempt, status);

	return sl_state_result_apply(st, &res, t);
}

START_TEST(create_is_idempotent)
{
	struct sl_run_node nodes[] = {{"a", 0, "", 1}};
	struct sl_run_new rn = {.run_id = "r2", .flow = "f", .params_json = "{}",
				.intent = "normal", .source = "x", .source_len = 1,
				.idem_key = "key1", .requested_by = "t", .trace_id = "t",
				.tasks_csv = "a", .nodes = nodes, .nnodes = 1, .now_ms = 1};
	char dup[64];

	create_run("r1", "key1");
	ck_assert_int_eq(sl_state_run_create(st, &rn, dup, sizeof(dup)), SL_ERR_EXISTS);
	ck_assert_str_eq(dup, "r1");
	ck_field("sluice:{r2}:run", "state", "DUPLICATE");
	ck_field("sluice:{r2}:run", "dup_of", "r1");
	/* A redelivered request for r1 itself changes nothing. */
	rn.run_id = "r1";
	rn.idem_key = NULL;
	ck_assert_int_eq(sl_state_run_create(st, &rn, dup, sizeof(dup)), SL_ERR_EXISTS);
	ck_assert_str_eq(dup, "");
	ck_field("sluice:{r1}:run", "state", "RUNNING");
	ck_field("sluice:{r1}:run", "tasks", "a,b,c");
}
END_TEST

START_TEST(lease_is_fenced_by_attempt)
{
	struct sl_transition t;

	create_run("r1", NULL);
	start_node("r1", "a", 1, 3, &t);
	ck_assert_str_eq(t.outcome, "started");
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 2, "w1", 5000), SL_ERR_STALE);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	ck_field("sluice:{r1}:ti:a:0", "state", "RUNNING");
	/* The same dispatch delivered again: to its holder a copy (the task may have ended
	 * there, its result not recorded yet: it must not run again), anyone else is refused;
	 * the lease stays the holder's. */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_ERR_STALE);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w2", 5000), SL_ERR_BUSY);
	ck_field("sluice:{r1}:ti:a:0", "worker", "w1");
	ck_assert_int_eq(sl_state_lease_renew(st, "r1", "a", 0, 1, "w2", 5000), SL_ERR_STALE);
	ck_assert_int_eq(sl_state_lease_renew(st, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	ck_assert_int_eq(sl_state_lease_release(st, "r1", "a", 0, 1, "w2"), SL_OK);
	ck_assert_int_eq(sl_state_lease_renew(st, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	ck_assert_int_eq(sl_state_lease_release(st, "r1", "a", 0, 1, "w1"), SL_OK);
	ck_assert_int_eq(sl_state_lease_renew(st, "r1", "a", 0, 1, "w1", 5000), SL_ERR_STALE);
}
END_TEST

START_TEST(results_release_downstream_and_finish_run)
{
	struct sl_transition t;

	create_run("r1", NULL);
	start_node("r1", "a", 2, 1, &t);
	sl_transition_clear(&t);
	start_node("r1", "c", 1, 1, &t);
	sl_transition_clear(&t);
	/* starting a node twice is refused */
	start_node("r1", "a", 2, 1, &t);
	ck_assert_str_eq(t.outcome, "stale");
	sl_transition_clear(&t);

	ck_assert_int_eq(apply("r1", "a", 0, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "applied");
	ck_assert_uint_eq(t.nready, 0);
	sl_transition_clear(&t);
	/* a duplicate of the same result is ignored */
	ck_assert_int_eq(apply("r1", "a", 0, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "stale");
	sl_transition_clear(&t);
	ck_assert_int_eq(apply("r1", "a", 1, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "node_done");
	ck_assert_uint_eq(t.nready, 1);
	ck_assert_str_eq(t.ready[0], "b");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:ti:a:1", "output", "42");
	ck_field("sluice:{r1}:run", "tasks_done", "2");

	start_node("r1", "b", 1, 1, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(apply("r1", "b", 0, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "node_done");
	ck_assert_str_eq(t.run_state, "RUNNING");
	sl_transition_clear(&t);
	ck_assert_int_eq(apply("r1", "c", 0, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.run_state, "SUCCEEDED");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:run", "state", "SUCCEEDED");
}
END_TEST

/* Applies the result of (task, idx, attempt) with a guarded start of node (ADR 30), one
 * instance; the result's transition in *t, the start's in *ts. */
static void apply_starting(const char *run, const char *task, int idx, unsigned attempt,
			   const char *status, const char *node, struct sl_transition *t,
			   struct sl_transition *ts)
{
	struct sl_result_in res = result_in(run, task, idx, attempt, status);
	struct sl_ti_new ti = {.idx = -1, .dispatch = "next", .len = 4};
	struct sl_node_start_in start = {.run = run, .task = node, .total = 1, .max_attempts = 1,
					 .tis = &ti, .n = 1, .now_ms = 6000};
	enum sl_err err, serr;

	size_t after = 0;

	ck_assert_int_eq(
		sl_state_result_apply_starting(st, &res, 1, t, &err, &start, &after, 1, ts, &serr),
		SL_OK);
	ck_assert_int_eq(err, SL_OK);
	ck_assert_int_eq(serr, SL_OK);
}

/* apply_starting(), expecting the result's outcome want and the start's want_start. */
static void ck_apply_starting(const char *run, const char *task, int idx, unsigned attempt,
			      const char *status, const char *node, const char *want,
			      const char *want_start)
{
	struct sl_transition t, ts;

	apply_starting(run, task, idx, attempt, status, node, &t, &ts);
	ck_assert_str_eq(t.outcome, want);
	ck_assert_str_eq(ts.outcome, want_start);
	sl_transition_clear(&t);
	sl_transition_clear(&ts);
}

static long zscore_exists(const char *key, const char *member)
{
	redisReply *r = sl_state_command(st, "ZSCORE %s %s", key, member);
	long found;

	ck_assert_ptr_nonnull(r);
	found = r->type == REDIS_REPLY_STRING;
	freeReplyObject(r);
	return found;
}

/* Run run of flow x -> y (one attempt each), x started. */
static void create_xy(const char *run)
{
	struct sl_run_node nodes[] = {{"x", 0, "y", 1}, {"y", 1, "", 1}};
	struct sl_run_new rn = {.run_id = run, .flow = "f", .params_json = "{}", .intent = "normal",
				.source = "flow: f", .source_len = 7, .requested_by = "test",
				.trace_id = "t", .tasks_csv = "x,y", .nodes = nodes, .nnodes = 2,
				.now_ms = 1000};
	struct sl_transition t;
	char dup[64];

	ck_assert_int_eq(sl_state_run_create(st, &rn, dup, sizeof(dup)), SL_OK);
	start_node(run, "x", 1, 1, &t);
	sl_transition_clear(&t);
}

/* A start sent with a result (ADR 30) happens only when the result left the node ready with
 * nothing failed or skipped upstream; otherwise it changes nothing and the node waits for
 * the usual start (the reaper's index keeps a ready one). */
START_TEST(a_start_sent_with_a_result_needs_the_node_ready)
{
	struct sl_transition t, ts;

	/* r1: a (2 instances, 3 attempts) -> b. A retried failure, then a's first instance:
	 * b still waits for a. */
	create_run("r1", NULL);
	start_node("r1", "a", 2, 3, &t);
	sl_transition_clear(&t);
	ck_apply_starting("r1", "a", 0, 1, "FAILED", "b", "retry", "unready");
	ck_apply_starting("r1", "a", 1, 1, "SUCCEEDED", "b", "applied", "unready");
	ck_field("sluice:{r1}:node:b", "state", "WAITING");
	ck_assert_ptr_null(hget("sluice:{r1}:ti:b:-1", "state"));

	/* a's retry is due; its success, a's last result, releases b: started with it */
	{
		struct sl_due *due;
		size_t n;
		ck_assert_int_eq(sl_state_timers_due(st, 6000, 10, &due, &n), SL_OK);
		ck_assert_uint_eq(n, 1);
		sl_due_free(due, n);
	}
	apply_starting("r1", "a", 0, 2, "SUCCEEDED", "b", &t, &ts);
	ck_assert_str_eq(t.outcome, "node_done");
	ck_assert_uint_eq(t.nready, 1);
	ck_assert_str_eq(t.ready[0], "b");
	ck_assert_str_eq(ts.outcome, "started");
	sl_transition_clear(&t);
	sl_transition_clear(&ts);
	ck_field("sluice:{r1}:node:b", "state", "ACTIVE");
	ck_field("sluice:{r1}:ti:b:-1", "state", "DISPATCHED");
	ck_field("sluice:{r1}:ti:b:-1", "queued_ms", "6000");
	ck_field("sluice:{r1}:disp:b", "-1", "next");
	ck_assert_int_eq(zscore_exists("sluice:pending", "sluice:{r1}:node:b"), 0);
	ck_assert_int_eq(zscore_exists("sluice:active", "sluice:{r1}:ti:b:-1"), 1);
	/* the same again (a redelivery): the result is stale, the start changes nothing */
	ck_apply_starting("r1", "a", 0, 2, "SUCCEEDED", "b", "stale", "unready");
	ck_field("sluice:{r1}:node:b", "total", "1");

	/* r2: x (one attempt) -> y. x fails: y is ready with a failed upstream, so the start
	 * (made as if x succeeded) is refused and y stays in the reaper's index until the
	 * usual start ends it UPSTREAM_FAILED. */
	create_xy("r2");
	apply_starting("r2", "x", 0, 1, "FAILED", "y", &t, &ts);
	ck_assert_str_eq(t.outcome, "node_done");
	ck_assert_uint_eq(t.nready, 1);
	ck_assert_str_eq(ts.outcome, "unready");
	sl_transition_clear(&t);
	sl_transition_clear(&ts);
	ck_field("sluice:{r2}:node:y", "state", "WAITING");
	ck_field("sluice:{r2}:node:y", "up_failed", "1");
	ck_assert_ptr_null(hget("sluice:{r2}:ti:y:-1", "state"));
	ck_assert_int_eq(zscore_exists("sluice:pending", "sluice:{r2}:node:y"), 1);
}
END_TEST

/* Applies res[0..2) with y's guarded start right after res[after]; answers in t[], *ts. */
static void apply_two_starting_y(const char *run, const struct sl_result_in *res, size_t after,
				 struct sl_transition *t, struct sl_transition *ts)
{
	struct sl_ti_new ti = {.idx = -1, .dispatch = "next", .len = 4};
	struct sl_node_start_in start = {.run = run, .task = "y", .total = 1, .max_attempts = 1,
					 .tis = &ti, .n = 1, .now_ms = 6000};
	enum sl_err errs[2], serr;

	ck_assert_int_eq(sl_state_result_apply_starting(st, res, 2, t, errs, &start, &after, 1,
							ts, &serr),
			 SL_OK);
	ck_assert_int_eq(errs[0], SL_OK);
	ck_assert_int_eq(errs[1], SL_OK);
	ck_assert_int_eq(serr, SL_OK);
}

/* A worker runs a carried task right after its upstream (ADR 31), so both results often come
 * in one batch: the start pipelined right after the upstream's result goes before the
 * carried task's own result, which then applies in the same round trip. A carried result
 * ahead of its start is stale (the reaper re-dispatches the started task later). */
START_TEST(a_carried_result_applies_after_its_start_in_one_call)
{
	struct sl_result_in res[2];
	struct sl_transition t[2], ts;

	create_xy("r3");
	res[0] = result_in("r3", "x", 0, 1, "SUCCEEDED");
	res[1] = result_in("r3", "y", -1, 1, "SUCCEEDED");
	apply_two_starting_y("r3", res, 0, t, &ts);
	ck_assert_str_eq(t[0].outcome, "node_done");
	ck_assert_str_eq(ts.outcome, "started");
	ck_assert_str_eq(t[1].outcome, "node_done");
	ck_assert_str_eq(t[1].run_state, "SUCCEEDED");
	for (int i = 0; i < 2; i++)
		sl_transition_clear(&t[i]);
	sl_transition_clear(&ts);
	ck_field("sluice:{r3}:run", "state", "SUCCEEDED");
	ck_field("sluice:{r3}:ti:y:-1", "output", "42");

	create_xy("r4");
	res[0] = result_in("r4", "y", -1, 1, "SUCCEEDED");
	res[1] = result_in("r4", "x", 0, 1, "SUCCEEDED");
	apply_two_starting_y("r4", res, 1, t, &ts);
	ck_assert_str_eq(t[0].outcome, "stale");
	ck_assert_str_eq(t[1].outcome, "node_done");
	ck_assert_str_eq(ts.outcome, "started");
	for (int i = 0; i < 2; i++)
		sl_transition_clear(&t[i]);
	sl_transition_clear(&ts);
	ck_field("sluice:{r4}:run", "state", "RUNNING");
	ck_field("sluice:{r4}:ti:y:-1", "state", "DISPATCHED");
}
END_TEST

START_TEST(failure_retries_then_fails_node_and_run)
{
	struct sl_transition t;
	struct sl_due *due;
	size_t n;

	create_run("r1", NULL);
	start_node("r1", "a", 1, 3, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(apply("r1", "a", 0, 1, "FAILED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "retry");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:ti:a:0", "state", "RETRY_WAIT");
	ck_field("sluice:{r1}:ti:a:0", "attempt", "2");
	/* not due before now + delay */
	ck_assert_int_eq(sl_state_timers_due(st, 5050, 10, &due, &n), SL_OK);
	ck_assert_uint_eq(n, 0);
	sl_due_free(due, n);
	ck_assert_int_eq(sl_state_timers_due(st, 5100, 10, &due, &n), SL_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(due[0].run, "r1");
	ck_assert_str_eq(due[0].task, "a");
	ck_assert_int_eq(due[0].idx, 0);
	ck_assert_uint_eq(due[0].attempt, 2);
	ck_assert_uint_eq(due[0].len, 4);
	sl_due_free(due, n);
	ck_field("sluice:{r1}:ti:a:0", "state", "DISPATCHED");
	/* popped once only */
	ck_assert_int_eq(sl_state_timers_due(st, 9999, 10, &due, &n), SL_OK);
	ck_assert_uint_eq(n, 0);
	sl_due_free(due, n);
	/* the old attempt is fenced off everywhere */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_ERR_STALE);
	ck_assert_int_eq(apply("r1", "a", 0, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "stale");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:run", "stale_results", "1");
	ck_assert_int_eq(apply("r1", "a", 0, 2, "TIMED_OUT", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "retry");
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_timers_due(st, 99999, 10, &due, &n), SL_OK);
	sl_due_free(due, n);
	ck_assert_int_eq(apply("r1", "a", 0, 3, "FAILED", &t), SL_OK);
	/* the node fails; the run goes on (c is independent, b decides by its trigger rule) */
	ck_assert_str_eq(t.outcome, "node_done");
	ck_assert_str_eq(t.run_state, "RUNNING");
	ck_assert_uint_eq(t.nready, 1);
	ck_assert_str_eq(t.ready[0], "b");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:node:a", "state", "FAILED");
	ck_field("sluice:{r1}:node:b", "up_failed", "1");
	ck_field("sluice:{r1}:ti:a:0", "state", "FAILED");
	ck_field("sluice:{r1}:ti:a:0", "retry_delays", "100,100");
	ck_field("sluice:{r1}:run", "state", "RUNNING");
	ck_field("sluice:{r1}:run", "error", "task a failed after 3 attempt(s): ");
	ck_assert_int_eq(sl_state_node_end(st, "r1", "b", "UPSTREAM_FAILED", "1 upstream failed",
					   6000, &t),
			 SL_OK);
	ck_assert_str_eq(t.outcome, "finished");
	ck_assert_str_eq(t.run_state, "RUNNING");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:ti:b:-1", "state", "UPSTREAM_FAILED");
	start_node("r1", "c", 1, 1, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(apply("r1", "c", 0, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "node_done");
	ck_assert_str_eq(t.run_state, "FAILED");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:run", "state", "FAILED");
	ck_field("sluice:{r1}:run", "error", "task a failed after 3 attempt(s): ");
}
END_TEST

START_TEST(node_end_skips_and_propagates)
{
	struct sl_transition t;

	create_run("r1", NULL);
	ck_assert_int_eq(sl_state_node_end(st, "r1", "a", "SKIPPED", "when: false", 2000, &t),
			 SL_OK);
	ck_assert_str_eq(t.outcome, "finished");
	ck_assert_uint_eq(t.nready, 1);
	ck_assert_str_eq(t.ready[0], "b");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:node:a", "state", "SKIPPED");
	ck_field("sluice:{r1}:node:b", "up_skipped", "1");
	ck_field("sluice:{r1}:ti:a:-1", "state", "SKIPPED");
	ck_field("sluice:{r1}:ti:a:-1", "error", "when: false");
	/* once only */
	ck_assert_int_eq(sl_state_node_end(st, "r1", "a", "SKIPPED", "again", 2000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "stale");
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_node_end(st, "r1", "b", "SKIPPED", "upstream skipped", 2000, &t),
			 SL_OK);
	sl_transition_clear(&t);
	/* a flow error fails the node, names itself as the run's error, fails the run at the end */
	ck_assert_int_eq(sl_state_node_end(st, "r1", "c", "FAILED", "task 'c' when: bad", 2000, &t),
			 SL_OK);
	ck_assert_str_eq(t.outcome, "finished");
	ck_assert_str_eq(t.run_state, "FAILED");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:run", "error", "task 'c' when: bad");
	ck_assert_int_eq(sl_state_node_end(st, "r1", "c", "FAILED", "x", 2000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "ended");
	sl_transition_clear(&t);
}
END_TEST

START_TEST(mapped_node_fails_once_all_instances_end)
{
	struct sl_transition t;

	create_run("r1", NULL);
	start_node("r1", "c", 3, 1, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(apply("r1", "c", 1, 1, "FAILED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "applied");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:node:c", "state", "ACTIVE");
	ck_assert_int_eq(apply("r1", "c", 0, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "applied");
	sl_transition_clear(&t);
	ck_assert_int_eq(apply("r1", "c", 2, 1, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "node_done");
	ck_assert_str_eq(t.run_state, "RUNNING");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:node:c", "state", "FAILED");
	ck_field("sluice:{r1}:run", "nodes_failed", "1");
}
END_TEST

START_TEST(empty_map_completes_node)
{
	struct sl_transition t;

	create_run("r1", NULL);
	start_node("r1", "a", 0, 1, &t);
	ck_assert_str_eq(t.outcome, "finished");
	ck_assert_uint_eq(t.nready, 1);
	ck_assert_str_eq(t.ready[0], "b");
	sl_transition_clear(&t);
}
END_TEST

START_TEST(cancel_ends_run_and_fences_workers)
{
	struct sl_transition t;

	create_run("r1", NULL);
	start_node("r1", "a", 1, 1, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_run_cancel(st, "r1", "test", 7000), SL_OK);
	ck_assert_int_eq(sl_state_run_cancel(st, "r1", "test", 7000), SL_ERR_STALE);
	ck_field("sluice:{r1}:run", "state", "CANCELLED");
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_ERR_STALE);
}
END_TEST

static long long zcard(const char *key)
{
	redisReply *r = sl_state_command(st, "ZCARD %s", key);
	long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

	if (r)
		freeReplyObject(r);
	return n;
}

START_TEST(cancel_deletes_the_runs_leases)
{
	struct sl_transition t;
	redisReply *r;

	create_run("r1", NULL);
	start_node("r1", "a", 3, 1, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 1, 1, "w2", 5000), SL_OK);
	r = sl_state_command(st, "SCARD sluice:{r1}:leases");
	ck_assert_int_eq(r->integer, 2);
	freeReplyObject(r);
	ck_assert_int_eq(sl_state_lease_release(st, "r1", "a", 1, 1, "w2"), SL_OK);
	r = sl_state_command(st, "SCARD sluice:{r1}:leases");
	ck_assert_int_eq(r->integer, 1);
	freeReplyObject(r);
	ck_assert_int_eq(sl_state_run_cancel(st, "r1", "test", 7000), SL_OK);
	/* the holder's next renewal fails: that is what makes the worker kill the task */
	ck_assert_int_eq(sl_state_lease_renew(st, "r1", "a", 0, 1, "w1", 5000), SL_ERR_STALE);
	ck_field("sluice:{r1}:ti:a:0", "state", "CANCELLED");
	ck_field("sluice:{r1}:ti:a:2", "state", "CANCELLED"); /* dispatched, never started */
	ck_field("sluice:{r1}:node:b", "state", "WAITING");
	r = sl_state_command(st, "EXISTS sluice:{r1}:leases sluice:{r1}:lease:a:0");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
}
END_TEST

START_TEST(tag_limit_queues_and_wakes_in_order)
{
	struct sl_transition t;
	char **woken = NULL;
	size_t n = 0;

	create_run("r1", NULL);
	ck_assert_int_eq(sl_state_limits_set(st, "r1", "a", "utag=1"), SL_OK);
	start_node("r1", "a", 3, 1, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	ck_assert_int_eq(zcard("sluice:sem:utag"), 1);
	/* full: the others wait, first come first served, and stay DISPATCHED */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 2, 1, "w2", 5000), SL_ERR_BUSY);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 1, 1, "w2", 5000), SL_ERR_BUSY);
	ck_field("sluice:{r1}:ti:a:2", "waiting_for", "utag");
	ck_field("sluice:{r1}:ti:a:2", "state", "WAITING_SLOT");
	ck_assert_int_eq(zcard("sluice:semwait:utag"), 2);
	/* nothing frees while the holder renews */
	ck_assert_int_eq(sl_state_lease_renew(st, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	ck_assert_int_eq(sl_state_sem_wake(st, 60000, &woken, &n), SL_OK);
	ck_assert_uint_eq(n, 0);
	sl_state_strv_free(woken, n);
	ck_assert_int_eq(sl_state_lease_release(st, "r1", "a", 0, 1, "w1"), SL_OK);
	ck_assert_int_eq(zcard("sluice:sem:utag"), 0);
	ck_assert_int_eq(sl_state_sem_wake(st, 60000, &woken, &n), SL_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(woken[0], "r1|a|2|1");
	sl_state_strv_free(woken, n);
	ck_field("sluice:{r1}:ti:a:2", "state", "DISPATCHED");
	ck_field("sluice:{r1}:ti:a:1", "state", "WAITING_SLOT");
	/* the slot is reserved for the woken one; a stray dispatch of a waiter is dropped */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 1, 1, "w1", 5000), SL_ERR_STALE);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 2, 1, "w2", 5000), SL_OK);
	ck_assert_int_eq(zcard("sluice:sem:utag"), 1);
}
END_TEST

START_TEST(tag_slot_of_a_lost_holder_lapses)
{
	struct sl_transition t;
	char **woken = NULL;
	size_t n = 0;
	redisReply *r;

	create_run("r1", NULL);
	ck_assert_int_eq(sl_state_limits_set(st, "r1", "a", "ltag=1"), SL_OK);
	start_node("r1", "a", 3, 1, &t);
	sl_transition_clear(&t);
	/* w1 takes the slot for 300 ms and never renews (it crashed) */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 300), SL_OK);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 1, 1, "w2", 5000), SL_ERR_BUSY);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 2, 1, "w2", 5000), SL_ERR_BUSY);
	usleep(400000);
	ck_assert_int_eq(sl_state_sem_wake(st, 60000, &woken, &n), SL_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(woken[0], "r1|a|1|1");
	sl_state_strv_free(woken, n);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 1, 1, "w2", 5000), SL_OK);
	/* waiters of a run that ended are dropped, not woken */
	ck_assert_int_eq(sl_state_run_cancel(st, "r1", "test", 7000), SL_OK);
	ck_assert_int_eq(sl_state_lease_release(st, "r1", "a", 1, 1, "w2"), SL_OK);
	ck_assert_int_eq(zcard("sluice:sem:ltag"), 0);
	ck_assert_int_eq(sl_state_sem_wake(st, 60000, &woken, &n), SL_OK);
	ck_assert_uint_eq(n, 0);
	sl_state_strv_free(woken, n);
	ck_assert_int_eq(zcard("sluice:semwait:ltag"), 0);
	r = sl_state_command(st, "HEXISTS sluice:semtags ltag");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
	/* a reservation that cannot be used is given back */
	ck_assert_int_eq(sl_state_limits_set(st, "r2", "a", "ltag=1"), SL_OK);
	r = sl_state_command(st, "ZADD sluice:sem:ltag 99999999999999 r2|a|0|1");
	freeReplyObject(r);
	ck_assert_int_eq(sl_state_sem_unreserve(st, "r2|a|0|1"), SL_OK);
	ck_assert_int_eq(zcard("sluice:sem:ltag"), 0);
}
END_TEST

START_TEST(reject_records_error)
{
	ck_assert_int_eq(sl_state_run_reject(st, "r9", "nope", "unknown flow 'nope'", 1), SL_OK);
	ck_field("sluice:{r9}:run", "state", "REJECTED");
	ck_field("sluice:{r9}:run", "error", "unknown flow 'nope'");
}
END_TEST

START_TEST(worker_registry)
{
	int draining = -1;

	ck_assert_int_eq(sl_state_worker_heartbeat(st, "w1", "default", 4, 1, 123), SL_OK);
	ck_field("sluice:worker:w1", "busy", "1");
	ck_assert_int_eq(sl_state_worker_draining(st, "w1", &draining), SL_OK);
	ck_assert_int_eq(draining, 0);
	ck_assert_int_eq(sl_state_worker_request_drain(st, "w1"), SL_OK);
	ck_assert_int_eq(sl_state_worker_draining(st, "w1", &draining), SL_OK);
	ck_assert_int_eq(draining, 1);
	ck_assert_int_eq(sl_state_worker_deregister(st, "w1"), SL_OK);
	redisReply *r = sl_state_command(st, "ZSCORE sluice:workers w1");
	ck_assert_int_eq(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
	/* a drain request for a worker that is gone does not bring its hash back */
	ck_assert_int_eq(sl_state_worker_request_drain(st, "w1"), SL_ERR_NOT_FOUND);
	r = sl_state_command(st, "EXISTS sluice:worker:w1");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
}
END_TEST

/* A big fan-out is written 1000 instances per script call; a node left half-written (its
 * planner died) stays in the pending index, a second start says "resume", and writing the
 * rest creates only the missing instances. */
START_TEST(big_fanout_is_written_in_batches_and_resumed)
{
	enum { N = 2500 };
	static struct sl_ti_new tis[N];
	struct sl_transition t;
	struct sl_ready_node *ready = NULL;
	size_t nready = 0, ncreated = 0;
	int *created = NULL;
	redisReply *r;

	create_run("r1", NULL);
	for (int i = 0; i < N; i++) {
		tis[i].idx = i;
		tis[i].dispatch = "blob";
		tis[i].len = 4;
	}
	/* started with the first 1200 only, as a planner dying after them leaves it */
	ck_assert_int_eq(sl_state_node_start(st, "r1", "a", N, 1, tis, 1200, 1000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "started");
	sl_transition_clear(&t);
	ck_field("sluice:{r1}:node:a", "written", "1200");
	ck_field("sluice:{r1}:ti:a:1199", "state", "DISPATCHED");
	r = sl_state_command(st, "EXISTS sluice:{r1}:ti:a:1200");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
	/* the reaper finds it after the settle time, like a node never started */
	ck_assert_int_eq(sl_state_reap_nodes(st, 1500, 1000, 10, &ready, &nready), SL_OK);
	for (size_t i = 0; i < nready; i++)
		ck_assert_str_ne(ready[i].task, "a"); /* not before its settle time */
	sl_ready_nodes_free(ready, nready);
	ck_assert_int_eq(sl_state_reap_nodes(st, 2500, 1000, 10, &ready, &nready), SL_OK);
	{
		int found = 0;

		for (size_t i = 0; i < nready; i++)
			found |= !strcmp(ready[i].task, "a");
		ck_assert_msg(found, "half-written node a not reaped (%zu others)", nready);
	}
	sl_ready_nodes_free(ready, nready);
	/* a second start resumes; writing everything creates the 1300 missing ones only */
	ck_assert_int_eq(sl_state_node_start(st, "r1", "a", N, 1, NULL, 0, 3000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "resume");
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_ti_add(st, "r1", "a", 1, tis, N, 3000, &created, &ncreated),
			 SL_OK);
	ck_assert_uint_eq(ncreated, 1300);
	ck_assert_int_eq(created[0], 1200);
	ck_assert_int_eq(created[1299], 2499);
	free(created);
	ck_field("sluice:{r1}:node:a", "written", "2500");
	ck_field("sluice:{r1}:node:a", "total", "2500");
	ck_field("sluice:{r1}:run", "tasks_total", "2500");
	r = sl_state_command(st, "ZSCORE sluice:pending sluice:{r1}:node:a");
	ck_assert_int_eq(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
	/* complete now: a further start changes nothing */
	ck_assert_int_eq(sl_state_node_start(st, "r1", "a", N, 1, tis, N, 4000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "stale");
	sl_transition_clear(&t);
	/* a node that is not ACTIVE takes no instances */
	ck_assert_int_eq(sl_state_ti_add(st, "r1", "zz", 1, tis, 10, 4000, NULL, NULL),
			 SL_ERR_STALE);
}
END_TEST

START_TEST(applied_result_releases_the_lease)
{
	struct sl_transition t;
	redisReply *r;

	create_run("r1", NULL);
	start_node("r1", "a", 1, 3, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	/* a stale result leaves the lease alone */
	ck_assert_int_eq(apply("r1", "a", 0, 7, "SUCCEEDED", &t), SL_OK);
	ck_assert_str_eq(t.outcome, "stale");
	sl_transition_clear(&t);
	r = sl_state_command(st, "EXISTS sluice:{r1}:lease:a:0");
	ck_assert_int_eq(r->integer, 1);
	freeReplyObject(r);
	/* the current attempt's result ends its lease: the worker need not release it */
	ck_assert_int_eq(apply("r1", "a", 0, 1, "SUCCEEDED", &t), SL_OK);
	sl_transition_clear(&t);
	r = sl_state_command(st, "EXISTS sluice:{r1}:lease:a:0");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
	r = sl_state_command(st, "SISMEMBER sluice:{r1}:leases sluice:{r1}:lease:a:0");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
	ck_assert_int_eq(sl_state_lease_renew(st, "r1", "a", 0, 1, "w1", 5000), SL_ERR_STALE);
}
END_TEST

/* Asserts that hashes k1 and k2 hold the same fields and values (the run's own id aside). */
static void ck_same_hash(const char *k1, const char *k2)
{
	redisReply *a = sl_state_command(st, "HGETALL %s", k1);
	redisReply *b = sl_state_command(st, "HLEN %s", k2);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_msg(a->elements > 0, "%s is empty", k1);
	ck_assert_int_eq((long long)a->elements / 2, b->integer);
	for (size_t i = 0; i + 1 < a->elements; i += 2) {
		if (!strcmp(a->element[i]->str, "id"))
			continue;
		char *v = hget(k2, a->element[i]->str);
		ck_assert_msg(v && !strcmp(v, a->element[i + 1]->str), "%s %s: %s, %s %s",
			      k1, a->element[i]->str, a->element[i + 1]->str, k2, v ? v : "(nil)");
		free(v);
	}
	freeReplyObject(a);
	freeReplyObject(b);
}

/* Asserts that transitions one[i] and many[i] (i < n) are the same, and clears them. */
static void ck_same_transitions(struct sl_transition *one, struct sl_transition *many, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		ck_assert_str_eq(one[i].outcome, many[i].outcome);
		ck_assert_str_eq(one[i].run_state, many[i].run_state);
		ck_assert_uint_eq(one[i].nready, many[i].nready);
		for (size_t j = 0; j < many[i].nready; j++)
			ck_assert_str_eq(one[i].ready[j], many[i].ready[j]);
		sl_transition_clear(&one[i]);
		sl_transition_clear(&many[i]);
	}
}

/* ck_same_hash() of each key of runs r1 and r2 ("run", "node:a", ...). */
static void ck_same_run_hashes(const char *const *keys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char k1[64], k2[64];

		snprintf(k1, sizeof(k1), "sluice:{r1}:%s", keys[i]);
		snprintf(k2, sizeof(k2), "sluice:{r2}:%s", keys[i]);
		ck_same_hash(k1, k2);
	}
}

/* EXISTS of key with the run's id r, as 0/1 (fmt has one %s for it). */
static long long exists_of(const char *fmt, const char *r)
{
	char key[128];
	redisReply *x;
	long long v;

	snprintf(key, sizeof(key), fmt, r);
	x = sl_state_command(st, "EXISTS %s", key);
	ck_assert_ptr_nonnull(x);
	v = x->integer;
	freeReplyObject(x);
	return v;
}

/* More results than one script call takes (three calls), of two nodes, with leases and a tag's
 * slots held, a duplicate and a failure: the same replies and the same state as one by one,
 * including what the results of a node share (counters, dispatch hash, the reaper's index,
 * the run's lease set). */
START_TEST(big_batch_apply_matches_one_by_one)
{
	/* two full calls and part of a third */
	enum { NA = 2 * SL_RESULTS_PER_CALL + 44, N = NA + 2, DUP_AT = SL_RESULTS_PER_CALL + 50 };
	const char *runs[2] = {"r1", "r2"};
	static struct sl_ti_new tis[NA];
	static struct sl_result_in in[N];
	static struct sl_transition one[N], many[N];
	static enum sl_err errs[N];
	static const char *tasks[N], *status[N];
	static int idx[N];
	char last[32], last_lease[48], done[16], tasks_done[16];
	const char *same[] = {"run",	  "node:a",   "node:c", "ti:a:0", "ti:a:5",
			      "ti:a:7", "ti:a:150", last,	"ti:c:0"};
	const char *gone[] = {"sluice:{%s}:lease:a:0", last_lease,
			      "sluice:{%s}:lease:c:0", "sluice:{%s}:disp:a", "sluice:{%s}:disp:c",
			      "sluice:{%s}:leases"};
	struct sl_transition t;
	size_t n = 0;

	snprintf(last, sizeof(last), "ti:a:%d", NA - 1);
	snprintf(last_lease, sizeof(last_lease), "sluice:{%%s}:lease:a:%d", (NA - 1) / 10 * 10);
	snprintf(done, sizeof(done), "%d", NA - 1);
	snprintf(tasks_done, sizeof(tasks_done), "%d", NA);

	for (int i = 0; i < NA; i++)
		tis[i] = (struct sl_ti_new){.idx = i, .dispatch = "blob", .len = 4};
	for (int k = 0; k < 2; k++) {
		create_run(runs[k], NULL);
		ck_assert_int_eq(sl_state_limits_set(st, runs[k], "c", "btag=5"), SL_OK);
		ck_assert_int_eq(sl_state_node_start(st, runs[k], "a", NA, 1, tis, NA, 1000, &t),
				 SL_OK);
		sl_transition_clear(&t);
		start_node(runs[k], "c", 1, 1, &t);
		sl_transition_clear(&t);
		for (int i = 0; i < NA; i += 10)
			ck_assert_int_eq(sl_state_lease_acquire(st, runs[k], "a", i, 1, "w1", 60000),
					 SL_OK);
		ck_assert_int_eq(sl_state_lease_acquire(st, runs[k], "c", 0, 1, "w1", 60000), SL_OK);
	}
	ck_assert_int_eq(zcard("sluice:sem:btag"), 2);
	for (int i = 0; i < NA; i++) {
		tasks[n] = "a", idx[n] = i, status[n++] = i == 7 ? "FAILED" : "SUCCEEDED";
		if (i == 150)
			tasks[n] = "c", idx[n] = 0, status[n++] = "SUCCEEDED";
		if (i == DUP_AT) /* a duplicate of a result of the call before */
			tasks[n] = "a", idx[n] = 5, status[n++] = "SUCCEEDED";
	}
	ck_assert_uint_eq(n, N);
	for (size_t i = 0; i < N; i++) {
		in[i] = (struct sl_result_in){.run = "r1", .task = tasks[i], .idx = idx[i],
					      .attempt = 1, .status = status[i], .output = "42",
					      .output_len = 2, .error = "boom", .worker = "w1",
					      .started_ms = 1, .finished_ms = 2, .now_ms = 5000,
					      .retry_delay_ms = 100};
		ck_assert_int_eq(sl_state_result_apply(st, &in[i], &one[i]), SL_OK);
		in[i].run = "r2";
	}
	ck_assert_int_eq(sl_state_result_apply_many(st, in, N, many, errs), SL_OK);
	for (size_t i = 0; i < N; i++) {
		/* c[0] ends c, a[5] again is stale, the last a ends a */
		const char *want = "applied";

		if (i == DUP_AT + 2)
			want = "stale";
		else if (i == 151 || i == N - 1)
			want = "node_done";

		ck_assert_int_eq(errs[i], SL_OK);
		ck_assert_msg(!strcmp(many[i].outcome, want), "result %zu (%s[%d]): want %s, got %s",
			      i, tasks[i], idx[i], want, many[i].outcome);
	}
	ck_same_transitions(one, many, N);
	ck_same_run_hashes(same, sizeof(same) / sizeof(same[0]));
	ck_field("sluice:{r2}:node:a", "state", "FAILED");
	ck_field("sluice:{r2}:node:a", "done", done);
	ck_field("sluice:{r2}:node:a", "failed", "1");
	ck_field("sluice:{r2}:node:c", "state", "SUCCEEDED");
	ck_field("sluice:{r2}:run", "tasks_done", tasks_done);
	ck_field("sluice:{r2}:run", "tasks_failed", "1");
	ck_field("sluice:{r2}:run", "stale_results", "1");
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
		ck_assert_int_eq(exists_of(gone[i], "r1"), 0);
		ck_assert_int_eq(exists_of(gone[i], "r2"), 0);
	}
	ck_assert_int_eq(zcard("sluice:sem:btag"), 0);
	ck_assert_int_eq(zcard("sluice:active"), 0);
}
END_TEST

START_TEST(a_batch_records_each_result_as_given)
{
	/* One call; plain successes share their worker, error and exit code once per group of
	 * a worker's results in a row (result_apply.lua's 'ok' groups), the rest go whole. */
	static const struct {
		const char *status, *output, *error, *worker;
		int exit_code;
	} in[] = {
		{"SUCCEEDED", "10", "", "w1", 0},  {"SUCCEEDED", "11", NULL, "w1", 0},
		{"SUCCEEDED", "12", "", "w2", 0},  {"SUCCEEDED", NULL, "", "w1", 0},
		{"FAILED", "", "boom", "w2", 2},   {"SUCCEEDED", "15", "odd", "w1", 0},
		{"SUCCEEDED", "16", "", "w1", 7},
	};
	enum { N = sizeof(in) / sizeof(in[0]) };
	struct sl_result_in res[N];
	struct sl_transition t[N];
	enum sl_err errs[N];
	char key[64], num[32];

	create_run("r1", NULL);
	start_node("r1", "c", N, 1, &t[0]);
	sl_transition_clear(&t[0]);
	for (int i = 0; i < N; i++)
		res[i] = (struct sl_result_in){.run = "r1", .task = "c", .idx = i, .attempt = 1,
					       .status = in[i].status, .output = in[i].output,
					       .output_len = in[i].output ? strlen(in[i].output) : 0,
					       .error = in[i].error, .exit_code = in[i].exit_code,
					       .worker = in[i].worker, .started_ms = 100 + i,
					       .finished_ms = 200 + i, .now_ms = 5000};
	ck_assert_int_eq(sl_state_result_apply_many(st, res, N, t, errs), SL_OK);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(errs[i], SL_OK);
		ck_assert_str_eq(t[i].outcome, i < N - 1 ? "applied" : "node_done");
		sl_transition_clear(&t[i]);
		snprintf(key, sizeof(key), "sluice:{r1}:ti:c:%d", i);
		ck_field(key, "state", !strcmp(in[i].status, "FAILED") ? "FAILED" : "SUCCEEDED");
		ck_field(key, "output", in[i].output ? in[i].output : "null");
		ck_field(key, "worker", in[i].worker);
		snprintf(num, sizeof(num), "%d", in[i].exit_code);
		ck_field(key, "exit_code", num);
		snprintf(num, sizeof(num), "%d", 100 + i);
		ck_field(key, "started_ms", num);
		snprintf(num, sizeof(num), "%d", 200 + i);
		ck_field(key, "finished_ms", num);
	}
	ck_field("sluice:{r1}:ti:c:4", "error", "boom");
	ck_field("sluice:{r1}:node:c", "state", "FAILED");
	ck_field("sluice:{r1}:node:c", "done", "6");
	ck_field("sluice:{r1}:run", "tasks_done", "6");
	ck_field("sluice:{r1}:run", "tasks_failed", "1");
}
END_TEST

START_TEST(batch_apply_matches_one_by_one)
{
	/* run r1 gets the results one by one, r2 the same ones in one pipelined batch */
	static const struct {
		const char *task;
		int idx;
		unsigned attempt;
		const char *status, *outcome;
	} seq[] = {
		{"a", 0, 1, "SUCCEEDED", "applied"},
		{"a", 0, 1, "SUCCEEDED", "stale"},  /* a duplicate, after the first in the batch */
		{"c", 0, 2, "SUCCEEDED", "stale"},  /* not the current attempt */
		{"c", 0, 1, "FAILED", "retry"},
		{"c", 0, 2, "SUCCEEDED", "stale"},  /* waiting for its retry, not dispatched */
		{"a", 1, 1, "FAILED", "node_done"}, /* a ends FAILED, b is ready */
	};
	enum { N = sizeof(seq) / sizeof(seq[0]) };
	const char *runs[2] = {"r1", "r2"};
	struct sl_result_in in[N];
	struct sl_transition one[N], many[N];
	enum sl_err errs[N];
	const char *keys[] = {"run", "node:a", "node:b", "node:c", "ti:a:0", "ti:a:1", "ti:c:0"};
	struct sl_transition t;
	redisReply *r1, *r2;

	for (int k = 0; k < 2; k++) {
		create_run(runs[k], NULL);
		start_node(runs[k], "a", 2, 1, &t);
		sl_transition_clear(&t);
		start_node(runs[k], "c", 1, 2, &t);
		sl_transition_clear(&t);
	}
	for (size_t i = 0; i < N; i++) {
		ck_assert_int_eq(apply("r1", seq[i].task, seq[i].idx, seq[i].attempt, seq[i].status,
				       &one[i]),
				 SL_OK);
		in[i] = (struct sl_result_in){.run = "r2", .task = seq[i].task, .idx = seq[i].idx,
					      .attempt = seq[i].attempt, .status = seq[i].status,
					      .output = "42", .output_len = 2, .error = "",
					      .worker = "w1", .started_ms = 1, .finished_ms = 2,
					      .now_ms = 5000, .retry_delay_ms = 100};
	}
	ck_assert_int_eq(sl_state_result_apply_many(st, in, N, many, errs), SL_OK);
	for (size_t i = 0; i < N; i++) {
		ck_assert_int_eq(errs[i], SL_OK);
		/* replies in the order of the calls */
		ck_assert_msg(!strcmp(many[i].outcome, seq[i].outcome), "result %zu: want %s, got %s",
			      i, seq[i].outcome, many[i].outcome);
	}
	ck_same_transitions(one, many, N);
	ck_same_run_hashes(keys, sizeof(keys) / sizeof(keys[0]));
	ck_field("sluice:{r2}:node:a", "state", "FAILED");
	ck_field("sluice:{r2}:ti:a:0", "state", "SUCCEEDED");
	ck_field("sluice:{r2}:ti:c:0", "state", "RETRY_WAIT");
	ck_field("sluice:{r2}:run", "stale_results", "3");
	r1 = sl_state_command(st, "ZSCORE sluice:timers r1|c|0|2");
	r2 = sl_state_command(st, "ZSCORE sluice:timers r2|c|0|2");
	ck_assert_ptr_nonnull(r1);
	ck_assert_ptr_nonnull(r2);
	ck_assert_int_eq(r2->type, REDIS_REPLY_STRING);
	ck_assert_str_eq(r2->str, "5100");
	ck_assert_str_eq(r1->str, r2->str);
	freeReplyObject(r1);
	freeReplyObject(r2);
	/* an empty batch is a no-op */
	ck_assert_int_eq(sl_state_result_apply_many(st, in, 0, many, errs), SL_OK);
}
END_TEST

/* What a real instance carries: a TaskDispatch over 64 bytes, a generated worker id, ms
 * timestamps. */
static char big_dispatch[200];
static const char long_worker[] = "w-vm-2828-01a201844a6fa82d822734";

static void start_big(const char *run, const char *task, size_t n, int max_attempts)
{
	struct sl_ti_new tis[8];
	struct sl_transition t;

	memset(big_dispatch, 'd', sizeof(big_dispatch));
	for (size_t i = 0; i < n; i++)
		tis[i] = (struct sl_ti_new){.idx = (int)i, .dispatch = big_dispatch,
					    .len = sizeof(big_dispatch)};
	ck_assert_int_eq(sl_state_node_start(st, run, task, n, max_attempts, tis, n,
					     1795321783151LL, &t),
			 SL_OK);
	ck_assert_str_eq(t.outcome, "started");
	sl_transition_clear(&t);
}

/* Takes the lease of (run, task, idx, attempt) and reports status for it. */
static void run_attempt(const char *run, const char *task, int idx, unsigned attempt,
			const char *status, struct sl_transition *t)
{
	struct sl_result_in res = {.run = run, .task = task, .idx = idx, .attempt = attempt,
				   .status = status, .output = "null", .output_len = 4,
				   .error = strcmp(status, "SUCCEEDED") ? "exit status 1" : "",
				   .worker = long_worker, .started_ms = 1795321787059LL,
				   .finished_ms = 1795321787060LL, .now_ms = 1795321787061LL,
				   .retry_delay_ms = 100};

	ck_assert_int_eq(sl_state_lease_acquire(st, run, task, idx, attempt, long_worker, 5000),
			 SL_OK);
	ck_assert_int_eq(sl_state_result_apply(st, &res, t), SL_OK);
}

/* Every key of run left is its run hash, a node hash or an instance hash, and every instance
 * hash is listpack-encoded (values within hash-max-listpack-value: a third of the memory);
 * the global indexes hold nothing of it. Returns the number of instance hashes. */
static int ck_only_compact_hashes_left(const char *run)
{
	char pattern[64], prefix[64];
	char cursor[32] = "0";
	int ninst = 0;

	snprintf(pattern, sizeof(pattern), "sluice:{%s}:*", run);
	snprintf(prefix, sizeof(prefix), "sluice:{%s}:", run);
	do {
		redisReply *r = sl_state_command(st, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);

		ck_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
		sl_strlcpy(cursor, r->element[0]->str, sizeof(cursor));
		for (size_t i = 0; i < r->element[1]->elements; i++) {
			const char *key = r->element[1]->element[i]->str;
			const char *rest = key + strlen(prefix);
			redisReply *e;

			if (!strcmp(rest, "run") || !strncmp(rest, "node:", 5))
				continue;
			ck_assert_msg(!strncmp(rest, "ti:", 3), "%s survived the run's end", key);
			e = sl_state_command(st, "OBJECT ENCODING %s", key);
			ck_assert_msg(e && e->type == REDIS_REPLY_STRING && !strcmp(e->str, "listpack"),
				      "%s is %s", key, e && e->str ? e->str : "(nil)");
			freeReplyObject(e);
			ninst++;
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0"));
	ck_assert_int_eq(zcard("sluice:active"), 0);
	ck_assert_int_eq(zcard("sluice:pending"), 0);
	ck_assert_int_eq(zcard("sluice:timers"), 0);
	return ninst;
}

START_TEST(finished_run_keeps_only_compact_hashes)
{
	struct sl_transition t;
	struct sl_due *due = NULL;
	void *d = NULL;
	size_t n = 0, len = 0;
	redisReply *r;

	create_run("r1", NULL);
	start_big("r1", "a", 3, 3);
	start_big("r1", "c", 1, 1);
	/* the dispatch stays out of the instance hash from the start */
	ck_field("sluice:{r1}:ti:a:0", "state", "DISPATCHED");
	r = sl_state_command(st, "OBJECT ENCODING sluice:{r1}:ti:a:0");
	ck_assert_str_eq(r->str, "listpack");
	freeReplyObject(r);
	run_attempt("r1", "a", 0, 1, "SUCCEEDED", &t);
	sl_transition_clear(&t);
	/* a retried instance gets its stored dispatch back, also for a re-send by slot */
	run_attempt("r1", "a", 1, 1, "FAILED", &t);
	ck_assert_str_eq(t.outcome, "retry");
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_timers_due(st, 1795321787161LL, 10, &due, &n), SL_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(due[0].len, sizeof(big_dispatch));
	ck_assert(!memcmp(due[0].dispatch, big_dispatch, sizeof(big_dispatch)));
	sl_due_free(due, n);
	ck_assert_int_eq(sl_state_ti_dispatch(st, "r1", "a", 1, "DISPATCHED", 1, &d, &len),
			 SL_ERR_STALE);
	ck_assert_int_eq(sl_state_ti_dispatch(st, "r1", "a", 1, "DISPATCHED", 2, &d, &len), SL_OK);
	ck_assert(len == sizeof(big_dispatch) && !memcmp(d, big_dispatch, len));
	free(d);
	run_attempt("r1", "a", 1, 2, "SUCCEEDED", &t);
	sl_transition_clear(&t);
	/* an instance that ended has nothing left to re-send */
	ck_assert_int_eq(sl_state_ti_dispatch(st, "r1", "a", 1, "SUCCEEDED", 2, &d, &len),
			 SL_ERR_STALE);
	run_attempt("r1", "a", 2, 1, "SUCCEEDED", &t);
	ck_assert_str_eq(t.outcome, "node_done");
	sl_transition_clear(&t);
	r = sl_state_command(st, "EXISTS sluice:{r1}:disp:a sluice:{r1}:disp:c");
	ck_assert_int_eq(r->integer, 1); /* a's emptied with its last instance, c's is in use */
	freeReplyObject(r);
	start_big("r1", "b", 1, 1);
	run_attempt("r1", "b", 0, 1, "SUCCEEDED", &t);
	sl_transition_clear(&t);
	run_attempt("r1", "c", 0, 1, "SUCCEEDED", &t);
	ck_assert_str_eq(t.run_state, "SUCCEEDED");
	sl_transition_clear(&t);
	ck_assert_int_eq(ck_only_compact_hashes_left("r1"), 5);
	ck_field("sluice:{r1}:ti:a:1", "worker", long_worker);
	ck_field("sluice:{r1}:ti:a:1", "retry_delays", "100");
}
END_TEST

START_TEST(cancelled_run_keeps_only_compact_hashes)
{
	struct sl_transition t;

	create_run("r1", NULL);
	start_big("r1", "a", 3, 3);
	run_attempt("r1", "a", 0, 1, "SUCCEEDED", &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 1, 1, long_worker, 5000), SL_OK);
	ck_assert_int_eq(sl_state_run_cancel(st, "r1", "cancelled by test", 7000), SL_OK);
	ck_field("sluice:{r1}:ti:a:2", "state", "CANCELLED");
	ck_assert_int_eq(ck_only_compact_hashes_left("r1"), 3);
}
END_TEST

static char *get_str(const char *key)
{
	redisReply *r = sl_state_command(st, "GET %s", key);
	char *v = r && r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;

	if (r)
		freeReplyObject(r);
	return v;
}

/* The worker's batch: one pipeline, each lease answered as one call would be, in order. */
START_TEST(lease_acquire_many_answers_in_order)
{
	struct sl_transition t;
	struct sl_lease_req q[] = {
		{.run = "r1", .task = "a", .idx = 0, .attempt = 1, .ttl_ms = 5000}, /* ok */
		{.run = "r1", .task = "a", .idx = 1, .attempt = 1, .ttl_ms = 5000}, /* w2 holds it */
		{.run = "r1", .task = "a", .idx = 2, .attempt = 2, .ttl_ms = 5000}, /* stale */
		{.run = "r1", .task = "c", .idx = 0, .attempt = 1, .ttl_ms = 5000}, /* tag slot */
		{.run = "r1", .task = "c", .idx = 1, .attempt = 1, .ttl_ms = 5000}, /* tag full */
		{.run = "r1", .task = "a", .idx = 3, .attempt = 1, .ttl_ms = 5000}, /* ok */
		{.run = "nope", .task = "a", .idx = 0, .attempt = 1, .ttl_ms = 5000}, /* no run */
	};
	struct sl_lease_req again[] = {
		{.run = "r1", .task = "a", .idx = 0, .attempt = 1, .ttl_ms = 5000}, /* a copy */
		{.run = "r1", .task = "a", .idx = 2, .attempt = 1, .ttl_ms = 5000}, /* ok */
		{.run = "r1", .task = "a", .idx = 1, .attempt = 1, .ttl_ms = 5000}, /* w2: busy */
	};
	char *v;
	redisReply *r;

	create_run("r1", NULL);
	ck_assert_int_eq(sl_state_limits_set(st, "r1", "c", "mtag=1"), SL_OK);
	start_node("r1", "a", 4, 3, &t);
	sl_transition_clear(&t);
	start_node("r1", "c", 2, 1, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 1, 1, "w2", 5000), SL_OK);
	ck_assert_int_eq(sl_state_lease_acquire_many(st, "w1", q, 7), SL_OK);
	ck_assert_int_eq(q[0].err, SL_OK);
	ck_assert_int_eq(q[1].err, SL_ERR_BUSY);
	ck_assert_int_eq(q[2].err, SL_ERR_STALE);
	ck_assert_int_eq(q[3].err, SL_OK);
	ck_assert_int_eq(q[4].err, SL_ERR_BUSY);
	ck_assert_int_eq(q[5].err, SL_OK);
	ck_assert_int_eq(q[6].err, SL_ERR_STALE);
	ck_field("sluice:{r1}:ti:a:0", "state", "RUNNING");
	ck_field("sluice:{r1}:ti:a:0", "worker", "w1");
	ck_field("sluice:{r1}:ti:a:1", "worker", "w2");
	ck_field("sluice:{r1}:ti:a:2", "state", "DISPATCHED");
	ck_field("sluice:{r1}:ti:c:1", "state", "WAITING_SLOT");
	v = get_str("sluice:{r1}:lease:a:3");
	ck_assert_str_eq(v ? v : "(nil)", "w1:1");
	free(v);
	v = get_str("sluice:{r1}:lease:a:1");
	ck_assert_str_eq(v ? v : "(nil)", "w2:1");
	free(v);
	ck_assert_int_eq(zcard("sluice:sem:mtag"), 1);
	ck_assert_int_eq(sl_state_lease_renew(st, "r1", "c", 0, 1, "w1", 5000), SL_OK);

	/* With the script cache flushed, every call is answered NOSCRIPT and made again on
	 * its own after a reload: same answers. */
	r = sl_state_command(st, "SCRIPT FLUSH");
	ck_assert_ptr_nonnull(r);
	freeReplyObject(r);
	ck_assert_int_eq(sl_state_lease_acquire_many(st, "w1", again, 3), SL_OK);
	ck_assert_int_eq(again[0].err, SL_ERR_STALE);
	ck_assert_int_eq(again[1].err, SL_OK);
	ck_assert_int_eq(again[2].err, SL_ERR_BUSY);
	v = get_str("sluice:{r1}:lease:a:2");
	ck_assert_str_eq(v ? v : "(nil)", "w1:1");
	free(v);
	ck_assert_int_eq(sl_state_lease_acquire_many(st, "w1", again, 0), SL_OK);
}
END_TEST

/* Calls of a command since the last CONFIG RESETSTAT (INFO commandstats), -1 if unreadable. */
static long long command_calls(const char *cmd)
{
	redisReply *r = sl_state_command(st, "INFO commandstats");
	char want[64];
	const char *at;
	long long calls = -1;

	snprintf(want, sizeof(want), "cmdstat_%s:calls=", cmd);
	if (r && r->type == REDIS_REPLY_STRING && (at = strstr(r->str, want)))
		calls = strtoll(at + strlen(want), NULL, 10);
	else if (r && r->type == REDIS_REPLY_STRING)
		calls = 0; /* never called since the reset */
	if (r)
		freeReplyObject(r);
	return calls;
}

/* A lease is one script call: asked as untagged, a tagged task's call answers its tags (and
 * does nothing: its instance stays indexed) and is made once more with them. */
/* ---- a relay to Redis that can lose a reply ---- */

/* Relays one client connection at a time to the test's Redis. With drop set, the next bytes
 * Redis sends are not passed on: both connections close instead, as when a connection breaks
 * after Redis ran a command and before its reply arrived. */
struct relay {
	int listen_fd, port, redis_port;
	atomic_int drop, dropped, quit;
	pthread_t thread;
};

static int write_all(int fd, const char *buf, ssize_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, (size_t)n);
		if (w <= 0)
			return -1;
		buf += w;
		n -= w;
	}
	return 0;
}

static void relay_pass(struct relay *rl, int c, int u)
{
	char buf[65536];

	while (!atomic_load(&rl->quit)) {
		struct pollfd p[2] = {{.fd = c, .events = POLLIN}, {.fd = u, .events = POLLIN}};
		ssize_t n;

		if (poll(p, 2, 100) < 0)
			return;
		if (p[0].revents) {
			n = read(c, buf, sizeof(buf));
			if (n <= 0 || write_all(u, buf, n))
				return;
		}
		if (p[1].revents) {
			n = read(u, buf, sizeof(buf));
			if (n <= 0)
				return;
			if (atomic_exchange(&rl->drop, 0)) {
				atomic_fetch_add(&rl->dropped, 1);
				return;
			}
			if (write_all(c, buf, n))
				return;
		}
	}
}

static void *relay_main(void *arg)
{
	struct relay *rl = arg;
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)rl->redis_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

	while (!atomic_load(&rl->quit)) {
		struct pollfd lp = {.fd = rl->listen_fd, .events = POLLIN};
		int c, u;

		if (poll(&lp, 1, 100) <= 0 || (c = accept(rl->listen_fd, NULL, NULL)) < 0)
			continue;
		u = socket(AF_INET, SOCK_STREAM, 0);
		if (u >= 0 && connect(u, (struct sockaddr *)&to, sizeof(to)) == 0)
			relay_pass(rl, c, u);
		if (u >= 0)
			close(u);
		close(c);
	}
	return NULL;
}

/* Starts a relay to the Redis of `url` ("redis://[:password@]127.0.0.1:port/db") and writes
 * the URL to reach it through the relay into relay_url. */
static void relay_start(struct relay *rl, char *relay_url, size_t cap)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	const char *hostport = strchr(url + 8, '@') ? strchr(url + 8, '@') + 1 : url + 8;
	const char *colon = strchr(hostport, ':');

	ck_assert_ptr_nonnull(colon);
	memset(rl, 0, sizeof(*rl));
	rl->redis_port = atoi(colon + 1);
	rl->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(rl->listen_fd, 0);
	ck_assert_int_eq(bind(rl->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(rl->listen_fd, 4), 0);
	ck_assert_int_eq(getsockname(rl->listen_fd, (struct sockaddr *)&a, &alen), 0);
	rl->port = ntohs(a.sin_port);
	snprintf(relay_url, cap, "%.*s127.0.0.1:%d/9", (int)(hostport - url), url, rl->port);
	ck_assert_int_eq(pthread_create(&rl->thread, NULL, relay_main, rl), 0);
}

static void relay_stop(struct relay *rl)
{
	atomic_store(&rl->quit, 1);
	pthread_join(rl->thread, NULL);
	close(rl->listen_fd);
}

/* A lease call that ran but whose reply was lost is made again by the client (one call, or
 * the pipeline of a batch) and answered ok again: it is the same call, not a copy of the
 * dispatch, which its holder is refused. */
START_TEST(a_lease_call_whose_reply_was_lost_is_answered_ok_again)
{
	struct sl_transition t;
	struct sl_lease_req q[] = {
		{.run = "r1", .task = "a", .idx = 1, .attempt = 1, .ttl_ms = 5000},
		{.run = "r1", .task = "a", .idx = 2, .attempt = 1, .ttl_ms = 5000},
	};
	struct sl_state *via;
	struct relay rl;
	char via_url[300], err[256];

	create_run("r1", NULL);
	start_node("r1", "a", 3, 3, &t);
	sl_transition_clear(&t);
	relay_start(&rl, via_url, sizeof(via_url));
	via = sl_state_new(via_url, err, sizeof(err));
	ck_assert_msg(via != NULL, "redis through the relay: %s", err);

	atomic_store(&rl.drop, 1);
	ck_assert_int_eq(sl_state_lease_acquire(via, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	ck_assert_int_eq(atomic_load(&rl.dropped), 1);
	atomic_store(&rl.drop, 1);
	ck_assert_int_eq(sl_state_lease_acquire_many(via, "w1", q, 2), SL_OK);
	ck_assert_int_eq(atomic_load(&rl.dropped), 2);
	ck_assert_int_eq(q[0].err, SL_OK);
	ck_assert_int_eq(q[1].err, SL_OK);
	for (int i = 0; i < 3; i++) {
		char key[64];

		snprintf(key, sizeof(key), "sluice:{r1}:ti:a:%d", i);
		ck_field(key, "state", "RUNNING");
		ck_field(key, "worker", "w1");
	}
	/* a copy of one of them, asked for later, is not the same call */
	ck_assert_int_eq(sl_state_lease_acquire(via, "r1", "a", 1, 1, "w1", 5000), SL_ERR_STALE);
	ck_assert_int_eq(sl_state_lease_acquire_many(via, "w1", q, 2), SL_OK);
	ck_assert_int_eq(q[0].err, SL_ERR_STALE);
	ck_assert_int_eq(q[1].err, SL_ERR_STALE);
	sl_state_destroy(via);
	relay_stop(&rl);
}
END_TEST

START_TEST(lease_acquire_is_one_call_unless_the_task_is_tagged)
{
	struct sl_transition t;
	struct sl_lease_req q[] = {
		{.run = "r1", .task = "a", .idx = 0, .attempt = 1, .ttl_ms = 5000, .queue = "qq"},
		{.run = "r1", .task = "c", .idx = 0, .attempt = 1, .ttl_ms = 5000, .queue = "qq"},
		{.run = "r1", .task = "a", .idx = 1, .attempt = 1, .ttl_ms = 5000, .queue = "qq"},
		{.run = "r1", .task = "c", .idx = 1, .attempt = 1, .ttl_ms = 5000, .queue = "qq"},
		{.run = "r1", .task = "a", .idx = 2, .attempt = 1, .ttl_ms = 5000, .queue = "qq"},
	};
	const int idx[] = {0, 1, 2};
	redisReply *r;

	create_run("r1", NULL);
	ck_assert_int_eq(sl_state_limits_set(st, "r1", "c", "otag=1"), SL_OK);
	start_node("r1", "a", 3, 3, &t);
	sl_transition_clear(&t);
	start_node("r1", "c", 2, 1, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_queued_add(st, "qq", "r1", "a", idx, 3, 1000), SL_OK);
	ck_assert_int_eq(sl_state_queued_add(st, "qq", "r1", "c", idx, 2, 1000), SL_OK);
	r = sl_state_command(st, "CONFIG RESETSTAT");
	ck_assert_ptr_nonnull(r);
	freeReplyObject(r);
	ck_assert_int_eq(sl_state_lease_acquire_many(st, "w1", q, 3), SL_OK);
	ck_assert_int_eq(q[0].err, SL_OK);
	ck_assert_int_eq(q[1].err, SL_OK);   /* the tag's one slot */
	ck_assert_int_eq(q[2].err, SL_OK);
	ck_assert_int_eq(command_calls("evalsha"), 4); /* a[0], c[0] twice, a[1] */
	ck_assert_int_eq(zcard("sluice:sem:otag"), 1);
	ck_assert_int_eq(zcard("sluice:queued:qq"), 2); /* c[1], a[2] */
	ck_assert_int_eq(sl_state_lease_acquire_many(st, "w1", q + 3, 2), SL_OK);
	ck_assert_int_eq(q[3].err, SL_ERR_BUSY); /* the tag is full */
	ck_assert_int_eq(q[4].err, SL_OK);
	ck_assert_int_eq(command_calls("evalsha"), 7);
	ck_field("sluice:{r1}:ti:c:1", "state", "WAITING_SLOT");
	ck_assert_int_eq(zcard("sluice:queued:qq"), 0);
	/* The one-call path asks the same way (a[0] again: a copy of what w1 holds). */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_ERR_STALE);
	ck_assert_int_eq(command_calls("evalsha"), 8);
}
END_TEST

static void count_blob(const void *bytes, size_t len, void *ud)
{
	int *n = ud;

	ck_assert_uint_eq(len, 4);
	ck_assert(!memcmp(bytes, "blob", 4));
	(*n)++;
}

/* The queue's index of waiting dispatches (ADR 23): a scan returns the stored dispatches of
 * the instances still DISPATCHED, at most as many as asked; a lease asked for with the queue
 * takes its instance out, and a scan drops what waits no more. */
START_TEST(queued_scan_returns_waiting_dispatches_only)
{
	struct sl_transition t;
	struct sl_lease_req q[] = {
		{.run = "r1", .task = "a", .idx = 0, .attempt = 1, .ttl_ms = 5000, .queue = "qq"},
	};
	const int idx[] = {0, 1, 2, 3};
	int n = 0;

	create_run("r1", NULL);
	start_node("r1", "a", 4, 3, &t);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_queued_add(st, "qq", "r1", "a", idx, 4, 1000), SL_OK);
	ck_assert_int_eq(zcard("sluice:queued:qq"), 4);
	ck_assert_int_eq(sl_state_lease_acquire_many(st, "w1", q, 1), SL_OK);
	ck_assert_int_eq(q[0].err, SL_OK);
	ck_assert_int_eq(zcard("sluice:queued:qq"), 3); /* a[0] left with its lease */
	/* a[1] leased without the queue: it stays indexed until a scan finds it RUNNING */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 1, 1, "w1", 5000), SL_OK);
	ck_assert_int_eq(sl_state_queued_scan(st, "qq", 64, 8, count_blob, &n), SL_OK);
	ck_assert_int_eq(n, 2); /* a[2] and a[3] */
	ck_assert_int_eq(zcard("sluice:queued:qq"), 2);
	n = 0;
	ck_assert_int_eq(sl_state_queued_scan(st, "qq", 64, 1, count_blob, &n), SL_OK);
	ck_assert_int_eq(n, 1);
	n = 0;
	ck_assert_int_eq(sl_state_queued_scan(st, "qq", 64, 0, count_blob, &n), SL_OK);
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(apply("r1", "a", 2, 1, "SUCCEEDED", &t), SL_OK);
	sl_transition_clear(&t);
	n = 0;
	ck_assert_int_eq(sl_state_queued_scan(st, "qq", 64, 8, count_blob, &n), SL_OK);
	ck_assert_int_eq(n, 1); /* a[3]; a[2] ended and left the index */
	ck_assert_int_eq(zcard("sluice:queued:qq"), 1);
	n = 0;
	ck_assert_int_eq(sl_state_queued_scan(st, "other", 64, 8, count_blob, &n), SL_OK);
	ck_assert_int_eq(n, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("state");
	TCase *tc = tcase_create("lua");
	SRunner *sr;
	int failed;
	const char *env = getenv("SLUICE_REDIS_URL");

	if (env) {
		/* same server, own database */
		char *slash;
		sl_strlcpy(url, env, sizeof(url));
		slash = strrchr(url + 8, '/');
		if (slash)
			*slash = '\0';
		strncat(url, "/9", sizeof(url) - strlen(url) - 1);
	} else {
		start_private_redis();
	}
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, create_is_idempotent);
	tcase_add_test(tc, a_start_sent_with_a_result_needs_the_node_ready);
	tcase_add_test(tc, a_carried_result_applies_after_its_start_in_one_call);
	tcase_add_test(tc, lease_is_fenced_by_attempt);
	tcase_add_test(tc, applied_result_releases_the_lease);
	tcase_add_test(tc, results_release_downstream_and_finish_run);
	tcase_add_test(tc, failure_retries_then_fails_node_and_run);
	tcase_add_test(tc, node_end_skips_and_propagates);
	tcase_add_test(tc, mapped_node_fails_once_all_instances_end);
	tcase_add_test(tc, empty_map_completes_node);
	tcase_add_test(tc, big_fanout_is_written_in_batches_and_resumed);
	tcase_add_test(tc, cancel_ends_run_and_fences_workers);
	tcase_add_test(tc, cancel_deletes_the_runs_leases);
	tcase_add_test(tc, tag_limit_queues_and_wakes_in_order);
	tcase_add_test(tc, tag_slot_of_a_lost_holder_lapses);
	tcase_add_test(tc, reject_records_error);
	tcase_add_test(tc, worker_registry);
	tcase_add_test(tc, finished_run_keeps_only_compact_hashes);
	tcase_add_test(tc, cancelled_run_keeps_only_compact_hashes);
	tcase_add_test(tc, a_batch_records_each_result_as_given);
	tcase_add_test(tc, batch_apply_matches_one_by_one);
	tcase_add_test(tc, big_batch_apply_matches_one_by_one);
	tcase_add_test(tc, lease_acquire_many_answers_in_order);
	tcase_add_test(tc, lease_acquire_is_one_call_unless_the_task_is_tagged);
	tcase_add_test(tc, a_lease_call_whose_reply_was_lost_is_answered_ok_again);
	tcase_add_test(tc, queued_scan_returns_waiting_dispatches_only);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (own_redis > 0) {
		kill(own_redis, SIGTERM);
		waitpid(own_redis, NULL, 0);
	}
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
