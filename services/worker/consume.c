/* consume.c - the Kafka loop: dispatches in by batches, leases acquired together, offsets
 * stored, inline built-ins run here, the rest handed to slots. */
#include <stdio.h>
#include <stdlib.h>
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

static int same_partition(const rd_kafka_message_t *a, const rd_kafka_message_t *b);

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

const char *worker_dispatch_check(const Sluice__V1__TaskDispatch *d)
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

/* Publishes m to the dead-letter topic and stores its offset. Returns -1 (nothing stored)
 * when the producer refused it. */
static int dead_letter(struct worker *w, rd_kafka_message_t *m, const char *why)
{
	if (sl_kafka_deadletter(w->producer, "worker", m, why) != SL_OK)
		return -1;
	sl_kafka_consumer_done(w->consumer, m);
	return 0;
}

/* One dispatch of a turn's batch: a message, or one element of a batched message (ADR 20),
 * whose items follow each other. */
struct item {
	rd_kafka_message_t *m;       /* borrowed from the pending buffer */
	size_t pick;                 /* m's index in the pending buffer */
	int last;                    /* the last item of m */
	Sluice__V1__TaskDispatch *d; /* owned until given to a slot; NULL when rejected */
	char reject[128];            /* why it goes to the dead-letter topic ("" = it does not) */
	int dup;                     /* held or just run here (worker_slot_holds): drop it */
	int is_inline;               /* noop/echo/sum: run on this thread */
	int no_lease;                /* inline, and the planner says it needs no lease (ADR 25) */
	long ttl;
	int lease;                   /* index in the lease requests, -1 when none */
	int consumed;                /* done with: remove from the buffer */
};

/* An empty item of message m (pending index pick). */
static void item_init(struct item *it, rd_kafka_message_t *m, size_t pick)
{
	memset(it, 0, sizeof(*it));
	it->m = m;
	it->pick = pick;
	it->lease = -1;
}

/* The lease ttl for dispatch d: its own, else the worker's, at least the minimum. */
static long dispatch_ttl(const struct worker *w, const Sluice__V1__TaskDispatch *d)
{
	long ttl = d->lease_ttl_ms ? (long)d->lease_ttl_ms : w->cfg->lease_ttl_ms;

	return ttl < WORKER_MIN_LEASE_TTL_MS ? WORKER_MIN_LEASE_TTL_MS /* renewing every ttl/3 */
					     : ttl;
}

int worker_dispatch_is_inline(const Sluice__V1__TaskDispatch *d)
{
	return d->kind == SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN &&
	       worker_builtin_is_inline(d->builtin);
}

/* Lease ttl and inline flag of the checked dispatch it->d. */
static void item_finish(struct worker *w, struct item *it)
{
	it->is_inline = worker_dispatch_is_inline(it->d);
	it->no_lease = it->is_inline && it->d->no_lease;
	it->ttl = dispatch_ttl(w, it->d);
}

/* Decodes and checks the elements of batch env (ADR 20) into it[0..env->n_batch). Returns
 * NULL, or why the whole message goes to the dead-letter topic (it[] then holds nothing). */
static const char *batch_decode(struct worker *w, const Sluice__V1__TaskDispatch *env,
				struct item *it, char *why, size_t whylen)
{
	if (env->n_batch > SL_BATCH_MAX) {
		snprintf(why, whylen, "batch of %zu dispatches exceeds %d", env->n_batch,
			 SL_BATCH_MAX);
		return why;
	}
	for (size_t i = 0; i < env->n_batch; i++) {
		const char *bad = NULL;

		it[i].d = sluice__v1__task_dispatch__unpack(NULL, env->batch[i].len,
							     env->batch[i].data);
		if (!it[i].d)
			bad = "cannot decode TaskDispatch";
		else if (!(bad = worker_dispatch_check(it[i].d)) && it[i].d->n_batch)
			bad = "nested batch";
		else if (!bad && !(it[i].d->kind == SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN &&
				   worker_builtin_is_inline(it[i].d->builtin)))
			bad = "not an inline built-in (only noop, echo and sum are batched)";
		if (bad) {
			snprintf(why, whylen, "batch element %zu: %s", i, bad);
			for (size_t j = 0; j <= i; j++) {
				if (it[j].d)
					sluice__v1__task_dispatch__free_unpacked(it[j].d, NULL);
				it[j].d = NULL;
			}
			return why;
		}
		item_finish(w, &it[i]);
	}
	return NULL;
}

/* Decodes and checks m (pending index pick) into it[0..k) and returns k >= 1: one item per
 * dispatch, SL_BATCH_MAX at most (a batch), or one rejected item. */
static size_t message_decode(struct worker *w, rd_kafka_message_t *m, size_t pick,
			     struct item *it)
{
	Sluice__V1__TaskDispatch *d;
	const char *why;
	size_t k = 1;

	item_init(it, m, pick);
	if (sl_kafka_check_size(m) != SL_OK) {
		snprintf(it->reject, sizeof(it->reject),
			 "TaskDispatch of %zu bytes exceeds the %d byte cap", m->len,
			 SL_KAFKA_MAX_MESSAGE);
		goto out;
	}
	if (!(d = sluice__v1__task_dispatch__unpack(NULL, m->len, m->payload))) {
		snprintf(it->reject, sizeof(it->reject), "cannot decode TaskDispatch");
		goto out;
	}
	if (d->n_batch) {
		for (size_t i = 1; i < d->n_batch && i < SL_BATCH_MAX; i++)
			item_init(&it[i], m, pick);
		if (!batch_decode(w, d, it, it->reject, sizeof(it->reject)))
			k = d->n_batch;
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
		goto out;
	}
	if ((why = worker_dispatch_check(d))) {
		snprintf(it->reject, sizeof(it->reject), "%s", why);
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
		goto out;
	}
	it->d = d;
	item_finish(w, it);
out:
	it[k - 1].last = 1;
	return k;
}

static int same_instance(const Sluice__V1__TaskDispatch *a, const Sluice__V1__TaskDispatch *b)
{
	return a->attempt == b->attempt && a->map_index == b->map_index &&
	       !strcmp(a->run_id, b->run_id) && !strcmp(a->task, b->task);
}

/* Runs the inline built-in of it (its lease held since sent_ms, or none: it->no_lease) and
 * adds its result to rb. */
static void run_inline(struct worker *w, struct item *it, int64_t sent_ms,
		       struct worker_result_batch *rb)
{
	const Sluice__V1__TaskDispatch *d = it->d;
	Sluice__V1__TaskDispatch *next;
	struct worker_outcome out;

	if (atomic_load(&w->hard_stop)) {
		/* Not started: handed back at once, as a slot does with a stopped task. */
		if (!it->no_lease)
			sl_state_lease_release(w->st, d->run_id, d->task, d->map_index,
					       d->attempt, w->cfg->id);
		return;
	}
	SL_DEBUG("inline: start %s/%s[%d] attempt %u (builtin %s)", d->run_id, d->task,
		 d->map_index, d->attempt, d->builtin);
	sl_metric_inc(w->m.started);
	worker_run_inline(d, &out);
	/* As a slot checks its stop_by: a result is published only while the lease is surely
	 * ours (this thread may have been descheduled for long on a busy machine). */
	if (!it->no_lease && sl_mono_ms() >= worker_lease_stop_by(w, sent_ms, it->ttl)) {
		sl_metric_inc(w->m.leases_lost);
		sl_metric_inc(w->m.stopped);
		SL_WARN("%s/%s[%d] attempt %u: finished after its lease could lapse; no result "
			"published",
			d->run_id, d->task, d->map_index, d->attempt);
		goto out;
	}
	sl_metric_inc(out.status == SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED ? w->m.succeeded
										 : w->m.failed);
	next = worker_carry_take(w, d, &out);
	if (worker_result_batch_add(w, rb, d, &out) != SL_OK)
		SL_WARN("%s/%s[%d] attempt %u: result not queued; the lease will lapse", d->run_id,
			d->task, d->map_index, d->attempt);
	worker_carry_run(w, next, rb); /* in the same batch, after it (ADR 31) */
out:
	worker_outcome_clear(&out);
}

/* Settles the decoded batch it[0..n) in order, after its leases were asked for (reqs, sent at
 * sent_ms). Offsets are stored in the batch's order, which is each partition's order, once
 * every item of a message is settled; once an item of a partition must be retried (Redis or
 * Kafka unavailable), nothing after it in that partition is stored: a leased one still runs
 * (a later offset will cover it), the others stay in the buffer. Returns -1 when some item
 * must be retried. */
static int settle(struct worker *w, struct item *it, size_t n, const struct sl_lease_req *reqs,
		  int64_t sent_ms)
{
	const rd_kafka_message_t *failed[WORKER_PENDING_MAX];
	size_t nfailed = 0;
	int all = 1, store = 1; /* of the current message: every item settled; its offset goes */
	struct worker_result_batch rb;

	for (size_t i = 0; i < n; i++) {
		struct item *x = &it[i];
		enum sl_err err = x->lease >= 0 ? reqs[x->lease].err : SL_OK;
		int blocked = 0;

		for (size_t f = 0; f < nfailed && !blocked; f++)
			blocked = same_partition(failed[f], x->m);
		if (blocked) {
			if (x->lease >= 0 && err == SL_OK)
				x->consumed = 1; /* runs; its offset is not stored */
			store = 0;
			goto next;
		}
		if (x->reject[0]) {
			store = 0; /* dead_letter() stores it */
			if (dead_letter(w, x->m, x->reject) == 0)
				x->consumed = 1;
			else
				failed[nfailed++] = x->m;
			goto next;
		}
		if (x->dup) {
			/* A copy (redelivery, re-dispatch) of what runs, waits leased ahead or
			 * ran here lately: dropped without a lease call (the script would answer
			 * it "held"). */
			SL_DEBUG("dispatch %s/%s[%d] attempt %u is running here already; dropped",
				 x->d->run_id, x->d->task, x->d->map_index, x->d->attempt);
			sl_metric_inc(w->m.dropped);
			x->consumed = 1;
			goto next;
		}
		switch (err) {
		case SL_OK:
			if (x->lease < 0) /* no_lease (an inline one needing none, ADR 25) */
				break;
			sl_metric_inc(w->m.leases_taken);
			SL_DEBUG("lease taken: %s/%s[%d] attempt %u (ttl %ld ms)", x->d->run_id,
				 x->d->task, x->d->map_index, x->d->attempt, x->ttl);
			break;
		case SL_ERR_STALE:
			SL_DEBUG("stale dispatch %s/%s[%d] attempt %u dropped (outdated, or a copy "
				 "of one whose lease this worker holds)", x->d->run_id, x->d->task,
				 x->d->map_index, x->d->attempt);
			sl_metric_inc(w->m.dropped);
			break;
		case SL_ERR_BUSY:
			SL_DEBUG("dispatch %s/%s[%d] attempt %u is leased by another worker, or "
				 "waits for a concurrency slot (the planner sends it again); dropped",
				 x->d->run_id, x->d->task, x->d->map_index, x->d->attempt);
			sl_metric_inc(w->m.dropped);
			break;
		default:
			/* the items of one message follow each other: it is listed once */
			if (!nfailed || failed[nfailed - 1] != x->m)
				failed[nfailed++] = x->m;
			store = 0;
			goto next;
		}
		x->consumed = 1;
next:
		all &= x->consumed;
		if (x->last) {
			if (all && store)
				sl_kafka_consumer_done(w->consumer, x->m);
			all = store = 1;
		}
	}
	/* Slots first, so their tasks start while the inline ones run here. */
	for (size_t i = 0; i < n; i++) {
		struct item *x = &it[i];

		if (!x->consumed || x->lease < 0 || reqs[x->lease].err != SL_OK || x->is_inline)
			continue;
		if (worker_slot_assign(w, x->d, x->ttl, sent_ms) != 0) {
			/* Cannot happen (the batch took no more than worker_room(), and only
			 * this thread fills slots and the ahead list); the lease lapses and
			 * the planner re-dispatches. */
			SL_ERROR("no free slot for %s/%s[%d]", x->d->run_id, x->d->task,
				 x->d->map_index);
			continue;
		}
		x->d = NULL; /* the slot's now */
	}
	rb.n = rb.bytes = 0;
	for (size_t i = 0; i < n; i++) {
		struct item *x = &it[i];

		if (x->consumed && x->is_inline && x->d &&
		    (x->no_lease || (x->lease >= 0 && reqs[x->lease].err == SL_OK)))
			run_inline(w, x, sent_ms, &rb);
	}
	worker_result_batch_flush(w, &rb);
	return nfailed ? -1 : 0;
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

/* Index (from the head) of the message to take next, or -1: the highest band among the
 * messages that are first of their partition in p once the taken ones are left out (mark[i]
 * MARK_TAKEN), the oldest on a tie. A MARK_BLOCKED message is not taken and keeps its
 * partition behind it. */
enum { MARK_WAITING, MARK_TAKEN, MARK_BLOCKED };

static int pending_pick(const struct pending *p, const unsigned char *mark)
{
	int best = -1, best_prio = 0;

	for (size_t i = 0; i < p->n; i++) {
		size_t at = (p->head + i) % WORKER_PENDING_MAX;
		rd_kafka_message_t *m = p->m[at];
		int behind = 0;

		if (mark[i] != MARK_WAITING || (best >= 0 && p->prio[at] <= best_prio))
			continue;
		for (size_t j = 0; j < i && !behind; j++)
			behind = mark[j] != MARK_TAKEN && same_partition(pending_at(p, j), m);
		if (!behind) {
			best = (int)i;
			best_prio = p->prio[at];
		}
	}
	return best;
}

/* Removes the messages whose keep[i] is 0 (destroying them), keeping the others in order. */
static void pending_compact(struct pending *p, const unsigned char *keep)
{
	size_t n = 0;

	for (size_t i = 0; i < p->n; i++) {
		size_t at = (p->head + i) % WORKER_PENDING_MAX;

		if (!keep[i]) {
			rd_kafka_message_destroy(p->m[at]);
			p->m[at] = NULL;
			continue;
		}
		if (n != i) {
			size_t to = (p->head + n) % WORKER_PENDING_MAX;

			p->m[to] = p->m[at];
			p->prio[to] = p->prio[at];
			p->m[at] = NULL;
		}
		n++;
	}
	p->n = n;
}

static rd_kafka_message_t *pending_pop(struct pending *p)
{
	rd_kafka_message_t *m = p->m[p->head];

	p->m[p->head] = NULL;
	p->head = (p->head + 1) % WORKER_PENDING_MAX;
	p->n--;
	return m;
}

/* One turn: takes from p, in priority order, every dispatch that can start now (at most
 * room (worker_room()) of those needing a slot, any number of inline built-ins, rejects and
 * duplicates), asks for all their leases in one pipelined round trip and settles them.
 * Returns 1 when something was taken, 0 when nothing could be, -1 when something must be
 * retried (Redis or Kafka unavailable). */
static int take_batch(struct worker *w, struct pending *p, int room, struct item *it,
		      struct sl_lease_req *reqs)
{
	unsigned char mark[WORKER_PENDING_MAX], keep[WORKER_PENDING_MAX];
	size_t n = 0, nreq = 0;
	int64_t sent;
	int rc, pick, all = 1;

	memset(mark, MARK_WAITING, sizeof(mark));
	while ((pick = pending_pick(p, mark)) >= 0) {
		struct item *x = &it[n];
		size_t k = message_decode(w, pending_at(p, (size_t)pick), (size_t)pick, x);

		if (k == 1 && x->d && !x->is_inline) {
			int held;

			/* A copy of what runs or ran here is dropped below: it needs no room. */
			pthread_mutex_lock(&w->lock);
			held = x->dup = worker_slot_holds(w, x->d);
			pthread_mutex_unlock(&w->lock);
			if (!held && room == 0) {
				/* Waits for a slot, and so does the rest of its partition; inline
				 * ones of other partitions may still go. */
				sluice__v1__task_dispatch__free_unpacked(x->d, NULL);
				mark[pick] = MARK_BLOCKED;
				continue;
			}
			room -= !held;
		}
		mark[pick] = MARK_TAKEN;
		n += k;
	}
	if (n == 0)
		return 0;
	/* Duplicates of what needs a slot: running, leased ahead or just ended here (a
	 * redelivery, or a copy of one taken from Redis), or twice in this batch. An inline one
	 * that runs twice only sends a second result, which the planner finds stale. The first
	 * kind was marked when picked; the second is found here. */
	for (size_t i = 0; i < n; i++) {
		if (!it[i].d || it[i].is_inline)
			continue;
		for (size_t j = 0; j < i && !it[i].dup; j++)
			it[i].dup = it[j].d && !it[j].is_inline && !it[j].dup &&
				    same_instance(it[i].d, it[j].d);
	}
	for (size_t i = 0; i < n; i++) {
		const Sluice__V1__TaskDispatch *d = it[i].d;

		if (!d || it[i].dup || it[i].no_lease)
			continue;
		reqs[nreq] = (struct sl_lease_req){.run = d->run_id, .task = d->task,
						    .idx = d->map_index, .attempt = d->attempt,
						    .ttl_ms = it[i].ttl,
						    .queue = it[i].is_inline ? NULL : w->cfg->queue};
		it[i].lease = (int)nreq++;
	}
	sent = sl_mono_ms(); /* the leases count from the request, not from the reply */
	sl_state_lease_acquire_many(w->st, w->cfg->id, reqs, nreq);
	if (nreq)
		sl_metric_inc(w->m.lease_calls);
	rc = settle(w, it, n, reqs, sent) < 0 ? -1 : 1;
	memset(keep, 1, sizeof(keep));
	for (size_t i = 0; i < n; i++) {
		all &= it[i].consumed;
		if (it[i].last) {
			if (all) /* every item of the message is settled */
				keep[it[i].pick] = 0;
			all = 1;
		}
		if (it[i].d)
			sluice__v1__task_dispatch__free_unpacked(it[i].d, NULL);
	}
	pending_compact(p, keep);
	return rc;
}

/* ---- dispatches waiting in other workers' partitions (ADR 23) ---- */

/* What a scan of the queue's waiting dispatches found for the free slots. */
struct take_others {
	const struct worker *w;
	Sluice__V1__TaskDispatch *d[WORKER_TAKE_MAX];
	int n, room;
};

/* Keeps a scanned dispatch this worker can run in a slot: of its queue, well formed, needing a
 * slot (inline built-ins are never indexed). */
static void take_others_keep(const void *bytes, size_t len, void *ud)
{
	struct take_others *t = ud;
	Sluice__V1__TaskDispatch *d;

	if (t->n >= t->room ||
	    !(d = sluice__v1__task_dispatch__unpack(NULL, len, (const uint8_t *)bytes)))
		return;
	if (worker_dispatch_check(d) || !d->queue || strcmp(d->queue, t->w->cfg->queue) ||
	    worker_dispatch_is_inline(d)) {
		sluice__v1__task_dispatch__free_unpacked(d, NULL);
		return;
	}
	t->d[t->n++] = d;
}

/* With free slots and nothing fetched to run, starts dispatches of the queue that wait in
 * Redis's index (sl_state_queued_scan): each partition belongs to one worker, so at the end
 * of a stage one worker idled while another still had tasks queued in its partitions. The
 * lease decides who runs each, as for a fetched dispatch: the owner, fetching it later, finds
 * it leased (busy) and drops it. Returns how many started, or -1 when Redis failed. */
static int take_from_others(struct worker *w, int free_slots)
{
	struct take_others t = {.w = w, .room = free_slots < WORKER_TAKE_MAX ? free_slots
										: WORKER_TAKE_MAX};
	struct sl_lease_req reqs[WORKER_TAKE_MAX];
	long ttl[WORKER_TAKE_MAX];
	int started = 0;
	int64_t sent;

	if (sl_state_queued_scan(w->st, w->cfg->queue, WORKER_TAKE_SCAN, t.room,
				 take_others_keep, &t) != SL_OK)
		return -1;
	if (t.n == 0)
		return 0;
	pthread_mutex_lock(&w->lock);
	for (int i = 0; i < t.n; i++) {
		const Sluice__V1__TaskDispatch *d = t.d[i];

		ttl[i] = dispatch_ttl(w, d);
		reqs[i] = (struct sl_lease_req){.run = d->run_id, .task = d->task,
						 .idx = d->map_index, .attempt = d->attempt,
						 .ttl_ms = ttl[i], .queue = w->cfg->queue};
		if (worker_slot_holds(w, d))
			reqs[i].attempt = 0; /* ours already: the script answers stale */
	}
	pthread_mutex_unlock(&w->lock);
	sent = sl_mono_ms(); /* the leases count from the request, not from the reply */
	sl_state_lease_acquire_many(w->st, w->cfg->id, reqs, (size_t)t.n);
	sl_metric_inc(w->m.lease_calls);
	for (int i = 0; i < t.n; i++) {
		if (reqs[i].err == SL_OK) {
			sl_metric_inc(w->m.leases_taken);
			SL_DEBUG("took %s/%s[%d] attempt %u, waiting in another worker's partition",
				 t.d[i]->run_id, t.d[i]->task, t.d[i]->map_index, t.d[i]->attempt);
			if (worker_slot_assign(w, t.d[i], ttl[i], sent) == 0) {
				t.d[i] = NULL; /* the slot's now */
				sl_metric_inc(w->m.taken);
				started++;
				continue;
			}
			/* only this thread fills slots: cannot happen; handed back at once */
			sl_state_lease_release(w->st, reqs[i].run, reqs[i].task, reqs[i].idx,
					       reqs[i].attempt, w->cfg->id);
		}
		sluice__v1__task_dispatch__free_unpacked(t.d[i], NULL);
	}
	return started;
}

/* Polls the consumer for up to timeout_ms. When the group took partitions back meanwhile (the
 * rebalance is served inside the poll), the buffered dispatches, none of them leased nor
 * stored, are dropped first: their partitions' owners, maybe this worker again, fetch them
 * anew from the committed offset, and keeping them would run them twice or keep them from
 * a worker that has free slots. *seen is the revocation count the buffer is from. */
static rd_kafka_message_t *poll_one(struct worker *w, struct pending *p, int timeout_ms,
				    unsigned *seen)
{
	rd_kafka_message_t *m = sl_kafka_consumer_poll(w->consumer, timeout_ms);
	unsigned now = sl_kafka_consumer_revocations(w->consumer);

	if (now != *seen) {
		if (p->n)
			SL_DEBUG("partitions revoked: dropping %zu buffered dispatches (fetched again "
				 "by their partitions' owners)",
				 p->n);
		while (p->n)
			rd_kafka_message_destroy(pending_pop(p));
		*seen = now;
	}
	return m;
}

void worker_consume(struct worker *w)
{
	struct pending p;
	int64_t retry_at = 0, last_poll = 0, take_at = 0;
	long take_wait = WORKER_TAKE_IDLE_MS;
	unsigned revocations = 0;
	long backoff = WORKER_BACKOFF_MIN_MS;
	int paused = 0, failing = 0, stuck = 0;
	/* Not one per slot: a worker with few slots must still see several waiting dispatches to
	 * start the high-priority ones first. */
	const size_t prefetch = WORKER_PREFETCH_MAX;

	/* A turn's items: each buffered message is one dispatch or a batch of SL_BATCH_MAX. */
	struct item *it = calloc(WORKER_PENDING_MAX * SL_BATCH_MAX, sizeof(*it));
	struct sl_lease_req *reqs = calloc(WORKER_PENDING_MAX * SL_BATCH_MAX, sizeof(*reqs));

	memset(&p, 0, sizeof(p));
	if (!it || !reqs) {
		SL_ERROR("out of memory for the consume loop's buffers");
		atomic_store(&w->draining, 1);
	}
	for (;;) {
		rd_kafka_message_t *m;
		int free_slots, room, want_pause;
		int draining;

		check_stop(w);
		draining = atomic_load(&w->draining);
		if (atomic_load(&w->hard_stop))
			worker_ahead_release(w);
		free_slots = worker_free_slots(w);
		if (draining && free_slots == w->nslots)
			break;
		room = worker_room(w);
		/* stuck: the buffer holds only dispatches waiting for a slot; look again once one
		 * frees or something new arrives. */
		if (!draining && p.n && sl_mono_ms() >= retry_at && (!stuck || room > 0)) {
			int rc = take_batch(w, &p, room, it, reqs);

			stuck = rc == 0;
			if (rc < 0) {
				if (!failing++)
					SL_WARN("cannot take dispatches (redis or kafka unavailable); "
						"retrying with backoff");
				retry_at = sl_mono_ms() + backoff;
				backoff = backoff * 2 > WORKER_BACKOFF_MAX_MS ? WORKER_BACKOFF_MAX_MS
									     : backoff * 2;
			} else if (rc > 0) {
				if (failing) {
					SL_INFO("taking dispatches again after %d failed attempts",
						failing);
					failing = 0;
				}
				backoff = WORKER_BACKOFF_MIN_MS;
			}
		}
		/* A few fetched dispatches (up to WORKER_PREFETCH_MAX) wait here unleased while
		 * every slot is busy, so that slots freeing do not wait for a fetch; what the
		 * consumer fetched beyond them waits in librdkafka's own queue (bounded by
		 * queued.max.messages.kbytes), taken as the buffer empties. The consumer is not
		 * paused for that: pausing drops librdkafka's queue, and a resumed partition was
		 * fetched again only 300-630 ms later (2026-12-06, the diamond), while the slots
		 * idled. It is paused while draining, failing, or with the buffer full, which only
		 * the keepalive polls can fill: with every slot busy, the consumer is still polled
		 * every WORKER_POLL_KEEPALIVE_MS so that the group's rebalances are served. */
		want_pause = draining || failing || p.n >= WORKER_PENDING_MAX - 1;
		if (want_pause != paused) {
			SL_DEBUG("consumer %s (%zu dispatches buffered)",
				 want_pause ? "paused" : "resumed", p.n);
			sl_kafka_consumer_set_paused(w->consumer, want_pause);
			paused = want_pause;
		}
		/* Sleeps until a slot frees (or 20 ms), unless room appeared since it was read:
		 * its wake-up, sent during take_batch's round trip, is gone, and sleeping through
		 * it idled slots for 20 ms with dispatches buffered (about 1 hand-off in 30 of
		 * the diamond, 2026-12-06). */
		if (paused || p.n) {
			pthread_mutex_lock(&w->lock);
			if (paused || sl_mono_ms() < retry_at ||
			    (w->nbusy >= w->nslots && !worker_ahead_room(w)))
				worker_wait(w, 20);
			pthread_mutex_unlock(&w->lock);
		}
		m = NULL;
		if (paused || p.n < prefetch || sl_mono_ms() - last_poll >= WORKER_POLL_KEEPALIVE_MS) {
			m = poll_one(w, &p, paused || p.n ? 0 : WORKER_TAKE_IDLE_MS, &revocations);
			last_poll = sl_mono_ms();
		}
		if (m || p.n) {
			take_wait = WORKER_TAKE_IDLE_MS;
			take_at = sl_mono_ms() + take_wait;
		}
		/* Whatever else is fetched already joins the batch of the next turn: one Redis
		 * round trip for all of their leases. */
		while (m) {
			pending_push(w, &p, m);
			stuck = 0;
			m = p.n < prefetch ? poll_one(w, &p, 0, &revocations) : NULL;
		}
		/* Slots free and nothing of its own fetched for WORKER_TAKE_IDLE_MS: take what
		 * waits in the other workers' partitions; look less often while there is none. */
		if (!paused && !p.n && sl_mono_ms() >= take_at &&
		    (free_slots = worker_free_slots(w)) > 0) {
			int took = take_from_others(w, free_slots);

			take_wait = took > 0 ? WORKER_TAKE_IDLE_MS
				    : took < 0 || take_wait * 2 > WORKER_TAKE_WAIT_MAX_MS
					? WORKER_TAKE_WAIT_MAX_MS
					: take_wait * 2;
			take_at = sl_mono_ms() + take_wait;
		}
		sl_metric_set(w->m.waiting, (int64_t)p.n);
		sl_kafka_producer_poll(w->producer, 0);
	}
	worker_ahead_release(w); /* after a hard stop; none are left after a drain */
	/* Messages without a lease are not stored: the group hands them to another member. */
	while (p.n)
		rd_kafka_message_destroy(pending_pop(&p));
	free(it);
	free(reqs);
}
