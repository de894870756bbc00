/* test_expand.c - tasks into instances: the diamond, zip-maps, reduces, empty and mismatched
 * lists, argv that no parameter value can split or inject into. */
#include "flow_test.h"

static struct sl_flow *load_diamond(void)
{
	char err[1024] = "";
	struct sl_flow *f = sl_flow_load(SLUICE_EXAMPLES_DIR "/diamond.yaml", err, sizeof(err));

	ck_assert_msg(f != NULL, "%s", err);
	return f;
}

/* A context over flow with bound params (JSON text) and upstream outputs (JSON object text). */
struct fixture {
	struct sl_flow *flow;
	struct fake_up up;
	struct sl_expand_ctx ctx;
};

static void fixture_init(struct fixture *fx, struct sl_flow *flow, const char *given,
			 const char *outputs)
{
	char err[512] = "";
	json_t *g = given ? jparse(given) : NULL;
	json_t *params = NULL;

	ck_assert_msg(sl_flow_bind_params(flow, g, &params, err, sizeof(err)) == SL_OK, "%s", err);
	json_decref(g);
	fx->flow = flow;
	fx->up.flow = flow;
	fx->up.by_name = outputs ? jparse(outputs) : json_object();
	fx->ctx = (struct sl_expand_ctx){.run_id = "r-0193a2b4c5d6-8f3a9c2e11",
					 .flow = flow->name,
					 .intent = "normal",
					 .params = params,
					 .upstream_outputs = fake_outputs,
					 .ud = &fx->up};
}

static void fixture_free(struct fixture *fx)
{
	json_decref(fx->ctx.params);
	json_decref(fx->up.by_name);
	sl_flow_destroy(fx->flow);
}

static struct sl_instance *expand_ok(struct fixture *fx, const char *task, size_t *n)
{
	char err[1024] = "";
	struct sl_instance *inst = (struct sl_instance *)1;
	ssize_t idx = sl_flow_task_index(fx->flow, task);

	ck_assert_int_ge(idx, 0);
	ck_assert_msg(sl_flow_expand(fx->flow, (size_t)idx, &fx->ctx, &inst, n, err, sizeof(err)) ==
			      SL_OK,
		      "expand %s: %s", task, err);
	return inst;
}

static void expand_fails(struct fixture *fx, const char *task, const char *want)
{
	char err[1024] = "";
	struct sl_instance *inst = (struct sl_instance *)1;
	size_t n = 99;
	ssize_t idx = sl_flow_task_index(fx->flow, task);

	ck_assert_int_ge(idx, 0);
	ck_assert(sl_flow_expand(fx->flow, (size_t)idx, &fx->ctx, &inst, &n, err, sizeof(err)) !=
		  SL_OK);
	ck_assert_ptr_null(inst);
	ck_assert_uint_eq(n, 0);
	ck_assert_msg(strstr(err, want) != NULL, "want '%s' in: %s", want, err);
}

START_TEST(diamond_inc_dec)
{
	struct fixture fx;
	struct sl_instance *inst;
	size_t n;
	char want[32];

	fixture_init(&fx, load_diamond(), NULL, NULL);
	inst = expand_ok(&fx, "inc", &n);
	ck_assert_uint_eq(n, 100);
	for (size_t i = 0; i < n; i++) {
		snprintf(want, sizeof(want), "%zu", i);
		ck_assert_int_eq(inst[i].map_index, (int)i);
		ck_assert_uint_eq(inst[i].argc, 6);
		ck_assert_str_eq(inst[i].argv[0], "sh");
		ck_assert_str_eq(inst[i].argv[1], "-c");
		ck_assert_ptr_nonnull(strstr(inst[i].argv[2], "echo $(( $1 + 1 ))"));
		ck_assert_str_eq(inst[i].argv[3], "_");
		ck_assert_str_eq(inst[i].argv[4], want);
		ck_assert_str_eq(inst[i].argv[5], "0.0");
		ck_assert_ptr_null(inst[i].argv[6]);
		ck_assert_uint_eq(inst[i].nenv, 0);
		ck_assert_ptr_null(inst[i].input);
	}
	sl_instances_free(inst, n);

	fx.ctx.params = (json_decref(fx.ctx.params), jparse("{\"n\": 7, \"sleep\": 0.25}"));
	inst = expand_ok(&fx, "dec", &n);
	ck_assert_uint_eq(n, 7);
	ck_assert_str_eq(inst[6].argv[4], "6");
	ck_assert_str_eq(inst[6].argv[5], "0.25");
	sl_instances_free(inst, n);
	fixture_free(&fx);
}
END_TEST

/* The expander fills any slice exactly as the whole expansion does, and refuses a slice
 * past the end. */
START_TEST(expander_slices_match_the_whole)
{
	struct fixture fx;
	struct sl_instance *all, part[7];
	struct sl_expander *x = NULL;
	size_t n, count = 0;
	char err[512] = "";
	ssize_t idx;

	fixture_init(&fx, load_diamond(), "{\"n\": 30}", NULL);
	all = expand_ok(&fx, "inc", &n);
	ck_assert_uint_eq(n, 30);
	idx = sl_flow_task_index(fx.flow, "inc");
	ck_assert_msg(sl_expander_new(fx.flow, (size_t)idx, &fx.ctx, &x, &count, err,
				      sizeof(err)) == SL_OK,
		      "%s", err);
	ck_assert_uint_eq(count, 30);
	for (size_t from = 0; from < 30; from += 7) {
		size_t k = 30 - from < 7 ? 30 - from : 7;

		ck_assert_msg(sl_expander_fill(x, from, k, part, err, sizeof(err)) == SL_OK, "%s",
			      err);
		for (size_t i = 0; i < k; i++) {
			ck_assert_int_eq(part[i].map_index, all[from + i].map_index);
			ck_assert_uint_eq(part[i].argc, all[from + i].argc);
			for (size_t a = 0; a < part[i].argc; a++)
				ck_assert_str_eq(part[i].argv[a], all[from + i].argv[a]);
			ck_assert_str_eq(part[i].input ? part[i].input : "(none)",
					 all[from + i].input ? all[from + i].input : "(none)");
		}
		sl_instances_clear(part, k);
	}
	ck_assert(sl_expander_fill(x, 28, 3, part, err, sizeof(err)) != SL_OK);
	ck_assert_msg(strstr(err, "28..31 of 30"), "%s", err);
	sl_expander_free(x);
	sl_instances_free(all, n);
	fixture_free(&fx);
}
END_TEST

START_TEST(diamond_zip_and_reduce)
{
	struct fixture fx;
	struct sl_instance *inst;
	size_t n;
	char outputs[8192];
	size_t off;
	long total = 0;
	json_t *in;

	/* inc gave x + 1, dec gave x - 1 for x in range(100). */
	off = (size_t)snprintf(outputs, sizeof(outputs), "{\"inc\": [");
	for (int i = 0; i < 100; i++)
		off += (size_t)snprintf(outputs + off, sizeof(outputs) - off, "%s%d", i ? "," : "",
					i + 1);
	off += (size_t)snprintf(outputs + off, sizeof(outputs) - off, "], \"dec\": [");
	for (int i = 0; i < 100; i++)
		off += (size_t)snprintf(outputs + off, sizeof(outputs) - off, "%s%d", i ? "," : "",
					i - 1);
	off += (size_t)snprintf(outputs + off, sizeof(outputs) - off, "], \"add\": [");
	for (int i = 0; i < 100; i++)
		off += (size_t)snprintf(outputs + off, sizeof(outputs) - off, "%s%d", i ? "," : "",
					2 * i);
	snprintf(outputs + off, sizeof(outputs) - off, "]}");
	fixture_init(&fx, load_diamond(), NULL, outputs);

	inst = expand_ok(&fx, "add", &n);
	ck_assert_uint_eq(n, 100);
	for (size_t i = 0; i < n; i++) {
		char x[32], y[32];
		snprintf(x, sizeof(x), "%zu", i + 1);
		snprintf(y, sizeof(y), "%d", (int)i - 1);
		ck_assert_int_eq(inst[i].map_index, (int)i);
		ck_assert_str_eq(inst[i].argv[4], x);
		ck_assert_str_eq(inst[i].argv[5], y);
	}
	sl_instances_free(inst, n);

	inst = expand_ok(&fx, "total", &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(inst[0].map_index, -1);
	ck_assert_ptr_null(inst[0].argv);
	ck_assert_uint_eq(inst[0].argc, 0);
	ck_assert_ptr_nonnull(inst[0].input);
	ck_assert(!strncmp(inst[0].input, "[0,2,4,6,", 9)); /* compact JSON */
	in = jparse(inst[0].input);
	ck_assert_uint_eq(json_array_size(in), 100);
	for (size_t i = 0; i < 100; i++)
		total += (long)json_integer_value(json_array_get(in, i));
	ck_assert_int_eq(total, 9900);
	json_decref(in);
	sl_instances_free(inst, n);
	fixture_free(&fx);
}
END_TEST

START_TEST(mismatched_lengths)
{
	struct fixture fx;

	fixture_init(&fx, load_diamond(), NULL, "{\"inc\": [1, 2, 3], \"dec\": [0, 1]}");
	expand_fails(&fx, "add", "map lists differ in length: 'x' has 3 items, 'y' has 2");
	fixture_free(&fx);
}
END_TEST

START_TEST(empty_lists)
{
	struct fixture fx;
	struct sl_instance *inst;
	size_t n = 99;

	fixture_init(&fx, load_diamond(), "{\"n\": 0}", "{\"inc\": [], \"dec\": [], \"add\": []}");
	inst = expand_ok(&fx, "inc", &n);
	ck_assert_uint_eq(n, 0);
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "add", &n);
	ck_assert_uint_eq(n, 0);
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "total", &n); /* a reduce over nothing still runs, on [] */
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(inst[0].input, "[]");
	sl_instances_free(inst, n);
	fixture_free(&fx);

	fixture_init(&fx, parse_ok("flow: e\ntasks:\n  a: {map: {x: []}, command: [echo, '${x}']}\n"),
		     NULL, NULL);
	inst = expand_ok(&fx, "a", &n);
	ck_assert_uint_eq(n, 0);
	sl_instances_free(inst, n);
	fixture_free(&fx);
}
END_TEST

START_TEST(unmapped_single_instance)
{
	struct fixture fx;
	struct sl_instance *inst;
	size_t n;

	fixture_init(&fx,
		     parse_ok("flow: u\n"
			      "params: {name: world}\n"
			      "tasks:\n"
			      "  a:\n"
			      "    command: [echo, 'hello ${params.name}', '${run.id}']\n"
			      "    env: {WHO: '${params.name}', FLOW: '${run.flow}', N: '${42}'}\n"
			      "  b: {builtin: sleep, input: 1.5}\n"
			      "  c: {builtin: echo, input: '${tasks.a.output}'}\n"
			      "  d: {builtin: echo, input: plain}\n"),
		     NULL, "{\"a\": [{\"k\": [1, \"x\"]}]}");
	inst = expand_ok(&fx, "a", &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(inst[0].map_index, -1);
	ck_assert_uint_eq(inst[0].argc, 3);
	ck_assert_str_eq(inst[0].argv[1], "hello world");
	ck_assert_str_eq(inst[0].argv[2], "r-0193a2b4c5d6-8f3a9c2e11");
	ck_assert_ptr_null(inst[0].argv[3]);
	ck_assert_uint_eq(inst[0].nenv, 3);
	ck_assert_str_eq(inst[0].env[0], "WHO=world");
	ck_assert_str_eq(inst[0].env[1], "FLOW=u");
	ck_assert_str_eq(inst[0].env[2], "N=42");
	ck_assert_ptr_null(inst[0].input);
	sl_instances_free(inst, n);

	inst = expand_ok(&fx, "b", &n);
	ck_assert_str_eq(inst[0].input, "1.5");
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "c", &n);
	ck_assert_str_eq(inst[0].input, "{\"k\":[1,\"x\"]}");
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "d", &n);
	ck_assert_str_eq(inst[0].input, "\"plain\"");
	sl_instances_free(inst, n);
	fixture_free(&fx);
}
END_TEST

START_TEST(injection_safe_argv)
{
	struct fixture fx;
	struct sl_instance *inst;
	size_t n;
	const char *evil[] = {"a; rm -rf /", "$(reboot)", "`id`", "two words", "'\"", "${params.x}",
			      "a\nb", "--flag=1 --other", "*", ""};

	fixture_init(&fx,
		     parse_ok("flow: inj\n"
			      "params: {name: x, items: {type: list, default: []}}\n"
			      "tasks:\n"
			      "  one:\n"
			      "    command: [sh, -c, 'printf %s \"$1\"', _, '${params.name}']\n"
			      "    env: {NAME: '${params.name}'}\n"
			      "  each:\n"
			      "    map: {v: '${params.items}'}\n"
			      "    command: [echo, '${v}', 'pre-${v}']\n"),
		     NULL, NULL);
	for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
		char env[64];
		json_object_set_new(fx.ctx.params, "name", json_string(evil[i]));
		inst = expand_ok(&fx, "one", &n);
		ck_assert_uint_eq(inst[0].argc, 5);
		ck_assert_str_eq(inst[0].argv[2], "printf %s \"$1\"");
		ck_assert_str_eq(inst[0].argv[4], evil[i]);
		snprintf(env, sizeof(env), "NAME=%s", evil[i]);
		ck_assert_str_eq(inst[0].env[0], env);
		sl_instances_free(inst, n);
	}

	json_object_set_new(fx.ctx.params, "items",
			    json_pack("[s,s,i]", "a; rm -rf /", "$(reboot) x", 3));
	inst = expand_ok(&fx, "each", &n);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(inst[0].argc, 3);
	ck_assert_str_eq(inst[0].argv[1], "a; rm -rf /");
	ck_assert_str_eq(inst[0].argv[2], "pre-a; rm -rf /");
	ck_assert_str_eq(inst[1].argv[1], "$(reboot) x");
	ck_assert_str_eq(inst[2].argv[1], "3");
	sl_instances_free(inst, n);

	/* A value with a NUL byte would be cut short by execve: refused. */
	json_object_set_new(fx.ctx.params, "name", json_stringn("a\0b", 3));
	expand_fails(&fx, "one", "NUL");
	fixture_free(&fx);
}
END_TEST

START_TEST(map_sources)
{
	struct fixture fx;
	struct sl_instance *inst;
	size_t n;

	fixture_init(&fx,
		     parse_ok("flow: src\n"
			      "params:\n"
			      "  csv: {type: any, default: '[\"p\", \"q\"]'}\n"
			      "  n: 2\n"
			      "  rows: {type: list, default: [{id: 7}, {id: 8}]}\n"
			      "tasks:\n"
			      "  lit: {map: {x: [a, 1, true]}, command: [echo, '${x}']}\n"
			      "  json: {map: {x: '[10, 20]'}, command: [echo, '${x}']}\n"
			      "  str: {map: {x: '${params.csv}'}, command: [echo, '${x}']}\n"
			      "  rng: {map: {x: 'range(${params.n}, 5)'}, command: [echo, '${x}']}\n"
			      "  lst: {map: {x: '[${params.n}, \"b\"]'}, command: [echo, '${x}']}\n"
			      "  obj: {map: {r: '${params.rows}'}, command: [echo, '${r.id}', '${r}']}\n"
			      "  up: {map: {o: '${tasks.lit.outputs}'}, command: [echo, '${o}']}\n"
			      "  bad: {map: {x: '${params.n}'}, command: [echo, '${x}']}\n"
			      "  gone: {map: {x: '${tasks.json.outputs}'}, command: [echo]}\n"),
		     NULL, "{\"lit\": [\"o1\", \"o2\"]}");
	inst = expand_ok(&fx, "lit", &n);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(inst[0].argv[1], "a");
	ck_assert_str_eq(inst[1].argv[1], "1");
	ck_assert_str_eq(inst[2].argv[1], "true");
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "json", &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(inst[1].argv[1], "20");
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "str", &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(inst[1].argv[1], "q");
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "rng", &n);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(inst[0].argv[1], "2");
	ck_assert_str_eq(inst[2].argv[1], "4");
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "lst", &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(inst[0].argv[1], "2");
	ck_assert_str_eq(inst[1].argv[1], "b");
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "obj", &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(inst[1].argv[1], "8");
	ck_assert_str_eq(inst[1].argv[2], "{\"id\":8}");
	sl_instances_free(inst, n);
	inst = expand_ok(&fx, "up", &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(inst[1].argv[1], "o2");
	sl_instances_free(inst, n);
	expand_fails(&fx, "bad", "task 'bad' map 'x': expected a list, got 2");
	expand_fails(&fx, "gone", "the outputs of task 'json' are not known");
	fixture_free(&fx);
}
END_TEST

START_TEST(bad_index)
{
	struct fixture fx;
	struct sl_instance *inst = NULL;
	size_t n = 5;
	char err[128];

	fixture_init(&fx, load_diamond(), NULL, NULL);
	ck_assert_int_eq(sl_flow_expand(fx.flow, 4, &fx.ctx, &inst, &n, err, sizeof(err)),
			 SL_ERR_INVALID);
	ck_assert_ptr_null(inst);
	ck_assert_uint_eq(n, 0);
	sl_instances_free(NULL, 0);
	fixture_free(&fx);
}
END_TEST

static Suite *expand_suite(void)
{
	Suite *s = suite_create("flow_expand");
	TCase *tc = tcase_create("expand");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, diamond_inc_dec);
	tcase_add_test(tc, diamond_zip_and_reduce);
	tcase_add_test(tc, expander_slices_match_the_whole);
	tcase_add_test(tc, mismatched_lengths);
	tcase_add_test(tc, empty_lists);
	tcase_add_test(tc, unmapped_single_instance);
	tcase_add_test(tc, injection_safe_argv);
	tcase_add_test(tc, map_sources);
	tcase_add_test(tc, bad_index);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(expand_suite)
