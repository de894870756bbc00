/* fuzz_params.c - harness: sl_flow_bind_params() with a fuzzed JSON object (what the CLI's -p
 * values and a RunRequest's params become) against flows declaring every parameter type. */
#include <jansson.h>
#include <string.h>

#include "fuzz.h"
#include "sluice/flow.h"

static const char *const flow_yaml[] = {
	/* every type, all required */
	"flow: required\n"
	"params:\n"
	"  i: {type: int}\n"
	"  f: {type: float}\n"
	"  s: {type: string}\n"
	"  b: {type: bool}\n"
	"  l: {type: list}\n"
	"  a: {type: any}\n"
	"tasks:\n"
	"  t: {builtin: echo, input: \"${params}\"}\n",
	/* every type, with defaults (long form and shorthand) */
	"flow: defaults\n"
	"params:\n"
	"  n: {type: int, default: 100}\n"
	"  ratio: {default: 0.5}\n"
	"  name: hello\n"
	"  items: [a, b]\n"
	"  on: {type: bool, default: false}\n"
	"  cfg: {type: any, default: {k: [1, 2]}}\n"
	"tasks:\n"
	"  t: {builtin: echo, input: \"${params}\", map: {x: \"range(${params.n})\"}}\n",
	/* none */
	"flow: none\n"
	"tasks:\n"
	"  t: {builtin: noop}\n",
};
#define NFLOWS (sizeof(flow_yaml) / sizeof(flow_yaml[0]))

static struct sl_flow *flows[NFLOWS];

static void load_flows(void)
{
	char err[512];

	if (flows[0])
		return;
	for (size_t i = 0; i < NFLOWS; i++) {
		flows[i] = sl_flow_parse(flow_yaml[i], strlen(flow_yaml[i]), "params.yaml", err,
					 sizeof(err));
		FUZZ_CHECK(flows[i] != NULL, "fixed flow %zu: %s", i, err);
	}
}

/* 1 when v is what a parameter of type t may hold after binding. */
static int fits(enum sl_param_type t, json_t *v)
{
	switch (t) {
	case SL_PARAM_INT: return json_is_integer(v);
	case SL_PARAM_FLOAT: return json_is_real(v);
	case SL_PARAM_STRING: return json_is_string(v);
	case SL_PARAM_BOOL: return json_is_boolean(v);
	case SL_PARAM_LIST: return json_is_array(v);
	default: return v != NULL;
	}
}

static void bind_one(const struct sl_flow *flow, json_t *given)
{
	json_t *out = (json_t *)1;
	char err[512] = "";
	enum sl_err rc = sl_flow_bind_params(flow, given, &out, err, sizeof(err));

	if (rc != SL_OK) {
		FUZZ_CHECK(out == NULL, "failed bind left *out set");
		FUZZ_CHECK(err[0], "failed bind without a message");
		return;
	}
	FUZZ_CHECK(json_is_object(out) && json_object_size(out) == flow->nparams,
		   "flow '%s': bound %zu values for %zu params", flow->name,
		   json_object_size(out), flow->nparams);
	for (size_t i = 0; i < flow->nparams; i++) {
		json_t *v = json_object_get(out, flow->params[i].name);

		FUZZ_CHECK(fits(flow->params[i].type, v), "param '%s' bound to a value that is not a %s",
			   flow->params[i].name, sl_param_type_name(flow->params[i].type));
	}
	json_decref(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *given;

	load_flows();
	/* Any JSON value: non-objects must be refused, not crash. */
	if (!(given = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL)))
		return 0;
	for (size_t i = 0; i < NFLOWS; i++)
		bind_one(flows[i], given);
	json_decref(given);
	return 0;
}
