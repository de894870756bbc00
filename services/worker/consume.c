/* consume.c - the Kafka loop: dispatch in, lease acquired, offset stored, job to a slot. */
#include <stdio.h>
#include <string.h>

#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/state.h"
#include "sluice/util.h"
#include "worker.h"

/* Fetched messages not yet handled, in arrival order, with their priority band. The next one
 * handled is the highest priority among the first waiting message of each partition
 * (pending_pick), so stored offsets never pass a message that still waits in its partition. */
struct pending {
	rd_kafka_message_t *m[WORKER_PENDING_MAX];
	int prio[WORKER_PENDING_MAX]; /* 1 high, 0 normal, -1 low: from the topic's band */
	size_t head;
	size_t n;
};

enum handled {
	HANDLED_DONE,  /* offset stored (or left to a rebalance); message no longer needed */
	HANDLED_RETRY, /* Redis or Kafka could not answer: keep the message, try again later */
};

/* Run ids name directories under work-dir: no separators, no leading dot. */
static int valid_run_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > WORKER_RUN_ID_MAX || s[0] == '.')
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-' ||
		      *s == ':'))
			return 0;
	return 1;
}

/* Returns NULL when d is usable, else why not. */
static const char *check_dispatch(const Sluice__V1__TaskDispatch *d)
{
	if (!d->run_id || !valid_run_id(d->run_id))
		return "missing or invalid run_id";
	if (!d->task || !*d->task || strlen(d->task) > WORKER_TASK_MAX)
		return "missing or invalid task";
	if (d->attempt == 0)
		return "missing attempt";
	if (d->map_index < -1)
		return "invalid map_index";
	if (d->kind == SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN && (!d->builtin || !*d->builtin))
		return "builtin task without a builtin name";
	if (d->kind == SLUICE__V1__TASK_KIND__TASK_KIND_COMMAND && (d->n_argv == 0 || !*d->argv[0]))
		return "command task without argv";
	if (d->kind != SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN && d->kind != SLUICE__V1__TASK_KIND__TASK_KIND_COMMAND)
		return "unknown task kind";
	for (size_t i = 0; i < d->n_env; i++) {
		const char *name = d->env[i]->name;
		if (!name || !*name || strchr(name, '='))
			return "invalid environment variable name";
	}
	return NULL;
}

static enum handled dead_letter(struct worker *w, rd_kafka_message_t *m, const char *why)
{
	if (sl_kafka_deadletter(w->producer, "worker", m, why) != SL_OK)
		return HANDLED_RETRY;
	sl_kafka_consumer_done(w->consumer, m);
	return HANDLED_DONE;
}

/* Decodes one dispatch, takes its lease and gives it to a free slot (the caller made sure
 * there is one). */
static enum handled handle(struct worker *w, rd_kafka_message_t *m)
{
	Sluice__V1__TaskDispatch *d;
	const char *why;
	char reason[128];
	long ttl;
	int dup;
	enum sl_err err;

	if (sl_kafka_check_size(m) != SL_OK) {
		snprintf(reason, sizeof(reason), "TaskDispatch of %zu bytes exceeds the %d byte cap",
			 m->len, SL_KAFKA_MAX_MESSAGE);
		return dead_letter(w, m, reason);
	}
	if (!(d = sluice__v1__task_dispatch__unpack(NULL, m->len, m->payload)))
		return dead_letter(w, m, "cannot decode TaskDispatch");
	if ((why = check_dispatch(d))) {
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
		return dead_letter(w, m, why);
	}
	pthread_mutex_lock(&w->lock);
	dup = worker_slot_holds(w, d);
	pthread_mutex_unlock(&w->lock);
	if (dup) {
		/* A redelivery (rebalance) of what we run already: the lease script would say
		 * "ok" to its holder, and running it twice helps no one. */
		SL_DEBUG("dispatch %s/%s[%d] attempt %u is running here already; dropped",
			 d->run_id, d->task, d->map_index, d->attempt);
		sl_kafka_consumer_done(w->consumer, m);
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
		return HANDLED_DONE;
	}
	ttl = d->lease_ttl_ms ? (long)d->lease_ttl_ms : w->cfg->lease_ttl_ms;
	if (ttl < WORKER_MIN_LEASE_TTL_MS) /* renewing every ttl/3 must stay sane */
		ttl = WORKER_MIN_LEASE_TTL_MS;
	err = sl_state_lease_acquire(w->st, d->run_id, d->task, d->map_index, d->attempt,
				     w->cfg->id, ttl);
	switch (err) {
	case SL_OK:
		sl_kafka_consumer_done(w->consumer, m);
		SL_DEBUG("lease taken: %s/%s[%d] attempt %u (ttl %ld ms)", d->run_id, d->task,
			 d->map_index, d->attempt, ttl);
		if (worker_slot_assign(w, d, ttl) != 0) {
			/* Cannot happen (only this thread fills slots); the lease lapses and
			 * the planner re-dispatches. */
			SL_ERROR("no free slot for %s/%s[%d]", d->run_id, d->task, d->map_index);
			sluice__v1__task_dispatch__free_unpacked(d, NULL);
		}
		return HANDLED_DONE;
	case SL_ERR_STALE:
		SL_DEBUG("stale dispatch %s/%s[%d] attempt %u dropped", d->run_id, d->task,
			 d->map_index, d->attempt);
		break;
	case SL_ERR_BUSY:
		SL_DEBUG("dispatch %s/%s[%d] attempt %u is leased by another worker, or waits "
			 "for a concurrency slot (the planner sends it again); dropped",
			 d->run_id, d->task, d->map_index, d->attempt);
		break;
	default:
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
		return HANDLED_RETRY;
	}
	sl_kafka_consumer_done(w->consumer, m);
	sluice__v1__task_dispatch__free_unpacked(d, NULL);
	return HANDLED_DONE;
}

/* Takes in the stop signals and the registry's drain request. */
static void check_stop(struct worker *w)
{
	int sigs = *w->stop_signals;

	if ((sigs >= 1 || atomic_load(&w->drain_requested)) && !atomic_load(&w->draining)) {
		int busy;

		pthread_mutex_lock(&w->lock);
		busy = w->nbusy;
		atomic_store(&w->draining, 1);
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->lock);
		sl_metric_set(w->m.draining, 1);
		sl_health_set_ready(w->health, 0);
		SL_INFO("draining (%s): taking no more tasks, finishing %d running",
			sigs >= 1 ? "signal" : "drain requested", busy);
	}
	/* A signal bounds the drain (a drain request from the autoscaler does not): tasks still
	 * running at the deadline are handed back like on a second signal. */
	if (sigs >= 1 && !w->hand_back_at && w->cfg->drain_timeout_ms > 0)
		w->hand_back_at = sl_mono_ms() + w->cfg->drain_timeout_ms;
	if (w->hand_back_at && sl_mono_ms() >= w->hand_back_at && sigs < 2 &&
	    !atomic_load(&w->hard_stop)) {
		SL_WARN("drain timeout (%ld ms) passed: handing running tasks back",
			w->cfg->drain_timeout_ms);
		sigs = 2;
	}
	if (sigs >= 2 && !atomic_load(&w->hard_stop)) {
		int busy;

		pthread_mutex_lock(&w->lock);
		busy = w->nbusy;
		atomic_store(&w->hard_stop, 1);
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->lock);
		SL_WARN("stopping %d running tasks and releasing their leases for re-dispatch",
			busy);
	}
}

/* The band of a fetched dispatch, from its topic (sluice.tasks.<queue>[.high|.low]). */
static int band_of(const struct worker *w, const rd_kafka_message_t *m)
{
	const char *t = rd_kafka_topic_name(m->rkt);

	return !strcmp(t, w->topic_high) ? 1 : !strcmp(t, w->topic_low) ? -1 : 0;
}

/* Pushes m to the back of p. When p is full (pausing should prevent it), rewinds m's
 * partition to m so it is fetched again, and drops m. */
static void pending_push(struct worker *w, struct pending *p, rd_kafka_message_t *m)
{
	if (p->n == WORKER_PENDING_MAX) {
		rd_kafka_resp_err_t e = rd_kafka_seek(m->rkt, m->partition, m->offset, 1000);

		SL_WARN("pending dispatch queue full; rewinding %s[%d] to %lld%s%s",
			rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset,
			e ? ": " : "", e ? rd_kafka_err2str(e) : "");
		rd_kafka_message_destroy(m);
		return;
	}
	p->m[(p->head + p->n) % WORKER_PENDING_MAX] = m;
	p->prio[(p->head + p->n) % WORKER_PENDING_MAX] = band_of(w, m);
	p->n++;
}

static rd_kafka_message_t *pending_at(const struct pending *p, size_t i)
{
	return p->m[(p->head + i) % WORKER_PENDING_MAX];
}

static int same_partition(const rd_kafka_message_t *a, const rd_kafka_message_t *b)
{
	return a->partition == b->partition &&
	       (a->rkt == b->rkt ||
		!strcmp(rd_kafka_topic_name(a->rkt), rd_kafka_topic_name(b->rkt)));
}

/* Index (from the head) of the message to handle next: the highest band among the messages
 * that are first of their partition in p, the oldest on a tie. p->n > 0. */
static size_t pending_pick(const struct pending *p)
{
	size_t best = 0;
	int best_prio = p->prio[p->head];

	for (size_t i = 1; i < p->n; i++) {
		size_t at = (p->head + i) % WORKER_PENDING_MAX;
		rd_kafka_message_t *m = p->m[at];
		int behind = 0;

		if (p->prio[at] <= best_prio)
			continue;
		for (size_t j = 0; j < i && !behind; j++)
			behind = same_partition(pending_at(p, j), m);
		if (!behind) {
			best = i;
			best_prio = p->prio[at];
		}
	}
	return best;
}

/* Removes and returns the message at index i (from the head), keeping the others in order. */
static rd_kafka_message_t *pending_take(struct pending *p, size_t i)
{
	rd_kafka_message_t *m = pending_at(p, i);

	for (; i + 1 < p->n; i++) {
		size_t to = (p->head + i) % WORKER_PENDING_MAX, from = (to + 1) % WORKER_PENDING_MAX;

		p->m[to] = p->m[from];
		p->prio[to] = p->prio[from];
	}
	p->m[(p->head + p->n - 1) % WORKER_PENDING_MAX] = NULL;
	p->n--;
	return m;
}

static rd_kafka_message_t *pending_pop(struct pending *p)
{
	return pending_take(p, 0);
}

void worker_consume(struct worker *w)
{
	struct pending p;
	int64_t retry_at = 0;
	long backoff = WORKER_BACKOFF_MIN_MS;
	int paused = 0, failing = 0;
	/* Not one per slot: a worker with few slots must still see several waiting dispatches to
	 * start the high-priority ones first. */
	const size_t prefetch = WORKER_PREFETCH_MAX;

	memset(&p, 0, sizeof(p));
	for (;;) {
		rd_kafka_message_t *m;
		int free_slots, want_pause;
		int draining;

		check_stop(w);
		draining = atomic_load(&w->draining);
		free_slots = worker_free_slots(w);
		if (draining && free_slots == w->nslots)
			break;
		while (!draining && p.n && free_slots > 0 && sl_mono_ms() >= retry_at) {
			size_t next = pending_pick(&p);

			if (handle(w, pending_at(&p, next)) == HANDLED_RETRY) {
				if (!failing++)
					SL_WARN("cannot take dispatches (redis or kafka unavailable); "
						"retrying with backoff");
				retry_at = sl_mono_ms() + backoff;
				backoff = backoff * 2 > WORKER_BACKOFF_MAX_MS ? WORKER_BACKOFF_MAX_MS
									     : backoff * 2;
				break;
			}
			if (failing) {
				SL_INFO("taking dispatches again after %d failed attempts", failing);
				failing = 0;
			}
			backoff = WORKER_BACKOFF_MIN_MS;
			rd_kafka_message_destroy(pending_take(&p, next));
			free_slots = worker_free_slots(w);
		}
		/* Paused, the consumer is still polled, so the group keeps us as a member. A few
		 * fetched dispatches (up to WORKER_PREFETCH_MAX) wait here unleased while every
		 * slot is busy: a resumed partition is fetched again only after up to fetch.wait.max.ms,
		 * and slots freeing meanwhile should not idle that long. */
		want_pause = draining || failing || p.n >= prefetch;
		if (want_pause != paused) {
			sl_kafka_consumer_set_paused(w->consumer, want_pause);
			paused = want_pause;
		}
		if (paused || p.n) {
			pthread_mutex_lock(&w->lock);
			worker_wait(w, 20);
			pthread_mutex_unlock(&w->lock);
			m = sl_kafka_consumer_poll(w->consumer, 0);
		} else {
			m = sl_kafka_consumer_poll(w->consumer, 50);
		}
		if (m)
			pending_push(w, &p, m);
		sl_metric_set(w->m.waiting, (int64_t)p.n);
		sl_kafka_producer_poll(w->producer, 0);
	}
	/* Messages without a lease are not stored: the group hands them to another member. */
	while (p.n)
		rd_kafka_message_destroy(pending_pop(&p));
}
