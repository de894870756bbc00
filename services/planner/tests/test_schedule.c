/* test_schedule.c - the pure parts of the planner's schedules: which ticks are due after a
 * cursor (intervals and cron, the catch-up cap, the lookback ring), when a tick is still on
 * time for `catchup: none`, and the scheduled_at value. Firing is covered by e2e_schedule. */
#include <check.h>
#include <stdlib.h>
#include <time.h>

#include "../schedule.c"

/* schedule.c calls these from flows.c; the tests never reach them. */
size_t planner_flows_count(struct planner_flows *f)
{
	(void)f;
	return 0;
}

const struct sl_flow *planner_flows_at(struct planner_flows *f, size_t i)
{
	(void)f;
	(void)i;
	return NULL;
}

static int64_t at(int y, int mo, int d, int h, int mi)
{
	struct tm tm = {0};

	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	return (int64_t)timegm(&tm) * 1000;
}

static struct sl_flow *flow_every(long ms)
{
	static struct sl_flow f;

	memset(&f, 0, sizeof(f));
	f.name = "f";
	f.schedule_kind = SL_SCHEDULE_EVERY;
	f.schedule_every_ms = ms;
	return &f;
}

static struct sl_flow *flow_cron(const char *expr)
{
	static struct sl_flow f;
	char err[128];

	memset(&f, 0, sizeof(f));
	f.name = "f";
	f.schedule_kind = SL_SCHEDULE_CRON;
	ck_assert_msg(sl_cron_parse(expr, &f.schedule_cron, err, sizeof(err)) == SL_OK, "%s", err);
	return &f;
}

static int64_t ticks[SL_CATCHUP_MAX];

START_TEST(interval_ticks_are_anchored_at_the_epoch)
{
	struct sl_flow *f = flow_every(2000);
	size_t n;
	int64_t count;

	due_ticks(f, 10001, 20500, ticks, &n, &count);
	ck_assert_int_eq(count, 5);
	ck_assert_uint_eq(n, 5);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(ticks[i], 12000 + 2000 * (int64_t)i);
	/* strictly after the cursor, up to and including now */
	due_ticks(f, 12000, 14000, ticks, &n, &count);
	ck_assert_int_eq(count, 1);
	ck_assert_int_eq(ticks[0], 14000);
	due_ticks(f, 14000, 15999, ticks, &n, &count);
	ck_assert_int_eq(count, 0);
	ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(interval_catchup_keeps_the_newest_thousand)
{
	struct sl_flow *f = flow_every(1000);
	size_t n;
	int64_t count;

	due_ticks(f, 0, 1000000000, ticks, &n, &count);
	ck_assert_int_eq(count, 1000000);
	ck_assert_uint_eq(n, SL_CATCHUP_MAX);
	ck_assert_int_eq(ticks[0], 1000000000 - 999000);
	ck_assert_int_eq(ticks[SL_CATCHUP_MAX - 1], 1000000000);
}
END_TEST

START_TEST(cron_ticks)
{
	struct sl_flow *f = flow_cron("*/5 * * * *");
	size_t n;
	int64_t count;

	due_ticks(f, at(2026, 1, 1, 10, 0), at(2026, 1, 1, 10, 27), ticks, &n, &count);
	ck_assert_int_eq(count, 5);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(ticks[i], at(2026, 1, 1, 10, 5 + 5 * (int)i));
	f = flow_cron("0 0 30 2 *"); /* never */
	due_ticks(f, at(2026, 1, 1, 0, 0), at(2027, 1, 1, 0, 0), ticks, &n, &count);
	ck_assert_int_eq(count, 0);
}
END_TEST

START_TEST(cron_catchup_ring_is_oldest_first)
{
	struct sl_flow *f = flow_cron("* * * * *");
	size_t n;
	int64_t count, end = at(2026, 1, 3, 0, 0);

	due_ticks(f, at(2026, 1, 1, 0, 0), end, ticks, &n, &count);
	ck_assert_int_eq(count, 2880);
	ck_assert_uint_eq(n, SL_CATCHUP_MAX);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(ticks[i], end - (int64_t)(SL_CATCHUP_MAX - 1 - i) * 60000);
}
END_TEST

START_TEST(on_time_is_half_the_interval_at_most_a_minute)
{
	struct sl_flow *f = flow_every(2000);

	ck_assert(on_time(f, 10000, 10000));
	ck_assert(on_time(f, 10000, 11000));
	ck_assert(!on_time(f, 10000, 11001));
	f = flow_every(3600000);
	ck_assert(on_time(f, 3600000, 3660000));
	ck_assert(!on_time(f, 3600000, 3660001));
	f = flow_cron("0 6 * * *");
	ck_assert(on_time(f, at(2026, 1, 1, 6, 0), at(2026, 1, 1, 6, 1)));
	ck_assert(!on_time(f, at(2026, 1, 1, 6, 0), at(2026, 1, 1, 6, 2)));
}
END_TEST

START_TEST(scheduled_at_value)
{
	struct sl_flow_param params[2] = {{.name = "n", .type = SL_PARAM_INT},
					  {.name = SL_SCHEDULE_PARAM, .type = SL_PARAM_INT}};
	struct sl_flow *f = flow_every(1000);
	char *v;

	ck_assert_ptr_null(tick_value(f, 1000));
	f->params = params;
	f->nparams = 2;
	v = tick_value(f, at(2026, 11, 22, 6, 30));
	ck_assert_str_eq(v, "1795329000000");
	free(v);
	params[1].type = SL_PARAM_STRING;
	v = tick_value(f, at(2026, 11, 22, 6, 30));
	ck_assert_str_eq(v, "\"2026-11-22T06:30:00Z\"");
	free(v);
	v = tick_value(f, at(2026, 11, 22, 6, 30) + 1500);
	ck_assert_str_eq(v, "\"2026-11-22T06:30:01.500Z\"");
	free(v);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("planner_schedule");
	TCase *tc = tcase_create("schedule");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, interval_ticks_are_anchored_at_the_epoch);
	tcase_add_test(tc, interval_catchup_keeps_the_newest_thousand);
	tcase_add_test(tc, cron_ticks);
	tcase_add_test(tc, cron_catchup_ring_is_oldest_first);
	tcase_add_test(tc, on_time_is_half_the_interval_at_most_a_minute);
	tcase_add_test(tc, scheduled_at_value);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
