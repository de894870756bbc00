/* lease.c - task leases: acquire for one attempt, renew, release (all compare-and-set), with
 * the concurrency-tag slots of the task held alongside and the run's set of held leases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/util.h"
#include "state_int.h"

#define LEASE_SPEC_MAX 1024

/* The concurrency tags of one task (from "sluice:{R}:limits"), parsed in place. */
struct tagset {
	char raw[LEASE_SPEC_MAX]; /* the spec as stored ("" for none): lease_acquire checks it */
	char spec[LEASE_SPEC_MAX];
	const char *tag[SL_STATE_MAX_TAGS];
	const char *limit[SL_STATE_MAX_TAGS];
	char sem[SL_STATE_MAX_TAGS][STATE_KEY_MAX];
	char wait[SL_STATE_MAX_TAGS][STATE_KEY_MAX];
	int n;
};

/* Parses a "tag=limit,..." spec ("" = none) into ts. */
static void tags_parse_spec(const char *spec, struct tagset *ts)
{
	char *save = NULL;

	ts->n = 0;
	sl_strlcpy(ts->raw, spec, sizeof(ts->raw));
	sl_strlcpy(ts->spec, spec, sizeof(ts->spec));
	for (char *e = strtok_r(ts->spec, ",", &save); e && ts->n < SL_STATE_MAX_TAGS;
	     e = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(e, '=');
		if (!eq || eq == e || !eq[1])
			continue;
		*eq = '\0';
		ts->tag[ts->n] = e;
		ts->limit[ts->n] = eq + 1;
		snprintf(ts->sem[ts->n], STATE_KEY_MAX, "sluice:sem:%s", e);
		snprintf(ts->wait[ts->n], STATE_KEY_MAX, "sluice:semwait:%s", e);
		ts->n++;
	}
}

/* Reads and parses the task's "tag=limit,..." entry; none is an empty set. */
static enum sl_err tags_load(struct sl_state *st, const char *run, const char *task,
			     struct tagset *ts)
{
	redisReply *r = sl_state_command(st, "HGET sluice:{%s}:limits %s", run, task);

	ts->n = 0;
	if (!r)
		return SL_ERR_REDIS;
	tags_parse_spec(r->type == REDIS_REPLY_STRING ? r->str : "", ts);
	freeReplyObject(r);
	return SL_OK;
}

static void slot_holder(char *buf, size_t cap, const char *run, const char *task, int idx,
			unsigned attempt)
{
	snprintf(buf, cap, "%s|%s|%d|%u", run, task, idx, attempt);
}

/* The keys and arguments of one lease_acquire call. ts must outlive the arguments (they
 * point into it), as must run, task and worker. */
struct acquire_args {
	char run_key[STATE_KEY_MAX], ti_key[STATE_KEY_MAX], lease_key[STATE_KEY_MAX],
		set_key[STATE_KEY_MAX], limits_key[STATE_KEY_MAX], member[STATE_KEY_MAX],
		queued_key[STATE_KEY_MAX];
	char att[16], ttl[24], now[24], ntags[8];
	/* This call's id (lease_call_id()): the same call made again (its reply lost) repeats
	 * it, and the script tells it from a copy of the dispatch by that. */
	char call[48];
	/* The script's keys and arguments (argc of them, nkeys keys first): 5 + 2n + 1 keys (and
	 * the queue's index of waiting dispatches) and 9 + 2n arguments for n tags. */
	const char *argv[16 + 4 * SL_STATE_MAX_TAGS];
	int nkeys, argc;
};

static void acquire_args_fill(struct acquire_args *a, const struct tagset *ts, const char *run,
			      const char *task, int idx, unsigned attempt, const char *worker,
			      long ttl_ms, const char *queue, const char *call)
{
	state_key(a->run_key, sizeof(a->run_key), run, "run");
	state_key(a->ti_key, sizeof(a->ti_key), run, "ti:%s:%d", task, idx);
	state_key(a->lease_key, sizeof(a->lease_key), run, "lease:%s:%d", task, idx);
	state_key(a->set_key, sizeof(a->set_key), run, "leases");
	state_key(a->limits_key, sizeof(a->limits_key), run, "limits");
	slot_holder(a->member, sizeof(a->member), run, task, idx, attempt);
	snprintf(a->att, sizeof(a->att), "%u", attempt);
	snprintf(a->ttl, sizeof(a->ttl), "%ld", ttl_ms);
	snprintf(a->now, sizeof(a->now), "%lld", (long long)sl_now_ms());
	if (call != a->call)
		sl_strlcpy(a->call, call, sizeof(a->call));
	snprintf(a->ntags, sizeof(a->ntags), "%d", ts->n);
	a->argc = 0;
	a->argv[a->argc++] = a->run_key;
	a->argv[a->argc++] = a->ti_key;
	a->argv[a->argc++] = a->lease_key;
	a->argv[a->argc++] = a->set_key;
	a->argv[a->argc++] = a->limits_key;
	for (int i = 0; i < ts->n; i++)
		a->argv[a->argc++] = ts->sem[i];
	for (int i = 0; i < ts->n; i++)
		a->argv[a->argc++] = ts->wait[i];
	if (ts->n)
		a->argv[a->argc++] = "sluice:semtags";
	if (queue) {
		snprintf(a->queued_key, sizeof(a->queued_key), "sluice:queued:%s", queue);
		a->argv[a->argc++] = a->queued_key;
	}
	a->nkeys = a->argc;
	a->argv[a->argc++] = a->att;
	a->argv[a->argc++] = worker;
	a->argv[a->argc++] = a->ttl;
	a->argv[a->argc++] = a->now;
	a->argv[a->argc++] = a->ntags;
	a->argv[a->argc++] = a->member;
	for (int i = 0; i < ts->n; i++)
		a->argv[a->argc++] = ts->limit[i];
	for (int i = 0; i < ts->n; i++)
		a->argv[a->argc++] = ts->tag[i];
	a->argv[a->argc++] = task;
	a->argv[a->argc++] = ts->raw;
	a->argv[a->argc++] = a->call;
}

/* A new id for one lease_acquire call of this connection: the time and a count. */
static void lease_call_id(struct sl_state *st, char *buf, size_t cap)
{
	snprintf(buf, cap, "%lld.%llu", (long long)sl_now_ms(), ++st->lease_calls);
}

/* The task's tags when lease_acquire answered that they are not those it was called with
 * ("tags:<spec>", nothing done), else NULL. */
static const char *tags_answer(const redisReply *r)
{
	if (r->type != REDIS_REPLY_STATUS && r->type != REDIS_REPLY_STRING)
		return NULL;
	return strncmp(r->str, "tags:", 5) ? NULL : r->str + 5;
}

/* The lease_acquire reply as a status: ok, busy/full, "tags:" (not a lease answer: the call
 * named other tags than the task's) a Redis error, anything else (stale, held: a copy of what
 * the caller holds the lease of) stale. */
static enum sl_err acquire_reply(const redisReply *r)
{
	if (r->type != REDIS_REPLY_STATUS && r->type != REDIS_REPLY_STRING)
		return SL_ERR_REDIS;
	if (!strcmp(r->str, "ok"))
		return SL_OK;
	if (!strcmp(r->str, "busy") || !strcmp(r->str, "full"))
		return SL_ERR_BUSY;
	return tags_answer(r) ? SL_ERR_REDIS : SL_ERR_STALE;
}

/* A task without concurrency tags: what every lease is first asked with. */
static const struct tagset no_tags;

/* sl_state_lease_acquire() as the call with id `call` (lease_call_id()): a call made again
 * after its reply was lost passes the id of the first, so that the script tells it from a
 * copy of the dispatch. */
static enum sl_err lease_acquire_call(struct sl_state *st, const char *run, const char *task,
				      int idx, unsigned attempt, const char *worker, long ttl_ms,
				      const char *call)
{
	struct acquire_args *a = NULL;
	struct tagset *ts = NULL;
	const struct tagset *use = &no_tags;
	redisReply *r = NULL;
	const char *spec;
	enum sl_err err;

	if (!(ts = calloc(1, sizeof(*ts))) || !(a = calloc(1, sizeof(*a)))) {
		err = SL_ERR_NOMEM;
		goto out;
	}
	/* Asked as untagged first; the script answers a tagged task's tags, and is asked again. */
	for (int round = 0; round < 2; round++) {
		acquire_args_fill(a, use, run, task, idx, attempt, worker, ttl_ms, NULL, call);
		err = SL_ERR_REDIS;
		if (!(r = state_eval(st, "lease_acquire", a->nkeys, a->argc, a->argv, NULL)))
			goto out;
		if (round == 0 && (spec = tags_answer(r))) {
			tags_parse_spec(spec, ts);
			use = ts;
			freeReplyObject(r);
			r = NULL;
			continue;
		}
		/* Tags again: they changed between the two calls, which limits written before any
		 * dispatch of the task rule out (a bug, or a hand edit of the limits hash). */
		if ((err = acquire_reply(r)) == SL_ERR_REDIS && tags_answer(r))
			SL_WARN("lease of %s/%s[%d]: its concurrency tags changed meanwhile (%.200s)",
				run, task, idx, r->str);
		break;
	}
out:
	if (r)
		freeReplyObject(r);
	free(a);
	free(ts);
	return err;
}

enum sl_err sl_state_lease_acquire(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker, long ttl_ms)
{
	char call[48];

	lease_call_id(st, call, sizeof(call));
	return lease_acquire_call(st, run, task, idx, attempt, worker, ttl_ms, call);
}

/* The requests again[0..nagain) were answered their task's tags: parses the tags into ts
 * (room for nagain; one per distinct (run, task), first[k] the request tagset k came from),
 * fills their calls again (a) and lists them first in argv/argc/nkeys. */
static void refill_tagged(const struct sl_lease_req *reqs, const char *worker,
			  const size_t *again, size_t nagain, redisReply **replies,
			  struct tagset *ts, size_t *first, struct acquire_args *a,
			  const char *const **argv, int *argc, int *nkeys)
{
	size_t ntasks = 0;

	for (size_t m = 0; m < nagain; m++) {
		size_t i = again[m], k = 0;
		const struct sl_lease_req *q = &reqs[i];

		while (k < ntasks && (strcmp(reqs[first[k]].task, q->task) ||
				      strcmp(reqs[first[k]].run, q->run)))
			k++;
		if (k == ntasks) {
			tags_parse_spec(tags_answer(replies[i]), &ts[k]);
			first[ntasks++] = i;
		}
		freeReplyObject(replies[i]);
		replies[i] = NULL;
		acquire_args_fill(&a[i], &ts[k], q->run, q->task, q->idx, q->attempt, worker,
				  q->ttl_ms, q->queue, a[i].call);
		argv[m] = a[i].argv;
		argc[m] = a[i].argc;
		nkeys[m] = a[i].nkeys;
	}
}

enum sl_err sl_state_lease_acquire_many(struct sl_state *st, const char *worker,
					 struct sl_lease_req *reqs, size_t n)
{
	struct tagset *ts = NULL;
	struct acquire_args *a = NULL;
	redisReply **replies = NULL, **tagged = NULL;
	const char *const **argv = NULL;
	int *argc = NULL, *nkeys = NULL;
	size_t *again = NULL, *first = NULL, nagain = 0;
	enum sl_err err = SL_OK;

	for (size_t i = 0; i < n; i++)
		reqs[i].err = SL_ERR_REDIS;
	if (n == 0)
		return SL_OK;
	/* Not zeroed: ~4 KB each, and every field read is written first. */
	a = malloc(n * sizeof(*a));
	replies = calloc(n, sizeof(*replies));
	tagged = calloc(n, sizeof(*tagged));
	argv = calloc(n, sizeof(*argv));
	argc = calloc(n, sizeof(*argc));
	nkeys = calloc(n, sizeof(*nkeys));
	again = malloc(n * sizeof(*again));
	first = malloc(n * sizeof(*first));
	if (!a || !replies || !tagged || !argv || !argc || !nkeys || !again || !first) {
		err = SL_ERR_NOMEM;
		for (size_t i = 0; i < n; i++)
			reqs[i].err = err;
		goto out;
	}
	/* Round trip 1: every lease asked as untagged, the scripts answered (and fsync'ed)
	 * together by Redis; a tagged task's call does nothing and answers its tags. */
	for (size_t i = 0; i < n; i++) {
		lease_call_id(st, a[i].call, sizeof(a[i].call));
		acquire_args_fill(&a[i], &no_tags, reqs[i].run, reqs[i].task, reqs[i].idx,
				  reqs[i].attempt, worker, reqs[i].ttl_ms, reqs[i].queue,
				  a[i].call);
		argv[i] = a[i].argv;
		argc[i] = a[i].argc;
		nkeys[i] = a[i].nkeys;
	}
	state_eval_pipeline(st, "lease_acquire", n, nkeys, argc, argv, NULL, replies);
	/* Round trip 2, for tagged tasks only: asked again with the tags answered. */
	for (size_t i = 0; i < n; i++)
		if (replies[i] && tags_answer(replies[i]))
			again[nagain++] = i;
	if (nagain && !(ts = malloc(nagain * sizeof(*ts)))) {
		err = SL_ERR_NOMEM;
		nagain = 0; /* their "tags:" replies fail below (a Redis error): one call each */
	}
	if (nagain) {
		refill_tagged(reqs, worker, again, nagain, replies, ts, first, a, argv, argc,
			      nkeys);
		state_eval_pipeline(st, "lease_acquire", nagain, nkeys, argc, argv, NULL, tagged);
		for (size_t m = 0; m < nagain; m++)
			replies[again[m]] = tagged[m];
	}
	/* Anything but a lease answer (Redis still failing after the pipeline's own reconnects
	 * and script reloads) goes through the one-call path, as the same call (same id). A
	 * call that ran but whose reply was lost answers ok again to its holder (it finds its
	 * own id), and stale or busy where it had said busy or full: the dispatch is dropped
	 * either way. Once that fails too, Redis is down: the rest fail at once. */
	for (size_t i = 0; i < n; i++) {
		struct sl_lease_req *q = &reqs[i];

		if (replies[i] && (q->err = acquire_reply(replies[i])) != SL_ERR_REDIS)
			continue;
		if (err == SL_OK) {
			q->err = lease_acquire_call(st, q->run, q->task, q->idx, q->attempt,
						    worker, q->ttl_ms, a[i].call);
			if (q->err != SL_OK && q->err != SL_ERR_BUSY && q->err != SL_ERR_STALE)
				err = q->err;
		} else {
			q->err = err;
		}
	}
out:
	for (size_t i = 0; replies && i < n; i++)
		if (replies[i])
			freeReplyObject(replies[i]);
	free(first);
	free(again);
	free(nkeys);
	free(argc);
	free(argv);
	free(tagged);
	free(replies);
	free(a);
	free(ts);
	return err;
}

enum sl_err sl_state_lease_renew(struct sl_state *st, const char *run, const char *task,
				 int idx, unsigned attempt, const char *worker, long ttl_ms)
{
	char lease_key[STATE_KEY_MAX], holder[256], ttl[24], member[STATE_KEY_MAX];
	const char *argv[4 + SL_STATE_MAX_TAGS];
	struct tagset *ts = NULL;
	redisReply *r = NULL;
	int argc = 0, nkeys;
	enum sl_err err;

	if (!(ts = calloc(1, sizeof(*ts))))
		return SL_ERR_NOMEM;
	if ((err = tags_load(st, run, task, ts)) != SL_OK)
		goto out;
	state_key(lease_key, sizeof(lease_key), run, "lease:%s:%d", task, idx);
	snprintf(holder, sizeof(holder), "%s:%u", worker, attempt);
	snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
	slot_holder(member, sizeof(member), run, task, idx, attempt);
	argv[argc++] = lease_key;
	for (int i = 0; i < ts->n; i++)
		argv[argc++] = ts->sem[i];
	nkeys = argc;
	argv[argc++] = holder;
	argv[argc++] = ttl;
	argv[argc++] = member;
	err = SL_ERR_REDIS;
	if (!(r = state_eval(st, "lease_renew", nkeys, argc, argv, NULL)))
		goto out;
	err = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? SL_OK : SL_ERR_STALE;
out:
	if (r)
		freeReplyObject(r);
	free(ts);
	return err;
}

enum sl_err sl_state_lease_release(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker)
{
	char lease_key[STATE_KEY_MAX], set_key[STATE_KEY_MAX], holder[256], member[STATE_KEY_MAX];
	const char *argv[4 + SL_STATE_MAX_TAGS];
	struct tagset *ts = NULL;
	redisReply *r = NULL;
	int argc = 0, nkeys;
	enum sl_err err;

	if (!(ts = calloc(1, sizeof(*ts))))
		return SL_ERR_NOMEM;
	if ((err = tags_load(st, run, task, ts)) != SL_OK)
		goto out;
	state_key(lease_key, sizeof(lease_key), run, "lease:%s:%d", task, idx);
	state_key(set_key, sizeof(set_key), run, "leases");
	snprintf(holder, sizeof(holder), "%s:%u", worker, attempt);
	slot_holder(member, sizeof(member), run, task, idx, attempt);
	argv[argc++] = lease_key;
	argv[argc++] = set_key;
	for (int i = 0; i < ts->n; i++)
		argv[argc++] = ts->sem[i];
	nkeys = argc;
	argv[argc++] = holder;
	argv[argc++] = member;
	err = SL_ERR_REDIS;
	if (!(r = state_eval(st, "lease_release", nkeys, argc, argv, NULL)))
		goto out;
	err = SL_OK;
out:
	if (r)
		freeReplyObject(r);
	free(ts);
	return err;
}

enum sl_err sl_state_limits_set(struct sl_state *st, const char *run, const char *task,
				const char *spec)
{
	redisReply *r = sl_state_command(st, "HSET sluice:{%s}:limits %s %s", run, task, spec);

	if (!r)
		return SL_ERR_REDIS;
	freeReplyObject(r);
	return SL_OK;
}

enum sl_err sl_state_sem_wake(struct sl_state *st, long reserve_ms, char ***out, size_t *n)
{
	redisReply *tags = NULL, *r = NULL;
	char reserve[24], sem[STATE_KEY_MAX], wait[STATE_KEY_MAX];
	char **v = NULL;
	size_t cnt = 0, cap = 0;
	enum sl_err err = SL_ERR_REDIS;

	*out = NULL;
	*n = 0;
	snprintf(reserve, sizeof(reserve), "%ld", reserve_ms);
	if (!(tags = sl_state_command(st, "HKEYS sluice:semtags")) ||
	    tags->type != REDIS_REPLY_ARRAY)
		goto out;
	for (size_t t = 0; t < tags->elements; t++) {
		const char *tag = tags->element[t]->str;
		const char *argv[6];

		if (tags->element[t]->type != REDIS_REPLY_STRING)
			continue;
		snprintf(sem, sizeof(sem), "sluice:sem:%s", tag);
		snprintf(wait, sizeof(wait), "sluice:semwait:%s", tag);
		argv[0] = sem;
		argv[1] = wait;
		argv[2] = "sluice:semtags";
		argv[3] = "sluice:active";
		argv[4] = tag;
		argv[5] = reserve;
		if (!(r = state_eval(st, "sem_wake", 4, 6, argv, NULL)))
			goto out;
		for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
			if (r->element[i]->type != REDIS_REPLY_STRING)
				continue;
			if (cnt == cap) {
				size_t nc = cap ? cap * 2 : 8;
				char **nv = realloc(v, nc * sizeof(*nv));
				if (!nv) {
					err = SL_ERR_NOMEM;
					goto out;
				}
				v = nv;
				cap = nc;
			}
			if (!(v[cnt] = strdup(r->element[i]->str))) {
				err = SL_ERR_NOMEM;
				goto out;
			}
			cnt++;
		}
		freeReplyObject(r);
		r = NULL;
	}
	*out = v;
	*n = cnt;
	v = NULL;
	cnt = 0;
	err = SL_OK;
out:
	sl_state_strv_free(v, cnt);
	if (r)
		freeReplyObject(r);
	if (tags)
		freeReplyObject(tags);
	return err;
}

void sl_state_strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

enum sl_err sl_state_sem_unreserve(struct sl_state *st, const char *holder)
{
	struct tagset *ts = NULL;
	char run[256], task[256];
	const char *bar1, *bar2;
	enum sl_err err = SL_ERR_INVALID;

	/* "<R>|<task>|<idx>|<attempt>" */
	if (!(bar1 = strchr(holder, '|')) || !(bar2 = strchr(bar1 + 1, '|')) ||
	    (size_t)(bar1 - holder) >= sizeof(run) || (size_t)(bar2 - bar1 - 1) >= sizeof(task))
		return SL_ERR_INVALID;
	memcpy(run, holder, (size_t)(bar1 - holder));
	run[bar1 - holder] = '\0';
	memcpy(task, bar1 + 1, (size_t)(bar2 - bar1 - 1));
	task[bar2 - bar1 - 1] = '\0';
	if (!(ts = calloc(1, sizeof(*ts))))
		return SL_ERR_NOMEM;
	if ((err = tags_load(st, run, task, ts)) != SL_OK)
		goto out;
	for (int i = 0; i < ts->n; i++) {
		redisReply *r = sl_state_command(st, "ZREM %s %s", ts->sem[i], holder);
		if (!r) {
			err = SL_ERR_REDIS;
			goto out;
		}
		freeReplyObject(r);
	}
out:
	free(ts);
	return err;
}

enum sl_err sl_state_queued_add(struct sl_state *st, const char *queue, const char *run,
				const char *task, const int *idx, size_t n, int64_t now_ms)
{
	char key[STATE_KEY_MAX], score[24];
	char (*member)[STATE_KEY_MAX] = NULL;
	const char **argv = NULL;
	redisReply *r = NULL;
	enum sl_err err = SL_ERR_NOMEM;

	if (n == 0)
		return SL_OK;
	snprintf(key, sizeof(key), "sluice:queued:%s", queue);
	snprintf(score, sizeof(score), "%lld", (long long)now_ms);
	if (!(member = malloc(n * sizeof(*member))) || !(argv = malloc((2 + 2 * n) * sizeof(*argv))))
		goto out;
	argv[0] = "ZADD";
	argv[1] = key;
	for (size_t i = 0; i < n; i++) {
		state_key(member[i], sizeof(member[i]), run, "ti:%s:%d", task, idx[i]);
		argv[2 + 2 * i] = score;
		argv[3 + 2 * i] = member[i];
	}
	err = SL_ERR_REDIS;
	if ((r = sl_state_commandargv(st, (int)(2 + 2 * n), argv, NULL)) && r->type == REDIS_REPLY_INTEGER)
		err = SL_OK;
out:
	if (r)
		freeReplyObject(r);
	free(argv);
	free(member);
	return err;
}

enum sl_err sl_state_queued_scan(struct sl_state *st, const char *queue, int scan, int max,
				 void (*each)(const void *bytes, size_t len, void *ud), void *ud)
{
	char key[STATE_KEY_MAX], nscan[16], nmax[16];
	const char *argv[3] = {key, nscan, nmax};
	redisReply *r;

	snprintf(key, sizeof(key), "sluice:queued:%s", queue);
	snprintf(nscan, sizeof(nscan), "%d", scan);
	snprintf(nmax, sizeof(nmax), "%d", max);
	if (!(r = state_eval(st, "queued_scan", 1, 3, argv, NULL)))
		return SL_ERR_REDIS;
	if (r->type != REDIS_REPLY_ARRAY) {
		freeReplyObject(r);
		return SL_ERR_REDIS;
	}
	for (size_t i = 0; i < r->elements; i++)
		if (r->element[i]->type == REDIS_REPLY_STRING)
			each(r->element[i]->str, r->element[i]->len, ud);
	freeReplyObject(r);
	return SL_OK;
}
