/* lease.c - the renewal thread: keeps every held lease alive, flags the ones that are lost. */
#include <stdio.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/state.h"
#include "sluice/util.h"
#include "worker.h"

#define LEASE_TICK_MS 100

/* What one renewal needs, copied under the lock: the slot's dispatch may be freed while
 * Redis answers. */
struct renewal {
	char run[WORKER_RUN_ID_MAX + 1];
	char task[WORKER_TASK_MAX + 1];
	int idx;
	unsigned attempt;
	long ttl_ms;
	unsigned gen;
};

/* Copies what renewing d's lease needs (the caller holds w->lock), renews it without the lock
 * and takes the lock back. Returns the renewal's answer. */
static enum sl_err renew_unlocked(struct worker *w, struct renewal *rn,
				  const Sluice__V1__TaskDispatch *d, long ttl_ms, unsigned gen)
{
	enum sl_err err;

	sl_strlcpy(rn->run, d->run_id, sizeof(rn->run));
	sl_strlcpy(rn->task, d->task, sizeof(rn->task));
	rn->idx = d->map_index;
	rn->attempt = d->attempt;
	rn->ttl_ms = ttl_ms;
	rn->gen = gen;
	pthread_mutex_unlock(&w->lock);
	err = sl_state_lease_renew(w->lease_st, rn->run, rn->task, rn->idx, rn->attempt,
				   w->cfg->id, rn->ttl_ms);
	pthread_mutex_lock(&w->lock);
	return err;
}

/* Renews the leases of the dispatches leased ahead that are due; drops those whose lease
 * is gone (the run was cancelled, or the reaper took the instance back). A slot may take one
 * while Redis answers: it carries the old renewal time, so its own renewal follows at once.
 * @locks w->lock held (released around each renewal). */
static void renew_ahead(struct worker *w, int *failing)
{
	for (int i = 0; i < w->nahead; i++) {
		struct worker_ahead *a = &w->ahead[i];
		struct renewal rn;
		enum sl_err err;
		int64_t now = sl_mono_ms(), sent = now;

		if (now < a->next_renew_ms)
			continue;
		err = renew_unlocked(w, &rn, a->d, a->ttl_ms, a->gen);
		for (i = 0; i < w->nahead && w->ahead[i].gen != rn.gen; i++)
			;
		if (i == w->nahead)
			return; /* a slot took it meanwhile; the rest waits for the next tick */
		a = &w->ahead[i];
		now = sl_mono_ms();
		if (err == SL_OK) {
			a->next_renew_ms = now + rn.ttl_ms / 3;
			a->stop_by_ms = worker_lease_stop_by(w, sent, rn.ttl_ms);
			*failing = 0;
		} else if (err == SL_ERR_STALE) {
			Sluice__V1__TaskDispatch *d = a->d;

			worker_ahead_drop(w, i--);
			SL_INFO("lease of %s/%s[%d] attempt %u, leased ahead, is gone (cancelled or "
				"re-dispatched): dropped before it started",
				rn.run, rn.task, rn.idx, rn.attempt);
			sluice__v1__task_dispatch__free_unpacked(d, NULL);
		} else {
			long again = rn.ttl_ms / 10 < 1000 ? rn.ttl_ms / 10 : 1000;

			a->next_renew_ms = now + again;
			if (!(*failing)++)
				SL_WARN("cannot renew leases: %s; retrying", sl_strerror(err));
		}
	}
}

void *worker_lease_main(void *arg)
{
	struct worker *w = arg;
	int failing = 0;

	pthread_mutex_lock(&w->lock);
	while (!atomic_load(&w->quit)) {
		for (int i = 0; i < w->nslots; i++) {
			struct worker_slot *s = &w->slots[i];
			struct renewal rn;
			enum sl_err err;
			int64_t now = sl_mono_ms();

			/* A slot whose result is out needs its lease no more: the planner
			 * releases it when it records the result. */
			if (!s->job || atomic_load(&s->lost) || now < s->next_renew_ms ||
			    s->result_out)
				continue;
			int64_t sent = now; /* the new expiry counts from here, not from the reply */
			err = renew_unlocked(w, &rn, s->job, s->ttl_ms, s->gen);
			if (!s->job || s->gen != rn.gen)
				continue; /* finished meanwhile */
			now = sl_mono_ms();
			if (err == SL_OK) {
				s->next_renew_ms = now + rn.ttl_ms / 3;
				atomic_store(&s->stop_by_ms, worker_lease_stop_by(w, sent, rn.ttl_ms));
				if (failing) {
					SL_INFO("lease renewal works again");
					failing = 0;
				}
			} else if (err == SL_ERR_STALE && s->result_out) {
				/* The result is out and the planner released the lease: not a loss. */
				s->next_renew_ms = now + rn.ttl_ms / 3;
			} else if (err == SL_ERR_STALE) {
				atomic_store(&s->lost, 1);
				pthread_cond_broadcast(&w->cond);
				SL_WARN("lease of %s/%s[%d] attempt %u lost (expired, re-dispatched or "
					"cancelled): stopping the task",
					rn.run, rn.task, rn.idx, rn.attempt);
			} else {
				/* Try again soon: the lease may still be saved before it lapses. */
				long again = rn.ttl_ms / 10 < 1000 ? rn.ttl_ms / 10 : 1000;
				s->next_renew_ms = now + again;
				if (!failing++)
					SL_WARN("cannot renew leases: %s; retrying", sl_strerror(err));
			}
		}
		renew_ahead(w, &failing);
		worker_wait_tick(w, LEASE_TICK_MS);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}
