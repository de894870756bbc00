/* planner.h - the planner's parts and the state they share (one struct, owned by main). */
#ifndef SLUICE_PLANNER_H
#define SLUICE_PLANNER_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/flow.h"
#include "sluice/kafka.h"
#include "sluice/state.h"
#include "sluice/v1/sluice.pb-c.h"

struct planner_config {
	char *kafka_brokers;
	char *redis_url;
	char *flows_dir;
	char *log_level;
	char *group;
	long lease_ttl_ms;
	long timer_interval_ms;
	long partitions;
	long max_output;
	long reap_interval_ms;    /* reaper.c */
	long dispatch_timeout_ms;
	long lease_grace_ms;
	long reap_max_lost;
	char *http; /* health/metrics listen address, "" = off (main.c) */
	int schedules; /* schedule.c */
};

/* A run's flow snapshot and bound parameters, cached so results need no re-parse. */
struct planner_run {
	char id[96];
	char intent[16];
	struct sl_flow *flow; /* parsed from the run's snapshot */
	json_t *params;
	uint64_t used;        /* LRU clock */
};

struct sl_metric; /* sluice/health.h */

#define PLANNER_RUN_CACHE 128
#define PLANNER_MAX_QUEUES 64
/* Dispatches: a lone one (a chain's next hop) leaves at once; those that follow while one is
 * unacknowledged are held and then leave together (a fan-out), lingering this many ms so that
 * they share one request. */
#define PLANNER_DISPATCH_LINGER_MS 5
/* Run events are for people and dashboards: they linger this long so that a chain's events
 * share a broker request instead of adding one to every hop (measured in docs/performance.md,
 * "Levers applied"). */
#define PLANNER_EVENTS_LINGER_MS 25

/* How many tasks of a chain a dispatch carries at most (ADR 31): a chain of carriable tasks
 * crosses the broker once per this many + 1, and each dispatch nests this many encoded
 * dispatches (about 150 bytes each for a noop). */
#define PLANNER_CARRY_DEPTH 8

struct planner {
	struct planner_config cfg;
	struct sl_kafka_producer *producer;   /* ordered: requests, cached results, dead letters */
	struct sl_kafka_producer *dispatcher; /* unordered: task dispatches */
	struct sl_kafka_producer *events;     /* ordered, lingering: run events */
	struct sl_kafka_consumer *consumer;
	struct sl_state *state;
	struct planner_flows *flows;
	struct planner_run cache[PLANNER_RUN_CACHE];
	uint64_t clock;
	char *queues[PLANNER_MAX_QUEUES]; /* task topics known to exist */
	size_t nqueues;
	/* /metrics counter of nodes started in their upstream's result round trip (ADR 30);
	 * borrowed from main's health object, NULL-safe */
	struct sl_metric *started_with_result;
	struct sl_metric *carried; /* nodes started that a worker runs carried (ADR 31) */
};

/* config.c */
extern const struct sl_config_entry planner_config_table[];

/* flows.c: the flows of flows-dir, by name. */
struct planner_flows *planner_flows_load(const char *dir);
const struct sl_flow *planner_flows_get(struct planner_flows *f, const char *name);
size_t planner_flows_count(struct planner_flows *f);
/* The i-th flow (0 <= i < count), borrowed; NULL past the end. */
const struct sl_flow *planner_flows_at(struct planner_flows *f, size_t i);
void planner_flows_destroy(struct planner_flows *f);

/* runs.c: run requests and cancellation. */
enum sl_err planner_on_run_request(struct planner *p, const rd_kafka_message_t *msg);
enum sl_err planner_on_control(struct planner *p, const rd_kafka_message_t *msg);
/* The cached run (loaded from Redis on a miss); NULL when unknown or unusable. */
struct planner_run *planner_run_get(struct planner *p, const char *run_id);
void planner_runs_clear(struct planner *p);

/* expand.c: starting nodes and (re-)dispatching instances. */
/* Starts the named nodes of run and, transitively, nodes that finish at once (empty maps). */
enum sl_err planner_start_nodes(struct planner *p, struct planner_run *run, char **names,
				size_t n);
/* Publishes the FAILED RunEvent of run with the error recorded on it. */
void planner_run_failed_event(struct planner *p, const char *run, const char *flow);
/* Makes sure topic sluice.tasks.<queue> exists. */
enum sl_err planner_ensure_queue(struct planner *p, const char *queue);
/* Re-dispatches retries that are due. */
enum sl_err planner_on_timers(struct planner *p);

struct planner_result;
/* The start of the node a result lets run, made in the result's own round trip (ADR 30): a
 * chain's hop then waits for one durable write on the planner's side, not two. */
struct planner_spec;
/* Prepares, before r is applied, the start of the first task whose only upstream is r's
 * task, when r can end that node SUCCEEDED by itself (a task of one instance): its gate
 * passed with no upstream failed or skipped, its expansion and first chunk encoded with r's
 * output as its upstream's. NULL when r is of another kind or the node cannot be prepared
 * so (it then starts the usual way once ready; its own errors show there). Free with
 * planner_spec_free(). */
struct planner_spec *planner_spec_new(struct planner *p, const struct planner_result *r);
/* Fills *in (borrowing from s) with the start to send along with s's result; 0 when it was
 * sent and answered already. */
int planner_spec_to_send(const struct planner_spec *s, struct sl_node_start_in *in);
/* Records the start's answer (*tr moved into s). */
void planner_spec_answered(struct planner_spec *s, struct sl_transition *tr);
/* The node's name when its start was answered "started" (dispatch it), else NULL. */
const char *planner_spec_started(const struct planner_spec *s);
/* Dispatches the instances of a node whose start was answered "started", writing and
 * dispatching the rest of a big one chunk by chunk, or nothing for a carried one (its
 * worker runs it already); once (later calls do nothing). */
enum sl_err planner_spec_dispatch(struct planner *p, struct planner_spec *s);
void planner_spec_free(struct planner_spec *s);

/* reaper.c: re-dispatches lost instances, starts ready nodes nobody started. */
enum sl_err planner_reap(struct planner *p);
/* Exits with status 137 when SLUICE_FAULT_CRASH_AT names this point (for the fault suite;
 * SLUICE_FAULT_CRASH_AFTER=N crashes at the Nth pass instead of the first). */
void planner_fault_point(const char *name);

/* limits.c: concurrency limits per tag (see the file's comment). */
/* Records the tags of t that have a flow-level limit, before its instances are dispatched. */
enum sl_err planner_limits_prepare(struct planner *p, struct planner_run *run,
				   const struct sl_flow_task *t);
/* Re-dispatches instances that waited for a slot of a full tag, once slots free. */
enum sl_err planner_limits_wake(struct planner *p);

/* cache.c: `cache:` of tasks. */
/* Returns 1 when instance in (of task t, not yet dispatched) was served from the cache: its
 * TaskResult is published and it must not be dispatched; 0 to dispatch it. */
int planner_cache_hit(struct planner *p, struct planner_run *run, const struct sl_flow_task *t,
		      const struct sl_expand_ctx *ctx, const struct sl_instance *in);
/* Stores the output of an applied SUCCEEDED result of a cached task (res borrowed). */
void planner_cache_store(struct planner *p, struct planner_run *run,
			 const Sluice__V1__TaskResult *res);

/* schedule.c: fires due ticks of the flows' `schedule:` (rate-limited inside: call it on every
 * pass of the main loop). Returns the last failure, logged already. */
enum sl_err planner_on_schedules(struct planner *p);

/* results.c: task results, one by one or in batches (main.c drains the consumer and applies
 * the results of one drain with one pipelined Redis call). */

/* Messages taken per loop turn at most (main.c). */
#define PLANNER_BATCH_MAX 500

/* One TaskResult of a batch, decoded; clear with planner_result_clear(). */
struct planner_result {
	const rd_kafka_message_t *msg; /* borrowed */
	Sluice__V1__TaskResult *res;   /* owned */
	struct planner_run *run;       /* borrowed from the run cache */
	size_t task_index;             /* of res->task in run->flow */
	const char *status;            /* SUCCEEDED, FAILED, TIMED_OUT, CANCELLED */
	struct sl_result_in in;        /* strings borrowed from res */
	struct sl_transition tr;       /* once applied */
	enum sl_err err;               /* of the last apply: SL_OK once applied */
	int applied;
	int followed; /* logs and events done (planner_result_follow_up) */
	int last;     /* the last result of msg (a batch has several, ADR 20): store its offset */
	struct planner_spec *spec; /* owned: the next node's start sent with it, or NULL */
	int spec_tried;            /* planner_spec_new() was asked */
};

/* Applies one result (the whole path: decode, dead letters, unknown runs, follow-ups). */
enum sl_err planner_on_result(struct planner *p, const rd_kafka_message_t *msg);
/* Decodes msg (borrowed; it must outlive r) into r[0..k) for a batch and returns k: 1 for a
 * result, up to SL_BATCH_MAX for a batched TaskResult (r must have room for that many), each
 * to be applied with planner_results_apply(); 0 (r cleared) when msg must go through
 * planner_on_result() alone (undecodable, unknown task, or its run not in the cache: loading
 * a run may evict another that the batch points to). */
size_t planner_result_prepare(struct planner *p, const rd_kafka_message_t *msg,
			      struct planner_result *r);
/* Applies r[0..n) not applied yet, in order, with one pipelined Redis call per 512: sets
 * their err, tr and applied. Returns SL_OK or the first failure (retry the call for the ones
 * not applied). */
enum sl_err planner_results_apply(struct planner *p, struct planner_result *r, size_t n);
/* After r was applied: logs, events, cache store (once), then starts the nodes it made ready.
 * Call it again on a retriable failure: it only starts the nodes again (idempotent). */
enum sl_err planner_result_follow_up(struct planner *p, struct planner_result *r);
void planner_result_clear(struct planner_result *r);

/* events.c: RunEvent publishing (best effort: an event lost is logged, not retried). */
void planner_event_run(struct planner *p, const char *run, const char *flow, const char *state,
		       const char *message);
void planner_event_task(struct planner *p, const char *run, const char *flow, const char *task,
			int idx, unsigned attempt, const char *state, const char *message);

#endif
