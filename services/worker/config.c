/* config.c - the config table of sluice-worker (flags and SLUICE_* env vars). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/util.h"
#include "worker.h"

#define F(field) offsetof(struct worker_config, field)

const struct sl_config_entry worker_config_table[] = {
	{"kafka-brokers", SL_CFG_STR, "127.0.0.1:9092", F(kafka_brokers),
	 "Kafka bootstrap servers (host:port,...); SLUICE_KAFKA_<PROP> sets librdkafka <prop>"},
	{"redis-url", SL_CFG_STR, "redis://127.0.0.1:6379/0", F(redis_url),
	 "Redis holding leases and the worker registry (redis://host:port[/db])"},
	{"queue", SL_CFG_STR, "default", F(queue),
	 "queue to serve: consumes sluice.tasks.<queue> in group sluice-workers.<queue>"},
	{"slots", SL_CFG_INT, "4", F(slots), "task instances run at the same time (1-256)"},
	{"lease-ttl", SL_CFG_DURATION, "10s", F(lease_ttl_ms),
	 "lease time-to-live when the dispatch names none; renewed every ttl/3"},
	{"id", SL_CFG_STR, NULL, F(id),
	 "worker id in the registry and in leases (default: w-<hostname>-<unique suffix>)"},
	{"heartbeat", SL_CFG_DURATION, "1s", F(heartbeat_ms),
	 "registry heartbeat and drain-request check interval"},
	{"log-level", SL_CFG_STR, "info", F(log_level), "debug, info, warn or error"},
	{"work-dir", SL_CFG_STR, "/tmp/sluice-work", F(work_dir),
	 "per-run scratch directories <work-dir>/<run id> (SLUICE_WORK_DIR of a task)"},
	{"kill-grace", SL_CFG_DURATION, "2s", F(kill_grace_ms),
	 "time between SIGTERM and SIGKILL when a task is stopped (timeout, lease lost, stop)"},
	{"drain-timeout", SL_CFG_DURATION, "20s", F(drain_timeout_ms),
	 "on SIGTERM, running tasks get this long to finish; then they are stopped and their "
	 "leases released so the planner re-dispatches them (0: wait for them however long)"},
	{"lease-ahead", SL_CFG_INT, "4", F(lease_ahead),
	 "dispatches leased while every slot is busy, started without a Redis round trip when a "
	 "slot frees (0-16; 0: lease only for a free slot)"},
	{"lease-batch", SL_CFG_INT, "2", F(lease_batch),
	 "with every slot busy, lease ahead only once this many can be leased in one call "
	 "(1-16; more than lease-ahead counts as lease-ahead): fewer Redis round trips, each "
	 "with its fsync"},
	{"http", SL_CFG_STR, "", F(http),
	 "serve /healthz, /readyz and /metrics on host:port (e.g. 127.0.0.1:9464; :0 picks a "
	 "port); empty: off"},
	{NULL, 0, NULL, 0, NULL},
};

/* Topic names allow [A-Za-z0-9._-]; the queue becomes part of one. */
static int valid_queue(const char *q)
{
	size_t n = strlen(q);

	if (n == 0 || n > WORKER_QUEUE_MAX)
		return 0;
	for (; *q; q++)
		if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
		      (*q >= '0' && *q <= '9') || *q == '.' || *q == '_' || *q == '-'))
			return 0;
	return 1;
}

/* Keeps hostname characters that are safe in ids and keys; returns the length written. */
static size_t host_part(char *buf, size_t cap)
{
	char host[256] = "";
	size_t n = 0;

	if (gethostname(host, sizeof(host) - 1) != 0)
		host[0] = '\0';
	for (const char *p = host; *p && n + 1 < cap; p++) {
		char c = *p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.')
			buf[n++] = c;
	}
	if (n == 0 && cap > 5)
		n = sl_strlcpy(buf, "host", cap);
	buf[n] = '\0';
	return n;
}

enum sl_err worker_config_finish(struct worker_config *cfg, char *errstr, size_t errlen)
{
	if (!cfg->kafka_brokers || !*cfg->kafka_brokers || !cfg->redis_url || !*cfg->redis_url) {
		snprintf(errstr, errlen, "kafka-brokers and redis-url must not be empty");
		return SL_ERR_CONFIG;
	}
	if (!cfg->queue || !valid_queue(cfg->queue)) {
		snprintf(errstr, errlen,
			 "queue must be 1-%d characters of [A-Za-z0-9._-], got \"%s\"",
			 WORKER_QUEUE_MAX, cfg->queue ? cfg->queue : "");
		return SL_ERR_CONFIG;
	}
	if (sl_queue_is_band(cfg->queue)) {
		/* sluice.tasks.<q>.high is the high band of queue <q>, not a queue of its own. */
		snprintf(errstr, errlen, "queue \"%s\" must not end in .high or .low (those name "
			 "priority bands)", cfg->queue);
		return SL_ERR_CONFIG;
	}
	if (cfg->slots < 1 || cfg->slots > WORKER_MAX_SLOTS) {
		snprintf(errstr, errlen, "slots must be between 1 and %d, got %ld", WORKER_MAX_SLOTS,
			 cfg->slots);
		return SL_ERR_CONFIG;
	}
	if (cfg->lease_ttl_ms < WORKER_MIN_LEASE_TTL_MS || cfg->heartbeat_ms < 10) {
		snprintf(errstr, errlen, "lease-ttl must be at least %ldms and heartbeat 10ms",
			 WORKER_MIN_LEASE_TTL_MS);
		return SL_ERR_CONFIG;
	}
	if (cfg->lease_ahead < 0 || cfg->lease_ahead > WORKER_LEASE_AHEAD_MAX) {
		snprintf(errstr, errlen, "lease-ahead must be between 0 and %d, got %ld",
			 WORKER_LEASE_AHEAD_MAX, cfg->lease_ahead);
		return SL_ERR_CONFIG;
	}
	if (cfg->lease_batch < 1 || cfg->lease_batch > WORKER_LEASE_AHEAD_MAX) {
		snprintf(errstr, errlen, "lease-batch must be between 1 and %d, got %ld",
			 WORKER_LEASE_AHEAD_MAX, cfg->lease_batch);
		return SL_ERR_CONFIG;
	}
	if (cfg->lease_ahead && cfg->lease_batch > cfg->lease_ahead)
		cfg->lease_batch = cfg->lease_ahead;
	if (cfg->kill_grace_ms < 0 || cfg->drain_timeout_ms < 0) {
		snprintf(errstr, errlen, "kill-grace and drain-timeout must not be negative");
		return SL_ERR_CONFIG;
	}
	if (!cfg->work_dir || cfg->work_dir[0] != '/' || strlen(cfg->work_dir) > 1024) {
		snprintf(errstr, errlen, "work-dir must be an absolute path (at most 1024 bytes)");
		return SL_ERR_CONFIG;
	}
	if (cfg->id && *cfg->id) {
		/* The id is part of lease values "<worker>:<attempt>" and of Redis keys. */
		if (strlen(cfg->id) >= WORKER_ID_MAX || strpbrk(cfg->id, " \t\r\n{}")) {
			snprintf(errstr, errlen, "id must be under %d characters, without spaces "
				 "or braces", WORKER_ID_MAX);
			return SL_ERR_CONFIG;
		}
		return SL_OK;
	}
	{
		char prefix[64] = "w-";
		char id[WORKER_ID_MAX];
		size_t n = 2;

		n += host_part(prefix + n, 32);
		snprintf(prefix + n, sizeof(prefix) - n, "-%d-", (int)getpid());
		sl_id_new(prefix, id, sizeof(id));
		free(cfg->id);
		if (!(cfg->id = strdup(id))) {
			snprintf(errstr, errlen, "out of memory");
			return SL_ERR_NOMEM;
		}
	}
	return SL_OK;
}
