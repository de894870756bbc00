/* e2e_engine.c - the flow engine end to end: when: conditions and trigger rules, route:,
 * retries with backoff and jitter, dynamic fan-out (zip, nested reduce, empty maps),
 * parameter checks at submit time, idempotency keys and intents. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/util.h"

#define FLOWS E2E_FLOWS "/engine"

static pid_t planner, workers[3];

static void start_services(void)
{
	const char *pargs[] = {"--flows-dir", FLOWS, "--lease-ttl", "3s", NULL};
	const char *w1[] = {"--slots", "4", "--id", "e2e-eng-w1", NULL};
	const char *w2[] = {"--slots", "4", "--id", "e2e-eng-w2", NULL};
	const char *big[] = {"--slots", "4", "--id", "e2e-eng-big", "--queue", "engine_big", NULL};

	e2e_require_env();
	unsetenv("SLUICE_FLOWS_DIR"); /* set per test where the CLI should see the flows */
	planner = e2e_spawn("engine-planner", "sluice-planner", pargs, NULL);
	workers[0] = e2e_spawn("engine-worker1", "sluice-worker", w1, NULL);
	workers[1] = e2e_spawn("engine-worker2", "sluice-worker", w2, NULL);
	workers[2] = e2e_spawn("engine-worker-big", "sluice-worker", big, NULL);
	ck_assert_int_gt(planner, 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_gt(workers[i], 0);
}

static void stop_services(void)
{
	for (int i = 0; i < 3; i++)
		e2e_stop(workers[i], SIGTERM, 15000);
	e2e_stop(planner, SIGTERM, 15000);
}

/* Runs `sluice submit FLOW --wait ARGS...`; returns the exit code, the run id (first line of
 * stdout, caller frees) and stderr (caller frees; may be NULL). */
static int submit(const char *flow, const char *const *extra, char **run, char **err)
{
	const char *args[32] = {"submit", flow, "--wait", "--timeout", "3m"};
	size_t n = 5;
	char *out = NULL, *nl;
	int code;

	for (size_t i = 0; extra && extra[i] && n < 31; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	code = e2e_cli(&out, err, args);
	if (out && (nl = strchr(out, '\n')))
		*nl = '\0';
	*run = out;
	return code;
}

static char *node_state(const char *run, const char *task)
{
	redisReply *r = sl_state_command(e2e_state(), "HGET sluice:{%s}:node:%s state", run, task);
	char *v = r && r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;

	if (r)
		freeReplyObject(r);
	return v;
}

/* Asserts the node's state and that of its instance idx. */
static void ck_task(const char *run, const char *task, int idx, const char *want)
{
	char *n = node_state(run, task), *t = e2e_ti_field(run, task, idx, "state");

	ck_assert_msg(n && !strcmp(n, want), "run %s node %s: want %s, got %s", run, task, want,
		      n ? n : "(nil)");
	ck_assert_msg(t && !strcmp(t, want), "run %s %s[%d]: want %s, got %s", run, task, idx,
		      want, t ? t : "(nil)");
	free(n);
	free(t);
}

static void ck_output(const char *run, const char *task, int idx, const char *want)
{
	json_t *v = e2e_task_output(run, task, idx), *w = json_loads(want, JSON_DECODE_ANY, NULL);
	char *got = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;

	ck_assert_ptr_nonnull(w);
	ck_assert_msg(v && json_equal(v, w), "run %s %s[%d] output: want %s, got %s", run, task,
		      idx, want, got ? got : "(none)");
	free(got);
	json_decref(v);
	json_decref(w);
}

static void ck_run(const char *run, const char *state)
{
	char *s = e2e_run_field(run, "state");

	ck_assert_msg(s && !strcmp(s, state), "run %s: want %s, got %s", run, state,
		      s ? s : "(nil)");
	free(s);
}

/* `sluice status RUN --json` lists the instance (task, idx) in state want. */
static void ck_status_lists(const char *run, const char *task, int idx, const char *want)
{
	const char *args[] = {"status", run, "--json", NULL};
	char *out = NULL;
	json_t *doc, *tasks;
	int found = 0;

	ck_assert_int_eq(e2e_cli(&out, NULL, args), 0);
	doc = json_loads(out, 0, NULL);
	ck_assert_msg(doc != NULL, "status --json is not JSON: %s", out);
	tasks = json_object_get(doc, "tasks");
	for (size_t i = 0; i < json_array_size(tasks); i++) {
		json_t *t = json_array_get(tasks, i);
		if (!strcmp(json_string_value(json_object_get(t, "task")), task) &&
		    json_integer_value(json_object_get(t, "index")) == idx &&
		    !strcmp(json_string_value(json_object_get(t, "state")), want))
			found = 1;
	}
	ck_assert_msg(found, "status of %s does not list %s[%d] %s: %s", run, task, idx, want, out);
	json_decref(doc);
	free(out);
}

START_TEST(when_skips_and_trigger_rules_follow)
{
	const char *small_n[] = {"-p", "n=3", NULL};
	const char *big_n[] = {"-p", "n=10", NULL};
	char *run = NULL, *err;

	/* n=3: big is skipped, so is its all_success dependent; all_done report runs */
	ck_assert_int_eq(submit("engine_when", small_n, &run, NULL), 0);
	ck_run(run, "SUCCEEDED");
	ck_task(run, "count", -1, "SUCCEEDED");
	ck_task(run, "big", -1, "SKIPPED");
	ck_task(run, "small", -1, "SUCCEEDED");
	ck_task(run, "after_big", -1, "SKIPPED");
	ck_task(run, "report", -1, "SUCCEEDED");
	ck_output(run, "small", -1, "\"small\"");
	ck_output(run, "report", -1, "\"report\"");
	err = e2e_ti_field(run, "big", -1, "error");
	ck_assert_msg(err && strstr(err, "when: tasks.count.output > 5 is false"), "reason: %s",
		      err ? err : "-");
	free(err);
	err = e2e_ti_field(run, "after_big", -1, "error");
	ck_assert_msg(err && strstr(err, "upstream task(s) skipped"), "reason: %s",
		      err ? err : "-");
	free(err);
	ck_status_lists(run, "big", -1, "SKIPPED");
	ck_status_lists(run, "after_big", -1, "SKIPPED");
	/* a skipped mapped task has no outputs: its all_done reader sees an empty list */
	ck_task(run, "fan", -1, "SKIPPED");
	ck_output(run, "fan_outputs", -1, "[]");
	ck_status_lists(run, "fan", -1, "SKIPPED");
	free(run);

	/* n=10: the other branch */
	ck_assert_int_eq(submit("engine_when", big_n, &run, NULL), 0);
	ck_task(run, "big", -1, "SUCCEEDED");
	ck_task(run, "small", -1, "SKIPPED");
	ck_task(run, "after_big", -1, "SUCCEEDED");
	ck_task(run, "report", -1, "SUCCEEDED");
	ck_output(run, "fan_outputs", -1, "[1,2]");
	free(run);
}
END_TEST

START_TEST(failure_fails_dependents_and_cleanup_still_runs)
{
	char *run = NULL, *s;

	ck_assert_int_eq(submit("engine_fail", NULL, &run, NULL), 1);
	ck_run(run, "FAILED");
	ck_task(run, "boom", -1, "FAILED");
	ck_task(run, "downstream", -1, "UPSTREAM_FAILED");
	ck_task(run, "further", -1, "UPSTREAM_FAILED");
	/* the independent task finished (it is slower than the failure) and cleanup ran */
	ck_task(run, "ok", -1, "SUCCEEDED");
	ck_task(run, "cleanup", -1, "SUCCEEDED");
	ck_output(run, "cleanup", -1, "\"cleaned\"");
	/* retries: 0 fails fast: one attempt, no retry */
	s = e2e_ti_field(run, "boom", -1, "attempt");
	ck_assert_str_eq(s, "1");
	free(s);
	ck_assert_ptr_null((s = e2e_ti_field(run, "boom", -1, "retry_delays")));
	s = e2e_run_field(run, "error");
	ck_assert_msg(s && strstr(s, "task boom failed after 1 attempt(s): exit code 3"),
		      "run error: %s", s ? s : "-");
	free(s);
	ck_status_lists(run, "downstream", -1, "UPSTREAM_FAILED");
	free(run);
}
END_TEST

/* Every instance of (run, task) ran on worker. */
static void ck_worker(const char *run, const char *task, int n, const char *worker)
{
	for (int i = 0; i < n; i++) {
		char *w = e2e_ti_field(run, task, i, "worker");
		ck_assert_msg(w && !strcmp(w, worker), "%s[%d] ran on %s, want %s", task, i,
			      w ? w : "-", worker);
		free(w);
	}
}

START_TEST(route_picks_the_queue_from_the_data)
{
	const char *few[] = {"-p", "count=3", "-p", "threshold=4", NULL};
	const char *many[] = {"-p", "count=6", "-p", "threshold=4", NULL};
	char *run = NULL, *w;

	ck_assert_int_eq(submit("engine_route", few, &run, NULL), 0);
	ck_output(run, "process", 2, "\"f2.json.gz\"");
	for (int i = 0; i < 3; i++) {
		w = e2e_ti_field(run, "process", i, "worker");
		ck_assert_msg(w && strncmp(w, "e2e-eng-w", 9) == 0, "small data ran on %s",
			      w ? w : "-");
		free(w);
	}
	free(run);
	ck_assert_int_eq(submit("engine_route", many, &run, NULL), 0);
	ck_output(run, "process", 5, "\"f5.json.gz\"");
	ck_worker(run, "process", 6, "e2e-eng-big");
	free(run);
}
END_TEST

/* Reads the millisecond timestamps the backoff flow logs, one per attempt. */
static size_t read_times(const char *path, long long *t, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	ck_assert_msg(f != NULL, "no log %s", path);
	while (n < cap && fscanf(f, "%lld", &t[n]) == 1)
		n++;
	fclose(f);
	return n;
}

START_TEST(retries_back_off_exponentially_with_jitter)
{
	char *dir = (char *)e2e_tmpdir("engine-backoff"); /* a copy: ours to free */
	char log[4200], param[4300], *run = NULL, *s, *save = NULL;
	const char *args[] = {"-p", param, NULL};
	long want[] = {200, 400, 500, 500}, got[8];
	long long t[8];
	size_t n = 0;

	snprintf(log, sizeof(log), "%s/attempts-%lld.log", dir, (long long)sl_now_ms());
	snprintf(param, sizeof(param), "log=%s", log);
	ck_assert_int_eq(submit("engine_backoff", args, &run, NULL), 0);
	s = e2e_ti_field(run, "flaky", -1, "attempt");
	ck_assert_str_eq(s, "5");
	free(s);
	/* the planner's delays: 200ms * 2^(attempt-1), capped at 500ms, no jitter */
	s = e2e_ti_field(run, "flaky", -1, "retry_delays");
	ck_assert_msg(s && !strcmp(s, "200,400,500,500"), "retry_delays %s", s ? s : "-");
	free(s);
	/* and the attempts really were that far apart */
	ck_assert_uint_eq(read_times(log, t, 8), 5);
	for (size_t i = 1; i < 5; i++)
		ck_assert_msg(t[i] - t[i - 1] >= want[i - 1] - 10,
			      "attempt %zu started %lld ms after the one before, want >= %ld", i + 1,
			      t[i] - t[i - 1], want[i - 1]);
	/* jitter 0.5 around 400ms: within 200..600, and not all the same */
	s = e2e_ti_field(run, "jittery", -1, "retry_delays");
	ck_assert_ptr_nonnull(s);
	for (char *p = strtok_r(s, ",", &save); p && n < 8; p = strtok_r(NULL, ",", &save))
		got[n++] = atol(p);
	ck_assert_uint_eq(n, 3);
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(got[i] >= 200 && got[i] <= 600, "jittered delay %ld", got[i]);
	ck_assert_msg(got[0] != got[1] || got[1] != got[2], "no jitter: %ld %ld %ld", got[0],
		      got[1], got[2]);
	free(s);
	free(run);
	free(dir);
}
END_TEST

START_TEST(dynamic_fanout_zip_nested_reduce_and_empty_map)
{
	const char *four[] = {"-p", "words=[\"a\",\"bb\",\"ccc\",\"dddd\"]", NULL};
	char *run = NULL, *s;

	ck_assert_int_eq(submit("engine_fanout", four, &run, NULL), 0);
	/* the fan-out width came from list_words' output at run time */
	s = e2e_run_field(run, "state");
	ck_assert_str_eq(s, "SUCCEEDED");
	free(s);
	for (int i = 0; i < 4; i++) {
		char want[16];
		snprintf(want, sizeof(want), "%d", i + 1);
		ck_output(run, "lengths", i, want);
	}
	ck_assert_ptr_null((s = e2e_ti_field(run, "lengths", 4, "state")));
	ck_output(run, "labelled", 3, "\"dddd=4\"");
	/* map -> reduce -> map -> reduce */
	ck_output(run, "collect", -1, "[1,2,3,4]");
	ck_output(run, "doubled", 3, "8");
	ck_output(run, "total", -1, "20");
	/* zero instances, and the dependent still ran with an empty list */
	s = node_state(run, "per_item");
	ck_assert_str_eq(s, "SUCCEEDED");
	free(s);
	ck_assert_ptr_null((s = e2e_ti_field(run, "per_item", 0, "state")));
	ck_output(run, "after_empty", -1, "\"got []\"");
	free(run);
}
END_TEST

START_TEST(zip_of_different_lengths_fails_with_keys_and_lengths)
{
	char *run = NULL, *s;

	ck_assert_int_eq(submit("engine_zip_mismatch", NULL, &run, NULL), 1);
	ck_run(run, "FAILED");
	s = e2e_run_field(run, "error");
	ck_assert_msg(s && strstr(s, "task 'pairs': map lists differ in length: 'x' has 3 items, "
				     "'y' has 2"),
		      "run error: %s", s ? s : "-");
	free(s);
	ck_task(run, "pairs", -1, "FAILED");
	ck_task(run, "cleanup", -1, "SUCCEEDED");
	free(run);
}
END_TEST

START_TEST(bad_params_are_rejected_at_submit)
{
	const char *bad_type[] = {"-p", "n=abc", NULL};
	const char *unknown[] = {"-p", "nn=1", NULL};
	const char *bad_bool[] = {"-p", "verbose=maybe", NULL};
	const char *good[] = {"-p", "n=7", "-p", "ratio=2", NULL};
	char *run = NULL, *err = NULL, *s;

	/* a flow file: the CLI checks (exit 2, before anything is sent) */
	ck_assert_int_eq(submit(FLOWS "/engine_params.yaml", bad_type, &run, &err), 2);
	ck_assert_msg(err && strstr(err, "param 'n': expected int, got a string \"abc\""), "%s",
		      err ? err : "-");
	free(run);
	free(err);
	/* a name found in $SLUICE_FLOWS_DIR: the CLI checks too */
	setenv("SLUICE_FLOWS_DIR", FLOWS, 1);
	ck_assert_int_eq(submit("engine_params", unknown, &run, &err), 2);
	ck_assert_msg(err && strstr(err, "unknown param 'nn' for flow 'engine_params'"), "%s",
		      err ? err : "-");
	free(run);
	free(err);
	ck_assert_int_eq(submit("engine_params", bad_bool, &run, &err), 2);
	ck_assert_msg(err && strstr(err, "param 'verbose': expected bool"), "%s", err ? err : "-");
	free(run);
	free(err);
	ck_assert_int_eq(submit("engine_params", good, &run, NULL), 0);
	ck_output(run, "show", -1, "7");
	s = e2e_run_field(run, "params");
	ck_assert_msg(s && strstr(s, "\"ratio\":2.0") && strstr(s, "\"n\":7"), "params %s",
		      s ? s : "-");
	free(s);
	free(run);
	unsetenv("SLUICE_FLOWS_DIR");
	/* a name the CLI cannot load: the planner rejects the run (exit 4) with the message */
	ck_assert_int_eq(submit("engine_params", bad_type, &run, &err), 4);
	ck_run(run, "REJECTED");
	s = e2e_run_field(run, "error");
	ck_assert_msg(s && strstr(s, "param 'n': expected int, got a string \"abc\""), "error %s",
		      s ? s : "-");
	ck_assert_msg(err && strstr(err, "expected int"), "stderr %s", err ? err : "-");
	free(s);
	free(err);
	free(run);
	ck_assert_int_eq(submit("engine_params", unknown, &run, NULL), 4);
	s = e2e_run_field(run, "error");
	ck_assert_msg(s && strstr(s, "unknown param 'nn'"), "error %s", s ? s : "-");
	free(s);
	free(run);
}
END_TEST

START_TEST(idempotency_key_maps_to_the_first_run)
{
	char key[64], *run1 = NULL, *run2 = NULL, *run3 = NULL, *out = NULL, *s;
	const char *with_key[] = {"--idempotency-key", key, NULL};
	const char *json_args[] = {"submit", "engine_intent", "--wait", "--json",
				   "--idempotency-key", key, NULL};
	json_t *doc;
	redisReply *r;

	snprintf(key, sizeof(key), "e2e-idem-%lld", (long long)sl_now_ms());
	ck_assert_int_eq(submit("engine_intent", with_key, &run1, NULL), 0);
	ck_run(run1, "SUCCEEDED");
	/* again with the same key: the answer is the first run */
	ck_assert_int_eq(e2e_cli(&out, NULL, json_args), 0);
	doc = json_loads(out, 0, NULL);
	ck_assert_msg(doc != NULL, "submit --json: %s", out);
	run2 = strdup(json_string_value(json_object_get(doc, "run_id")));
	ck_assert_str_ne(run2, run1);
	ck_assert_str_eq(json_string_value(json_object_get(doc, "duplicate_of")), run1);
	ck_assert_str_eq(json_string_value(json_object_get(doc, "state")), "SUCCEEDED");
	json_decref(doc);
	free(out);
	ck_run(run2, "DUPLICATE");
	s = e2e_run_field(run2, "dup_of");
	ck_assert_str_eq(s, run1);
	free(s);
	/* nothing ran for the duplicate */
	r = sl_state_command(e2e_state(), "EXISTS sluice:{%s}:ti:show:-1", run2);
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
	/* the text output says so too; another key is another run */
	ck_assert_int_eq(submit("engine_intent", with_key, &run3, NULL), 0);
	free(run3);
	key[0] = 'x';
	ck_assert_int_eq(submit("engine_intent", with_key, &run3, NULL), 0);
	ck_run(run3, "SUCCEEDED");
	ck_assert_str_ne(run3, run1);
	free(run1);
	free(run2);
	free(run3);
}
END_TEST

START_TEST(intent_reaches_tasks)
{
	static const char *const intents[] = {"normal", "reprocess", "test_subset"};

	for (size_t i = 0; i < 3; i++) {
		const char *args[] = {"--intent", intents[i], NULL};
		char *run = NULL, want[64], *s;

		ck_assert_int_eq(submit("engine_intent", args, &run, NULL), 0);
		snprintf(want, sizeof(want), "\"%s/%s\"", intents[i], intents[i]);
		ck_output(run, "show", -1, want);
		s = e2e_run_field(run, "intent");
		ck_assert_str_eq(s, intents[i]);
		free(s);
		free(run);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("e2e_engine");
	TCase *tc = tcase_create("engine");
	SRunner *sr;
	int failed;

	tcase_add_unchecked_fixture(tc, start_services, stop_services);
	tcase_set_timeout(tc, (double)e2e_ms(240));
	tcase_add_test(tc, when_skips_and_trigger_rules_follow);
	tcase_add_test(tc, failure_fails_dependents_and_cleanup_still_runs);
	tcase_add_test(tc, route_picks_the_queue_from_the_data);
	tcase_add_test(tc, retries_back_off_exponentially_with_jitter);
	tcase_add_test(tc, dynamic_fanout_zip_nested_reduce_and_empty_map);
	tcase_add_test(tc, zip_of_different_lengths_fails_with_keys_and_lengths);
	tcase_add_test(tc, bad_params_are_rejected_at_submit);
	tcase_add_test(tc, idempotency_key_maps_to_the_first_run);
	tcase_add_test(tc, intent_reaches_tasks);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
