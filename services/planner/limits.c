/* limits.c - concurrency limits per tag: records which tags a task holds (workers take the
 * slots with the lease) and re-dispatches instances whose tag had no free slot once one frees.
 *
 * A worker that finds a tag full hands the dispatch back: lease_acquire.lua puts the instance
 * in the tag's FIFO waiting list and the worker drops the message. Each timer tick the planner
 * reserves freed slots for the oldest waiters and re-dispatches them, so nothing spins: a
 * waiting instance costs nothing until a slot frees, and a woken one finds its slot kept. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "planner.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

/* How long a woken dispatch may take to reach a worker before its reserved slot lapses
 * (then lease_acquire sends it back to the waiting list). */
#define LIMITS_RESERVE_MS 60000L

enum sl_err planner_limits_prepare(struct planner *p, struct planner_run *run,
				   const struct sl_flow_task *t)
{
	char spec[1024];
	size_t off = 0;
	int n = 0;

	spec[0] = '\0';
	for (size_t g = 0; g < t->ntags && n < SL_STATE_MAX_TAGS; g++) {
		for (size_t l = 0; l < run->flow->nlimits; l++) {
			const struct sl_flow_limit *lim = &run->flow->limits[l];
			int w;

			if (strcmp(lim->tag, t->tags[g]))
				continue;
			w = snprintf(spec + off, sizeof(spec) - off, "%s%s=%d", n ? "," : "",
				     lim->tag, lim->limit);
			if (w < 0 || (size_t)w >= sizeof(spec) - off)
				return SL_ERR_TOO_BIG; /* cannot happen: tags are short */
			off += (size_t)w;
			n++;
		}
	}
	if (!n)
		return SL_OK; /* no tag of this task has a limit */
	return sl_state_limits_set(p->state, run->id, t->name, spec);
}

/* Splits "<R>|<task>|<idx>|<attempt>" in place. */
static int split_holder(char *h, char **run, char **task, int *idx, unsigned *attempt)
{
	char *b1 = strchr(h, '|'), *b2, *b3;

	if (!b1 || !(b2 = strchr(b1 + 1, '|')) || !(b3 = strchr(b2 + 1, '|')))
		return -1;
	*b1 = *b2 = *b3 = '\0';
	*run = h;
	*task = b1 + 1;
	*idx = atoi(b2 + 1);
	*attempt = (unsigned)strtoul(b3 + 1, NULL, 10);
	return 0;
}

/* Re-sends one woken instance if it still waits (run RUNNING, same attempt, DISPATCHED).
 * Returns SL_OK when sent or not needed, else the error (the reservation is kept: it lapses). */
static enum sl_err redispatch(struct planner *p, const char *holder)
{
	char copy[512], topic[256], key[1100];
	char *run, *task;
	int idx;
	unsigned attempt;
	redisReply *r = NULL;
	Sluice__V1__TaskDispatch *d = NULL;
	uint8_t *buf = NULL;
	void *stored = NULL;
	size_t len, slen;
	enum sl_err rc = SL_OK;

	sl_strlcpy(copy, holder, sizeof(copy));
	if (split_holder(copy, &run, &task, &idx, &attempt) < 0)
		goto drop;
	rc = sl_state_ti_dispatch(p->state, run, task, idx, "DISPATCHED", attempt, &stored,
				  &slen);
	if (rc == SL_ERR_STALE) {
		rc = SL_OK;
		goto drop;
	}
	if (rc != SL_OK)
		return rc;
	if (!(d = sluice__v1__task_dispatch__unpack(NULL, slen, stored))) {
		SL_ERROR("run %s task %s: stored dispatch does not decode", run, task);
		goto drop;
	}
	d->attempt = attempt;
	d->dispatched_at_ms = sl_now_ms();
	len = sluice__v1__task_dispatch__get_packed_size(d);
	if (!(buf = malloc(len ? len : 1))) {
		rc = SL_ERR_NOMEM;
		goto out;
	}
	sluice__v1__task_dispatch__pack(d, buf);
	if ((rc = planner_ensure_queue(p, d->queue[0] ? d->queue : "default")) != SL_OK)
		goto out;
	/* the priority band of the queue, as every dispatch path picks it */
	snprintf(topic, sizeof(topic), "%s%s%s", SL_TOPIC_TASKS_PREFIX,
		 d->queue[0] ? d->queue : "default",
		 d->priority > 0 ? ".high" : d->priority < 0 ? ".low" : "");
	snprintf(key, sizeof(key), "%s/%s/%d", run, task, idx);
	/* The reaper counts a dispatch as lost from queued_ms on. */
	r = sl_state_command(p->state, "HSET sluice:{%s}:ti:%s:%d queued_ms %lld", run, task,
			     idx, (long long)sl_now_ms());
	if ((rc = sl_kafka_produce(p->dispatcher, topic, key, strlen(key), buf, len, NULL)) != SL_OK)
		goto out;
	SL_DEBUG("run %s: %s[%d] attempt %u got a concurrency slot; re-dispatched", run, task,
		 idx, attempt);
	goto out;
drop:
	if (sl_state_sem_unreserve(p->state, holder) != SL_OK)
		rc = SL_ERR_REDIS;
out:
	if (d)
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
	free(stored);
	free(buf);
	if (r)
		freeReplyObject(r);
	return rc;
}

enum sl_err planner_limits_wake(struct planner *p)
{
	char **woken = NULL;
	size_t n = 0;
	enum sl_err rc, e;

	if ((rc = sl_state_sem_wake(p->state, LIMITS_RESERVE_MS, &woken, &n)) != SL_OK)
		return rc;
	for (size_t i = 0; i < n; i++)
		if ((e = redispatch(p, woken[i])) != SL_OK) {
			SL_WARN("cannot re-dispatch %s after a concurrency slot freed: %s (the "
				"reaper sends it again)", woken[i], sl_strerror(e));
			rc = e;
		}
	sl_state_strv_free(woken, n);
	return rc;
}
