/* test_template.c - templates and the expression language: whole values, embedding, names,
 * access, functions, literals, errors, rendering as text. */
#include "flow_test.h"

static struct sl_flow *flow;
static struct fake_up up;
static struct sl_expand_ctx ctx;

static void setup(void)
{
	flow = parse_ok("flow: t\n"
			"params: {n: 3, name: bob, cfg: {}, items: [], s: ''}\n"
			"tasks:\n"
			"  single: {builtin: noop}\n"
			"  many: {builtin: noop, map: {x: [1, 2]}}\n"
			"  unknown: {builtin: noop}\n");
	up.flow = flow;
	up.by_name = jparse("{\"single\": [{\"rows\": 7}], \"many\": [10, 20]}");
	ctx = (struct sl_expand_ctx){
		.run_id = "r-1",
		.flow = "t",
		.intent = "normal",
		.params = jparse("{\"n\": 3, \"name\": \"bob\", \"cfg\": {\"a\": {\"b\": [5, 6]}},"
				 " \"items\": [\"x\", \"y\", \"z\"], \"s\": \"a; rm -rf /\","
				 " \"f\": 2.5, \"big\": 1e300, \"t\": 0.1, \"w\": 100.0}"),
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

/* Evaluates tmpl with vars (JSON text or NULL), expecting the JSON value want. */
static void eval_is(const char *tmpl, const char *vars, const char *want)
{
	char err[512] = "";
	json_t *v = vars ? jparse(vars) : NULL;
	json_t *out = NULL;
	enum sl_err rc = sl_template_eval(tmpl, &ctx, v, &out, err, sizeof(err));
	char *got;

	ck_assert_msg(rc == SL_OK, "%s: %s", tmpl, err);
	got = json_dumps(out, JSON_ENCODE_ANY | JSON_COMPACT);
	ck_assert_msg(jeq(out, want), "%s: want %s, got %s", tmpl, want, got);
	free(got);
	json_decref(out);
	json_decref(v);
}

static void eval_fails(const char *tmpl, enum sl_err want_rc, const char *want)
{
	char err[512] = "";
	json_t *out = (json_t *)1;
	enum sl_err rc = sl_template_eval(tmpl, &ctx, NULL, &out, err, sizeof(err));

	ck_assert_msg(rc == want_rc, "%s: rc %d, want %d (%s)", tmpl, rc, want_rc, err);
	ck_assert_ptr_null(out);
	ck_assert_msg(strstr(err, want) != NULL, "%s: want '%s' in: %s", tmpl, want, err);
}

START_TEST(whole_value_keeps_type)
{
	eval_is("${params.n}", NULL, "3");
	eval_is("${params.items}", NULL, "[\"x\", \"y\", \"z\"]");
	eval_is("${params.cfg}", NULL, "{\"a\": {\"b\": [5, 6]}}");
	eval_is("${ params.f }", NULL, "2.5");
	eval_is("${x}", "{\"x\": {\"k\": true}}", "{\"k\": true}");
	eval_is("${params}", NULL, "{\"n\": 3, \"name\": \"bob\", \"cfg\": {\"a\": {\"b\": [5, 6]}},"
				   " \"items\": [\"x\", \"y\", \"z\"], \"s\": \"a; rm -rf /\","
				   " \"f\": 2.5, \"big\": 1e300, \"t\": 0.1, \"w\": 100.0}");
}
END_TEST

START_TEST(embedded_renders_text)
{
	eval_is("n=${params.n}!", NULL, "\"n=3!\"");
	eval_is("hi ${params.name}, ${params.name}", NULL, "\"hi bob, bob\"");
	eval_is("${params.n}${params.n}", NULL, "\"33\"");
	eval_is("list: ${params.items}", NULL, "\"list: [\\\"x\\\",\\\"y\\\",\\\"z\\\"]\"");
	eval_is("f=${params.f} t=${params.t} w=${params.w}", NULL, "\"f=2.5 t=0.1 w=100.0\"");
	eval_is("plain text", NULL, "\"plain text\"");
	eval_is("", NULL, "\"\"");
	eval_is("cost: $5, ${'$'}{x}", NULL, "\"cost: $5, ${x}\"");
	eval_is("echo $${HOME} $$x", NULL, "\"echo ${HOME} $$x\"");
	eval_is("${\"a}b\"}", NULL, "\"a}b\"");
	eval_is("[${'{'}]", NULL, "\"[{]\"");
}
END_TEST

START_TEST(names_and_access)
{
	eval_is("${params.cfg.a.b[1]}", NULL, "6");
	eval_is("${params.cfg[\"a\"]['b'][0]}", NULL, "5");
	eval_is("${params.items[-1]}", NULL, "\"z\"");
	eval_is("${params.cfg.missing}", NULL, "null");
	eval_is("${params.cfg.a['missing']}", NULL, "null");
	eval_is("${params.items[len(params.cfg)]}", NULL, "\"y\"");
	eval_is("${[params.n, params.name][1]}", NULL, "\"bob\"");
}
END_TEST

START_TEST(vars_first)
{
	/* A map variable named like a parameter wins over params.NAME's object. */
	eval_is("${params}", "{\"params\": 1}", "1");
	eval_is("${item.id}", "{\"item\": {\"id\": \"i-1\"}}", "\"i-1\"");
	eval_is("${x[0]}-${y}", "{\"x\": [9], \"y\": \"b\"}", "\"9-b\"");
}
END_TEST

START_TEST(tasks_and_run)
{
	eval_is("${tasks.single.outputs}", NULL, "[{\"rows\": 7}]");
	eval_is("${tasks.single.output}", NULL, "{\"rows\": 7}");
	eval_is("${tasks.single.output.rows}", NULL, "7");
	eval_is("${tasks.many.outputs}", NULL, "[10, 20]");
	eval_is("${tasks.many.output}", NULL, "[10, 20]");
	eval_is("${tasks.many.outputs[1]}", NULL, "20");
	eval_is("${len(tasks.many.outputs)}", NULL, "2");
	eval_is("${run.id}/${run.flow}/${run.intent}", NULL, "\"r-1/t/normal\"");
	eval_is("${run}", NULL, "{\"id\": \"r-1\", \"flow\": \"t\", \"intent\": \"normal\"}");
	eval_fails("${tasks.unknown.outputs}", SL_ERR_NOT_FOUND,
		   "the outputs of task 'unknown' are not known");
	eval_fails("${tasks.nope.outputs}", SL_ERR_NOT_FOUND, "unknown task 'nope'");
	eval_fails("${tasks.single}", SL_ERR_INVALID, "tasks.NAME.outputs");
	ctx.flowdef = NULL;
	eval_fails("${tasks.single.outputs}", SL_ERR_INVALID, "no flow");
}
END_TEST

START_TEST(range_forms)
{
	eval_is("${range(3)}", NULL, "[0, 1, 2]");
	eval_is("${range(params.n)}", NULL, "[0, 1, 2]");
	eval_is("${range(2, 5)}", NULL, "[2, 3, 4]");
	eval_is("${range(10, 0, -3)}", NULL, "[10, 7, 4, 1]");
	eval_is("${range(0, 10, 4)}", NULL, "[0, 4, 8]");
	eval_is("${range(5, 2)}", NULL, "[]");
	eval_is("${range(0)}", NULL, "[]");
	eval_is("${range(-2)}", NULL, "[]");
	eval_is("${range(3.0)}", NULL, "[0, 1, 2]");
	eval_is("${range(${params.n})}", NULL, "[0, 1, 2]");
	eval_is("${range(1, 3)[1]}", NULL, "2");
	eval_fails("${range(1, 5, 0)}", SL_ERR_INVALID, "step must not be 0");
	eval_fails("${range(\"3\")}", SL_ERR_INVALID, "range() takes ints, got a string");
	eval_fails("${range(1.5)}", SL_ERR_INVALID, "range() takes ints, got a float");
	eval_fails("${range(0, 1000001)}", SL_ERR_TOO_BIG, "max 1000000");
	eval_fails("${range(-9223372036854775807, 9223372036854775807)}", SL_ERR_TOO_BIG, "max");
	eval_fails("${range(1, 2, 3, 4)}", SL_ERR_PARSE, "range() takes 1 to 3 arguments");
	eval_fails("${range()}", SL_ERR_PARSE, "range() takes 1 to 3 arguments");
}
END_TEST

START_TEST(range_at_the_cap)
{
	/* The cap counts items, not the span; exactly at the cap would allocate 10M values. */
	eval_is("${len(range(0, 2000000, 2))}", NULL, "1000000");
	eval_fails("${range(0, 20000001, 2)}", SL_ERR_TOO_BIG, "would give 10000001 items");
	eval_fails("${range(10000001, 0, -1)}", SL_ERR_TOO_BIG, "would give 10000001 items");
}
END_TEST

START_TEST(len_forms)
{
	eval_is("${len(params.items)}", NULL, "3");
	eval_is("${len(params.cfg)}", NULL, "1");
	eval_is("${len(params.name)}", NULL, "3");
	eval_is("${len(\"h\\u00e9llo\")}", NULL, "5"); /* characters, not bytes */
	eval_is("${len([])}", NULL, "0");
	eval_fails("${len(params.n)}", SL_ERR_INVALID, "len() of an int");
	eval_fails("${len(null)}", SL_ERR_INVALID, "len() of null");
}
END_TEST

START_TEST(literals)
{
	eval_is("${42}", NULL, "42");
	eval_is("${-7}", NULL, "-7");
	eval_is("${1.5e3}", NULL, "1500.0");
	eval_is("${\"a\\tb\\\"c\"}", NULL, "\"a\\tb\\\"c\"");
	eval_is("${'it\\'s'}", NULL, "\"it's\"");
	eval_is("${\"\\ud83d\\ude00\"}", NULL, "\"\\ud83d\\ude00\"");
	eval_is("${true}", NULL, "true");
	eval_is("${false}", NULL, "false");
	eval_is("${null}", NULL, "null");
	eval_is("${[1, \"two\", [3], null]}", NULL, "[1, \"two\", [3], null]");
	eval_is("${(params.n)}", NULL, "3");
	eval_is("x${null}y${true}", NULL, "\"xnullytrue\"");
}
END_TEST

START_TEST(syntax_errors)
{
	eval_fails("${}", SL_ERR_PARSE, "empty expression");
	eval_fails("${params.n", SL_ERR_PARSE, "unterminated '${'");
	eval_fails("${\"abc}", SL_ERR_PARSE, "unterminated '${'");
	eval_fails("${params.}", SL_ERR_PARSE, "expected a name after '.'");
	eval_fails("${1 2}", SL_ERR_PARSE, "found a number after the expression");
	eval_fails("${params.items[0}", SL_ERR_PARSE, "expected ']'");
	eval_fails("${a | b}", SL_ERR_PARSE, "'|' is not an operator (use '||')");
	eval_fails("${a ? b}", SL_ERR_PARSE, "unexpected character '?'");
	eval_fails("${system(\"ls\")}", SL_ERR_PARSE, "unknown function 'system'");
	eval_fails("${\"\\q\"}", SL_ERR_PARSE, "unknown escape");
	eval_fails("${\"\\u0000\"}", SL_ERR_PARSE, "NUL");
	eval_fails("${99999999999999999999}", SL_ERR_PARSE, "number out of range");
	eval_fails("${12abc}", SL_ERR_PARSE, "bad number");
	eval_fails("${{}", SL_ERR_PARSE, "unterminated '${'");
	eval_fails("${(}", SL_ERR_PARSE, "expected a value");
	eval_fails("${params.n - 1}", SL_ERR_PARSE, "unexpected character '-'");
}
END_TEST

START_TEST(nesting_is_capped)
{
	char tmpl[512];
	size_t off = (size_t)snprintf(tmpl, sizeof(tmpl), "${");

	for (int i = 0; i < 100; i++)
		tmpl[off++] = '(';
	tmpl[off++] = '1';
	for (int i = 0; i < 100; i++)
		tmpl[off++] = ')';
	tmpl[off++] = '}';
	tmpl[off] = '\0';
	eval_fails(tmpl, SL_ERR_PARSE, "nested too deeply");
}
END_TEST

START_TEST(eval_errors)
{
	eval_fails("${params.nope}", SL_ERR_NOT_FOUND, "unknown param 'nope'");
	eval_fails("${who}", SL_ERR_NOT_FOUND, "unknown name 'who'");
	eval_fails("${run.user}", SL_ERR_NOT_FOUND, "unknown field run.user");
	eval_fails("${params.items[3]}", SL_ERR_INVALID, "index 3 out of range (length 3)");
	eval_fails("${params.items[-4]}", SL_ERR_INVALID, "out of range");
	eval_fails("${params.items[\"a\"]}", SL_ERR_INVALID, "cannot index a list with a string");
	eval_fails("${params.n.x}", SL_ERR_INVALID, "cannot take .x of an int");
	eval_fails("${tasks}", SL_ERR_INVALID, "tasks.NAME.outputs");
}
END_TEST

START_TEST(injection_stays_one_value)
{
	char *text;

	eval_is("${params.s}", NULL, "\"a; rm -rf /\"");
	eval_is("--name=${params.s}", NULL, "\"--name=a; rm -rf /\"");
	/* Evaluation is a single pass: a value that looks like a template stays text. */
	eval_is("${x}", "{\"x\": \"${params.n} $(reboot)\"}", "\"${params.n} $(reboot)\"");
	eval_is("<${x}>", "{\"x\": \"${params.n}\"}", "\"<${params.n}>\"");
	text = sl_value_to_text(json_object_get(ctx.params, "s"));
	ck_assert_str_eq(text, "a; rm -rf /");
	free(text);
}
END_TEST

START_TEST(no_context)
{
	char err[256] = "";
	json_t *out = NULL;

	ck_assert_int_eq(sl_template_eval("${range(2)}-${len('ab')}", NULL, NULL, &out, err,
					  sizeof(err)),
			 SL_OK);
	ck_assert(jeq(out, "\"[0,1]-2\""));
	json_decref(out);
	ck_assert_int_eq(sl_template_eval("${params.n}", NULL, NULL, &out, err, sizeof(err)),
			 SL_ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err, "no params"));
	ck_assert_int_eq(sl_template_eval("${run.id}", NULL, NULL, &out, err, sizeof(err)), SL_OK);
	ck_assert(json_is_null(out));
	json_decref(out);
}
END_TEST

START_TEST(value_to_text)
{
	struct {
		const char *json;
		const char *text;
	} cases[] = {
		{"\"raw \\\"string\\\"\"", "raw \"string\""},
		{"5", "5"},
		{"-12", "-12"},
		{"2.5", "2.5"},
		{"0.1", "0.1"},
		{"100.0", "100.0"},
		{"1e300", "1e+300"},
		{"true", "true"},
		{"null", "null"},
		{"[1, \"a\", {\"b\": null}]", "[1,\"a\",{\"b\":null}]"},
		{"{}", "{}"},
		{"\"\"", ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *v = jparse(cases[i].json);
		char *t = sl_value_to_text(v);
		ck_assert_msg(t && !strcmp(t, cases[i].text), "%s: got %s", cases[i].json, t);
		free(t);
		json_decref(v);
	}
	{
		char *t = sl_value_to_text(NULL);
		ck_assert_str_eq(t, "null");
		free(t);
	}
}
END_TEST

static Suite *template_suite(void)
{
	Suite *s = suite_create("flow_template");
	TCase *tc = tcase_create("template");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, whole_value_keeps_type);
	tcase_add_test(tc, embedded_renders_text);
	tcase_add_test(tc, names_and_access);
	tcase_add_test(tc, vars_first);
	tcase_add_test(tc, tasks_and_run);
	tcase_add_test(tc, range_forms);
	tcase_add_test(tc, range_at_the_cap);
	tcase_add_test(tc, len_forms);
	tcase_add_test(tc, literals);
	tcase_add_test(tc, syntax_errors);
	tcase_add_test(tc, nesting_is_capped);
	tcase_add_test(tc, eval_errors);
	tcase_add_test(tc, injection_stays_one_value);
	tcase_add_test(tc, no_context);
	tcase_add_test(tc, value_to_text);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(template_suite)
