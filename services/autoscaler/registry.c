/* registry.c - reads the worker registry and writes the pool views in Redis. */
#include "registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/util.h"

static const char *const worker_fields[] = {"queue", "slots", "busy", "pid", "started_ms",
					    "draining"};
#define NFIELDS (sizeof(worker_fields) / sizeof(worker_fields[0]))

static int64_t to_int(const redisReply *r)
{
	char *end = NULL;
	long long v;

	if (!r || r->type != REDIS_REPLY_STRING || !r->len)
		return 0;
	errno = 0;
	v = strtoll(r->str, &end, 10);
	return errno || *end ? 0 : v;
}

/* Fills w from the HMGET reply of its hash; returns 0 when the hash is gone (the worker
 * deregistered between the two reads) or its queue is unusable. */
static int fill_worker(struct autoscaler_registered *w, const redisReply *r)
{
	const redisReply *q;
	int64_t v;

	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != NFIELDS)
		return 0;
	q = r->element[0];
	if (q->type != REDIS_REPLY_STRING || q->len == 0 || q->len >= AUTOSCALER_NAME_MAX)
		return 0;
	memcpy(w->queue, q->str, q->len);
	w->queue[q->len] = '\0';
	v = to_int(r->element[1]);
	w->slots = v < 0 || v > 1000000 ? 0 : (int)v;
	v = to_int(r->element[2]);
	w->busy = v < 0 || v > 1000000 ? 0 : (int)v;
	w->pid = (long)to_int(r->element[3]);
	w->started_ms = to_int(r->element[4]);
	w->draining = to_int(r->element[5]) != 0;
	return 1;
}

enum sl_err autoscaler_registry_read(struct sl_state *st, int64_t live_after_ms,
				     struct autoscaler_registry *reg, char *errstr, size_t errlen)
{
	enum sl_err err = SL_ERR_REDIS;
	redisReply *ids = NULL, *r = NULL;
	redisContext *c;
	size_t i, n;

	reg->n = 0;
	ids = sl_state_command(st, "ZRANGEBYSCORE sluice:workers %lld +inf WITHSCORES LIMIT 0 %d",
			       (long long)live_after_ms, AUTOSCALER_REGISTRY_MAX);
	if (!ids || ids->type != REDIS_REPLY_ARRAY) {
		snprintf(errstr, errlen, "ZRANGEBYSCORE sluice:workers: %s",
			 ids && ids->type == REDIS_REPLY_ERROR ? ids->str : "no reply");
		goto out;
	}
	n = ids->elements / 2;
	if (!n) {
		err = SL_OK;
		goto out;
	}
	if (!(c = sl_state_redis(st))) {
		snprintf(errstr, errlen, "redis connection lost");
		goto out;
	}
	/* One round trip for all the hashes. */
	for (i = 0; i < n; i++) {
		const redisReply *id = ids->element[2 * i];
		redisAppendCommand(c, "HMGET sluice:worker:%b %s %s %s %s %s %s", id->str,
				   (size_t)id->len, worker_fields[0], worker_fields[1],
				   worker_fields[2], worker_fields[3], worker_fields[4],
				   worker_fields[5]);
	}
	for (i = 0; i < n; i++) {
		const redisReply *id = ids->element[2 * i];
		struct autoscaler_registered *w = &reg->w[reg->n];
		if (redisGetReply(c, (void **)&r) != REDIS_OK) {
			snprintf(errstr, errlen, "HMGET sluice:worker:*: %s", c->errstr);
			reg->n = 0;
			goto out;
		}
		if (id->type == REDIS_REPLY_STRING && id->len > 0 && id->len < AUTOSCALER_ID_MAX &&
		    fill_worker(w, r)) {
			memcpy(w->id, id->str, id->len);
			w->id[id->len] = '\0';
			w->heartbeat_ms = to_int(ids->element[2 * i + 1]);
			reg->n++;
		}
		freeReplyObject(r);
		r = NULL;
	}
	err = SL_OK;
out:
	if (r)
		freeReplyObject(r);
	if (ids)
		freeReplyObject(ids);
	return err;
}

enum sl_err autoscaler_registry_write_view(struct sl_state *st,
					   const struct autoscaler_pool_view *v)
{
	const struct autoscaler_pool_config *pc = v->pool;
	char key[32 + AUTOSCALER_NAME_MAX];
	char num[9][24];
	const char *argv[32];
	size_t lens[32];
	enum sl_err err = SL_ERR_REDIS;
	redisReply *r = NULL;
	int argc = 0;

	snprintf(key, sizeof(key), "sluice:pool:%s", pc->name);
	snprintf(num[0], sizeof(num[0]), "%d", v->workers);
	snprintf(num[1], sizeof(num[1]), "%d", v->desired);
	snprintf(num[2], sizeof(num[2]), "%lld", (long long)v->lag);
	snprintf(num[3], sizeof(num[3]), "%lld", (long long)v->busy);
	snprintf(num[4], sizeof(num[4]), "%d", pc->min);
	snprintf(num[5], sizeof(num[5]), "%d", pc->max);
	snprintf(num[6], sizeof(num[6]), "%lld", (long long)v->updated_ms);
	snprintf(num[7], sizeof(num[7]), "%d", v->starting);
	snprintf(num[8], sizeof(num[8]), "%d", v->draining);
	argv[argc++] = "HSET";
	argv[argc++] = key;
	argv[argc++] = "queue";
	argv[argc++] = pc->queue;
	argv[argc++] = "workers";
	argv[argc++] = num[0];
	argv[argc++] = "desired";
	argv[argc++] = num[1];
	argv[argc++] = "lag";
	argv[argc++] = num[2];
	argv[argc++] = "busy";
	argv[argc++] = num[3];
	argv[argc++] = "backend";
	argv[argc++] = autoscaler_backend_name(pc->backend);
	argv[argc++] = "min";
	argv[argc++] = num[4];
	argv[argc++] = "max";
	argv[argc++] = num[5];
	argv[argc++] = "updated_ms";
	argv[argc++] = num[6];
	argv[argc++] = "reason";
	argv[argc++] = v->reason ? v->reason : "";
	argv[argc++] = "starting";
	argv[argc++] = num[7];
	argv[argc++] = "draining";
	argv[argc++] = num[8];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	if (!(r = sl_state_commandargv(st, argc, argv, lens)) || r->type == REDIS_REPLY_ERROR)
		goto out;
	freeReplyObject(r);
	if (!(r = sl_state_command(st, "SADD sluice:pools %s", pc->name)) ||
	    r->type == REDIS_REPLY_ERROR)
		goto out;
	err = SL_OK;
out:
	if (r)
		freeReplyObject(r);
	return err;
}
