/* carry.c - a chain's next task run where its upstream ran, without a dispatch (ADR 31). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "worker.h"

Sluice__V1__TaskDispatch *worker_carry_take(struct worker *w, const Sluice__V1__TaskDispatch *d,
					    struct worker_outcome *out)
{
	Sluice__V1__TaskDispatch *next;
	const char *why = NULL;

	out->then_task[0] = '\0';
	if (!d->then.len || out->status != SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED ||
	    atomic_load(&w->draining) || atomic_load(&w->hard_stop))
		return NULL;
	if (!(next = sluice__v1__task_dispatch__unpack(NULL, d->then.len, d->then.data)))
		why = "cannot decode TaskDispatch";
	else if (!(why = worker_dispatch_check(next)) &&
		 (next->n_batch || strcmp(next->run_id, d->run_id)))
		why = "a batch, or of another run";
	else if (!why && !(worker_dispatch_is_inline(next) && next->no_lease))
		why = "not an inline built-in that needs no lease";
	if (why) {
		/* The planner dispatches it as usual (then_task stays empty). */
		SL_WARN("%s/%s[%d] attempt %u: carried task not run: %s", d->run_id, d->task,
			d->map_index, d->attempt, why);
		if (next)
			sluice__v1__task_dispatch__free_unpacked(next, NULL);
		return NULL;
	}
	snprintf(out->then_task, sizeof(out->then_task), "%s", next->task); /* checked: fits */
	return next;
}

void worker_carry_run(struct worker *w, Sluice__V1__TaskDispatch *next,
		      struct worker_result_batch *rb)
{
	while (next) {
		Sluice__V1__TaskDispatch *d = next;
		struct worker_outcome out;

		SL_DEBUG("carried: start %s/%s[%d] attempt %u (builtin %s)", d->run_id, d->task,
			 d->map_index, d->attempt, d->builtin);
		sl_metric_inc(w->m.started);
		sl_metric_inc(w->m.carried);
		worker_run_inline(d, &out);
		sl_metric_inc(out.status == SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED
				      ? w->m.succeeded
				      : w->m.failed);
		next = worker_carry_take(w, d, &out);
		/* In the same batch as its upstream's when it can be: the planner records the
		 * upstream's result (and with it this start) first. */
		if (worker_result_batch_add(w, rb, d, &out) != SL_OK)
			SL_WARN("%s/%s[%d] attempt %u: carried result not queued; the reaper "
				"re-dispatches it", d->run_id, d->task, d->map_index, d->attempt);
		worker_outcome_clear(&out);
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
	}
}
