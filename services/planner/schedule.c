/* schedule.c - fires the `schedule:` of loaded flows: each tick becomes one RunRequest, once
 * across any number of planner replicas, and ticks missed while no planner ran follow the
 * flow's `catchup:` policy.
 *
 * Redis, per flow F (one hash tag, so the scripts stay valid on Redis Cluster):
 *   sluice:sched:{F}:last   STRING  ms of the last tick handled (fired or skipped): the cursor
 *   sluice:sched:{F}:claim  STRING  "<replica>" with PX: who is firing the ticks after it
 * A replica reads the cursor, works out the due ticks, claims them (the cursor must still be
 * what it read and nobody else may hold the claim), produces their RunRequests, waits for
 * Kafka to store them, and only then moves the cursor and drops the claim. A replica that
 * dies in between leaves the cursor where it was; once its claim lapses another replica
 * fires the same ticks again, and the idempotency key "<F>:schedule:<tick ms>" makes the
 * planner map the second request to the first run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "planner.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

#define CHECK_EVERY_MS 500             /* how often due ticks are looked for */
#define RETRY_AFTER_MS 5000            /* after a failure to fire */
#define CLAIM_TTL_MS 30000             /* a claim outlives any produce + flush below */
#define FLUSH_TIMEOUT_MS 10000
#define LOOKBACK_MS (366LL * 86400000) /* older missed ticks are never fired */
#define MAX_GRACE_MS 60000             /* catchup none: later than this is missed */
#define MAX_CRON_STEPS 1000000         /* cron ticks walked per look (a year of minutes) */

static const char claim_lua[] =
	"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'moved' end\n"
	"if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 'claimed' end\n"
	"return 'busy'\n";

static const char advance_lua[] =
	"if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 'lost' end\n"
	"redis.call('DEL', KEYS[2])\n"
	"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'moved' end\n"
	"redis.call('SET', KEYS[1], ARGV[3])\n"
	"return 'ok'\n";

static const char release_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
	"return 'ok'\n";

/* @locality: the planner's main thread only. */
static char replica[64];
static int64_t next_check_ms;

/* The first tick of f strictly after t (t >= 0). */
static enum sl_err tick_after(const struct sl_flow *f, int64_t t, int64_t *next)
{
	if (f->schedule_kind == SL_SCHEDULE_EVERY) {
		*next = (t / f->schedule_every_ms + 1) * f->schedule_every_ms;
		return SL_OK;
	}
	return sl_cron_next(&f->schedule_cron, t, next);
}

/* The due ticks of f in (after, now]: *count of them, the newest min(count, SL_CATCHUP_MAX)
 * in ticks[] oldest first (*n entries). */
static void due_ticks(const struct sl_flow *f, int64_t after, int64_t now, int64_t *ticks,
		      size_t *n, int64_t *count)
{
	int64_t t, first;
	size_t head = 0;

	*n = 0;
	*count = 0;
	if (tick_after(f, after, &first) != SL_OK || first > now)
		return;
	if (f->schedule_kind == SL_SCHEDULE_EVERY) {
		int64_t iv = f->schedule_every_ms, last = now / iv * iv;
		*count = (last - first) / iv + 1;
		*n = *count > SL_CATCHUP_MAX ? SL_CATCHUP_MAX : (size_t)*count;
		for (size_t i = 0; i < *n; i++)
			ticks[i] = last - (int64_t)(*n - 1 - i) * iv;
		return;
	}
	/* Cron: walk forward keeping the newest SL_CATCHUP_MAX in a ring. */
	for (t = first; t <= now && *count < MAX_CRON_STEPS;) {
		ticks[head] = t;
		head = (head + 1) % SL_CATCHUP_MAX;
		(*count)++;
		if (tick_after(f, t, &t) != SL_OK)
			break;
	}
	*n = *count > SL_CATCHUP_MAX ? SL_CATCHUP_MAX : (size_t)*count;
	if (*count > SL_CATCHUP_MAX) {
		/* rotate so that the oldest kept tick comes first */
		int64_t tmp[SL_CATCHUP_MAX];
		for (size_t i = 0; i < SL_CATCHUP_MAX; i++)
			tmp[i] = ticks[(head + i) % SL_CATCHUP_MAX];
		memcpy(ticks, tmp, sizeof(tmp));
	}
}

/* Whether tick was noticed in time to count as on schedule (catchup none). */
static int on_time(const struct sl_flow *f, int64_t tick, int64_t now)
{
	int64_t next, grace = MAX_GRACE_MS;

	if (tick_after(f, tick, &next) == SL_OK && (next - tick) / 2 < grace)
		grace = (next - tick) / 2;
	return now - tick <= grace;
}

static void format_tick(int64_t ms, char *buf, size_t cap)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	if (ms % 1000)
		snprintf(buf, cap, "%s.%03dZ", base, (int)(ms % 1000));
	else
		snprintf(buf, cap, "%sZ", base);
}

/* JSON text of the value of param SL_SCHEDULE_PARAM for tick: ms for an int param, else an
 * ISO 8601 UTC string. Caller frees. */
static char *tick_value(const struct sl_flow *f, int64_t tick)
{
	char iso[48], *out;
	json_t *v = NULL;

	for (size_t i = 0; i < f->nparams; i++) {
		if (strcmp(f->params[i].name, SL_SCHEDULE_PARAM))
			continue;
		if (f->params[i].type == SL_PARAM_INT) {
			v = json_integer((json_int_t)tick);
		} else {
			format_tick(tick, iso, sizeof(iso));
			v = json_string(iso);
		}
	}
	out = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
	json_decref(v);
	return out;
}

/* Queues the RunRequest of tick. */
static enum sl_err produce_tick(struct planner *p, const struct sl_flow *f, int64_t tick,
				char *run_id, size_t run_cap)
{
	Sluice__V1__RunRequest req = SLUICE__V1__RUN_REQUEST__INIT;
	size_t cap = (f->schedule_params ? json_object_size(f->schedule_params) : 0) + 1, n = 0;
	Sluice__V1__Param *params = calloc(cap, sizeof(*params));
	Sluice__V1__Param **pp = calloc(cap, sizeof(*pp));
	char **texts = calloc(cap, sizeof(*texts));
	char idem[256], trace[64];
	uint8_t *buf = NULL;
	size_t len;
	const char *name;
	json_t *v;
	enum sl_err err = SL_ERR_NOMEM;

	if (!params || !pp || !texts)
		goto out;
	json_object_foreach(f->schedule_params, name, v) {
		if (!(texts[n] = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT)))
			goto out;
		sluice__v1__param__init(&params[n]);
		params[n].name = (char *)name;
		params[n].json_value = texts[n];
		pp[n] = &params[n];
		n++;
	}
	if ((texts[n] = tick_value(f, tick))) {
		sluice__v1__param__init(&params[n]);
		params[n].name = (char *)SL_SCHEDULE_PARAM;
		params[n].json_value = texts[n];
		pp[n] = &params[n];
		n++;
	}
	sl_id_new("r-", run_id, run_cap);
	sl_id_new("t-", trace, sizeof(trace));
	snprintf(idem, sizeof(idem), "%s:schedule:%lld", f->name, (long long)tick);
	req.schema_version = 1;
	req.trace_id = trace;
	req.run_id = run_id;
	req.flow = f->name;
	req.n_params = n;
	req.params = pp;
	req.idempotency_key = idem;
	req.intent = SLUICE__V1__INTENT__INTENT_NORMAL;
	req.requested_by = "schedule";
	req.requested_at_ms = sl_now_ms();
	len = sluice__v1__run_request__get_packed_size(&req);
	if (len > SL_KAFKA_MAX_MESSAGE) {
		err = SL_ERR_TOO_BIG;
		goto out;
	}
	if (!(buf = malloc(len ? len : 1)))
		goto out;
	sluice__v1__run_request__pack(&req, buf);
	err = sl_kafka_produce(p->producer, SL_TOPIC_RUNS_REQUESTED, run_id, strlen(run_id), buf,
			       len, NULL);
out:
	for (size_t i = 0; texts && i < cap; i++)
		free(texts[i]);
	free(texts);
	free(params);
	free(pp);
	free(buf);
	return err;
}

/* Runs one of the scripts above; *word gets its answer ("" on error). */
static enum sl_err script(struct planner *p, const char *lua, int nkeys, const char *const *args,
			  int nargs, char *word, size_t cap)
{
	const char *argv[8];
	redisReply *r;
	int argc = 0;
	char nk[8];

	word[0] = '\0';
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[argc++] = "EVAL";
	argv[argc++] = lua;
	argv[argc++] = nk;
	for (int i = 0; i < nargs && argc < 8; i++)
		argv[argc++] = args[i];
	r = sl_state_commandargv(p->state, argc, argv, NULL);
	if (!r)
		return SL_ERR_REDIS;
	if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
		sl_strlcpy(word, r->str, cap);
	else if (r->type == REDIS_REPLY_ERROR)
		SL_WARN("schedule script: %s", r->str);
	freeReplyObject(r);
	return word[0] ? SL_OK : SL_ERR_REDIS;
}

/* Looks at one scheduled flow: starts its cursor, or fires (or skips) what is due. */
static enum sl_err check_flow(struct planner *p, const struct sl_flow *f, int64_t now)
{
	static int64_t ticks[SL_CATCHUP_MAX];
	char last_key[256], claim_key[256], cursor[32], ttl[16], target[32], word[16];
	char run_id[96], when[48];
	size_t n, fire = 0, first = 0;
	int64_t count, after;
	redisReply *r;
	char *end;
	enum sl_err err = SL_OK;

	snprintf(last_key, sizeof(last_key), "sluice:sched:{%s}:last", f->name);
	snprintf(claim_key, sizeof(claim_key), "sluice:sched:{%s}:claim", f->name);
	if (!(r = sl_state_command(p->state, "GET %s", last_key)))
		return SL_ERR_REDIS;
	if (r->type == REDIS_REPLY_NIL) {
		/* First sight: start from now, no backfill. */
		freeReplyObject(r);
		if (!(r = sl_state_command(p->state, "SET %s %lld NX", last_key, (long long)now)))
			return SL_ERR_REDIS;
		if (r->type == REDIS_REPLY_STATUS)
			SL_INFO("schedule of flow %s (%s) starts now, catchup %s", f->name,
				f->schedule_text,
				f->catchup == SL_CATCHUP_ALL	? "all"
				: f->catchup == SL_CATCHUP_NONE ? "none"
								: "latest");
		freeReplyObject(r);
		return SL_OK;
	}
	if (r->type != REDIS_REPLY_STRING || r->len >= sizeof(cursor)) {
		freeReplyObject(r);
		return SL_ERR_REDIS;
	}
	memcpy(cursor, r->str, r->len + 1);
	freeReplyObject(r);
	after = strtoll(cursor, &end, 10);
	if (*end || end == cursor || after < 0) {
		SL_WARN("schedule of flow %s: cursor %s is not a time; restarting from now", f->name,
			cursor);
		r = sl_state_command(p->state, "SET %s %lld", last_key, (long long)now);
		if (r)
			freeReplyObject(r);
		return r ? SL_OK : SL_ERR_REDIS;
	}
	if (after < now - LOOKBACK_MS)
		after = now - LOOKBACK_MS;
	due_ticks(f, after, now, ticks, &n, &count);
	if (!n)
		return SL_OK;

	switch (f->catchup) {
	case SL_CATCHUP_ALL:
		first = 0;
		fire = n;
		if (count > (int64_t)n)
			SL_WARN("schedule of flow %s: %lld ticks missed, firing the newest %zu "
				"(catchup all fires at most %d)",
				f->name, (long long)count, n, SL_CATCHUP_MAX);
		break;
	case SL_CATCHUP_NONE:
		first = n - 1;
		fire = on_time(f, ticks[n - 1], now) ? 1 : 0;
		break;
	default:
		first = n - 1;
		fire = 1;
		break;
	}

	snprintf(ttl, sizeof(ttl), "%d", CLAIM_TTL_MS);
	{
		const char *args[] = {last_key, claim_key, cursor, replica, ttl};
		if ((err = script(p, claim_lua, 2, args, 5, word, sizeof(word))) != SL_OK)
			return err;
	}
	if (strcmp(word, "claimed"))
		return SL_OK; /* another replica has it, or has done it */

	for (size_t i = first; i < first + fire; i++) {
		if ((err = produce_tick(p, f, ticks[i], run_id, sizeof(run_id))) != SL_OK)
			break;
		format_tick(ticks[i], when, sizeof(when));
		SL_INFO("schedule of flow %s: tick %s (%lld) requested as run %s", f->name, when,
			(long long)ticks[i], run_id);
	}
	if (err == SL_OK && fire && sl_kafka_producer_flush(p->producer, FLUSH_TIMEOUT_MS) != SL_OK)
		err = SL_ERR_TIMEOUT;
	if (err != SL_OK) {
		const char *args[] = {claim_key, replica};
		SL_WARN("schedule of flow %s: cannot request its runs (%s); trying again",
			f->name, sl_strerror(err));
		script(p, release_lua, 1, args, 2, word, sizeof(word));
		return err;
	}
	if (count > (int64_t)fire) {
		format_tick(ticks[n - 1], when, sizeof(when));
		SL_INFO("schedule of flow %s: %lld missed tick(s) %s %s skipped (catchup %s)",
			f->name, (long long)(count - (int64_t)fire), fire ? "before" : "up to",
			when, f->catchup == SL_CATCHUP_NONE ? "none" : "latest");
	}
	snprintf(target, sizeof(target), "%lld", (long long)ticks[n - 1]);
	{
		const char *args[] = {last_key, claim_key, cursor, replica, target};
		if ((err = script(p, advance_lua, 2, args, 5, word, sizeof(word))) != SL_OK)
			return err;
	}
	if (strcmp(word, "ok"))
		SL_WARN("schedule of flow %s: claim %s before the cursor moved; the planner "
			"dedupes any tick requested twice",
			f->name, word);
	return SL_OK;
}

enum sl_err planner_on_schedules(struct planner *p)
{
	int64_t mono = sl_mono_ms(), now;
	enum sl_err rc = SL_OK;

	if (!p->cfg.schedules || mono < next_check_ms)
		return SL_OK;
	next_check_ms = mono + CHECK_EVERY_MS;
	if (!replica[0]) {
		char id[40];
		sl_id_new("", id, sizeof(id));
		snprintf(replica, sizeof(replica), "%d-%s", (int)getpid(), id);
	}
	now = sl_now_ms();
	for (size_t i = 0; i < planner_flows_count(p->flows); i++) {
		const struct sl_flow *f = planner_flows_at(p->flows, i);
		enum sl_err err;

		if (!f || f->schedule_kind == SL_SCHEDULE_NONE)
			continue;
		if ((err = check_flow(p, f, now)) != SL_OK)
			rc = err;
	}
	if (rc != SL_OK)
		next_check_ms = mono + RETRY_AFTER_MS;
	return rc;
}
