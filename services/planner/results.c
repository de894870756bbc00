/* results.c - applies task results (fenced by attempt) and moves the run forward. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "planner.h"
#include "sluice/kafka.h"
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

/* The cached run of run_id without loading it (a load may evict a run that a pending batch
 * points to); NULL on a miss. */
static struct planner_run *run_cached(struct planner *p, const char *run_id)
{
	for (size_t i = 0; i < PLANNER_RUN_CACHE; i++) {
		if (p->cache[i].flow && !strcmp(p->cache[i].id, run_id)) {
			p->cache[i].used = ++p->clock;
			return &p->cache[i];
		}
	}
	return NULL;
}

enum result_decoded { DECODED, DECODE_BAD, DECODE_NO_RUN };

/* Checks the TaskResult res (owned from now on; NULL when it did not decode) of msg into r
 * (zeroed first) and fills r->in. DECODE_BAD: *why says why it is dead-lettered;
 * DECODE_NO_RUN: its run is not in the
 * cache (load == 0) or cannot be loaded (load == 1). Whatever the answer, clear r with
 * planner_result_clear(). */
static enum result_decoded result_decode(struct planner *p, const rd_kafka_message_t *msg,
					 Sluice__V1__TaskResult *res, struct planner_result *r,
					 int load, const char **why)
{
	ssize_t ti;

	memset(r, 0, sizeof(*r));
	r->msg = msg;
	r->last = 1;
	if (!(r->res = res)) {
		*why = "cannot decode TaskResult";
		return DECODE_BAD;
	}
	if (res->n_batch) {
		*why = "nested batch";
		return DECODE_BAD;
	}
	r->status = status_name(res->status);
	if (!res->run_id[0] || !res->task[0] || !res->attempt || !r->status) {
		*why = "TaskResult needs run_id, task, attempt and a status";
		return DECODE_BAD;
	}
	r->run = load ? planner_run_get(p, res->run_id) : run_cached(p, res->run_id);
	if (!r->run)
		return DECODE_NO_RUN;
	if ((ti = sl_flow_task_index(r->run->flow, res->task)) < 0) {
		*why = "result for an unknown task";
		return DECODE_BAD;
	}
	r->task_index = (size_t)ti;
	r->in.run = res->run_id;
	r->in.task = res->task;
	r->in.idx = res->map_index;
	r->in.attempt = res->attempt;
	r->in.status = r->status;
	r->in.output = res->output.len ? (const char *)res->output.data : "null";
	r->in.output_len = res->output.len ? res->output.len : 4;
	r->in.error = res->error;
	r->in.exit_code = res->exit_code;
	r->in.worker = res->worker_id;
	r->in.started_ms = res->started_at_ms;
	r->in.finished_ms = res->finished_at_ms;
	r->in.now_ms = sl_now_ms();
	r->in.retry_delay_ms =
		sl_flow_retry_delay_ms(&r->run->flow->tasks[ti], res->attempt, uniform());
	r->err = SL_ERR_REDIS; /* not applied yet */
	return DECODED;
}

/* Decodes msg into r[0..*k): one result, or each element of a batched TaskResult (ADR 20),
 * which must all be of its run. The first answer that is not DECODED is the message's (r
 * then cleared but for r[0], whose res says which run, and why[0..whylen) says what is
 * wrong); the first element loads the run when load is 1, the others find it cached. */
static enum result_decoded message_decode(struct planner *p, const rd_kafka_message_t *msg,
					  struct planner_result *r, size_t *k, int load,
					  char *why, size_t whylen)
{
	Sluice__V1__TaskResult *env;
	enum result_decoded rc = DECODED;
	const char *bad = NULL;

	*k = 0;
	memset(r, 0, sizeof(*r));
	if (sl_kafka_check_size(msg) != SL_OK) {
		snprintf(why, whylen, "message over the size cap");
		return DECODE_BAD;
	}
	env = sluice__v1__task_result__unpack(NULL, msg->len, msg->payload);
	if (!env || !env->n_batch) {
		*k = 1;
		rc = result_decode(p, msg, env, r, load, &bad);
		if (bad)
			snprintf(why, whylen, "%s", bad);
		return rc;
	}
	if (env->n_batch > SL_BATCH_MAX || !env->run_id[0]) {
		snprintf(why, whylen, "%s",
			 env->run_id[0] ? "batch of more results than SL_BATCH_MAX"
					: "batched TaskResult needs run_id");
		rc = DECODE_BAD;
		goto out;
	}
	for (size_t i = 0; i < env->n_batch && rc == DECODED; i++) {
		Sluice__V1__TaskResult *el = sluice__v1__task_result__unpack(
			NULL, env->batch[i].len, env->batch[i].data);

		rc = result_decode(p, msg, el, &r[i], i == 0 ? load : 0, &bad);
		r[i].last = i + 1 == env->n_batch;
		*k = i + 1;
		if (rc == DECODED && strcmp(r[i].res->run_id, env->run_id)) {
			bad = "of another run";
			rc = DECODE_BAD;
		}
		if (rc == DECODE_BAD)
			snprintf(why, whylen, "batch element %zu: %s", i, bad);
	}
	if (rc != DECODED) {
		/* r[0] keeps a res naming the run (DECODE_NO_RUN reads it) */
		for (size_t i = 1; i < *k; i++)
			planner_result_clear(&r[i]);
		*k = 1;
	}
out:
	sluice__v1__task_result__free_unpacked(env, NULL);
	return rc;
}

size_t planner_result_prepare(struct planner *p, const rd_kafka_message_t *msg,
			      struct planner_result *r)
{
	char why[128];
	size_t k;

	if (message_decode(p, msg, r, &k, 0, why, sizeof(why)) == DECODED)
		return k;
	for (size_t i = 0; i < k; i++)
		planner_result_clear(&r[i]);
	return 0;
}

void planner_result_clear(struct planner_result *r)
{
	planner_spec_free(r->spec);
	sl_transition_clear(&r->tr);
	if (r->res)
		sluice__v1__task_result__free_unpacked(r->res, NULL);
	memset(r, 0, sizeof(*r));
}

/* Results applied per pipelined call at most (the planner's batches are smaller anyway). */
#define APPLY_CHUNK 512

enum sl_err planner_results_apply(struct planner *p, struct planner_result *r, size_t n)
{
	struct sl_result_in in[APPLY_CHUNK];
	struct sl_transition tr[APPLY_CHUNK], str[APPLY_CHUNK];
	struct sl_node_start_in starts[APPLY_CHUNK];
	enum sl_err errs[APPLY_CHUNK], serrs[APPLY_CHUNK], rc = SL_OK;
	size_t map[APPLY_CHUNK], smap[APPLY_CHUNK], after[APPLY_CHUNK];
	size_t i = 0;

	while (i < n) {
		size_t k = 0, ns = 0;

		for (; i < n && k < APPLY_CHUNK; i++) {
			if (r[i].applied)
				continue;
			/* The next node of a chain goes in the same round trip (ADR 30), right
			 * after this result: a carried one's own result may follow (ADR 31). */
			if (!r[i].spec_tried) {
				r[i].spec_tried = 1;
				r[i].spec = planner_spec_new(p, &r[i]);
			}
			if (r[i].spec && planner_spec_to_send(r[i].spec, &starts[ns])) {
				after[ns] = k;
				smap[ns++] = i;
			}
			in[k] = r[i].in;
			map[k++] = i;
		}
		if (!k)
			break;
		sl_state_result_apply_starting(p->state, in, k, tr, errs, starts, after, ns, str,
					       serrs);
		for (size_t j = 0; j < k; j++) {
			struct planner_result *x = &r[map[j]];

			x->err = errs[j];
			if (errs[j] != SL_OK) {
				sl_transition_clear(&tr[j]);
				if (rc == SL_OK)
					rc = errs[j];
				continue;
			}
			x->tr = tr[j];
			x->applied = 1;
		}
		/* A start without an answer is sent again with its result's next apply, or, its
		 * result applied, left to the usual start of the nodes it made ready. */
		for (size_t j = 0; j < ns; j++) {
			if (serrs[j] == SL_OK)
				planner_spec_answered(r[smap[j]].spec, &str[j]);
			sl_transition_clear(&str[j]);
		}
	}
	return rc;
}

/* The node event of a node that ended with r's result: its state and counts (a node event
 * has map index -1 and attempt 0; see docs/operations.md, "Run events"). */
static void node_ended_event(struct planner *p, const struct planner_result *r)
{
	redisReply *h;
	char msg[128];

	if (!r->run->flow->tasks[r->task_index].nmap) {
		/* One instance: its result is the node's (no read on a chain's every hop). */
		int ok = !strcmp(r->status, "SUCCEEDED");
		planner_event_task(p, r->res->run_id, r->run->flow->name, r->res->task, -1, 0,
				   ok ? "SUCCEEDED" : "FAILED",
				   ok ? "1 instances: 1 succeeded, 0 failed"
				      : "1 instances: 0 succeeded, 1 failed");
		return;
	}
	h = sl_state_command(p->state, "HMGET sluice:{%s}:node:%s state total done failed",
			     r->res->run_id, r->res->task);
	if (h && h->type == REDIS_REPLY_ARRAY && h->elements == 4 &&
	    h->element[0]->type == REDIS_REPLY_STRING) {
		const char *f[3];
		for (int i = 0; i < 3; i++)
			f[i] = h->element[i + 1]->type == REDIS_REPLY_STRING ? h->element[i + 1]->str
									     : "0";
		snprintf(msg, sizeof(msg), "%s instances: %s succeeded, %s failed", f[0], f[1], f[2]);
		planner_event_task(p, r->res->run_id, r->run->flow->name, r->res->task, -1, 0,
				   h->element[0]->str, msg);
	}
	if (h)
		freeReplyObject(h);
}

/* Starts the nodes r's result made ready, but the one started with it (ADR 30), which is
 * dispatched instead and leaves r's ready list (so a retried follow-up skips it too). */
static enum sl_err start_ready(struct planner *p, struct planner_result *r)
{
	const char *started = planner_spec_started(r->spec);
	enum sl_err rc;

	if ((rc = planner_spec_dispatch(p, r->spec)) != SL_OK)
		return rc;
	if (strcmp(r->tr.outcome, "node_done"))
		return SL_OK;
	for (size_t i = 0; started && i < r->tr.nready; i++) {
		if (strcmp(r->tr.ready[i], started))
			continue;
		free(r->tr.ready[i]);
		r->tr.ready[i] = r->tr.ready[--r->tr.nready];
		break;
	}
	return r->tr.nready ? planner_start_nodes(p, r->run, r->tr.ready, r->tr.nready) : SL_OK;
}

enum sl_err planner_result_follow_up(struct planner *p, struct planner_result *r)
{
	const Sluice__V1__TaskResult *res = r->res;
	const char *run_id = res->run_id, *flow = r->run->flow->name;

	if (!r->applied)
		return r->err;
	if (!strcmp(r->tr.outcome, "stale")) {
		if (!r->followed)
			SL_INFO("run %s: stale result for %s[%d] attempt %u from %s ignored",
				run_id, res->task, res->map_index, res->attempt, res->worker_id);
		r->followed = 1;
		/* Its start may have gone through all the same: an apply made again after a lost
		 * reply answers "stale" and the start that follows it "started". */
		return planner_spec_dispatch(p, r->spec);
	}
	if (!r->followed) {
		r->followed = 1;
		planner_cache_store(p, r->run, res);
		/* Events per instance only for what needs attention (failures, retries); a
		 * success shows in its node's event when the node ends. */
		if (!strcmp(r->tr.outcome, "retry")) {
			planner_event_task(p, run_id, flow, res->task, res->map_index, res->attempt,
					   "RETRY_WAIT", res->error);
			SL_INFO("run %s: %s[%d] attempt %u %s (%s); retry in %ld ms", run_id,
				res->task, res->map_index, res->attempt, r->status, res->error,
				r->in.retry_delay_ms);
		} else if (strcmp(r->status, "SUCCEEDED")) {
			planner_event_task(p, run_id, flow, res->task, res->map_index, res->attempt,
					   r->status, res->error);
		}
		if (!strcmp(r->tr.outcome, "node_done")) {
			node_ended_event(p, r);
			/* A failed node does not stop the run: its all_success downstreams end
			 * UPSTREAM_FAILED, all_done ones run, and the run ends FAILED at the end. */
			if (!strcmp(r->tr.run_state, "SUCCEEDED")) {
				SL_INFO("run %s succeeded", run_id);
				planner_event_run(p, run_id, flow, "SUCCEEDED", NULL);
			} else if (!strcmp(r->tr.run_state, "FAILED")) {
				planner_run_failed_event(p, run_id, flow);
			}
		}
	}
	/* The part retried in place: node_start is idempotent ("stale" once started). */
	return start_ready(p, r);
}

enum sl_err planner_on_result(struct planner *p, const rd_kafka_message_t *msg)
{
	struct planner_result *r = calloc(SL_BATCH_MAX, sizeof(*r));
	char why[128];
	enum sl_err rc = SL_OK;
	size_t k = 0;

	if (!r)
		return SL_ERR_NOMEM;
	switch (message_decode(p, msg, r, &k, 1, why, sizeof(why))) {
	case DECODE_BAD:
		rc = sl_kafka_deadletter(p->producer, "planner", msg, why);
		goto out;
	case DECODE_NO_RUN: {
		const char *run_id = r[0].res->run_id;
		redisReply *x = sl_state_command(p->state, "EXISTS sluice:{%s}:run", run_id);
		if (!x) {
			rc = SL_ERR_REDIS;
			goto out;
		}
		int exists = x->type == REDIS_REPLY_INTEGER && x->integer == 1;
		freeReplyObject(x);
		if (exists)
			SL_WARN("result for run %s ignored: its flow cannot be loaded", run_id);
		else
			rc = sl_kafka_deadletter(p->producer, "planner", msg,
						 "result for an unknown run");
		goto out;
	}
	case DECODED: break;
	}
	if ((rc = planner_results_apply(p, r, k)) != SL_OK)
		goto out;
	planner_fault_point("after_result_apply"); /* applied, ready nodes not started */
	for (size_t i = 0; i < k; i++) {
		enum sl_err e = planner_result_follow_up(p, &r[i]);
		if (rc == SL_OK)
			rc = e;
	}
out:
	for (size_t i = 0; i < k; i++)
		planner_result_clear(&r[i]);
	free(r);
	return rc;
}
