/* slot.c - executor threads: one task instance at a time, its result queued for the planner. */
#include <stdio.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/state.h"
#include "sluice/util.h"
#include "worker.h"

void worker_slot_init(struct worker *w, int i)
{
	w->slots[i].w = w;
	w->slots[i].index = i;
	pthread_cond_init(&w->slots[i].wake, NULL);
}

void worker_slot_fini(struct worker_slot *s)
{
	pthread_cond_destroy(&s->wake);
}

void worker_slots_wake(struct worker *w)
{
	for (int i = 0; i < w->nslots; i++)
		pthread_cond_signal(&w->slots[i].wake);
}

int worker_free_slots(struct worker *w)
{
	int n;

	pthread_mutex_lock(&w->lock);
	n = w->nslots - w->nbusy;
	pthread_mutex_unlock(&w->lock);
	return n;
}

/* 1 when job is (run, task, idx, attempt) of d. */
static int same_job(const Sluice__V1__TaskDispatch *j, const Sluice__V1__TaskDispatch *d)
{
	return j->attempt == d->attempt && j->map_index == d->map_index &&
	       !strcmp(j->run_id, d->run_id) && !strcmp(j->task, d->task);
}

/* FNV-1a of (run, task, idx, attempt): what the recent ring remembers of an instance. */
static uint64_t job_hash(const Sluice__V1__TaskDispatch *d)
{
	uint64_t h = 14695981039346656037ULL;
	char tail[32];
	const char *parts[3] = {d->run_id, d->task, tail};

	snprintf(tail, sizeof(tail), "%d/%u", (int)d->map_index, (unsigned)d->attempt);
	for (int i = 0; i < 3; i++) {
		for (const unsigned char *c = (const unsigned char *)parts[i]; *c; c++)
			h = (h ^ *c) * 1099511628211ULL;
		h = (h ^ 0xff) * 1099511628211ULL; /* separator: "ab"+"c" is not "a"+"bc" */
	}
	return h;
}

int worker_slot_holds(struct worker *w, const Sluice__V1__TaskDispatch *d)
{
	uint64_t h;

	for (int i = 0; i < w->nslots; i++)
		if (w->slots[i].job && same_job(w->slots[i].job, d))
			return 1;
	for (int i = 0; i < w->nahead; i++)
		if (same_job(w->ahead[i].d, d))
			return 1;
	h = job_hash(d);
	for (unsigned i = 0; i < WORKER_RECENT_MAX && i < w->nrecent; i++)
		if (w->recent[i] == h)
			return 1;
	return 0;
}

int worker_room(struct worker *w)
{
	int n;

	pthread_mutex_lock(&w->lock);
	n = w->nslots - w->nbusy;
	if (n == 0 && !atomic_load(&w->hard_stop))
		n = worker_ahead_room(w);
	pthread_mutex_unlock(&w->lock);
	return n;
}

int worker_ahead_room(struct worker *w)
{
	int n = (int)w->cfg->lease_ahead - w->nahead;

	return n < w->cfg->lease_batch ? 0 : n;
}

/* Gives the job d, leased until stop_by_ms and renewed next at next_renew_ms, to slot s.
 * @locks w->lock held. */
static void slot_give(struct worker_slot *s, Sluice__V1__TaskDispatch *d, long ttl_ms,
		      int64_t next_renew_ms, int64_t stop_by_ms)
{
	s->job = d;
	s->ttl_ms = ttl_ms;
	s->next_renew_ms = next_renew_ms;
	atomic_store(&s->stop_by_ms, stop_by_ms);
	s->gen++;
	s->result_out = 0;
	atomic_store(&s->lost, 0);
}

int worker_slot_assign(struct worker *w, Sluice__V1__TaskDispatch *d, long ttl_ms,
		       int64_t sent_ms)
{
	int64_t renew = sent_ms + ttl_ms / 3, stop_by = worker_lease_stop_by(w, sent_ms, ttl_ms);
	int rc = -1;

	pthread_mutex_lock(&w->lock);
	for (int i = 0; i < w->nslots; i++) {
		struct worker_slot *s = &w->slots[i];

		if (s->job)
			continue;
		slot_give(s, d, ttl_ms, renew, stop_by);
		w->nbusy++;
		sl_metric_set(w->m.busy, w->nbusy);
		pthread_cond_signal(&s->wake);
		rc = 0;
		break;
	}
	if (rc != 0 && w->nahead < w->cfg->lease_ahead) {
		w->ahead[w->nahead++] = (struct worker_ahead){.d = d, .ttl_ms = ttl_ms,
							     .next_renew_ms = renew,
							     .stop_by_ms = stop_by,
							     .gen = ++w->ahead_gen};
		sl_metric_set(w->m.ahead, w->nahead);
		rc = 0;
	}
	pthread_mutex_unlock(&w->lock);
	return rc;
}

void worker_ahead_drop(struct worker *w, int i)
{
	memmove(&w->ahead[i], &w->ahead[i + 1], (size_t)(w->nahead - i - 1) * sizeof(w->ahead[0]));
	w->nahead--;
	sl_metric_set(w->m.ahead, w->nahead);
}

/* The slot that just finished its job takes the oldest dispatch leased ahead, unless the
 * worker stops hard (those are released instead). Returns 1 when it did. @locks w->lock held. */
static int slot_take_ahead(struct worker_slot *s)
{
	struct worker *w = s->w;
	struct worker_ahead a;

	if (!w->nahead || atomic_load(&w->hard_stop))
		return 0;
	a = w->ahead[0];
	worker_ahead_drop(w, 0);
	slot_give(s, a.d, a.ttl_ms, a.next_renew_ms, a.stop_by_ms);
	return 1;
}

void worker_ahead_release(struct worker *w)
{
	pthread_mutex_lock(&w->lock);
	while (w->nahead) {
		struct worker_ahead a = w->ahead[0];

		worker_ahead_drop(w, 0);
		pthread_mutex_unlock(&w->lock);
		SL_INFO("%s/%s[%d] attempt %u: leased ahead, not started; lease released for "
			"re-dispatch", a.d->run_id, a.d->task, a.d->map_index, a.d->attempt);
		sl_state_lease_release(w->st, a.d->run_id, a.d->task, a.d->map_index, a.d->attempt,
				       w->cfg->id);
		sluice__v1__task_dispatch__free_unpacked(a.d, NULL);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
}

static void release_lease(struct worker_slot *s, const Sluice__V1__TaskDispatch *d)
{
	enum sl_err err = sl_state_lease_release(s->st, d->run_id, d->task, d->map_index,
						 d->attempt, s->w->cfg->id);

	if (err != SL_OK)
		SL_WARN("cannot release lease of %s/%s[%d] attempt %u: %s (it lapses by itself)",
			d->run_id, d->task, d->map_index, d->attempt, sl_strerror(err));
}

static const char *status_name(Sluice__V1__TaskStatus st)
{
	switch (st) {
	case SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED:
		return "SUCCEEDED";
	case SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED:
		return "FAILED";
	case SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT:
		return "TIMED_OUT";
	case SLUICE__V1__TASK_STATUS__TASK_STATUS_CANCELLED:
		return "CANCELLED";
	default:
		return "UNSPECIFIED";
	}
}

/* Runs d and settles it: publish (the planner releases the lease when it records the
 * result), or (lease lost) nothing, or (hard stop) release only, so the planner
 * re-dispatches at once. */
static void execute(struct worker_slot *s, const Sluice__V1__TaskDispatch *d)
{
	Sluice__V1__TaskDispatch *next;
	struct worker_outcome out;

	SL_DEBUG("slot %d: start %s/%s[%d] attempt %u (%s %s)", s->index, d->run_id, d->task,
		 d->map_index, d->attempt,
		 d->kind == SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN ? "builtin" : "command",
		 d->kind == SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN ? d->builtin : d->argv[0]);
	sl_metric_inc(s->w->m.started);
	worker_run_instance(s, d, &out);
	/* Evaluated once more (it sets s->lost once stop_by_ms passed): a task that ended on its
	 * own after its lease could lapse (Redis unreachable) publishes nothing either. */
	worker_slot_should_stop(s);
	if (atomic_load(&s->lost)) {
		sl_metric_inc(s->w->m.leases_lost);
		sl_metric_inc(s->w->m.stopped);
		SL_INFO("%s/%s[%d] attempt %u: lease lost, task stopped, no result published",
			d->run_id, d->task, d->map_index, d->attempt);
		goto out;
	}
	if (out.stopped) {
		sl_metric_inc(s->w->m.stopped);
		SL_INFO("%s/%s[%d] attempt %u: stopped by shutdown; lease released for re-dispatch",
			d->run_id, d->task, d->map_index, d->attempt);
		release_lease(s, d);
		goto out;
	}
	SL_DEBUG("slot %d: finished %s/%s[%d] attempt %u: %s in %lld ms%s%s", s->index,
		 d->run_id, d->task, d->map_index, d->attempt, status_name(out.status),
		 (long long)(out.finished_ms - out.started_ms), out.error[0] ? ": " : "",
		 out.error);
	sl_metric_inc(out.status == SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED ? s->w->m.succeeded
										   : s->w->m.failed);
	/* The lease stays until the planner records the result (result_apply releases it); a
	 * result that cannot be queued leaves it to lapse, and the reaper re-dispatches. What
	 * the task carries runs right here, before the slot takes another job (ADR 31). */
	next = worker_carry_take(s->w, d, &out);
	if (worker_result_publish(s, d, &out, next) != SL_OK)
		SL_WARN("%s/%s[%d] attempt %u: result not queued; the lease will lapse", d->run_id,
			d->task, d->map_index, d->attempt);
out:
	worker_outcome_clear(&out);
}

void *worker_slot_main(void *arg)
{
	struct worker_slot *s = arg;
	struct worker *w = s->w;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		Sluice__V1__TaskDispatch *d;

		while (!s->job && !atomic_load(&w->quit))
			pthread_cond_wait(&s->wake, &w->lock);
		if (!s->job)
			break;
		d = s->job;
		pthread_mutex_unlock(&w->lock);

		execute(s, d);

		pthread_mutex_lock(&w->lock);
		w->recent[w->nrecent++ % WORKER_RECENT_MAX] = job_hash(d);
		s->job = NULL;
		s->result_out = 0;
		/* The next job, leased already, starts at once; the consume loop leases another. */
		if (!slot_take_ahead(s)) {
			w->nbusy--;
			sl_metric_set(w->m.busy, w->nbusy);
		}
		pthread_cond_broadcast(&w->cond);
		/* The lease thread copies what it needs under the lock, so d may go now. */
		pthread_mutex_unlock(&w->lock);
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}
