/* test_cron.c - cron expressions: every syntax form, errors naming the field, next fire times
 * across hour, day, month and year boundaries and leap years, bounded search, junk input. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/cron.h"

/* ms since the epoch of a UTC date and time. */
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

static char *show(int64_t ms)
{
	static char buf[4][32];
	static int k;
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	k = (k + 1) % 4;
	gmtime_r(&t, &tm);
	strftime(buf[k], sizeof(buf[k]), "%Y-%m-%d %H:%M:%S %a", &tm);
	return buf[k];
}

static struct sl_cron parse_ok(const char *expr)
{
	struct sl_cron c;
	char err[256] = "";

	ck_assert_msg(sl_cron_parse(expr, &c, err, sizeof(err)) == SL_OK, "'%s': %s", expr, err);
	return c;
}

/* Asserts that the next fire of expr after `after` is `want`. */
static void next_is(const char *expr, int64_t after, int64_t want)
{
	struct sl_cron c = parse_ok(expr);
	int64_t got = -1;
	enum sl_err rc = sl_cron_next(&c, after, &got);

	ck_assert_msg(rc == SL_OK, "'%s' after %s: %s", expr, show(after), sl_strerror(rc));
	ck_assert_msg(got == want, "'%s' after %s: got %s, want %s", expr, show(after), show(got),
		      show(want));
}

static void parse_bad(const char *expr, const char *want)
{
	struct sl_cron c;
	char err[256] = "";

	ck_assert_msg(sl_cron_parse(expr, &c, err, sizeof(err)) == SL_ERR_PARSE, "'%s' parsed",
		      expr);
	ck_assert_msg(strstr(err, want), "'%s': want '%s' in: %s", expr, want, err);
	ck_assert_msg(c.minute == 0 && c.dow == 0, "'%s': output not cleared", expr);
}

START_TEST(star_is_every_minute)
{
	next_is("* * * * *", at(2026, 1, 1, 0, 0) + 30000, at(2026, 1, 1, 0, 1));
	next_is("* * * * *", at(2026, 1, 1, 0, 0), at(2026, 1, 1, 0, 1));
	next_is("* * * * *", at(2026, 12, 31, 23, 59) + 59999, at(2027, 1, 1, 0, 0));
}
END_TEST

START_TEST(numbers)
{
	next_is("30 4 * * *", at(2026, 1, 1, 5, 0), at(2026, 1, 2, 4, 30));
	next_is("30 4 * * *", at(2026, 1, 1, 4, 29) + 59999, at(2026, 1, 1, 4, 30));
	/* strictly after: a fire time itself is not returned */
	next_is("0 * * * *", at(2026, 1, 1, 10, 0), at(2026, 1, 1, 11, 0));
	next_is("0 * * * *", at(2026, 1, 1, 10, 0) - 1, at(2026, 1, 1, 10, 0));
	next_is("07 08 09 10 *", at(2026, 1, 1, 0, 0), at(2026, 10, 9, 8, 7));
}
END_TEST

START_TEST(ranges_lists_and_steps)
{
	next_is("0 9-17 * * *", at(2026, 3, 10, 17, 0), at(2026, 3, 11, 9, 0));
	next_is("0 9-17 * * *", at(2026, 3, 10, 12, 30), at(2026, 3, 10, 13, 0));
	next_is("0,15,30,45 * * * *", at(2026, 3, 10, 10, 16), at(2026, 3, 10, 10, 30));
	next_is("0,15,30,45 * * * *", at(2026, 3, 10, 10, 45), at(2026, 3, 10, 11, 0));
	next_is("*/5 * * * *", at(2026, 3, 10, 10, 3), at(2026, 3, 10, 10, 5));
	next_is("*/5 * * * *", at(2026, 3, 10, 10, 55), at(2026, 3, 10, 11, 0));
	next_is("10-30/10 * * * *", at(2026, 3, 10, 10, 30), at(2026, 3, 10, 11, 10));
	next_is("10-30/10 * * * *", at(2026, 3, 10, 10, 11), at(2026, 3, 10, 10, 20));
	next_is("5/20 * * * *", at(2026, 3, 10, 10, 26), at(2026, 3, 10, 10, 45));
	next_is("5/20 * * * *", at(2026, 3, 10, 10, 45), at(2026, 3, 10, 11, 5));
	next_is("0 0-6/3,22 * * *", at(2026, 3, 10, 6, 0), at(2026, 3, 10, 22, 0));
	next_is("0 0-6/3,22 * * *", at(2026, 3, 10, 22, 0), at(2026, 3, 11, 0, 0));
	next_is("0 0 */10 * *", at(2026, 3, 21, 0, 0), at(2026, 3, 31, 0, 0));
	next_is("0 0 */10 * *", at(2026, 3, 31, 0, 0), at(2026, 4, 1, 0, 0));
	next_is("0 0 1 */4 *", at(2026, 1, 1, 0, 0), at(2026, 5, 1, 0, 0));
}
END_TEST

START_TEST(month_and_day_names)
{
	/* 2026-01-01 is a Thursday */
	next_is("0 0 1 jan,jul *", at(2026, 1, 1, 0, 0), at(2026, 7, 1, 0, 0));
	next_is("0 0 1 JUL-aug *", at(2026, 7, 1, 0, 0), at(2026, 8, 1, 0, 0));
	next_is("0 12 * * mon-fri", at(2026, 1, 2, 12, 0), at(2026, 1, 5, 12, 0));
	next_is("0 12 * * Sat,SUN", at(2026, 1, 1, 0, 0), at(2026, 1, 3, 12, 0));
	next_is("0 0 * * 7", at(2026, 1, 1, 0, 0), at(2026, 1, 4, 0, 0)); /* 7 = Sunday */
	next_is("0 0 * * 0", at(2026, 1, 1, 0, 0), at(2026, 1, 4, 0, 0));
	next_is("0 0 * * 5-7", at(2026, 1, 3, 0, 0), at(2026, 1, 4, 0, 0));
	next_is("0 0 * * 5-7", at(2026, 1, 4, 0, 0), at(2026, 1, 9, 0, 0));
	next_is("0 0 * jan/6 *", at(2026, 1, 31, 0, 0), at(2026, 7, 1, 0, 0));
}
END_TEST

START_TEST(dom_and_dow_both_restricted_is_or)
{
	/* Vixie: the 13th OR any Friday */
	next_is("0 0 13 * fri", at(2026, 1, 1, 0, 0), at(2026, 1, 2, 0, 0));
	next_is("0 0 13 * fri", at(2026, 1, 12, 0, 0), at(2026, 1, 13, 0, 0));
	next_is("0 0 13 * fri", at(2026, 1, 13, 0, 0), at(2026, 1, 16, 0, 0));
	/* a field starting with '*' leaves the other alone: every 2nd day that is a Monday */
	next_is("0 0 */2 * mon", at(2026, 1, 1, 0, 0), at(2026, 1, 5, 0, 0));
	next_is("0 0 */2 * mon", at(2026, 1, 5, 0, 0), at(2026, 1, 19, 0, 0));
	/* only dow restricted: Fridays */
	next_is("0 0 * * fri", at(2026, 1, 2, 0, 0), at(2026, 1, 9, 0, 0));
	/* only dom restricted */
	next_is("0 0 13 * *", at(2026, 1, 1, 0, 0), at(2026, 1, 13, 0, 0));
}
END_TEST

START_TEST(month_year_and_leap_boundaries)
{
	next_is("0 0 31 * *", at(2026, 1, 31, 0, 0), at(2026, 3, 31, 0, 0));
	next_is("0 0 30 * *", at(2026, 1, 30, 0, 0), at(2026, 3, 30, 0, 0));
	next_is("59 23 31 12 *", at(2026, 6, 1, 0, 0), at(2026, 12, 31, 23, 59));
	next_is("59 23 31 12 *", at(2026, 12, 31, 23, 59), at(2027, 12, 31, 23, 59));
	next_is("0 0 1 1 *", at(2026, 12, 31, 23, 59), at(2027, 1, 1, 0, 0));
	next_is("0 0 29 2 *", at(2026, 3, 1, 0, 0), at(2028, 2, 29, 0, 0));
	next_is("0 0 29 2 *", at(2024, 2, 28, 12, 0), at(2024, 2, 29, 0, 0));
	/* 2100 is not a leap year: 8 years between Feb 29s */
	next_is("0 0 29 2 *", at(2096, 3, 1, 0, 0), at(2104, 2, 29, 0, 0));
	next_is("0 0 29 2 *", at(1999, 3, 1, 0, 0), at(2000, 2, 29, 0, 0));
	next_is("0 0 * * *", at(2028, 2, 28, 0, 0), at(2028, 2, 29, 0, 0));
	next_is("0 0 * * *", at(2027, 2, 28, 0, 0), at(2027, 3, 1, 0, 0));
	next_is("@yearly", at(2026, 5, 5, 5, 5), at(2027, 1, 1, 0, 0));
	next_is("@monthly", at(2026, 12, 5, 5, 5), at(2027, 1, 1, 0, 0));
	next_is("@weekly", at(2026, 1, 1, 0, 0), at(2026, 1, 4, 0, 0));
	next_is("@daily", at(2026, 1, 1, 0, 0), at(2026, 1, 2, 0, 0));
	next_is("@midnight", at(2026, 1, 1, 13, 0), at(2026, 1, 2, 0, 0));
	next_is("  @hourly ", at(2026, 1, 1, 13, 0), at(2026, 1, 1, 14, 0));
	next_is("0 0 1 1 *", 0, at(1971, 1, 1, 0, 0));
}
END_TEST

START_TEST(impossible_dates_give_up)
{
	const char *never[] = {"0 0 30 2 *", "0 0 31 4,6,9,11 *", "* * 31 2 *", NULL};
	struct sl_cron c;
	int64_t next = 42;

	for (int i = 0; never[i]; i++) {
		c = parse_ok(never[i]);
		ck_assert_int_eq(sl_cron_next(&c, at(2026, 1, 1, 0, 0), &next), SL_ERR_NOT_FOUND);
		ck_assert_int_eq(sl_cron_next(&c, SL_CRON_MAX_MS, &next), SL_ERR_NOT_FOUND);
	}
	ck_assert_int_eq(next, 42);
	/* ... but Feb 30 OR a Monday is possible */
	next_is("0 0 30 2 mon", at(2026, 1, 1, 0, 0), at(2026, 2, 2, 0, 0));
}
END_TEST

START_TEST(next_rejects_bad_arguments)
{
	struct sl_cron c = parse_ok("* * * * *"), zero;
	int64_t next;

	memset(&zero, 0, sizeof(zero));
	ck_assert_int_eq(sl_cron_next(&c, -1, &next), SL_ERR_INVALID);
	ck_assert_int_eq(sl_cron_next(&c, SL_CRON_MAX_MS + 1, &next), SL_ERR_INVALID);
	ck_assert_int_eq(sl_cron_next(&c, INT64_MAX, &next), SL_ERR_INVALID);
	ck_assert_int_eq(sl_cron_next(&zero, 0, &next), SL_ERR_INVALID);
	ck_assert_int_eq(sl_cron_next(NULL, 0, &next), SL_ERR_INVALID);
	ck_assert_int_eq(sl_cron_next(&c, SL_CRON_MAX_MS, &next), SL_OK);
	ck_assert_int_gt(next, SL_CRON_MAX_MS);
}
END_TEST

START_TEST(errors_name_the_field)
{
	char long_expr[SL_CRON_MAX_EXPR + 10];

	parse_bad("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4");
	parse_bad("* * * * * *", "expected 5 fields");
	parse_bad("", "got 0");
	parse_bad("   \t ", "got 0");
	parse_bad("60 * * * *", "minute: value 60 out of range 0-59");
	parse_bad("* 24 * * *", "hour: value 24 out of range 0-23");
	parse_bad("* * 0 * *", "day-of-month: value 0 out of range 1-31");
	parse_bad("* * 32 * *", "day-of-month: value 32 out of range 1-31");
	parse_bad("* * * 13 *", "month: value 13 out of range 1-12");
	parse_bad("* * * 0 *", "month: value 0 out of range 1-12");
	parse_bad("* * * * 8", "day-of-week: value 8 out of range 0-7");
	parse_bad("5-1 * * * *", "minute: range goes backwards in '5-1'");
	parse_bad("*/0 * * * *", "minute: step 0 out of range 1-59");
	parse_bad("* */24 * * *", "hour: step 24 out of range 1-23");
	parse_bad("*/ * * * *", "minute: expected a number after '/'");
	parse_bad("1/2/3 * * * *", "minute: expected a number after '/'");
	parse_bad("1,,2 * * * *", "minute: empty item in list");
	parse_bad(",1 * * * *", "minute: empty item");
	parse_bad("1, * * * *", "minute: empty item");
	parse_bad("1- * * * *", "minute: expected a number or '*'");
	parse_bad("-1 * * * *", "minute: expected a number or '*'");
	parse_bad("*5 * * * *", "minute: unexpected text in '*5'");
	parse_bad("1x * * * *", "minute: unexpected text");
	parse_bad("abc * * * *", "minute: expected a number or '*' in 'abc'");
	parse_bad("* mon * * *", "hour: expected a number");
	parse_bad("* * * foo *", "month: expected a number or a name (jan..dec, sun..sat) in 'foo'");
	parse_bad("* * * * monday", "day-of-week: expected a number or a name");
	parse_bad("* * * * fri-mon", "day-of-week: range goes backwards");
	parse_bad("00060 * * * *", "minute: number too long");
	parse_bad("* * * * */99999", "day-of-week: expected a number after '/'");
	parse_bad("@reboot", "unknown macro");
	parse_bad("@daily *", "unknown macro");
	parse_bad("*\x01 * * * *", "minute: unexpected text in '*?'");
	memset(long_expr, '*', sizeof(long_expr) - 1);
	long_expr[sizeof(long_expr) - 1] = '\0';
	parse_bad(long_expr, "longer than 256 bytes");
	{
		struct sl_cron c;
		char err[64];
		ck_assert_int_eq(sl_cron_parse(NULL, &c, err, sizeof(err)), SL_ERR_PARSE);
		ck_assert_int_eq(sl_cron_parse("* * * * *", &c, NULL, 0), SL_OK);
		ck_assert_int_eq(sl_cron_parse("nope", &c, NULL, 0), SL_ERR_PARSE);
		/* a tiny buffer is still NUL-terminated */
		ck_assert_int_eq(sl_cron_parse("99 * * * *", &c, err, 8), SL_ERR_PARSE);
		ck_assert_int_eq(strlen(err), 7);
	}
}
END_TEST

START_TEST(parsed_bits)
{
	struct sl_cron c = parse_ok("0-59/30 1,2 1-3 feb 1-5/2");

	ck_assert(c.minute == ((1ULL << 0) | (1ULL << 30)));
	ck_assert_uint_eq(c.hour, (1u << 1) | (1u << 2));
	ck_assert_uint_eq(c.dom, (1u << 1) | (1u << 2) | (1u << 3));
	ck_assert_uint_eq(c.month, 1u << 2);
	ck_assert_uint_eq(c.dow, (1u << 1) | (1u << 3) | (1u << 5));
	ck_assert(!c.dom_star && !c.dow_star);
	c = parse_ok("\t* * */2 * *  ");
	ck_assert(c.minute == (1ULL << 60) - 1);
	ck_assert_uint_eq(c.dow, 0x7f);
	ck_assert(c.dom_star && c.dow_star);
}
END_TEST

/* Random bytes and random mixes of cron characters: no crash, and whatever parses has a
 * bounded next. A cheap stand-in until the real fuzzer exists. */
START_TEST(junk_input_is_safe)
{
	static const char alphabet[] = "0123456789*/-, \tjanmonfriSUN@\x01\xff";
	static const char *const items[] = {"*", "*/7", "1-5", "mon", "feb", "0,30", "5/15",
					    "31", "29", "2", "30", "sun-sat", "1-12/5", "7"};
	const size_t nitems = sizeof(items) / sizeof(items[0]);
	char buf[64], err[128];
	unsigned seed = 12345;
	int parsed = 0;

	for (int i = 0; i < 200000; i++) {
		size_t len = (size_t)(rand_r(&seed) % (sizeof(buf) - 1));
		struct sl_cron c;
		int64_t next;
		if (i % 3 == 2) {
			/* five fields of plausible items: many parse, some give up */
			size_t off = 0;
			for (int f = 0; f < 5; f++)
				off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s",
							f ? " " : "",
							items[rand_r(&seed) % nitems]);
		} else {
			for (size_t k = 0; k < len; k++)
				buf[k] = i % 3 ? (char)(rand_r(&seed) % 256)
					       : alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
			buf[len] = '\0';
		}
		if (sl_cron_parse(buf, &c, err, sizeof(err)) == SL_OK) {
			enum sl_err rc = sl_cron_next(&c, at(2026, 1, 1, 0, 0), &next);
			ck_assert(rc == SL_OK || rc == SL_ERR_NOT_FOUND);
			parsed++;
		} else {
			ck_assert(err[0] != '\0');
		}
	}
	ck_assert_int_gt(parsed, 0);
}
END_TEST

static Suite *cron_suite(void)
{
	Suite *s = suite_create("cron");
	TCase *tc = tcase_create("cron");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, star_is_every_minute);
	tcase_add_test(tc, numbers);
	tcase_add_test(tc, ranges_lists_and_steps);
	tcase_add_test(tc, month_and_day_names);
	tcase_add_test(tc, dom_and_dow_both_restricted_is_or);
	tcase_add_test(tc, month_year_and_leap_boundaries);
	tcase_add_test(tc, impossible_dates_give_up);
	tcase_add_test(tc, next_rejects_bad_arguments);
	tcase_add_test(tc, errors_name_the_field);
	tcase_add_test(tc, parsed_bits);
	tcase_add_test(tc, junk_input_is_safe);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(cron_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
