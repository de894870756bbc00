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
		    strcmp(r->element[0]->str, "added")) {
			err = SL_ERR_STALE;
			goto next;
		}
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

/* Number of result_apply arguments of one result, and how many of them are keys (a call
 * takes the keys of all its results, then their other arguments: see result_apply.lua). */
#define RESULT_ARGC 17
#define RESULT_NKEYS 4

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

/* Bytes result_args() writes for res at most. */
static size_t result_args_size(const struct sl_result_in *res)
{
	return 5 * strlen(res->run) + 3 * strlen(res->task) + 9 * 24 + 96;
}

/* Fills v/len with the RESULT_ARGC arguments of res; keys and numbers are written to buf
 * (result_args_size(res) bytes), strings of res are borrowed. */
static void result_args(const struct sl_result_in *res, char *buf, const char **v, size_t *len)
{
	size_t rl = strlen(res->run), tl = strlen(res->task);
	char *w = buf;
	int n = 0;

#define ARG_BEGIN() (v[n] = w)
#define ARG_END() (len[n] = (size_t)(w - v[n]), n++)
#define ARG_STR(s, l) (v[n] = (s), len[n] = (l), n++)
#define ARG_NUM(x) (ARG_BEGIN(), w = put_ll(w, (long long)(x)), ARG_END())
	/* KEYS: run, node, instance, timers */
	ARG_BEGIN();
	w = put(w, "sluice:{", 8), w = put(w, res->run, rl), w = put(w, "}:run", 5);
	ARG_END();
	ARG_BEGIN();
	w = put(w, "sluice:{", 8), w = put(w, res->run, rl), w = put(w, "}:node:", 7);
	w = put(w, res->task, tl);
	ARG_END();
	ARG_BEGIN();
	w = put(w, "sluice:{", 8), w = put(w, res->run, rl), w = put(w, "}:ti:", 5);
	w = put(w, res->task, tl), *w++ = ':', w = put_ll(w, res->idx);
	ARG_END();
	ARG_STR("sluice:timers", 13);
	/* ARGV */
	ARG_NUM(res->attempt);
	ARG_STR(res->status, strlen(res->status));
	if (res->output)
		ARG_STR(res->output, res->output_len);
	else
		ARG_STR("null", 4);
	ARG_STR(res->error ? res->error : "", res->error ? strlen(res->error) : 0);
	ARG_NUM(res->exit_code);
	ARG_STR(res->worker ? res->worker : "", res->worker ? strlen(res->worker) : 0);
	ARG_NUM(res->started_ms);
	ARG_NUM(res->finished_ms);
	ARG_NUM(res->now_ms);
	ARG_NUM(res->retry_delay_ms);
	ARG_BEGIN(); /* timer member of the retry: "<R>|<task>|<idx>|<next attempt>" */
	w = put(w, res->run, rl), *w++ = '|', w = put(w, res->task, tl), *w++ = '|';
	w = put_ll(w, res->idx), *w++ = '|', w = put_ll(w, (long long)res->attempt + 1);
	ARG_END();
	ARG_BEGIN();
	w = put(w, "sluice:{", 8), w = put(w, res->run, rl), w = put(w, "}:node:", 7);
	ARG_END();
	ARG_STR(res->task, tl);
#undef ARG_BEGIN
#undef ARG_END
#undef ARG_STR
#undef ARG_NUM
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
	const char **v = NULL, **cv = NULL, **names = NULL;
	size_t *len = NULL, *clen = NULL, *call_of = NULL, *at_of = NULL, *start_call = NULL;
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
	v = malloc(sizeof(*v) * (n ? n : 1) * RESULT_ARGC);
	len = malloc(sizeof(*len) * (n ? n : 1) * RESULT_ARGC);
	cv = malloc(sizeof(*cv) * (n ? n : 1) * RESULT_ARGC);
	clen = malloc(sizeof(*clen) * (n ? n : 1) * RESULT_ARGC);
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
	if (!v || !len || !cv || !clen || !call_of || !at_of || !start_call || !names || !argvp || !lensp ||
	    !argc || !nkeys || !replies || !sa || !buf)
		goto out;
	w = buf;
	for (size_t i = 0; i < n; i++) {
		result_args(&res[i], w, v + i * RESULT_ARGC, len + i * RESULT_ARGC);
		w += result_args_size(&res[i]);
	}
	/* Results up to each start's, in calls of SL_RESULTS_PER_CALL at most, then the start. */
	for (size_t first = 0, j = 0; first < n || j < nstarts;) {
		size_t end = j < nstarts && after[j] < n ? after[j] + 1 : n;

		while (first < end) {
			/* Call total: the keys of its results, then their other arguments
			 * (result_apply.lua). */
			size_t count = end - first < SL_RESULTS_PER_CALL ? end - first
									: SL_RESULTS_PER_CALL;
			const char **av = cv + first * RESULT_ARGC;
			size_t *al = clen + first * RESULT_ARGC, k = 0;

			for (int part = 0; part < 2; part++)
				for (size_t i = first; i < first + count; i++)
					for (int a = part ? RESULT_NKEYS : 0;
					     a < (part ? RESULT_ARGC : RESULT_NKEYS); a++, k++) {
						av[k] = v[i * RESULT_ARGC + (size_t)a];
						al[k] = len[i * RESULT_ARGC + (size_t)a];
					}
			for (size_t i = first; i < first + count; i++) {
				call_of[i] = total;
				at_of[i] = i - first;
			}
			names[total] = "result_apply";
			argvp[total] = av;
			lensp[total] = al;
			argc[total] = (int)(count * RESULT_ARGC);
			nkeys[total++] = (int)(count * RESULT_NKEYS);
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
	free(len);
	free(v);
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
