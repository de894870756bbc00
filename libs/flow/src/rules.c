/* rules.c - whether a task runs (trigger_rule, when:), where it runs (route:) and how long it
 * waits before a retry (retry_backoff:). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "flow_internal.h"

/* Evaluates the condition text and tells whether it is true. */
static enum sl_err eval_cond(const char *text, const struct sl_expand_ctx *ctx, int *res,
			     char *why, size_t whylen)
{
	struct sl_expr *e = sl_expr_parse(text, strlen(text), why, whylen);
	enum sl_err rc = SL_ERR_PARSE;
	json_t *v;

	if (!e)
		return rc;
	if ((v = sl_expr_eval(e, ctx, NULL, &rc, why, whylen))) {
		*res = sl_json_truthy(v);
		json_decref(v);
		rc = SL_OK;
	}
	sl_expr_free(e);
	return rc;
}

enum sl_err sl_flow_task_gate(const struct sl_flow *flow, size_t task_index,
			      const struct sl_expand_ctx *ctx, size_t up_failed,
			      size_t up_skipped, enum sl_gate *gate, const char **queue,
			      char *errstr, size_t errlen)
{
	const struct sl_flow_task *t;
	struct sl_expand_ctx c;
	char why[512];
	enum sl_err rc;
	int res = 1;

	errstr[0] = '\0';
	if (!flow || !ctx || task_index >= flow->ntasks) {
		snprintf(errstr, errlen, "no such task index %zu", task_index);
		return SL_ERR_INVALID;
	}
	t = &flow->tasks[task_index];
	*queue = t->queue ? t->queue : "default";
	if (t->trigger_rule == SL_TRIGGER_ALL_SUCCESS && up_failed) {
		*gate = SL_GATE_UPSTREAM_FAILED;
		snprintf(errstr, errlen, "%zu upstream task(s) failed", up_failed);
		return SL_OK;
	}
	if (t->trigger_rule == SL_TRIGGER_ALL_SUCCESS && up_skipped) {
		*gate = SL_GATE_SKIP;
		snprintf(errstr, errlen, "%zu upstream task(s) skipped", up_skipped);
		return SL_OK;
	}
	c = *ctx;
	c.flowdef = flow;
	if (!c.flow)
		c.flow = flow->name;
	if (t->when && (rc = eval_cond(t->when, &c, &res, why, sizeof(why))) != SL_OK) {
		snprintf(errstr, errlen, "task '%s' when: %s", t->name, why);
		return rc;
	}
	if (!res) {
		*gate = SL_GATE_SKIP;
		snprintf(errstr, errlen, "when: %.400s is false", t->when);
		return SL_OK;
	}
	for (size_t i = 0; i < t->nroute; i++) {
		if ((rc = eval_cond(t->route[i].when, &c, &res, why, sizeof(why))) != SL_OK) {
			snprintf(errstr, errlen, "task '%s' route[%zu] when: %s", t->name, i, why);
			return rc;
		}
		if (res) {
			*queue = t->route[i].queue;
			break;
		}
	}
	*gate = SL_GATE_RUN;
	return SL_OK;
}

long sl_flow_retry_delay_ms(const struct sl_flow_task *t, unsigned attempt, double u)
{
	double d = t->retry_delay_ms > 0 ? (double)t->retry_delay_ms : 0.0;
	double f = t->backoff_factor >= 1.0 ? t->backoff_factor : 1.0;
	double j = t->backoff_jitter > 0.0 ? (t->backoff_jitter < 1.0 ? t->backoff_jitter : 1.0)
					   : 0.0;

	if (attempt > 1)
		d *= pow(f, (double)(attempt - 1)); /* inf for huge attempts: the cap handles it */
	if (t->backoff_max_ms > 0 && d > (double)t->backoff_max_ms)
		d = (double)t->backoff_max_ms;
	if (!isfinite(d) || d > 1e15) /* a day-scale delay is the most anyone means */
		d = 1e15;
	if (u < 0.0)
		u = 0.0;
	if (u > 1.0)
		u = 1.0;
	d += d * j * (2.0 * u - 1.0);
	return d > 0.0 ? (long)llround(d) : 0;
}
