/* config.c - the config table of sluice-autoscaler (flags, SLUICE_* variables, --help, docs). */
#include <stddef.h>

#include "autoscaler.h"

#define F(field) offsetof(struct autoscaler_config, field)

const struct sl_config_entry autoscaler_config_table[] = {
	{"kafka-brokers", SL_CFG_STR, "127.0.0.1:9092", F(kafka_brokers),
	 "Kafka bootstrap servers (host:port,...)"},
	{"redis-url", SL_CFG_STR, "redis://127.0.0.1:6379/0", F(redis_url),
	 "Redis holding the worker registry and the pool views"},
	{"pools", SL_CFG_STR, "examples/autoscaler/pools.yaml", F(pools), "path of the pools YAML file"},
	{"worker-bin", SL_CFG_STR, NULL, F(worker_bin),
	 "sluice-worker started by the process backend (default: next to this binary)"},
	{"log-dir", SL_CFG_STR, NULL, F(log_dir),
	 "directory for worker-<id>.log of process-backend workers (default: inherit stderr)"},
	{"pid-dir", SL_CFG_STR, NULL, F(pid_dir),
	 "directory for <id>.pid of process-backend workers (default: <log-dir>/../pids/workers)"},
	{"interval", SL_CFG_DURATION, "1s", F(interval_ms), "time between two decisions"},
	{"idle-poll", SL_CFG_DURATION, "100ms", F(idle_poll_ms),
	 "a pool with no worker and no lag is checked this often for new dispatches, which bring "
	 "the next decision forward (0: only every interval)"},
	{"start-timeout", SL_CFG_DURATION, "15s", F(start_timeout_ms),
	 "a started worker that has not registered by then is stopped and no longer counted"},
	{"drain-timeout", SL_CFG_DURATION, "30s", F(drain_timeout_ms),
	 "on SIGTERM, how long to wait for drained workers before sending them SIGTERM"},
	{"log-level", SL_CFG_STR, "info", F(log_level), "debug, info, warn or error"},
	{"http", SL_CFG_STR, "", F(http),
	 "serve /healthz, /readyz and /metrics on host:port (e.g. 127.0.0.1:9467); empty: off"},
	{NULL, 0, NULL, 0, NULL},
};
