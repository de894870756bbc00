/* result.c - encodes a TaskResult and queues it on sluice.tasks.results. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "worker.h"

static void fill(Sluice__V1__TaskResult *r, const struct worker *w,
		 const Sluice__V1__TaskDispatch *d, struct worker_outcome *out)
{
	static char null_json[] = "null";

	r->schema_version = 1;
	r->trace_id = d->trace_id;
	r->run_id = d->run_id;
	r->task = d->task;
	r->map_index = d->map_index;
	r->attempt = d->attempt;
	r->worker_id = w->cfg->id;
	r->status = out->status;
	r->exit_code = out->exit_code;
	r->output.data = (uint8_t *)(out->output ? out->output : null_json);
	r->output.len = strlen((char *)r->output.data);
	r->error = out->error;
	r->stderr_tail.data = (uint8_t *)out->stderr_tail;
	r->stderr_tail.len = out->stderr_tail ? out->stderr_len : 0;
	r->started_at_ms = out->started_ms;
	r->finished_at_ms = out->finished_ms;
	r->then_task = out->then_task; /* "" unless the worker carries the next task (ADR 31) */
}

/* Encodes out as the TaskResult of d into *buf: stack (cap bytes) when it fits, else a
 * malloc'd buffer (the caller frees it when *buf != stack). An output over the message cap
 * turns the result into a failure saying so (the planner would dead-letter it). */
static enum sl_err encode(struct worker *w, const Sluice__V1__TaskDispatch *d,
			  struct worker_outcome *out, uint8_t *stack, size_t cap, uint8_t **buf,
			  size_t *len)
{
	Sluice__V1__TaskResult r = SLUICE__V1__TASK_RESULT__INIT;

	fill(&r, w, d, out);
	*len = sluice__v1__task_result__get_packed_size(&r);
	if (*len > SL_KAFKA_MAX_MESSAGE) {
		size_t olen = r.output.len;

		free(out->output);
		out->output = NULL;
		out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED;
		snprintf(out->error, sizeof(out->error),
			 "output of %zu bytes does not fit in a result (cap %d bytes); move big "
			 "data through files and output a reference",
			 olen, SL_KAFKA_MAX_MESSAGE);
		fill(&r, w, d, out);
		*len = sluice__v1__task_result__get_packed_size(&r);
	}
	*buf = stack;
	if (*len > cap && !(*buf = malloc(*len ? *len : 1))) {
		SL_ERROR("out of memory encoding the result of %s/%s[%d]", d->run_id, d->task,
			 d->map_index);
		return SL_ERR_NOMEM;
	}
	sluice__v1__task_result__pack(&r, *buf);
	return SL_OK;
}

enum sl_err worker_result_send(struct worker *w, const Sluice__V1__TaskDispatch *d,
			       struct worker_outcome *out)
{
	uint8_t stack[4096], *buf = NULL;
	size_t len;
	enum sl_err err;

	/* Most results are small: no allocation for them (the producer copies the bytes). */
	if ((err = encode(w, d, out, stack, sizeof(stack), &buf, &len)) != SL_OK)
		goto out;
	/* Queued, not awaited: the planner's result_apply releases the lease once the result is
	 * recorded, and a result that never arrives lets the lease lapse, after which the
	 * reaper re-dispatches. Waiting for each delivery report capped a slot at one task per
	 * producer round trip. */
	err = sl_kafka_produce(w->producer, SL_TOPIC_RESULTS, d->run_id, strlen(d->run_id), buf,
			       len, NULL);
out:
	if (buf != stack)
		free(buf);
	return err;
}

enum sl_err worker_result_batch_flush(struct worker *w, struct worker_result_batch *b)
{
	Sluice__V1__TaskResult env = SLUICE__V1__TASK_RESULT__INIT;
	uint8_t *buf = NULL;
	size_t len;
	enum sl_err err = SL_OK;

	if (!b->n)
		return SL_OK;
	if (b->n == 1) {
		err = sl_kafka_produce(w->producer, SL_TOPIC_RESULTS, b->run, strlen(b->run),
				       b->el[0].data, b->el[0].len, NULL);
		goto out;
	}
	env.schema_version = 1;
	env.trace_id = b->run;
	env.run_id = b->run;
	env.worker_id = w->cfg->id;
	env.n_batch = b->n;
	env.batch = b->el;
	len = sluice__v1__task_result__get_packed_size(&env);
	if (!(buf = malloc(len))) {
		err = SL_ERR_NOMEM;
		goto out;
	}
	sluice__v1__task_result__pack(&env, buf);
	err = sl_kafka_produce(w->producer, SL_TOPIC_RESULTS, b->run, strlen(b->run), buf, len,
			       NULL);
out:
	if (err != SL_OK)
		SL_WARN("run %s: %zu results not queued (%s); their leases will lapse", b->run,
			b->n, sl_strerror(err));
	free(buf);
	for (size_t i = 0; i < b->n; i++)
		free(b->el[i].data);
	b->n = b->bytes = 0;
	return err;
}

enum sl_err worker_result_batch_add(struct worker *w, struct worker_result_batch *b,
				    const Sluice__V1__TaskDispatch *d, struct worker_outcome *out)
{
	uint8_t *buf;
	size_t len;
	enum sl_err err, sent = SL_OK;

	if ((err = encode(w, d, out, NULL, 0, &buf, &len)) != SL_OK)
		return err;
	if (b->n && (b->n == SL_BATCH_MAX || b->bytes + len > SL_BATCH_BYTES ||
		     strcmp(b->run, d->run_id)))
		sent = worker_result_batch_flush(w, b);
	if (!b->n)
		snprintf(b->run, sizeof(b->run), "%s", d->run_id); /* valid_run_id: fits */
	b->el[b->n].data = buf;
	b->el[b->n++].len = len;
	b->bytes += len;
	return sent;
}

enum sl_err worker_result_publish(struct worker_slot *s, const Sluice__V1__TaskDispatch *d,
				  struct worker_outcome *out, Sluice__V1__TaskDispatch *next)
{
	struct worker *w = s->w;
	struct worker_result_batch b;
	enum sl_err err;

	b.n = b.bytes = 0;
	if (!next) {
		err = worker_result_send(w, d, out);
	} else if ((err = worker_result_batch_add(w, &b, d, out)) == SL_OK) {
		/* One message, d's result first: the planner records it, and with it the carried
		 * task's start, before the carried task's own result (ADR 31). */
		worker_carry_run(w, next, &b);
		err = worker_result_batch_flush(w, &b);
	} else {
		sluice__v1__task_dispatch__free_unpacked(next, NULL); /* not run: d's result is lost */
	}
	if (err == SL_OK) {
		pthread_mutex_lock(&w->lock);
		s->result_out = 1;
		pthread_mutex_unlock(&w->lock);
	}
	return err;
}
