/* cron.h - 5-field cron expressions (Vixie semantics) and their next fire time in UTC. Pure:
 * no I/O, no allocation, bounded work for any input. */
#ifndef SLUICE_CRON_H
#define SLUICE_CRON_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

/* Longest expression sl_cron_parse() accepts, in bytes. */
#define SL_CRON_MAX_EXPR 256

/* How far sl_cron_next() looks ahead before giving up (covers Feb 29 across a century year
 * such as 2100, whose next Feb 29 is 8 years after the previous one). */
#define SL_CRON_MAX_YEARS 9

/* Earliest and latest times sl_cron_next() accepts (1970-01-01 and 9990-01-01 UTC, ms). */
#define SL_CRON_MIN_MS 0LL
#define SL_CRON_MAX_MS 253087804800000LL

/* A parsed expression: one bit per allowed value of each field. */
struct sl_cron {
	uint64_t minute; /* bits 0..59 */
	uint32_t hour;   /* bits 0..23 */
	uint32_t dom;    /* bits 1..31 */
	uint16_t month;  /* bits 1..12 */
	uint8_t dow;     /* bits 0..6, Sunday = 0 (7 is read as 0) */
	/* The day-of-month / day-of-week field starts with '*'. When both fields are restricted
	 * (neither starts with '*'), a day matches if EITHER matches (Vixie cron); otherwise
	 * both must match. */
	uint8_t dom_star;
	uint8_t dow_star;
};

/* Parses expr: five fields "minute hour day-of-month month day-of-week" separated by blanks;
 * each field a comma list of items, an item "*", "N", "N-M", with an optional "/STEP";
 * "N/STEP" means N through the field's maximum. Months may be jan..dec and days sun..sat
 * (any case), 7 is Sunday too. The macros @yearly, @annually, @monthly, @weekly, @daily,
 * @midnight and @hourly stand for their usual expressions. expr is borrowed; any bytes are
 * safe. On error returns SL_ERR_PARSE, leaves *out zeroed and writes a reason naming the
 * field into errstr ("hour: value 24 out of range 0-23"). */
enum sl_err sl_cron_parse(const char *expr, struct sl_cron *out, char *errstr, size_t errlen);

/* The first time strictly after after_ms (ms since the epoch, UTC) that cron matches, in
 * *next_ms (a whole minute). Returns SL_OK; SL_ERR_NOT_FOUND when nothing matches within
 * SL_CRON_MAX_YEARS years (an impossible date such as "0 0 30 2 *"); SL_ERR_INVALID when
 * after_ms is outside SL_CRON_MIN_MS..SL_CRON_MAX_MS or cron is NULL or empty. */
enum sl_err sl_cron_next(const struct sl_cron *cron, int64_t after_ms, int64_t *next_ms);

#endif
