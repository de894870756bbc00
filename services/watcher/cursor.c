/* cursor.c - the seen-file cursors in Redis: HASH sluice:watch:<flow>, content sha256 -> run id. */
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/state.h"
#include "sluice/util.h"
#include "watcher.h"

/* Reconnects are cheap to try and a lookup that fails schedules a rescan anyway. */
#define CURSOR_BACKOFF_MAX_MS 5000L

struct watcher_cursor {
	struct sl_state *st; /* NULL while Redis is unreachable */
	char *url;
	int64_t next_try_ms; /* monotonic: no connection attempt before this */
	long backoff_ms;
	int down; /* an outage was logged; log the recovery once */
};

struct watcher_cursor *watcher_cursor_new(const char *url)
{
	struct watcher_cursor *c = calloc(1, sizeof(*c));

	if (!c || !(c->url = strdup(url))) {
		free(c);
		return NULL;
	}
	c->backoff_ms = WATCHER_BACKOFF_MIN_MS;
	return c;
}

static void mark_down(struct watcher_cursor *c, const char *why)
{
	/* The URL may carry a password: it is never logged. */
	if (!c->down)
		SL_WARN("redis unavailable (%s): cursors cannot be checked, retrying with backoff",
			why);
	c->down = 1;
	sl_state_destroy(c->st);
	c->st = NULL;
	c->next_try_ms = sl_mono_ms() + c->backoff_ms;
	c->backoff_ms = c->backoff_ms * 2 > CURSOR_BACKOFF_MAX_MS ? CURSOR_BACKOFF_MAX_MS
								  : c->backoff_ms * 2;
}

/* Returns the connection, connecting first if needed and allowed by the backoff, or NULL. */
static struct sl_state *connection(struct watcher_cursor *c)
{
	char errstr[256];

	if (c->st)
		return c->st;
	if (sl_mono_ms() < c->next_try_ms)
		return NULL;
	if (!(c->st = sl_state_new(c->url, errstr, sizeof(errstr)))) {
		mark_down(c, errstr);
		return NULL;
	}
	if (c->down)
		SL_INFO("redis is reachable again");
	c->down = 0;
	c->backoff_ms = WATCHER_BACKOFF_MIN_MS;
	return c->st;
}

/* Logs a failed reply once; a lost connection (NULL reply) also drops the handle. */
static void reply_failed(struct watcher_cursor *c, const char *what, redisReply *r)
{
	if (!r) {
		mark_down(c, "connection lost");
		return;
	}
	SL_ERROR("redis %s: %s", what,
		 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply type");
}

enum sl_err watcher_cursor_lookup(struct watcher_cursor *c, const char *flow, const char *sha,
				  char *run, size_t cap)
{
	struct sl_state *st = connection(c);
	enum sl_err err = SL_ERR_REDIS;
	redisReply *r = NULL;

	if (!st)
		return SL_ERR_REDIS;
	r = sl_state_command(st, "HGET sluice:watch:%s %s", flow, sha);
	if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
		reply_failed(c, "HGET cursor", r);
		goto out;
	}
	if (r->type == REDIS_REPLY_NIL) {
		err = SL_ERR_NOT_FOUND;
		goto out;
	}
	sl_strlcpy(run, r->str, cap);
	err = SL_OK;
out:
	if (r)
		freeReplyObject(r);
	return err;
}

enum sl_err watcher_cursor_record(struct watcher_cursor *c, const char *flow, const char *sha,
				  const char *run)
{
	struct sl_state *st = connection(c);
	enum sl_err err = SL_ERR_REDIS;
	redisReply *r = NULL;

	if (!st)
		return SL_ERR_REDIS;
	r = sl_state_command(st, "HSET sluice:watch:%s %s %s", flow, sha, run);
	if (!r || r->type != REDIS_REPLY_INTEGER) {
		reply_failed(c, "HSET cursor", r);
		goto out;
	}
	err = SL_OK;
out:
	if (r)
		freeReplyObject(r);
	return err;
}

void watcher_cursor_destroy(struct watcher_cursor *c)
{
	if (!c)
		return;
	sl_state_destroy(c->st);
	free(c->url);
	free(c);
}
