/* fuzz_template.c - harness: the template and expression evaluator on fuzzed text against a
 * fixed context (params, upstream outputs, run fields, map variables), in its three uses: a
 * template (sl_template_eval), a map source (sl_tmpl_compile(as_source) + sl_tmpl_eval_list)
 * and a bare condition as in when: and route: (sl_expr_parse + sl_expr_eval). */
#include <jansson.h>
#include <string.h>

#include "flow_internal.h"
#include "fuzz.h"
#include "sluice/flow.h"

static struct sl_flow *flow;
static json_t *params, *vars, *outputs; /* outputs: task name -> array */
static struct sl_expand_ctx ctx;

static json_t *fixed_outputs(void *ud, size_t idx)
{
	json_t *v = json_object_get(outputs, flow->tasks[idx].name);

	(void)ud;
	return v ? json_incref(v) : NULL; /* "unknown" has no outputs yet */
}

static json_t *must_parse(const char *text)
{
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

	FUZZ_CHECK(v != NULL, "bad fixed JSON: %s", text);
	return v;
}

static void setup(void)
{
	static const char yaml[] = "flow: t\n"
				   "params: {n: 3, name: bob, cfg: {}, items: [], s: ''}\n"
				   "tasks:\n"
				   "  single: {builtin: noop}\n"
				   "  many: {builtin: noop, map: {x: [1, 2]}}\n"
				   "  unknown: {builtin: noop}\n";
	char err[512];

	if (flow)
		return;
	flow = sl_flow_parse(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
	FUZZ_CHECK(flow != NULL, "fixed flow: %s", err);
	outputs = must_parse("{\"single\": [{\"rows\": 7, \"s\": \"x\\u0000y\"}],"
			     " \"many\": [10, 20.5, \"thirty\", [40], {\"k\": null}]}");
	params = must_parse("{\"n\": 3, \"name\": \"bob\", \"cfg\": {\"a\": {\"b\": [5, 6]}},"
			    " \"items\": [\"x\", \"y\", \"z\"], \"s\": \"a; rm -rf /\","
			    " \"f\": 2.5, \"big\": 1e300, \"neg\": -9223372036854775807,"
			    " \"t\": 0.1, \"w\": 100.0, \"json\": \"[1, 2]\"}");
	vars = must_parse("{\"x\": {\"k\": true}, \"i\": 2, \"l\": [1, [2, [3]]], \"e\": \"\"}");
	ctx = (struct sl_expand_ctx){
		.run_id = "r-1", .flow = "t", .intent = "normal", .params = params,
		.upstream_outputs = fixed_outputs, .flowdef = flow,
	};
}

static void eval_template(const char *tmpl)
{
	json_t *out = (json_t *)1;
	char err[512] = "";
	enum sl_err rc = sl_template_eval(tmpl, &ctx, vars, &out, err, sizeof(err));
	char *text;

	if (rc != SL_OK) {
		FUZZ_CHECK(out == NULL && err[0], "failed eval: out %p, err '%s'", (void *)out,
			   err);
		return;
	}
	FUZZ_CHECK(out != NULL, "eval succeeded without a value");
	/* What the expansion does with every value: render it as argv text. */
	text = sl_value_to_text(out);
	free(text);
	json_decref(out);
}

static void eval_source(const char *tmpl)
{
	struct sl_tmpl *t;
	json_t *list = (json_t *)1;
	char err[512] = "";

	if (!(t = sl_tmpl_compile(tmpl, 1, err, sizeof(err)))) {
		FUZZ_CHECK(err[0], "compile failed without a message");
		return;
	}
	if (sl_tmpl_eval_list(t, &ctx, &list, err, sizeof(err)) == SL_OK)
		FUZZ_CHECK(json_is_array(list), "a map source gave a non-list");
	else
		FUZZ_CHECK(list == NULL && err[0], "failed list eval: err '%s'", err);
	json_decref(list);
	sl_tmpl_free(t);
}

/* The input as a bare expression, as a `when:` or `route:` condition is evaluated. */
static void eval_condition(const char *text)
{
	struct sl_expr *e;
	enum sl_err rc = SL_OK;
	json_t *v;
	char err[512] = "";

	if (!(e = sl_expr_parse(text, strlen(text), err, sizeof(err)))) {
		FUZZ_CHECK(err[0], "expression parse failed without a message");
		return;
	}
	if ((v = sl_expr_eval(e, &ctx, vars, &rc, err, sizeof(err)))) {
		FUZZ_CHECK(sl_json_truthy(v) == 0 || sl_json_truthy(v) == 1, "truthiness");
		json_decref(v);
	} else {
		FUZZ_CHECK(rc != SL_OK && err[0], "eval failed without an error: rc %d", (int)rc);
	}
	sl_expr_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *tmpl;

	setup();
	/* Templates come from YAML strings: NUL-terminated, at most a flow file long. */
	if (size > SL_FLOW_MAX_YAML || !(tmpl = malloc(size + 1)))
		return 0;
	memcpy(tmpl, data, size);
	tmpl[size] = '\0';
	eval_template(tmpl);
	eval_source(tmpl);
	eval_condition(tmpl);
	free(tmpl);
	return 0;
}
