/* lease.c - task leases: acquire for one attempt, renew, release (all compare-and-set), with
 * the concurrency-tag slots of the task held alongside and the run's set of held leases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/util.h"
#include "state_int.h"

#define LEASE_SPEC_MAX 1024

/* The concurrency tags of one task (from "sluice:{R}:limits"), parsed in place. */
struct tagset {
	char spec[LEASE_SPEC_MAX];
	const char *tag[SL_STATE_MAX_TAGS];
	const char *limit[SL_STATE_MAX_TAGS];
	char sem[SL_STATE_MAX_TAGS][STATE_KEY_MAX];
	char wait[SL_STATE_MAX_TAGS][STATE_KEY_MAX];
	int n;
};

/* Reads and parses the task's "tag=limit,..." entry; none is an empty set. */
static enum sl_err tags_load(struct sl_state *st, const char *run, const char *task,
			     struct tagset *ts)
{
	redisReply *r = sl_state_command(st, "HGET sluice:{%s}:limits %s", run, task);
	char *save = NULL;

	ts->n = 0;
	if (!r)
		return SL_ERR_REDIS;
	if (r->type == REDIS_REPLY_STRING)
		sl_strlcpy(ts->spec, r->str, sizeof(ts->spec));
	else
		ts->spec[0] = '\0';
	freeReplyObject(r);
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
	return SL_OK;
}

static void slot_holder(char *buf, size_t cap, const char *run, const char *task, int idx,
			unsigned attempt)
{
	snprintf(buf, cap, "%s|%s|%d|%u", run, task, idx, attempt);
}

enum sl_err sl_state_lease_acquire(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker, long ttl_ms)
{
	char run_key[STATE_KEY_MAX], ti_key[STATE_KEY_MAX], lease_key[STATE_KEY_MAX],
		set_key[STATE_KEY_MAX], member[STATE_KEY_MAX];
	char att[16], ttl[24], now[24], ntags[8];
	const char *argv[8 + 4 * SL_STATE_MAX_TAGS];
	struct tagset *ts = NULL;
	redisReply *r = NULL;
	int nkeys, argc;
	enum sl_err err;

	if (!(ts = calloc(1, sizeof(*ts))))
		return SL_ERR_NOMEM;
	if ((err = tags_load(st, run, task, ts)) != SL_OK)
		goto out;
	state_key(run_key, sizeof(run_key), run, "run");
	state_key(ti_key, sizeof(ti_key), run, "ti:%s:%d", task, idx);
	state_key(lease_key, sizeof(lease_key), run, "lease:%s:%d", task, idx);
	state_key(set_key, sizeof(set_key), run, "leases");
	slot_holder(member, sizeof(member), run, task, idx, attempt);
	snprintf(att, sizeof(att), "%u", attempt);
	snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
	snprintf(now, sizeof(now), "%lld", (long long)sl_now_ms());
	snprintf(ntags, sizeof(ntags), "%d", ts->n);
	argc = 0;
	argv[argc++] = run_key;
	argv[argc++] = ti_key;
	argv[argc++] = lease_key;
	argv[argc++] = set_key;
	for (int i = 0; i < ts->n; i++)
		argv[argc++] = ts->sem[i];
	for (int i = 0; i < ts->n; i++)
		argv[argc++] = ts->wait[i];
	if (ts->n)
		argv[argc++] = "sluice:semtags";
	nkeys = argc;
	argv[argc++] = att;
	argv[argc++] = worker;
	argv[argc++] = ttl;
	argv[argc++] = now;
	argv[argc++] = ntags;
	argv[argc++] = member;
	for (int i = 0; i < ts->n; i++)
		argv[argc++] = ts->limit[i];
	for (int i = 0; i < ts->n; i++)
		argv[argc++] = ts->tag[i];
	err = SL_ERR_REDIS;
	if (!(r = state_eval(st, "lease_acquire", nkeys, argc, argv, NULL)))
		goto out;
	if (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING) {
		if (!strcmp(r->str, "ok"))
			err = SL_OK;
		else if (!strcmp(r->str, "busy") || !strcmp(r->str, "full"))
			err = SL_ERR_BUSY;
		else
			err = SL_ERR_STALE;
	}
out:
	if (r)
		freeReplyObject(r);
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
