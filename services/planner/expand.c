/* expand.c - starts nodes whose upstreams are done: expands them into instances, records the
 * instances in Redis and dispatches them; also re-dispatches retries that are due. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "planner.h"
#include "sluice/health.h"
#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

/* What a node's expansion reads of its upstreams: their outputs, each read from Redis once
 * per node start and kept (cache[task index], new references) for every instance. */
struct upstream_ud {
	struct planner *p;
	struct planner_run *run;
	json_t **cache;
	int no_reads; /* a start made before its upstream's result is applied (ADR 30) */
	int missed;   /* ... asked for outputs not in cache */
};

static json_t *read_outputs(struct upstream_ud *u, size_t task_index);

/* The outputs of an upstream task (see sl_expand_ctx). */
static json_t *upstream_outputs(void *ud, size_t task_index)
{
	struct upstream_ud *u = ud;

	if (task_index >= u->run->flow->ntasks)
		return NULL;
	if (!u->cache[task_index] && u->no_reads) {
		u->missed = 1;
		return NULL;
	}
	if (!u->cache[task_index])
		u->cache[task_index] = read_outputs(u, task_index);
	return u->cache[task_index] ? json_incref(u->cache[task_index]) : NULL;
}

static void upstream_clear(struct upstream_ud *u)
{
	for (size_t i = 0; u->cache && i < u->run->flow->ntasks; i++)
		json_decref(u->cache[i]);
	free(u->cache);
	u->cache = NULL;
}

/* The outputs of task task_index, read from its instances. */
static json_t *read_outputs(struct upstream_ud *u, size_t task_index)
{
	const struct sl_flow_task *t = &u->run->flow->tasks[task_index];
	redisContext *c;
	redisReply *r = NULL;
	json_t *out = NULL;
	long total = 1;

	if (t->nmap) {
		r = sl_state_command(u->p->state, "HMGET sluice:{%s}:node:%s total reason",
				     u->run->id, t->name);
		if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING)
			goto out;
		/* A node that ended without running (skipped ...) has no outputs. */
		total = r->element[1]->type == REDIS_REPLY_STRING ? 0 : atol(r->element[0]->str);
		freeReplyObject(r);
		r = NULL;
	}
	if (!(c = sl_state_redis(u->p->state)))
		goto out;
	for (long i = 0; i < total; i++)
		redisAppendCommand(c, "HGET sluice:{%s}:ti:%s:%ld output", u->run->id, t->name,
				   t->nmap ? i : -1L);
	out = json_array();
	for (long i = 0; i < total; i++) {
		json_t *v = NULL;
		if (redisGetReply(c, (void **)&r) != REDIS_OK) {
			json_decref(out);
			out = NULL;
			r = NULL;
			goto out;
		}
		if (r->type == REDIS_REPLY_STRING)
			v = json_loadb(r->str, r->len, JSON_DECODE_ANY, NULL);
		json_array_append_new(out, v ? v : json_null());
		freeReplyObject(r);
		r = NULL;
	}
out:
	if (r)
		freeReplyObject(r);
	return out;
}

static int queue_known(struct planner *p, const char *queue)
{
	for (size_t i = 0; i < p->nqueues; i++)
		if (!strcmp(p->queues[i], queue))
			return 1;
	return 0;
}

/* The topic of a queue's priority band: sluice.tasks.<queue>[.high|.low] (priority > 0 is
 * high, < 0 low). Workers subscribe to all three and start high ones first. */
static void band_topic(char *buf, size_t cap, const char *queue, int priority)
{
	snprintf(buf, cap, "%s%s%s", SL_TOPIC_TASKS_PREFIX, queue,
		 priority > 0 ? ".high" : priority < 0 ? ".low" : "");
}

enum sl_err planner_ensure_queue(struct planner *p, const char *queue)
{
	char topic[3][256], err[512];
	const char *topics[3] = {topic[0], topic[1], topic[2]};

	if (queue_known(p, queue))
		return SL_OK;
	for (int b = 0; b < 3; b++)
		band_topic(topic[b], sizeof(topic[b]), queue, 1 - b);
	if (sl_kafka_topics_ensure(p->cfg.kafka_brokers, topics, 3, (int)p->cfg.partitions, err,
				   sizeof(err)) != SL_OK) {
		SL_ERROR("cannot create the topics of queue %s: %s", queue, err);
		return SL_ERR_KAFKA;
	}
	/* so that the first dispatch to the queue does not wait for librdkafka's topic scan */
	sl_kafka_producer_warm(p->dispatcher, topics, 3, 5000);
	if (p->nqueues < PLANNER_MAX_QUEUES && (p->queues[p->nqueues] = strdup(queue)))
		p->nqueues++;
	return SL_OK;
}

/* Sends one encoded TaskDispatch to its queue's band for priority (the task's). */
static enum sl_err produce_dispatch(struct planner *p, const char *queue, int priority,
				    const char *run, const char *task, int idx, const void *buf,
				    size_t len)
{
	char topic[256], key[512];
	enum sl_err err;

	if ((err = planner_ensure_queue(p, queue)) != SL_OK)
		return err;
	band_topic(topic, sizeof(topic), queue, priority);
	/* Keyed per instance, not per run, so one run's fan-out spreads over all partitions
	 * and therefore over all workers of the queue. */
	snprintf(key, sizeof(key), "%s/%s/%d", run, task, idx);
	return sl_kafka_produce(p->dispatcher, topic, key, strlen(key), buf, len, NULL);
}

static ssize_t sole_downstream(const struct sl_flow *flow, size_t u);

static enum sl_err encode_dispatch(struct planner *p, struct planner_run *run,
				   const struct sl_flow_task *t, const char *queue,
				   const struct sl_instance *in, int carry, uint8_t **buf,
				   size_t *len);

/* A task the planner lets a worker carry (ADR 31): an inline built-in that takes no lease
 * (pure, microseconds, nothing to fence or to count against a limit) and no cached result. */
static int carriable(const struct sl_flow_task *t)
{
	return t->kind == SL_TASK_BUILTIN && sl_flow_builtin_is_inline(t->builtin) &&
	       t->ntags == 0 && !t->nmap && !t->cache;
}

/* The encoded dispatch (*buf, caller frees; NULL when none) of the task a worker may run
 * right after task u of run, which went to queue, succeeds (ADR 31): u's first downstream
 * whose only upstream is u (the one planner_spec_new() starts with u's result), when it is
 * carriable, its gate lets it run and its route keeps queue without reading u's result, and
 * it expands to one instance without reading it either. It carries its own next one while
 * carry (the levels left) is above 1. Anything else (a flow error included) carries nothing:
 * the task then starts as usual, and its errors show then. */
static void carry_encode(struct planner *p, struct planner_run *run, size_t u,
			 const char *queue, int carry, uint8_t **buf, size_t *len)
{
	const struct sl_flow *flow = run->flow;
	struct upstream_ud ud = {p, run, NULL, 1, 0};
	struct sl_expand_ctx ctx = {.run_id = run->id, .flow = flow->name, .intent = run->intent,
				    .params = run->params, .upstream_outputs = upstream_outputs,
				    .ud = &ud};
	struct sl_expander *x = NULL;
	struct sl_instance inst;
	enum sl_gate gate = SL_GATE_RUN;
	const char *tq = "default";
	ssize_t d;
	size_t n = 0;
	int filled = 0;
	char err[256];

	*buf = NULL;
	*len = 0;
	if (carry <= 0 || (d = sole_downstream(flow, u)) < 0 || !carriable(&flow->tasks[d]) ||
	    !(ud.cache = calloc(flow->ntasks, sizeof(*ud.cache))))
		goto out;
	if (sl_flow_task_gate(flow, (size_t)d, &ctx, 0, 0, &gate, &tq, err, sizeof(err)) != SL_OK ||
	    gate != SL_GATE_RUN || ud.missed || strcmp(tq, queue) ||
	    sl_expander_new(flow, (size_t)d, &ctx, &x, &n, err, sizeof(err)) != SL_OK || n != 1 ||
	    sl_expander_fill(x, 0, 1, &inst, err, sizeof(err)) != SL_OK)
		goto out;
	filled = 1;
	if (!ud.missed &&
	    encode_dispatch(p, run, &flow->tasks[d], tq, &inst, carry - 1, buf, len) != SL_OK) {
		*buf = NULL;
		*len = 0;
	}
out:
	if (filled)
		sl_instances_clear(&inst, 1);
	sl_expander_free(x);
	if (ud.cache)
		upstream_clear(&ud);
}

/* Encodes the TaskDispatch of one instance, with the next task carried (ADR 31) up to carry
 * levels deep. Caller frees *buf. */
static enum sl_err encode_dispatch(struct planner *p, struct planner_run *run,
				   const struct sl_flow_task *t, const char *queue,
				   const struct sl_instance *in, int carry, uint8_t **buf,
				   size_t *len)
{
	Sluice__V1__TaskDispatch d = SLUICE__V1__TASK_DISPATCH__INIT;
	Sluice__V1__EnvVar *vars = NULL, **varp = NULL;
	char **names = NULL;
	uint8_t *then = NULL;
	size_t then_len = 0;
	enum sl_err err = SL_ERR_NOMEM;

	d.schema_version = 1;
	d.trace_id = run->id;
	d.run_id = run->id;
	d.flow = run->flow->name;
	d.task = t->name;
	d.map_index = in->map_index;
	d.attempt = 1;
	d.queue = (char *)queue; /* the task's queue or the one its route: picked */
	d.kind = t->kind == SL_TASK_BUILTIN ? SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN
					    : SLUICE__V1__TASK_KIND__TASK_KIND_COMMAND;
	d.n_argv = in->argc;
	d.argv = in->argv;
	d.builtin = t->builtin ? t->builtin : "";
	if (in->input) {
		d.input.data = (uint8_t *)in->input;
		d.input.len = strlen(in->input);
	}
	d.timeout_ms = (uint32_t)(t->timeout_ms > 0 ? t->timeout_ms : 0);
	d.lease_ttl_ms = (uint32_t)p->cfg.lease_ttl_ms;
	d.dispatched_at_ms = sl_now_ms();
	d.intent = !strcmp(run->intent, "reprocess")     ? SLUICE__V1__INTENT__INTENT_REPROCESS
		   : !strcmp(run->intent, "test_subset") ? SLUICE__V1__INTENT__INTENT_TEST_SUBSET
							 : SLUICE__V1__INTENT__INTENT_NORMAL;
	d.max_output_bytes =
		(uint32_t)(t->max_output_bytes > 0 ? t->max_output_bytes : p->cfg.max_output);
	d.priority = t->priority;
	/* Nothing to fence or to count against a limit while it runs (ADR 25). */
	d.no_lease = t->kind == SL_TASK_BUILTIN && sl_flow_builtin_is_inline(t->builtin) &&
		     t->ntags == 0;
	if (in->nenv) {
		vars = calloc(in->nenv, sizeof(*vars));
		varp = calloc(in->nenv, sizeof(*varp));
		names = calloc(in->nenv, sizeof(*names));
		if (!vars || !varp || !names)
			goto out;
		for (size_t i = 0; i < in->nenv; i++) {
			const char *eq = strchr(in->env[i], '=');
			sluice__v1__env_var__init(&vars[i]);
			names[i] = eq ? strndup(in->env[i], (size_t)(eq - in->env[i]))
				      : strdup(in->env[i]);
			if (!names[i])
				goto out;
			vars[i].name = names[i];
			vars[i].value = (char *)(eq ? eq + 1 : "");
			varp[i] = &vars[i];
		}
		d.n_env = in->nenv;
		d.env = varp;
	}
	if (!t->nmap) {
		/* a task of one instance: its success alone ends its node */
		carry_encode(p, run, (size_t)(t - run->flow->tasks), queue, carry, &then, &then_len);
		d.then.data = then;
		d.then.len = then_len;
	}
	*len = sluice__v1__task_dispatch__get_packed_size(&d);
	if (!(*buf = malloc(*len ? *len : 1)))
		goto out;
	sluice__v1__task_dispatch__pack(&d, *buf);
	err = SL_OK;
out:
	free(then);
	for (size_t i = 0; names && i < in->nenv; i++)
		free(names[i]);
	free(names);
	free(vars);
	free(varp);
	return err;
}

/* After a node ended at once (zero instances, skipped ...): reports the run's end, or appends
 * the nodes that became ready to *queue. */
static enum sl_err node_done_next(struct planner *p, struct planner_run *run,
				  const struct sl_transition *tr, char ***queue, size_t *qlen,
				  size_t *qcap)
{
	if (!strcmp(tr->run_state, "SUCCEEDED")) {
		SL_INFO("run %s succeeded", run->id);
		planner_event_run(p, run->id, run->flow->name, "SUCCEEDED", NULL);
	} else if (!strcmp(tr->run_state, "FAILED")) {
		planner_run_failed_event(p, run->id, run->flow->name);
	}
	for (size_t i = 0; i < tr->nready; i++) {
		if (*qlen == *qcap) {
			size_t cap = *qcap ? *qcap * 2 : 8;
			char **q = realloc(*queue, cap * sizeof(*q));
			if (!q)
				return SL_ERR_NOMEM;
			*queue = q;
			*qcap = cap;
		}
		if (!((*queue)[*qlen] = strdup(tr->ready[i])))
			return SL_ERR_NOMEM;
		(*qlen)++;
	}
	return SL_OK;
}

void planner_run_failed_event(struct planner *p, const char *run, const char *flow)
{
	redisReply *r = sl_state_command(p->state, "HGET sluice:{%s}:run error", run);
	const char *err = r && r->type == REDIS_REPLY_STRING ? r->str : NULL;

	SL_INFO("run %s failed: %s", run, err ? err : "-");
	planner_event_run(p, run, flow, "FAILED", err);
	if (r)
		freeReplyObject(r);
}

/* Ends node name without running it (SKIPPED, UPSTREAM_FAILED, FAILED) for reason. */
static enum sl_err end_node(struct planner *p, struct planner_run *run, const char *name,
			    const char *state, const char *reason, char ***queue, size_t *qlen,
			    size_t *qcap)
{
	struct sl_transition tr = {0};
	enum sl_err rc = sl_state_node_end(p->state, run->id, name, state, reason, sl_now_ms(),
					   &tr);

	if (rc == SL_OK && !strcmp(tr.outcome, "finished")) {
		if (!strcmp(state, "FAILED"))
			SL_WARN("run %s: task %s failed: %s", run->id, name, reason);
		else
			SL_INFO("run %s: task %s %s: %s", run->id, name, state, reason);
		planner_event_task(p, run->id, run->flow->name, name, -1, 0, state, reason);
		rc = node_done_next(p, run, &tr, queue, qlen, qcap);
	}
	sl_transition_clear(&tr);
	return rc;
}

/* How many upstreams of node name failed and were skipped (final once it is ready). */
static enum sl_err upstream_ends(struct planner *p, struct planner_run *run, const char *name,
				 size_t *failed, size_t *skipped)
{
	redisReply *r = sl_state_command(p->state, "HMGET sluice:{%s}:node:%s up_failed up_skipped",
					 run->id, name);

	*failed = *skipped = 0;
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		if (r)
			freeReplyObject(r);
		return SL_ERR_REDIS;
	}
	if (r->element[0]->type == REDIS_REPLY_STRING)
		*failed = strtoul(r->element[0]->str, NULL, 10);
	if (r->element[1]->type == REDIS_REPLY_STRING)
		*skipped = strtoul(r->element[1]->str, NULL, 10);
	freeReplyObject(r);
	return SL_OK;
}

/* Instances expanded, encoded and written at a time: the planner's memory for a node start
 * is this many instances, however big the fan-out (a million-instance map included). */
#define EXPAND_CHUNK 1000

/* The expanded and encoded instances from..from+k of a node. */
struct chunk {
	struct sl_instance inst[EXPAND_CHUNK];
	struct sl_ti_new tis[EXPAND_CHUNK];
	uint8_t *bufs[EXPAND_CHUNK];
	size_t k;
};

static void chunk_clear(struct chunk *c)
{
	for (size_t i = 0; i < c->k; i++) {
		free(c->bufs[i]);
		c->bufs[i] = NULL;
	}
	sl_instances_clear(c->inst, c->k);
	c->k = 0;
}

/* Fills and encodes instances from..from+k into c, each carrying up to carry levels (ADR 31);
 * a flow error is SL_ERR_PARSE-like and leaves its text in err. */
static enum sl_err chunk_fill(struct planner *p, struct planner_run *run,
			      const struct sl_flow_task *t, const char *queue,
			      struct sl_expander *x, size_t from, size_t k, int carry,
			      struct chunk *c, char *err, size_t errlen)
{
	enum sl_err rc;

	if ((rc = sl_expander_fill(x, from, k, c->inst, err, errlen)) != SL_OK)
		return rc;
	c->k = k;
	for (size_t i = 0; i < k; i++) {
		if ((rc = encode_dispatch(p, run, t, queue, &c->inst[i], carry, &c->bufs[i],
					  &c->tis[i].len)) != SL_OK) {
			snprintf(err, errlen, "out of memory");
			return rc;
		}
		c->tis[i].idx = c->inst[i].map_index;
		c->tis[i].dispatch = c->bufs[i];
	}
	return SL_OK;
}

/* Checks that instances EXPAND_CHUNK..n of a big node expand (chunk 0 was filled already),
 * so that a flow error fails the node before it starts, as for a small one. */
static enum sl_err check_rest(struct sl_expander *x, size_t n, char *err, size_t errlen)
{
	struct sl_instance one;
	enum sl_err rc = SL_OK;

	for (size_t i = EXPAND_CHUNK; i < n && rc == SL_OK; i++) {
		rc = sl_expander_fill(x, i, 1, &one, err, errlen);
		sl_instances_clear(&one, 1);
	}
	return rc;
}

/* Sends the dispatches el[0..n) of instances of task t (first: the first one's map index)
 * as one batched TaskDispatch (ADR 20), or as itself when n is 1. */
static enum sl_err produce_batch(struct planner *p, struct planner_run *run,
				 const struct sl_flow_task *t, const char *queue,
				 ProtobufCBinaryData *el, size_t n, int first)
{
	Sluice__V1__TaskDispatch env = SLUICE__V1__TASK_DISPATCH__INIT;
	uint8_t *buf;
	size_t len;
	enum sl_err rc;

	if (n == 1)
		return produce_dispatch(p, queue, t->priority, run->id, t->name, first, el[0].data,
					el[0].len);
	env.schema_version = 1;
	env.trace_id = run->id;
	env.run_id = run->id;
	env.task = t->name;
	env.queue = (char *)queue;
	env.map_index = first;
	env.n_batch = n;
	env.batch = el;
	len = sluice__v1__task_dispatch__get_packed_size(&env);
	if (!(buf = malloc(len)))
		return SL_ERR_NOMEM;
	sluice__v1__task_dispatch__pack(&env, buf);
	rc = produce_dispatch(p, queue, t->priority, run->id, t->name, first, buf, len);
	free(buf);
	return rc;
}

/* Dispatches the instances of chunk c (instances from..) that a write created: the nmade
 * map indexes in made, or all of c when made is NULL. Cached results skip their dispatch.
 * Instances of an inline built-in go SL_BATCH_MAX to a message (ADR 20): a worker runs them
 * in microseconds, so one message per instance would cost the broker more than the work. */
static enum sl_err dispatch_created(struct planner *p, struct planner_run *run,
				    const struct sl_flow_task *t, const char *queue,
				    const struct chunk *c, size_t from, const int *made,
				    size_t nmade, const struct sl_expand_ctx *ctx)
{
	ProtobufCBinaryData el[SL_BATCH_MAX];
	size_t nel = 0, bytes = 0, nsent = 0;
	int first = 0;
	const size_t max = t->kind == SL_TASK_BUILTIN && sl_flow_builtin_is_inline(t->builtin)
				   ? SL_BATCH_MAX
				   : 1;
	int *sent = max == 1 ? malloc(EXPAND_CHUNK * sizeof(*sent)) : NULL;
	enum sl_err rc = SL_OK;

	if (!made)
		nmade = c->k;
	for (size_t i = 0; rc == SL_OK && i < nmade; i++) {
		size_t at = !made ? i : t->nmap ? (size_t)made[i] - from : 0;

		if (at >= c->k || planner_cache_hit(p, run, t, ctx, &c->inst[at]))
			continue;
		if (nel && (nel == max || bytes + c->tis[at].len > SL_BATCH_BYTES)) {
			rc = produce_batch(p, run, t, queue, el, nel, first);
			nel = bytes = 0;
			if (rc != SL_OK)
				break;
		}
		if (!nel)
			first = c->tis[at].idx;
		if (sent)
			sent[nsent++] = c->tis[at].idx;
		el[nel].data = c->bufs[at];
		el[nel++].len = c->tis[at].len;
		bytes += c->tis[at].len;
	}
	if (rc == SL_OK && nel)
		rc = produce_batch(p, run, t, queue, el, nel, first);
	/* Instances that need a slot are indexed as waiting, for an idle worker of the queue to
	 * take from a busy one's partitions (ADR 23); without the index they only wait longer. */
	if (rc == SL_OK && nsent &&
	    sl_state_queued_add(p->state, queue, run->id, t->name, sent, nsent, sl_now_ms()) !=
		    SL_OK)
		SL_WARN("run %s: task %s: cannot index %zu dispatches as waiting (redis); idle "
			"workers will not take them", run->id, t->name, nsent);
	free(sent);
	return rc;
}

/* Writes instances start..n of a started node chunk by chunk (chunk c holds start's chunk
 * already when c->k), and dispatches the ones each write created: instances that existed
 * (a resumed node) were dispatched by whoever created them, or are the reaper's. */
static enum sl_err write_and_dispatch(struct planner *p, struct planner_run *run,
				      const struct sl_flow_task *t, const char *queue,
				      struct sl_expander *x, size_t start, size_t n,
				      struct chunk *c, const struct sl_expand_ctx *ctx)
{
	char err[512];
	enum sl_err rc = SL_OK;

	for (size_t from = start; from < n && rc == SL_OK; from += EXPAND_CHUNK) {
		size_t k = n - from < EXPAND_CHUNK ? n - from : EXPAND_CHUNK;
		int *made = NULL;
		size_t nmade = 0;

		if (!c->k && (rc = chunk_fill(p, run, t, queue, x, from, k, PLANNER_CARRY_DEPTH, c,
					      err, sizeof(err))) != SL_OK) {
			/* checked before the start: only Redis (upstream outputs) fails here;
			 * the node stays half-written in the pending index for the reaper */
			SL_ERROR("run %s: task %s: %s", run->id, t->name, err);
			break;
		}
		rc = sl_state_ti_add(p->state, run->id, t->name, t->retries + 1, c->tis, c->k,
				     sl_now_ms(), &made, &nmade);
		if (rc == SL_ERR_STALE) { /* the run ended (cancelled, failed) meanwhile */
			chunk_clear(c);
			return SL_OK;
		}
		if (rc == SL_OK) {
			planner_fault_point("after_ti_add"); /* written, not yet produced */
			rc = dispatch_created(p, run, t, queue, c, from, made, nmade, ctx);
		}
		free(made);
		chunk_clear(c);
	}
	return rc;
}

/* A node's start as it is prepared: its task, the queue its route picked, its expansion and
 * the first chunk of its instances encoded. */
struct node_prep {
	struct planner_run *run;
	const struct sl_flow_task *t;
	size_t ti;
	const char *tq;
	struct upstream_ud ud;
	struct sl_expand_ctx ctx;
	struct sl_expander *x;
	struct chunk *c;
	size_t n;
	int carry; /* levels its dispatches carry (ADR 31) */
};

/* Sets up prep for task ti of run. Clear with prep_clear() whatever the answer. */
static enum sl_err prep_init(struct node_prep *prep, struct planner *p, struct planner_run *run,
			     size_t ti)
{
	memset(prep, 0, sizeof(*prep));
	prep->run = run;
	prep->t = &run->flow->tasks[ti];
	prep->ti = ti;
	prep->tq = "default";
	prep->carry = PLANNER_CARRY_DEPTH;
	prep->ud = (struct upstream_ud){p, run, NULL, 0, 0};
	prep->ctx = (struct sl_expand_ctx){.run_id = run->id, .flow = run->flow->name,
					   .intent = run->intent, .params = run->params,
					   .upstream_outputs = upstream_outputs, .ud = &prep->ud};
	if (!(prep->ud.cache = calloc(run->flow->ntasks, sizeof(*prep->ud.cache))) ||
	    !(prep->c = calloc(1, sizeof(*prep->c))))
		return SL_ERR_NOMEM;
	return SL_OK;
}

static void prep_clear(struct node_prep *prep)
{
	if (prep->c)
		chunk_clear(prep->c);
	free(prep->c);
	sl_expander_free(prep->x);
	if (prep->ud.cache)
		upstream_clear(&prep->ud);
	memset(prep, 0, sizeof(*prep));
}

/* Expands prep's node and encodes its first chunk (after its gate said run); a flow error
 * leaves its text in err. */
static enum sl_err prep_expand(struct planner *p, struct node_prep *prep, char *err,
			       size_t errlen)
{
	size_t n;

	if (sl_expander_new(prep->run->flow, prep->ti, &prep->ctx, &prep->x, &prep->n, err,
			    errlen) != SL_OK)
		return SL_ERR_PARSE;
	n = prep->n;
	if (chunk_fill(p, prep->run, prep->t, prep->tq, prep->x, 0,
		       n < EXPAND_CHUNK ? n : EXPAND_CHUNK, prep->carry, prep->c, err,
		       errlen) != SL_OK ||
	    check_rest(prep->x, n, err, errlen) != SL_OK)
		return SL_ERR_PARSE;
	return SL_OK;
}

/* After node_start answered "started" or "resume" for prep's node: dispatches what it
 * wrote and writes and dispatches the rest, chunk by chunk. */
static enum sl_err prep_dispatch(struct planner *p, struct node_prep *prep, const char *outcome)
{
	struct planner_run *run = prep->run;
	enum sl_err rc;

	SL_DEBUG("run %s: task %s %s with %zu instances", run->id, prep->t->name, outcome,
		 prep->n);
	if ((rc = planner_limits_prepare(p, run, prep->t)) != SL_OK)
		return rc;
	if (!strcmp(outcome, "started")) {
		/* a WAITING node had no instances: node_start created all of the first chunk */
		rc = dispatch_created(p, run, prep->t, prep->tq, prep->c, 0, NULL, 0, &prep->ctx);
		chunk_clear(prep->c);
		if (rc == SL_OK)
			rc = write_and_dispatch(p, run, prep->t, prep->tq, prep->x, EXPAND_CHUNK,
						prep->n, prep->c, &prep->ctx);
	} else { /* "resume": node_start wrote nothing; ti_add says what is missing */
		rc = write_and_dispatch(p, run, prep->t, prep->tq, prep->x, 0, prep->n, prep->c,
					&prep->ctx);
	}
	return rc;
}

/* Expands and starts one node; appends nodes that became ready to *queue. Instances are
 * expanded, written and dispatched EXPAND_CHUNK at a time, so the planner's memory and
 * each Redis call stay small whatever the fan-out, and workers start on the first chunk
 * while the next is written. */
static enum sl_err start_node(struct planner *p, struct planner_run *run, const char *name,
			      char ***queue, size_t *qlen, size_t *qcap)
{
	struct node_prep prep;
	struct sl_transition tr = {0};
	enum sl_gate gate = SL_GATE_RUN;
	size_t up_failed, up_skipped;
	ssize_t ti;
	char err[512];
	enum sl_err rc = SL_OK;

	if ((ti = sl_flow_task_index(run->flow, name)) < 0) {
		SL_ERROR("run %s: node %s is not in its flow", run->id, name);
		return SL_OK;
	}
	if ((rc = prep_init(&prep, p, run, (size_t)ti)) != SL_OK)
		goto out;
	/* Trigger rule, when: and route: first; a flow error (a condition, route or map that
	 * cannot be evaluated) fails this node only, so that all_done clean-ups still run. */
	if ((rc = upstream_ends(p, run, name, &up_failed, &up_skipped)) != SL_OK)
		goto out;
	if (sl_flow_task_gate(run->flow, (size_t)ti, &prep.ctx, up_failed, up_skipped, &gate,
			      &prep.tq, err, sizeof(err)) != SL_OK) {
		rc = end_node(p, run, name, "FAILED", err, queue, qlen, qcap);
		goto out;
	}
	if (gate != SL_GATE_RUN) {
		rc = end_node(p, run, name, gate == SL_GATE_SKIP ? "SKIPPED" : "UPSTREAM_FAILED",
			      err, queue, qlen, qcap);
		goto out;
	}
	if (prep_expand(p, &prep, err, sizeof(err)) != SL_OK) {
		rc = end_node(p, run, name, "FAILED", err, queue, qlen, qcap);
		goto out;
	}
	/* The first chunk goes with the start (a chain's hop pays one Redis call, not two). */
	rc = sl_state_node_start(p->state, run->id, name, prep.n, prep.t->retries + 1,
				 prep.c->tis, prep.c->k, sl_now_ms(), &tr);
	if (rc != SL_OK)
		goto out;
	planner_fault_point("after_node_start"); /* started and first chunk written, not sent */
	if (!strcmp(tr.outcome, "stale") || !strcmp(tr.outcome, "ended"))
		goto out;
	if (!strcmp(tr.outcome, "finished")) {
		rc = node_done_next(p, run, &tr, queue, qlen, qcap);
		goto out;
	}
	rc = prep_dispatch(p, &prep, tr.outcome);
out:
	sl_transition_clear(&tr);
	prep_clear(&prep);
	return rc;
}

/* ---- a chain's next node started in its upstream's result round trip (ADR 30) ---- */

struct planner_spec {
	struct node_prep prep;
	int carried;            /* its result's worker runs it (then_task, ADR 31) */
	int answered;           /* the start was sent and answered */
	int dispatched;         /* planner_spec_dispatch() was called (once only) */
	struct sl_transition tr; /* its answer */
};

/* The first task of run's flow whose only upstream is task u, or -1. */
static ssize_t sole_downstream(const struct sl_flow *flow, size_t u)
{
	for (size_t j = 0; j < flow->ntasks; j++)
		if (flow->tasks[j].ndeps == 1 && flow->tasks[j].deps[0] == u)
			return (ssize_t)j;
	return -1;
}

struct planner_spec *planner_spec_new(struct planner *p, const struct planner_result *r)
{
	const struct sl_flow *flow = r->run->flow;
	struct planner_spec *s = NULL;
	enum sl_gate gate = SL_GATE_RUN;
	ssize_t d;
	json_t *out;
	char err[512];

	/* Only a node of one instance ends with its one result, succeeded: its downstream's
	 * upstream counts are then known (0 failed, 0 skipped) before the result is applied. */
	if (strcmp(r->status, "SUCCEEDED") || flow->tasks[r->task_index].nmap ||
	    r->res->map_index != -1 || (d = sole_downstream(flow, r->task_index)) < 0)
		return NULL;
	if (!(s = calloc(1, sizeof(*s))) ||
	    prep_init(&s->prep, p, r->run, (size_t)d) != SL_OK ||
	    !(out = json_array()))
		goto fail;
	/* Its outputs as read_outputs() will read them once the result is applied. */
	{
		json_t *v = json_loadb(r->in.output, r->in.output_len, JSON_DECODE_ANY, NULL);
		json_array_append_new(out, v ? v : json_null());
	}
	s->prep.ud.cache[r->task_index] = out;
	s->prep.ud.no_reads = 1;
	/* A carried one is not sent: its stored dispatch, for the reaper's re-sends, carries
	 * nothing (ADR 31), which spares expanding what it would carry on every hop. */
	s->carried = r->res->then_task && !strcmp(r->res->then_task, flow->tasks[d].name);
	if (s->carried)
		s->prep.carry = 0;
	if (sl_flow_task_gate(flow, (size_t)d, &s->prep.ctx, 0, 0, &gate, &s->prep.tq, err,
			      sizeof(err)) != SL_OK ||
	    gate != SL_GATE_RUN || prep_expand(p, &s->prep, err, sizeof(err)) != SL_OK ||
	    !s->prep.n || s->prep.ud.missed)
		goto fail; /* started as usual once ready: the node's own errors show then */
	s->prep.ud.no_reads = 0;
	return s;
fail:
	planner_spec_free(s);
	return NULL;
}

int planner_spec_to_send(const struct planner_spec *s, struct sl_node_start_in *in)
{
	const struct node_prep *prep = &s->prep;

	if (s->answered)
		return 0;
	*in = (struct sl_node_start_in){.run = prep->run->id, .task = prep->t->name,
					 .total = prep->n, .max_attempts = prep->t->retries + 1,
					 .tis = prep->c->tis, .n = prep->c->k, .now_ms = sl_now_ms()};
	return 1;
}

void planner_spec_answered(struct planner_spec *s, struct sl_transition *tr)
{
	sl_transition_clear(&s->tr);
	s->tr = *tr;
	memset(tr, 0, sizeof(*tr));
	s->answered = 1;
}

const char *planner_spec_started(const struct planner_spec *s)
{
	return s && s->answered && !strcmp(s->tr.outcome, "started") ? s->prep.t->name : NULL;
}

enum sl_err planner_spec_dispatch(struct planner *p, struct planner_spec *s)
{
	if (!planner_spec_started(s) || s->dispatched)
		return SL_OK;
	/* Once: a retried follow-up leaves what failed to the reaper, as a retried start does
	 * (node_start answers "stale" then). */
	s->dispatched = 1;
	sl_metric_inc(p->started_with_result);
	if (s->carried) {
		/* Recorded DISPATCHED like any start, so a worker lost before it ran it leaves
		 * it to the reaper; a carriable task has no limits and waits in no queue. */
		sl_metric_inc(p->carried);
		return SL_OK;
	}
	planner_fault_point("after_node_start"); /* started and first chunk written, not sent */
	return prep_dispatch(p, &s->prep, s->tr.outcome);
}

void planner_spec_free(struct planner_spec *s)
{
	if (!s)
		return;
	prep_clear(&s->prep);
	sl_transition_clear(&s->tr);
	free(s);
}

enum sl_err planner_start_nodes(struct planner *p, struct planner_run *run, char **names,
				size_t n)
{
	char **queue = NULL;
	size_t qlen = 0, qcap = 0, next = 0;
	enum sl_err rc = SL_OK;

	for (size_t i = 0; i < n && rc == SL_OK; i++)
		rc = start_node(p, run, names[i], &queue, &qlen, &qcap);
	/* Nodes that finished at once (empty maps) release their downstreams right away. */
	while (rc == SL_OK && next < qlen) {
		rc = start_node(p, run, queue[next], &queue, &qlen, &qcap);
		next++;
	}
	for (size_t i = 0; i < qlen; i++)
		free(queue[i]);
	free(queue);
	return rc;
}

enum sl_err planner_on_timers(struct planner *p)
{
	struct sl_due *due = NULL;
	size_t n = 0;
	enum sl_err rc;

	if ((rc = sl_state_timers_due(p->state, sl_now_ms(), 500, &due, &n)) != SL_OK)
		return rc;
	for (size_t i = 0; i < n; i++) {
		Sluice__V1__TaskDispatch *d =
			sluice__v1__task_dispatch__unpack(NULL, due[i].len, due[i].dispatch);
		uint8_t *buf;
		size_t len;

		if (!d) {
			SL_ERROR("run %s task %s: stored dispatch does not decode", due[i].run,
				 due[i].task);
			continue;
		}
		d->attempt = due[i].attempt;
		d->dispatched_at_ms = sl_now_ms();
		len = sluice__v1__task_dispatch__get_packed_size(d);
		if ((buf = malloc(len ? len : 1))) {
			sluice__v1__task_dispatch__pack(d, buf);
			SL_INFO("run %s: retrying %s[%d], attempt %u", due[i].run, due[i].task,
				due[i].idx, due[i].attempt);
			if (produce_dispatch(p, d->queue[0] ? d->queue : "default", d->priority,
					     due[i].run, due[i].task, due[i].idx, buf, len) != SL_OK)
				rc = SL_ERR_KAFKA;
			planner_event_task(p, due[i].run, d->flow, due[i].task, due[i].idx,
					   due[i].attempt, "DISPATCHED", "retry");
			free(buf);
		}
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
	}
	sl_due_free(due, n);
	if (planner_limits_wake(p) != SL_OK)
		rc = SL_ERR_REDIS;
	return rc;
}
