/* fuzz_cron.c - harness: the cron parser (sl_cron_parse) on arbitrary text and, for what
 * parses, sl_cron_next() from a few fixed instants, checked against gmtime(): the time found
 * is a later whole minute that matches every field, and no earlier minute matched. */
#include <string.h>
#include <time.h>

#include "fuzz.h"
#include "sluice/cron.h"

#define CRON_MAX_INPUT 1024 /* past SL_CRON_MAX_EXPR, so the length cap is exercised */

/* 1 when the minute starting at ms matches c, by the rules cron.h states. */
static int matches(const struct sl_cron *c, int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	int dom_ok, dow_ok, day_ok;

	FUZZ_CHECK(gmtime_r(&t, &tm) != NULL, "gmtime of %lld", (long long)ms);
	dom_ok = (c->dom >> tm.tm_mday) & 1;
	dow_ok = (c->dow >> tm.tm_wday) & 1;
	day_ok = !c->dom_star && !c->dow_star ? dom_ok || dow_ok : dom_ok && dow_ok;
	return ((c->minute >> tm.tm_min) & 1) && ((c->hour >> tm.tm_hour) & 1) &&
	       ((c->month >> (tm.tm_mon + 1)) & 1) && day_ok;
}

static void check_next(const struct sl_cron *c, int64_t after)
{
	for (int i = 0; i < 3 && after <= SL_CRON_MAX_MS; i++) {
		int64_t next = -1;
		enum sl_err rc = sl_cron_next(c, after, &next);

		if (rc == SL_ERR_NOT_FOUND)
			return;
		FUZZ_CHECK(rc == SL_OK, "sl_cron_next(%lld): %s", (long long)after, sl_strerror(rc));
		FUZZ_CHECK(next > after && next % 60000 == 0, "next %lld after %lld", (long long)next,
			   (long long)after);
		FUZZ_CHECK(matches(c, next), "next %lld does not match", (long long)next);
		/* Within two days, every minute in between must not match. */
		if (next - after <= 2LL * 24 * 3600 * 1000)
			for (int64_t m = (after / 60000 + 1) * 60000; m < next; m += 60000)
				FUZZ_CHECK(!matches(c, m), "%lld matches before next %lld",
					   (long long)m, (long long)next);
		after = next;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int64_t starts[] = {
		SL_CRON_MIN_MS,
		951782340000LL,          /* 2000-02-28 23:59 (a leap century) */
		1763776012345LL,         /* 2025-11-22 01:46:52.345 */
		4107542340000LL,         /* 2100-02-28 23:59 (not leap) */
		SL_CRON_MAX_MS - 60000,
		SL_CRON_MAX_MS,
	};
	static const struct sl_cron zero;
	struct sl_cron c;
	char expr[CRON_MAX_INPUT + 1], err[256];

	if (size > CRON_MAX_INPUT)
		return 0;
	memcpy(expr, data, size);
	expr[size] = '\0';
	memset(&c, 0xa5, sizeof(c));
	err[0] = '\0';
	if (sl_cron_parse(expr, &c, err, sizeof(err)) != SL_OK) {
		FUZZ_CHECK(!memcmp(&c, &zero, sizeof(c)), "failed parse left *out set");
		FUZZ_CHECK(err[0], "failed parse without a message");
		return 0;
	}
	FUZZ_CHECK(c.minute && c.hour && c.dom && c.month && c.dow, "parsed an empty field");
	FUZZ_CHECK(c.minute >> 60 == 0 && c.hour >> 24 == 0 && (c.dom & 1) == 0 &&
			   (c.month & 1) == 0 && c.month >> 13 == 0 &&
			   c.dow >> 7 == 0,
		   "bits outside a field's range");
	for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++)
		check_next(&c, starts[i]);
	return 0;
}
