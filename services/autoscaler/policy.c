/* policy.c - the pure scaling decision of one pool (no I/O, no clock: everything comes in). */
#include "policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Writes a duration the way the pools file spells it: "15s", "500ms", "2m". */
static void fmt_dur(int64_t ms, char *buf, size_t cap)
{
	if (ms % 60000 == 0 && ms >= 60000)
		snprintf(buf, cap, "%lldm", (long long)(ms / 60000));
	else if (ms % 1000 == 0)
		snprintf(buf, cap, "%llds", (long long)(ms / 1000));
	else
		snprintf(buf, cap, "%lldms", (long long)ms);
}

/* Appends to reason, keeping it NUL-terminated; a cut-off text ends in "...". */
static void append(char *reason, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void append(char *reason, const char *fmt, ...)
{
	size_t len = strlen(reason);
	va_list ap;
	int n;

	if (len + 1 >= AUTOSCALER_REASON_MAX)
		return;
	va_start(ap, fmt);
	n = vsnprintf(reason + len, AUTOSCALER_REASON_MAX - len, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n >= AUTOSCALER_REASON_MAX - len)
		memcpy(reason + AUTOSCALER_REASON_MAX - 4, "...", 4);
}

static int imin(int a, int b)
{
	return a < b ? a : b;
}

static int imax(int a, int b)
{
	return a > b ? a : b;
}

/* Picks up to n idle registered workers, newest first, into out->drain. A busy worker is
 * never chosen, whatever the numbers say: its tasks would be lost or run twice. */
static void choose_drain(const struct autoscaler_policy_input *in, int n,
			 struct autoscaler_decision *out)
{
	unsigned char taken[AUTOSCALER_POLICY_MAX_WORKERS] = {0};
	size_t limit = in->nworkers < sizeof(taken) ? in->nworkers : sizeof(taken);

	while (n > 0 && out->ndrain < AUTOSCALER_POOL_MAX_SIZE) {
		size_t best = limit;
		for (size_t i = 0; i < limit; i++) {
			const struct autoscaler_worker *w = &in->workers[i];
			if (taken[i] || w->state != AUTOSCALER_WORKER_ACTIVE || w->busy != 0)
				continue;
			if (best == limit || w->started_ms > in->workers[best].started_ms)
				best = i;
		}
		if (best == limit)
			break;
		taken[best] = 1;
		out->drain[out->ndrain++] = best;
		n--;
	}
}

static void append_drained(const struct autoscaler_policy_input *in,
			   struct autoscaler_decision *out)
{
	for (size_t i = 0; i < out->ndrain; i++)
		append(out->reason, "%s%s", i ? ", " : "", in->workers[out->drain[i]].id);
}

static void decide_up(const struct autoscaler_policy_input *in, int64_t need, const char *load,
		      struct autoscaler_decision *out)
{
	const struct autoscaler_pool_config *pc = in->pool;
	struct autoscaler_history *h = &out->history;
	int want = out->desired - out->current;
	int room = imax(0, pc->max - (out->current + out->draining));
	int n = imin(imin(want, pc->scale_up_step), room);
	char dur[32];

	if (need < out->desired) /* demand alone would not start them */
		snprintf(out->reason, AUTOSCALER_REASON_MAX, "%d workers below min %d",
			 out->current, pc->min);
	else
		snprintf(out->reason, AUTOSCALER_REASON_MAX, "%s", load);
	/* The cooldown paces growth; it never keeps work waiting on a pool with no worker. */
	if (out->current > 0 && h->last_scale_up_ms &&
	    in->now_ms - h->last_scale_up_ms < pc->scale_up_cooldown_ms) {
		fmt_dur(pc->scale_up_cooldown_ms, dur, sizeof(dur));
		append(out->reason, ": wait, cooldown %s since the last start", dur);
		return;
	}
	if (h->hold_starts_until && in->now_ms < h->hold_starts_until) {
		append(out->reason, ": wait, starts held after a failed start");
		return;
	}
	if (n <= 0) {
		append(out->reason, ": wait, %d draining workers still running (max %d)",
		       out->draining, pc->max);
		return;
	}
	out->start = n;
	h->last_scale_up_ms = in->now_ms;
	append(out->reason, ": +%d worker%s", n, n == 1 ? "" : "s");
	if (n < want)
		append(out->reason, " (%s %d)", n == pc->scale_up_step ? "step" : "max",
		       n == pc->scale_up_step ? pc->scale_up_step : pc->max);
}

static void decide_down(const struct autoscaler_policy_input *in, const char *load,
			struct autoscaler_decision *out)
{
	const struct autoscaler_pool_config *pc = in->pool;
	struct autoscaler_history *h = &out->history;
	int idle = h->idle_since_ms && in->now_ms - h->idle_since_ms >= pc->idle_to_zero_ms;
	int windowed = in->now_ms - h->below_since_ms >= pc->scale_down_window_ms;
	int target;
	char dur[32];

	if (idle) {
		target = pc->min;
		fmt_dur(pc->idle_to_zero_ms, dur, sizeof(dur));
		snprintf(out->reason, AUTOSCALER_REASON_MAX, "idle %s", dur);
	} else if (windowed) {
		/* The window only trims to the busiest moment it saw, and never empties the
		 * pool: going to zero is idle_to_zero's call. */
		target = imax(h->below_peak, imax(pc->min, 1));
		fmt_dur(pc->scale_down_window_ms, dur, sizeof(dur));
		snprintf(out->reason, AUTOSCALER_REASON_MAX, "%s for %s", load, dur);
	} else {
		int64_t left = pc->scale_down_window_ms - (in->now_ms - h->below_since_ms);
		fmt_dur(left < 1000 ? left : (left + 999) / 1000 * 1000, dur, sizeof(dur));
		snprintf(out->reason, AUTOSCALER_REASON_MAX, "%s: scale down in %s", load, dur);
		return;
	}
	if (target >= out->current) {
		fmt_dur(pc->idle_to_zero_ms, dur, sizeof(dur));
		append(out->reason, ": keep %d until idle for %s", out->current, dur);
		return;
	}
	choose_drain(in, out->current - target, out);
	if (out->ndrain == 0) {
		append(out->reason, ": keep %d, no idle registered worker to drain", out->current);
		return;
	}
	append(out->reason, ": drain ");
	append_drained(in, out);
	if ((int)out->ndrain < out->current - target)
		append(out->reason, " (%d busy or starting kept)",
		       out->current - target - (int)out->ndrain);
	/* The next step down needs a full window of its own. */
	h->below_since_ms = in->now_ms;
	h->below_peak = out->desired;
}

void autoscaler_policy_decide(const struct autoscaler_policy_input *in,
			      struct autoscaler_decision *out)
{
	const struct autoscaler_pool_config *pc = in->pool;
	struct autoscaler_history *h;
	int64_t demand, need;
	char load[160];

	memset(out, 0, sizeof(*out));
	out->history = in->history;
	h = &out->history;
	out->lag = in->lag > 0 ? in->lag : 0;
	for (size_t i = 0; i < in->nworkers; i++) {
		const struct autoscaler_worker *w = &in->workers[i];
		if (w->busy > 0 && w->state != AUTOSCALER_WORKER_STARTING)
			out->busy += w->busy;
		if (w->state == AUTOSCALER_WORKER_DRAINING)
			out->draining++;
		else
			out->current++;
		if (w->state == AUTOSCALER_WORKER_STARTING)
			out->starting++;
	}
	demand = out->lag + out->busy;
	need = (demand + pc->target_per_worker - 1) / pc->target_per_worker;
	out->desired = need > pc->max ? pc->max : need < pc->min ? pc->min : (int)need;

	if (demand == 0) {
		if (!h->idle_since_ms)
			h->idle_since_ms = in->now_ms;
	} else {
		h->idle_since_ms = 0;
	}
	if (out->desired < out->current) {
		if (!h->below_since_ms) {
			h->below_since_ms = in->now_ms;
			h->below_peak = out->desired;
		} else if (out->desired > h->below_peak) {
			h->below_peak = out->desired;
		}
	} else {
		h->below_since_ms = 0;
		h->below_peak = 0;
	}

	snprintf(load, sizeof(load), "lag %lld + busy %lld %s capacity %lld", (long long)out->lag,
		 (long long)out->busy,
		 demand > (int64_t)out->current * pc->target_per_worker ? ">"
		 : out->desired < out->current			       ? "<"
								       : "<=",
		 (long long)out->current * pc->target_per_worker);
	if (out->desired > out->current)
		decide_up(in, need, load, out);
	else if (out->desired < out->current)
		decide_down(in, load, out);
	else
		snprintf(out->reason, AUTOSCALER_REASON_MAX, "%s: keep %d", load, out->current);
}
