/* lease.c - task leases: acquire for one attempt, renew, release (all compare-and-set). */
#include <stdio.h>
#include <string.h>

#include "sluice/util.h"
#include "state_int.h"

enum sl_err sl_state_lease_acquire(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker, long ttl_ms)
{
	char run_key[STATE_KEY_MAX], ti_key[STATE_KEY_MAX], lease_key[STATE_KEY_MAX];
	char att[16], ttl[24], now[24];
	const char *argv[7];
	redisReply *r;
	enum sl_err err = SL_ERR_REDIS;

	state_key(run_key, sizeof(run_key), run, "run");
	state_key(ti_key, sizeof(ti_key), run, "ti:%s:%d", task, idx);
	state_key(lease_key, sizeof(lease_key), run, "lease:%s:%d", task, idx);
	snprintf(att, sizeof(att), "%u", attempt);
	snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
	snprintf(now, sizeof(now), "%lld", (long long)sl_now_ms());
	argv[0] = run_key;
	argv[1] = ti_key;
	argv[2] = lease_key;
	argv[3] = att;
	argv[4] = worker;
	argv[5] = ttl;
	argv[6] = now;
	r = state_eval(st, "lease_acquire", 3, 7, argv, NULL);
	if (!r)
		return SL_ERR_REDIS;
	if (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING) {
		if (!strcmp(r->str, "ok"))
			err = SL_OK;
		else if (!strcmp(r->str, "busy"))
			err = SL_ERR_BUSY;
		else
			err = SL_ERR_STALE;
	}
	freeReplyObject(r);
	return err;
}

enum sl_err sl_state_lease_renew(struct sl_state *st, const char *run, const char *task,
				 int idx, unsigned attempt, const char *worker, long ttl_ms)
{
	char lease_key[STATE_KEY_MAX], holder[256], ttl[24];
	const char *argv[3];
	redisReply *r;
	enum sl_err err;

	state_key(lease_key, sizeof(lease_key), run, "lease:%s:%d", task, idx);
	snprintf(holder, sizeof(holder), "%s:%u", worker, attempt);
	snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);
	argv[0] = lease_key;
	argv[1] = holder;
	argv[2] = ttl;
	if (!(r = state_eval(st, "lease_renew", 1, 3, argv, NULL)))
		return SL_ERR_REDIS;
	err = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? SL_OK : SL_ERR_STALE;
	freeReplyObject(r);
	return err;
}

enum sl_err sl_state_lease_release(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker)
{
	char lease_key[STATE_KEY_MAX], holder[256];
	const char *argv[2];
	redisReply *r;

	state_key(lease_key, sizeof(lease_key), run, "lease:%s:%d", task, idx);
	snprintf(holder, sizeof(holder), "%s:%u", worker, attempt);
	argv[0] = lease_key;
	argv[1] = holder;
	if (!(r = state_eval(st, "lease_release", 1, 2, argv, NULL)))
		return SL_ERR_REDIS;
	freeReplyObject(r);
	return SL_OK;
}
