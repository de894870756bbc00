/* test_params.c - binding given parameter values to a flow: defaults, types, errors. */
#include "flow_test.h"

static const char *flow_yaml = "flow: p\n"
			       "params:\n"
			       "  n: {type: int, default: 100}\n"
			       "  path: {type: string}\n"
			       "  ratio: {type: float, default: 0.5}\n"
			       "  on: {type: bool, default: false}\n"
			       "  items: {type: list, default: [a, b]}\n"
			       "  extra: {type: any, default: {k: v}}\n"
			       "  name: hello\n"
			       "tasks:\n"
			       "  a: {builtin: noop}\n";

/* Binds the JSON text given; returns the result or NULL with err filled. */
static json_t *bind(struct sl_flow *f, const char *given, enum sl_err *rc, char *err,
		    size_t errlen)
{
	json_t *g = given ? jparse(given) : NULL;
	json_t *out = (json_t *)1;

	*rc = sl_flow_bind_params(f, g, &out, err, errlen);
	json_decref(g);
	if (*rc != SL_OK)
		ck_assert_ptr_null(out);
	return out;
}

static void bind_bad(struct sl_flow *f, const char *given, const char *want)
{
	char err[512] = "";
	enum sl_err rc;
	json_t *out = bind(f, given, &rc, err, sizeof(err));

	ck_assert_ptr_null(out);
	ck_assert_int_eq(rc, SL_ERR_INVALID);
	ck_assert_msg(strstr(err, want) != NULL, "want '%s' in: %s", want, err);
}

START_TEST(defaults_filled)
{
	struct sl_flow *f = parse_ok(flow_yaml);
	char err[512] = "";
	enum sl_err rc;
	json_t *out = bind(f, "{\"path\": \"/data/in.csv\"}", &rc, err, sizeof(err));

	ck_assert_msg(rc == SL_OK, "%s", err);
	ck_assert(jeq(out, "{\"n\": 100, \"path\": \"/data/in.csv\", \"ratio\": 0.5, \"on\": false,"
			   " \"items\": [\"a\", \"b\"], \"extra\": {\"k\": \"v\"}, \"name\": \"hello\"}"));
	/* The result is a copy: changing it leaves the flow's defaults alone. */
	json_array_append_new(json_object_get(out, "items"), json_string("c"));
	ck_assert(jeq(f->params[4].def, "[\"a\", \"b\"]"));
	json_decref(out);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(given_values_and_coercion)
{
	struct sl_flow *f = parse_ok(flow_yaml);
	char err[512] = "";
	enum sl_err rc;
	json_t *out = bind(f,
			   "{\"n\": \"10\", \"path\": \"p\", \"ratio\": \"2.5\", \"on\": \"true\","
			   " \"items\": \"[1, 2]\", \"extra\": [null], \"name\": \"x y; z\"}",
			   &rc, err, sizeof(err));

	ck_assert_msg(rc == SL_OK, "%s", err);
	ck_assert(json_is_integer(json_object_get(out, "n")));
	ck_assert_int_eq(json_integer_value(json_object_get(out, "n")), 10);
	ck_assert(json_is_real(json_object_get(out, "ratio")));
	ck_assert(json_real_value(json_object_get(out, "ratio")) == 2.5);
	ck_assert(json_is_true(json_object_get(out, "on")));
	ck_assert(jeq(json_object_get(out, "items"), "[1, 2]"));
	ck_assert(jeq(json_object_get(out, "extra"), "[null]"));
	ck_assert_str_eq(json_string_value(json_object_get(out, "name")), "x y; z");
	json_decref(out);

	/* Numbers as numbers: an int for float becomes a float; an integral float is an int. */
	out = bind(f, "{\"n\": 7.0, \"path\": \"p\", \"ratio\": 3, \"on\": false}", &rc, err,
		   sizeof(err));
	ck_assert_msg(rc == SL_OK, "%s", err);
	ck_assert(json_is_integer(json_object_get(out, "n")));
	ck_assert_int_eq(json_integer_value(json_object_get(out, "n")), 7);
	ck_assert(json_is_real(json_object_get(out, "ratio")));
	ck_assert(json_real_value(json_object_get(out, "ratio")) == 3.0);
	ck_assert(json_is_false(json_object_get(out, "on")));
	json_decref(out);

	out = bind(f, "{\"n\": \"-42\", \"path\": \"\"}", &rc, err, sizeof(err));
	ck_assert_msg(rc == SL_OK, "%s", err);
	ck_assert_int_eq(json_integer_value(json_object_get(out, "n")), -42);
	json_decref(out);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(errors)
{
	struct sl_flow *f = parse_ok(flow_yaml);

	bind_bad(f, "{}", "missing required param 'path' (string) for flow 'p'");
	bind_bad(f, NULL, "missing required param 'path'");
	bind_bad(f, "{\"path\": \"p\", \"nope\": 1}",
		 "unknown param 'nope' for flow 'p' (declared: n, path, ratio, on, items, extra, "
		 "name)");
	bind_bad(f, "{\"path\": \"p\", \"n\": \"abc\"}", "param 'n': expected int, got a string \"abc\"");
	bind_bad(f, "{\"path\": \"p\", \"n\": \"10x\"}", "param 'n': expected int");
	bind_bad(f, "{\"path\": \"p\", \"n\": 1.5}", "param 'n': expected int, got a float 1.5");
	bind_bad(f, "{\"path\": \"p\", \"n\": \"\"}", "param 'n': expected int");
	bind_bad(f, "{\"path\": \"p\", \"n\": \"99999999999999999999\"}", "param 'n': expected int");
	bind_bad(f, "{\"path\": 5}", "param 'path': expected string, got an int 5");
	bind_bad(f, "{\"path\": null}", "param 'path': expected string, got null");
	bind_bad(f, "{\"path\": \"p\", \"ratio\": \"fast\"}", "param 'ratio': expected float");
	bind_bad(f, "{\"path\": \"p\", \"ratio\": \"nan\"}", "param 'ratio': expected float");
	bind_bad(f, "{\"path\": \"p\", \"on\": \"yes\"}", "param 'on': expected bool");
	bind_bad(f, "{\"path\": \"p\", \"on\": 1}", "param 'on': expected bool");
	bind_bad(f, "{\"path\": \"p\", \"items\": \"a,b\"}", "param 'items': expected list");
	bind_bad(f, "{\"path\": \"p\", \"items\": \"{}\"}", "param 'items': expected list");
	bind_bad(f, "[1]", "params must be a JSON object");
	sl_flow_destroy(f);

	f = parse_ok("flow: none\ntasks:\n  a: {builtin: noop}\n");
	bind_bad(f, "{\"x\": 1}", "unknown param 'x' for flow 'none' (declared: none)");
	sl_flow_destroy(f);
}
END_TEST

START_TEST(no_params)
{
	struct sl_flow *f = parse_ok("flow: none\ntasks:\n  a: {builtin: noop}\n");
	char err[256] = "";
	enum sl_err rc;
	json_t *out = bind(f, NULL, &rc, err, sizeof(err));

	ck_assert_int_eq(rc, SL_OK);
	ck_assert(jeq(out, "{}"));
	json_decref(out);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(type_names)
{
	ck_assert_str_eq(sl_param_type_name(SL_PARAM_ANY), "any");
	ck_assert_str_eq(sl_param_type_name(SL_PARAM_INT), "int");
	ck_assert_str_eq(sl_param_type_name(SL_PARAM_FLOAT), "float");
	ck_assert_str_eq(sl_param_type_name(SL_PARAM_STRING), "string");
	ck_assert_str_eq(sl_param_type_name(SL_PARAM_BOOL), "bool");
	ck_assert_str_eq(sl_param_type_name(SL_PARAM_LIST), "list");
	ck_assert_str_eq(sl_param_type_name((enum sl_param_type)42), "?");
}
END_TEST

START_TEST(defaults_are_typed)
{
	/* A default is converted to the declared type when the flow is parsed. */
	struct sl_flow *f = parse_ok("flow: d\n"
				     "params:\n"
				     "  n: {type: int, default: \"12\"}\n"
				     "  r: {type: float, default: 2}\n"
				     "  l: {type: list, default: '[1]'}\n"
				     "  q: {default: quoted}\n"
				     "  h: 0x1f\n"
				     "  s: \"007\"\n"
				     "tasks:\n"
				     "  a: {builtin: noop}\n");

	ck_assert(jeq(f->params[0].def, "12"));
	ck_assert(json_is_real(f->params[1].def));
	ck_assert(jeq(f->params[2].def, "[1]"));
	ck_assert_int_eq(f->params[3].type, SL_PARAM_STRING);
	ck_assert(jeq(f->params[4].def, "31"));
	ck_assert_int_eq(f->params[5].type, SL_PARAM_STRING);
	ck_assert(jeq(f->params[5].def, "\"007\""));
	sl_flow_destroy(f);
}
END_TEST

static Suite *params_suite(void)
{
	Suite *s = suite_create("flow_params");
	TCase *tc = tcase_create("params");

	tcase_add_test(tc, defaults_filled);
	tcase_add_test(tc, given_values_and_coercion);
	tcase_add_test(tc, errors);
	tcase_add_test(tc, no_params);
	tcase_add_test(tc, type_names);
	tcase_add_test(tc, defaults_are_typed);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(params_suite)
