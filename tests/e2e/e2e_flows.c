/* e2e_flows.c - the planner and workers run flows end to end: the diamond, maps, reduces,
 * retries, failures, leases, slots, the CLI, bad input and dead letters. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/kafka.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

static pid_t planner, workers[2];

static void start_services(void)
{
	const char *pargs[] = {"--flows-dir", SLUICE_SOURCE_DIR "/examples", "--lease-ttl", "1500ms",
			       NULL};
	const char *w1[] = {"--slots", "4", "--id", "e2e-w1", NULL};
	const char *w2[] = {"--slots", "4", "--id", "e2e-w2", NULL};

	e2e_require_env();
	planner = e2e_spawn("flows-planner", "sluice-planner", pargs, NULL);
	workers[0] = e2e_spawn("flows-worker1", "sluice-worker", w1, NULL);
	workers[1] = e2e_spawn("flows-worker2", "sluice-worker", w2, NULL);
	ck_assert_int_gt(planner, 0);
	ck_assert_int_gt(workers[0], 0);
	ck_assert_int_gt(workers[1], 0);
}

static void stop_services(void)
{
	e2e_stop(workers[0], SIGTERM, 15000);
	e2e_stop(workers[1], SIGTERM, 15000);
	e2e_stop(planner, SIGTERM, 15000);
}

/* Submits with --wait; returns the exit code and the run id (caller frees). */
static int submit_wait(const char *flow, const char *param, char **run)
{
	const char *args[] = {"submit", flow, "--wait", param ? "-p" : NULL, param, NULL};
	char *out = NULL, *nl;
	int code = e2e_cli(&out, NULL, args);

	if (out && (nl = strchr(out, '\n')))
		*nl = '\0';
	*run = out;
	return code;
}

static long output_int(const char *run, const char *task, int idx)
{
	json_t *v = e2e_task_output(run, task, idx);
	long n;

	ck_assert_msg(v && json_is_integer(v), "%s[%d] output is not an integer", task, idx);
	n = (long)json_integer_value(v);
	json_decref(v);
	return n;
}

START_TEST(diamond_total_is_9900)
{
	char *run = NULL, *state;
	int code = submit_wait("diamond", NULL, &run);

	ck_assert_msg(code == 0, "submit --wait exited %d", code);
	ck_assert_ptr_nonnull(run);
	ck_assert_msg(!strncmp(run, "r-", 2), "first line is the run id, got %s", run);
	state = e2e_run_field(run, "state");
	ck_assert_str_eq(state, "SUCCEEDED");
	ck_assert_int_eq(output_int(run, "total", -1), 9900);
	ck_assert_int_eq(output_int(run, "inc", 0), 1);
	ck_assert_int_eq(output_int(run, "dec", 99), 98);
	ck_assert_int_eq(output_int(run, "add", 50), 100);
	free(state);
	state = e2e_run_field(run, "tasks_done");
	ck_assert_str_eq(state, "301");
	free(state);
	free(run);
}
END_TEST

START_TEST(maps_zip_reduce_and_static_deps)
{
	char *run = NULL;
	int code = submit_wait(E2E_FLOWS "/features.yaml", "words=[\"x\",\"y\",\"z\"]", &run);
	json_t *v;

	ck_assert_msg(code == 0, "submit --wait exited %d", code);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(output_int(run, "literal", i), i + 1);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(output_int(run, "squares", i), i * i);
	ck_assert_int_eq(output_int(run, "total", -1), 14);
	ck_assert_int_eq(output_int(run, "after_total", -1), 14);
	v = e2e_task_output(run, "upper", 2);
	ck_assert_str_eq(json_string_value(v), "Z");
	json_decref(v);
	v = e2e_task_output(run, "zipped", 1);
	ck_assert_str_eq(json_string_value(v), "2-Y");
	json_decref(v);
	free(run);
}
END_TEST

START_TEST(status_and_runs_show_the_run)
{
	char *run = NULL, *out = NULL;
	json_t *doc, *tasks;
	json_error_t jerr;
	int found = 0;

	ck_assert_int_eq(submit_wait("hello", "name=e2e", &run), 0);
	const char *st_args[] = {"status", run, "--json", NULL};
	ck_assert_int_eq(e2e_cli(&out, NULL, st_args), 0);
	doc = json_loads(out, 0, &jerr);
	ck_assert_msg(doc != NULL, "status --json: %s", jerr.text);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(doc, "run"), "state")),
			 "SUCCEEDED");
	tasks = json_object_get(doc, "tasks");
	ck_assert_int_ge(json_array_size(tasks), 1);
	json_decref(doc);
	free(out);

	const char *runs_args[] = {"runs", "--json", "--limit", "50", NULL};
	ck_assert_int_eq(e2e_cli(&out, NULL, runs_args), 0);
	doc = json_loads(out, 0, &jerr);
	ck_assert_msg(doc && json_is_array(doc), "runs --json: %s", jerr.text);
	for (size_t i = 0; i < json_array_size(doc); i++)
		if (!strcmp(json_string_value(json_object_get(json_array_get(doc, i), "id")), run))
			found = 1;
	/* newest first */
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(doc, 0), "id")), run);
	ck_assert(found);
	json_decref(doc);
	free(out);
	free(run);
}
END_TEST

START_TEST(failed_attempt_is_retried)
{
	char *run = NULL, *attempt;

	ck_assert_int_eq(submit_wait("fail_retry", NULL, &run), 0);
	attempt = e2e_ti_field(run, "flaky", -1, "attempt");
	ck_assert_msg(attempt && atoi(attempt) == 2, "attempt %s", attempt ? attempt : "-");
	free(attempt);
	free(run);
}
END_TEST

START_TEST(exhausted_retries_fail_the_run)
{
	char *run = NULL, *state, *err, *attempt;
	int code = submit_wait(E2E_FLOWS "/always_fail.yaml", NULL, &run);

	ck_assert_int_eq(code, 1);
	state = e2e_run_field(run, "state");
	ck_assert_str_eq(state, "FAILED");
	err = e2e_run_field(run, "error");
	ck_assert_msg(err && strstr(err, "boom"), "run error: %s", err ? err : "-");
	attempt = e2e_ti_field(run, "boom", -1, "attempt");
	ck_assert_str_eq(attempt, "2");
	free(attempt);
	free(err);
	free(state);
	free(run);
}
END_TEST

START_TEST(lease_is_renewed_while_task_runs)
{
	char *run = e2e_submit(E2E_FLOWS "/slow.yaml", NULL), *state, *attempt;
	redisReply *r;

	ck_assert_ptr_nonnull(run);
	/* the planner hands out 1.5 s leases; 3 s in, the lease must still be held */
	sleep(3);
	r = sl_state_command(e2e_state(), "PTTL sluice:{%s}:lease:slow:-1", run);
	ck_assert_ptr_nonnull(r);
	ck_assert_msg(r->integer > 0, "lease PTTL %lld after 3 s", r->integer);
	freeReplyObject(r);
	state = e2e_wait_run_end(run, 30000);
	ck_assert_str_eq(state, "SUCCEEDED");
	attempt = e2e_ti_field(run, "slow", -1, "attempt");
	ck_assert_str_eq(attempt, "1");
	free(attempt);
	free(state);
	free(run);
}
END_TEST

START_TEST(worker_runs_several_instances_at_once)
{
	char *run = NULL;
	int overlap = 0;
	long start[8], end[8];
	char *worker[8];

	ck_assert_int_eq(submit_wait(E2E_FLOWS "/parallel.yaml", NULL, &run), 0);
	for (int i = 0; i < 8; i++) {
		char *s = e2e_ti_field(run, "nap", i, "started_ms");
		char *f = e2e_ti_field(run, "nap", i, "finished_ms");
		worker[i] = e2e_ti_field(run, "nap", i, "worker");
		ck_assert(s && f && worker[i]);
		start[i] = atol(s);
		end[i] = atol(f);
		free(s);
		free(f);
	}
	for (int i = 0; i < 8; i++)
		for (int j = i + 1; j < 8; j++)
			if (!strcmp(worker[i], worker[j]) && start[i] < end[j] && start[j] < end[i])
				overlap = 1;
	for (int i = 0; i < 8; i++)
		free(worker[i]);
	ck_assert_msg(overlap, "no worker ran two instances at the same time");
	free(run);
}
END_TEST

START_TEST(timeout_kills_the_group_and_is_retried)
{
	const char *dir = e2e_tmpdir("timeout");
	char param[4200], *run = NULL, *state, *attempt;
	int code;

	snprintf(param, sizeof(param), "dir=%s", dir);
	code = submit_wait(E2E_FLOWS "/timeout.yaml", param, &run);
	ck_assert_int_eq(code, 1);
	state = e2e_ti_field(run, "stuck", -1, "state");
	ck_assert_str_eq(state, "TIMED_OUT");
	attempt = e2e_ti_field(run, "stuck", -1, "attempt");
	ck_assert_str_eq(attempt, "2");
	/* both attempts ran and neither process survived its SIGTERM-ignoring trap */
	for (int a = 1; a <= 2; a++) {
		char path[4300];
		FILE *f;
		int pid = 0;

		snprintf(path, sizeof(path), "%s/pid-%d", dir, a);
		f = fopen(path, "r");
		ck_assert_msg(f != NULL, "attempt %d did not run", a);
		ck_assert_int_eq(fscanf(f, "%d", &pid), 1);
		fclose(f);
		ck_assert_msg(kill(pid, 0) != 0, "attempt %d (pid %d) is still alive", a, pid);
	}
	free(attempt);
	free(state);
	free(run);
	free((void *)dir);
}
END_TEST

START_TEST(bad_flow_file_is_rejected_with_line)
{
	char *out = NULL, *err = NULL;
	const char *args[] = {"flows", "validate", E2E_FLOWS "/bad.yaml", NULL};
	const char *sub[] = {"submit", E2E_FLOWS "/bad.yaml", NULL};
	int code = e2e_cli(&out, &err, args);
	char both[8192];

	snprintf(both, sizeof(both), "%s%s", out ? out : "", err ? err : "");
	ck_assert_int_eq(code, 2);
	ck_assert_msg(strstr(both, "bad.yaml:5:"), "no file:line in: %s", both);
	ck_assert_msg(strstr(both, "retries"), "no reason in: %s", both);
	free(out);
	free(err);
	out = err = NULL;
	ck_assert_int_eq(e2e_cli(&out, &err, sub), 2);
	free(out);
	free(err);
}
END_TEST

START_TEST(unknown_flow_is_rejected)
{
	char *run = NULL, *err;
	int code = submit_wait("no_such_flow", NULL, &run);

	ck_assert_int_eq(code, 4);
	err = e2e_run_field(run, "error");
	ck_assert_msg(err && strstr(err, "unknown flow"), "error: %s", err ? err : "-");
	ck_assert(e2e_find_deadletter("unknown flow 'no_such_flow'", NULL, 0, 30000));
	free(err);
	free(run);
}
END_TEST

START_TEST(malformed_messages_are_dead_lettered)
{
	char junk[64], *run = NULL;
	const char *topics[] = {"sluice.runs.requested", "sluice.tasks.results",
				"sluice.tasks.default", "sluice.control"};

	for (size_t t = 0; t < 4; t++) {
		snprintf(junk, sizeof(junk), "\xff\xff\xff junk %zu %lld", t, (long long)sl_now_ms());
		e2e_produce(topics[t], "junk", junk, strlen(junk));
		ck_assert_msg(e2e_find_deadletter("cannot decode", junk, strlen(junk), 30000),
			      "no dead letter for junk on %s", topics[t]);
	}
	/* and the services keep going */
	ck_assert_int_eq(submit_wait("hello", "name=after-junk", &run), 0);
	ck_assert(e2e_alive(planner));
	ck_assert(e2e_alive(workers[0]));
	ck_assert(e2e_alive(workers[1]));
	free(run);
}
END_TEST

/* A batched TaskDispatch (ADR 20) of two noop elements, the second given as raw bytes. */
static uint8_t *dispatch_batch(const char *run, const void *second, size_t second_len,
			       size_t *len)
{
	Sluice__V1__TaskDispatch d = SLUICE__V1__TASK_DISPATCH__INIT, env = SLUICE__V1__TASK_DISPATCH__INIT;
	ProtobufCBinaryData el[2];
	uint8_t *first, *buf;

	d.schema_version = env.schema_version = 1;
	d.run_id = env.run_id = (char *)run;
	d.task = env.task = "fan";
	d.attempt = 1;
	d.kind = SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN;
	d.builtin = "noop";
	first = malloc(sluice__v1__task_dispatch__get_packed_size(&d));
	el[0].len = sluice__v1__task_dispatch__pack(&d, first);
	el[0].data = first;
	el[1].data = (uint8_t *)second;
	el[1].len = second_len;
	env.n_batch = 2;
	env.batch = el;
	buf = malloc(sluice__v1__task_dispatch__get_packed_size(&env));
	*len = sluice__v1__task_dispatch__pack(&env, buf);
	free(first);
	return buf;
}

START_TEST(malformed_batches_are_dead_lettered)
{
	char junk[128], run[64], *ok = NULL;
	Sluice__V1__TaskDispatch cmd = SLUICE__V1__TASK_DISPATCH__INIT;
	Sluice__V1__TaskResult env = SLUICE__V1__TASK_RESULT__INIT;
	ProtobufCBinaryData el;
	char *argv[] = {"true"};
	uint8_t cmd_bytes[256], *buf;
	size_t len;

	snprintf(run, sizeof(run), "batch-junk-%lld", (long long)sl_now_ms());
	snprintf(junk, sizeof(junk), "\xff\xff\xff batch junk %s", run);
	/* a batch with an element that does not decode: the whole message is dead-lettered */
	buf = dispatch_batch(run, junk, strlen(junk), &len);
	e2e_produce("sluice.tasks.default", run, buf, len);
	ck_assert_msg(e2e_find_deadletter("batch element 1: cannot decode TaskDispatch", buf, len,
					  30000),
		      "no dead letter for a batch with an undecodable element");
	free(buf);
	/* a command in a batch: only inline built-ins are batched */
	cmd.schema_version = 1;
	cmd.run_id = run;
	cmd.task = "cmd";
	cmd.attempt = 1;
	cmd.n_argv = 1;
	cmd.argv = argv;
	len = sluice__v1__task_dispatch__pack(&cmd, cmd_bytes);
	buf = dispatch_batch(run, cmd_bytes, len, &len);
	e2e_produce("sluice.tasks.default", run, buf, len);
	ck_assert_msg(e2e_find_deadletter("batch element 1: not an inline built-in", buf, len,
					  30000),
		      "no dead letter for a batch holding a command");
	free(buf);
	/* a batched TaskResult with an element that does not decode */
	el.data = (uint8_t *)junk;
	el.len = strlen(junk);
	env.schema_version = 1;
	env.run_id = run;
	env.n_batch = 1;
	env.batch = &el;
	buf = malloc(sluice__v1__task_result__get_packed_size(&env));
	len = sluice__v1__task_result__pack(&env, buf);
	e2e_produce("sluice.tasks.results", run, buf, len);
	ck_assert_msg(e2e_find_deadletter("batch element 0: cannot decode TaskResult", buf, len,
					  30000),
		      "no dead letter for a result batch with an undecodable element");
	free(buf);
	/* and the services keep going */
	ck_assert_int_eq(submit_wait("hello", "name=after-batch-junk", &ok), 0);
	ck_assert(e2e_alive(planner));
	ck_assert(e2e_alive(workers[0]));
	ck_assert(e2e_alive(workers[1]));
	free(ok);
}
END_TEST

/* An encoded inline built-in dispatch of run's task (attempt 1, no lease) carrying then. */
static uint8_t *carrying_dispatch(const char *run, const char *task, const char *builtin,
				  const char *input, const void *then, size_t then_len,
				  size_t *len)
{
	Sluice__V1__TaskDispatch d = SLUICE__V1__TASK_DISPATCH__INIT;
	uint8_t *buf;

	d.schema_version = 1;
	d.run_id = (char *)run;
	d.task = (char *)task;
	d.map_index = -1;
	d.attempt = 1;
	d.queue = "default";
	d.kind = SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN;
	d.builtin = (char *)builtin;
	d.input.data = (uint8_t *)input;
	d.input.len = input ? strlen(input) : 0;
	d.no_lease = 1;
	d.then.data = (uint8_t *)then;
	d.then.len = then_len;
	buf = malloc(sluice__v1__task_dispatch__get_packed_size(&d));
	*len = sluice__v1__task_dispatch__pack(&d, buf);
	return buf;
}

/* A dispatch carrying the next task (ADR 31): the worker runs it right after a success and
 * names it in the first result, both results in one message; a carried part that does not
 * decode is skipped (logged, not run: the planner dispatches that task itself), and a task
 * that fails carries nothing. */
START_TEST(a_worker_runs_what_a_dispatch_carries_after_a_success_only)
{
	char run[64];
	struct e2e_result got[8];
	uint8_t *b, *a, *e, *d;
	size_t blen, alen, elen, dlen;
	const char junk[] = "\xff\xff\xff not a dispatch";
	int n;

	snprintf(run, sizeof(run), "carried-%lld", (long long)sl_now_ms());
	/* a carries b, which carries something that does not decode */
	b = carrying_dispatch(run, "b", "echo", "7", junk, sizeof(junk) - 1, &blen);
	a = carrying_dispatch(run, "a", "noop", NULL, b, blen, &alen);
	e2e_produce("sluice.tasks.default", run, a, alen);
	n = e2e_run_results(run, 2, 30000, got, 8);
	ck_assert_msg(n == 2, "%d results for a and b, want 2", n);
	ck_assert_str_eq(got[0].task, "a");
	ck_assert_str_eq(got[0].then_task, "b");
	ck_assert_str_eq(got[1].task, "b");
	ck_assert_str_eq(got[1].then_task, "");
	ck_assert_int_eq(got[1].status, SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED);
	ck_assert_int_eq(got[0].msg, got[1].msg);
	free(a);
	free(b);
	/* d fails (sum of a string): e, which it carries, does not run */
	snprintf(run, sizeof(run), "carried-fail-%lld", (long long)sl_now_ms());
	e = carrying_dispatch(run, "e", "noop", NULL, NULL, 0, &elen);
	d = carrying_dispatch(run, "d", "sum", "\"x\"", e, elen, &dlen);
	e2e_produce("sluice.tasks.default", run, d, dlen);
	n = e2e_run_results(run, 1, 30000, got, 8);
	ck_assert_msg(n == 1, "%d results for d and e, want 1 (d's)", n);
	ck_assert_str_eq(got[0].task, "d");
	ck_assert_int_eq(got[0].status, SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED);
	ck_assert_str_eq(got[0].then_task, "");
	free(d);
	free(e);
	ck_assert(e2e_alive(workers[0]));
	ck_assert(e2e_alive(workers[1]));
}
END_TEST

START_TEST(cli_filters_tables_and_flow_list)
{
	char *out = NULL, *run = NULL;
	json_t *doc;
	const char *failed[] = {"runs", "--flow", "always_fail", "--state", "FAILED", "--json", NULL};
	const char *none[] = {"runs", "--flow", "always_fail", "--state", "SUCCEEDED", "--json",
			      NULL};
	const char *list[] = {"flows", "list", "--dir", SLUICE_SOURCE_DIR "/examples", NULL};

	/* filters: at least the run of exhausted_retries_fail_the_run, and only matching ones */
	ck_assert_int_eq(e2e_cli(&out, NULL, failed), 0);
	doc = json_loads(out, 0, NULL);
	ck_assert_msg(doc && json_array_size(doc) >= 1, "runs --flow --state: %s", out);
	for (size_t i = 0; i < json_array_size(doc); i++) {
		json_t *r = json_array_get(doc, i);
		ck_assert_str_eq(json_string_value(json_object_get(r, "flow")), "always_fail");
		ck_assert_str_eq(json_string_value(json_object_get(r, "state")), "FAILED");
	}
	json_decref(doc);
	free(out);
	ck_assert_int_eq(e2e_cli(&out, NULL, none), 0);
	doc = json_loads(out, 0, NULL);
	ck_assert_msg(doc && json_array_size(doc) == 0, "no SUCCEEDED always_fail run: %s", out);
	json_decref(doc);
	free(out);
	/* the status table of a finished diamond shows the total */
	ck_assert_int_eq(submit_wait("diamond", "n=5", &run), 0);
	const char *status[] = {"status", run, NULL};
	ck_assert_int_eq(e2e_cli(&out, NULL, status), 0);
	ck_assert_msg(strstr(out, "TASK") && strstr(out, "STATE") && strstr(out, "ATTEMPT"),
		      "status table header: %s", out);
	{
		/* sum of (i+1)+(i-1) for i < 5 */
		const char *line = strstr(out, "\ntotal ");
		const char *eol = line ? strchr(line + 1, '\n') : NULL;
		const char *v = line ? strstr(line, " 20") : NULL;
		ck_assert_msg(line && v && (!eol || v < eol), "total 20 for n=5 in: %s", out);
	}
	free(out);
	/* flows list names the shipped flows */
	ck_assert_int_eq(e2e_cli(&out, NULL, list), 0);
	ck_assert_msg(strstr(out, "diamond") && strstr(out, "ingest") && strstr(out, "inbox"),
		      "flows list: %s", out);
	free(out);
	free(run);
}
END_TEST

/* `sluice topics create --queue Q` makes Q's topic and its two priority bands; a queue named
 * like a band is refused before anything is created. */
START_TEST(topics_create_makes_queue_and_band_topics)
{
	char *out = NULL, *err = NULL, errstr[256];
	const char *create[] = {"topics", "create", "--queue", "e2e-topics", "--json", NULL};
	const char *bad[] = {"topics", "create", "--queue", "e2e-topics.high", NULL};
	const char *want[] = {"sluice.tasks.e2e-topics", "sluice.tasks.e2e-topics.high",
			      "sluice.tasks.e2e-topics.low", "sluice.tasks.default.high"};
	json_t *doc;

	ck_assert_int_eq(e2e_cli(&out, NULL, create), 0);
	ck_assert_ptr_nonnull(doc = json_loads(out, 0, NULL));
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct sl_kafka_lag_probe *probe;
		json_t *t;
		size_t k;
		int listed = 0;
		int64_t lag = -1;

		json_array_foreach(json_object_get(doc, "topics"), k, t)
			listed |= !strcmp(json_string_value(t), want[i]);
		ck_assert_msg(listed, "%s not in %s", want[i], out);
		/* and it exists on the broker: the lag probe finds its partitions */
		ck_assert_ptr_nonnull(probe = sl_kafka_lag_probe_new(getenv("SLUICE_KAFKA_BROKERS"),
								     "e2e-topics-probe", errstr,
								     sizeof(errstr)));
		{
			/* a fresh group's coordinator may still be loading: retry a little */
			int64_t until = sl_mono_ms() + e2e_ms(20000);
			enum sl_err e;

			while ((e = sl_kafka_lag(probe, want[i], &lag, 5000)) != SL_OK &&
			       sl_mono_ms() < until)
				usleep(200000);
			ck_assert_msg(e == SL_OK, "%s: %s", want[i], sl_strerror(e));
		}
		ck_assert_int_eq(lag, 0);
		sl_kafka_lag_probe_destroy(probe);
	}
	json_decref(doc);
	free(out);
	ck_assert_int_eq(e2e_cli(&out, &err, bad), 2);
	ck_assert_msg(strstr(err, "e2e-topics.high") && strstr(err, ".high or .low"), "%s", err);
	free(out);
	free(err);
}
END_TEST

int main(void)
{
	const TTest *const tests[] = {
		diamond_total_is_9900,
		maps_zip_reduce_and_static_deps,
		status_and_runs_show_the_run,
		failed_attempt_is_retried,
		exhausted_retries_fail_the_run,
		cli_filters_tables_and_flow_list,
		lease_is_renewed_while_task_runs,
		worker_runs_several_instances_at_once,
		timeout_kills_the_group_and_is_retried,
		bad_flow_file_is_rejected_with_line,
		unknown_flow_is_rejected,
		malformed_messages_are_dead_lettered,
		malformed_batches_are_dead_lettered,
		a_worker_runs_what_a_dispatch_carries_after_a_success_only,
		topics_create_makes_queue_and_band_topics,
		NULL,
	};

	return e2e_run_suite("e2e_flows", start_services, stop_services, 180, tests);
}
