/* test_schedule.c - `schedule:` and `catchup:` in flow YAML: each form, the defaults, and
 * errors with their lines. */
#include "flow_test.h"

#define TASKS "tasks:\n  a: {builtin: noop}\n"

START_TEST(no_schedule)
{
	struct sl_flow *f = parse_ok("flow: x\n" TASKS);

	ck_assert_int_eq(f->schedule_kind, SL_SCHEDULE_NONE);
	ck_assert_ptr_null(f->schedule_text);
	ck_assert_ptr_null(f->schedule_params);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(cron_forms)
{
	struct sl_flow *f = parse_ok("flow: x\nschedule: {cron: \"*/5 * * * *\"}\n" TASKS);

	ck_assert_int_eq(f->schedule_kind, SL_SCHEDULE_CRON);
	ck_assert_str_eq(f->schedule_text, "*/5 * * * *");
	ck_assert(f->schedule_cron.minute == 0x084210842108421ULL);
	ck_assert_int_eq(f->catchup, SL_CATCHUP_LATEST);
	sl_flow_destroy(f);

	f = parse_ok("flow: x\nschedule: '0 6 * * mon-fri'\n" TASKS); /* shorthand */
	ck_assert_int_eq(f->schedule_kind, SL_SCHEDULE_CRON);
	ck_assert_uint_eq(f->schedule_cron.dow, 0x3e);
	sl_flow_destroy(f);

	f = parse_ok("flow: x\nschedule:\n  cron: '@daily'\n  catchup: all\n" TASKS);
	ck_assert_int_eq(f->catchup, SL_CATCHUP_ALL);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(every_with_params_and_catchup)
{
	struct sl_flow *f =
		parse_ok("flow: x\nparams:\n  n: {type: int}\n  tag: hello\n"
			 "schedule:\n  every: 10m\n  params: {n: 3}\n  catchup: none\n" TASKS);

	ck_assert_int_eq(f->schedule_kind, SL_SCHEDULE_EVERY);
	ck_assert_int_eq(f->schedule_every_ms, 600000);
	ck_assert_str_eq(f->schedule_text, "10m");
	ck_assert(jeq(f->schedule_params, "{\"n\": 3}"));
	ck_assert_int_eq(f->catchup, SL_CATCHUP_NONE);
	sl_flow_destroy(f);

	/* Airflow-style top-level catchup */
	f = parse_ok("flow: x\nschedule: {every: 2s}\ncatchup: all\n" TASKS);
	ck_assert_int_eq(f->schedule_every_ms, 2000);
	ck_assert_int_eq(f->catchup, SL_CATCHUP_ALL);
	sl_flow_destroy(f);

	/* the tick parameter may be required: the planner fills it */
	f = parse_ok("flow: x\nparams:\n  scheduled_at: {type: int}\nschedule: {every: 1h}\n" TASKS);
	sl_flow_destroy(f);
	f = parse_ok("flow: x\nparams:\n  scheduled_at: {type: string}\nschedule: {every: 1h}\n" TASKS);
	sl_flow_destroy(f);
}
END_TEST

static const struct bad {
	const char *yaml;
	int line;
	const char *want;
} bad[] = {
	{"flow: x\nschedule: {cron: '* 24 * * *'}\n" TASKS, 2,
	 "schedule.cron: hour: value 24 out of range 0-23"},
	{"flow: x\nschedule:\n  cron: '*/5 * * * *'\n  every: 5m\n" TASKS, 3,
	 "schedule has both cron and every (use one)"},
	{"flow: x\nschedule: {catchup: all}\n" TASKS, 2, "schedule needs 'cron'"},
	{"flow: x\nschedule: {every: 5 minutes}\n" TASKS, 2, "bad duration '5 minutes' for schedule.every"},
	{"flow: x\nschedule: {every: 500ms}\n" TASKS, 2, "schedule.every must be at least 1s"},
	{"flow: x\nschedule: {every: 1m, at: 5}\n" TASKS, 2, "unknown key 'at' in schedule"},
	{"flow: x\nschedule: [1, 2]\n" TASKS, 2, "schedule must be a mapping"},
	{"flow: x\nschedule: {every: 1m, catchup: some}\n" TASKS, 2,
	 "bad catchup 'some' (allowed: latest, all, none)"},
	{"flow: x\ncatchup: all\n" TASKS, 2, "catchup without a schedule"},
	{"flow: x\ncatchup: all\nschedule: {every: 1m, catchup: none}\n" TASKS, 2,
	 "catchup is given twice"},
	{"flow: x\nparams: {n: {type: int}}\nschedule: {every: 1m}\n" TASKS, 3,
	 "scheduled runs: missing required param 'n'"},
	{"flow: x\nparams: {n: 1}\nschedule: {every: 1m, params: {n: abc}}\n" TASKS, 3,
	 "scheduled runs: param 'n': expected int"},
	{"flow: x\nschedule: {every: 1m, params: {m: 1}}\n" TASKS, 2,
	 "scheduled runs: unknown param 'm'"},
	{"flow: x\nschedule: {every: 1m, params: [1]}\n" TASKS, 2, "schedule.params must be a mapping"},
	{"flow: x\nparams: {scheduled_at: 0}\nschedule: {every: 1m, params: {scheduled_at: 5}}\n" TASKS,
	 3, "schedule.params must not set 'scheduled_at'"},
	{"flow: x\nparams: {scheduled_at: {type: float}}\nschedule: {every: 1m}\n" TASKS, 3,
	 "param 'scheduled_at'"},
};

START_TEST(errors)
{
	parse_bad(bad[_i].yaml, bad[_i].line, bad[_i].want);
}
END_TEST

static Suite *schedule_suite(void)
{
	Suite *s = suite_create("schedule");
	TCase *tc = tcase_create("schedule");

	tcase_add_test(tc, no_schedule);
	tcase_add_test(tc, cron_forms);
	tcase_add_test(tc, every_with_params_and_catchup);
	tcase_add_loop_test(tc, errors, 0, (int)(sizeof(bad) / sizeof(bad[0])));
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(schedule_suite)
