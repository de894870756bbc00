/* registry.c - the registry thread: heartbeats, drain requests, deregistration at exit. */
#include <unistd.h>

#include "sluice/log.h"
#include "sluice/state.h"
#include "sluice/util.h"
#include "worker.h"

void *worker_registry_main(void *arg)
{
	struct worker *w = arg;
	const struct worker_config *cfg = w->cfg;
	int64_t next = 0;
	int failing = 0;
	enum sl_err err;

	pthread_mutex_lock(&w->lock);
	while (!atomic_load(&w->quit)) {
		int busy, draining = 0;
		int64_t now = sl_mono_ms();

		if (now < next) {
			worker_wait_tick(w, (long)(next - now));
			continue;
		}
		next = now + cfg->heartbeat_ms;
		busy = w->nbusy;
		pthread_mutex_unlock(&w->lock);
		err = sl_state_worker_heartbeat(w->reg_st, cfg->id, cfg->queue, w->nslots, busy,
						(int)getpid());
		if (err == SL_OK)
			err = sl_state_worker_draining(w->reg_st, cfg->id, &draining);
		if (err != SL_OK && !failing++)
			SL_WARN("worker heartbeat failed: %s; retrying", sl_strerror(err));
		else if (err == SL_OK && failing) {
			SL_INFO("worker heartbeat works again");
			failing = 0;
		}
		if (draining && !atomic_load(&w->drain_requested)) {
			atomic_store(&w->drain_requested, 1);
			SL_INFO("drain requested through the registry");
		}
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	/* Last act, after every task settled: the autoscaler sees us gone at once. */
	err = sl_state_worker_deregister(w->reg_st, cfg->id);
	if (err != SL_OK)
		SL_WARN("cannot deregister worker %s: %s (its entry expires by itself)", cfg->id,
			sl_strerror(err));
	return NULL;
}
