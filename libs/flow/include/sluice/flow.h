/* flow.h - flow definitions: YAML parsing (libyaml), parameter binding, templates and the
 * expansion of one task into its instances. Pure: no I/O besides sl_flow_load(). */
#ifndef SLUICE_FLOW_H
#define SLUICE_FLOW_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "sluice/cron.h"
#include "sluice/err.h"

enum sl_param_type {
	SL_PARAM_ANY = 0,
	SL_PARAM_INT,
	SL_PARAM_FLOAT,
	SL_PARAM_STRING,
	SL_PARAM_BOOL,
	SL_PARAM_LIST,
};

struct sl_flow_param {
	char *name;
	enum sl_param_type type;
	json_t *def; /* default value, NULL when the parameter is required */
};

/* Most map keys (zipped lists) one task may have. */
#define SL_FLOW_MAX_MAP_KEYS 64

/* One key of a task's `map:`. Exactly one of literal / source is set. */
struct sl_flow_map_key {
	char *name;
	json_t *literal; /* a YAML sequence, as a JSON array */
	char *source;    /* an expression string: "range(${params.n})", "${tasks.inc.outputs}" */
};

/* When a task whose upstreams have all ended may run. */
enum sl_trigger_rule {
	SL_TRIGGER_ALL_SUCCESS = 0, /* every upstream SUCCEEDED (else SKIPPED / UPSTREAM_FAILED) */
	SL_TRIGGER_ALL_DONE = 1,    /* whatever the upstreams' states: clean-up tasks */
};

/* One `route:` rule. */
struct sl_flow_route {
	char *when;  /* expression text */
	char *queue;
};

enum sl_task_kind {
	SL_TASK_COMMAND = 0,
	SL_TASK_BUILTIN = 1,
};

struct sl_flow_task {
	char *name;
	int line; /* line of the task's key in the YAML (1-based) */
	enum sl_task_kind kind;
	char **argv; /* templates; command tasks */
	size_t argc;
	char *builtin; /* builtin tasks: noop, sleep, echo, sum */
	char *input;   /* template of the JSON input (stdin / builtin argument), or NULL */
	char **env_names;
	char **env_values; /* templates */
	size_t nenv;
	struct sl_flow_map_key *map;
	size_t nmap;
	size_t *deps; /* indexes into flow->tasks: references in templates + `after:` */
	size_t ndeps;
	int retries;        /* extra attempts after the first */
	long retry_delay_ms;
	long timeout_ms;
	char *queue;
	int priority;       /* high = 1, normal = 0, low = -1 */
	long max_output_bytes;
	int cache;          /* `cache:` given and not false */
	char *cache_key;    /* `cache: "<template>"`, or NULL: key on the rendered inputs */
	long cache_ttl_ms;  /* `cache_ttl:`, default SL_FLOW_CACHE_TTL_MS */
	char **tags;        /* `tags:` for concurrency limits */
	size_t ntags;
	/* when:, trigger_rule:, route: and retry_backoff: (see sl_flow_task_gate() below) */
	char *when;                  /* expression text, or NULL: always run */
	enum sl_trigger_rule trigger_rule;
	struct sl_flow_route *route; /* first rule whose `when` is true picks the queue */
	size_t nroute;
	double backoff_factor;       /* retry delay grows by this per attempt; 1 = constant */
	long backoff_max_ms;         /* cap on the grown delay, 0 = none */
	double backoff_jitter;       /* 0..1: the delay is varied by up to this fraction */
};

#define SL_FLOW_CACHE_TTL_MS (24L * 3600 * 1000)
#define SL_FLOW_MAX_TAGS 8

/* One flow-level `concurrency:` entry: at most limit instances holding tag run at once. */
struct sl_flow_limit {
	char *tag;
	int limit;
};

enum sl_schedule_kind {
	SL_SCHEDULE_NONE = 0,
	SL_SCHEDULE_CRON,
	SL_SCHEDULE_EVERY,
};

/* Ticks missed while no planner ran: fire only the most recent (latest), every one (all, at
 * most SL_CATCHUP_MAX), or none of them. */
enum sl_catchup {
	SL_CATCHUP_LATEST = 0,
	SL_CATCHUP_ALL,
	SL_CATCHUP_NONE,
};

#define SL_CATCHUP_MAX 1000
#define SL_SCHEDULE_PARAM "scheduled_at" /* filled with the tick time when declared */

struct sl_flow {
	char *name;
	char *path;   /* file it came from, or "<memory>" */
	char *source; /* the YAML text, NUL-terminated */
	size_t source_len;
	struct sl_flow_param *params;
	size_t nparams;
	struct sl_flow_task *tasks; /* topological order: every task after its deps */
	size_t ntasks;
	char *trigger_dir;  /* trigger.files.dir, NULL when the flow has no file trigger */
	char *trigger_glob; /* trigger.files.glob, default "*" */
	char *description;  /* or NULL */
	struct sl_flow_limit *limits; /* `concurrency:` */
	size_t nlimits;
	/* `schedule:` (docs/flows.md, "Schedules"); schedule_kind is SL_SCHEDULE_NONE without */
	enum sl_schedule_kind schedule_kind;
	struct sl_cron schedule_cron;  /* SL_SCHEDULE_CRON: the parsed expression */
	char *schedule_text;           /* the cron expression or the interval as written */
	long schedule_every_ms;        /* SL_SCHEDULE_EVERY: ticks at multiples since the epoch */
	json_t *schedule_params;       /* object of parameter values for scheduled runs */
	enum sl_catchup catchup;       /* what missed ticks do (default latest) */
};

/* Parses a flow from YAML text (copied). filename is used in messages only.
 * On error returns NULL and writes "<filename>:<line>:<column>: <reason>" into errstr. */
struct sl_flow *sl_flow_parse(const char *yaml, size_t len, const char *filename, char *errstr,
			      size_t errlen);

/* Reads and parses the file at path (at most 1 MiB). Same errors as sl_flow_parse(). */
struct sl_flow *sl_flow_load(const char *path, char *errstr, size_t errlen);

/* Frees everything. Accepts NULL. */
void sl_flow_destroy(struct sl_flow *flow);

/* 1 when builtin name runs inline on a worker's consume thread (noop, echo, sum: bounded
 * by their input, nothing to poll or renew), which is also what the planner may dispatch
 * in batches (ADR 20); sleep, http_get and sha256 run on slots. */
int sl_flow_builtin_is_inline(const char *name);

/* Index of the task called name, or -1. */
ssize_t sl_flow_task_index(const struct sl_flow *flow, const char *name);

/* The name of a parameter type as written in YAML ("int", "list", ...); never NULL. */
const char *sl_param_type_name(enum sl_param_type type);

/* Checks given (a JSON object of parameter values, borrowed; NULL = none) against the
 * flow's params: unknown names, missing required ones and values of the wrong type are
 * errors; a string that parses as the declared type is accepted ("10" for int). On success
 * *out is a new object with every parameter (defaults filled): caller frees with
 * json_decref(). */
enum sl_err sl_flow_bind_params(const struct sl_flow *flow, json_t *given, json_t **out,
				char *errstr, size_t errlen);

/* What a template can see while a task is expanded. */
struct sl_expand_ctx {
	const char *run_id;
	const char *flow;
	const char *intent; /* "normal", "reprocess", "test_subset" */
	json_t *params;     /* bound parameters, borrowed */
	/* Returns the outputs of upstream task `task_index` as a JSON array ordered by map
	 * index (one element for an unmapped task), as a new reference, or NULL when they
	 * are not known. */
	json_t *(*upstream_outputs)(void *ud, size_t task_index);
	void *ud;
	/* The flow whose task names tasks.NAME refers to, borrowed. sl_flow_expand() fills it
	 * in; only direct callers of sl_template_eval() that use tasks.NAME need to set it. */
	const struct sl_flow *flowdef;
};

/* One runnable instance of a task, every template filled in. */
struct sl_instance {
	int map_index; /* -1 for an unmapped task */
	char **argv;   /* command tasks; NULL-terminated, argc entries */
	size_t argc;
	char **env; /* "NAME=value" entries */
	size_t nenv;
	char *input; /* JSON text or NULL */
};

/* Expands task task_index into its instances: one (map_index -1) for an unmapped task;
 * for a mapped task, one per element of its map lists zipped together (lists of different
 * lengths are an error; an empty list gives zero instances). On success *out (caller frees
 * with sl_instances_free()) holds *n instances. */
enum sl_err sl_flow_expand(const struct sl_flow *flow, size_t task_index,
			   const struct sl_expand_ctx *ctx, struct sl_instance **out, size_t *n,
			   char *errstr, size_t errlen);

void sl_instances_free(struct sl_instance *inst, size_t n);

/* Frees what the n instances hold and zeroes them; the array itself stays the caller's. */
void sl_instances_clear(struct sl_instance *inst, size_t n);

/* The same expansion in slices, for fan-outs too big to hold at once: sl_expander_new()
 * compiles task task_index and evaluates its map lists (errors as sl_flow_expand) and sets
 * *count; sl_expander_fill() fills inst[0..n) (caller's array; clear with
 * sl_instances_clear()) with instances from .. from+n-1, identical to sl_flow_expand()'s.
 * The expander borrows flow and ctx's pointers: they must outlive it. */
struct sl_expander;
enum sl_err sl_expander_new(const struct sl_flow *flow, size_t task_index,
			    const struct sl_expand_ctx *ctx, struct sl_expander **out,
			    size_t *count, char *errstr, size_t errlen);
enum sl_err sl_expander_fill(struct sl_expander *x, size_t from, size_t n,
			     struct sl_instance *inst, char *errstr, size_t errlen);
void sl_expander_free(struct sl_expander *x);

/* Evaluates a template string against ctx (may be NULL: no params, tasks or run) and vars
 * (map variables, object, may be NULL). See docs/flows.md for the expression language.
 * A string that is exactly one "${expr}" yields the value of expr itself (any JSON type);
 * otherwise each ${expr} is replaced by its value rendered as text (strings raw, others as
 * compact JSON) and the result is a JSON string. New reference in *out. */
enum sl_err sl_template_eval(const char *tmpl, const struct sl_expand_ctx *ctx, json_t *vars,
			     json_t **out, char *errstr, size_t errlen);

/* Renders a value as argv/env text: strings raw, others as compact JSON. Caller frees. */
char *sl_value_to_text(json_t *v);

/* What sl_flow_task_gate() decided for a task whose upstreams have all ended. */
enum sl_gate {
	SL_GATE_RUN = 0,
	SL_GATE_SKIP,            /* when: is false, or an upstream was skipped (all_success) */
	SL_GATE_UPSTREAM_FAILED, /* an upstream failed (all_success) */
};

/* Decides whether task task_index runs, once all its upstreams have ended: first its
 * trigger_rule against up_failed (upstreams FAILED or UPSTREAM_FAILED) and up_skipped
 * (upstreams SKIPPED), then its `when:` evaluated against ctx (params, run.*, upstream
 * outputs; no map variables). On SL_GATE_RUN, *queue is the queue its `route:` picks, or
 * the task's queue (borrowed from flow). On SL_OK, errstr holds the reason for a skip.
 * When `when:` or a route rule cannot be evaluated, returns an error with the reason in
 * errstr, naming the task. */
enum sl_err sl_flow_task_gate(const struct sl_flow *flow, size_t task_index,
			      const struct sl_expand_ctx *ctx, size_t up_failed,
			      size_t up_skipped, enum sl_gate *gate, const char **queue,
			      char *errstr, size_t errlen);

/* The delay before the retry after attempt (1-based) of t failed: retry_delay_ms *
 * backoff_factor^(attempt - 1), capped at backoff_max_ms (when > 0), then varied by
 * (2u - 1) * backoff_jitter of itself; u is uniform in [0, 1). Never negative. */
long sl_flow_retry_delay_ms(const struct sl_flow_task *t, unsigned attempt, double u);

#endif
