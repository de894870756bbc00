/* e2e_planner.c - the planner's batching and its RunEvents: results that wait for a stopped
 * planner are applied in batches exactly once, and sluice.runs.events carries run and task
 * (node) state changes and instance failures and retries, no event per succeeded instance. */
#include <check.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/kafka.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

#define FLOWS E2E_FLOWS "/planner"
#define FANOUT 300

static pid_t planner, workers[2];
static int planner_port;
static char planner_http[32];
/* Long leases: results waiting for a stopped planner must not be re-dispatched meanwhile. */
static const char *pargs[] = {"--flows-dir", FLOWS, "--lease-ttl", "60s", "--http", planner_http,
			      NULL};

static void start_services(void)
{
	const char *w1[] = {"--slots", "4", "--id", "e2e-planner-w1", NULL};
	const char *w2[] = {"--slots", "4", "--id", "e2e-planner-w2", NULL};

	e2e_require_env();
	planner_port = e2e_free_port();
	snprintf(planner_http, sizeof(planner_http), "127.0.0.1:%d", planner_port);
	planner = e2e_spawn("planner-planner", "sluice-planner", pargs, NULL);
	workers[0] = e2e_spawn("planner-worker1", "sluice-worker", w1, NULL);
	workers[1] = e2e_spawn("planner-worker2", "sluice-worker", w2, NULL);
	ck_assert_int_gt(planner, 0);
	ck_assert_int_gt(workers[0], 0);
	ck_assert_int_gt(workers[1], 0);
}

static void stop_services(void)
{
	for (int i = 0; i < 2; i++)
		e2e_stop(workers[i], SIGTERM, 15000);
	e2e_stop(planner, SIGTERM, 15000);
}

static long field_long(const char *run, const char *field)
{
	char *v = e2e_run_field(run, field);
	long n = v ? atol(v) : -1;

	free(v);
	return n;
}

/* Submits flow with params and waits for the run to end in state want; returns the run id
 * (caller frees). */
static char *run_to_end(const char *flow, const char *const *params, const char *want)
{
	char *run = e2e_submit(flow, params), *state;

	ck_assert_ptr_nonnull(run);
	state = e2e_wait_run_end(run, 120000);
	ck_assert_msg(state && !strcmp(state, want), "run %s: %s, want %s", run,
		      state ? state : "timeout", want);
	free(state);
	return run;
}

/* One RunEvent of a run, as read back from the topic. */
struct ev {
	int kind;
	char state[32], task[32], message[128];
	int idx;
	unsigned attempt;
};

/* Reads sluice.runs.events from the beginning (fresh group) and keeps the events of run until
 * its RUN_STATE event in state end arrives or timeout. Returns the number kept (at most cap). */
static size_t read_events(const char *run, const char *end, struct ev *out, size_t cap,
			  long timeout_ms)
{
	char err[256], group[64];
	const char *topics[] = {SL_TOPIC_RUN_EVENTS};
	struct sl_kafka_consumer *c;
	int64_t deadline = sl_mono_ms() + e2e_ms(timeout_ms);
	size_t n = 0;
	int ended = 0;

	sl_id_new("e2e-ev-", group, sizeof(group));
	c = sl_kafka_consumer_new(getenv("SLUICE_KAFKA_BROKERS"), group, topics, 1, err,
				  sizeof(err));
	ck_assert_msg(c != NULL, "consumer: %s", err);
	while (!ended && sl_mono_ms() < deadline) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 200);
		Sluice__V1__RunEvent *e;

		if (!m)
			continue;
		e = sluice__v1__run_event__unpack(NULL, m->len, m->payload);
		if (e && !strcmp(e->run_id, run) && n < cap) {
			out[n].kind = e->kind;
			sl_strlcpy(out[n].state, e->state, sizeof(out[n].state));
			sl_strlcpy(out[n].task, e->task, sizeof(out[n].task));
			sl_strlcpy(out[n].message, e->message, sizeof(out[n].message));
			out[n].idx = e->map_index;
			out[n].attempt = e->attempt;
			ended = e->kind == SLUICE__V1__RUN_EVENT_KIND__RUN_EVENT_RUN_STATE &&
				!strcmp(e->state, end);
			n++;
		}
		if (e)
			sluice__v1__run_event__free_unpacked(e, NULL);
		rd_kafka_message_destroy(m);
	}
	sl_kafka_consumer_destroy(c);
	ck_assert_msg(ended, "no %s event for run %s", end, run);
	return n;
}

/* Events of task (NULL: run events) with map index idx (INT32_MIN: any) and attempt (-1:
 * any, -2: >= 1) in state. */
static int count(const struct ev *ev, size_t n, const char *task, int idx, int attempt,
		 const char *state)
{
	int c = 0;

	for (size_t i = 0; i < n; i++) {
		int is_run = ev[i].kind == SLUICE__V1__RUN_EVENT_KIND__RUN_EVENT_RUN_STATE;
		if (task ? (is_run || strcmp(ev[i].task, task)) : !is_run)
			continue;
		if (idx != INT32_MIN && ev[i].idx != idx)
			continue;
		if (attempt == -2 ? ev[i].attempt < 1
				  : attempt >= 0 && ev[i].attempt != (unsigned)attempt)
			continue;
		if (state && strcmp(ev[i].state, state))
			continue;
		c++;
	}
	return c;
}

/* The message of the first event of task at index -1, attempt 0 (its node event). */
static const char *node_message(const struct ev *ev, size_t n, const char *task)
{
	for (size_t i = 0; i < n; i++)
		if (ev[i].kind == SLUICE__V1__RUN_EVENT_KIND__RUN_EVENT_TASK_STATE &&
		    !strcmp(ev[i].task, task) && ev[i].idx == -1 && ev[i].attempt == 0)
			return ev[i].message;
	return "";
}

/* How task's instances of run travelled on topic (read from the beginning, fresh group, for
 * up to timeout_ms or until want instances were seen): messages that carried them (*msgs,
 * *batches of which were batched, ADR 20) and how many times each map index came (seen[idx],
 * idx < FANOUT). Returns the number of instances seen. */
static int read_instances(const char *topic, const char *run, const char *task, int want,
			  int *msgs, int *batches, int *seen, long timeout_ms)
{
	char err[256], group[64];
	const char *topics[] = {topic};
	struct sl_kafka_consumer *c;
	int64_t deadline = sl_mono_ms() + e2e_ms(timeout_ms);
	int dispatches = !strcmp(topic, "sluice.tasks.default"), n = 0;

	*msgs = *batches = 0;
	sl_id_new("e2e-batch-", group, sizeof(group));
	c = sl_kafka_consumer_new(getenv("SLUICE_KAFKA_BROKERS"), group, topics, 1, err,
				  sizeof(err));
	ck_assert_msg(c != NULL, "consumer: %s", err);
	while (n < want && sl_mono_ms() < deadline) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 200);
		int here = 0;

		if (!m)
			continue;
		if (dispatches) {
			Sluice__V1__TaskDispatch *d =
				sluice__v1__task_dispatch__unpack(NULL, m->len, m->payload);
			for (size_t i = 0; d && i < (d->n_batch ? d->n_batch : 1); i++) {
				Sluice__V1__TaskDispatch *e =
					d->n_batch ? sluice__v1__task_dispatch__unpack(
							     NULL, d->batch[i].len, d->batch[i].data)
						   : d;
				if (e && !strcmp(e->run_id, run) && !strcmp(e->task, task) &&
				    e->map_index >= 0 && e->map_index < FANOUT) {
					seen[e->map_index]++;
					here++;
				}
				if (e && e != d)
					sluice__v1__task_dispatch__free_unpacked(e, NULL);
			}
			*batches += here && d->n_batch;
			if (d)
				sluice__v1__task_dispatch__free_unpacked(d, NULL);
		} else {
			Sluice__V1__TaskResult *r =
				sluice__v1__task_result__unpack(NULL, m->len, m->payload);
			for (size_t i = 0; r && i < (r->n_batch ? r->n_batch : 1); i++) {
				Sluice__V1__TaskResult *e =
					r->n_batch ? sluice__v1__task_result__unpack(
							     NULL, r->batch[i].len, r->batch[i].data)
						   : r;
				if (e && !strcmp(e->run_id, run) && !strcmp(e->task, task) &&
				    e->map_index >= 0 && e->map_index < FANOUT) {
					seen[e->map_index]++;
					here++;
				}
				if (e && e != r)
					sluice__v1__task_result__free_unpacked(e, NULL);
			}
			*batches += here && r->n_batch;
			if (r)
				sluice__v1__task_result__free_unpacked(r, NULL);
		}
		*msgs += here > 0;
		n += here;
		rd_kafka_message_destroy(m);
	}
	sl_kafka_consumer_destroy(c);
	return n;
}

START_TEST(noop_fan_out_travels_in_batches)
{
	static int seen[FANOUT];
	char nparam[32];
	const char *params[] = {nparam, NULL};
	char *run;
	int msgs, batches, n;

	snprintf(nparam, sizeof(nparam), "n=%d", FANOUT);
	run = run_to_end(FLOWS "/planner_batch.yaml", params, "FAILED");
	ck_assert_int_eq(field_long(run, "tasks_done"), FANOUT + 1);
	/* Dispatches: 300 noop instances in ceil(300 / 64) = 5 batches, each instance once. */
	memset(seen, 0, sizeof(seen));
	n = read_instances("sluice.tasks.default", run, "fan", FANOUT, &msgs, &batches, seen,
			   60000);
	ck_assert_int_eq(n, FANOUT);
	ck_assert_int_eq(msgs, (FANOUT + SL_BATCH_MAX - 1) / SL_BATCH_MAX);
	ck_assert_int_eq(batches, msgs);
	for (int i = 0; i < FANOUT; i++)
		ck_assert_msg(seen[i] == 1, "fan[%d] dispatched %d times", i, seen[i]);
	/* Results: each instance's result came, batched per consume turn of a worker (a turn
	 * takes whole dispatch batches, so a result message carries many). */
	memset(seen, 0, sizeof(seen));
	n = read_instances("sluice.tasks.results", run, "fan", FANOUT, &msgs, &batches, seen,
			   60000);
	ck_assert_int_ge(n, FANOUT);
	for (int i = 0; i < FANOUT; i++)
		ck_assert_msg(seen[i] >= 1, "no result for fan[%d]", i);
	ck_assert_msg(msgs <= FANOUT / 8 && batches >= 1,
		      "%d results came in %d messages (%d batched)", n, msgs, batches);
	free(run);
}
END_TEST

START_TEST(backlog_applies_once_and_events_stay_per_node)
{
	static struct ev ev[4096];
	char nparam[32];
	const char *params[] = {nparam, NULL};
	const char *wargs[] = {"--queue", "backlog", "--slots", "4", "--id", "e2e-planner-backlog",
			       NULL};
	static int seen[FANOUT];
	char *run, *state, *v = NULL;
	int64_t deadline;
	long applied, pending = 0;
	int msgs, batches;
	pid_t backlog_worker;
	size_t n;

	snprintf(nparam, sizeof(nparam), "n=%d", FANOUT);
	run = e2e_submit(FLOWS "/planner_backlog.yaml", params);
	ck_assert_ptr_nonnull(run);
	/* Once the fan-out is recorded (its dispatches are produced with it), the planner stops;
	 * only then does a worker of the backlog queue start: it runs everything and the results
	 * wait in Kafka as a backlog. (With a worker already there, the 300 noops ran and were
	 * applied before the planner had stopped, now and then.) */
	deadline = sl_mono_ms() + e2e_ms(60000);
	while (!(v = e2e_ti_field(run, "fan", FANOUT - 1, "state")) && sl_mono_ms() < deadline)
		usleep(20000);
	ck_assert_msg(v != NULL, "fan-out of %s not started", run);
	free(v);
	ck_assert_int_eq(e2e_stop(planner, SIGTERM, e2e_ms(15000)), 0);
	applied = field_long(run, "tasks_done");
	ck_assert_int_eq(applied, 0);
	ck_assert_int_gt(backlog_worker = e2e_spawn("planner-backlog-worker", "sluice-worker",
						    wargs, NULL), 0);
	/* The worker runs every noop and publishes the results, which wait in Kafka; a noop of
	 * an untagged task takes no lease (ADR 25), so its instance stays DISPATCHED until its
	 * result is applied. */
	ck_assert_int_eq(read_instances("sluice.tasks.results", run, "fan", FANOUT, &msgs,
					&batches, seen, 60000),
			 FANOUT);
	for (int i = 0; i < FANOUT; i++) {
		v = e2e_ti_field(run, "fan", i, "state");
		pending += v && !strcmp(v, "DISPATCHED");
		free(v);
	}
	ck_assert_int_eq(pending, FANOUT);
	ck_assert_int_eq(field_long(run, "tasks_done"), applied);
	planner = e2e_spawn("planner-planner2", "sluice-planner", pargs, NULL);
	ck_assert_int_gt(planner, 0);
	state = e2e_wait_run_end(run, 120000);
	ck_assert_msg(state && !strcmp(state, "FAILED"), "run %s: %s", run,
		      state ? state : "timeout");
	free(state);
	/* every result applied once: fan-out and reduce succeeded, flaky failed twice */
	ck_assert_int_eq(field_long(run, "tasks_done"), FANOUT + 1);
	ck_assert_int_eq(field_long(run, "tasks_failed"), 1);
	for (int i = 0; i < FANOUT; i += 37) {
		v = e2e_ti_field(run, "fan", i, "state");
		ck_assert_msg(v && !strcmp(v, "SUCCEEDED"), "fan[%d]: %s", i, v ? v : "(nil)");
		free(v);
	}

	n = read_events(run, "FAILED", ev, sizeof(ev) / sizeof(ev[0]), 60000);
	ck_assert_int_eq(count(ev, n, NULL, INT32_MIN, -1, "RUNNING"), 1);
	ck_assert_int_eq(count(ev, n, NULL, INT32_MIN, -1, "FAILED"), 1);
	/* no event per succeeded instance: the node's event counts them */
	ck_assert_int_eq(count(ev, n, "fan", INT32_MIN, -2, "SUCCEEDED"), 0);
	ck_assert_int_eq(count(ev, n, "after", INT32_MIN, -2, "SUCCEEDED"), 0);
	ck_assert_int_eq(count(ev, n, "fan", -1, 0, "SUCCEEDED"), 1);
	ck_assert_str_eq(node_message(ev, n, "fan"), "300 instances: 300 succeeded, 0 failed");
	ck_assert_int_eq(count(ev, n, "after", -1, 0, "SUCCEEDED"), 1);
	/* failures and retries keep their instance events, and the node's end follows */
	ck_assert_int_eq(count(ev, n, "flaky", -1, 1, "RETRY_WAIT"), 1);
	ck_assert_int_eq(count(ev, n, "flaky", -1, 2, "DISPATCHED"), 1);
	ck_assert_int_eq(count(ev, n, "flaky", -1, 2, "FAILED"), 1);
	ck_assert_int_eq(count(ev, n, "flaky", -1, 0, "FAILED"), 1);
	ck_assert_str_eq(node_message(ev, n, "flaky"), "1 instances: 0 succeeded, 1 failed");
	ck_assert_int_eq(e2e_stop(backlog_worker, SIGTERM, 15000), 0);
	free(run);
}
END_TEST

/* The planner's count of nodes started in their upstream's result round trip, waiting for
 * its /metrics to answer; -1 when it does not. */
static long started_with_result(void)
{
	int64_t until = sl_mono_ms() + e2e_ms(15000);
	long v;

	while ((v = e2e_port_metric(planner_port, "sluice_planner_nodes_started_with_result_total")) <
		       0 &&
	       sl_mono_ms() < until)
		usleep(50000);
	return v;
}

static char *node_state(const char *run, const char *task)
{
	return e2e_ti_field(run, task, -1, "state");
}

/* A chain of tasks of one instance each: each next task starts in the round trip of its
 * upstream's result (ADR 30) with its arguments, its `when:` and its input taken from that
 * result's output; a task whose `when:` is false, and what follows a failure, take the usual
 * way (the count says which did which). */
START_TEST(a_chain_starts_each_next_task_with_the_result)
{
	const char *want[][2] = {{"first", "SUCCEEDED"},    {"second", "SUCCEEDED"},
				 {"third", "SUCCEEDED"},    {"fourth", "SKIPPED"},
				 {"fifth", "FAILED"},       {"sixth", "UPSTREAM_FAILED"}};
	long before = started_with_result(), after;
	char *run;
	json_t *v;

	ck_assert_int_ge(before, 0);
	run = run_to_end(FLOWS "/planner_relay.yaml", NULL, "FAILED");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char *s = node_state(run, want[i][0]);
		ck_assert_msg(s && !strcmp(s, want[i][1]), "%s: %s, want %s", want[i][0],
			      s ? s : "(nil)", want[i][1]);
		free(s);
	}
	v = e2e_task_output(run, "second", -1);
	ck_assert_int_eq(json_integer_value(v), 6);
	json_decref(v);
	v = e2e_task_output(run, "third", -1);
	ck_assert_int_eq(json_integer_value(v), 6);
	json_decref(v);
	/* second and third started with first's and second's results; fourth was expanded with
	 * third's but its `when:` is false (SKIPPED the usual way); fifth started after a skip,
	 * sixth after a failure: neither with a result. */
	after = started_with_result();
	ck_assert_msg(after - before == 2, "%ld nodes started with a result, want 2",
		      after - before);
	free(run);
}
END_TEST

/* The planner's count of nodes a worker ran carried (ADR 31). */
static long carried(void)
{
	return e2e_port_metric(planner_port, "sluice_planner_nodes_carried_total");
}

/* How many dispatches of run's single-instance tasks names[0..n) were sent on
 * sluice.tasks.default (into sent[]), reading the topic from its start until it has been
 * quiet for a second. */
static void count_dispatches(const char *run, const char *const *names, size_t n, int *sent)
{
	struct sl_kafka_consumer *c = e2e_topic_reader("sluice.tasks.default");
	int64_t deadline = sl_mono_ms() + e2e_ms(30000), quiet = sl_mono_ms() + e2e_ms(5000);

	memset(sent, 0, n * sizeof(*sent));
	while (sl_mono_ms() < quiet && sl_mono_ms() < deadline) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 200);
		Sluice__V1__TaskDispatch *d;

		if (!m)
			continue;
		quiet = sl_mono_ms() + e2e_ms(1000);
		d = sluice__v1__task_dispatch__unpack(NULL, m->len, m->payload);
		for (size_t i = 0; d && !d->n_batch && i < n; i++)
			sent[i] += !strcmp(d->run_id, run) && !strcmp(d->task, names[i]);
		if (d)
			sluice__v1__task_dispatch__free_unpacked(d, NULL);
		rd_kafka_message_destroy(m);
	}
	sl_kafka_consumer_destroy(c);
}

/* A worker runs a chain's next task right where its upstream ran when it is an inline
 * built-in needing no lease whose expansion reads nothing of the upstream's result (ADR 31):
 * no dispatch is sent for it, the planner records its start with the upstream's result and
 * then its own result. Tasks that read their upstream's output, and commands, are dispatched;
 * a carried task that fails carries nothing further. */
START_TEST(a_worker_carries_the_next_builtin_of_a_chain)
{
	const char *names[] = {"start", "mark1", "mark2", "const", "reads", "tail", "end"};
	const int want_sent[] = {1, 0, 0, 0, 1, 1, 0};
	int sent[7];
	long before = carried(), after;
	char *run, *s;
	json_t *v, *w;

	ck_assert_int_ge(before, 0);
	run = run_to_end(FLOWS "/planner_carry.yaml", NULL, "SUCCEEDED");
	after = carried();
	ck_assert_msg(after - before == 4, "%ld nodes carried, want 4 (mark1, mark2, const, end)",
		      after - before);
	/* reads got const's output, which the carried const produced */
	v = e2e_task_output(run, "const", -1);
	w = e2e_task_output(run, "reads", -1);
	ck_assert_msg(v && json_is_string(v) && strstr(json_string_value(v), "\"k\""),
		      "const's output");
	ck_assert_msg(w && json_equal(v, w), "reads' output is not const's");
	json_decref(v);
	json_decref(w);
	count_dispatches(run, names, 7, sent);
	for (size_t i = 0; i < 7; i++)
		ck_assert_msg(sent[i] == want_sent[i], "%s: %d dispatches, want %d", names[i],
			      sent[i], want_sent[i]);
	free(run);

	before = after;
	run = run_to_end(FLOWS "/planner_carry_fail.yaml", NULL, "FAILED");
	s = node_state(run, "bad");
	ck_assert_msg(s && !strcmp(s, "FAILED"), "bad: %s", s ? s : "(nil)");
	free(s);
	s = node_state(run, "never");
	ck_assert_msg(s && !strcmp(s, "UPSTREAM_FAILED"), "never: %s", s ? s : "(nil)");
	free(s);
	after = carried();
	ck_assert_msg(after - before == 1, "%ld nodes carried, want 1 (bad)", after - before);
	free(run);
}
END_TEST

int main(void)
{
	const TTest *tests[] = {a_chain_starts_each_next_task_with_the_result,
				a_worker_carries_the_next_builtin_of_a_chain,
				noop_fan_out_travels_in_batches,
				backlog_applies_once_and_events_stay_per_node, NULL};

	return e2e_run_suite("e2e_planner", start_services, stop_services, 240, tests);
}
