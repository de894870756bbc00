/* registry.h - the autoscaler's Redis side: reads the worker registry, writes the pool views. */
#ifndef AUTOSCALER_REGISTRY_H
#define AUTOSCALER_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "pools.h"
#include "sluice/err.h"
#include "sluice/state.h"

#define AUTOSCALER_REGISTRY_MAX 4096 /* live workers read per interval, all queues together */

/* One live worker of sluice:workers / sluice:worker:<id>. */
struct autoscaler_registered {
	char id[AUTOSCALER_ID_MAX];
	char queue[AUTOSCALER_NAME_MAX];
	int slots;
	int busy;
	int draining;
	long pid;
	int64_t started_ms;
	int64_t heartbeat_ms;
};

struct autoscaler_registry {
	struct autoscaler_registered w[AUTOSCALER_REGISTRY_MAX];
	size_t n;
};

/* Reads the workers whose heartbeat is at or after live_after_ms (wall clock) into reg.
 * Entries whose hash is gone or garbled are skipped. Returns SL_OK, or SL_ERR_REDIS with
 * errstr filled (reg is then empty). */
enum sl_err autoscaler_registry_read(struct sl_state *st, int64_t live_after_ms,
				     struct autoscaler_registry *reg, char *errstr, size_t errlen);

/* What the CLI shows for a pool (HASH sluice:pool:<name>, SET sluice:pools). */
struct autoscaler_pool_view {
	const struct autoscaler_pool_config *pool; /* borrowed */
	int workers;                               /* active + starting */
	int starting;
	int draining;
	int desired;
	int64_t lag; /* -1: unknown */
	int64_t busy;
	int64_t updated_ms;
	const char *reason; /* borrowed */
};

/* Writes the view of one pool. Returns SL_OK or SL_ERR_REDIS. */
enum sl_err autoscaler_registry_write_view(struct sl_state *st,
					   const struct autoscaler_pool_view *v);

#endif
