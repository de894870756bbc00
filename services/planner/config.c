/* config.c - the planner's configuration table. */
#include <stddef.h>

#include "planner.h"
#include "sluice/config.h"

#define F(x) offsetof(struct planner_config, x)

const struct sl_config_entry planner_config_table[] = {
	{"kafka-brokers", SL_CFG_STR, "127.0.0.1:9092", F(kafka_brokers), "Kafka bootstrap servers"},
	{"redis-url", SL_CFG_STR, "redis://127.0.0.1:6379/0", F(redis_url), "Redis URL"},
	{"flows-dir", SL_CFG_STR, "examples", F(flows_dir), "directory of flow YAML files"},
	{"log-level", SL_CFG_STR, "info", F(log_level), "debug, info, warn or error"},
	{"group", SL_CFG_STR, "sluice-planner", F(group), "Kafka consumer group of the planners"},
	{"lease-ttl", SL_CFG_DURATION, "10s", F(lease_ttl_ms), "task lease time-to-live given to workers"},
	{"timer-interval", SL_CFG_DURATION, "100ms", F(timer_interval_ms), "how often due retries are looked for"},
	{"partitions", SL_CFG_INT, "8", F(partitions), "partitions of topics the planner creates"},
	{"max-output", SL_CFG_INT, "1048576", F(max_output), "default cap of a task's stdout in bytes"},
	{"reap-interval", SL_CFG_DURATION, "1s", F(reap_interval_ms), "how often lost dispatches, lost leases and unstarted nodes are looked for"},
	{"dispatch-timeout", SL_CFG_DURATION, "30s", F(dispatch_timeout_ms), "a dispatched task nobody took for this long is sent again (doubling per resend)"},
	{"lease-grace", SL_CFG_DURATION, "0", F(lease_grace_ms), "a running task without a lease for this long is re-dispatched (0: the lease ttl)"},
	{"reap-max-lost", SL_CFG_INT, "5", F(reap_max_lost), "lost executions of one task instance after which it fails"},
	{"http", SL_CFG_STR, "", F(http), "serve /healthz, /readyz and /metrics on host:port (e.g. 127.0.0.1:9466); empty: off"},
	{"schedules", SL_CFG_BOOL, "true", F(schedules), "fire the flows' schedule: ticks (false: this replica never does)"},
	{NULL, 0, NULL, 0, NULL},
};
