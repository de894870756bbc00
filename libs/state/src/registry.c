/* registry.c - the worker registry: heartbeats, drain requests, deregistration. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sluice/util.h"
#include "state_int.h"

/* Registry entries outlive a silent worker by this long, then Redis drops them. */
#define WORKER_TTL_S 60

enum sl_err sl_state_worker_heartbeat(struct sl_state *st, const char *id, const char *queue,
				      int slots, int busy, int pid)
{
	char key[STATE_KEY_MAX], host[128] = "";
	long long now = (long long)sl_now_ms();
	redisContext *c = sl_state_redis(st);
	redisReply *r;
	enum sl_err err = SL_OK;

	if (!c)
		return SL_ERR_REDIS;
	gethostname(host, sizeof(host) - 1);
	snprintf(key, sizeof(key), "sluice:worker:%s", id);
	redisAppendCommand(c, "MULTI");
	redisAppendCommand(c, "HSET %s queue %s slots %d busy %d pid %d host %s heartbeat_ms %lld",
			   key, queue, slots, busy, pid, host, now);
	redisAppendCommand(c, "HSETNX %s started_ms %lld", key, now);
	redisAppendCommand(c, "EXPIRE %s %d", key, WORKER_TTL_S);
	redisAppendCommand(c, "ZADD sluice:workers %lld %s", now, id);
	redisAppendCommand(c, "EXEC");
	for (int i = 0; i < 6; i++) {
		if (redisGetReply(c, (void **)&r) != REDIS_OK) {
			err = SL_ERR_REDIS;
			break;
		}
		if (r->type == REDIS_REPLY_ERROR)
			err = SL_ERR_REDIS;
		freeReplyObject(r);
	}
	return err;
}

enum sl_err sl_state_worker_draining(struct sl_state *st, const char *id, int *draining)
{
	redisReply *r = sl_state_command(st, "HGET sluice:worker:%s draining", id);

	if (!r)
		return SL_ERR_REDIS;
	*draining = r->type == REDIS_REPLY_STRING && !strcmp(r->str, "1");
	freeReplyObject(r);
	return SL_OK;
}

enum sl_err sl_state_worker_request_drain(struct sl_state *st, const char *id)
{
	char key[STATE_KEY_MAX];
	const char *argv[1] = {key};
	redisReply *r;
	enum sl_err err;

	snprintf(key, sizeof(key), "sluice:worker:%s", id);
	if (!(r = state_eval(st, "worker_drain", 1, 1, argv, NULL)))
		return SL_ERR_REDIS;
	err = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? SL_OK : SL_ERR_NOT_FOUND;
	freeReplyObject(r);
	return err;
}

enum sl_err sl_state_worker_deregister(struct sl_state *st, const char *id)
{
	redisReply *r = sl_state_command(st, "DEL sluice:worker:%s", id);

	if (!r)
		return SL_ERR_REDIS;
	freeReplyObject(r);
	if (!(r = sl_state_command(st, "ZREM sluice:workers %s", id)))
		return SL_ERR_REDIS;
	freeReplyObject(r);
	return SL_OK;
}
