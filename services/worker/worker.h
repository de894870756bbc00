/* worker.h - the parts of sluice-worker (config, lifecycle, consume, slots, run, builtins,
 * result, lease, registry) and the one struct they share. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/health.h"
#include "sluice/kafka.h"
#include "sluice/v1/sluice.pb-c.h"

#define WORKER_ID_MAX 128      /* worker id (flag or generated) */
#define WORKER_QUEUE_MAX 100   /* queue name: it becomes part of a topic name */
#define WORKER_RUN_ID_MAX 128  /* run ids become directory names under work-dir */
#define WORKER_TASK_MAX 256    /* task names */
#define WORKER_ERROR_MAX 1024  /* error text of a result */
#define WORKER_MAX_SLOTS 256
#define WORKER_PREFETCH_MAX 16 /* fetched dispatches that may wait for a slot, unleased */
#define WORKER_PENDING_MAX 32  /* room for them plus what keepalive polls bring */
#define WORKER_POLL_KEEPALIVE_MS 1000L /* with every slot busy, the consumer is polled this often */
#define WORKER_TOPIC_PARTITIONS 8
#define WORKER_DEFAULT_MAX_OUTPUT (1024 * 1024)
/* Results go through an unordered producer (sl_kafka_producer_new_unordered): a lone one
 * leaves at once; those that follow while one is unacknowledged are held and then leave
 * together, lingering this many ms so that they share one request. SLUICE_KAFKA_LINGER_MS
 * overrides. */
#define WORKER_PRODUCER_LINGER_MS 5
#define WORKER_MIN_LEASE_TTL_MS 300L
#define WORKER_BACKOFF_MIN_MS 100L
#define WORKER_BACKOFF_MAX_MS 5000L
#define WORKER_LEASE_AHEAD_MAX 16 /* --lease-ahead's upper bound */
/* Taking dispatches that wait in other workers' partitions (ADR 23): after this long with
 * free slots and nothing fetched, looking at most at the queue's WORKER_TAKE_SCAN oldest
 * waiting dispatches for up to WORKER_TAKE_MAX; finding none, looking again twice as late,
 * up to WORKER_TAKE_WAIT_MAX_MS. */
#define WORKER_TAKE_IDLE_MS 20L
#define WORKER_TAKE_WAIT_MAX_MS 1000L
#define WORKER_TAKE_SCAN 64
#define WORKER_TAKE_MAX 16
/* Instances whose slot task ended here, remembered so that a late copy of their dispatch
 * (fetched after the worker took it from Redis, or redelivered) is not run again while the
 * planner has not yet recorded the result: the lease still names this worker. */
#define WORKER_RECENT_MAX 64

/* ---- config.c ---- */

struct worker_config {
	char *kafka_brokers;
	char *redis_url;
	char *queue;
	long slots;
	long lease_ttl_ms;
	char *id;
	long heartbeat_ms;
	char *log_level;
	char *work_dir;
	long kill_grace_ms;
	char *http; /* health/metrics listen address, "" = off */
	long drain_timeout_ms; /* after SIGTERM: running tasks get this long, then are handed back */
	long lease_ahead;      /* dispatches leased while every slot is busy (0-16) */
	long lease_batch;      /* ...once at least this many can be leased in one call */
};

extern const struct sl_config_entry worker_config_table[];

/* Checks what the table cannot (ranges, names) and fills in the generated id when none was
 * given. Returns SL_ERR_CONFIG and fills errstr. */
enum sl_err worker_config_finish(struct worker_config *cfg, char *errstr, size_t errlen);

/* ---- worker.c: lifecycle ---- */

/* One executor thread and the task instance it holds. The fields below `lock:` are guarded
 * by worker.lock; job is set by the consume loop and cleared by the slot thread. */
struct worker_slot {
	struct worker *w; /* borrowed back-pointer */
	int index;
	pthread_t thread;
	int started;
	struct sl_state *st; /* this thread's own Redis connection (hiredis is not thread-safe) */
	/* Signalled (with worker.lock) when a job is given to this slot or the threads quit:
	 * the slot's own, so that a hand-off wakes one thread, not every idle slot. */
	pthread_cond_t wake;
	/* lock: */
	Sluice__V1__TaskDispatch *job; /* owned while held; NULL when the slot is free */
	long ttl_ms;
	int64_t next_renew_ms; /* monotonic */
	unsigned gen;          /* bumped per job, so the lease thread can tell jobs apart */
	int result_out; /* the result is queued: the planner releases the lease */
	/* Set by the lease thread when the lease is lost, or by worker_slot_should_stop() once
	 * stop_by_ms passed: stop the task, publish nothing. */
	atomic_int lost;
	/* Monotonic ms by which the task must be stopped unless a renewal succeeds first: the
	 * lease's expiry (counted from when the acquire or renewal was sent) minus a margin, see
	 * worker_lease_stop_by(). Checked where the task polls for a stop, so an unreachable or
	 * hung Redis cannot keep a task running past its lease. */
	atomic_llong stop_by_ms;
};

/* A dispatch leased while every slot was busy, so that the slot that frees next starts it
 * without a Redis round trip (ADR 22). Guarded by worker.lock; renewed by the lease thread
 * like a slot's job until a slot takes it. */
struct worker_ahead {
	Sluice__V1__TaskDispatch *d; /* owned */
	long ttl_ms;
	int64_t next_renew_ms; /* monotonic */
	int64_t stop_by_ms;    /* as worker_slot.stop_by_ms */
	unsigned gen;          /* worker.ahead_gen when leased, so the lease thread finds it */
};

/* The worker's Prometheus metrics (owned by worker.health; any may be NULL). */
struct worker_metrics {
	struct sl_metric *started, *succeeded, *failed, *stopped, *leases_lost, *taken;
	struct sl_metric *leases_taken, *lease_calls;
	struct sl_metric *dropped, *carried;
	struct sl_metric *busy, *slots, *waiting, *ahead, *draining;
};

struct worker {
	const struct worker_config *cfg;   /* borrowed from main */
	struct sl_health *health;          /* /healthz, /readyz, /metrics (server off if no --http) */
	struct worker_metrics m;
	volatile sig_atomic_t *stop_signals; /* borrowed from main: SIGTERM/SIGINT seen (0-2) */
	char topic[sizeof("sluice.tasks.") + WORKER_QUEUE_MAX]; /* the normal band */
	char topic_high[sizeof("sluice.tasks..high") + WORKER_QUEUE_MAX];
	char topic_low[sizeof("sluice.tasks..low") + WORKER_QUEUE_MAX];
	char group[sizeof("sluice-workers.") + WORKER_QUEUE_MAX];
	struct sl_kafka_producer *producer; /* unordered: results, dead letters */
	struct sl_kafka_consumer *consumer;
	struct sl_state *st;       /* the consume loop's connection */
	struct sl_state *lease_st; /* the lease thread's */
	struct sl_state *reg_st;   /* the registry thread's */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC; broadcast on any slot, delivery or flag change */
	/* CLOCK_MONOTONIC; what the lease and registry threads sleep on between their ticks:
	 * broadcast only to stop them, so that a slot's end wakes the consume loop alone. */
	pthread_cond_t tick;
	int lock_ready;
	struct worker_slot *slots;
	int nslots;
	int nbusy; /* lock */
	/* lock: leased ahead, oldest first (taken in that order); only while every slot is
	 * busy, except after a hard stop, when they wait to be released */
	struct worker_ahead ahead[WORKER_LEASE_AHEAD_MAX];
	int nahead;
	unsigned ahead_gen;
	uint64_t recent[WORKER_RECENT_MAX]; /* lock: hashes of the last instances ended here */
	unsigned nrecent;
	atomic_int draining;        /* take no more dispatches; finish what is held */
	atomic_int drain_requested; /* the registry says drain (set by the registry thread) */
	atomic_int hard_stop;       /* stop tasks now, release their leases, publish nothing */
	int64_t hand_back_at;       /* consume loop: monotonic ms of the drain timeout, 0 = none */
	atomic_int quit;            /* threads leave their loops */
	pthread_t lease_thread, registry_thread;
	int lease_started, registry_started;
};

/* Connects to Kafka and Redis (retrying with backoff until they answer or a stop signal
 * arrives), ensures the topics and creates the clients. cfg and stop_signals are borrowed
 * and must outlive the worker. Returns NULL and fills errstr on error. */
struct worker *worker_new(const struct worker_config *cfg, volatile sig_atomic_t *stop_signals,
			  char *errstr, size_t errlen);

/* Starts the threads, runs the consume loop until drained, stops the threads and
 * deregisters. Returns SL_OK after a clean drain or a hard stop. @locality main thread. */
enum sl_err worker_run(struct worker *w);

/* Closes the consumer (committing stored offsets), flushes the producer, frees everything.
 * Accepts NULL and half-built workers. */
void worker_destroy(struct worker *w);

/* Waits on w->cond for up to ms milliseconds. Call with w->lock held. */
void worker_wait(struct worker *w, long ms);

/* Waits on w->tick (woken only to stop) for up to ms milliseconds. Call with w->lock held. */
void worker_wait_tick(struct worker *w, long ms);

/* Retries sl_state_new() with backoff until it succeeds or a stop signal arrives.
 * Returns NULL only in the latter case. */
struct sl_state *worker_state_connect(struct worker *w, const char *what);

/* ---- consume.c ---- */

/* The Kafka loop: takes the dispatches fetched together, acquires their leases in one
 * pipelined Redis round trip, runs the inline built-ins (noop, echo, sum) itself and hands the
 * others to free slots; pauses the consumer while the buffer is full. Returns once draining
 * and every slot is idle. @locality main thread. */
void worker_consume(struct worker *w);

/* NULL when dispatch d can be run, else why not (it goes to the dead-letter topic). */
const char *worker_dispatch_check(const Sluice__V1__TaskDispatch *d);

/* 1 when d is an inline built-in (noop, echo, sum), which the consume loop runs itself. */
int worker_dispatch_is_inline(const Sluice__V1__TaskDispatch *d);

/* ---- carry.c ---- */

struct worker_outcome;
struct worker_result_batch;

/* The task d carries (its `then`, ADR 31) when this worker runs it now that d ran with
 * *out: d SUCCEEDED, the worker neither drains nor stops, and `then` is a checked inline
 * built-in of d's run that needs no lease. Sets out->then_task to its name then (else "",
 * and the planner dispatches it as usual). Returns it (caller frees, or hands it to
 * worker_carry_run()), or NULL. @locality any thread. */
Sluice__V1__TaskDispatch *worker_carry_take(struct worker *w, const Sluice__V1__TaskDispatch *d,
					    struct worker_outcome *out);

/* Runs next (owned; NULL does nothing) on the calling thread, then what each carries in
 * turn, adding their results to rb, which the caller flushes. @locality consume thread or a
 * slot thread. */
void worker_carry_run(struct worker *w, Sluice__V1__TaskDispatch *next,
		      struct worker_result_batch *rb);

/* ---- slot.c ---- */

/* Slot thread: waits for a job, runs it, publishes its result, releases its lease. */
void *worker_slot_main(void *arg);

/* Initialises slot i of w (before any thread runs); worker_slot_fini() undoes it. */
void worker_slot_init(struct worker *w, int i);
void worker_slot_fini(struct worker_slot *s);

/* Wakes every slot thread (to see w->quit). @locks w->lock held. */
void worker_slots_wake(struct worker *w);

/* Number of free slots. @locks takes w->lock. */
int worker_free_slots(struct worker *w);

/* Returns 1 when some slot or the dispatches leased ahead hold (run, task, idx, attempt)
 * already, or one of the last WORKER_RECENT_MAX slot tasks ended here was it: a copy of it
 * must not run, and is dropped without a lease call (which would answer it "held", as it
 * does older copies). @locks w->lock held. */
int worker_slot_holds(struct worker *w, const Sluice__V1__TaskDispatch *d);

/* How many more dispatches the worker takes now: its free slots, or with every slot busy,
 * worker_ahead_room() (none after a hard stop). @locks takes w->lock. */
int worker_room(struct worker *w);

/* With every slot busy, how many to lease ahead now: the room left (--lease-ahead), or none
 * while that is less than --lease-batch (a refill leases several in one round trip).
 * @locks w->lock held. */
int worker_ahead_room(struct worker *w);

/* Gives d (takes ownership) with its lease ttl, acquired by a request sent at sent_ms
 * (monotonic), to a free slot, or with every slot busy keeps it leased ahead for the slot
 * that frees first. Returns 0, or -1 when there is room for neither (d untouched).
 * @locks takes w->lock. */
int worker_slot_assign(struct worker *w, Sluice__V1__TaskDispatch *d, long ttl_ms,
		       int64_t sent_ms);

/* Removes w->ahead[i] (its dispatch is the caller's now). @locks w->lock held. */
void worker_ahead_drop(struct worker *w, int i);

/* Releases the leases of the dispatches leased ahead and not started (after a hard stop), so
 * that the planner re-dispatches them at once. @locks takes w->lock. @locality consume
 * thread (uses w->st). */
void worker_ahead_release(struct worker *w);

/* ---- run.c ---- */

/* What running one task instance produced. */
struct worker_outcome {
	Sluice__V1__TaskStatus status;
	int exit_code;
	char *output;       /* JSON text or NULL; freed by worker_outcome_clear() */
	char *stderr_tail;  /* NULL when none; freed by worker_outcome_clear() */
	size_t stderr_len;
	char error[WORKER_ERROR_MAX];
	int stopped;        /* stopped on request (lease lost, hard stop): not a result */
	int64_t started_ms; /* wall clock */
	int64_t finished_ms;
	/* The task of the dispatch's `then` this worker runs next (ADR 31), or "": goes in the
	 * result (worker_carry_take() sets it). */
	char then_task[WORKER_TASK_MAX + 1];
};

/* Runs d on the calling slot thread (a builtin in-process, else a command) and fills out.
 * @locality slot thread. */
void worker_run_instance(struct worker_slot *s, const Sluice__V1__TaskDispatch *d,
			 struct worker_outcome *out);

/* Runs the inline built-in d (worker_builtin_is_inline(d->builtin)) on the calling thread
 * and fills out. @locality consume thread, or a slot thread for a carried one (ADR 31). */
void worker_run_inline(const Sluice__V1__TaskDispatch *d, struct worker_outcome *out);

void worker_outcome_clear(struct worker_outcome *out);

/* Returns 1 when the task on slot s must stop (lease lost or hard stop). */
int worker_slot_should_stop(void *slot);

/* ---- builtins.c ---- */

/* Runs builtin name with input (JSON text, borrowed; may be empty) and fills out's status,
 * output and error. run_dir (borrowed, may be NULL) is the run's work dir, absolute; it is
 * created when a builtin writes there (http_get). should_stop(ud) is polled by long
 * builtins (stopped: out->stopped set, nothing kept); deadline_ms (monotonic, 0 = none)
 * makes them TIMED_OUT. Uses libcurl: the process calls curl_global_init() first. */
void worker_builtin_run(const char *name, const void *input, size_t len, const char *run_dir,
			int (*should_stop)(void *), void *ud, int64_t deadline_ms,
			struct worker_outcome *out);

/* Returns 1 for the built-ins the consume loop runs itself (noop, echo, sum: bounded work,
 * no blocking, nothing to renew), 0 for those that need a slot. */
int worker_builtin_is_inline(const char *name);

/* ---- result.c ---- */

/* Encodes out as the TaskResult of d and queues it on sluice.tasks.results (key = run id)
 * without waiting for the delivery report. Returns SL_OK once queued, SL_ERR_KAFKA (logged)
 * when the producer refused it, SL_ERR_NOMEM. @locality any thread. */
enum sl_err worker_result_send(struct worker *w, const Sluice__V1__TaskDispatch *d,
			       struct worker_outcome *out);

/* Results of inline built-ins gathered during one consume turn, sent as batched TaskResults
 * of one run each (ADR 20): a fan-out of noop tasks costs the broker one message per batch,
 * not per task. @locality consume thread. */
struct worker_result_batch {
	char run[WORKER_RUN_ID_MAX + 1];
	ProtobufCBinaryData el[SL_BATCH_MAX]; /* encoded TaskResults, owned */
	size_t n;
	size_t bytes;
};

/* Encodes out as the TaskResult of d and adds it to b, first sending what b holds when d is
 * of another run or b is full. Returns SL_OK, or the error of that send or of the encoding
 * (logged; the results not sent let their leases lapse, and the reaper re-dispatches). */
enum sl_err worker_result_batch_add(struct worker *w, struct worker_result_batch *b,
				    const Sluice__V1__TaskDispatch *d, struct worker_outcome *out);

/* Queues what b holds (one TaskResult as itself, more as one batch) and empties b. */
enum sl_err worker_result_batch_flush(struct worker *w, struct worker_result_batch *b);

/* Queues out as the TaskResult of d on sluice.tasks.results (key = run id) and marks the
 * slot's result as out, without waiting for the delivery report: the planner releases the
 * lease when it records the result. With next (owned: from worker_carry_take()), runs the
 * tasks d carries first and queues their results after d's in the same batched message
 * (ADR 31). Returns SL_OK once queued, SL_ERR_KAFKA (logged) when the producer refused it.
 * @locality slot thread. */
enum sl_err worker_result_publish(struct worker_slot *s, const Sluice__V1__TaskDispatch *d,
				  struct worker_outcome *out, Sluice__V1__TaskDispatch *next);

/* ---- lease.c ---- */

/* Lease thread: renews every held lease each ttl/3; marks a slot lost on SL_ERR_STALE. */
void *worker_lease_main(void *arg);

/* When a task whose lease (ttl_ms) was acquired or renewed by a request sent at sent_ms must
 * be stopped if no renewal succeeds meanwhile: sent_ms + ttl_ms - min(ttl_ms / 3,
 * kill-grace + ttl_ms / 10), so that SIGTERM, and for ttl >= 3 x kill-grace the SIGKILL too,
 * come before the lease can lapse and be handed to another worker. */
int64_t worker_lease_stop_by(const struct worker *w, int64_t sent_ms, long ttl_ms);

/* ---- registry.c ---- */

/* Registry thread: heartbeats every cfg->heartbeat_ms, watches for a drain request and
 * deregisters the worker when it quits. */
void *worker_registry_main(void *arg);

#endif
