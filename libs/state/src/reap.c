/* reap.c - the reaper's two pops (lost instances, ready nodes never started) and the
 * stored dispatch of an instance for re-sends (Lua). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/util.h"
#include "state_int.h"

void sl_reaped_free(struct sl_reaped *r, size_t n)
{
	for (size_t i = 0; r && i < n; i++) {
		free(r[i].run);
		free(r[i].task);
		free(r[i].dispatch);
	}
	free(r);
}

void sl_ready_nodes_free(struct sl_ready_node *r, size_t n)
{
	for (size_t i = 0; r && i < n; i++) {
		free(r[i].run);
		free(r[i].task);
	}
	free(r);
}

/* Parses "<R>|<task>|<idx>|<attempt>|<reason>" into e. Returns 0 or -1. */
static int parse_member(const char *s, size_t len, struct sl_reaped *e)
{
	char buf[STATE_KEY_MAX], *f[5], *save = NULL;

	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	f[0] = strtok_r(buf, "|", &save);
	for (int i = 1; i < 5; i++)
		f[i] = f[i - 1] ? strtok_r(NULL, "|", &save) : NULL;
	if (!f[4])
		return -1;
	e->run = strdup(f[0]);
	e->task = strdup(f[1]);
	e->idx = atoi(f[2]);
	e->attempt = (unsigned)strtoul(f[3], NULL, 10);
	sl_strlcpy(e->reason, f[4], sizeof(e->reason));
	return e->run && e->task ? 0 : -1;
}

enum sl_err sl_state_reap_instances(struct sl_state *st, int64_t now_ms,
				    const struct sl_reap_opts *o, struct sl_reaped **out,
				    size_t *n)
{
	char v[6][24];
	const char *argv[7];
	redisReply *r;
	struct sl_reaped *res = NULL;
	size_t pairs;
	enum sl_err err;

	*out = NULL;
	*n = 0;
	snprintf(v[0], sizeof(v[0]), "%lld", (long long)now_ms);
	snprintf(v[1], sizeof(v[1]), "%ld", o->settle_ms);
	snprintf(v[2], sizeof(v[2]), "%ld", o->dispatch_timeout_ms);
	snprintf(v[3], sizeof(v[3]), "%ld", o->lease_grace_ms);
	snprintf(v[4], sizeof(v[4]), "%d", o->limit > 0 ? o->limit : 100);
	snprintf(v[5], sizeof(v[5]), "%d", o->max_lost);
	argv[0] = "sluice:active";
	for (int i = 0; i < 6; i++)
		argv[i + 1] = v[i];
	if ((err = state_eval_pairs(st, "reap_instances", 7, argv, sizeof(*res), &r,
				    (void **)&res, &pairs)) != SL_OK)
		goto out;
	for (size_t p = 0; p < pairs; p++) {
		size_t i = 2 * p;
		struct sl_reaped *e = &res[*n];
		redisReply *d = r->element[i + 1];

		if (r->element[i]->type != REDIS_REPLY_STRING ||
		    parse_member(r->element[i]->str, r->element[i]->len, e)) {
			free(e->run);
			free(e->task);
			memset(e, 0, sizeof(*e));
			SL_ERROR("reaper: unexpected reply element");
			continue;
		}
		e->len = d->type == REDIS_REPLY_STRING ? d->len : 0;
		if (!(e->dispatch = malloc(e->len ? e->len : 1))) {
			free(e->run);
			free(e->task);
			memset(e, 0, sizeof(*e));
			err = SL_ERR_NOMEM;
			break;
		}
		if (e->len)
			memcpy(e->dispatch, d->str, e->len);
		(*n)++;
	}
	*out = res;
	res = NULL;
out:
	free(res);
	freeReplyObject(r);
	return err;
}

enum sl_err sl_state_reap_nodes(struct sl_state *st, int64_t now_ms, long settle_ms, int limit,
				struct sl_ready_node **out, size_t *n)
{
	char now[24], settle[24], lim[16];
	const char *argv[4];
	redisReply *r;
	struct sl_ready_node *res = NULL;
	size_t pairs;
	enum sl_err err;

	*out = NULL;
	*n = 0;
	snprintf(now, sizeof(now), "%lld", (long long)now_ms);
	snprintf(settle, sizeof(settle), "%ld", settle_ms);
	snprintf(lim, sizeof(lim), "%d", limit > 0 ? limit : 100);
	argv[0] = "sluice:pending";
	argv[1] = now;
	argv[2] = settle;
	argv[3] = lim;
	if ((err = state_eval_pairs(st, "reap_nodes", 4, argv, sizeof(*res), &r, (void **)&res,
				    &pairs)) != SL_OK)
		goto out;
	for (size_t p = 0; p < pairs; p++) {
		size_t i = 2 * p;
		struct sl_ready_node *e = &res[*n];

		if (r->element[i]->type != REDIS_REPLY_STRING ||
		    r->element[i + 1]->type != REDIS_REPLY_STRING)
			continue;
		e->run = strdup(r->element[i]->str);
		e->task = strdup(r->element[i + 1]->str);
		if (!e->run || !e->task) {
			free(e->run);
			free(e->task);
			memset(e, 0, sizeof(*e));
			err = SL_ERR_NOMEM;
			break;
		}
		(*n)++;
	}
	*out = res;
	res = NULL;
out:
	free(res);
	freeReplyObject(r);
	return err;
}

enum sl_err sl_state_ti_dispatch(struct sl_state *st, const char *run, const char *task, int idx,
				 const char *state, unsigned attempt, void **out, size_t *len)
{
	char key[STATE_KEY_MAX], att[16];
	const char *argv[3];
	redisReply *r;
	enum sl_err err = SL_ERR_REDIS;

	*out = NULL;
	*len = 0;
	state_key(key, sizeof(key), run, "ti:%s:%d", task, idx);
	snprintf(att, sizeof(att), "%u", attempt);
	argv[0] = key;
	argv[1] = state;
	argv[2] = att;
	if (!(r = state_eval(st, "ti_dispatch", 1, 3, argv, NULL)))
		return SL_ERR_REDIS;
	if (r->type == REDIS_REPLY_NIL) {
		err = SL_ERR_STALE;
	} else if (r->type == REDIS_REPLY_STRING) {
		err = SL_ERR_NOMEM;
		if ((*out = malloc(r->len ? r->len : 1))) {
			memcpy(*out, r->str, r->len);
			*len = r->len;
			err = SL_OK;
		}
	}
	freeReplyObject(r);
	return err;
}
