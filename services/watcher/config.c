/* config.c - the config table of sluice-watcher (flags and SLUICE_* env vars). */
#include <stddef.h>
#include <stdio.h>

#include "watcher.h"

#define F(field) offsetof(struct watcher_config, field)

const struct sl_config_entry watcher_config_table[] = {
	{"kafka-brokers", SL_CFG_STR, "127.0.0.1:9092", F(kafka_brokers),
	 "Kafka bootstrap servers (host:port,...)"},
	{"redis-url", SL_CFG_STR, "redis://127.0.0.1:6379/0", F(redis_url),
	 "Redis holding the seen-file cursors (redis://host:port[/db])"},
	{"flows-dir", SL_CFG_STR, "examples", F(flows_dir),
	 "directory of flow files (*.yaml, *.yml); flows with trigger.files are watched"},
	{"base-dir", SL_CFG_STR, ".", F(base_dir),
	 "directory that relative trigger.files.dir paths resolve against"},
	{"scan-interval", SL_CFG_DURATION, "0", F(scan_interval_ms),
	 "0: inotify, full scans only at start, after SIGHUP and after an event overflow; "
	 ">0: polling mode (no inotify), a full scan this often"},
	{"settle-time", SL_CFG_DURATION, "1s", F(settle_ms),
	 "a file found by a scan (not reported closed by inotify) is taken only once it has "
	 "not changed for this long"},
	{"max-file-size", SL_CFG_INT, "1073741824", F(max_file_size),
	 "bigger files (bytes) are skipped and reported"},
	{"log-level", SL_CFG_STR, "info", F(log_level), "debug, info, warn or error"},
	{"http", SL_CFG_STR, "", F(http),
	 "serve /healthz, /readyz and /metrics on host:port (e.g. 127.0.0.1:9465); empty: off"},
	{NULL, 0, NULL, 0, NULL},
};

enum sl_err watcher_config_check(const struct watcher_config *cfg, char *errstr, size_t errlen)
{
	if (!cfg->kafka_brokers || !*cfg->kafka_brokers) {
		snprintf(errstr, errlen, "kafka-brokers must not be empty");
		return SL_ERR_CONFIG;
	}
	if (!cfg->redis_url || !*cfg->redis_url) {
		snprintf(errstr, errlen, "redis-url must not be empty");
		return SL_ERR_CONFIG;
	}
	if (!cfg->flows_dir || !*cfg->flows_dir || !cfg->base_dir || !*cfg->base_dir) {
		snprintf(errstr, errlen, "flows-dir and base-dir must not be empty");
		return SL_ERR_CONFIG;
	}
	if (cfg->scan_interval_ms < 0 || cfg->settle_ms < 0) {
		snprintf(errstr, errlen, "scan-interval and settle-time must not be negative");
		return SL_ERR_CONFIG;
	}
	if (cfg->max_file_size <= 0) {
		snprintf(errstr, errlen, "max-file-size must be a positive number of bytes");
		return SL_ERR_CONFIG;
	}
	return SL_OK;
}
