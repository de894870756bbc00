/* reaper.c - recovery of lost work: re-dispatches instances whose dispatch or execution was
 * lost (attempt+1, the new fencing token) and starts ready nodes nobody started. Runs on
 * every planner replica; the pops are atomic Lua scripts, so replicas never double up.
 * Also the planner's fault-injection points for the fault suite (tests/faults). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "planner.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

void planner_fault_point(const char *name)
{
	static long hits;
	const char *at = getenv("SLUICE_FAULT_CRASH_AT");
	const char *after = getenv("SLUICE_FAULT_CRASH_AFTER");

	if (!at || strcmp(at, name))
		return;
	if (++hits < (after ? atol(after) : 1))
		return;
	fprintf(stderr, "sluice-planner: fault injection: crashing at %s\n", name);
	_exit(137);
}

/* Re-encodes a stored dispatch with its new attempt and produces it. */
static enum sl_err redispatch(struct planner *p, const struct sl_reaped *e)
{
	Sluice__V1__TaskDispatch *d = sluice__v1__task_dispatch__unpack(NULL, e->len, e->dispatch);
	char topic[256], key[512];
	const char *queue;
	uint8_t *buf = NULL;
	size_t len;
	enum sl_err rc = SL_ERR_NOMEM;

	if (!d) {
		SL_ERROR("run %s task %s[%d]: stored dispatch does not decode", e->run, e->task,
			 e->idx);
		return SL_ERR_DECODE;
	}
	d->attempt = e->attempt;
	d->dispatched_at_ms = sl_now_ms();
	len = sluice__v1__task_dispatch__get_packed_size(d);
	if (!(buf = malloc(len ? len : 1)))
		goto out;
	sluice__v1__task_dispatch__pack(d, buf);
	queue = d->queue && d->queue[0] ? d->queue : "default";
	if ((rc = planner_ensure_queue(p, queue)) != SL_OK)
		goto out;
	snprintf(topic, sizeof(topic), "%s%s", SL_TOPIC_TASKS_PREFIX, queue);
	snprintf(key, sizeof(key), "%s/%s/%d", e->run, e->task, e->idx);
	if ((rc = sl_kafka_produce(p->dispatcher, topic, key, strlen(key), buf, len, NULL)) != SL_OK)
		goto out;
	SL_WARN("run %s: %s[%d] re-dispatched as attempt %u (%s)", e->run, e->task, e->idx,
		e->attempt, e->reason);
	planner_event_task(p, e->run, d->flow, e->task, e->idx, e->attempt, "DISPATCHED",
			   e->reason);
out:
	free(buf);
	sluice__v1__task_dispatch__free_unpacked(d, NULL);
	return rc;
}

enum sl_err planner_reap(struct planner *p)
{
	struct sl_reap_opts o = {
		.settle_ms = p->cfg.lease_ttl_ms,
		.dispatch_timeout_ms = p->cfg.dispatch_timeout_ms,
		.lease_grace_ms = p->cfg.lease_grace_ms > 0 ? p->cfg.lease_grace_ms
							    : p->cfg.lease_ttl_ms,
		.max_lost = (int)p->cfg.reap_max_lost,
		.limit = 200,
	};
	struct sl_reaped *lost = NULL;
	struct sl_ready_node *ready = NULL;
	size_t nlost = 0, nready = 0;
	enum sl_err rc;

	/* A restarted planner gets its partitions only once the group has rebalanced (up to
	 * the session timeout); until then results are waiting in Kafka, and reaping their
	 * released leases would only run tasks again. Other replicas reap meanwhile. */
	if (!sl_kafka_consumer_assigned(p->consumer))
		return SL_OK;
	if (o.dispatch_timeout_ms < o.settle_ms)
		o.settle_ms = o.dispatch_timeout_ms;
	if (o.lease_grace_ms < o.settle_ms)
		o.settle_ms = o.lease_grace_ms;
	if ((rc = sl_state_reap_instances(p->state, sl_now_ms(), &o, &lost, &nlost)) != SL_OK)
		goto out;
	for (size_t i = 0; i < nlost; i++) {
		if (!strcmp(lost[i].reason, "lost_too_often")) {
			struct planner_run *run = planner_run_get(p, lost[i].run);
			const char *flow = run ? run->flow->name : "";
			redisReply *r;

			SL_WARN("run %s: %s[%d] failed: lost its worker too often", lost[i].run,
				lost[i].task, lost[i].idx);
			planner_event_task(p, lost[i].run, flow, lost[i].task, lost[i].idx,
					   lost[i].attempt, "FAILED", "lost its worker too often");
			/* the run ends when this was its last open node (trigger rules) */
			r = sl_state_command(p->state, "HGET sluice:{%s}:run state", lost[i].run);
			if (r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "RUNNING"))
				planner_event_run(p, lost[i].run, flow, r->str,
						  "a task lost its worker too often");
			if (r)
				freeReplyObject(r);
			continue;
		}
		/* On failure the instance stays DISPATCHED and is found again after the
		 * (doubled) dispatch timeout. */
		if (redispatch(p, &lost[i]) != SL_OK)
			rc = SL_ERR_KAFKA;
	}
	if (sl_state_reap_nodes(p->state, sl_now_ms(), o.settle_ms, 100, &ready, &nready) !=
	    SL_OK) {
		rc = SL_ERR_REDIS;
		goto out;
	}
	for (size_t i = 0; i < nready; i++) {
		struct planner_run *run = planner_run_get(p, ready[i].run);
		char *name = ready[i].task;

		if (!run)
			continue;
		SL_WARN("run %s: starting node %s (ready but never started, or half-written)",
			ready[i].run, name);
		if (planner_start_nodes(p, run, &name, 1) != SL_OK)
			rc = SL_ERR_REDIS;
	}
out:
	sl_reaped_free(lost, nlost);
	sl_ready_nodes_free(ready, nready);
	return rc;
}
