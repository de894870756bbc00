/* cache.c - task result caching: an instance whose cache key has a fresh entry is recorded
 * SUCCEEDED with the cached output (worker "cache", field `cached` = the run that computed
 * it) without being dispatched; a SUCCEEDED execution refreshes its entry. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "planner.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

#define CACHE_WORKER "cache"
#define CACHE_KEY_MAX 512

static void sha_part(EVP_MD_CTX *md, const char *s)
{
	EVP_DigestUpdate(md, s ? s : "", s ? strlen(s) + 1 : 1); /* NUL-separated */
}

/* Fills key with "sluice:cache:<flow>:<sha256 hex>" for instance in. Returns SL_OK, or an
 * error when the key template cannot be rendered (logged: the instance simply runs). */
static enum sl_err cache_key(struct planner_run *run, const struct sl_flow_task *t,
			     const struct sl_expand_ctx *ctx, const struct sl_instance *in,
			     char *key, size_t cap)
{
	EVP_MD_CTX *md = NULL;
	unsigned char dg[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1], idx[24], why[512];
	json_t *v = NULL;
	char *text = NULL;
	enum sl_err rc = SL_ERR_NOMEM;

	if (!(md = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
		goto out;
	sha_part(md, run->flow->name);
	sha_part(md, t->name);
	if (t->cache_key) {
		/* Key = the rendered template; a mapped task's instances differ by map index. */
		rc = sl_template_eval(t->cache_key, ctx, NULL, &v, why, sizeof(why));
		if (rc != SL_OK) {
			SL_WARN("run %s: task %s: cache key: %s; running without the cache",
				run->id, t->name, why);
			goto out;
		}
		if (!(text = sl_value_to_text(v))) {
			rc = SL_ERR_NOMEM;
			goto out;
		}
		sha_part(md, "template");
		sha_part(md, text);
		snprintf(idx, sizeof(idx), "%d", t->nmap ? in->map_index : -1);
		sha_part(md, idx);
	} else {
		sha_part(md, t->kind == SL_TASK_BUILTIN ? "builtin" : "command");
		sha_part(md, t->builtin);
		snprintf(idx, sizeof(idx), "%zu", in->argc);
		sha_part(md, idx);
		for (size_t i = 0; i < in->argc; i++)
			sha_part(md, in->argv[i]);
		snprintf(idx, sizeof(idx), "%zu", in->nenv);
		sha_part(md, idx);
		for (size_t i = 0; i < in->nenv; i++)
			sha_part(md, in->env[i]);
		sha_part(md, in->input ? "input" : "noinput");
		sha_part(md, in->input);
	}
	if (!EVP_DigestFinal_ex(md, dg, &dlen))
		goto out;
	for (unsigned i = 0; i < dlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", dg[i]);
	snprintf(key, cap, "sluice:cache:%s:%s", run->flow->name, hex);
	rc = SL_OK;
out:
	free(text);
	json_decref(v);
	EVP_MD_CTX_free(md);
	return rc;
}

/* Publishes the cached output as the instance's TaskResult, so the result path records it
 * (fenced by attempt 1 like any result) and moves the run on. */
static enum sl_err publish_hit(struct planner *p, struct planner_run *run,
			       const struct sl_flow_task *t, int idx, const char *output)
{
	Sluice__V1__TaskResult res = SLUICE__V1__TASK_RESULT__INIT;
	int64_t now = sl_now_ms();
	uint8_t *buf;
	size_t len;
	enum sl_err rc;

	res.schema_version = 1;
	res.trace_id = run->id;
	res.run_id = run->id;
	res.task = t->name;
	res.map_index = idx;
	res.attempt = 1;
	res.worker_id = CACHE_WORKER;
	res.status = SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	res.output.data = (uint8_t *)output;
	res.output.len = strlen(output);
	res.started_at_ms = now;
	res.finished_at_ms = now;
	len = sluice__v1__task_result__get_packed_size(&res);
	if (!(buf = malloc(len ? len : 1)))
		return SL_ERR_NOMEM;
	sluice__v1__task_result__pack(&res, buf);
	rc = sl_kafka_produce(p->producer, SL_TOPIC_RESULTS, run->id, strlen(run->id), buf, len,
			      NULL);
	free(buf);
	return rc;
}

int planner_cache_hit(struct planner *p, struct planner_run *run, const struct sl_flow_task *t,
		      const struct sl_expand_ctx *ctx, const struct sl_instance *in)
{
	char key[CACHE_KEY_MAX];
	redisReply *r = NULL;
	json_t *entry = NULL, *out_v;
	json_int_t created;
	const char *from;
	char *output = NULL;
	int hit = 0;

	if (!t->cache || cache_key(run, t, ctx, in, key, sizeof(key)) != SL_OK)
		return 0;
	/* Remembered so that a success stores its output under this key. */
	r = sl_state_command(p->state, "HSET sluice:{%s}:ti:%s:%d cache_key %s", run->id, t->name,
			     in->map_index, key);
	if (!r)
		goto out;
	freeReplyObject(r);
	r = NULL;
	if (!strcmp(run->intent, "reprocess"))
		goto out; /* bypasses the cache, and refreshes it on success */
	if (!(r = sl_state_command(p->state, "GET %s", key)) || r->type != REDIS_REPLY_STRING)
		goto out;
	entry = json_loadb(r->str, r->len, 0, NULL);
	out_v = json_object_get(entry, "output");
	created = json_integer_value(json_object_get(entry, "created_ms"));
	from = json_string_value(json_object_get(entry, "run"));
	if (!out_v || sl_now_ms() - created >= t->cache_ttl_ms)
		goto out; /* unusable, or older than this task's cache_ttl */
	if (!(output = json_dumps(out_v, JSON_COMPACT | JSON_ENCODE_ANY)))
		goto out;
	freeReplyObject(r);
	r = sl_state_command(p->state, "HSET sluice:{%s}:ti:%s:%d cached %s", run->id, t->name,
			     in->map_index, from ? from : "?");
	if (!r || publish_hit(p, run, t, in->map_index, output) != SL_OK)
		goto out;
	SL_INFO("run %s: %s[%d] served from the cache (computed by run %s)", run->id, t->name,
		in->map_index, from ? from : "?");
	hit = 1;
out:
	free(output);
	json_decref(entry);
	if (r)
		freeReplyObject(r);
	return hit;
}

void planner_cache_store(struct planner *p, struct planner_run *run,
			 const Sluice__V1__TaskResult *res)
{
	ssize_t ti = sl_flow_task_index(run->flow, res->task);
	redisReply *r = NULL;
	json_t *entry = NULL, *out_v;
	char *text = NULL;

	if (ti < 0 || !run->flow->tasks[ti].cache || !strcmp(res->worker_id, CACHE_WORKER) ||
	    res->status != SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED)
		return;
	r = sl_state_command(p->state, "HGET sluice:{%s}:ti:%s:%d cache_key", res->run_id,
			     res->task, res->map_index);
	if (!r || r->type != REDIS_REPLY_STRING)
		goto out;
	out_v = res->output.len ? json_loadb((const char *)res->output.data, res->output.len,
					      JSON_DECODE_ANY, NULL)
				: json_null();
	entry = json_pack("{s:o?,s:s,s:s,s:I}", "output", out_v, "run", res->run_id, "task",
			  res->task, "created_ms", (json_int_t)sl_now_ms());
	if (!entry || !(text = json_dumps(entry, JSON_COMPACT)))
		goto out;
	{
		char *key = strdup(r->str);
		freeReplyObject(r);
		r = key ? sl_state_command(p->state, "SET %s %s PX %ld", key, text,
					   run->flow->tasks[ti].cache_ttl_ms)
			: NULL;
		free(key);
	}
	if (!r)
		SL_WARN("run %s: cannot store %s[%d] in the cache", res->run_id, res->task,
			res->map_index);
out:
	free(text);
	json_decref(entry);
	if (r)
		freeReplyObject(r);
}
