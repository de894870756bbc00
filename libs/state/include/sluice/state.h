/* state.h - run state, task instances, leases and worker registry in Redis; every state
 * transition is a Lua script (EVALSHA), never a read-modify-write from C.
 *
 * Key layout (all keys of one run share the hash tag {run_id}):
 *   sluice:{R}:run              HASH  id flow state params intent source created_ms ended_ms
 *                                     nodes_left tasks_total tasks_done error requested_by
 *                                     nodes_failed
 *   sluice:{R}:node:<task>      HASH  state deps_left total done down (comma list) max_attempts
 *                                     failed up_failed up_skipped ended_ms reason
 *   sluice:{R}:ti:<task>:<idx>  HASH  state attempt max_attempts output error exit_code worker
 *                                     started_ms finished_ms queued_ms retry_delays (comma list
 *                                     of ms) lease_call (id of the lease_acquire call that took
 *                                     the lease, until the instance ends); values kept within
 *                                     64 bytes (but outputs and errors) so the hash stays a
 *                                     listpack
 *   sluice:{R}:disp:<task>      HASH  map index -> TaskDispatch bytes, while the instance can
 *                                     still be (re-)sent; the field goes when it ends, the
 *                                     hash when the run ends
 *   sluice:{R}:lease:<task>:<idx> STRING "<worker>:<attempt>" with PX
 *   sluice:runs                 ZSET  run id -> created_ms (global index)
 *   sluice:idem:<key>           STRING run id
 *   sluice:timers               ZSET  "<R>|<task>|<idx>|<attempt>" -> due ms (retries)
 *   sluice:workers              ZSET  worker id -> last heartbeat ms
 *   sluice:worker:<id>          HASH  queue slots busy pid host started_ms draining
 *   sluice:watch:<flow>         HASH  content sha256 -> run id (watcher cursors)
 *   sluice:sched:{<flow>}:last  STRING ms of the last schedule tick handled (planner schedule.c)
 *   sluice:sched:{<flow>}:claim STRING planner replica firing the ticks after it, with PX
 *   sluice:{R}:leases           SET   lease keys held in the run (run_cancel deletes them)
 *   sluice:{R}:limits           HASH  task -> "tag=limit,..." its concurrency tags
 *   sluice:sem:<tag>            ZSET  "<R>|<task>|<idx>|<attempt>" -> slot expiry ms
 *   sluice:semwait:<tag>        ZSET  same holders -> us they started waiting (FIFO)
 *   sluice:semtags              HASH  tag -> limit, for tags that have waiters
 *   sluice:cache:<flow>:<sha256> STRING JSON {output, run, task, created_ms}, PX cache_ttl
 * <idx> is the map index, -1 for an unmapped task.
 */
#ifndef SLUICE_STATE_H
#define SLUICE_STATE_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

struct sl_state;

/* Connects to url (redis://host:port[/db]) and loads the Lua scripts. One connection:
 * use one sl_state per thread. Returns NULL and fills errstr on error. */
struct sl_state *sl_state_new(const char *url, char *errstr, size_t errlen);

/* Closes the connection. Accepts NULL. */
void sl_state_destroy(struct sl_state *st);

/* The underlying connection for plain reads (HGETALL, ZREVRANGE ...), borrowed.
 * Reconnects first if the connection was lost; returns NULL if that fails. */
redisContext *sl_state_redis(struct sl_state *st);

/* Runs a command (printf-style, hiredis format) with one reconnect-and-retry on a connection
 * error. Returns the reply (caller frees with freeReplyObject) or NULL. */
redisReply *sl_state_command(struct sl_state *st, const char *fmt, ...);
redisReply *sl_state_commandargv(struct sl_state *st, int argc, const char **argv,
				 const size_t *argvlen);

/* ---- leases (worker side) ---- */

/* Takes the lease of instance (run, task, idx) for attempt: succeeds only when the
 * instance's current attempt is `attempt` and it is DISPATCHED; marks it RUNNING with worker
 * and started_ms. With the lease it takes one slot of each concurrency tag of the task (see
 * sl_state_limits_set()), renewed and released with the lease. One script call; two for a
 * task with concurrency tags (the first answers them). A call made again after its reply
 * was lost gets SL_OK again; any other call for a lease the worker holds already (a copy of
 * a dispatch it runs or ran, whose result is not recorded yet) gets SL_ERR_STALE, so that
 * no attempt runs twice. Returns SL_OK, SL_ERR_STALE (the dispatch is outdated: drop it),
 * SL_ERR_BUSY (someone holds it, or a tag is full: the instance is now WAITING_SLOT and the
 * planner re-dispatches it when a slot frees; drop the dispatch either way), or
 * SL_ERR_REDIS. */
enum sl_err sl_state_lease_acquire(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker, long ttl_ms);

/* One lease of sl_state_lease_acquire_many(): run and task borrowed; err is set. */
struct sl_lease_req {
	const char *run;
	const char *task;
	int idx;
	unsigned attempt;
	long ttl_ms;
	/* The worker's queue, or NULL: the instance leaves the queue's index of waiting
	 * dispatches (sl_state_queued_add) whatever the answer, since it is fetched now. */
	const char *queue;
	enum sl_err err; /* out: what sl_state_lease_acquire() would return for it */
};

/* Takes the leases of reqs[0..n) for worker, each exactly as sl_state_lease_acquire() would
 * (same script, same replies), in one pipelined round trip for the whole batch (the scripts,
 * which Redis runs and fsyncs together), in the order given; the calls of tasks with
 * concurrency tags are answered their tags and made once more in a second one (a second
 * request for an instance in the same batch is a copy: SL_ERR_STALE). A call without a
 * usable reply (connection lost, NOSCRIPT, a script error) is made again on its own,
 * reconnecting and reloading the scripts, as the same call (it gets SL_OK again if the first
 * one took the lease); once that fails, the calls after it fail too without being tried.
 * Returns SL_OK, or the first error that is not a lease answer (then some reqs[i].err are
 * SL_ERR_REDIS). */
enum sl_err sl_state_lease_acquire_many(struct sl_state *st, const char *worker,
					 struct sl_lease_req *reqs, size_t n);

/* Indexes instances idx[0..n) of (run, task), just dispatched to queue, as waiting for a
 * worker (sorted set "sluice:queued:<queue>", scored by now_ms), so that a worker of the queue
 * whose slots idle can take them while they wait in another worker's partitions (ADR 23).
 * A lease asked for with the queue (sl_lease_req.queue) takes the instance out again.
 * Returns SL_OK, SL_ERR_REDIS or SL_ERR_NOMEM. */
enum sl_err sl_state_queued_add(struct sl_state *st, const char *queue, const char *run,
				const char *task, const int *idx, size_t n, int64_t now_ms);

/* Calls each(bytes, len, ud) for the stored TaskDispatch of up to max instances of queue's
 * index that still wait (state DISPATCHED), among its scan oldest entries, and drops the
 * entries that wait no more. bytes are borrowed for the call. The caller takes them with
 * their leases, which decide who runs each. Returns SL_OK or SL_ERR_REDIS. */
enum sl_err sl_state_queued_scan(struct sl_state *st, const char *queue, int scan, int max,
				 void (*each)(const void *bytes, size_t len, void *ud),
				 void *ud);

/* Extends the lease if it is still "<worker>:<attempt>". Returns SL_OK, SL_ERR_STALE when
 * the lease is lost (stop the task), or SL_ERR_REDIS. */
enum sl_err sl_state_lease_renew(struct sl_state *st, const char *run, const char *task,
				 int idx, unsigned attempt, const char *worker, long ttl_ms);

/* Deletes the lease if it is still ours. */
enum sl_err sl_state_lease_release(struct sl_state *st, const char *run, const char *task,
				   int idx, unsigned attempt, const char *worker);

/* ---- worker registry ---- */

/* Registers or refreshes worker id (heartbeat): queue, slots and busy count. */
enum sl_err sl_state_worker_heartbeat(struct sl_state *st, const char *id, const char *queue,
				      int slots, int busy, int pid);

/* Sets *draining to 1 when a drain was requested for worker id. */
enum sl_err sl_state_worker_draining(struct sl_state *st, const char *id, int *draining);

/* Asks worker id to drain (stop taking work, finish, exit). SL_ERR_NOT_FOUND when the
 * worker is not registered (it has gone already). */
enum sl_err sl_state_worker_request_drain(struct sl_state *st, const char *id);

/* Removes worker id from the registry. */
enum sl_err sl_state_worker_deregister(struct sl_state *st, const char *id);

/* ---- runs (planner side) ---- */

/* One task node of a new run. */
struct sl_run_node {
	const char *name;
	int ndeps;        /* number of upstream tasks */
	const char *down; /* comma list of downstream task names ("" for none) */
	int max_attempts; /* retries + 1 */
};

struct sl_run_new {
	const char *run_id;
	const char *flow;
	const char *params_json;
	const char *intent;
	const char *source; /* the flow YAML snapshot */
	size_t source_len;
	const char *idem_key; /* NULL or "" for none */
	const char *requested_by;
	const char *trace_id;
	const char *tasks_csv; /* task names in topological order, comma-separated */
	const struct sl_run_node *nodes;
	size_t nnodes;
	int64_t now_ms;
};

/* Records a new RUNNING run with its nodes (all WAITING). Returns SL_OK when created;
 * SL_ERR_EXISTS when the run id is known already (a redelivered request: dup_of = "") or
 * the idempotency key maps to an earlier run (dup_of = its id; the new id is recorded as
 * DUPLICATE pointing there). */
enum sl_err sl_state_run_create(struct sl_state *st, const struct sl_run_new *rn, char *dup_of,
				size_t dup_cap);

/* Records a refused request as a REJECTED run with its error (no-op if the run exists). */
enum sl_err sl_state_run_reject(struct sl_state *st, const char *run, const char *flow,
				const char *error, int64_t now_ms);

/* Ends a RUNNING run as CANCELLED. SL_ERR_STALE when it had ended or is unknown. */
enum sl_err sl_state_run_cancel(struct sl_state *st, const char *run, const char *reason,
				int64_t now_ms);

/* Ends a RUNNING run as FAILED with error. SL_ERR_STALE when it had ended or is unknown. */
enum sl_err sl_state_run_fail(struct sl_state *st, const char *run, const char *error,
			      int64_t now_ms);

/* What a transition did: outcome word, the run's state after it, and the nodes that
 * became ready (their upstreams are all done). Clear with sl_transition_clear(). */
struct sl_transition {
	char outcome[16];
	char run_state[16];
	char **ready;
	size_t nready;
};
void sl_transition_clear(struct sl_transition *t);

/* One instance to create: map index and its encoded TaskDispatch (borrowed). */
struct sl_ti_new {
	int idx;
	const void *dispatch;
	size_t len;
};

/* Starts node task: WAITING -> ACTIVE with total instances and creates the n given
 * (DISPATCHED, attempt 1): the first 1000 with the start, the rest with sl_state_ti_add().
 * Until all total instances are written the node stays in the reaper's pending index
 * (sl_state_reap_nodes()), so a planner dying half-way leaves a node that the next start
 * resumes. outcome: "started"; "resume" when it had started but fewer than total instances
 * are written (the given ones were added; write the others with sl_state_ti_add());
 * "finished" when total == 0 (ready nodes and run state as after a completion); "stale" when
 * it had started already; "ended" when the run is no longer RUNNING. */
enum sl_err sl_state_node_start(struct sl_state *st, const char *run, const char *task,
				size_t total, int max_attempts, const struct sl_ti_new *tis,
				size_t n, int64_t now_ms, struct sl_transition *out);

/* Adds n instances to ACTIVE node task, 1000 per script call (each call atomic by itself, so
 * Redis is never blocked for long); instances that exist already are left as they are.
 * When created is not NULL, *created (caller frees) gets the map indexes this call created,
 * in order, and *ncreated their count. SL_ERR_STALE when the node is not ACTIVE or the run
 * has ended. */
enum sl_err sl_state_ti_add(struct sl_state *st, const char *run, const char *task,
			    int max_attempts, const struct sl_ti_new *tis, size_t n,
			    int64_t now_ms, int **created, size_t *ncreated);

/* Ends WAITING node task without running it, in state SKIPPED, UPSTREAM_FAILED or FAILED
 * (reason says why; for FAILED it becomes the run's error unless it has one, so it should
 * name the task). Records instance -1 in that state with the reason. outcome as for
 * sl_state_node_start(): "finished" (ready nodes, run state), "stale" or "ended". */
enum sl_err sl_state_node_end(struct sl_state *st, const char *run, const char *task,
			      const char *state, const char *reason, int64_t now_ms,
			      struct sl_transition *out);

/* A result to apply; strings borrowed. status: SUCCEEDED|FAILED|TIMED_OUT|CANCELLED. */
struct sl_result_in {
	const char *run;
	const char *task;
	int idx;
	unsigned attempt;
	const char *status;
	const char *output; /* JSON text */
	size_t output_len;
	const char *error;
	int exit_code;
	const char *worker;
	int64_t started_ms;
	int64_t finished_ms;
	int64_t now_ms;
	long retry_delay_ms; /* used when the failure is retried */
};

/* Applies a result once, fenced by attempt. outcome: "applied", "node_done" (the node ended
 * SUCCEEDED or FAILED once all its instances ended; ready nodes listed; run_state FAILED or
 * SUCCEEDED when the run ended with it), "retry" (scheduled after retry_delay_ms, which is
 * appended to the instance's retry_delays), "stale" (ignored). */
enum sl_err sl_state_result_apply(struct sl_state *st, const struct sl_result_in *res,
				  struct sl_transition *out);

/* Results per result_apply script call at most (ADR 26): a planner batch (500 messages' worth
 * at most) is one or two calls. Redis reads a client's input 16 KB per event-loop turn and
 * fsyncs (appendfsync always) after each turn that completed a write, so every call of a
 * pipeline costs a turn with its fsync; 512 noop results hold Redis for about 8 ms. */
#define SL_RESULTS_PER_CALL 512

/* Applies n results as sl_state_result_apply() does, up to SL_RESULTS_PER_CALL in one script
 * call (which reads and writes the counters of the run and the node once for all of them),
 * the calls pipelined: one round trip for the batch. Results settle in the
 * order given, each as it would in a call of its own (two results of one instance too).
 * out[i] (n entries, clear each with sl_transition_clear()) and errs[i] get call i's
 * transition and status (SL_OK, SL_ERR_REDIS: not known to be applied, apply it again).
 * Returns SL_OK when every call succeeded, else the first failure. */
enum sl_err sl_state_result_apply_many(struct sl_state *st, const struct sl_result_in *res,
				       size_t n, struct sl_transition *out, enum sl_err *errs);

/* A node start made in the round trip of results (ADR 30): node_start as
 * sl_state_node_start() makes it, guarded: the node starts only if, once the results are
 * applied, it is WAITING with no upstream left and none failed or skipped (its expansion,
 * made before the results were applied, assumed exactly that); otherwise its outcome is
 * "unready" and nothing changed. Strings and instances borrowed. */
struct sl_node_start_in {
	const char *run;
	const char *task;
	size_t total;
	int max_attempts;
	const struct sl_ti_new *tis; /* n instances; the first 1000 go with the start */
	size_t n;
	int64_t now_ms;
};

/* sl_state_result_apply_many() with the guarded starts starts[0..nstarts) in the same
 * pipeline, start j right after result after[j] (nondecreasing, < n), before the results
 * that follow it (a carried task's own result may, ADR 31): one round trip and, read by
 * Redis in one event-loop turn, one fsync where a result and the start it allows would take
 * two in sequence. start_out[j] (clear with
 * sl_transition_clear()) and start_errs[j] get start j's transition ("started", "unready",
 * "ended", "stale") and status; the instances of a started node past its first 1000 are
 * written after the round trip (sl_state_ti_add()). Returns SL_OK when every call succeeded,
 * else the first failure. */
enum sl_err sl_state_result_apply_starting(struct sl_state *st, const struct sl_result_in *res,
					   size_t n, struct sl_transition *out, enum sl_err *errs,
					   const struct sl_node_start_in *starts, const size_t *after,
					   size_t nstarts, struct sl_transition *start_out,
					   enum sl_err *start_errs);

/* A retry that is due: the instance is DISPATCHED again with attempt; dispatch holds the
 * stored TaskDispatch bytes (of an earlier attempt: re-encode with the new attempt). */
struct sl_due {
	char *run;
	char *task;
	int idx;
	unsigned attempt;
	void *dispatch;
	size_t len;
};

/* Pops up to limit due retries. *out (caller frees with sl_due_free()) holds *n entries. */
enum sl_err sl_state_timers_due(struct sl_state *st, int64_t now_ms, int limit,
				struct sl_due **out, size_t *n);
void sl_due_free(struct sl_due *due, size_t n);

/* ---- reaper (planner side, see docs/guarantees.md) ----
 * sluice:active  ZSET instance key -> last change or check ms (DISPATCHED/RUNNING/RETRY_WAIT)
 * sluice:pending ZSET node key -> ms it became ready (until node_start)
 * Both are maintained by the transition scripts and pruned by the reaper. */

struct sl_reap_opts {
	long settle_ms;           /* members changed less than this ago are not looked at */
	long dispatch_timeout_ms; /* a DISPATCHED instance without a lease for this long is
				   * re-sent (doubled per earlier re-send of that instance) */
	long lease_grace_ms;      /* a RUNNING instance without a lease for this long is
				   * re-sent */
	int max_lost;             /* lost executions after which the run fails */
	int limit;                /* instances looked at per call */
};

/* An instance the reaper made DISPATCHED again with a new attempt. reason is
 * "dispatch_lost", "lease_lost" or "lost_too_often" (the run was failed; len == 0). */
struct sl_reaped {
	char *run;
	char *task;
	int idx;
	unsigned attempt;
	void *dispatch; /* stored TaskDispatch bytes of an earlier attempt: re-encode */
	size_t len;
	char reason[24];
};

/* Pops instances whose dispatch or execution was lost and re-dispatches them in Redis with
 * attempt+1. *out (caller frees with sl_reaped_free()) holds *n entries; the caller must
 * produce them. Safe to call from every planner at once (one Lua script). */
enum sl_err sl_state_reap_instances(struct sl_state *st, int64_t now_ms,
				    const struct sl_reap_opts *o, struct sl_reaped **out,
				    size_t *n);
void sl_reaped_free(struct sl_reaped *r, size_t n);

/* A node that is ready but was never started. */
struct sl_ready_node {
	char *run;
	char *task;
};

/* Nodes that became ready more than settle_ms ago and are still WAITING. *out (caller
 * frees with sl_ready_nodes_free()) holds *n entries; start them with node_start, which
 * is idempotent. */
enum sl_err sl_state_reap_nodes(struct sl_state *st, int64_t now_ms, long settle_ms, int limit,
				struct sl_ready_node **out, size_t *n);
void sl_ready_nodes_free(struct sl_ready_node *r, size_t n);

/* The stored TaskDispatch bytes of instance (run, task, idx) (of an earlier attempt:
 * re-encode with the current one), read only while it is in state at attempt. *out (caller
 * frees with free()) holds *len bytes on SL_OK. SL_ERR_STALE when the instance moved on or has
 * no dispatch stored (it ended); SL_ERR_REDIS. */
enum sl_err sl_state_ti_dispatch(struct sl_state *st, const char *run, const char *task, int idx,
				 const char *state, unsigned attempt, void **out, size_t *len);

/* ---- concurrency limits and cache (planner side) ---- */

#define SL_STATE_MAX_TAGS 8

/* Records the concurrency tags of task in run as spec "tag=limit,..." (at most
 * SL_STATE_MAX_TAGS; "" for none). Workers read it when they take the task's lease. */
enum sl_err sl_state_limits_set(struct sl_state *st, const char *run, const char *task,
				const char *spec);

/* Hands free slots of every tag with waiters to the oldest of them that still wait (run
 * RUNNING, instance WAITING_SLOT at that attempt): each becomes DISPATCHED again with its slot
 * reserved for reserve_ms. *out (caller frees with sl_state_strv_free()) holds *n holders
 * "<R>|<task>|<idx>|<attempt>" to re-dispatch; one that cannot be must be given back with
 * sl_state_sem_unreserve() (or its reservation lapses). */
enum sl_err sl_state_sem_wake(struct sl_state *st, long reserve_ms, char ***out, size_t *n);

/* Frees the slots reserved for holder "<R>|<task>|<idx>|<attempt>". */
enum sl_err sl_state_sem_unreserve(struct sl_state *st, const char *holder);

/* Frees v[0..n) and v. Accepts NULL. */
void sl_state_strv_free(char **v, size_t n);

#endif
