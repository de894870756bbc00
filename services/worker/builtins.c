/* builtins.c - tasks that run inside the worker without a process: noop, echo, sum, sleep. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/util.h"
#include "worker.h"

struct builtin_ctx {
	const char *input; /* JSON text, not NUL-terminated */
	size_t len;
	int (*should_stop)(void *);
	void *ud;
	int64_t deadline_ms;
	struct worker_outcome *out;
};

__attribute__((format(printf, 2, 3))) static void fail(struct builtin_ctx *c, const char *fmt,
							...)
{
	va_list ap;

	c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED;
	va_start(ap, fmt);
	vsnprintf(c->out->error, sizeof(c->out->error), fmt, ap);
	va_end(ap);
}

static void succeed(struct builtin_ctx *c, char *json)
{
	if (!json) {
		fail(c, "out of memory");
		return;
	}
	c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	c->out->output = json;
}

/* Parses the input; an empty input is JSON null. Returns NULL (and fails c) when it is not
 * JSON. Caller frees with json_decref(). */
static json_t *input_json(struct builtin_ctx *c, const char *name)
{
	json_error_t jerr;
	json_t *v;

	if (c->len == 0)
		return json_null();
	if (!(v = json_loadb(c->input, c->len, JSON_DECODE_ANY, &jerr))) {
		fail(c, "%s: input is not JSON: %s", name, jerr.text);
	}
	return v;
}

static void builtin_noop(struct builtin_ctx *c)
{
	succeed(c, strdup("null"));
}

/* Output = input: JSON as given (compacted); text that is not JSON becomes a JSON string,
 * the same rule as a command's stdout. */
static void builtin_echo(struct builtin_ctx *c)
{
	succeed(c, sl_output_to_json(c->input ? c->input : "", c->len));
}

/* Sum of a JSON array of numbers: an integer while every element is one (and the sum fits
 * 64 bits), else a float. */
static void builtin_sum(struct builtin_ctx *c)
{
	json_t *v = input_json(c, "sum"), *e;
	long long isum = 0;
	double fsum = 0;
	int all_int = 1;
	size_t i;

	if (!v)
		return;
	if (!json_is_array(v)) {
		fail(c, "sum: input must be a JSON array of numbers, got %s",
		     json_is_null(v) ? "nothing" : "another JSON type");
		goto out;
	}
	json_array_foreach(v, i, e) {
		if (json_is_integer(e)) {
			long long n = (long long)json_integer_value(e);
			if (all_int && __builtin_add_overflow(isum, n, &isum))
				all_int = 0;
			fsum += (double)n;
		} else if (json_is_real(e)) {
			all_int = 0;
			fsum += json_real_value(e);
		} else {
			fail(c, "sum: element %zu is not a number", i);
			goto out;
		}
	}
	if (all_int) {
		char buf[32];
		snprintf(buf, sizeof(buf), "%lld", isum);
		succeed(c, strdup(buf));
	} else if (!isfinite(fsum)) {
		fail(c, "sum: result is not a finite number");
	} else {
		json_t *r = json_real(fsum);
		succeed(c, r ? json_dumps(r, JSON_ENCODE_ANY | JSON_COMPACT) : NULL);
		json_decref(r);
	}
out:
	json_decref(v);
}

/* Sleeps input seconds (a number), in short steps so a stop request or the deadline ends
 * it within ~50 ms. */
static void builtin_sleep(struct builtin_ctx *c)
{
	json_t *v = input_json(c, "sleep");
	double secs;
	int64_t until;

	if (!v)
		return;
	if (!json_is_number(v) || (secs = json_number_value(v)) < 0 || !isfinite(secs) ||
	    secs > 366.0 * 86400) {
		fail(c, "sleep: input must be a number of seconds (0 to one year)");
		goto out;
	}
	until = sl_mono_ms() + (int64_t)(secs * 1000.0 + 0.5);
	for (;;) {
		int64_t now = sl_mono_ms(), step = until - now;

		if (c->should_stop && c->should_stop(c->ud)) {
			c->out->stopped = 1;
			c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_CANCELLED;
			snprintf(c->out->error, sizeof(c->out->error), "stopped");
			goto out;
		}
		if (c->deadline_ms && now >= c->deadline_ms && now < until) {
			c->out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT;
			snprintf(c->out->error, sizeof(c->out->error), "timed out");
			goto out;
		}
		if (step <= 0)
			break;
		if (step > 50)
			step = 50;
		if (c->deadline_ms && c->deadline_ms - now < step)
			step = c->deadline_ms - now;
		usleep((useconds_t)(step > 0 ? step : 1) * 1000);
	}
	succeed(c, strdup("null"));
out:
	json_decref(v);
}

static const struct {
	const char *name;
	void (*fn)(struct builtin_ctx *c);
} builtins[] = {
	{"noop", builtin_noop},
	{"echo", builtin_echo},
	{"sum", builtin_sum},
	{"sleep", builtin_sleep},
};

void worker_builtin_run(const char *name, const void *input, size_t len,
			int (*should_stop)(void *), void *ud, int64_t deadline_ms,
			struct worker_outcome *out)
{
	struct builtin_ctx c = {.input = input, .len = input ? len : 0, .should_stop = should_stop,
				.ud = ud, .deadline_ms = deadline_ms, .out = out};

	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
		if (!strcmp(builtins[i].name, name)) {
			builtins[i].fn(&c);
			return;
		}
	}
	fail(&c, "unknown builtin: %.200s", name);
}
