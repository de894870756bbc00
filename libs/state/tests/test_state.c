/* test_state.c - the Lua transitions against a real redis-server (db 9 of the session's
 * Redis when SLUICE_REDIS_URL is set, else a private redis-server started here). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static enum sl_err apply(const char *run, const char *task, int idx, unsigned attempt,
			 const char *status, struct sl_transition *t)
{
	struct sl_result_in res = {.run = run, .task = task, .idx = idx, .attempt = attempt,
				   .status = status, .output = "42", .output_len = 2,
				   .error = "", .worker = "w1", .started_ms = 1, .finished_ms = 2,
				   .now_ms = 5000, .retry_delay_ms = 100};
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
	/* The same dispatch delivered again: the holder keeps it, anyone else is refused. */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w1", 5000), SL_OK);
	ck_assert_int_eq(sl_state_lease_acquire(st, "r1", "a", 0, 1, "w2", 5000), SL_ERR_BUSY);
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

START_TEST(big_fanout_is_written_in_one_transaction)
{
	enum { N = 2500 };
	static struct sl_ti_new tis[N];
	struct sl_transition t;
	redisReply *r;

	create_run("r1", NULL);
	for (int i = 0; i < N; i++) {
		tis[i].idx = i;
		tis[i].dispatch = "blob";
		tis[i].len = 4;
	}
	ck_assert_int_eq(sl_state_node_start(st, "r1", "a", N, 1, tis, N, 1000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "started");
	sl_transition_clear(&t);
	for (int i = 0; i < N; i += 499) {
		char key[64];
		snprintf(key, sizeof(key), "sluice:{r1}:ti:a:%d", i);
		ck_field(key, "state", "DISPATCHED");
	}
	ck_field("sluice:{r1}:ti:a:2499", "state", "DISPATCHED");
	r = sl_state_command(st, "EXISTS sluice:{r1}:ti:a:2500");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
	ck_field("sluice:{r1}:node:a", "total", "2500");
	ck_field("sluice:{r1}:run", "tasks_total", "2500");
	/* started once only: a second start changes nothing */
	ck_assert_int_eq(sl_state_node_start(st, "r1", "a", N, 1, tis, N, 1000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "stale");
	sl_transition_clear(&t);
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
	tcase_add_test(tc, lease_is_fenced_by_attempt);
	tcase_add_test(tc, applied_result_releases_the_lease);
	tcase_add_test(tc, results_release_downstream_and_finish_run);
	tcase_add_test(tc, failure_retries_then_fails_node_and_run);
	tcase_add_test(tc, node_end_skips_and_propagates);
	tcase_add_test(tc, mapped_node_fails_once_all_instances_end);
	tcase_add_test(tc, empty_map_completes_node);
	tcase_add_test(tc, big_fanout_is_written_in_one_transaction);
	tcase_add_test(tc, cancel_ends_run_and_fences_workers);
	tcase_add_test(tc, cancel_deletes_the_runs_leases);
	tcase_add_test(tc, tag_limit_queues_and_wakes_in_order);
	tcase_add_test(tc, tag_slot_of_a_lost_holder_lapses);
	tcase_add_test(tc, reject_records_error);
	tcase_add_test(tc, worker_registry);
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
