/* autoscaler.c - the decision loop: gathers demand, asks the policy, applies it, reports it. */
#include "autoscaler.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "events.h"
#include "policy.h"
#include "pools.h"
#include "registry.h"
#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/state.h"
#include "sluice/util.h"

#define PUBLISH_EVERY_MS 10000   /* a decision that changes nothing is still published this often */
#define LAG_TIMEOUT_MS 3000      /* one lag probe */
#define LAG_READY_MS 5000        /* at start, for the lag of new topics to become readable */
#define TOPIC_PARTITIONS 8
#define START_BACKOFF_MAX_MS 60000 /* starts of a pool whose workers keep failing: at most this */
#define MAX_DROP_ENV 32

/* A worker this autoscaler started and has not seen exit. */
struct launched {
	char id[AUTOSCALER_ID_MAX];
	int64_t launched_mono;
	int64_t launched_wall;
	int registered;      /* seen in the registry at least once */
	int drain_requested; /* sl_state_worker_request_drain() done */
	int stopped;         /* SIGTERM sent */
	int seen;            /* in the registry this interval */
};

struct pool_rt {
	const struct autoscaler_pool_config *pc; /* points into autoscaler.pools */
	char topic[sizeof(SL_TOPIC_TASKS_PREFIX) + AUTOSCALER_NAME_MAX];
	struct sl_kafka_lag_probe *probe;
	struct autoscaler_backend *backend; /* borrowed from struct autoscaler */
	struct autoscaler_history history;
	struct launched *launched; /* at most pc->max: the policy never goes past max */
	size_t nlaunched;
	int start_failures;        /* in a row, for the start backoff */
	int64_t last_publish_mono; /* 0: never */
	int last_current, last_desired;
	int lag_failing; /* the failure was logged; log again only after a success */
	/* Scale from zero: while the pool has no worker and no lag, the queue's end offsets are
	 * polled every idle-poll and a change (new dispatches) brings the next decision forward. */
	int watch;             /* polling: the last decision left the pool empty and idle */
	int64_t end_mark;      /* sum of the bands' end offsets, read just before that lag */
	int64_t next_poll_mono;
	struct autoscaler_pool_view view;
	char reason[AUTOSCALER_REASON_MAX];
};

struct autoscaler {
	const struct autoscaler_config *cfg;
	struct autoscaler_pools pools;
	struct pool_rt rt[AUTOSCALER_MAX_POOLS];
	struct sl_state *st;
	struct sl_kafka_producer *producer;
	struct autoscaler_backend *process;
	struct autoscaler_registry *reg;
	struct autoscaler_worker *scratch; /* the workers of one pool, rebuilt every interval */
	size_t scratch_cap;
	struct autoscaler_decision decision;
	int64_t dead_after_ms;
	int redis_failing;
	char worker_bin[PATH_MAX];
	char pid_dir[PATH_MAX];
	char drop_env_names[MAX_DROP_ENV][64];
	const char *drop_env[MAX_DROP_ENV + 1];
};

static void fmt_ms(int64_t ms, char *buf, size_t cap)
{
	if (ms % 1000 == 0)
		snprintf(buf, cap, "%llds", (long long)(ms / 1000));
	else
		snprintf(buf, cap, "%lldms", (long long)ms);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* mkdir -p; returns 0 or -1 with errno set. */
static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	size_t len = sl_strlcpy(buf, path, sizeof(buf));

	if (len >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static struct launched *find_launched(struct pool_rt *rt, const char *id)
{
	for (size_t i = 0; i < rt->nlaunched; i++)
		if (!strcmp(rt->launched[i].id, id))
			return &rt->launched[i];
	return NULL;
}

/* Holds the pool's starts for 1 s, 2 s, 4 s ... up to START_BACKOFF_MAX_MS after failures in a
 * row, so a broken worker is not restarted every interval; returns the hold. */
static int64_t hold_starts(struct pool_rt *rt, int64_t now_mono)
{
	int64_t backoff = 1000LL << (rt->start_failures < 6 ? rt->start_failures : 6);

	if (backoff > START_BACKOFF_MAX_MS)
		backoff = START_BACKOFF_MAX_MS;
	rt->start_failures++;
	rt->history.hold_starts_until = now_mono + backoff;
	return backoff;
}

/* Backend callback: one of our workers is gone; only now does it stop counting. */
static void on_exit_cb(void *ctx, const char *id, const char *how)
{
	struct autoscaler *a = ctx;

	for (size_t p = 0; p < a->pools.n; p++) {
		struct pool_rt *rt = &a->rt[p];
		struct launched *l = find_launched(rt, id);
		if (!l)
			continue;
		if (!l->registered && !l->stopped) {
			/* Died before registering: a bad worker-bin, flags or environment. */
			int64_t backoff = hold_starts(rt, sl_mono_ms());
			SL_WARN("pool %s: worker %s %s before registering; next start in %llds%s%s",
				rt->pc->name, id, how, (long long)(backoff / 1000),
				a->cfg->log_dir ? ", see its log in " : "",
				a->cfg->log_dir ? a->cfg->log_dir : "");
		} else {
			SL_INFO("pool %s: worker %s %s", rt->pc->name, id, how);
		}
		/* A process that is gone is no worker, whether it said goodbye or not. */
		if (l->registered && a->st && sl_state_worker_deregister(a->st, id) != SL_OK)
			SL_DEBUG("could not deregister worker %s", id);
		*l = rt->launched[--rt->nlaunched];
		return;
	}
	SL_DEBUG("worker %s %s (not in any pool)", id, how);
}

static void reap(struct autoscaler *a)
{
	if (a->process)
		a->process->ops->reap(a->process, on_exit_cb, a);
}

/* The pool's workers for the policy: live registered ones of its queue, plus ours that are
 * starting or on their way out. Returns how many are in a->scratch. */
static size_t collect_workers(struct autoscaler *a, struct pool_rt *rt, int64_t now_mono)
{
	const struct autoscaler_pool_config *pc = rt->pc;
	size_t n = 0;

	for (size_t i = 0; i < rt->nlaunched; i++)
		rt->launched[i].seen = 0;
	for (size_t i = 0; i < a->reg->n && n < a->scratch_cap; i++) {
		const struct autoscaler_registered *r = &a->reg->w[i];
		struct autoscaler_worker *w = &a->scratch[n];
		struct launched *l;

		if (strcmp(r->queue, pc->queue) != 0)
			continue;
		sl_strlcpy(w->id, r->id, sizeof(w->id));
		w->busy = r->busy;
		w->started_ms = r->started_ms;
		w->state = r->draining ? AUTOSCALER_WORKER_DRAINING : AUTOSCALER_WORKER_ACTIVE;
		if ((l = find_launched(rt, r->id))) {
			if (!l->registered)
				rt->start_failures = 0;
			l->registered = 1;
			l->seen = 1;
			if (l->drain_requested || l->stopped)
				w->state = AUTOSCALER_WORKER_DRAINING;
		}
		n++;
	}
	for (size_t i = 0; i < rt->nlaunched && n < a->scratch_cap; i++) {
		struct launched *l = &rt->launched[i];
		struct autoscaler_worker *w = &a->scratch[n];

		if (l->seen)
			continue;
		sl_strlcpy(w->id, l->id, sizeof(w->id));
		w->busy = 0;
		w->started_ms = l->launched_wall;
		w->state = AUTOSCALER_WORKER_DRAINING;
		if (!l->registered && !l->stopped) {
			if (now_mono - l->launched_mono < a->cfg->start_timeout_ms) {
				w->state = AUTOSCALER_WORKER_STARTING;
			} else {
				char d[32];
				int64_t backoff = hold_starts(rt, now_mono);
				fmt_ms(a->cfg->start_timeout_ms, d, sizeof(d));
				SL_WARN("pool %s: worker %s did not register within %s: stopping it; "
					"next start in %llds",
					pc->name, l->id, d, (long long)(backoff / 1000));
				rt->backend->ops->stop(rt->backend, l->id);
				l->stopped = 1;
			}
		}
		/* A registered worker missing from the registry has deregistered or stopped
		 * heartbeating: it counts as leaving until its process exits. */
		n++;
	}
	return n;
}

/* Starts d->start workers; returns how many started, their ids in ids. */
static size_t apply_starts(struct autoscaler *a, struct pool_rt *rt, int64_t now_mono,
			   char ids[][AUTOSCALER_ID_MAX], char *failure, size_t failcap)
{
	const struct autoscaler_decision *d = &a->decision;
	size_t started = 0;

	for (int i = 0; i < d->start; i++) {
		struct launched *l;
		char errstr[256];

		if (rt->nlaunched >= (size_t)rt->pc->max) {
			snprintf(failure, failcap, "already %zu workers started", rt->nlaunched);
			break;
		}
		sl_id_new("w-", ids[started], AUTOSCALER_ID_MAX);
		if (rt->backend->ops->start(rt->backend, rt->pc, ids[started], errstr,
					    sizeof(errstr)) != SL_OK) {
			hold_starts(rt, now_mono);
			SL_ERROR("pool %s: %s", rt->pc->name, errstr);
			snprintf(failure, failcap, "%s", errstr);
			break;
		}
		l = &rt->launched[rt->nlaunched++];
		memset(l, 0, sizeof(*l));
		sl_strlcpy(l->id, ids[started], sizeof(l->id));
		l->launched_mono = now_mono;
		l->launched_wall = sl_now_ms();
		started++;
	}
	return started;
}

/* Asks the chosen workers to drain; returns how many were asked, their ids in ids. */
static size_t apply_drains(struct autoscaler *a, struct pool_rt *rt, char ids[][AUTOSCALER_ID_MAX])
{
	const struct autoscaler_decision *d = &a->decision;
	size_t asked = 0;

	for (size_t i = 0; i < d->ndrain; i++) {
		const struct autoscaler_worker *w = &a->scratch[d->drain[i]];
		struct launched *l;
		enum sl_err err = sl_state_worker_request_drain(a->st, w->id);

		if (err != SL_OK) {
			SL_WARN("pool %s: cannot ask worker %s to drain: %s", rt->pc->name, w->id,
				sl_strerror(err));
			continue;
		}
		if ((l = find_launched(rt, w->id)))
			l->drain_requested = 1;
		sl_strlcpy(ids[asked++], w->id, AUTOSCALER_ID_MAX);
	}
	return asked;
}

/* The pool's numbers as labelled gauges on /metrics (looked up by name on each tick). */
static void export_view(struct autoscaler *a, const struct pool_rt *rt)
{
	static const struct {
		const char *name, *help;
	} g[] = {
		{"sluice_autoscaler_lag", "Queue lag over all priority bands (-1: unreadable)."},
		{"sluice_autoscaler_workers", "Workers of the pool (running or starting)."},
		{"sluice_autoscaler_desired", "Workers the policy wants."},
		{"sluice_autoscaler_busy", "Busy slots (running leases) of the pool."},
		{"sluice_autoscaler_draining", "Workers of the pool asked to drain."},
	};
	const int64_t v[] = {rt->view.lag, rt->view.workers, rt->view.desired, rt->view.busy,
			     rt->view.draining};
	char name[SL_HEALTH_NAME_MAX + 1];

	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		if ((size_t)snprintf(name, sizeof(name), "%s{pool=\"%s\"}", g[i].name,
				     rt->pc->name) < sizeof(name))
			sl_metric_set(sl_health_gauge(a->cfg->health, name, g[i].help), v[i]);
	}
}

static void write_view(struct autoscaler *a, struct pool_rt *rt)
{
	rt->view.pool = rt->pc;
	rt->view.reason = rt->reason;
	rt->view.updated_ms = sl_now_ms();
	export_view(a, rt);
	if (autoscaler_registry_write_view(a->st, &rt->view) != SL_OK)
		SL_DEBUG("pool %s: could not write sluice:pool:%s", rt->pc->name, rt->pc->name);
}

static const char *const bands[] = {"", ".high", ".low"};
#define NBANDS (sizeof(bands) / sizeof(bands[0]))
#define BAND_TOPIC_MAX (sizeof(SL_TOPIC_TASKS_PREFIX) + AUTOSCALER_NAME_MAX + sizeof(".high"))

/* The topics of the queue's priority bands (sluice.tasks.<queue>, .high, .low). */
static void band_topics(const struct pool_rt *rt, char names[][BAND_TOPIC_MAX],
			const char **topics)
{
	for (size_t b = 0; b < NBANDS; b++) {
		snprintf(names[b], sizeof(names[b]), "%s%s", rt->topic, bands[b]);
		topics[b] = names[b];
	}
}

/* Sum of the end offsets of the queue's priority bands: it changes when anything is queued. */
static enum sl_err queue_end(struct pool_rt *rt, int64_t *sum)
{
	char names[NBANDS][BAND_TOPIC_MAX];
	const char *topics[NBANDS];

	band_topics(rt, names, topics);
	return sl_kafka_end_offsets(rt->probe, topics, NBANDS, sum, LAG_TIMEOUT_MS);
}

/* Lag of the queue summed over its priority bands. A band whose topic does not exist counts 0;
 * SL_ERR_NOT_FOUND only when none exists. */
static enum sl_err queue_lag(struct pool_rt *rt, int64_t *lag)
{
	char names[NBANDS][BAND_TOPIC_MAX];
	const char *topics[NBANDS];

	band_topics(rt, names, topics);
	return sl_kafka_lag_topics(rt->probe, topics, NBANDS, lag, LAG_TIMEOUT_MS);
}

static void pool_tick(struct autoscaler *a, struct pool_rt *rt, int64_t now_mono)
{
	struct autoscaler_decision *d = &a->decision;
	char started[AUTOSCALER_POOL_MAX_SIZE][AUTOSCALER_ID_MAX];
	char drained[AUTOSCALER_POOL_MAX_SIZE][AUTOSCALER_ID_MAX];
	char *started_p[AUTOSCALER_POOL_MAX_SIZE], *drained_p[AUTOSCALER_POOL_MAX_SIZE];
	char failure[256] = "";
	struct autoscaler_policy_input in;
	size_t nw, nstarted = 0, ndrained = 0;
	int64_t lag = 0;
	int workers_after, marked = 0;
	enum sl_err err;

	nw = collect_workers(a, rt, now_mono);
	/* An empty pool is watched for new dispatches until the next decision; the mark comes
	 * before the lag so that nothing queued in between goes unnoticed. */
	rt->watch = 0;
	if (nw == 0 && a->cfg->idle_poll_ms > 0)
		marked = queue_end(rt, &rt->end_mark) == SL_OK;
	err = queue_lag(rt, &lag);
	if (err == SL_ERR_NOT_FOUND) {
		lag = 0; /* no topic yet: nothing was ever queued */
	} else if (err != SL_OK) {
		/* Without the lag any decision would be a guess: hold still. */
		if (!rt->lag_failing)
			SL_WARN("pool %s: cannot read the lag of %s: %s; holding the pool as it is",
				rt->pc->name, rt->topic, sl_strerror(err));
		rt->lag_failing = 1;
		snprintf(rt->reason, sizeof(rt->reason), "lag of %s unavailable: holding",
			 rt->topic);
		rt->view.lag = -1;
		write_view(a, rt);
		return;
	}
	if (rt->lag_failing)
		SL_INFO("pool %s: lag of %s readable again", rt->pc->name, rt->topic);
	rt->lag_failing = 0;

	memset(&in, 0, sizeof(in));
	in.now_ms = now_mono;
	in.pool = rt->pc;
	in.lag = lag;
	in.workers = a->scratch;
	in.nworkers = nw;
	in.history = rt->history;
	autoscaler_policy_decide(&in, d);
	rt->history = d->history;
	if (d->start > 0) {
		nstarted = apply_starts(a, rt, now_mono, started, failure, sizeof(failure));
		if ((int)nstarted < d->start) {
			size_t len = strlen(d->reason);
			snprintf(d->reason + len, sizeof(d->reason) - len, " (started %zu: %s)",
				 nstarted, failure);
		}
	}
	if (d->ndrain > 0)
		ndrained = apply_drains(a, rt, drained);
	sl_strlcpy(rt->reason, d->reason, sizeof(rt->reason));
	workers_after = d->current + (int)nstarted - (int)ndrained;

	/* The event carries the numbers the decision was made on, and what it did. */
	for (size_t i = 0; i < nstarted; i++)
		started_p[i] = started[i];
	for (size_t i = 0; i < ndrained; i++)
		drained_p[i] = drained[i];
	if (nstarted || ndrained || workers_after != rt->last_current ||
	    d->desired != rt->last_desired || !rt->last_publish_mono ||
	    now_mono - rt->last_publish_mono >= PUBLISH_EVERY_MS) {
		if (nstarted || ndrained)
			SL_INFO("pool %s: %s", rt->pc->name, d->reason);
		else
			SL_DEBUG("pool %s: %s", rt->pc->name, d->reason);
		err = autoscaler_events_publish(a->producer, rt->pc, d, started_p, nstarted,
						drained_p, ndrained, sl_now_ms());
		if (err != SL_OK)
			SL_WARN("pool %s: cannot publish the decision: %s", rt->pc->name,
				sl_strerror(err));
		rt->last_publish_mono = now_mono;
		rt->last_current = workers_after;
		rt->last_desired = d->desired;
	}
	rt->watch = marked && workers_after == 0 && d->lag == 0 && d->busy == 0;
	rt->next_poll_mono = now_mono + a->cfg->idle_poll_ms;
	rt->view.workers = workers_after;
	rt->view.starting = d->starting + (int)nstarted;
	rt->view.draining = d->draining + (int)ndrained;
	rt->view.desired = d->desired;
	rt->view.lag = d->lag;
	rt->view.busy = d->busy;
	write_view(a, rt);
}

static void tick(struct autoscaler *a)
{
	int64_t now_mono = sl_mono_ms();
	char errstr[256];
	enum sl_err err;

	err = autoscaler_registry_read(a->st, sl_now_ms() - a->dead_after_ms, a->reg, errstr,
				       sizeof(errstr));
	if (err != SL_OK) {
		/* Blind to the workers: starting or draining now could only be wrong. */
		if (!a->redis_failing)
			SL_WARN("cannot read the worker registry: %s; holding every pool", errstr);
		a->redis_failing = 1;
		for (size_t p = 0; p < a->pools.n; p++)
			a->rt[p].watch = 0; /* back to the interval's pace */
		return;
	}
	if (a->redis_failing)
		SL_INFO("worker registry readable again");
	a->redis_failing = 0;
	for (size_t p = 0; p < a->pools.n; p++)
		pool_tick(a, &a->rt[p], now_mono);
}

/* Drains every worker this autoscaler started and waits for them to go. */
static void shutdown_workers(struct autoscaler *a, volatile sig_atomic_t *stop)
{
	int64_t deadline = sl_mono_ms() + a->cfg->drain_timeout_ms;
	size_t running = a->process ? a->process->ops->running(a->process) : 0;
	char d[32];

	fmt_ms(a->cfg->drain_timeout_ms, d, sizeof(d));
	if (running)
		SL_INFO("stopping: draining %zu workers (waiting up to %s)", running, d);
	for (size_t p = 0; p < a->pools.n; p++) {
		struct pool_rt *rt = &a->rt[p];
		for (size_t i = 0; i < rt->nlaunched; i++) {
			struct launched *l = &rt->launched[i];
			if (l->stopped || l->drain_requested)
				continue;
			/* One that never registered holds no work: SIGTERM is enough. */
			if (!l->registered || sl_state_worker_request_drain(a->st, l->id) != SL_OK) {
				rt->backend->ops->stop(rt->backend, l->id);
				l->stopped = 1;
			} else {
				l->drain_requested = 1;
			}
		}
		sl_strlcpy(rt->reason, "autoscaler stopping: draining its workers", sizeof(rt->reason));
		write_view(a, rt);
	}
	while (a->process && a->process->ops->running(a->process) > 0 &&
	       sl_mono_ms() < deadline && *stop < 2) {
		reap(a);
		sl_kafka_producer_poll(a->producer, 0);
		sleep_ms(100);
	}
	reap(a);
	running = a->process ? a->process->ops->running(a->process) : 0;
	if (running) {
		SL_WARN("%zu workers still running after %s%s: sending SIGTERM", running,
			*stop >= 2 ? "a second signal" : d, *stop >= 2 ? "" : " of draining");
		for (size_t p = 0; p < a->pools.n; p++) {
			struct pool_rt *rt = &a->rt[p];
			for (size_t i = 0; i < rt->nlaunched; i++)
				rt->backend->ops->stop(rt->backend, rt->launched[i].id);
		}
		for (int i = 0; i < 20 && a->process->ops->running(a->process) > 0; i++) {
			sleep_ms(100);
			reap(a);
		}
	}
	for (size_t p = 0; p < a->pools.n; p++) {
		struct pool_rt *rt = &a->rt[p];
		snprintf(rt->reason, sizeof(rt->reason), "autoscaler stopped");
		rt->view.workers = (int)rt->nlaunched;
		rt->view.starting = 0;
		rt->view.draining = (int)rt->nlaunched;
		write_view(a, rt);
	}
}

/* Polls the end offsets of the watched (empty and idle) pools that are due; returns 1 when one
 * of them got new dispatches, so that the decision is taken now rather than at the interval.
 * Sets *wake to the time of the next poll due. */
static int poll_empty_pools(struct autoscaler *a, int64_t now, int64_t *wake)
{
	int woken = 0;

	for (size_t p = 0; p < a->pools.n; p++) {
		struct pool_rt *rt = &a->rt[p];
		int64_t sum;

		if (!rt->watch)
			continue;
		if (now >= rt->next_poll_mono) {
			enum sl_err err = queue_end(rt, &sum);

			if (err != SL_OK) {
				/* Kafka is having trouble: back to the interval's pace until the
				 * next decision marks the pool again. */
				SL_DEBUG("pool %s: cannot poll %s: %s", rt->pc->name, rt->topic,
					 sl_strerror(err));
				rt->watch = 0;
				continue;
			}
			if (sum != rt->end_mark) {
				SL_DEBUG("pool %s: new dispatches on %s: deciding now", rt->pc->name,
					 rt->topic);
				rt->watch = 0;
				woken = 1;
				continue;
			}
			now = sl_mono_ms();
			rt->next_poll_mono = now + a->cfg->idle_poll_ms;
		}
		if (rt->next_poll_mono < *wake)
			*wake = rt->next_poll_mono;
	}
	return woken;
}

void autoscaler_run(struct autoscaler *a, volatile sig_atomic_t *stop)
{
	int64_t next = sl_mono_ms();

	while (!*stop) {
		int64_t now, wake;

		reap(a);
		now = sl_mono_ms();
		wake = next;
		if (now < next && poll_empty_pools(a, now, &wake))
			next = now = sl_mono_ms();
		if (now >= next) {
			tick(a);
			next += a->cfg->interval_ms;
			if (next <= now)
				next = now + a->cfg->interval_ms;
			wake = next;
			/* Nothing is due so soon after a decision: this learns when the next is. */
			poll_empty_pools(a, sl_mono_ms(), &wake);
		}
		/* Serves delivery reports; doubles as the loop's sleep (at most 100 ms, so that
		 * exited workers are reaped and signals seen soon). */
		now = sl_mono_ms();
		sl_kafka_producer_poll(a->producer,
				       wake - now > 100 ? 100 : wake > now ? (int)(wake - now) : 0);
	}
	shutdown_workers(a, stop);
	if (sl_kafka_producer_flush(a->producer, 5000) != SL_OK)
		SL_WARN("some decisions were not delivered to %s", SL_TOPIC_SCALER_EVENTS);
}

/* worker-bin default: sluice-worker beside our own executable. */
static enum sl_err resolve_worker_bin(struct autoscaler *a, char *errstr, size_t errlen)
{
	char self[PATH_MAX];
	ssize_t n;
	char *slash;

	if (a->cfg->worker_bin) {
		if (sl_strlcpy(a->worker_bin, a->cfg->worker_bin, sizeof(a->worker_bin)) >=
		    sizeof(a->worker_bin))
			goto toolong;
	} else {
		if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0) {
			snprintf(errstr, errlen, "cannot find my own binary (%s): pass --worker-bin",
				 strerror(errno));
			return SL_ERR_CONFIG;
		}
		self[n] = '\0';
		if ((slash = strrchr(self, '/')))
			*slash = '\0';
		if ((size_t)snprintf(a->worker_bin, sizeof(a->worker_bin), "%s/sluice-worker",
				     self) >= sizeof(a->worker_bin))
			goto toolong;
	}
	if (strchr(a->worker_bin, '/') && access(a->worker_bin, X_OK) != 0) {
		snprintf(errstr, errlen, "worker-bin %s is not executable (%s): build sluice-worker "
			 "or pass --worker-bin", a->worker_bin, strerror(errno));
		return SL_ERR_CONFIG;
	}
	return SL_OK;
toolong:
	snprintf(errstr, errlen, "worker-bin path too long");
	return SL_ERR_CONFIG;
}

static enum sl_err prepare_dirs(struct autoscaler *a, char *errstr, size_t errlen)
{
	const char *log_dir = a->cfg->log_dir;

	a->pid_dir[0] = '\0';
	if (log_dir && mkdir_p(log_dir) != 0) {
		snprintf(errstr, errlen, "log-dir %s: %s", log_dir, strerror(errno));
		return SL_ERR_IO;
	}
	if (a->cfg->pid_dir)
		sl_strlcpy(a->pid_dir, a->cfg->pid_dir, sizeof(a->pid_dir));
	else if (log_dir) /* .run/logs -> .run/pids/workers, where `scripts/stack down` looks */
		snprintf(a->pid_dir, sizeof(a->pid_dir), "%s/../pids/workers", log_dir);
	if (a->pid_dir[0] && mkdir_p(a->pid_dir) != 0) {
		snprintf(errstr, errlen, "pid-dir %s: %s", a->pid_dir, strerror(errno));
		return SL_ERR_IO;
	}
	return SL_OK;
}

/* The variables of our own table that mean nothing to a worker (or mean something else). */
static void build_drop_env(struct autoscaler *a)
{
	size_t n = 0;

	for (const struct sl_config_entry *e = autoscaler_config_table; e->name && n < MAX_DROP_ENV;
	     e++) {
		char *out = a->drop_env_names[n];
		size_t j = sl_strlcpy(out, "SLUICE_", sizeof(a->drop_env_names[n]));
		if (!strcmp(e->name, "kafka-brokers") || !strcmp(e->name, "redis-url") ||
		    !strcmp(e->name, "log-level"))
			continue;
		for (const char *c = e->name; *c && j + 1 < sizeof(a->drop_env_names[n]); c++)
			out[j++] = *c == '-' ? '_' : (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
		out[j] = '\0';
		a->drop_env[n] = out;
		n++;
	}
	a->drop_env[n] = NULL;
}

/* Retries connect() every second until it works or *stop is set; logs the first failure. */
static enum sl_err wait_for(const char *what, volatile sig_atomic_t *stop,
			    enum sl_err (*connect)(struct autoscaler *, char *, size_t),
			    struct autoscaler *a, char *errstr, size_t errlen)
{
	enum sl_err err;
	int logged = 0;

	while ((err = connect(a, errstr, errlen)) != SL_OK) {
		if (err == SL_ERR_CONFIG)
			return err;
		if (!logged++)
			SL_WARN("%s: %s; retrying every second", what, errstr);
		for (int i = 0; i < 10; i++) {
			if (*stop) {
				snprintf(errstr, errlen, "stopped while waiting for %s", what);
				return SL_ERR_CANCELLED;
			}
			sleep_ms(100);
		}
	}
	if (logged)
		SL_INFO("%s: connected", what);
	return SL_OK;
}

static enum sl_err connect_redis(struct autoscaler *a, char *errstr, size_t errlen)
{
	return (a->st = sl_state_new(a->cfg->redis_url, errstr, errlen)) ? SL_OK : SL_ERR_REDIS;
}

/* Every priority band of every pool's queue (as the planner and the workers would create them),
 * so that the first dispatches and the first workers of a queue find its topics ready. */
static enum sl_err ensure_topics(struct autoscaler *a, char *errstr, size_t errlen)
{
	static char names[AUTOSCALER_MAX_POOLS][NBANDS][BAND_TOPIC_MAX];
	const char *topics[AUTOSCALER_MAX_POOLS * NBANDS + 1];
	size_t n = 0;
	enum sl_err err;

	for (size_t p = 0; p < a->pools.n; p++) {
		band_topics(&a->rt[p], names[p], &topics[n]);
		n += NBANDS;
	}
	topics[n++] = SL_TOPIC_SCALER_EVENTS;
	err = sl_kafka_topics_ensure(a->cfg->kafka_brokers, topics, n, TOPIC_PARTITIONS, errstr,
				     errlen);
	return err == SL_ERR_CONFIG ? SL_ERR_CONFIG : err == SL_OK ? SL_OK : SL_ERR_KAFKA;
}

/* A topic just created has no leader for a moment, and a first decision taken then would only
 * hold the pool for a whole interval: wait (up to LAG_READY_MS) until every pool's lag reads. */
static void wait_lag_readable(struct autoscaler *a, volatile sig_atomic_t *stop)
{
	int64_t deadline = sl_mono_ms() + LAG_READY_MS;

	for (size_t p = 0; p < a->pools.n && !*stop; p++) {
		int64_t lag;
		enum sl_err err;

		while ((err = queue_lag(&a->rt[p], &lag)) != SL_OK && err != SL_ERR_NOT_FOUND &&
		       sl_mono_ms() < deadline && !*stop)
			sleep_ms(50);
	}
}

struct autoscaler *autoscaler_new(const struct autoscaler_config *cfg,
				  volatile sig_atomic_t *stop, enum sl_err *errp, char *errstr,
				  size_t errlen)
{
	struct autoscaler *a = calloc(1, sizeof(*a));
	enum sl_err err = SL_ERR_NOMEM;
	size_t max_workers = 0;

	if (!a) {
		snprintf(errstr, errlen, "out of memory");
		goto fail;
	}
	a->cfg = cfg;
	if (cfg->interval_ms <= 0) {
		snprintf(errstr, errlen, "interval must be above 0");
		err = SL_ERR_CONFIG;
		goto fail;
	}
	/* Heartbeats older than this mean a dead worker, for counting purposes. */
	a->dead_after_ms = 3 * cfg->interval_ms > 5000 ? 3 * cfg->interval_ms : 5000;
	if ((err = autoscaler_pools_load(cfg->pools, &a->pools, errstr, errlen)) != SL_OK)
		goto fail;
	if ((err = resolve_worker_bin(a, errstr, errlen)) != SL_OK ||
	    (err = prepare_dirs(a, errstr, errlen)) != SL_OK)
		goto fail;
	build_drop_env(a);
	{
		struct autoscaler_process_opts po = {
			.worker_bin = a->worker_bin,
			.log_dir = cfg->log_dir,
			.pid_dir = a->pid_dir[0] ? a->pid_dir : NULL,
			.kafka_brokers = cfg->kafka_brokers,
			.redis_url = cfg->redis_url,
			.drop_env = a->drop_env,
		};
		err = SL_ERR_NOMEM;
		if (!(a->process = autoscaler_backend_process_new(&po, errstr, errlen)))
			goto fail;
	}
	err = SL_ERR_NOMEM;
	for (size_t p = 0; p < a->pools.n; p++) {
		struct pool_rt *rt = &a->rt[p];
		char group[64 + AUTOSCALER_NAME_MAX];

		rt->pc = &a->pools.pool[p];
		rt->backend = a->process; /* the only backend so far */
		snprintf(rt->topic, sizeof(rt->topic), "%s%s", SL_TOPIC_TASKS_PREFIX, rt->pc->queue);
		snprintf(group, sizeof(group), "sluice-workers.%s", rt->pc->queue);
		rt->view.lag = -1;
		rt->last_current = rt->last_desired = -1;
		if (!(rt->launched = calloc((size_t)rt->pc->max, sizeof(*rt->launched))))
			goto fail;
		if (!(rt->probe = sl_kafka_lag_probe_new(cfg->kafka_brokers, group, errstr,
							 errlen))) {
			err = SL_ERR_CONFIG;
			goto fail;
		}
		max_workers += (size_t)rt->pc->max;
	}
	a->scratch_cap = AUTOSCALER_REGISTRY_MAX + max_workers;
	if (!(a->reg = calloc(1, sizeof(*a->reg))) ||
	    !(a->scratch = calloc(a->scratch_cap, sizeof(*a->scratch))))
		goto fail;
	if (!(a->producer = sl_kafka_producer_new(cfg->kafka_brokers, 5, NULL, NULL, errstr,
						  errlen))) {
		err = SL_ERR_CONFIG;
		goto fail;
	}
	if ((err = wait_for("redis", stop, connect_redis, a, errstr, errlen)) != SL_OK ||
	    (err = wait_for("kafka topics", stop, ensure_topics, a, errstr, errlen)) != SL_OK)
		goto fail;
	wait_lag_readable(a, stop);
	for (size_t p = 0; p < a->pools.n; p++)
		SL_INFO("pool %s: queue %s, backend %s, %d..%d workers of %d slots, %d per worker",
			a->rt[p].pc->name, a->rt[p].pc->queue,
			autoscaler_backend_name(a->rt[p].pc->backend), a->rt[p].pc->min,
			a->rt[p].pc->max, a->rt[p].pc->slots, a->rt[p].pc->target_per_worker);
	*errp = SL_OK;
	return a;
fail:
	*errp = err;
	autoscaler_destroy(a);
	return NULL;
}

void autoscaler_destroy(struct autoscaler *a)
{
	if (!a)
		return;
	for (size_t p = 0; p < AUTOSCALER_MAX_POOLS; p++) {
		sl_kafka_lag_probe_destroy(a->rt[p].probe);
		free(a->rt[p].launched);
	}
	sl_kafka_producer_destroy(a->producer);
	if (a->process)
		a->process->ops->destroy(a->process);
	sl_state_destroy(a->st);
	free(a->reg);
	free(a->scratch);
	free(a);
}
