/* test_rules.c - operators of the expression language, when:/trigger_rule:/route: parsing and
 * gating, retry_backoff: parsing and delays. */
#include "flow_test.h"

static const char *const flow_yaml =
	"flow: t\n"
	"params: {n: 3, name: bob, big: false}\n"
	"defaults: {retry_delay: 1s, retry_backoff: {factor: 2, max: 30s, jitter: 0.2}}\n"
	"tasks:\n"
	"  list_files: {builtin: noop}\n"
	"  many: {builtin: noop, map: {x: [1, 2]}}\n"
	"  gated:\n"
	"    builtin: noop\n"
	"    when: \"len(tasks.list_files.output) > 2 && !params.big\"\n"
	"  routed:\n"
	"    builtin: noop\n"
	"    queue: small\n"
	"    retry_backoff: {factor: 3}\n"
	"    route:\n"
	"      - {when: \"params.big || len(tasks.list_files.output) > 100\", queue: big}\n"
	"      - {when: \"params.name == 'bob'\", queue: bobs}\n"
	"  cleanup: {builtin: noop, after: [gated], trigger_rule: all_done}\n";

static struct sl_flow *flow;
static struct fake_up up;
static struct sl_expand_ctx ctx;

static void setup(void)
{
	flow = parse_ok(flow_yaml);
	up.flow = flow;
	up.by_name = jparse("{\"list_files\": [[\"a\", \"b\", \"c\"]], \"many\": [10, 20]}");
	ctx = (struct sl_expand_ctx){
		.run_id = "r-1",
		.flow = "t",
		.intent = "normal",
		.params = jparse("{\"n\": 3, \"name\": \"bob\", \"big\": false}"),
		.upstream_outputs = fake_outputs,
		.ud = &up,
		.flowdef = flow,
	};
}

static void teardown(void)
{
	json_decref(ctx.params);
	json_decref(up.by_name);
	sl_flow_destroy(flow);
}

static void eval_is(const char *tmpl, const char *want)
{
	char err[512] = "";
	json_t *v = NULL;

	ck_assert_msg(sl_template_eval(tmpl, &ctx, NULL, &v, err, sizeof(err)) == SL_OK,
		      "%s: %s", tmpl, err);
	ck_assert_msg(jeq(v, want), "%s: got %s, want %s", tmpl,
		      json_dumps(v, JSON_ENCODE_ANY), want);
	json_decref(v);
}

static void eval_fails(const char *tmpl, const char *want)
{
	char err[512] = "";
	json_t *v = NULL;

	ck_assert_msg(sl_template_eval(tmpl, &ctx, NULL, &v, err, sizeof(err)) != SL_OK,
		      "%.80s evaluated", tmpl);
	ck_assert_msg(strstr(err, want) != NULL, "%.80s: want '%s' in: %.200s", tmpl, want, err);
}

START_TEST(comparisons)
{
	eval_is("${1 < 2}", "true");
	eval_is("${2 <= 2}", "true");
	eval_is("${3 > 4}", "false");
	eval_is("${3 >= 3.0}", "true");
	eval_is("${params.n == 3}", "true");
	eval_is("${params.n == 3.0}", "true");
	eval_is("${params.n != '3'}", "true");
	eval_is("${params.name == \"bob\"}", "true");
	eval_is("${'abc' < 'abd'}", "true");
	eval_is("${[1, 2] == [1, 2]}", "true");
	eval_is("${null == null}", "true");
	eval_is("${len(tasks.list_files.output) > 2}", "true");
	eval_is("${len(tasks.many.outputs) == 2}", "true");
	eval_is("${-1 < 0}", "true");
}
END_TEST

START_TEST(boolean_operators)
{
	eval_is("${!false}", "true");
	eval_is("${!!params.n}", "true");
	eval_is("${!''}", "true");
	eval_is("${![]}", "true");
	eval_is("${!0}", "true");
	eval_is("${true && false}", "false");
	eval_is("${false || true}", "true");
	/* && binds tighter than ||; ! tighter than comparisons' operands */
	eval_is("${true || false && false}", "true");
	eval_is("${(true || false) && false}", "false");
	eval_is("${!params.big && params.n > 2}", "true");
	eval_is("${!(params.n > 2)}", "false");
	/* short-circuit: the right side is not evaluated */
	eval_is("${false && params.nope}", "false");
	eval_is("${true || 1 < 'x'}", "true");
	/* embedded in text */
	eval_is("big=${params.n > 2}", "\"big=true\"");
}
END_TEST

START_TEST(operator_errors)
{
	eval_fails("${1 < 'x'}", "cannot compare an int with a string");
	eval_fails("${[1] < [2]}", "cannot compare a list with a list");
	eval_fails("${1 = 1}", "compare with '=='");
	eval_fails("${true & false}", "use '&&'");
	eval_fails("${true | false}", "use '||'");
	eval_fails("${1 < 2 < 3}", "do not chain");
	eval_fails("${1 <}", "expected a value");
	eval_fails("${&& 1}", "expected a value");
}
END_TEST

/* Long operator and member chains nest the tree: they are bounded, not a stack overflow. */
START_TEST(long_chains_are_bounded)
{
	static const char *const ops[] = {" && true", " || false", ".a", "[0]"};
	char buf[80000];

	for (size_t k = 0; k < 4; k++) {
		size_t off = (size_t)snprintf(buf, sizeof(buf), "${%s", k < 2 ? "true" : "params");
		while (off + 20 < sizeof(buf))
			off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s", ops[k]);
		snprintf(buf + off, sizeof(buf) - off, "}");
		eval_fails(buf, "nested too deeply");
	}
	/* and a long but reasonable one works */
	snprintf(buf, sizeof(buf), "${true");
	for (int i = 0; i < 40; i++)
		strcat(buf, " && params.n > 1");
	strcat(buf, "}");
	eval_is(buf, "true");
}
END_TEST

START_TEST(parse_keys)
{
	const struct sl_flow_task *g = &flow->tasks[sl_flow_task_index(flow, "gated")];
	const struct sl_flow_task *r = &flow->tasks[sl_flow_task_index(flow, "routed")];
	const struct sl_flow_task *c = &flow->tasks[sl_flow_task_index(flow, "cleanup")];
	const struct sl_flow_task *l = &flow->tasks[sl_flow_task_index(flow, "list_files")];

	ck_assert_str_eq(g->when, "len(tasks.list_files.output) > 2 && !params.big");
	/* a task named in when: is an upstream */
	ck_assert_int_eq(g->ndeps, 1);
	ck_assert_str_eq(flow->tasks[g->deps[0]].name, "list_files");
	ck_assert_int_eq(g->trigger_rule, SL_TRIGGER_ALL_SUCCESS);
	ck_assert_int_eq(c->trigger_rule, SL_TRIGGER_ALL_DONE);
	ck_assert_int_eq(r->nroute, 2);
	ck_assert_str_eq(r->route[0].queue, "big");
	ck_assert_str_eq(r->route[1].queue, "bobs");
	ck_assert_str_eq(r->route[1].when, "params.name == 'bob'");
	ck_assert_int_eq(r->ndeps, 1);
	/* retry_backoff from defaults, replaced as a whole by a task's own */
	ck_assert(l->backoff_factor == 2.0);
	ck_assert_int_eq(l->backoff_max_ms, 30000);
	ck_assert(l->backoff_jitter == 0.2);
	ck_assert(r->backoff_factor == 3.0);
	ck_assert_int_eq(r->backoff_max_ms, 0);
	ck_assert(r->backoff_jitter == 0.0);
}
END_TEST

START_TEST(parse_errors)
{
	parse_bad("flow: x\ntasks:\n  a: {builtin: noop, trigger_rule: one_failed}\n", 3,
		  "bad trigger_rule 'one_failed' (allowed: all_success, all_done)");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    when: \"params.n > 1\"\n", 5,
		  "task 'a' when: unknown param 'n'");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    map: {x: [1]}\n"
		  "    when: \"x > 1\"\n",
		  6, "unknown name 'x'");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    when: \"1 = 1\"\n", 5,
		  "compare with '=='");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    when:\n", 5, "needs an expression");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    route: {when: 'true'}\n", 5,
		  "route must be a list");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    route:\n      - {when: 'true'}\n", 6,
		  "route[0] needs both 'when' and 'queue'");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    route:\n"
		  "      - {when: 'true', queue: 'a b'}\n",
		  6, "bad queue name 'a b'");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    route:\n"
		  "      - {when: 'tasks.b.output', queue: q}\n",
		  6, "route[0] when: unknown task 'b'");
	parse_bad("flow: x\ntasks:\n  a:\n    builtin: noop\n    route:\n"
		  "      - {when: 'true', queue: q, extra: 1}\n",
		  6, "unknown key 'extra' in route[0]");
	parse_bad("flow: x\ntasks:\n  a: {builtin: noop, retry_backoff: {factor: 0.5}}\n", 3,
		  "retry_backoff.factor must be a number from 1 to 100");
	parse_bad("flow: x\ntasks:\n  a: {builtin: noop, retry_backoff: {jitter: 2}}\n", 3,
		  "retry_backoff.jitter must be a number from 0 to 1");
	parse_bad("flow: x\ntasks:\n  a: {builtin: noop, retry_backoff: {max: soon}}\n", 3,
		  "bad duration 'soon' for retry_backoff.max");
	parse_bad("flow: x\ntasks:\n  a: {builtin: noop, retry_backoff: {base: 2}}\n", 3,
		  "unknown key 'base' in retry_backoff (allowed: factor, max, jitter)");
	parse_bad("flow: x\ndefaults: {when: 'true'}\ntasks:\n  a: {builtin: noop}\n", 2,
		  "unknown key 'when' in defaults");
	/* a when: that names a task downstream of it is a cycle */
	parse_bad("flow: x\ntasks:\n  a: {builtin: noop, when: 'tasks.b.output'}\n"
		  "  b: {builtin: noop, after: [a]}\n",
		  3, "dependency cycle: a -> b -> a");
}
END_TEST

static enum sl_gate gate_of(const char *task, size_t failed, size_t skipped, const char **q,
			    char *why, size_t whylen)
{
	enum sl_gate g = SL_GATE_RUN;
	ssize_t i = sl_flow_task_index(flow, task);

	ck_assert_int_ge(i, 0);
	ck_assert_msg(sl_flow_task_gate(flow, (size_t)i, &ctx, failed, skipped, &g, q, why,
					whylen) == SL_OK,
		      "gate %s: %s", task, why);
	return g;
}

START_TEST(gate_trigger_rules_and_when)
{
	const char *q = NULL;
	char why[512];

	ck_assert_int_eq(gate_of("gated", 0, 0, &q, why, sizeof(why)), SL_GATE_RUN);
	ck_assert_str_eq(q, "default");
	ck_assert_int_eq(gate_of("gated", 1, 0, &q, why, sizeof(why)), SL_GATE_UPSTREAM_FAILED);
	ck_assert_msg(strstr(why, "1 upstream task(s) failed"), "%s", why);
	ck_assert_int_eq(gate_of("gated", 0, 1, &q, why, sizeof(why)), SL_GATE_SKIP);
	ck_assert_msg(strstr(why, "skipped"), "%s", why);
	/* all_done runs whatever its upstreams did */
	ck_assert_int_eq(gate_of("cleanup", 1, 1, &q, why, sizeof(why)), SL_GATE_RUN);
	/* when: false */
	json_object_set_new(ctx.params, "big", json_true());
	ck_assert_int_eq(gate_of("gated", 0, 0, &q, why, sizeof(why)), SL_GATE_SKIP);
	ck_assert_msg(strstr(why, "when: len(tasks.list_files.output) > 2 && !params.big is false"),
		      "%s", why);
}
END_TEST

START_TEST(gate_route)
{
	const char *q = NULL;
	char why[512];

	/* second rule matches */
	ck_assert_int_eq(gate_of("routed", 0, 0, &q, why, sizeof(why)), SL_GATE_RUN);
	ck_assert_str_eq(q, "bobs");
	/* first rule wins when both match */
	json_object_set_new(ctx.params, "big", json_true());
	gate_of("routed", 0, 0, &q, why, sizeof(why));
	ck_assert_str_eq(q, "big");
	/* the data decides: over 100 files */
	json_object_set_new(ctx.params, "big", json_false());
	json_object_set_new(ctx.params, "name", json_string("eve"));
	gate_of("routed", 0, 0, &q, why, sizeof(why));
	ck_assert_str_eq(q, "small");
	{
		json_t *files = json_array();
		for (int i = 0; i < 101; i++)
			json_array_append_new(files, json_integer(i));
		json_object_set_new(up.by_name, "list_files", json_pack("[o]", files));
	}
	gate_of("routed", 0, 0, &q, why, sizeof(why));
	ck_assert_str_eq(q, "big");
}
END_TEST

START_TEST(gate_errors_name_the_task)
{
	struct sl_flow *f = parse_ok("flow: t\nparams: {s: x}\ntasks:\n"
				     "  a: {builtin: noop, when: 'params.s > 1'}\n"
				     "  b: {builtin: noop, route: [{when: 'params.s < 1', queue: q}]}\n");
	enum sl_gate g = SL_GATE_RUN;
	const char *q;
	char why[512];

	json_object_set_new(ctx.params, "s", json_string("x"));
	ck_assert_int_ne(sl_flow_task_gate(f, 0, &ctx, 0, 0, &g, &q, why, sizeof(why)), SL_OK);
	ck_assert_msg(strstr(why, "task 'a' when: cannot compare a string with an int"), "%s", why);
	ck_assert_int_ne(sl_flow_task_gate(f, 1, &ctx, 0, 0, &g, &q, why, sizeof(why)), SL_OK);
	ck_assert_msg(strstr(why, "task 'b' route[0] when: cannot compare"), "%s", why);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(retry_delays)
{
	struct sl_flow_task t = {.retry_delay_ms = 1000, .backoff_factor = 2,
				 .backoff_max_ms = 30000};
	long want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};

	for (unsigned a = 1; a <= 7; a++)
		ck_assert_int_eq(sl_flow_retry_delay_ms(&t, a, 0.5), want[a - 1]);
	/* jitter: +-20% at the extremes, exact in the middle */
	t.backoff_jitter = 0.2;
	ck_assert_int_eq(sl_flow_retry_delay_ms(&t, 2, 0.0), 1600);
	ck_assert_int_eq(sl_flow_retry_delay_ms(&t, 2, 0.5), 2000);
	ck_assert_int_eq(sl_flow_retry_delay_ms(&t, 2, 0.999999), 2400);
	for (int i = 0; i < 1000; i++) {
		long d = sl_flow_retry_delay_ms(&t, 6, (double)i / 1000.0);
		ck_assert(d >= 24000 && d <= 36000);
	}
	/* no backoff: the plain delay every time; no cap: grows without overflow */
	t = (struct sl_flow_task){.retry_delay_ms = 500};
	ck_assert_int_eq(sl_flow_retry_delay_ms(&t, 9, 0.5), 500);
	t.backoff_factor = 100;
	ck_assert_int_gt(sl_flow_retry_delay_ms(&t, 100, 0.5), 0);
	t.retry_delay_ms = 0;
	ck_assert_int_eq(sl_flow_retry_delay_ms(&t, 3, 0.5), 0);
}
END_TEST

static Suite *make(void)
{
	Suite *s = suite_create("flow_rules");
	TCase *tc = tcase_create("rules");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, comparisons);
	tcase_add_test(tc, boolean_operators);
	tcase_add_test(tc, operator_errors);
	tcase_add_test(tc, long_chains_are_bounded);
	tcase_add_test(tc, parse_keys);
	tcase_add_test(tc, parse_errors);
	tcase_add_test(tc, gate_trigger_rules_and_when);
	tcase_add_test(tc, gate_route);
	tcase_add_test(tc, gate_errors_name_the_task);
	tcase_add_test(tc, retry_delays);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(make)
