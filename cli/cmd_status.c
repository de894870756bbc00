/* cmd_status.c - `sluice status RUN`: the run hash and a table of its task instances. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sluice/util.h"

#define MAX_INSTANCES 1000000 /* read no more than this many instances of one run */
#define PIPE_BATCH 1000 /* HMGETs per pipeline */
#define BIG_TASK 50   /* a task with more instances than this is summarised ... */
#define SHOW_FIRST 20 /* ... to its first SHOW_FIRST rows, unless --all */
#define OUTPUT_CHARS 60
#define MAX_STATES 16 /* distinct states counted in a summary line */

enum { OPT_ALL = 1 };

/* HMGET field order of an instance. */
enum { F_STATE, F_ATTEMPT, F_OUTPUT, F_ERROR, F_WORKER, F_STARTED, F_FINISHED, NFIELDS };
#define TI_FIELDS "state attempt output error worker started_ms finished_ms"

struct ti {
	char *task;
	long idx;
	size_t order; /* position of task in the run's topological list */
	char *f[NFIELDS];
};

struct status {
	char run[CLI_NAME_MAX + 1];
	char *order_text; /* run hash field `tasks`: comma-separated, topological */
	char **order;     /* points into order_text */
	size_t norder;
	struct ti *tis;
	size_t n, cap;
	int truncated;
};

static int split_order(struct status *s, const char *tasks)
{
	char *p, *save = NULL;
	size_t cap = 1;

	if (!tasks || !*tasks)
		return 0;
	if (!(s->order_text = strdup(tasks)))
		return -1;
	for (p = s->order_text; *p; p++)
		cap += *p == ',';
	if (!(s->order = calloc(cap, sizeof(char *))))
		return -1;
	for (p = strtok_r(s->order_text, ",", &save); p; p = strtok_r(NULL, ",", &save))
		s->order[s->norder++] = p;
	return 0;
}

static int cmp_ti(const void *pa, const void *pb)
{
	const struct ti *a = pa, *b = pb;
	int c;

	if (a->order != b->order)
		return a->order < b->order ? -1 : 1;
	if ((c = strcmp(a->task, b->task)))
		return c;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static void free_status(struct status *s)
{
	size_t i, j;

	for (i = 0; i < s->n; i++) {
		free(s->tis[i].task);
		for (j = 0; j < NFIELDS; j++)
			free(s->tis[i].f[j]);
	}
	free(s->tis);
	free(s->order);
	free(s->order_text);
}

/* Records instance (task order[pos], idx) from its HMGET reply. Returns -1 on allocation
 * failure; an instance that does not exist (not created yet, or the other index of a
 * one-instance node) is skipped. */
static int add_ti(struct status *s, size_t pos, long idx, const redisReply *r)
{
	struct ti *t;
	size_t j;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != NFIELDS || !r->element[F_STATE] ||
	    !cli_reply_is_str(r->element[F_STATE]))
		return 0;
	if (s->n == MAX_INSTANCES) {
		s->truncated = 1;
		return 0;
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		struct ti *tis = realloc(s->tis, cap * sizeof(*tis));
		if (!tis)
			return -1;
		s->tis = tis;
		s->cap = cap;
	}
	t = &s->tis[s->n];
	memset(t, 0, sizeof(*t));
	t->idx = idx;
	if (!(t->task = strdup(s->order[pos])))
		return -1;
	s->n++;
	t->order = pos;
	for (j = 0; j < NFIELDS; j++) {
		const redisReply *v = r->element[j];
		if (cli_reply_is_str(v) && !(t->f[j] = strdup(v->str)))
			return -1;
	}
	return 0;
}

/* One instance asked for in a pipeline. */
struct want {
	size_t pos;
	long idx;
};

/* Sends the HMGETs of want[0..n) in one pipeline and records the replies. Returns CLI_OK
 * or an exit code after printing why. */
static int fetch_batch(struct sl_state *st, struct status *s, const struct want *want, size_t n)
{
	char key[CLI_KEY_MAX], suffix[CLI_KEY_MAX];
	redisContext *c = sl_state_redis(st);
	size_t i;

	if (!c) {
		fprintf(stderr, "sluice: lost the connection to Redis\n");
		return CLI_UNREACHABLE;
	}
	for (i = 0; i < n; i++) {
		snprintf(suffix, sizeof(suffix), "ti:%s:%ld", s->order[want[i].pos], want[i].idx);
		if (cli_run_key(key, sizeof(key), s->run, suffix) < 0)
			return CLI_USAGE;
		if (redisAppendCommand(c, "HMGET %s " TI_FIELDS, key) != REDIS_OK)
			goto conn_error;
	}
	for (i = 0; i < n; i++) {
		redisReply *v = NULL;
		int added;

		if (redisGetReply(c, (void **)&v) != REDIS_OK || !v)
			goto conn_error;
		added = add_ti(s, want[i].pos, want[i].idx, v);
		freeReplyObject(v);
		if (added < 0) {
			fprintf(stderr, "sluice: out of memory\n");
			return CLI_FAILED;
		}
	}
	return CLI_OK;
conn_error:
	fprintf(stderr, "sluice: Redis HMGET failed: %s\n",
		c->errstr[0] ? c->errstr : "connection lost");
	return CLI_UNREACHABLE;
}

/* Reads every instance of the run without scanning the keyspace: the `total` of each node
 * of the run's task list (one pipeline), then instances 0..total-1 of each node in
 * pipelines of PIPE_BATCH HMGETs. A node with one instance is an unmapped task (index -1)
 * or a map over one element (index 0): both are asked for and the one that exists is kept.
 * Returns CLI_OK or an exit code after printing why. */
static int load_instances(struct sl_state *st, struct status *s)
{
	char key[CLI_KEY_MAX], suffix[CLI_KEY_MAX];
	struct want *want = NULL;
	long *totals = NULL;
	redisContext *c;
	size_t i, n = 0, asked = 0;
	int rc = CLI_UNREACHABLE;

	if (!s->norder)
		return CLI_OK;
	if (!(totals = calloc(s->norder, sizeof(*totals))) ||
	    !(want = calloc(PIPE_BATCH, sizeof(*want)))) {
		fprintf(stderr, "sluice: out of memory\n");
		rc = CLI_FAILED;
		goto out;
	}
	if (!(c = sl_state_redis(st))) {
		fprintf(stderr, "sluice: lost the connection to Redis\n");
		goto out;
	}
	for (i = 0; i < s->norder; i++) {
		snprintf(suffix, sizeof(suffix), "node:%s", s->order[i]);
		if (cli_run_key(key, sizeof(key), s->run, suffix) < 0) {
			rc = CLI_USAGE;
			goto out;
		}
		if (redisAppendCommand(c, "HGET %s total", key) != REDIS_OK)
			goto conn_error;
	}
	for (i = 0; i < s->norder; i++) {
		redisReply *v = NULL;

		if (redisGetReply(c, (void **)&v) != REDIS_OK || !v)
			goto conn_error;
		totals[i] = cli_reply_is_str(v) ? (long)out_int(v->str, 0) : 0;
		if (totals[i] < 0)
			totals[i] = 0;
		freeReplyObject(v);
	}
	for (i = 0; i < s->norder && !s->truncated; i++) {
		long idx = totals[i] == 1 ? -1 : 0;

		for (; idx < totals[i] && !s->truncated; idx++) {
			if (++asked > 2 * (size_t)MAX_INSTANCES) {
				s->truncated = 1; /* totals far beyond the instances that exist */
				break;
			}
			want[n].pos = i;
			want[n].idx = idx;
			if (++n == PIPE_BATCH) {
				if ((rc = fetch_batch(st, s, want, n)) != CLI_OK)
					goto out;
				n = 0;
			}
		}
	}
	if (n && (rc = fetch_batch(st, s, want, n)) != CLI_OK)
		goto out;
	if (s->n)
		qsort(s->tis, s->n, sizeof(*s->tis), cmp_ti);
	rc = CLI_OK;
	goto out;
conn_error:
	fprintf(stderr, "sluice: Redis HGET failed: %s\n",
		c->errstr[0] ? c->errstr : "connection lost");
out:
	free(want);
	free(totals);
	return rc;
}

static json_t *run_json(const redisReply *h, const char *run, int64_t now)
{
	static const char *const ints[] = {"created_ms", "ended_ms",  "tasks_total",
					   "tasks_done", "tasks_failed", "nodes_left",
					   "stale_results", NULL};
	json_t *o = json_object();
	const char *const *k;
	int64_t created, ended;
	size_t i;

	if (!o)
		return NULL;
	for (i = 0; i + 1 < h->elements; i += 2) {
		const redisReply *kr = h->element[i], *vr = h->element[i + 1];
		if (!cli_reply_is_str(kr) || !cli_reply_is_str(vr))
			continue;
		if (!strcmp(kr->str, "params"))
			out_json_set_parsed(o, "params", vr->str);
		else if (!strcmp(kr->str, "tasks")) {
			json_t *arr = json_array();
			char *copy = strdup(vr->str), *p, *save = NULL;
			for (p = copy ? strtok_r(copy, ",", &save) : NULL; p;
			     p = strtok_r(NULL, ",", &save))
				json_array_append_new(arr, json_string(p));
			free(copy);
			json_object_set_new(o, "tasks", arr);
		} else
			out_json_set_str(o, kr->str, vr->str);
	}
	for (k = ints; *k; k++)
		if (json_object_get(o, *k))
			out_json_set_int(o, *k, cli_hash_get(h, *k));
	if (!json_object_get(o, "id"))
		out_json_set_str(o, "id", run);
	if (!json_object_get(o, "created_ms"))
		json_object_set_new(o, "created_ms", json_null());
	if (!json_object_get(o, "ended_ms"))
		json_object_set_new(o, "ended_ms", json_null());
	created = out_int(cli_hash_get(h, "created_ms"), 0);
	ended = out_int(cli_hash_get(h, "ended_ms"), 0);
	json_object_set_new(o, "duration_ms",
			    created <= 0 ? json_null() : json_integer((ended > 0 ? ended : now) - created));
	return o;
}

static json_t *ti_json(const struct ti *t)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	json_object_set_new(o, "task", json_string(t->task));
	json_object_set_new(o, "index", json_integer(t->idx));
	out_json_set_str(o, "state", t->f[F_STATE]);
	out_json_set_int(o, "attempt", t->f[F_ATTEMPT]);
	out_json_set_parsed(o, "output", t->f[F_OUTPUT]);
	out_json_set_str(o, "error", t->f[F_ERROR] && *t->f[F_ERROR] ? t->f[F_ERROR] : NULL);
	out_json_set_str(o, "worker", t->f[F_WORKER] && *t->f[F_WORKER] ? t->f[F_WORKER] : NULL);
	out_json_set_int(o, "started_ms", t->f[F_STARTED]);
	out_json_set_int(o, "finished_ms", t->f[F_FINISHED]);
	return o;
}

static int print_json(const redisReply *h, const struct status *s, int64_t now)
{
	json_t *root = json_object(), *tasks = json_array();
	size_t i;
	int rc;

	if (root && tasks) {
		json_object_set_new(root, "run", run_json(h, s->run, now));
		for (i = 0; i < s->n; i++)
			json_array_append_new(tasks, ti_json(&s->tis[i]));
		json_object_set(root, "tasks", tasks);
		if (s->truncated)
			json_object_set_new(root, "truncated", json_true());
	}
	rc = out_json(root && tasks ? root : NULL);
	json_decref(tasks);
	json_decref(root);
	return rc;
}

static void print_field(const char *name, const char *value)
{
	char buf[1024];

	out_clip(value && *value ? value : "-", 240, buf, sizeof(buf));
	printf("%-10s %s\n", name, buf);
}

static void print_run(const redisReply *h, const char *run, int64_t now)
{
	const char *state = cli_hash_get(h, "state");
	int64_t created = out_int(cli_hash_get(h, "created_ms"), 0);
	int64_t ended = out_int(cli_hash_get(h, "ended_ms"), 0);
	char buf[256], dur[32];

	print_field("run", run);
	print_field("flow", cli_hash_get(h, "flow"));
	if (state && !strcmp(state, "DUPLICATE")) {
		snprintf(buf, sizeof(buf), "DUPLICATE of %s (see sluice status %s)",
			 cli_hash_get(h, "dup_of") ? cli_hash_get(h, "dup_of") : "?",
			 cli_hash_get(h, "dup_of") ? cli_hash_get(h, "dup_of") : "?");
		print_field("state", buf);
	} else {
		print_field("state", state);
	}
	if (cli_hash_get(h, "intent"))
		print_field("intent", cli_hash_get(h, "intent"));
	if (cli_hash_get(h, "requested_by"))
		print_field("by", cli_hash_get(h, "requested_by"));
	out_time(created, buf, sizeof(buf));
	print_field("created", buf);
	out_time(ended, buf, sizeof(buf));
	print_field("ended", buf);
	out_duration(created > 0 ? (ended > 0 ? ended : now) - created : -1, dur, sizeof(dur));
	snprintf(buf, sizeof(buf), "%s%s", dur, created > 0 && ended <= 0 ? " (so far)" : "");
	print_field("duration", buf);
	if (cli_hash_get(h, "tasks_total")) {
		snprintf(buf, sizeof(buf), "%s/%s done",
			 cli_hash_get(h, "tasks_done") ? cli_hash_get(h, "tasks_done") : "0",
			 cli_hash_get(h, "tasks_total"));
		print_field("tasks", buf);
	}
	if (cli_hash_get(h, "params"))
		print_field("params", cli_hash_get(h, "params"));
	if (cli_hash_get(h, "error") && *cli_hash_get(h, "error"))
		print_field("error", cli_hash_get(h, "error"));
}

static int add_row(struct out_table *t, const struct ti *t_, int64_t now)
{
	const char *state = t_->f[F_STATE] ? t_->f[F_STATE] : "?";
	const char *error = t_->f[F_ERROR];
	int64_t started = out_int(t_->f[F_STARTED], 0), finished = out_int(t_->f[F_FINISHED], 0);
	char idx[24], dur[32], out[OUTPUT_CHARS * 4 + 8], text[OUTPUT_CHARS * 4 + 16];
	const char *cells[7];

	if (t_->idx < 0)
		snprintf(idx, sizeof(idx), "-");
	else
		snprintf(idx, sizeof(idx), "%ld", t_->idx);
	if (started > 0 && finished >= started)
		out_duration(finished - started, dur, sizeof(dur));
	else if (started > 0 && !strcmp(state, "RUNNING"))
		out_duration(now - started, dur, sizeof(dur));
	else
		snprintf(dur, sizeof(dur), "-");
	if (error && *error && strcmp(state, "SUCCEEDED")) {
		snprintf(text, sizeof(text), "error: %s", error);
		out_clip(text, OUTPUT_CHARS, out, sizeof(out));
	} else {
		out_clip(t_->f[F_OUTPUT] ? t_->f[F_OUTPUT] : "", OUTPUT_CHARS, out, sizeof(out));
	}
	cells[0] = t_->task;
	cells[1] = idx;
	cells[2] = state;
	cells[3] = t_->f[F_ATTEMPT];
	cells[4] = dur;
	cells[5] = t_->f[F_WORKER] && *t_->f[F_WORKER] ? t_->f[F_WORKER] : NULL;
	cells[6] = out[0] ? out : NULL;
	return out_table_add(t, cells);
}

/* "... 80 more: 70 SUCCEEDED, 10 FAILED" for the instances [from, to) left out. */
static int add_summary(struct out_table *t, const struct ti *tis, size_t from, size_t to)
{
	const char *names[MAX_STATES];
	size_t counts[MAX_STATES], nstates = 0, other = 0, i, k;
	char line[1024];
	int n;

	for (i = from; i < to; i++) {
		const char *st = tis[i].f[F_STATE] ? tis[i].f[F_STATE] : "?";
		for (k = 0; k < nstates && strcmp(names[k], st); k++)
			;
		if (k == nstates) {
			if (nstates == MAX_STATES) {
				other++;
				continue;
			}
			names[nstates] = st;
			counts[nstates++] = 0;
		}
		counts[k]++;
	}
	n = snprintf(line, sizeof(line), "... %zu more:", to - from);
	for (k = 0; k < nstates && n > 0 && (size_t)n < sizeof(line); k++)
		n += snprintf(line + n, sizeof(line) - (size_t)n, "%s %zu %s", k ? "," : "",
			      counts[k], names[k]);
	if (other && n > 0 && (size_t)n < sizeof(line))
		snprintf(line + n, sizeof(line) - (size_t)n, ", %zu other", other);
	return out_table_add_note(t, line);
}

/* Tasks of the run without any instance yet show their node state (WAITING ...). */
static int add_idle_tasks(struct sl_state *st, struct out_table *t, const struct status *s,
			  size_t order_pos)
{
	char key[CLI_KEY_MAX], suffix[CLI_KEY_MAX];
	const char *cells[7] = {NULL};
	redisReply *r;
	int rc;

	snprintf(suffix, sizeof(suffix), "node:%s", s->order[order_pos]);
	if (cli_run_key(key, sizeof(key), s->run, suffix) < 0)
		return 0;
	r = sl_state_command(st, "HGET %s state", key);
	cells[0] = s->order[order_pos];
	cells[2] = r && cli_reply_is_str(r) ? r->str : "WAITING";
	rc = out_table_add(t, cells);
	if (r)
		freeReplyObject(r);
	return rc;
}

static int print_table(struct sl_state *st, const struct status *s, int all, int64_t now)
{
	static const char *const headers[] = {"TASK",     "INDEX",  "STATE", "ATTEMPT",
					      "DURATION", "WORKER", "OUTPUT"};
	struct out_table *t = out_table_new(7, headers);
	size_t i = 0, pos = 0, j;
	int rc = CLI_FAILED;

	if (!t)
		goto out;
	/* Walk the topological list and the sorted instances together. */
	while (i < s->n || pos < s->norder) {
		size_t start = i, end;

		if (pos < s->norder && (i == s->n || s->tis[i].order > pos)) {
			if (add_idle_tasks(st, t, s, pos++) < 0)
				goto out;
			continue;
		}
		for (end = i; end < s->n && !strcmp(s->tis[end].task, s->tis[start].task); end++)
			;
		for (j = start; j < end; j++) {
			if (!all && end - start > BIG_TASK && j - start == SHOW_FIRST) {
				if (add_summary(t, s->tis, j, end) < 0)
					goto out;
				break;
			}
			if (add_row(t, &s->tis[j], now) < 0)
				goto out;
		}
		if (s->tis[start].order == pos)
			pos++;
		i = end;
	}
	putchar('\n');
	out_table_print(t, stdout);
	if (s->truncated)
		printf("(only the first %d instances were read)\n", MAX_INSTANCES);
	rc = CLI_OK;
out:
	if (rc != CLI_OK)
		fprintf(stderr, "sluice: out of memory\n");
	out_table_destroy(t);
	return rc;
}

int cmd_status(struct cli *cli, int argc, char **argv)
{
	static const struct cli_opt opts[] = {{"all", 'a', 0, OPT_ALL}, {NULL, 0, 0, 0}};
	struct status s;
	struct cli_args a;
	struct sl_state *st = NULL;
	redisReply *h = NULL;
	const char *run = NULL;
	char key[CLI_KEY_MAX];
	int64_t now = sl_now_ms();
	int id, all = 0, rc = CLI_USAGE;

	memset(&s, 0, sizeof(s));
	cli_args_init(&a, argc, argv, "status");
	while ((id = cli_args_next(&a, opts, cli)) != CLI_ARG_END) {
		if (id == CLI_ARG_ERROR)
			goto out;
		if (id == CLI_ARG_HELP) {
			help_command("status", stdout);
			rc = CLI_OK;
			goto out;
		}
		if (id == OPT_ALL) {
			all = 1;
		} else if (run) {
			rc = cli_usage_error("status", "one run at a time");
			goto out;
		} else {
			run = a.arg;
		}
	}
	if (!run) {
		rc = cli_usage_error("status", "which run? (sluice runs lists them)");
		goto out;
	}
	if (cli_check_run_id("status", run) < 0)
		goto out;
	sl_strlcpy(s.run, run, sizeof(s.run));
	if (!(st = cli_redis_connect(cli))) {
		rc = CLI_UNREACHABLE;
		goto out;
	}
	cli_run_key(key, sizeof(key), run, "run");
	if (!(h = cli_redis_check(sl_state_command(st, "HGETALL %s", key), "HGETALL"))) {
		rc = CLI_UNREACHABLE;
		goto out;
	}
	if (cli_hash_len(h) == 0) {
		fprintf(stderr, "sluice status: no run %s\n", run);
		rc = CLI_USAGE;
		goto out;
	}
	if (split_order(&s, cli_hash_get(h, "tasks")) < 0) {
		rc = CLI_FAILED;
		goto out;
	}
	if ((rc = load_instances(st, &s)) != CLI_OK)
		goto out;
	if (cli->json) {
		rc = print_json(h, &s, now);
		goto out;
	}
	print_run(h, run, now);
	rc = s.n || s.norder ? print_table(st, &s, all, now) : CLI_OK;
out:
	if (h)
		freeReplyObject(h);
	free_status(&s);
	sl_state_destroy(st);
	return rc;
}
