/* worker.c - the worker's lifecycle: connect, start the threads, drain, stop, clean up. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/state.h"
#include "sluice/util.h"
#include "worker.h"

static void wait_on(pthread_cond_t *cond, pthread_mutex_t *lock, long ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(cond, lock, &ts);
}

void worker_wait(struct worker *w, long ms)
{
	wait_on(&w->cond, &w->lock, ms);
}

void worker_wait_tick(struct worker *w, long ms)
{
	wait_on(&w->tick, &w->lock, ms);
}

/* Sleeps up to ms, returning early (1) when a stop signal arrives. */
static int sleep_or_signal(struct worker *w, long ms)
{
	int64_t until = sl_mono_ms() + ms;

	while (!*w->stop_signals) {
		int64_t left = until - sl_mono_ms();
		if (left <= 0)
			return 0;
		usleep((useconds_t)(left > 50 ? 50000 : left * 1000));
	}
	return 1;
}

struct sl_state *worker_state_connect(struct worker *w, const char *what)
{
	long backoff = WORKER_BACKOFF_MIN_MS;
	int warned = 0;

	for (;;) {
		char errstr[256] = "";
		struct sl_state *st = sl_state_new(w->cfg->redis_url, errstr, sizeof(errstr));

		if (st) {
			if (warned)
				SL_INFO("redis reachable again (%s)", what);
			return st;
		}
		if (!warned++)
			SL_WARN("cannot connect to redis for %s: %s; retrying", what, errstr);
		if (sleep_or_signal(w, backoff))
			return NULL;
		backoff = backoff * 2 > WORKER_BACKOFF_MAX_MS ? WORKER_BACKOFF_MAX_MS : backoff * 2;
	}
}

/* Creates the queue and results topics if missing, retrying while Kafka is unreachable.
 * Returns SL_OK, or SL_ERR_CANCELLED when a stop signal came first. */
static enum sl_err ensure_topics(struct worker *w)
{
	/* The dead-letter topic too: a dead letter to a missing topic would wait minutes to fail. */
	const char *topics[] = {w->topic, w->topic_high, w->topic_low, SL_TOPIC_RESULTS,
				SL_TOPIC_DEADLETTER};
	long backoff = WORKER_BACKOFF_MIN_MS;
	int warned = 0;

	for (;;) {
		char errstr[256] = "";

		if (sl_kafka_topics_ensure(w->cfg->kafka_brokers, topics, 5,
					   WORKER_TOPIC_PARTITIONS, errstr, sizeof(errstr)) == SL_OK)
			return SL_OK;
		if (!warned++)
			SL_WARN("cannot ensure topics %s, %s, %s: %s; retrying", w->topic,
				SL_TOPIC_RESULTS, SL_TOPIC_DEADLETTER, errstr);
		if (sleep_or_signal(w, backoff))
			return SL_ERR_CANCELLED;
		backoff = backoff * 2 > WORKER_BACKOFF_MAX_MS ? WORKER_BACKOFF_MAX_MS : backoff * 2;
	}
}

/* mkdir -p for work-dir (its parents are the operator's business; only the last level). */
static void ensure_work_dir(const char *dir)
{
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		SL_WARN("cannot create work-dir %s: %s (tasks get it created per run)", dir,
			strerror(errno));
}

/* Fetches the results topic's metadata now, so the first result does not wait for it. */
static void warm_up(struct worker *w)
{
	const char *topics[] = {SL_TOPIC_RESULTS};

	sl_kafka_producer_warm(w->producer, topics, 1, 5000);
}

static void register_metrics(struct worker *w)
{
	struct sl_health *h = w->health;

	w->m.started = sl_health_counter(h, "sluice_worker_tasks_started_total",
					 "Task instances started on this worker.");
	w->m.succeeded = sl_health_counter(h, "sluice_worker_tasks_succeeded_total",
					   "Task instances that ended SUCCEEDED (result published).");
	w->m.failed = sl_health_counter(h, "sluice_worker_tasks_failed_total",
					"Task instances that ended FAILED or TIMED_OUT.");
	w->m.stopped = sl_health_counter(h, "sluice_worker_tasks_stopped_total",
					 "Task instances stopped without a result (lease lost, "
					 "hard stop, cancellation).");
	w->m.leases_lost = sl_health_counter(h, "sluice_worker_leases_lost_total",
					     "Leases lost while their task ran (task killed, "
					     "nothing published).");
	w->m.leases_taken = sl_health_counter(h, "sluice_worker_leases_taken_total",
					      "Leases taken (inline built-ins of untagged tasks "
					      "run without one).");
	w->m.lease_calls = sl_health_counter(h, "sluice_worker_lease_calls_total",
					     "Redis round trips that took leases (one takes several "
					     "when several dispatches wait: --lease-batch).");
	w->m.dropped = sl_health_counter(h, "sluice_worker_dispatches_dropped_total",
					 "Dispatches not run: outdated, leased by another worker, "
					 "waiting for a concurrency slot, or copies of one run here.");
	w->m.carried = sl_health_counter(h, "sluice_worker_tasks_carried_total",
					 "Tasks run right after their upstream, carried in its dispatch "
					 "(ADR 31).");
	w->m.taken = sl_health_counter(h, "sluice_worker_tasks_taken_from_others_total",
				       "Task instances waiting in another worker's partitions that "
				       "this one took from Redis while its slots idled.");
	w->m.busy = sl_health_gauge(h, "sluice_worker_busy_slots", "Slots running a task.");
	w->m.slots = sl_health_gauge(h, "sluice_worker_slots", "Slots of this worker.");
	w->m.waiting = sl_health_gauge(h, "sluice_worker_dispatches_waiting",
				       "Fetched dispatches waiting for a slot (unleased).");
	w->m.ahead = sl_health_gauge(h, "sluice_worker_dispatches_leased_ahead",
				     "Dispatches leased while every slot is busy, for the slot that "
				     "frees next.");
	w->m.draining = sl_health_gauge(h, "sluice_worker_draining",
					"1 while draining (taking no more dispatches).");
	sl_metric_set(w->m.slots, w->cfg->slots);
}

/* A fetch waits at most this long on the broker for data (librdkafka's default is 500 ms). A
 * freshly assigned partition joins the fetch loop only when the fetch in flight returns, so on a
 * start from zero the first dispatches waited up to 500 ms behind a fetch of empty partitions
 * (docs/autoscaler.md); an idle worker now asks 10 times a second instead of twice. */
/* What librdkafka prefetches for the worker's partitions waits in its queue rather than being
 * paused away (consume.c): bounded to 8 MiB instead of the default 64 MiB. */
static const char *const consumer_props[] = {"fetch.wait.max.ms", "100",
					     "queued.max.messages.kbytes", "8192", NULL};

struct worker *worker_new(const struct worker_config *cfg, volatile sig_atomic_t *stop_signals,
			  char *errstr, size_t errlen)
{
	struct worker *w = calloc(1, sizeof(*w));
	pthread_condattr_t ca;
	const char *topics[3];

	if (!w) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	w->cfg = cfg;
	w->stop_signals = stop_signals;
	/* First, so /healthz answers (and /readyz says 503) while Kafka and Redis are awaited. */
	if (!(w->health = sl_health_new(cfg->http, "worker", errstr, errlen)))
		goto fail_early;
	if (sl_health_port(w->health))
		SL_INFO("serving /healthz, /readyz and /metrics on port %d",
			sl_health_port(w->health));
	register_metrics(w);
	snprintf(w->topic, sizeof(w->topic), "%s%s", SL_TOPIC_TASKS_PREFIX, cfg->queue);
	snprintf(w->topic_high, sizeof(w->topic_high), "%s.high", w->topic);
	snprintf(w->topic_low, sizeof(w->topic_low), "%s.low", w->topic);
	snprintf(w->group, sizeof(w->group), "sluice-workers.%s", cfg->queue);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, &ca);
	pthread_cond_init(&w->tick, &ca);
	pthread_condattr_destroy(&ca);
	w->lock_ready = 1;
	w->nslots = (int)cfg->slots;
	if (!(w->slots = calloc((size_t)w->nslots, sizeof(*w->slots)))) {
		snprintf(errstr, errlen, "out of memory");
		goto fail;
	}
	for (int i = 0; i < w->nslots; i++)
		worker_slot_init(w, i);
	ensure_work_dir(cfg->work_dir);
	if (ensure_topics(w) != SL_OK) {
		snprintf(errstr, errlen, "stopped before kafka answered");
		goto fail;
	}
	if (!(w->producer = sl_kafka_producer_new_unordered(
		      cfg->kafka_brokers, WORKER_PRODUCER_LINGER_MS, errstr, errlen)))
		goto fail;
	warm_up(w);
	/* Each Redis user gets its own connection: hiredis contexts are not thread-safe. */
	if (!(w->st = worker_state_connect(w, "leases")) ||
	    !(w->lease_st = worker_state_connect(w, "lease renewal")) ||
	    !(w->reg_st = worker_state_connect(w, "registry"))) {
		snprintf(errstr, errlen, "stopped before redis answered");
		goto fail;
	}
	for (int i = 0; i < w->nslots; i++) {
		if (!(w->slots[i].st = worker_state_connect(w, "slot"))) {
			snprintf(errstr, errlen, "stopped before redis answered");
			goto fail;
		}
	}
	/* The three priority bands of the queue, in one group (see consume.c's pending_pick). */
	topics[0] = w->topic_high;
	topics[1] = w->topic;
	topics[2] = w->topic_low;
	if (!(w->consumer = sl_kafka_consumer_new_props(cfg->kafka_brokers, w->group, topics, 3,
							consumer_props, errstr, errlen)))
		goto fail;
	return w;
fail:
	worker_destroy(w);
	return NULL;
fail_early:
	free(w);
	return NULL;
}

/* Starts a thread with SIGTERM/SIGINT blocked, so only the main thread takes them. */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t block, old;
	int rc;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	rc = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static void stop_threads(struct worker *w)
{
	pthread_mutex_lock(&w->lock);
	atomic_store(&w->quit, 1);
	pthread_cond_broadcast(&w->cond);
	pthread_cond_broadcast(&w->tick);
	worker_slots_wake(w);
	pthread_mutex_unlock(&w->lock);
	for (int i = 0; i < w->nslots; i++) {
		if (w->slots[i].started)
			pthread_join(w->slots[i].thread, NULL);
		w->slots[i].started = 0;
	}
	if (w->lease_started)
		pthread_join(w->lease_thread, NULL);
	if (w->registry_started)
		pthread_join(w->registry_thread, NULL);
	w->lease_started = w->registry_started = 0;
}

enum sl_err worker_run(struct worker *w)
{
	enum sl_err err = SL_OK;

	for (int i = 0; i < w->nslots; i++) {
		if (start_thread(&w->slots[i].thread, worker_slot_main, &w->slots[i]) != 0) {
			SL_ERROR("cannot start slot thread %d", i);
			err = SL_ERR_NOMEM;
			goto out;
		}
		w->slots[i].started = 1;
	}
	if (start_thread(&w->lease_thread, worker_lease_main, w) != 0) {
		SL_ERROR("cannot start the lease thread");
		err = SL_ERR_NOMEM;
		goto out;
	}
	w->lease_started = 1;
	if (start_thread(&w->registry_thread, worker_registry_main, w) != 0) {
		SL_ERROR("cannot start the registry thread");
		err = SL_ERR_NOMEM;
		goto out;
	}
	w->registry_started = 1;
	sl_health_set_ready(w->health, 1);
	SL_INFO("worker %s started: queue %s (topics %s, %s, %s, group %s), %d slots, %ld leased "
		"ahead (%ld per call), lease ttl %ld ms",
		w->cfg->id, w->cfg->queue, w->topic_high, w->topic, w->topic_low, w->group,
		w->nslots, w->cfg->lease_ahead, w->cfg->lease_batch, w->cfg->lease_ttl_ms);
	worker_consume(w);
out:
	if (err != SL_OK) {
		/* Nothing was taken yet; a failed start needs no drain. */
		atomic_store(&w->draining, 1);
	}
	sl_health_set_ready(w->health, 0);
	stop_threads(w);
	SL_INFO("worker %s stopped", w->cfg->id);
	return err;
}

void worker_destroy(struct worker *w)
{
	if (!w)
		return;
	if (w->lock_ready)
		stop_threads(w);
	/* Closing the consumer commits the stored offsets and leaves the group at once, so the
	 * partitions move to another worker without waiting for the session timeout. */
	sl_kafka_consumer_destroy(w->consumer);
	sl_kafka_producer_destroy(w->producer);
	for (int i = 0; w->slots && i < w->nslots; i++) {
		sl_state_destroy(w->slots[i].st);
		worker_slot_fini(&w->slots[i]);
	}
	sl_state_destroy(w->st);
	sl_state_destroy(w->lease_st);
	sl_state_destroy(w->reg_st);
	free(w->slots);
	sl_health_destroy(w->health);
	if (w->lock_ready) {
		pthread_cond_destroy(&w->cond);
		pthread_cond_destroy(&w->tick);
		pthread_mutex_destroy(&w->lock);
	}
	free(w);
}
