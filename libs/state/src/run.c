/* run.c - the planner's transitions: create/reject/cancel runs, start nodes, apply results,
 * pop due retries. Each is one Lua script; this file only marshals arguments and replies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/util.h"
#include "state_int.h"

/* Growable argument vector for script calls; strings it formats are owned by it. */
struct args {
	const char **v;
	size_t *len;
	char **owned;
	int n, cap, nowned;
};

/* Makes room for one more argument; owned[] grows with v[] so nowned <= n < cap holds. */
static int args_grow(struct args *a)
{
	int cap;

	if (a->n < a->cap)
		return 0;
	cap = a->cap ? a->cap * 2 : 32;
	const char **v = realloc(a->v, sizeof(*v) * (size_t)cap);
	if (!v)
		return -1;
	a->v = v;
	size_t *l = realloc(a->len, sizeof(*l) * (size_t)cap);
	if (!l)
		return -1;
	a->len = l;
	char **o = realloc(a->owned, sizeof(*o) * (size_t)cap);
	if (!o)
		return -1;
	a->owned = o;
	a->cap = cap;
	return 0;
}

static int args_push(struct args *a, const char *s, size_t len)
{
	if (args_grow(a))
		return -1;
	a->v[a->n] = s;
	a->len[a->n] = len;
	a->n++;
	return 0;
}

static int args_str(struct args *a, const char *s)
{
	return args_push(a, s ? s : "", s ? strlen(s) : 0);
}

static int args_fmt(struct args *a, const char *fmt, long long v)
{
	char *s;

	if (args_grow(a) || !(s = malloc(32)))
		return -1;
	snprintf(s, 32, fmt, v);
	a->owned[a->nowned++] = s;
	return args_push(a, s, strlen(s));
}

static void args_free(struct args *a)
{
	for (int i = 0; i < a->nowned; i++)
		free(a->owned[i]);
	free(a->v);
	free(a->len);
	free(a->owned);
}

static enum sl_err reply_to_transition(redisReply *r, struct sl_transition *t)
{
	memset(t, 0, sizeof(*t));
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
		return SL_ERR_REDIS;
	sl_strlcpy(t->outcome, r->element[0]->str ? r->element[0]->str : "", sizeof(t->outcome));
	if (r->elements >= 2 && r->element[1]->str)
		sl_strlcpy(t->run_state, r->element[1]->str, sizeof(t->run_state));
	if (r->elements > 2) {
		t->ready = calloc(r->elements - 2, sizeof(*t->ready));
		if (!t->ready)
			return SL_ERR_NOMEM;
		for (size_t i = 2; i < r->elements; i++)
			if (r->element[i]->str && (t->ready[t->nready] = strdup(r->element[i]->str)))
				t->nready++;
	}
	return SL_OK;
}

void sl_transition_clear(struct sl_transition *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nready; i++)
		free(t->ready[i]);
	free(t->ready);
	memset(t, 0, sizeof(*t));
}

enum sl_err sl_state_run_create(struct sl_state *st, const struct sl_run_new *rn, char *dup_of,
				size_t dup_cap)
{
	char run_key[STATE_KEY_MAX], idem_key[STATE_KEY_MAX], node_prefix[STATE_KEY_MAX];
	int has_idem = rn->idem_key && rn->idem_key[0];
	struct args a = {0};
	redisReply *r = NULL;
	enum sl_err err = SL_ERR_NOMEM;

	if (dup_cap)
		dup_of[0] = '\0';
	state_key(run_key, sizeof(run_key), rn->run_id, "run");
	state_key(node_prefix, sizeof(node_prefix), rn->run_id, "node:");
	if (has_idem)
		snprintf(idem_key, sizeof(idem_key), "sluice:idem:%s", rn->idem_key);
	else
		sl_strlcpy(idem_key, run_key, sizeof(idem_key));
	if (args_str(&a, run_key) || args_str(&a, idem_key) || args_str(&a, "sluice:runs") ||
	    args_str(&a, rn->run_id) || args_str(&a, rn->flow) || args_str(&a, rn->params_json) ||
	    args_str(&a, rn->intent) || args_push(&a, rn->source, rn->source_len) ||
	    args_fmt(&a, "%lld", (long long)rn->now_ms) || args_str(&a, has_idem ? "1" : "0") ||
	    args_str(&a, rn->requested_by) || args_str(&a, rn->trace_id) ||
	    args_str(&a, rn->tasks_csv) || args_str(&a, node_prefix))
		goto out;
	for (size_t i = 0; i < rn->nnodes; i++)
		if (args_str(&a, rn->nodes[i].name) || args_fmt(&a, "%lld", rn->nodes[i].ndeps) ||
		    args_str(&a, rn->nodes[i].down) ||
		    args_fmt(&a, "%lld", rn->nodes[i].max_attempts))
			goto out;
	err = SL_ERR_REDIS;
	if (!(r = state_eval(st, "run_create", 3, a.n, a.v, a.len)))
		goto out;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
		goto out;
	if (!strcmp(r->element[0]->str, "created")) {
		err = SL_OK;
	} else {
		err = SL_ERR_EXISTS;
		if (r->elements > 1 && dup_cap)
			sl_strlcpy(dup_of, r->element[1]->str, dup_cap);
	}
out:
	if (r)
		freeReplyObject(r);
	args_free(&a);
	return err;
}

enum sl_err sl_state_run_reject(struct sl_state *st, const char *run, const char *flow,
				const char *error, int64_t now_ms)
{
	char run_key[STATE_KEY_MAX], now[24];
	const char *argv[6];
	redisReply *r;

	state_key(run_key, sizeof(run_key), run, "run");
	snprintf(now, sizeof(now), "%lld", (long long)now_ms);
	argv[0] = run_key;
	argv[1] = "sluice:runs";
	argv[2] = run;
	argv[3] = flow ? flow : "";
	argv[4] = error;
	argv[5] = now;
	if (!(r = state_eval(st, "run_reject", 2, 6, argv, NULL)))
		return SL_ERR_REDIS;
	freeReplyObject(r);
	return SL_OK;
}

/* Runs a one-key script taking (now, text) that answers 1 when it changed the run. */
static enum sl_err run_end(struct sl_state *st, const char *script, const char *run,
			   const char *text, int64_t now_ms)
{
	char run_key[STATE_KEY_MAX], now[24];
	const char *argv[3];
	redisReply *r;
	enum sl_err err;

	state_key(run_key, sizeof(run_key), run, "run");
	snprintf(now, sizeof(now), "%lld", (long long)now_ms);
	argv[0] = run_key;
	argv[1] = now;
	argv[2] = text;
	if (!(r = state_eval(st, script, 1, 3, argv, NULL)))
		return SL_ERR_REDIS;
	err = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? SL_OK : SL_ERR_STALE;
	freeReplyObject(r);
	return err;
}

enum sl_err sl_state_run_cancel(struct sl_state *st, const char *run, const char *reason,
				int64_t now_ms)
{
	char run_key[STATE_KEY_MAX], set_key[STATE_KEY_MAX], prefix[STATE_KEY_MAX], now[24];
	const char *argv[5];
	redisReply *r;
	enum sl_err err;

	state_key(run_key, sizeof(run_key), run, "run");
	state_key(set_key, sizeof(set_key), run, "leases");
	state_key(prefix, sizeof(prefix), run, "%s", "");
	snprintf(now, sizeof(now), "%lld", (long long)now_ms);
	argv[0] = run_key;
	argv[1] = set_key;
	argv[2] = now;
	argv[3] = reason ? reason : "cancelled";
	argv[4] = prefix;
	if (!(r = state_eval(st, "run_cancel", 2, 5, argv, NULL)))
		return SL_ERR_REDIS;
	err = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? SL_OK : SL_ERR_STALE;
	freeReplyObject(r);
	return err;
}

enum sl_err sl_state_run_fail(struct sl_state *st, const char *run, const char *error,
			      int64_t now_ms)
{
	return run_end(st, "run_fail", run, error, now_ms);
}

static int push_instances(struct args *a, const struct sl_ti_new *tis, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (args_fmt(a, "%lld", tis[i].idx) || args_push(a, tis[i].dispatch, tis[i].len))
			return -1;
	return 0;
}

/* Instances written per script call inside a node start's transaction. */
#define NODE_START_BATCH 1000

/* Appends an owned copy of the key "sluice:{run}:<prefix><task><suffix>". */
static int args_key(struct args *a, const char *run, const char *prefix, const char *task,
		    const char *suffix)
{
	char *s;

	if (args_grow(a) || !(s = malloc(STATE_KEY_MAX)))
		return -1;
	state_key(s, STATE_KEY_MAX, run, "%s%s%s", prefix, task, suffix);
	a->owned[a->nowned++] = s;
	return args_push(a, s, strlen(s));
}

/* Appends node_start's 2 keys and its arguments for start (guard "" or "ready"), with its
 * first NODE_START_BATCH instances. */
static int node_start_args(struct args *a, const struct sl_node_start_in *in, const char *guard)
{
	size_t first = in->n < NODE_START_BATCH ? in->n : NODE_START_BATCH;

	return args_key(a, in->run, "run", "", "") || args_key(a, in->run, "node:", in->task, "") ||
	       args_str(a, in->task) || args_fmt(a, "%lld", (long long)in->total) ||
	       args_fmt(a, "%lld", (long long)in->now_ms) ||
	       args_key(a, in->run, "node:", "", "") || args_key(a, in->run, "ti:", in->task, ":") ||
	       args_fmt(a, "%lld", in->max_attempts) || args_str(a, guard) ||
	       push_instances(a, in->tis, first);
}

/* After node_start answered out for in: writes the instances past the first batch of a node
 * that started (or resumes), batch by batch. */
static enum sl_err node_start_rest(struct sl_state *st, const struct sl_node_start_in *in,
				   const struct sl_transition *out)
{
	if (in->n <= NODE_START_BATCH ||
	    (strcmp(out->outcome, "started") && strcmp(out->outcome, "resume")))
		return SL_OK;
	return sl_state_ti_add(st, in->run, in->task, in->max_attempts, in->tis + NODE_START_BATCH,
			       in->n - NODE_START_BATCH, in->now_ms, NULL, NULL);
}

enum sl_err sl_state_node_start(struct sl_state *st, const char *run, const char *task,
				size_t total, int max_attempts, const struct sl_ti_new *tis,
				size_t n, int64_t now_ms, struct sl_transition *out)
{
	const struct sl_node_start_in in = {.run = run, .task = task, .total = total,
					    .max_attempts = max_attempts, .tis = tis, .n = n,
					    .now_ms = now_ms};
	struct args a = {0};
	redisReply *r = NULL;
	enum sl_err err = SL_ERR_NOMEM;

	memset(out, 0, sizeof(*out));
	if (node_start_args(&a, &in, ""))
		goto out;
	err = SL_ERR_REDIS;
	if (!(r = state_eval(st, "node_start", 2, a.n, a.v, a.len)))
		goto out;
	if ((err = reply_to_transition(r, out)) != SL_OK)
		goto out;
	/* The rest, batch by batch; a started node resumes where a dead planner stopped. */
	err = node_start_rest(st, &in, out);
out:
	if (r)
		freeReplyObject(r);
	args_free(&a);
	return err;
}

enum sl_err sl_state_ti_add(struct sl_state *st, const char *run, const char *task,
			    int max_attempts, const struct sl_ti_new *tis, size_t n,
			    int64_t now_ms, int **created, size_t *ncreated)
{
	char run_key[STATE_KEY_MAX], node_key[STATE_KEY_MAX], ti_prefix[STATE_KEY_MAX];
	int *made = NULL;
	size_t nmade = 0;
	enum sl_err err = SL_OK;

	if (created) {
		*created = NULL;
		*ncreated = 0;
		if (!(made = malloc((n ? n : 1) * sizeof(*made))))
			return SL_ERR_NOMEM;
	}
	state_key(run_key, sizeof(run_key), run, "run");
	state_key(node_key, sizeof(node_key), run, "node:%s", task);
	state_key(ti_prefix, sizeof(ti_prefix), run, "ti:%s:", task);
	for (size_t off = 0; off < n && err == SL_OK; off += NODE_START_BATCH) {
		size_t cnt = n - off < NODE_START_BATCH ? n - off : NODE_START_BATCH;
		struct args a = {0};
		redisReply *r = NULL;

		err = SL_ERR_NOMEM;
		if (args_str(&a, run_key) || args_str(&a, node_key) || args_str(&a, ti_prefix) ||
		    args_fmt(&a, "%lld", max_attempts) || args_fmt(&a, "%lld", (long long)now_ms) ||
		    push_instances(&a, tis + off, cnt))
			goto next;
		err = SL_ERR_REDIS;
		if (!(r = state_eval(st, "ti_add", 2, a.n, a.v, a.len)))
			goto next;
		if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !r->element[0]->str ||
		    strncmp(r->element[0]->str, "added", 5)) {
			err = SL_ERR_STALE;
			goto next;
		}
		if (!strcmp(r->element[0]->str, "added_all"))
			for (size_t i = 0; made && i < cnt; i++)
				made[nmade++] = tis[off + i].idx;
		for (size_t i = 1; made && i < r->elements && nmade < n; i++)
			if (r->element[i]->str)
				made[nmade++] = atoi(r->element[i]->str);
		err = SL_OK;
next:
		if (r)
			freeReplyObject(r);
		args_free(&a);
	}
	if (created && err == SL_OK) {
		*created = made;
		*ncreated = nmade;
		made = NULL;
	}
	free(made);
	return err;
}

enum sl_err sl_state_node_end(struct sl_state *st, const char *run, const char *task,
			      const char *state, const char *reason, int64_t now_ms,
			      struct sl_transition *out)
{
	char run_key[STATE_KEY_MAX], node_key[STATE_KEY_MAX], ti_key[STATE_KEY_MAX],
		node_prefix[STATE_KEY_MAX];
	struct args a = {0};
	redisReply *r = NULL;
	enum sl_err err = SL_ERR_NOMEM;

	memset(out, 0, sizeof(*out));
	state_key(run_key, sizeof(run_key), run, "run");
	state_key(node_key, sizeof(node_key), run, "node:%s", task);
	state_key(ti_key, sizeof(ti_key), run, "ti:%s:-1", task);
	state_key(node_prefix, sizeof(node_prefix), run, "node:");
	if (args_str(&a, run_key) || args_str(&a, node_key) || args_str(&a, ti_key) ||
	    args_str(&a, task) || args_str(&a, state) || args_str(&a, reason) ||
	    args_fmt(&a, "%lld", (long long)now_ms) || args_str(&a, node_prefix))
		goto out;
	err = SL_ERR_REDIS;
	if (!(r = state_eval(st, "node_end", 3, a.n, a.v, a.len)))
		goto out;
	err = reply_to_transition(r, out);
out:
	if (r)
		freeReplyObject(r);
	args_free(&a);
	return err;
}

/* Strings of one result_apply call at most: per result its key and 9 arguments, per group
 * of results (one node's, in a row) 2 keys and 6 arguments, and the call's own 2 (the timers
 * key and the number of groups): see result_apply.lua. */
#define RESULT_STRINGS(count) (18 * (count) + 2)

/* Appends bytes to a buffer sized in advance by result_args_size(); no bounds check needed. */
static char *put(char *w, const char *s, size_t n)
{
	memcpy(w, s, n);
	return w + n;
}

/* Appends v in decimal (no printf: this runs once per argument of every result). */
static char *put_ll(char *w, long long v)
{
	char tmp[24];
	int n = 0;
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	do
		tmp[n++] = (char)('0' + u % 10);
	while ((u /= 10));
	if (v < 0)
		*w++ = '-';
	while (n)
		*w++ = tmp[--n];
	return w;
}

/* Bytes result_call_args() writes for res at most (as the first of its group, too). */
static size_t result_args_size(const struct sl_result_in *res)
{
	return 4 * strlen(res->run) + 2 * strlen(res->task) + 9 * 24 + 96;
}

/* Whether res goes in an 'ok' group of a result_apply call: a success with nothing else to
 * say, whose worker, error and exit code the group states once. */
static int result_ok(const struct sl_result_in *res)
{
	return !strcmp(res->status, "SUCCEEDED") && (!res->error || !res->error[0]) &&
	       !res->exit_code;
}

static const char *result_worker(const struct sl_result_in *res)
{
	return res->worker ? res->worker : "";
}

/* Whether results a and b go in one group of a result_apply call: of one node, and both
 * 'ok' from one worker or neither 'ok'. */
static int same_group(const struct sl_result_in *a, const struct sl_result_in *b)
{
	int ok = result_ok(a);

	return !strcmp(a->run, b->run) && !strcmp(a->task, b->task) && ok == result_ok(b) &&
	       (!ok || !strcmp(result_worker(a), result_worker(b)));
}

/* The strings of a call being filled: keys from v[0], the other arguments after them. */
struct call_args {
	const char **v;
	size_t *len;
	size_t nkey, narg; /* next key's index, next argument's index */
	char *w;           /* where the next formatted string goes */
};

static void call_str(struct call_args *c, size_t *at, const char *s, size_t l)
{
	c->v[*at] = s;
	c->len[*at] = l;
	(*at)++;
}

/* A formatted string: start = c->w, put()/put_ll() to c->w, then call_end(c, at, start). */
static void call_end(struct call_args *c, size_t *at, const char *start)
{
	call_str(c, at, start, (size_t)(c->w - start));
}

static void call_num(struct call_args *c, size_t *at, long long x)
{
	char *start = c->w;

	c->w = put_ll(c->w, x);
	call_end(c, at, start);
}

/* Writes key "sluice:{<run>}:<what><task>" (task may be NULL) for c at *at. */
static void call_key(struct call_args *c, size_t *at, const char *run, const char *what,
		     const char *task)
{
	char *start = c->w;

	c->w = put(c->w, "sluice:{", 8), c->w = put(c->w, run, strlen(run));
	c->w = put(c->w, "}:", 2), c->w = put(c->w, what, strlen(what));
	if (task)
		c->w = put(c->w, task, strlen(task));
	call_end(c, at, start);
}

/* Fills v/len with the arguments of one result_apply call for res[0..count) and returns how
 * many (*nkeys of them keys); keys and numbers are written to *w (the result_args_size() of
 * each result), the strings of res are borrowed. v and len have RESULT_STRINGS(count) room. */
static int result_call_args(const struct sl_result_in *res, size_t count, char **w,
			    const char **v, size_t *len, int *nkeys)
{
	struct call_args c = {.v = v, .len = len, .w = *w};
	size_t ngroups = 0;

	for (size_t i = 0; i < count; i++)
		ngroups += !i || !same_group(&res[i - 1], &res[i]);
	*nkeys = (int)(1 + 2 * ngroups + count);
	c.narg = (size_t)*nkeys;
	call_str(&c, &c.nkey, "sluice:timers", 13);
	call_num(&c, &c.narg, (long long)ngroups);
	for (size_t i = 0, in; i < count; i += in) {
		const struct sl_result_in *r = &res[i];

		for (in = 1; i + in < count && same_group(r, &res[i + in]); in++)
			;
		call_key(&c, &c.nkey, r->run, "run", NULL);
		call_key(&c, &c.nkey, r->run, "node:", r->task);
		call_key(&c, &c.narg, r->run, "node:", NULL);
		call_str(&c, &c.narg, r->task, strlen(r->task));
		call_num(&c, &c.narg, (long long)in);
		call_num(&c, &c.narg, r->now_ms);
		if (result_ok(r)) {
			call_str(&c, &c.narg, "ok", 2);
			call_str(&c, &c.narg, result_worker(r), strlen(result_worker(r)));
		} else {
			call_str(&c, &c.narg, "any", 3);
			call_str(&c, &c.narg, "", 0);
		}
	}
	for (size_t i = 0; i < count; i++) {
		const struct sl_result_in *r = &res[i];
		char *start = c.w;

		c.w = put(c.w, "sluice:{", 8), c.w = put(c.w, r->run, strlen(r->run));
		c.w = put(c.w, "}:ti:", 5), c.w = put(c.w, r->task, strlen(r->task));
		*c.w++ = ':', c.w = put_ll(c.w, r->idx);
		call_end(&c, &c.nkey, start);
		call_num(&c, &c.narg, r->attempt);
		if (result_ok(r)) { /* attempt, output, started, finished */
			call_str(&c, &c.narg, r->output ? r->output : "null",
				 r->output ? r->output_len : 4);
			call_num(&c, &c.narg, r->started_ms);
			call_num(&c, &c.narg, r->finished_ms);
			continue;
		}
		call_str(&c, &c.narg, r->status, strlen(r->status));
		call_str(&c, &c.narg, r->output ? r->output : "null", r->output ? r->output_len : 4);
		call_str(&c, &c.narg, r->error ? r->error : "", r->error ? strlen(r->error) : 0);
		call_num(&c, &c.narg, r->exit_code);
		call_str(&c, &c.narg, result_worker(r), strlen(result_worker(r)));
		call_num(&c, &c.narg, r->started_ms);
		call_num(&c, &c.narg, r->finished_ms);
		call_num(&c, &c.narg, r->retry_delay_ms);
	}
	*w = c.w;
	return (int)c.narg;
}

enum sl_err sl_state_result_apply_starting(struct sl_state *st, const struct sl_result_in *res,
					   size_t n, struct sl_transition *out, enum sl_err *errs,
					   const struct sl_node_start_in *starts, const size_t *after,
					   size_t nstarts, struct sl_transition *start_out,
					   enum sl_err *start_errs)
{
	/* at most one call per SL_RESULTS_PER_CALL results, plus one per start and one more
	 * result call per start that splits one */
	size_t cap = (n + SL_RESULTS_PER_CALL - 1) / SL_RESULTS_PER_CALL + 2 * nstarts, bytes = 0;
	size_t total = 0;
	const char **cv = NULL, **names = NULL;
	size_t *clen = NULL, used = 0, *call_of = NULL, *at_of = NULL, *start_call = NULL;
	const char *const **argvp = NULL;
	const size_t **lensp = NULL;
	int *argc = NULL, *nkeys = NULL;
	redisReply **replies = NULL;
	struct args *sa = NULL;
	char *buf = NULL, *w;
	enum sl_err err = SL_ERR_NOMEM;

	for (size_t i = 0; i < n; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		errs[i] = SL_ERR_NOMEM;
		bytes += result_args_size(&res[i]);
	}
	for (size_t j = 0; j < nstarts; j++) {
		memset(&start_out[j], 0, sizeof(start_out[j]));
		start_errs[j] = SL_ERR_NOMEM;
	}
	if (!cap)
		return SL_OK;
	cv = malloc(sizeof(*cv) * (RESULT_STRINGS(n) + 2 * cap));
	clen = malloc(sizeof(*clen) * (RESULT_STRINGS(n) + 2 * cap));
	call_of = malloc(sizeof(*call_of) * (n ? n : 1));
	at_of = malloc(sizeof(*at_of) * (n ? n : 1));
	start_call = malloc(sizeof(*start_call) * (nstarts ? nstarts : 1));
	names = calloc(cap, sizeof(*names));
	argvp = calloc(cap, sizeof(*argvp));
	lensp = calloc(cap, sizeof(*lensp));
	argc = calloc(cap, sizeof(*argc));
	nkeys = calloc(cap, sizeof(*nkeys));
	replies = calloc(cap, sizeof(*replies));
	sa = calloc(nstarts ? nstarts : 1, sizeof(*sa));
	buf = malloc(bytes ? bytes : 1);
	if (!cv || !clen || !call_of || !at_of || !start_call || !names || !argvp || !lensp ||
	    !argc || !nkeys || !replies || !sa || !buf)
		goto out;
	w = buf;
	/* Results up to each start's, in calls of SL_RESULTS_PER_CALL at most, then the start. */
	for (size_t first = 0, j = 0; first < n || j < nstarts;) {
		size_t end = j < nstarts && after[j] < n ? after[j] + 1 : n;

		while (first < end) {
			size_t count = end - first < SL_RESULTS_PER_CALL ? end - first
									: SL_RESULTS_PER_CALL;
			const char **av = cv + used;
			size_t *al = clen + used;

			for (size_t i = first; i < first + count; i++) {
				call_of[i] = total;
				at_of[i] = i - first;
			}
			names[total] = "result_apply";
			argvp[total] = av;
			lensp[total] = al;
			argc[total] = result_call_args(res + first, count, &w, av, al, &nkeys[total]);
			used += (size_t)argc[total++];
			first += count;
		}
		if (j == nstarts)
			continue;
		if (node_start_args(&sa[j], &starts[j], "ready"))
			goto out;
		start_call[j] = total;
		names[total] = "node_start";
		argvp[total] = sa[j].v;
		lensp[total] = sa[j].len;
		argc[total] = sa[j].n;
		nkeys[total++] = 2;
		j++;
	}
	state_eval_pipeline_of(st, names, total, nkeys, argc, argvp, lensp, replies);
	err = SL_OK;
	for (size_t i = 0; i < n; i++) {
		const redisReply *r = replies[call_of[i]];
		size_t at = at_of[i];

		if (r && r->type == REDIS_REPLY_ARRAY && at < r->elements)
			errs[i] = reply_to_transition(r->element[at], &out[i]);
		else
			errs[i] = SL_ERR_REDIS;
		if (errs[i] != SL_OK && err == SL_OK)
			err = errs[i];
	}
	for (size_t j = 0; j < nstarts; j++) {
		redisReply *r = replies[start_call[j]];

		start_errs[j] = r ? reply_to_transition(r, &start_out[j]) : SL_ERR_REDIS;
		if (start_errs[j] == SL_OK)
			start_errs[j] = node_start_rest(st, &starts[j], &start_out[j]);
		if (start_errs[j] != SL_OK && err == SL_OK)
			err = start_errs[j];
	}
out:
	for (size_t c = 0; replies && c < total; c++)
		if (replies[c])
			freeReplyObject(replies[c]);
	for (size_t j = 0; sa && j < nstarts; j++)
		args_free(&sa[j]);
	free(sa);
	free(start_call);
	free(at_of);
	free(call_of);
	free(replies);
	free(buf);
	free(argc);
	free(nkeys);
	free(lensp);
	free(argvp);
	free(names);
	free(clen);
	free(cv);
	return err;
}

enum sl_err sl_state_result_apply_many(struct sl_state *st, const struct sl_result_in *res,
				       size_t n, struct sl_transition *out, enum sl_err *errs)
{
	return sl_state_result_apply_starting(st, res, n, out, errs, NULL, NULL, 0, NULL, NULL);
}

enum sl_err sl_state_result_apply(struct sl_state *st, const struct sl_result_in *res,
				  struct sl_transition *out)
{
	enum sl_err err;

	sl_state_result_apply_many(st, res, 1, out, &err);
	return err;
}

enum sl_err sl_state_timers_due(struct sl_state *st, int64_t now_ms, int limit,
				struct sl_due **out, size_t *n)
{
	char now[24], lim[16];
	const char *argv[3];
	redisReply *r;
	struct sl_due *due = NULL;
	size_t pairs;
	enum sl_err err;

	*out = NULL;
	*n = 0;
	snprintf(now, sizeof(now), "%lld", (long long)now_ms);
	snprintf(lim, sizeof(lim), "%d", limit);
	argv[0] = "sluice:timers";
	argv[1] = now;
	argv[2] = lim;
	if ((err = state_eval_pairs(st, "timers_due", 3, argv, sizeof(*due), &r, (void **)&due,
				    &pairs)) != SL_OK)
		goto out;
	for (size_t p = 0; p < pairs; p++) {
		size_t i = 2 * p;
		char buf[STATE_KEY_MAX];
		char *run, *task, *idx, *att, *save = NULL;
		struct sl_due *d = &due[*n];

		sl_strlcpy(buf, r->element[i]->str, sizeof(buf));
		run = strtok_r(buf, "|", &save);
		task = strtok_r(NULL, "|", &save);
		idx = strtok_r(NULL, "|", &save);
		att = strtok_r(NULL, "|", &save);
		if (!run || !task || !idx || !att)
			continue;
		d->run = strdup(run);
		d->task = strdup(task);
		d->idx = atoi(idx);
		d->attempt = (unsigned)strtoul(att, NULL, 10);
		d->len = r->element[i + 1]->len;
		d->dispatch = malloc(d->len ? d->len : 1);
		if (!d->run || !d->task || !d->dispatch) {
			free(d->run);
			free(d->task);
			free(d->dispatch);
			err = SL_ERR_NOMEM;
			break;
		}
		memcpy(d->dispatch, r->element[i + 1]->str, d->len);
		(*n)++;
	}
	*out = due;
	due = NULL;
out:
	free(due);
	freeReplyObject(r);
	return err;
}

void sl_due_free(struct sl_due *due, size_t n)
{
	if (!due)
		return;
	for (size_t i = 0; i < n; i++) {
		free(due[i].run);
		free(due[i].task);
		free(due[i].dispatch);
	}
	free(due);
}
