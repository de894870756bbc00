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
	{"dispatch-batch", SL_CFG_INT, "1000", F(dispatch_batch), "instances written to Redis per script call"},
	{"max-output", SL_CFG_INT, "1048576", F(max_output), "default cap of a task's stdout in bytes"},
	{NULL, 0, NULL, 0, NULL},
};
