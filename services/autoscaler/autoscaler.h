/* autoscaler.h - the sluice-autoscaler service: its config table and its run loop. */
#ifndef AUTOSCALER_H
#define AUTOSCALER_H

#include <signal.h>
#include <stddef.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/health.h"

/* Filled by sl_config_load() from autoscaler_config_table; durations in milliseconds. */
struct autoscaler_config {
	char *kafka_brokers;
	char *redis_url;
	char *pools;      /* path of the pools YAML */
	char *worker_bin; /* NULL: sluice-worker next to this binary */
	char *log_dir;    /* NULL: workers inherit stderr */
	char *pid_dir;    /* NULL: <log-dir>/../pids/workers when log-dir is set */
	long interval_ms;
	long idle_poll_ms; /* empty pools: how often new dispatches are looked for; 0 = off */
	long start_timeout_ms;
	long drain_timeout_ms;
	char *log_level;
	char *http; /* health/metrics listen address, "" = off */
	/* Not from the table: set by main.c; per-pool gauges go here (borrowed, may be NULL). */
	struct sl_health *health;
};

extern const struct sl_config_entry autoscaler_config_table[];

struct autoscaler;

/* Reads the pools file, connects to Redis and Kafka (waiting for them while *stop is 0),
 * ensures the topics and builds the backends. cfg is borrowed and must outlive the result.
 * Returns NULL and fills errstr on error (SL_ERR_CANCELLED in *err when stopped while waiting). */
struct autoscaler *autoscaler_new(const struct autoscaler_config *cfg,
				  volatile sig_atomic_t *stop, enum sl_err *err, char *errstr,
				  size_t errlen);

/* Decides every interval until *stop becomes non-zero, then asks the workers it started to
 * drain and waits for them up to drain-timeout (a second signal, *stop >= 2, cuts the wait
 * short); whatever still runs then gets SIGTERM. Runs on the main thread. */
void autoscaler_run(struct autoscaler *a, volatile sig_atomic_t *stop);

/* Frees a; workers still running are left alone. Accepts NULL. */
void autoscaler_destroy(struct autoscaler *a);

#endif
