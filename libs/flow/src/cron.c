/* cron.c - 5-field cron expressions: parsing into bit sets, and the next matching minute in
 * UTC found by skipping whole months, days and hours (bounded by SL_CRON_MAX_YEARS). */
#include <stdio.h>
#include <string.h>

#include "sluice/cron.h"

#define MAX_FIELDS 5
#define MAX_DIGITS 4 /* "0059" is fine, "00000" is not: keeps numbers far from overflow */

struct field_spec {
	const char *name;
	int min, max;
	const char *const *names; /* names[i] stands for min + i (NULL: numbers only) */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
					  "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

/* Day-of-week takes 0..7 (7 is Sunday again) and is folded into 0..6 afterwards. */
static const struct field_spec fields[MAX_FIELDS] = {
	{"minute", 0, 59, NULL},
	{"hour", 0, 23, NULL},
	{"day-of-month", 1, 31, NULL},
	{"month", 1, 12, month_names},
	{"day-of-week", 0, 7, dow_names},
};

static const struct {
	const char *name;
	const char *expr;
} macros[] = {
	{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
	{"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
	{"@hourly", "0 * * * *"},
};

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Writes "<field>: <reason> '<text>'" with text shown printable and cut short. */
static enum sl_err ferr(char *errstr, size_t errlen, const char *field, const char *reason,
			const char *text, size_t len)
{
	char shown[40];
	size_t n = 0;

	for (size_t i = 0; i < len && n < sizeof(shown) - 4; i++)
		shown[n++] = text[i] >= 0x20 && text[i] < 0x7f ? text[i] : '?';
	if (n < len)
		shown[n++] = '.', shown[n++] = '.', shown[n++] = '.';
	shown[n] = '\0';
	if (field)
		snprintf(errstr, errlen, "%s: %s '%s'", field, reason, shown);
	else
		snprintf(errstr, errlen, "%s '%s'", reason, shown);
	return SL_ERR_PARSE;
}

/* Reads a number or a name at s[*i..end). Returns 0 with *v set, or -1 after an error. */
static int read_value(const struct field_spec *f, const char *s, size_t *i, size_t end, int *v,
		      char *errstr, size_t errlen)
{
	size_t start = *i;

	if (*i < end && is_digit(s[*i])) {
		int n = 0;
		while (*i < end && is_digit(s[*i])) {
			if (*i - start >= MAX_DIGITS) {
				ferr(errstr, errlen, f->name, "number too long", s + start, end - start);
				return -1;
			}
			n = n * 10 + (s[*i] - '0');
			(*i)++;
		}
		if (n < f->min || n > f->max) {
			char why[64];
			snprintf(why, sizeof(why), "value %d out of range %d-%d in", n, f->min,
				 f->max);
			ferr(errstr, errlen, f->name, why, s + start, end - start);
			return -1;
		}
		*v = n;
		return 0;
	}
	if (f->names && end - *i >= 3) {
		for (int k = 0; f->names[k]; k++) {
			const char *nm = f->names[k];
			if (lower(s[*i]) == nm[0] && lower(s[*i + 1]) == nm[1] &&
			    lower(s[*i + 2]) == nm[2] &&
			    (*i + 3 == end || s[*i + 3] == '-' || s[*i + 3] == '/')) {
				*v = f->min + k;
				*i += 3;
				return 0;
			}
		}
	}
	ferr(errstr, errlen, f->name,
	     f->names ? "expected a number or a name (jan..dec, sun..sat) in"
		      : "expected a number or '*' in",
	     s + start, end - start);
	return -1;
}

/* Parses one comma item s[0..len) into bits. */
static int parse_item(const struct field_spec *f, const char *s, size_t len, uint64_t *bits,
		      char *errstr, size_t errlen)
{
	size_t i = 0;
	int lo, hi, step = 1;

	if (s[0] == '*') {
		lo = f->min;
		hi = f->max;
		i = 1;
	} else {
		if (read_value(f, s, &i, len, &lo, errstr, errlen) < 0)
			return -1;
		hi = lo;
		if (i < len && s[i] == '-') {
			i++;
			if (read_value(f, s, &i, len, &hi, errstr, errlen) < 0)
				return -1;
			if (hi < lo) {
				ferr(errstr, errlen, f->name, "range goes backwards in", s, len);
				return -1;
			}
		} else if (i < len && s[i] == '/') {
			hi = f->max; /* "N/STEP": from N to the end */
		}
	}
	if (i < len && s[i] == '/') {
		size_t st = ++i;
		step = 0;
		while (i < len && is_digit(s[i]) && i - st < MAX_DIGITS)
			step = step * 10 + (s[i++] - '0');
		if (i == st || i < len) {
			ferr(errstr, errlen, f->name, "expected a number after '/' in", s, len);
			return -1;
		}
		if (step < 1 || step > f->max) {
			char why[64];
			snprintf(why, sizeof(why), "step %d out of range 1-%d in", step, f->max);
			ferr(errstr, errlen, f->name, why, s, len);
			return -1;
		}
	}
	if (i < len) {
		ferr(errstr, errlen, f->name, "unexpected text in", s, len);
		return -1;
	}
	for (int v = lo; v <= hi; v += step)
		*bits |= 1ULL << v;
	return 0;
}

/* Parses field number idx, the text s[0..len), into bits. */
static int parse_field(int idx, const char *s, size_t len, uint64_t *bits, char *errstr,
		       size_t errlen)
{
	const struct field_spec *f = &fields[idx];
	size_t start = 0;

	*bits = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != ',')
			continue;
		if (i == start) {
			ferr(errstr, errlen, f->name, "empty item in list", s, len);
			return -1;
		}
		if (parse_item(f, s + start, i - start, bits, errstr, errlen) < 0)
			return -1;
		start = i + 1;
	}
	return 0;
}

static enum sl_err parse_fields(const char *s, size_t len, struct sl_cron *out, char *errstr,
				size_t errlen)
{
	size_t at[MAX_FIELDS], flen[MAX_FIELDS];
	size_t n = 0, i = 0;
	uint64_t bits[MAX_FIELDS];

	while (i < len) {
		size_t start;
		while (i < len && is_blank(s[i]))
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && !is_blank(s[i]))
			i++;
		if (n == MAX_FIELDS) {
			n++;
			break;
		}
		at[n] = start;
		flen[n] = i - start;
		n++;
	}
	if (n != MAX_FIELDS) {
		snprintf(errstr, errlen,
			 "expected 5 fields (minute hour day-of-month month day-of-week), got %s%zu",
			 n > MAX_FIELDS ? "more than " : "", n > MAX_FIELDS ? (size_t)MAX_FIELDS : n);
		return SL_ERR_PARSE;
	}
	for (int k = 0; k < MAX_FIELDS; k++)
		if (parse_field(k, s + at[k], flen[k], &bits[k], errstr, errlen) < 0)
			return SL_ERR_PARSE;
	if (bits[4] & (1ULL << 7))
		bits[4] = (bits[4] | 1ULL) & ~(1ULL << 7);
	out->minute = bits[0];
	out->hour = (uint32_t)bits[1];
	out->dom = (uint32_t)bits[2];
	out->month = (uint16_t)bits[3];
	out->dow = (uint8_t)bits[4];
	out->dom_star = s[at[2]] == '*';
	out->dow_star = s[at[4]] == '*';
	return SL_OK;
}

enum sl_err sl_cron_parse(const char *expr, struct sl_cron *out, char *errstr, size_t errlen)
{
	char dummy[1];
	size_t len, start = 0;
	enum sl_err rc;

	if (!errstr || !errlen) {
		errstr = dummy;
		errlen = sizeof(dummy);
	}
	errstr[0] = '\0';
	if (!out)
		return SL_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (!expr) {
		snprintf(errstr, errlen, "no cron expression");
		return SL_ERR_PARSE;
	}
	len = strnlen(expr, SL_CRON_MAX_EXPR + 1);
	if (len > SL_CRON_MAX_EXPR) {
		snprintf(errstr, errlen, "cron expression longer than %d bytes", SL_CRON_MAX_EXPR);
		return SL_ERR_PARSE;
	}
	while (start < len && is_blank(expr[start]))
		start++;
	while (len > start && is_blank(expr[len - 1]))
		len--;
	if (start < len && expr[start] == '@') {
		for (size_t k = 0; k < sizeof(macros) / sizeof(macros[0]); k++) {
			size_t n = strlen(macros[k].name);
			if (len - start == n && !strncmp(expr + start, macros[k].name, n))
				return parse_fields(macros[k].expr, strlen(macros[k].expr), out,
						    errstr, errlen);
		}
		return ferr(errstr, errlen, NULL,
			    "unknown macro (known: @yearly, @annually, @monthly, @weekly, @daily, "
			    "@midnight, @hourly)",
			    expr + start, len - start);
	}
	rc = parse_fields(expr + start, len - start, out, errstr, errlen);
	if (rc != SL_OK)
		memset(out, 0, sizeof(*out));
	return rc;
}

/* ---- calendar (proleptic Gregorian, UTC) ---- */

/* Days since 1970-01-01 of y-m-d (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int days_in_month(int64_t y, int m)
{
	static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : dim[m - 1];
}

static int day_matches(const struct sl_cron *c, int64_t y, int m, int d)
{
	int dow = (int)((days_from_civil(y, m, d) + 4) % 7); /* 1970-01-01 was a Thursday */
	int dom_ok = (c->dom >> d) & 1, dow_ok = (c->dow >> dow) & 1;

	if (!c->dom_star && !c->dow_star)
		return dom_ok || dow_ok;
	return dom_ok && dow_ok;
}

enum sl_err sl_cron_next(const struct sl_cron *c, int64_t after_ms, int64_t *next_ms)
{
	int64_t minutes, days, y, limit;
	int m, d, h, mi;

	if (!c || !next_ms || !c->minute || !c->hour || !c->dom || !c->month || !c->dow ||
	    after_ms < SL_CRON_MIN_MS || after_ms > SL_CRON_MAX_MS)
		return SL_ERR_INVALID;
	minutes = after_ms / 60000 + 1;
	days = minutes / 1440;
	h = (int)(minutes % 1440 / 60);
	mi = (int)(minutes % 60);
	civil_from_days(days, &y, &m, &d);
	limit = y + SL_CRON_MAX_YEARS;
	/* Each pass either matches or moves to the start of the next month, day, hour or
	 * minute; a matching day always holds a matching hour and minute, so this ends after
	 * at most about 12 + 366 passes a year. */
	while (y <= limit) {
		if (!((c->month >> m) & 1)) {
			d = 1, h = 0, mi = 0;
			if (++m > 12)
				m = 1, y++;
			continue;
		}
		if (!day_matches(c, y, m, d)) {
			h = 0, mi = 0;
			if (++d > days_in_month(y, m)) {
				d = 1;
				if (++m > 12)
					m = 1, y++;
			}
			continue;
		}
		if (!((c->hour >> h) & 1)) {
			mi = 0;
			if (++h > 23) {
				h = 0;
				if (++d > days_in_month(y, m)) {
					d = 1;
					if (++m > 12)
						m = 1, y++;
				}
			}
			continue;
		}
		if (!((c->minute >> mi) & 1)) {
			if (++mi > 59) {
				mi = 0;
				if (++h > 23) {
					h = 0;
					if (++d > days_in_month(y, m)) {
						d = 1;
						if (++m > 12)
							m = 1, y++;
					}
				}
			}
			continue;
		}
		*next_ms = ((days_from_civil(y, m, d) * 24 + h) * 60 + mi) * 60000;
		return SL_OK;
	}
	return SL_ERR_NOT_FOUND;
}
