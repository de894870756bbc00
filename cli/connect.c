/* connect.c - the CLI's Redis reads and confirmed Kafka sends, with user-facing errors. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "sluice/kafka.h"
#include "sluice/util.h"

/* How long one message may wait for the broker's confirmation unless the user set
 * SLUICE_KAFKA_MESSAGE_TIMEOUT_MS: a CLI should fail fast when Kafka is down, where
 * librdkafka's default (300 s) suits services. */
#define CLI_KAFKA_TIMEOUT_MS "10000"

/* Copies url into buf without its user:password part: secrets are never printed. */
static void redact_url(const char *url, char *buf, size_t cap)
{
	const char *scheme = strstr(url, "://");
	const char *host = scheme ? scheme + 3 : url;
	const char *at = strchr(host, '@');
	const char *slash = strchr(host, '/');

	if (at && (!slash || at < slash))
		snprintf(buf, cap, "%.*s***@%s", (int)(host - url), url, at + 1);
	else
		sl_strlcpy(buf, url, cap);
}

struct sl_state *cli_redis_connect(const struct cli *cli)
{
	char errstr[512] = "", shown[256];
	struct sl_state *st = sl_state_new(cli->redis_url, errstr, sizeof(errstr));

	if (!st) {
		redact_url(cli->redis_url, shown, sizeof(shown));
		fprintf(stderr, "sluice: cannot reach Redis at %s: %s\n", shown,
			errstr[0] ? errstr : "connection failed");
	}
	return st;
}

redisReply *cli_redis_check(redisReply *r, const char *what)
{
	if (!r) {
		fprintf(stderr, "sluice: Redis %s failed: connection lost\n", what);
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "sluice: Redis %s failed: %.*s\n", what, (int)r->len, r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* hiredis 1.x speaks RESP3 when asked to; 0.14 (Debian 12) has only the RESP2 types. */
#ifndef REDIS_REPLY_VERB
#define REDIS_REPLY_VERB REDIS_REPLY_STRING
#endif
#ifndef REDIS_REPLY_MAP
#define REDIS_REPLY_MAP REDIS_REPLY_ARRAY
#endif

int cli_reply_is_str(const redisReply *r)
{
	return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
		     r->type == REDIS_REPLY_VERB);
}

static int is_pairs(const redisReply *r)
{
	return r && (r->type == REDIS_REPLY_ARRAY || r->type == REDIS_REPLY_MAP);
}

const char *cli_hash_get(const redisReply *r, const char *field)
{
	size_t i;

	if (!is_pairs(r))
		return NULL;
	for (i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *k = r->element[i], *v = r->element[i + 1];
		if (cli_reply_is_str(k) && !strcmp(k->str, field))
			return cli_reply_is_str(v) ? v->str : NULL;
	}
	return NULL;
}

size_t cli_hash_len(const redisReply *r)
{
	return is_pairs(r) ? r->elements / 2 : 0;
}

int cli_glob_escape(const char *src, char *dst, size_t cap)
{
	size_t n = 0;

	for (; *src; src++) {
		if (strchr("*?[]\\", *src)) {
			if (n + 1 >= cap)
				return -1;
			dst[n++] = '\\';
		}
		if (n + 1 >= cap)
			return -1;
		dst[n++] = *src;
	}
	if (cap == 0)
		return -1;
	dst[n] = '\0';
	return 0;
}

int cli_run_key(char *dst, size_t cap, const char *run, const char *suffix)
{
	int n = snprintf(dst, cap, "sluice:{%s}:%s", run, suffix);

	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int cli_check_run_id(const char *cmd, const char *run)
{
	const char *p;

	if (!*run || strlen(run) > CLI_NAME_MAX) {
		cli_usage_error(cmd, "a run id has 1 to %d characters", CLI_NAME_MAX);
		return -1;
	}
	for (p = run; *p; p++) {
		if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p) || *p == '{' ||
		    *p == '}') {
			cli_usage_error(cmd, "\"%s\" is not a run id", run);
			return -1;
		}
	}
	return 0;
}

struct delivery {
	int done;
	enum sl_err err;
	char reason[256];
};

static void on_delivery(void *opaque, enum sl_err err, const char *reason, void *ctx)
{
	struct delivery *d = ctx;

	d->done = 1;
	d->err = err;
	if (reason)
		sl_strlcpy(d->reason, reason, sizeof(d->reason));
}

int cli_kafka_send(const struct cli *cli, const char *topic, const char *key, const void *payload,
		   size_t len)
{
	struct delivery d = {0};
	struct sl_kafka_producer *p = NULL;
	char errstr[512] = "";
	const char *tmo_env;
	long tmo_ms = 10000;
	int rc = CLI_UNREACHABLE;

	setenv("SLUICE_KAFKA_MESSAGE_TIMEOUT_MS", CLI_KAFKA_TIMEOUT_MS, 0);
	tmo_env = getenv("SLUICE_KAFKA_MESSAGE_TIMEOUT_MS");
	if (tmo_env)
		tmo_ms = (long)out_int(tmo_env, 10000);
	p = sl_kafka_producer_new(cli->brokers, 0, on_delivery, &d, errstr, sizeof(errstr));
	if (!p) {
		fprintf(stderr, "sluice: cannot create a Kafka producer for %s: %s\n", cli->brokers,
			errstr);
		goto out;
	}
	if (sl_kafka_produce(p, topic, key, strlen(key), payload, len, NULL) != SL_OK) {
		fprintf(stderr, "sluice: cannot queue the message for %s\n", topic);
		goto out;
	}
	/* The delivery report arrives before message.timeout.ms at the latest; the margin
	 * covers the report's own trip through the queue. */
	sl_kafka_producer_flush(p, (int)(tmo_ms + 2000));
	sl_kafka_producer_poll(p, 0);
	if (!d.done) {
		fprintf(stderr, "sluice: Kafka at %s did not confirm the message to %s in time\n",
			cli->brokers, topic);
		goto out;
	}
	if (d.err != SL_OK) {
		fprintf(stderr, "sluice: Kafka at %s did not take the message to %s: %s\n",
			cli->brokers, topic, d.reason[0] ? d.reason : sl_strerror(d.err));
		if (strstr(d.reason, "topic") || strstr(d.reason, "Topic"))
			fprintf(stderr, "sluice: hint: create the topics with `sluice topics create`\n");
		goto out;
	}
	rc = CLI_OK;
out:
	if (p && !d.done) {
		/* Do not let destroy wait 10 s more for a message that is not going anywhere. */
		rd_kafka_purge(sl_kafka_producer_handle(p),
			       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
		sl_kafka_producer_poll(p, 0);
	}
	sl_kafka_producer_destroy(p);
	return rc;
}

int cli_exit_for_state(const char *state)
{
	if (!strcmp(state, "SUCCEEDED"))
		return CLI_OK;
	if (!strcmp(state, "FAILED"))
		return CLI_FAILED;
	if (!strcmp(state, "CANCELLED"))
		return CLI_CANCELLED;
	if (!strcmp(state, "REJECTED"))
		return CLI_REJECTED;
	return -1;
}

void cli_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}
