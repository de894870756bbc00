/* test_reap.c - the reaper's scripts (reap_instances, reap_nodes) and the indexes the other
 * transitions keep for them, against a real redis-server (db 10 of the session's Redis when
 * SLUICE_REDIS_URL is set, else a private redis-server started here). Time is passed in. */
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
static const struct sl_reap_opts opts = {.settle_ms = 1000, .dispatch_timeout_ms = 30000,
					 .lease_grace_ms = 5000, .max_lost = 2, .limit = 100};

static void setup(void)
{
	char err[256];

	for (int i = 0; i < 100 && !st; i++)
		if (!(st = sl_state_new(url, err, sizeof(err))))
			usleep(50000);
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

static void ck_field(const char *key, const char *field, const char *want)
{
	redisReply *r = sl_state_command(st, "HGET %s %s", key, field);
	const char *v = r && r->type == REDIS_REPLY_STRING ? r->str : NULL;

	ck_assert_msg(want ? v && !strcmp(v, want) : !v, "%s %s: want %s, got %s", key, field,
		      want ? want : "(nil)", v ? v : "(nil)");
	freeReplyObject(r);
}

static long long zcard(const char *key)
{
	redisReply *r = sl_state_command(st, "ZCARD %s", key);
	long long n = r ? r->integer : -1;

	freeReplyObject(r);
	return n;
}

/* Run r: a -> b, c independent; a has 3 attempts; a is started with one instance at 1000. */
static void create_and_start(void)
{
	struct sl_run_node nodes[] = {{"a", 0, "b", 3}, {"b", 1, "", 1}, {"c", 0, "", 1}};
	struct sl_run_new rn = {.run_id = "r", .flow = "f", .params_json = "{}",
				.intent = "normal", .source = "flow: f", .source_len = 7,
				.requested_by = "test", .trace_id = "t", .tasks_csv = "a,b,c",
				.nodes = nodes, .nnodes = 3, .now_ms = 1000};
	struct sl_ti_new ti = {.idx = 0, .dispatch = "blob", .len = 4};
	struct sl_transition t;
	char dup[64];

	ck_assert_int_eq(sl_state_run_create(st, &rn, dup, sizeof(dup)), SL_OK);
	ck_assert_int_eq(sl_state_node_start(st, "r", "a", 1, 3, &ti, 1, 1000, &t), SL_OK);
	sl_transition_clear(&t);
}

/* Reaps at now; returns how many came back and copies the first into *first. */
static size_t reap(int64_t now, struct sl_reaped *first)
{
	struct sl_reaped *v = NULL;
	size_t n = 0;

	ck_assert_int_eq(sl_state_reap_instances(st, now, &opts, &v, &n), SL_OK);
	if (n && first) {
		*first = v[0];
		first->run = first->task = NULL;
		first->dispatch = NULL;
		ck_assert_str_eq(v[0].run, "r");
		ck_assert_str_eq(v[0].task, "a");
		ck_assert_int_eq(v[0].idx, 0);
	}
	if (n && first && strcmp(v[0].reason, "lost_too_often"))
		ck_assert(v[0].len == 4 && !memcmp(v[0].dispatch, "blob", 4));
	sl_reaped_free(v, n);
	return n;
}

static enum sl_err apply(unsigned attempt, int64_t now, struct sl_transition *t)
{
	struct sl_result_in res = {.run = "r", .task = "a", .idx = 0, .attempt = attempt,
				   .status = "SUCCEEDED", .output = "1", .output_len = 1,
				   .error = "", .worker = "w1", .started_ms = 1,
				   .finished_ms = 2, .now_ms = now, .retry_delay_ms = 100};
	return sl_state_result_apply(st, &res, t);
}

START_TEST(lost_dispatch_is_resent_with_a_new_attempt)
{
	struct sl_reaped e;

	create_and_start();
	ck_assert_int_eq(zcard("sluice:active"), 1);
	ck_assert_uint_eq(reap(20000, NULL), 0); /* within the dispatch timeout */
	ck_assert_uint_eq(reap(31000, &e), 1);
	ck_assert_uint_eq(e.attempt, 2);
	ck_assert_str_eq(e.reason, "dispatch_lost");
	ck_field("sluice:{r}:ti:a:0", "state", "DISPATCHED");
	ck_field("sluice:{r}:ti:a:0", "attempt", "2");
	ck_field("sluice:{r}:ti:a:0", "max_attempts", "4"); /* a lost dispatch costs no retry */
	/* the old message is fenced at the lease */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, 1, "w1", 5000), SL_ERR_STALE);
	/* the next resend waits twice as long */
	ck_assert_uint_eq(reap(31000 + 59000, NULL), 0);
	ck_assert_uint_eq(reap(31000 + 61000, &e), 1);
	ck_assert_uint_eq(e.attempt, 3);
}
END_TEST

START_TEST(held_lease_is_left_alone)
{
	create_and_start();
	ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, 1, "w1", 60000), SL_OK);
	ck_assert_uint_eq(reap(100000, NULL), 0);
	ck_assert_uint_eq(reap(200000, NULL), 0);
	ck_field("sluice:{r}:ti:a:0", "state", "RUNNING");
	ck_field("sluice:{r}:ti:a:0", "attempt", "1");
}
END_TEST

START_TEST(released_lease_waits_for_the_result)
{
	struct sl_transition t;

	create_and_start();
	ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, 1, "w1", 60000), SL_OK);
	/* the worker delivered its result and released; the planner is slow to apply it */
	ck_assert_int_eq(sl_state_lease_release(st, "r", "a", 0, 1, "w1"), SL_OK);
	ck_assert_uint_eq(reap(100000, NULL), 0);
	ck_field("sluice:{r}:ti:a:0", "lost_ms", "100000");
	ck_assert_uint_eq(reap(104000, NULL), 0); /* within the grace */
	ck_assert_int_eq(apply(1, 104500, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "node_done");
	sl_transition_clear(&t);
	ck_assert_uint_eq(reap(110000, NULL), 0);
	ck_assert_int_eq(zcard("sluice:active"), 0); /* terminal: pruned */
}
END_TEST

START_TEST(vanished_lease_is_redispatched_and_late_result_fenced)
{
	struct sl_reaped e;
	struct sl_transition t;

	create_and_start();
	ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, 1, "w1", 60000), SL_OK);
	freeReplyObject(sl_state_command(st, "DEL sluice:{r}:lease:a:0")); /* lapsed */
	ck_assert_uint_eq(reap(100000, NULL), 0);
	ck_assert_uint_eq(reap(105000, &e), 1);
	ck_assert_str_eq(e.reason, "lease_lost");
	ck_assert_uint_eq(e.attempt, 2);
	ck_field("sluice:{r}:ti:a:0", "lost", "1");
	ck_field("sluice:{r}:run", "reaped", "1");
	/* the paused worker wakes up: its result changes nothing */
	ck_assert_int_eq(apply(1, 106000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "stale");
	sl_transition_clear(&t);
	ck_field("sluice:{r}:run", "stale_results", "1");
	ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, 2, "w2", 60000), SL_OK);
	ck_assert_int_eq(apply(2, 107000, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "node_done");
	sl_transition_clear(&t);
	ck_field("sluice:{r}:ti:a:0", "output", "1");
}
END_TEST

START_TEST(lost_too_often_fails_the_run)
{
	struct sl_reaped e;
	int64_t now = 100000;

	create_and_start();
	for (unsigned attempt = 1; attempt <= 2; attempt++) {
		ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, attempt, "w1", 60000),
				 SL_OK);
		freeReplyObject(sl_state_command(st, "DEL sluice:{r}:lease:a:0"));
		ck_assert_uint_eq(reap(now, NULL), 0);
		ck_assert_uint_eq(reap(now + 5000, &e), 1);
		ck_assert_str_eq(e.reason, "lease_lost");
		now += 10000;
	}
	ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, 3, "w1", 60000), SL_OK);
	freeReplyObject(sl_state_command(st, "DEL sluice:{r}:lease:a:0"));
	ck_assert_uint_eq(reap(now, NULL), 0);
	ck_assert_uint_eq(reap(now + 5000, &e), 1);
	ck_assert_str_eq(e.reason, "lost_too_often");
	ck_field("sluice:{r}:ti:a:0", "state", "FAILED");
	ck_field("sluice:{r}:node:a", "state", "FAILED");
	ck_field("sluice:{r}:node:a", "failed", "1");
	ck_field("sluice:{r}:run", "tasks_failed", "1");
	ck_field("sluice:{r}:run", "error", "task a lost its worker 3 time(s)");
	ck_assert_int_eq(zcard("sluice:active"), 0);
	/* nothing re-sends it any more: its dispatch and the lapsed lease's entry are gone */
	{
		redisReply *r = sl_state_command(st, "EXISTS sluice:{r}:disp:a");
		ck_assert_int_eq(r->integer, 0);
		freeReplyObject(r);
		r = sl_state_command(st, "SISMEMBER sluice:{r}:leases sluice:{r}:lease:a:0");
		ck_assert_int_eq(r->integer, 0);
		freeReplyObject(r);
	}
	/* b's trigger rule decides what happens next: it is ready for the planner */
	{
		redisReply *r = sl_state_command(st, "ZSCORE sluice:pending sluice:{r}:node:b");
		ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
		freeReplyObject(r);
	}
}
END_TEST

START_TEST(ready_nodes_never_started_are_found)
{
	struct sl_ready_node *v = NULL;
	struct sl_transition t;
	size_t n = 0;

	create_and_start(); /* roots a and c are pending; a is started */
	ck_assert_int_eq(sl_state_reap_nodes(st, 1500, 1000, 10, &v, &n), SL_OK);
	ck_assert_uint_eq(n, 0); /* too young */
	ck_assert_int_eq(sl_state_reap_nodes(st, 2500, 1000, 10, &v, &n), SL_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(v[0].run, "r");
	ck_assert_str_eq(v[0].task, "c");
	sl_ready_nodes_free(v, n);
	/* a finishes: b becomes ready; the planner "dies" before starting it */
	ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, 1, "w1", 60000), SL_OK);
	ck_assert_int_eq(apply(1, 3000, &t), SL_OK);
	ck_assert_uint_eq(t.nready, 1);
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_reap_nodes(st, 5000, 1000, 10, &v, &n), SL_OK);
	ck_assert_uint_eq(n, 2); /* b, and c again */
	sl_ready_nodes_free(v, n);
	/* started nodes leave the index */
	{
		struct sl_ti_new ti = {.idx = -1, .dispatch = "blob", .len = 4};
		ck_assert_int_eq(sl_state_node_start(st, "r", "b", 1, 1, &ti, 1, 6000, &t), SL_OK);
		sl_transition_clear(&t);
		ck_assert_int_eq(sl_state_node_start(st, "r", "c", 1, 1, &ti, 1, 6000, &t), SL_OK);
		sl_transition_clear(&t);
	}
	ck_assert_int_eq(zcard("sluice:pending"), 0);
}
END_TEST

START_TEST(popped_retry_is_watched)
{
	struct sl_transition t;
	struct sl_result_in res = {.run = "r", .task = "a", .idx = 0, .attempt = 1,
				   .status = "FAILED", .output = "", .output_len = 0,
				   .error = "x", .worker = "w1", .started_ms = 1,
				   .finished_ms = 2, .now_ms = 2000, .retry_delay_ms = 100};
	struct sl_due *due = NULL;
	struct sl_reaped e;
	size_t n = 0;

	create_and_start();
	ck_assert_int_eq(sl_state_lease_acquire(st, "r", "a", 0, 1, "w1", 60000), SL_OK);
	ck_assert_int_eq(sl_state_result_apply(st, &res, &t), SL_OK);
	ck_assert_str_eq(t.outcome, "retry");
	sl_transition_clear(&t);
	ck_assert_int_eq(sl_state_lease_release(st, "r", "a", 0, 1, "w1"), SL_OK);
	ck_assert_uint_eq(reap(10000, NULL), 0); /* RETRY_WAIT is the timers' business */
	ck_assert_int_eq(sl_state_timers_due(st, 3000, 10, &due, &n), SL_OK);
	ck_assert_uint_eq(n, 1);
	sl_due_free(due, n);
	/* the planner died before producing attempt 2 */
	ck_field("sluice:{r}:ti:a:0", "queued_ms", "3000");
	ck_assert_uint_eq(reap(32000, NULL), 0);
	ck_assert_uint_eq(reap(33000, &e), 1);
	ck_assert_str_eq(e.reason, "dispatch_lost");
	ck_assert_uint_eq(e.attempt, 3);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("reap");
	TCase *tc = tcase_create("lua");
	SRunner *sr;
	int failed;
	const char *env = getenv("SLUICE_REDIS_URL");

	if (env) {
		char *slash;
		sl_strlcpy(url, env, sizeof(url));
		if ((slash = strrchr(url + 8, '/')))
			*slash = '\0';
		strncat(url, "/10", sizeof(url) - strlen(url) - 1);
	} else {
		int port = 20000 + (int)((getpid() + 7) % 20000);
		char portstr[16];

		snprintf(portstr, sizeof(portstr), "%d", port);
		if ((own_redis = fork()) == 0) {
			execlp("redis-server", "redis-server", "--port", portstr, "--bind",
			       "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel",
			       "warning", (char *)NULL);
			_exit(127);
		}
		snprintf(url, sizeof(url), "redis://127.0.0.1:%d/10", port);
	}
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, lost_dispatch_is_resent_with_a_new_attempt);
	tcase_add_test(tc, held_lease_is_left_alone);
	tcase_add_test(tc, released_lease_waits_for_the_result);
	tcase_add_test(tc, vanished_lease_is_redispatched_and_late_result_fenced);
	tcase_add_test(tc, lost_too_often_fails_the_run);
	tcase_add_test(tc, ready_nodes_never_started_are_found);
	tcase_add_test(tc, popped_retry_is_watched);
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
