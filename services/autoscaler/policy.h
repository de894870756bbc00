/* policy.h - the scaling decision of one pool as a pure function: numbers in, actions out. */
#ifndef AUTOSCALER_POLICY_H
#define AUTOSCALER_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "pools.h"

#define AUTOSCALER_ID_MAX 64      /* worker ids, NUL included */
#define AUTOSCALER_REASON_MAX 512 /* decision reason text, NUL included */
#define AUTOSCALER_POLICY_MAX_WORKERS 8192 /* workers looked at per decision; more are ignored */

enum autoscaler_worker_state {
	AUTOSCALER_WORKER_ACTIVE,   /* registered, alive, taking work */
	AUTOSCALER_WORKER_STARTING, /* launched, not registered yet, within the start timeout */
	AUTOSCALER_WORKER_DRAINING, /* asked to stop (or leaving): alive until its process exits */
};

/* One worker of the pool as the policy sees it. */
struct autoscaler_worker {
	char id[AUTOSCALER_ID_MAX];
	enum autoscaler_worker_state state;
	int busy;           /* task slots in use (0 for a starting worker) */
	int64_t started_ms; /* any clock; only the order matters: larger = newer */
};

/* What the policy remembers between two decisions of a pool; all times on the clock of `now`,
 * 0 = not set. Start with a zeroed struct and feed back decision.history each time. */
struct autoscaler_history {
	int64_t last_scale_up_ms;  /* when workers were last started (cooldown) */
	int64_t below_since_ms;    /* since when desired < current without a break */
	int below_peak;            /* highest desired seen since below_since_ms */
	int64_t idle_since_ms;     /* since when lag + busy == 0 without a break */
	int64_t hold_starts_until; /* no starts before this (backoff after failed starts) */
};

struct autoscaler_policy_input {
	int64_t now_ms;
	const struct autoscaler_pool_config *pool; /* borrowed */
	int64_t lag;                               /* queued dispatches not taken yet */
	const struct autoscaler_worker *workers;   /* borrowed; busy is summed from them */
	size_t nworkers;
	struct autoscaler_history history;
};

struct autoscaler_decision {
	int64_t lag;
	int64_t busy;     /* sum of busy over the workers */
	int current;      /* active + starting workers: the capacity that takes work */
	int starting;     /* of which not registered yet */
	int draining;     /* asked to drain, process not gone yet */
	int desired;      /* clamp(ceil((lag + busy) / target_per_worker), min, max) */
	int start;        /* workers to start now */
	size_t drain[AUTOSCALER_POOL_MAX_SIZE]; /* indexes into input.workers to drain now */
	size_t ndrain;
	struct autoscaler_history history; /* carry into the next decision */
	char reason[AUTOSCALER_REASON_MAX];
};

/* Decides what pool should do now. Pure: reads only in, writes only out; never fails.
 * Rules: scale up at once to desired (at most scale_up_step at a time, not within
 * scale_up_cooldown of the last start unless the pool has no worker at all, never past max
 * processes counting draining ones);
 * scale down only after desired stayed below current for scale_down_window (to the highest
 * desired of that window, keeping at least max(min, 1)), or to min after idle_to_zero of zero
 * demand; only idle (busy == 0) registered workers are drained, newest first. */
void autoscaler_policy_decide(const struct autoscaler_policy_input *in,
			      struct autoscaler_decision *out);

#endif
