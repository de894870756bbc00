/* results.c - applies task results (fenced by attempt) and moves the run forward. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "planner.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

static const char *status_name(Sluice__V1__TaskStatus s)
{
	switch (s) {
	case SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED: return "SUCCEEDED";
	case SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED: return "FAILED";
	case SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT: return "TIMED_OUT";
	case SLUICE__V1__TASK_STATUS__TASK_STATUS_CANCELLED: return "CANCELLED";
	default: return NULL;
	}
}

/* Uniform in [0, 1) for retry jitter; seeded once per process so replicas differ. */
static double uniform(void)
{
	static unsigned short seed[3];
	static int seeded;

	if (!seeded) {
		uint64_t s = (uint64_t)sl_now_ms() ^ ((uint64_t)getpid() << 16);
		seed[0] = (unsigned short)s;
		seed[1] = (unsigned short)(s >> 16);
		seed[2] = (unsigned short)(s >> 32);
		seeded = 1;
	}
	return erand48(seed);
}

enum sl_err planner_on_result(struct planner *p, const rd_kafka_message_t *msg)
{
	Sluice__V1__TaskResult *res;
	struct planner_run *run;
	struct sl_transition tr = {0};
	struct sl_result_in in;
	const char *status;
	ssize_t ti;
	enum sl_err rc = SL_OK;

	if (sl_kafka_check_size(msg) != SL_OK)
		return sl_kafka_deadletter(p->producer, "planner", msg, "message over the size cap");
	if (!(res = sluice__v1__task_result__unpack(NULL, msg->len, msg->payload)))
		return sl_kafka_deadletter(p->producer, "planner", msg, "cannot decode TaskResult");
	status = status_name(res->status);
	if (!res->run_id[0] || !res->task[0] || !res->attempt || !status) {
		rc = sl_kafka_deadletter(p->producer, "planner", msg,
					 "TaskResult needs run_id, task, attempt and a status");
		goto out;
	}
	if (!(run = planner_run_get(p, res->run_id))) {
		redisReply *r = sl_state_command(p->state, "EXISTS sluice:{%s}:run", res->run_id);
		if (!r) {
			rc = SL_ERR_REDIS;
			goto out;
		}
		int exists = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
		freeReplyObject(r);
		if (exists)
			SL_WARN("result for run %s ignored: its flow cannot be loaded", res->run_id);
		else
			rc = sl_kafka_deadletter(p->producer, "planner", msg, "result for an unknown run");
		goto out;
	}
	if ((ti = sl_flow_task_index(run->flow, res->task)) < 0) {
		rc = sl_kafka_deadletter(p->producer, "planner", msg, "result for an unknown task");
		goto out;
	}
	memset(&in, 0, sizeof(in));
	in.run = res->run_id;
	in.task = res->task;
	in.idx = res->map_index;
	in.attempt = res->attempt;
	in.status = status;
	in.output = res->output.len ? (const char *)res->output.data : "null";
	in.output_len = res->output.len ? res->output.len : 4;
	in.error = res->error;
	in.exit_code = res->exit_code;
	in.worker = res->worker_id;
	in.started_ms = res->started_at_ms;
	in.finished_ms = res->finished_at_ms;
	in.now_ms = sl_now_ms();
	in.retry_delay_ms = sl_flow_retry_delay_ms(&run->flow->tasks[ti], res->attempt, uniform());
	if ((rc = sl_state_result_apply(p->state, &in, &tr)) != SL_OK)
		goto out;
	planner_fault_point("after_result_apply"); /* applied, ready nodes not started */
	if (!strcmp(tr.outcome, "stale")) {
		SL_INFO("run %s: stale result for %s[%d] attempt %u from %s ignored", res->run_id,
			res->task, res->map_index, res->attempt, res->worker_id);
		goto out;
	}
	planner_cache_store(p, run, res);
	planner_event_task(p, res->run_id, run->flow->name, res->task, res->map_index,
			   res->attempt, !strcmp(tr.outcome, "retry") ? "RETRY_WAIT" : status,
			   res->error);
	if (!strcmp(tr.outcome, "retry")) {
		SL_INFO("run %s: %s[%d] attempt %u %s (%s); retry in %ld ms", res->run_id, res->task,
			res->map_index, res->attempt, status, res->error, in.retry_delay_ms);
	} else if (!strcmp(tr.outcome, "node_done")) {
		/* A failed node does not stop the run: its all_success downstreams end
		 * UPSTREAM_FAILED, all_done ones run, and the run ends FAILED at the end. */
		if (!strcmp(tr.run_state, "SUCCEEDED")) {
			SL_INFO("run %s succeeded", res->run_id);
			planner_event_run(p, res->run_id, run->flow->name, "SUCCEEDED", NULL);
		} else if (!strcmp(tr.run_state, "FAILED")) {
			planner_run_failed_event(p, res->run_id, run->flow->name);
		}
		rc = planner_start_nodes(p, run, tr.ready, tr.nready);
	}
out:
	sl_transition_clear(&tr);
	sluice__v1__task_result__free_unpacked(res, NULL);
	return rc;
}
