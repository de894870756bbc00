/* pools.h - the pools file of the autoscaler: one entry per pool of workers on a queue. */
#ifndef AUTOSCALER_POOLS_H
#define AUTOSCALER_POOLS_H

#include <stddef.h>

#include "sluice/err.h"

#define AUTOSCALER_NAME_MAX 101     /* pool and queue names: at most 100 characters + NUL */
#define AUTOSCALER_MAX_POOLS 64     /* pools one autoscaler runs */
#define AUTOSCALER_POOL_MAX_SIZE 256 /* largest allowed `max` of a pool */

enum autoscaler_backend_kind {
	AUTOSCALER_BACKEND_PROCESS = 0,
};

/* One pool as written in the pools file; durations in milliseconds. */
struct autoscaler_pool_config {
	char name[AUTOSCALER_NAME_MAX];
	char queue[AUTOSCALER_NAME_MAX]; /* consumes sluice.tasks.<queue> */
	enum autoscaler_backend_kind backend;
	int min;
	int max;
	int target_per_worker; /* demand one worker absorbs */
	int slots;             /* --slots passed to each worker */
	int scale_up_step;     /* most workers added by one decision */
	long scale_up_cooldown_ms;
	long scale_down_window_ms;
	long idle_to_zero_ms;
};

struct autoscaler_pools {
	struct autoscaler_pool_config pool[AUTOSCALER_MAX_POOLS];
	size_t n;
};

/* Parses the pools file at path into out (zeroed first). Unknown keys, bad values, duplicate
 * pools or two pools on one queue are errors: returns SL_ERR_CONFIG/SL_ERR_PARSE/SL_ERR_IO and
 * fills errstr with "path:line: ..." ; out is then unusable. */
enum sl_err autoscaler_pools_load(const char *path, struct autoscaler_pools *out, char *errstr,
				  size_t errlen);

/* Same as autoscaler_pools_load() on an in-memory document (len bytes); name is used in
 * messages. */
enum sl_err autoscaler_pools_parse(const char *name, const char *text, size_t len,
				   struct autoscaler_pools *out, char *errstr, size_t errlen);

/* "process" for AUTOSCALER_BACKEND_PROCESS. */
const char *autoscaler_backend_name(enum autoscaler_backend_kind kind);

#endif
