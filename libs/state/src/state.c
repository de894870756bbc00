/* state.c - the Redis connection, URL parsing, script loading and EVALSHA with reconnect. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/util.h"
#include "state_int.h"

/* Parses redis://[:password@]host[:port][/db]. */
static enum sl_err parse_url(struct sl_state *st, const char *url, char *errstr, size_t errlen)
{
	const char *p = url;
	const char *at, *slash, *colon;
	size_t hostlen;

	st->port = 6379;
	st->db = 0;
	if (!strncmp(p, "redis://", 8))
		p += 8;
	at = strchr(p, '@');
	if (at) {
		const char *pw = memchr(p, ':', (size_t)(at - p));
		pw = pw ? pw + 1 : p;
		if ((size_t)(at - pw) >= sizeof(st->password))
			goto bad;
		memcpy(st->password, pw, (size_t)(at - pw));
		st->password[at - pw] = '\0';
		p = at + 1;
	}
	slash = strchr(p, '/');
	colon = strchr(p, ':');
	if (colon && slash && colon > slash)
		colon = NULL;
	hostlen = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
	if (!hostlen || hostlen >= sizeof(st->host))
		goto bad;
	memcpy(st->host, p, hostlen);
	st->host[hostlen] = '\0';
	if (colon)
		st->port = atoi(colon + 1);
	if (slash && slash[1])
		st->db = atoi(slash + 1);
	if (st->port <= 0 || st->port > 65535)
		goto bad;
	return SL_OK;
bad:
	snprintf(errstr, errlen, "bad redis url \"%s\" (want redis://[:password@]host[:port][/db])",
		 url);
	return SL_ERR_CONFIG;
}

static enum sl_err load_scripts(struct sl_state *st)
{
	for (int i = 0; sl_lua_scripts[i].name; i++) {
		redisReply *r = redisCommand(st->c, "SCRIPT LOAD %s", sl_lua_scripts[i].source);
		if (!r || r->type != REDIS_REPLY_STRING) {
			SL_ERROR("redis: cannot load script %s: %s", sl_lua_scripts[i].name,
				 r && r->type == REDIS_REPLY_ERROR ? r->str : "connection error");
			if (r)
				freeReplyObject(r);
			return SL_ERR_REDIS;
		}
		sl_strlcpy(st->sha[i], r->str, sizeof(st->sha[i]));
		freeReplyObject(r);
	}
	return SL_OK;
}

/* (Re)connects, authenticates, selects the db and loads the scripts. */
static enum sl_err connect_now(struct sl_state *st, char *errstr, size_t errlen)
{
	struct timeval tv = {5, 0};
	redisReply *r = NULL;

	if (st->c) {
		redisFree(st->c);
		st->c = NULL;
	}
	st->c = redisConnectWithTimeout(st->host, st->port, tv);
	if (!st->c || st->c->err) {
		snprintf(errstr, errlen, "cannot connect to redis at %s:%d: %s", st->host, st->port,
			 st->c ? st->c->errstr : "out of memory");
		goto fail;
	}
	redisSetTimeout(st->c, tv);
	if (st->password[0]) {
		r = redisCommand(st->c, "AUTH %s", st->password);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			snprintf(errstr, errlen, "redis AUTH failed");
			goto fail;
		}
		freeReplyObject(r);
		r = NULL;
	}
	if (st->db) {
		r = redisCommand(st->c, "SELECT %d", st->db);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			snprintf(errstr, errlen, "redis SELECT %d failed", st->db);
			goto fail;
		}
		freeReplyObject(r);
		r = NULL;
	}
	if (load_scripts(st) != SL_OK) {
		snprintf(errstr, errlen, "cannot load Lua scripts into redis");
		goto fail;
	}
	return SL_OK;
fail:
	if (r)
		freeReplyObject(r);
	if (st->c) {
		redisFree(st->c);
		st->c = NULL;
	}
	return SL_ERR_REDIS;
}

struct sl_state *sl_state_new(const char *url, char *errstr, size_t errlen)
{
	struct sl_state *st = calloc(1, sizeof(*st));

	if (!st) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	if (parse_url(st, url, errstr, errlen) != SL_OK ||
	    connect_now(st, errstr, errlen) != SL_OK) {
		free(st);
		return NULL;
	}
	return st;
}

void sl_state_destroy(struct sl_state *st)
{
	if (!st)
		return;
	if (st->c)
		redisFree(st->c);
	free(st);
}

static int ensure_connected(struct sl_state *st)
{
	char err[256];

	if (st->c && !st->c->err)
		return 1;
	if (connect_now(st, err, sizeof(err)) != SL_OK) {
		SL_WARN("redis reconnect: %s", err);
		return 0;
	}
	SL_INFO("redis: reconnected to %s:%d", st->host, st->port);
	return 1;
}

redisContext *sl_state_redis(struct sl_state *st)
{
	return ensure_connected(st) ? st->c : NULL;
}

redisReply *sl_state_commandargv(struct sl_state *st, int argc, const char **argv,
				 const size_t *argvlen)
{
	for (int tries = 0; tries < 2; tries++) {
		redisReply *r;
		if (!ensure_connected(st))
			continue;
		r = redisCommandArgv(st->c, argc, argv, argvlen);
		if (r)
			return r;
		SL_WARN("redis %s: %s", argv[0], st->c->errstr);
		redisFree(st->c);
		st->c = NULL;
	}
	return NULL;
}

redisReply *sl_state_command(struct sl_state *st, const char *fmt, ...)
{
	for (int tries = 0; tries < 2; tries++) {
		redisReply *r;
		va_list ap;
		if (!ensure_connected(st))
			continue;
		va_start(ap, fmt);
		r = redisvCommand(st->c, fmt, ap);
		va_end(ap);
		if (r)
			return r;
		SL_WARN("redis command failed: %s", st->c->errstr);
		redisFree(st->c);
		st->c = NULL;
	}
	return NULL;
}

/* Fills av/al (argc + 3 entries) with EVALSHA <sha of script idx> <nk> argv...; lens NULL:
 * argv are C strings. */
static void evalsha_argv(const struct sl_state *st, int idx, const char *nk, int argc,
			 const char *const *argv, const size_t *lens, const char **av, size_t *al)
{
	av[0] = "EVALSHA";
	al[0] = 7;
	av[1] = st->sha[idx];
	al[1] = 40;
	av[2] = nk;
	al[2] = strlen(nk);
	for (int i = 0; i < argc; i++) {
		av[3 + i] = argv[i];
		al[3 + i] = lens ? lens[i] : strlen(argv[i]);
	}
}

redisReply *state_eval(struct sl_state *st, const char *name, int nkeys, int argc,
		       const char **argv, const size_t *lens)
{
	const char *args[3 + 64];
	size_t alens[3 + 64];
	const char **av = args;
	size_t *al = alens;
	char nk[16];
	redisReply *r = NULL;
	int idx = -1;

	for (int i = 0; sl_lua_scripts[i].name; i++)
		if (!strcmp(sl_lua_scripts[i].name, name))
			idx = i;
	if (idx < 0) {
		SL_ERROR("redis: no script named %s", name);
		return NULL;
	}
	if (argc > 64) {
		av = malloc(sizeof(*av) * (size_t)(argc + 3));
		al = malloc(sizeof(*al) * (size_t)(argc + 3));
		if (!av || !al)
			goto out;
	}
	snprintf(nk, sizeof(nk), "%d", nkeys);
	for (int tries = 0; tries < 3; tries++) {
		if (!ensure_connected(st))
			continue;
		evalsha_argv(st, idx, nk, argc, argv, lens, av, al);
		r = redisCommandArgv(st->c, argc + 3, av, al);
		if (!r) {
			SL_WARN("redis EVALSHA %s: %s", name, st->c->errstr);
			redisFree(st->c);
			st->c = NULL;
			continue;
		}
		if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
			freeReplyObject(r);
			r = NULL;
			if (load_scripts(st) != SL_OK) {
				redisFree(st->c);
				st->c = NULL;
			}
			continue;
		}
		if (r->type == REDIS_REPLY_ERROR) {
			SL_ERROR("redis script %s: %s", name, r->str);
			freeReplyObject(r);
			r = NULL;
		}
		break;
	}
out:
	if (av != args)
		free(av);
	if (al != alens)
		free(al);
	return r;
}

enum sl_err state_eval_pairs(struct sl_state *st, const char *name, int argc, const char **argv,
			     size_t elem_size, redisReply **reply, void **arr, size_t *npairs)
{
	redisReply *r = state_eval(st, name, 1, argc, argv, NULL);

	*reply = r;
	*arr = NULL;
	*npairs = 0;
	if (!r || r->type != REDIS_REPLY_ARRAY)
		return SL_ERR_REDIS;
	if (r->elements < 2)
		return SL_OK;
	if (!(*arr = calloc(r->elements / 2, elem_size)))
		return SL_ERR_NOMEM;
	*npairs = r->elements / 2;
	return SL_OK;
}

static int script_index(const char *name)
{
	for (int i = 0; sl_lua_scripts[i].name; i++)
		if (!strcmp(sl_lua_scripts[i].name, name))
			return i;
	return -1;
}

/* Writes the RESP header of a count (c '*') or a length (c '$') at w; returns the end. */
static char *resp_len(char *w, char c, size_t v)
{
	char tmp[24];
	int n = 0;

	*w++ = c;
	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10));
	while (n)
		*w++ = tmp[--n];
	*w++ = '\r';
	*w++ = '\n';
	return w;
}

static char *resp_bulk(char *w, const char *s, size_t len)
{
	w = resp_len(w, '$', len);
	memcpy(w, s, len);
	w += len;
	*w++ = '\r';
	*w++ = '\n';
	return w;
}

/* Queues EVALSHA sha nk argv... on c, formatted here in one buffer: hiredis's
 * redisAppendCommandArgv formats each argument's length with sdscatfmt, which callgrind put
 * at ~14,000 instructions per result_apply call, most of the planner's cost of a result.
 * lens NULL: argv are C strings. Returns REDIS_OK or REDIS_ERR (out of memory). */
static int append_evalsha(redisContext *c, const char *sha, const char *nk, int argc,
			  const char *const *argv, const size_t *lens)
{
	size_t cap = 14 + 25 * (size_t)(argc + 3) + 7 + 40 + strlen(nk);
	char *buf, *w;
	int rc;

	for (int i = 0; i < argc; i++)
		cap += lens ? lens[i] : strlen(argv[i]);
	if (!(buf = malloc(cap)))
		return REDIS_ERR;
	w = resp_len(buf, '*', (size_t)argc + 3);
	w = resp_bulk(w, "EVALSHA", 7);
	w = resp_bulk(w, sha, 40);
	w = resp_bulk(w, nk, strlen(nk));
	for (int i = 0; i < argc; i++)
		w = resp_bulk(w, argv[i], lens ? lens[i] : strlen(argv[i]));
	rc = redisAppendFormattedCommand(c, buf, (size_t)(w - buf));
	free(buf);
	return rc;
}

/* Calls of script name, or of names[i] when names is not NULL (see state_eval_pipeline()). */
static void eval_pipeline(struct sl_state *st, const char *name, const char *const *names,
			  size_t count, const int *nkeys, const int *argc,
			  const char *const *const *argv, const size_t *const *lens,
			  redisReply **replies)
{
	int *idx = calloc(count ? count : 1, sizeof(*idx));
	unsigned char *fin = calloc(count ? count : 1, 1);

	for (size_t i = 0; i < count; i++)
		replies[i] = NULL;
	if (!idx || !fin)
		goto out;
	for (size_t i = 0; i < count; i++) {
		if (names)
			name = names[i];
		if ((idx[i] = script_index(name)) < 0) {
			SL_ERROR("redis: no script named %s", name);
			goto out;
		}
	}
	for (int tries = 0; tries < 3; tries++) {
		int reload = 0, pending = 0;

		if (!ensure_connected(st))
			continue;
		for (size_t i = 0; i < count && st->c; i++) {
			char nk[16];

			if (fin[i])
				continue;
			snprintf(nk, sizeof(nk), "%d", nkeys[i]);
			/* copied into the output buffer here; sent by the first redisGetReply */
			if (append_evalsha(st->c, st->sha[idx[i]], nk, argc[i], argv[i],
					   lens ? lens[i] : NULL) != REDIS_OK) {
				SL_WARN("redis pipeline %s: out of memory",
					sl_lua_scripts[idx[i]].name);
				redisFree(st->c);
				st->c = NULL;
			}
		}
		for (size_t i = 0; i < count && st->c; i++) {
			redisReply *r = NULL;

			if (fin[i])
				continue;
			if (redisGetReply(st->c, (void **)&r) != REDIS_OK) {
				SL_WARN("redis EVALSHA %s (pipelined): %s",
					sl_lua_scripts[idx[i]].name, st->c->errstr);
				redisFree(st->c);
				st->c = NULL;
				break;
			}
			if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
				freeReplyObject(r); /* not run: sent again after the reload */
				reload = 1;
				continue;
			}
			fin[i] = 1;
			if (r->type == REDIS_REPLY_ERROR) {
				SL_ERROR("redis script %s: %s", sl_lua_scripts[idx[i]].name, r->str);
				freeReplyObject(r);
				continue;
			}
			replies[i] = r;
		}
		for (size_t i = 0; i < count; i++)
			pending += !fin[i];
		if (!pending)
			break;
		if (reload && st->c && load_scripts(st) != SL_OK) {
			redisFree(st->c);
			st->c = NULL;
		}
	}
out:
	free(fin);
	free(idx);
}

void state_eval_pipeline(struct sl_state *st, const char *name, size_t count, const int *nkeys,
			 const int *argc, const char *const *const *argv,
			 const size_t *const *lens, redisReply **replies)
{
	eval_pipeline(st, name, NULL, count, nkeys, argc, argv, lens, replies);
}

void state_eval_pipeline_of(struct sl_state *st, const char *const *names, size_t count,
			    const int *nkeys, const int *argc, const char *const *const *argv,
			    const size_t *const *lens, redisReply **replies)
{
	eval_pipeline(st, NULL, names, count, nkeys, argc, argv, lens, replies);
}

void state_key(char *buf, size_t cap, const char *run, const char *fmt, ...)
{
	int n = snprintf(buf, cap, "sluice:{%s}:", run);
	va_list ap;

	if (n < 0 || (size_t)n >= cap)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
	va_end(ap);
}
