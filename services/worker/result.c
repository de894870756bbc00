/* result.c - encodes a TaskResult, produces it to sluice.tasks.results and awaits delivery. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/kafka.h"
#include "sluice/log.h"
#include "worker.h"

void worker_on_delivery(void *opaque, enum sl_err err, const char *reason, void *ctx)
{
	struct worker_slot *s = opaque;
	struct worker *w = ctx;

	if (!s) /* a dead letter: the producer logged a failure already */
		return;
	pthread_mutex_lock(&w->lock);
	s->delivery = err == SL_OK ? WORKER_DELIVERY_OK : WORKER_DELIVERY_FAILED;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

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
}

enum sl_err worker_result_publish(struct worker_slot *s, const Sluice__V1__TaskDispatch *d,
				  struct worker_outcome *out)
{
	struct worker *w = s->w;
	Sluice__V1__TaskResult r = SLUICE__V1__TASK_RESULT__INIT;
	enum worker_delivery state;
	uint8_t *buf = NULL;
	size_t len;
	enum sl_err err;

	fill(&r, w, d, out);
	len = sluice__v1__task_result__get_packed_size(&r);
	if (len > SL_KAFKA_MAX_MESSAGE) {
		/* The planner would dead-letter it: report the task as failed instead. */
		size_t olen = r.output.len;

		free(out->output);
		out->output = NULL;
		out->status = SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED;
		snprintf(out->error, sizeof(out->error),
			 "output of %zu bytes does not fit in a result (cap %d bytes); move big "
			 "data through files and output a reference",
			 olen, SL_KAFKA_MAX_MESSAGE);
		fill(&r, w, d, out);
		len = sluice__v1__task_result__get_packed_size(&r);
	}
	if (!(buf = malloc(len ? len : 1))) {
		SL_ERROR("out of memory encoding the result of %s/%s[%d]", d->run_id, d->task,
			 d->map_index);
		err = SL_ERR_NOMEM;
		goto out;
	}
	sluice__v1__task_result__pack(&r, buf);
	pthread_mutex_lock(&w->lock);
	s->delivery = WORKER_DELIVERY_PENDING;
	pthread_mutex_unlock(&w->lock);
	err = sl_kafka_produce(w->producer, SL_TOPIC_RESULTS, d->run_id, strlen(d->run_id), buf,
			       len, s);
	if (err != SL_OK)
		goto out;
	/* Any thread's poll may serve our report (rd_kafka_poll is thread-safe), hence the
	 * short poll; librdkafka reports every message within message.timeout.ms. */
	for (;;) {
		pthread_mutex_lock(&w->lock);
		state = s->delivery;
		pthread_mutex_unlock(&w->lock);
		if (state != WORKER_DELIVERY_PENDING)
			break;
		if (atomic_load(&w->hard_stop)) {
			err = SL_ERR_CANCELLED; /* the producer's final flush still sends it */
			goto out;
		}
		sl_kafka_producer_poll(w->producer, 10);
	}
	err = state == WORKER_DELIVERY_OK ? SL_OK : SL_ERR_KAFKA;
out:
	free(buf);
	return err;
}
