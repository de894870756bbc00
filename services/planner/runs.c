/* runs.c - run requests (validate, snapshot, record, start the roots), cancellation, and the
 * cache of runs' parsed flows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "planner.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

static const char *intent_name(Sluice__V1__Intent intent)
{
	switch (intent) {
	case SLUICE__V1__INTENT__INTENT_REPROCESS: return "reprocess";
	case SLUICE__V1__INTENT__INTENT_TEST_SUBSET: return "test_subset";
	default: return "normal";
	}
}

static int valid_id(const char *id)
{
	size_t n = strlen(id);

	if (!n || n >= 80)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

static void run_slot_clear(struct planner_run *r)
{
	sl_flow_destroy(r->flow);
	json_decref(r->params);
	memset(r, 0, sizeof(*r));
}

void planner_runs_clear(struct planner *p)
{
	for (size_t i = 0; i < PLANNER_RUN_CACHE; i++)
		run_slot_clear(&p->cache[i]);
}

/* Puts a run in the cache, taking ownership of flow and params. */
static struct planner_run *cache_put(struct planner *p, const char *id, const char *intent,
				     struct sl_flow *flow, json_t *params)
{
	struct planner_run *victim = &p->cache[0];

	for (size_t i = 0; i < PLANNER_RUN_CACHE; i++) {
		if (!p->cache[i].flow) {
			victim = &p->cache[i];
			break;
		}
		if (p->cache[i].used < victim->used)
			victim = &p->cache[i];
	}
	run_slot_clear(victim);
	sl_strlcpy(victim->id, id, sizeof(victim->id));
	sl_strlcpy(victim->intent, intent, sizeof(victim->intent));
	victim->flow = flow;
	victim->params = params;
	victim->used = ++p->clock;
	return victim;
}

struct planner_run *planner_run_get(struct planner *p, const char *run_id)
{
	struct sl_flow *flow = NULL;
	json_t *params = NULL;
	redisReply *r = NULL;
	struct planner_run *run = NULL;
	char err[512];

	for (size_t i = 0; i < PLANNER_RUN_CACHE; i++) {
		if (p->cache[i].flow && !strcmp(p->cache[i].id, run_id)) {
			p->cache[i].used = ++p->clock;
			return &p->cache[i];
		}
	}
	r = sl_state_command(p->state, "HMGET sluice:{%s}:run source params intent", run_id);
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING)
		goto out;
	flow = sl_flow_parse(r->element[0]->str, r->element[0]->len, run_id, err, sizeof(err));
	if (!flow) {
		SL_ERROR("run %s: stored flow does not parse: %s", run_id, err);
		goto out;
	}
	params = json_loads(r->element[1]->str ? r->element[1]->str : "{}", 0, NULL);
	if (!params)
		params = json_object();
	run = cache_put(p, run_id, r->element[2]->str ? r->element[2]->str : "normal", flow,
			params);
	flow = NULL;
	params = NULL;
out:
	sl_flow_destroy(flow);
	json_decref(params);
	if (r)
		freeReplyObject(r);
	return run;
}

/* Records the refusal (when the request named a usable run id) and dead-letters it. */
static enum sl_err reject(struct planner *p, const rd_kafka_message_t *msg, const char *run_id,
			  const char *flow, const char *error)
{
	if (run_id && valid_id(run_id)) {
		enum sl_err err = sl_state_run_reject(p->state, run_id, flow, error, sl_now_ms());
		if (err != SL_OK)
			return err;
		planner_event_run(p, run_id, flow, "REJECTED", error);
	}
	return sl_kafka_deadletter(p->producer, "planner", msg, error);
}

static char *task_csv(const struct sl_flow *flow)
{
	size_t len = 1;
	char *out;

	for (size_t i = 0; i < flow->ntasks; i++)
		len += strlen(flow->tasks[i].name) + 1;
	if (!(out = calloc(1, len)))
		return NULL;
	for (size_t i = 0; i < flow->ntasks; i++) {
		if (i)
			strcat(out, ",");
		strcat(out, flow->tasks[i].name);
	}
	return out;
}

/* Comma lists of each task's downstream tasks; caller frees each and the array. */
static char **downstream_lists(const struct sl_flow *flow)
{
	char **down = calloc(flow->ntasks ? flow->ntasks : 1, sizeof(*down));

	if (!down)
		return NULL;
	for (size_t t = 0; t < flow->ntasks; t++) {
		size_t len = 1;
		for (size_t d = 0; d < flow->ntasks; d++)
			for (size_t k = 0; k < flow->tasks[d].ndeps; k++)
				if (flow->tasks[d].deps[k] == t)
					len += strlen(flow->tasks[d].name) + 1;
		if (!(down[t] = calloc(1, len)))
			continue;
		for (size_t d = 0; d < flow->ntasks; d++)
			for (size_t k = 0; k < flow->tasks[d].ndeps; k++)
				if (flow->tasks[d].deps[k] == t) {
					if (down[t][0])
						strcat(down[t], ",");
					strcat(down[t], flow->tasks[d].name);
				}
	}
	return down;
}

/* Starts the tasks without upstreams. Safe to repeat: a started node answers "stale". */
static enum sl_err start_roots(struct planner *p, struct planner_run *run)
{
	char **roots = calloc(run->flow->ntasks ? run->flow->ntasks : 1, sizeof(*roots));
	size_t n = 0;
	enum sl_err err;

	if (!roots)
		return SL_ERR_NOMEM;
	for (size_t i = 0; i < run->flow->ntasks; i++)
		if (run->flow->tasks[i].ndeps == 0)
			roots[n++] = run->flow->tasks[i].name;
	err = planner_start_nodes(p, run, roots, n);
	free(roots);
	return err;
}

enum sl_err planner_on_run_request(struct planner *p, const rd_kafka_message_t *msg)
{
	Sluice__V1__RunRequest *req = NULL;
	struct sl_flow *flow = NULL;
	const struct sl_flow *known;
	json_t *given = NULL, *params = NULL;
	char *params_json = NULL, *tasks = NULL, **down = NULL;
	size_t ndown = 0;
	struct sl_run_node *nodes = NULL;
	struct planner_run *run;
	char err[512], run_id[96], dup_of[96], trace[64];
	enum sl_err rc = SL_OK;

	if (sl_kafka_check_size(msg) != SL_OK)
		return sl_kafka_deadletter(p->producer, "planner", msg, "message over the size cap");
	req = sluice__v1__run_request__unpack(NULL, msg->len, msg->payload);
	if (!req)
		return sl_kafka_deadletter(p->producer, "planner", msg,
					   "cannot decode RunRequest");
	if (req->run_id[0] && !valid_id(req->run_id)) {
		rc = reject(p, msg, NULL, req->flow, "run_id must be 1-79 characters of [A-Za-z0-9._-]");
		goto out;
	}
	if (req->run_id[0])
		sl_strlcpy(run_id, req->run_id, sizeof(run_id));
	else
		sl_id_new("r-", run_id, sizeof(run_id));
	if (req->trace_id[0])
		sl_strlcpy(trace, req->trace_id, sizeof(trace));
	else
		sl_id_new("t-", trace, sizeof(trace));

	if (req->flow_source.len) {
		flow = sl_flow_parse((const char *)req->flow_source.data, req->flow_source.len,
				     req->flow[0] ? req->flow : "<request>", err, sizeof(err));
		if (!flow) {
			rc = reject(p, msg, run_id, req->flow, err);
			goto out;
		}
	} else if ((known = planner_flows_get(p->flows, req->flow))) {
		flow = sl_flow_parse(known->source, known->source_len, known->path, err, sizeof(err));
		if (!flow) {
			rc = reject(p, msg, run_id, req->flow, err);
			goto out;
		}
	} else {
		snprintf(err, sizeof(err), "unknown flow '%s'", req->flow);
		rc = reject(p, msg, run_id, req->flow, err);
		goto out;
	}

	given = json_object();
	for (size_t i = 0; i < req->n_params; i++) {
		json_t *v = json_loads(req->params[i]->json_value, JSON_DECODE_ANY, NULL);
		if (!v) {
			snprintf(err, sizeof(err), "parameter %s: value is not JSON: %.200s",
				 req->params[i]->name, req->params[i]->json_value);
			rc = reject(p, msg, run_id, flow->name, err);
			goto out;
		}
		json_object_set_new(given, req->params[i]->name, v);
	}
	if (sl_flow_bind_params(flow, given, &params, err, sizeof(err)) != SL_OK) {
		rc = reject(p, msg, run_id, flow->name, err);
		goto out;
	}
	params_json = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
	tasks = task_csv(flow);
	down = downstream_lists(flow);
	ndown = flow->ntasks;
	nodes = calloc(flow->ntasks ? flow->ntasks : 1, sizeof(*nodes));
	if (!params_json || !tasks || !down || !nodes) {
		rc = SL_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < flow->ntasks; i++) {
		nodes[i].name = flow->tasks[i].name;
		nodes[i].ndeps = (int)flow->tasks[i].ndeps;
		nodes[i].down = down[i] ? down[i] : "";
		nodes[i].max_attempts = flow->tasks[i].retries + 1;
	}
	{
		struct sl_run_new rn = {
			.run_id = run_id, .flow = flow->name, .params_json = params_json,
			.intent = intent_name(req->intent), .source = flow->source,
			.source_len = flow->source_len, .idem_key = req->idempotency_key,
			.requested_by = req->requested_by, .trace_id = trace, .tasks_csv = tasks,
			.nodes = nodes, .nnodes = flow->ntasks, .now_ms = sl_now_ms()};
		rc = sl_state_run_create(p->state, &rn, dup_of, sizeof(dup_of));
	}
	if (rc == SL_ERR_EXISTS && dup_of[0]) {
		SL_INFO("run %s: idempotency key %s maps to run %s", run_id, req->idempotency_key,
			dup_of);
		planner_event_run(p, run_id, flow->name, "DUPLICATE", dup_of);
		rc = SL_OK;
		goto out;
	}
	if (rc != SL_OK && rc != SL_ERR_EXISTS)
		goto out;
	if (rc == SL_OK) {
		SL_INFO("run %s of flow %s created (%zu tasks, requested by %s)", run_id, flow->name,
			flow->ntasks, req->requested_by[0] ? req->requested_by : "-");
		planner_event_run(p, run_id, flow->name, "RUNNING", NULL);
	}
	/* A redelivered request (EXISTS) resumes the start of the roots, which is idempotent. */
	run = cache_put(p, run_id, intent_name(req->intent), flow, params);
	flow = NULL;
	params = NULL;
	rc = start_roots(p, run);
out:
	for (size_t i = 0; down && i < ndown; i++)
		free(down[i]);
	free(down);
	free(nodes);
	free(tasks);
	free(params_json);
	json_decref(given);
	json_decref(params);
	sl_flow_destroy(flow);
	if (req)
		sluice__v1__run_request__free_unpacked(req, NULL);
	return rc;
}

enum sl_err planner_on_control(struct planner *p, const rd_kafka_message_t *msg)
{
	Sluice__V1__Control *ctl;
	enum sl_err rc = SL_OK;

	if (sl_kafka_check_size(msg) != SL_OK)
		return sl_kafka_deadletter(p->producer, "planner", msg, "message over the size cap");
	if (!(ctl = sluice__v1__control__unpack(NULL, msg->len, msg->payload)))
		return sl_kafka_deadletter(p->producer, "planner", msg, "cannot decode Control");
	if (ctl->kind == SLUICE__V1__CONTROL_KIND__CONTROL_CANCEL_RUN) {
		if (!valid_id(ctl->run_id)) {
			rc = sl_kafka_deadletter(p->producer, "planner", msg,
						 "cancel without a valid run_id");
			goto out;
		}
		rc = sl_state_run_cancel(p->state, ctl->run_id,
					 ctl->reason[0] ? ctl->reason : "cancelled", sl_now_ms());
		if (rc == SL_OK) {
			SL_INFO("run %s cancelled (%s)", ctl->run_id, ctl->reason);
			planner_event_run(p, ctl->run_id, NULL, "CANCELLED", ctl->reason);
		} else if (rc == SL_ERR_STALE) {
			SL_INFO("cancel of run %s ignored: not running", ctl->run_id);
			rc = SL_OK;
		}
	}
	/* Other kinds (drain) are for workers. */
out:
	sluice__v1__control__free_unpacked(ctl, NULL);
	return rc;
}
