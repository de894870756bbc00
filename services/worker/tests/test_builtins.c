/* test_builtins.c - unit tests of the worker's in-process builtins (noop, echo, sum, sleep). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/util.h"
#include "worker.h"

static struct worker_outcome out;

static void run(const char *name, const char *input)
{
	worker_outcome_clear(&out);
	memset(&out, 0, sizeof(out));
	worker_builtin_run(name, input, input ? strlen(input) : 0, NULL, NULL, 0, &out);
}

static void teardown(void)
{
	worker_outcome_clear(&out);
}

#define SUCCEEDED SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED
#define FAILED SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED
#define TIMED_OUT SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT
#define CANCELLED SLUICE__V1__TASK_STATUS__TASK_STATUS_CANCELLED

START_TEST(test_noop_echo)
{
	run("noop", "[1]");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_str_eq(out.output, "null");

	run("echo", "{\"a\": [1, 2]}\n");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_str_eq(out.output, "{\"a\":[1,2]}");
	run("echo", NULL);
	ck_assert_str_eq(out.output, "null");
	run("echo", "plain text");
	ck_assert_str_eq(out.output, "\"plain text\"");
}
END_TEST

START_TEST(test_sum)
{
	run("sum", "[1, 2, 3, -4]");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_str_eq(out.output, "2");
	run("sum", "[]");
	ck_assert_str_eq(out.output, "0");
	run("sum", "[1, 2.5]");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_str_eq(out.output, "3.5");
	run("sum", "[9223372036854775807, 1]"); /* overflows int64: falls back to a float */
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_double_eq_tol(strtod(out.output, NULL), 9.223372036854775808e18, 1e4);
	run("sum", "[1, \"2\"]");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_str_eq(out.error, "sum: element 1 is not a number");
	run("sum", "{\"a\": 1}");
	ck_assert_int_eq(out.status, FAILED);
	run("sum", "[1,");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_ptr_nonnull(strstr(out.error, "not JSON"));
	run("sum", NULL);
	ck_assert_int_eq(out.status, FAILED);
}
END_TEST

static int stop_now(void *ud)
{
	return sl_mono_ms() >= *(int64_t *)ud;
}

START_TEST(test_sleep)
{
	int64_t t0 = sl_mono_ms(), stop_at;

	run("sleep", "0.1");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_int_ge(sl_mono_ms() - t0, 95);

	worker_outcome_clear(&out);
	memset(&out, 0, sizeof(out));
	t0 = sl_mono_ms();
	worker_builtin_run("sleep", "10", 2, NULL, NULL, t0 + 150, &out);
	ck_assert_int_eq(out.status, TIMED_OUT);
	ck_assert_int_lt(sl_mono_ms() - t0, 2000);

	worker_outcome_clear(&out);
	memset(&out, 0, sizeof(out));
	t0 = sl_mono_ms();
	stop_at = t0 + 100;
	worker_builtin_run("sleep", "10", 2, stop_now, &stop_at, 0, &out);
	ck_assert_int_eq(out.status, CANCELLED);
	ck_assert_int_eq(out.stopped, 1);
	ck_assert_int_lt(sl_mono_ms() - t0, 2000);

	run("sleep", "-1");
	ck_assert_int_eq(out.status, FAILED);
	run("sleep", "\"x\"");
	ck_assert_int_eq(out.status, FAILED);
}
END_TEST

START_TEST(test_unknown)
{
	run("http_nope", "1");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_str_eq(out.error, "unknown builtin: http_nope");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker_builtins");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_noop_echo);
	tcase_add_test(tc, test_sum);
	tcase_add_test(tc, test_sleep);
	tcase_add_test(tc, test_unknown);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
