/* test_policy.c - unit tests of the autoscaler's pure decision: up, caps, step, cooldown, down. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "policy.h"

/* The pool of examples/autoscaler/pools.yaml, with a cooldown and window easy to tell apart. */
static struct autoscaler_pool_config pool(void)
{
	struct autoscaler_pool_config pc;

	memset(&pc, 0, sizeof(pc));
	snprintf(pc.name, sizeof(pc.name), "default");
	snprintf(pc.queue, sizeof(pc.queue), "default");
	pc.min = 0;
	pc.max = 4;
	pc.target_per_worker = 4;
	pc.slots = 4;
	pc.scale_up_step = 4;
	pc.scale_up_cooldown_ms = 0;
	pc.scale_down_window_ms = 10000;
	pc.idle_to_zero_ms = 15000;
	return pc;
}

static struct autoscaler_worker W(const char *id, enum autoscaler_worker_state state, int busy,
				  int64_t started)
{
	struct autoscaler_worker w;

	memset(&w, 0, sizeof(w));
	snprintf(w.id, sizeof(w.id), "%s", id);
	w.state = state;
	w.busy = busy;
	w.started_ms = started;
	return w;
}

#define ACTIVE AUTOSCALER_WORKER_ACTIVE
#define STARTING AUTOSCALER_WORKER_STARTING
#define DRAINING AUTOSCALER_WORKER_DRAINING

static struct autoscaler_decision d; /* big: keep it off the stack */

static void decide(const struct autoscaler_pool_config *pc, int64_t now, int64_t lag,
		   const struct autoscaler_worker *w, size_t n, struct autoscaler_history *h)
{
	struct autoscaler_policy_input in;

	memset(&in, 0, sizeof(in));
	in.now_ms = now;
	in.pool = pc;
	in.lag = lag;
	in.workers = w;
	in.nworkers = n;
	in.history = *h;
	autoscaler_policy_decide(&in, &d);
	*h = d.history;
}

static int drained(const struct autoscaler_worker *w, const char *id)
{
	for (size_t i = 0; i < d.ndrain; i++)
		if (!strcmp(w[d.drain[i]].id, id))
			return 1;
	return 0;
}

START_TEST(test_scale_up_from_zero_on_lag)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};

	decide(&pc, 1000, 10, NULL, 0, &h);
	ck_assert_int_eq(d.current, 0);
	ck_assert_int_eq(d.desired, 3); /* ceil(10 / 4) */
	ck_assert_int_eq(d.start, 3);
	ck_assert_uint_eq(d.ndrain, 0);
	ck_assert_int_eq(h.last_scale_up_ms, 1000);
	ck_assert_str_eq(d.reason, "lag 10 + busy 0 > capacity 0: +3 workers");
}
END_TEST

START_TEST(test_nothing_to_do_without_demand)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};

	decide(&pc, 1000, 0, NULL, 0, &h);
	ck_assert_int_eq(d.desired, 0);
	ck_assert_int_eq(d.start, 0);
	ck_assert_uint_eq(d.ndrain, 0);
}
END_TEST

START_TEST(test_capped_at_max)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 4, 1)};

	decide(&pc, 1000, 1000, w, 1, &h);
	ck_assert_int_eq(d.desired, 4);
	ck_assert_int_eq(d.start, 3);
	ck_assert_str_eq(d.reason, "lag 1000 + busy 4 > capacity 4: +3 workers");
}
END_TEST

START_TEST(test_draining_workers_count_against_max)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 4, 1), W("w-b", DRAINING, 1, 2),
					W("w-c", DRAINING, 0, 3)};

	/* Two processes are still on their way out: only one more fits under max 4. */
	decide(&pc, 1000, 100, w, 3, &h);
	ck_assert_int_eq(d.current, 1);
	ck_assert_int_eq(d.draining, 2);
	ck_assert_int_eq(d.busy, 5);
	ck_assert_int_eq(d.start, 1);

	struct autoscaler_worker full[] = {W("w-a", ACTIVE, 4, 1), W("w-b", ACTIVE, 4, 2),
					   W("w-c", DRAINING, 1, 3), W("w-d", DRAINING, 1, 4)};
	decide(&pc, 2000, 100, full, 4, &h);
	ck_assert_int_eq(d.start, 0);
	ck_assert_ptr_nonnull(strstr(d.reason, "draining workers still running"));
}
END_TEST

START_TEST(test_step_limit)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[3];

	pc.max = 10;
	pc.scale_up_step = 2;
	decide(&pc, 1000, 100, NULL, 0, &h);
	ck_assert_int_eq(d.desired, 10);
	ck_assert_int_eq(d.start, 2);
	ck_assert_str_eq(d.reason, "lag 100 + busy 0 > capacity 0: +2 workers (step 2)");

	/* The two just started count (starting), the next decision adds two more. */
	w[0] = W("w-a", STARTING, 0, 1);
	w[1] = W("w-b", STARTING, 0, 2);
	decide(&pc, 2000, 100, w, 2, &h);
	ck_assert_int_eq(d.current, 2);
	ck_assert_int_eq(d.start, 2);
}
END_TEST

START_TEST(test_cooldown)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 4, 1)};

	pc.scale_up_cooldown_ms = 5000;
	decide(&pc, 10000, 0, NULL, 0, &h);
	ck_assert_int_eq(d.start, 0);
	decide(&pc, 11000, 1, NULL, 0, &h);
	ck_assert_int_eq(d.start, 1); /* no start yet: no cooldown to wait for */
	ck_assert_int_eq(h.last_scale_up_ms, 11000);

	decide(&pc, 15999, 20, w, 1, &h);
	ck_assert_int_eq(d.desired, 4);
	ck_assert_int_eq(d.start, 0);
	ck_assert_str_eq(d.reason,
			 "lag 20 + busy 4 > capacity 4: wait, cooldown 5s since the last start");
	ck_assert_int_eq(h.last_scale_up_ms, 11000);

	decide(&pc, 16000, 20, w, 1, &h);
	ck_assert_int_eq(d.start, 3);
	ck_assert_int_eq(h.last_scale_up_ms, 16000);
}
END_TEST

/* A pool that went back to zero within the cooldown starts at once: the cooldown paces growth,
 * it does not keep queued work waiting for a first worker. */
START_TEST(test_cooldown_never_holds_an_empty_pool)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 4, 1)};
	struct autoscaler_worker gone[] = {W("w-a", DRAINING, 0, 1)};

	pc.scale_up_cooldown_ms = 60000;
	decide(&pc, 1000, 4, NULL, 0, &h);
	ck_assert_int_eq(d.start, 1);
	ck_assert_int_eq(h.last_scale_up_ms, 1000);
	/* with a worker, the cooldown holds */
	decide(&pc, 2000, 8, w, 1, &h);
	ck_assert_int_eq(d.start, 0);
	ck_assert_ptr_nonnull(strstr(d.reason, "wait, cooldown 1m since the last start"));
	/* its only worker is leaving (draining counts against max, not in the size): start now */
	decide(&pc, 3000, 8, gone, 1, &h);
	ck_assert_int_eq(d.current, 0);
	ck_assert_int_eq(d.start, 2);
	ck_assert_int_eq(h.last_scale_up_ms, 3000);
	/* and again from nothing at all, still within a minute of the last start */
	decide(&pc, 4000, 1, NULL, 0, &h);
	ck_assert_int_eq(d.start, 1);
	ck_assert_str_eq(d.reason, "lag 1 + busy 0 > capacity 0: +1 worker");
}
END_TEST

START_TEST(test_not_over_launching_while_starting)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", STARTING, 0, 1), W("w-b", STARTING, 0, 2)};

	/* 8 queued: two workers are on their way, nothing more to start. */
	decide(&pc, 1000, 8, w, 2, &h);
	ck_assert_int_eq(d.current, 2);
	ck_assert_int_eq(d.starting, 2);
	ck_assert_int_eq(d.desired, 2);
	ck_assert_int_eq(d.start, 0);
	ck_assert_uint_eq(d.ndrain, 0);

	/* More work arrives while they start: only the difference is started. */
	decide(&pc, 2000, 13, w, 2, &h);
	ck_assert_int_eq(d.desired, 4);
	ck_assert_int_eq(d.start, 2);

	/* Demand dropped while they start: a starting worker is never drained. */
	decide(&pc, 3000, 0, w, 2, &h);
	decide(&pc, 60000, 0, w, 2, &h);
	ck_assert_uint_eq(d.ndrain, 0);
}
END_TEST

START_TEST(test_no_scale_down_inside_window)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 1, 1), W("w-b", ACTIVE, 0, 2),
					W("w-c", ACTIVE, 0, 3), W("w-d", ACTIVE, 0, 4)};

	/* Demand 1 fits in one worker, four run: wait for the whole window. */
	decide(&pc, 100000, 0, w, 4, &h);
	ck_assert_int_eq(d.desired, 1);
	ck_assert_uint_eq(d.ndrain, 0);
	ck_assert_int_eq(h.below_since_ms, 100000);
	ck_assert_str_eq(d.reason, "lag 0 + busy 1 < capacity 16: scale down in 10s");
	decide(&pc, 109999, 0, w, 4, &h);
	ck_assert_uint_eq(d.ndrain, 0);

	/* A burst inside the window restarts it. */
	decide(&pc, 109999, 14, w, 4, &h);
	ck_assert_int_eq(d.desired, 4);
	ck_assert_int_eq(h.below_since_ms, 0);
	decide(&pc, 111000, 0, w, 4, &h);
	decide(&pc, 120999, 0, w, 4, &h);
	ck_assert_uint_eq(d.ndrain, 0);

	/* Window over: down to one, the busy worker stays, newest idle ones go first. */
	decide(&pc, 121000, 0, w, 4, &h);
	ck_assert_uint_eq(d.ndrain, 3);
	ck_assert(drained(w, "w-b") && drained(w, "w-c") && drained(w, "w-d"));
	ck_assert_uint_eq(d.drain[0], 3); /* w-d, the newest */
	ck_assert_str_eq(d.reason,
			 "lag 0 + busy 1 < capacity 16 for 10s: drain w-d, w-c, w-b");
}
END_TEST

START_TEST(test_window_keeps_its_peak)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 0, 1), W("w-b", ACTIVE, 0, 2),
					W("w-c", ACTIVE, 0, 3), W("w-d", ACTIVE, 0, 4)};

	/* Desired went 1, 3, 1 during the window: scale to 3, not 1. */
	decide(&pc, 0 + 1, 4, w, 4, &h);
	decide(&pc, 5000, 12, w, 4, &h);
	decide(&pc, 10001, 4, w, 4, &h);
	ck_assert_uint_eq(d.ndrain, 1);
	ck_assert(drained(w, "w-d"));
	/* The next step needs a window of its own. */
	ck_assert_int_eq(h.below_since_ms, 10001);
}
END_TEST

START_TEST(test_window_never_empties_the_pool)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 0, 1), W("w-b", ACTIVE, 0, 2)};

	pc.idle_to_zero_ms = 60000;
	decide(&pc, 1000, 0, w, 2, &h);
	decide(&pc, 11000, 0, w, 2, &h);
	ck_assert_uint_eq(d.ndrain, 1); /* to one: zero is idle_to_zero's call */
	ck_assert(drained(w, "w-b"));
}
END_TEST

START_TEST(test_idle_to_zero)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker one[] = {W("w-a", ACTIVE, 0, 1)};

	pc.scale_down_window_ms = 5000;
	decide(&pc, 1000, 0, one, 1, &h);
	ck_assert_int_eq(h.idle_since_ms, 1000);
	decide(&pc, 15999, 0, one, 1, &h);
	ck_assert_uint_eq(d.ndrain, 0); /* the window cannot take the last one */
	ck_assert_ptr_nonnull(strstr(d.reason, "keep 1"));
	decide(&pc, 16000, 0, one, 1, &h);
	ck_assert_uint_eq(d.ndrain, 1);
	ck_assert_int_eq(d.desired, 0);
	ck_assert_str_eq(d.reason, "idle 15s: drain w-a");

	/* Any demand restarts the idle clock. */
	h = (struct autoscaler_history){0};
	decide(&pc, 1000, 0, one, 1, &h);
	decide(&pc, 10000, 1, one, 1, &h);
	ck_assert_int_eq(h.idle_since_ms, 0);
	decide(&pc, 11000, 0, one, 1, &h);
	decide(&pc, 25999, 0, one, 1, &h);
	ck_assert_uint_eq(d.ndrain, 0);
	decide(&pc, 26000, 0, one, 1, &h);
	ck_assert_uint_eq(d.ndrain, 1);
}
END_TEST

START_TEST(test_never_drains_a_busy_worker)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 1, 1), W("w-b", ACTIVE, 1, 2),
					W("w-c", ACTIVE, 0, 3), W("w-d", ACTIVE, 1, 4)};
	struct autoscaler_worker all_busy[] = {W("w-a", ACTIVE, 1, 1), W("w-b", ACTIVE, 1, 2),
					       W("w-c", ACTIVE, 1, 3), W("w-d", ACTIVE, 1, 4)};

	/* Busy 3 -> desired 1, but only w-c is idle: it alone goes, though w-d is newer. */
	decide(&pc, 1000, 0, w, 4, &h);
	decide(&pc, 11000, 0, w, 4, &h);
	ck_assert_int_eq(d.desired, 1);
	ck_assert_uint_eq(d.ndrain, 1);
	ck_assert(drained(w, "w-c"));
	ck_assert_ptr_nonnull(strstr(d.reason, "(2 busy or starting kept)"));

	/* All busy: nothing is drained however long the window. */
	h = (struct autoscaler_history){0};
	decide(&pc, 1000, 0, all_busy, 4, &h);
	decide(&pc, 500000, 0, all_busy, 4, &h);
	ck_assert_int_eq(d.desired, 1);
	ck_assert_uint_eq(d.ndrain, 0);
	ck_assert_ptr_nonnull(strstr(d.reason, "no idle registered worker to drain"));
}
END_TEST

START_TEST(test_min_respected)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 0, 1), W("w-b", ACTIVE, 0, 2),
					W("w-c", ACTIVE, 0, 3)};

	pc.min = 2;
	/* Below min with no demand: start up to min at once. */
	decide(&pc, 1000, 0, NULL, 0, &h);
	ck_assert_int_eq(d.desired, 2);
	ck_assert_int_eq(d.start, 2);
	ck_assert_str_eq(d.reason, "0 workers below min 2: +2 workers");

	/* Idle for long: down to min, never below. */
	h = (struct autoscaler_history){0};
	decide(&pc, 1000, 0, w, 3, &h);
	decide(&pc, 100000, 0, w, 3, &h);
	ck_assert_uint_eq(d.ndrain, 1);
	ck_assert(drained(w, "w-c"));
	decide(&pc, 200000, 0, w, 2, &h);
	ck_assert_int_eq(d.desired, 2);
	ck_assert_uint_eq(d.ndrain, 0);
}
END_TEST

START_TEST(test_draining_workers_are_not_drained_again)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	struct autoscaler_worker w[] = {W("w-a", ACTIVE, 0, 1), W("w-b", DRAINING, 0, 2)};

	decide(&pc, 1000, 0, w, 2, &h);
	decide(&pc, 100000, 0, w, 2, &h);
	ck_assert_int_eq(d.current, 1);
	ck_assert_uint_eq(d.ndrain, 1);
	ck_assert(drained(w, "w-a"));
}
END_TEST

START_TEST(test_start_hold)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};

	h.hold_starts_until = 5000;
	decide(&pc, 4999, 10, NULL, 0, &h);
	ck_assert_int_eq(d.start, 0);
	ck_assert_ptr_nonnull(strstr(d.reason, "failed start"));
	decide(&pc, 5000, 10, NULL, 0, &h);
	ck_assert_int_eq(d.start, 3);
}
END_TEST

START_TEST(test_reason_is_bounded)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_history h = {0};
	static struct autoscaler_worker w[AUTOSCALER_POOL_MAX_SIZE];

	pc.max = AUTOSCALER_POOL_MAX_SIZE;
	for (int i = 0; i < AUTOSCALER_POOL_MAX_SIZE; i++) {
		char id[AUTOSCALER_ID_MAX];
		snprintf(id, sizeof(id), "w-%040d", i);
		w[i] = W(id, ACTIVE, 0, i);
	}
	decide(&pc, 1000, 0, w, AUTOSCALER_POOL_MAX_SIZE, &h);
	decide(&pc, 100000, 0, w, AUTOSCALER_POOL_MAX_SIZE, &h);
	ck_assert_uint_eq(d.ndrain, AUTOSCALER_POOL_MAX_SIZE);
	ck_assert_uint_lt(strlen(d.reason), AUTOSCALER_REASON_MAX);
	ck_assert_str_eq(d.reason + strlen(d.reason) - 3, "...");
}
END_TEST

static Suite *policy_suite(void)
{
	Suite *s = suite_create("autoscaler_policy");
	TCase *tc = tcase_create("decide");

	tcase_add_test(tc, test_scale_up_from_zero_on_lag);
	tcase_add_test(tc, test_nothing_to_do_without_demand);
	tcase_add_test(tc, test_capped_at_max);
	tcase_add_test(tc, test_draining_workers_count_against_max);
	tcase_add_test(tc, test_step_limit);
	tcase_add_test(tc, test_cooldown);
	tcase_add_test(tc, test_cooldown_never_holds_an_empty_pool);
	tcase_add_test(tc, test_not_over_launching_while_starting);
	tcase_add_test(tc, test_no_scale_down_inside_window);
	tcase_add_test(tc, test_window_keeps_its_peak);
	tcase_add_test(tc, test_window_never_empties_the_pool);
	tcase_add_test(tc, test_idle_to_zero);
	tcase_add_test(tc, test_never_drains_a_busy_worker);
	tcase_add_test(tc, test_min_respected);
	tcase_add_test(tc, test_draining_workers_are_not_drained_again);
	tcase_add_test(tc, test_start_hold);
	tcase_add_test(tc, test_reason_is_bounded);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(policy_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
