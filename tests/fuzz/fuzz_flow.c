/* fuzz_flow.c - harness: the flow YAML parser (sl_flow_parse) on arbitrary bytes and, for what
 * parses, the planner's next steps: binding the defaults, expanding every task and deciding
 * whether it runs (sl_flow_task_gate: trigger_rule, when:, route:). */
#include <jansson.h>
#include <string.h>

#include "fuzz.h"
#include "sluice/flow.h"

/* Every upstream task "produced" the same outputs: a few values of different types, so map
 * sources and ${tasks.X.outputs} see a list either way. */
static json_t *fixed_outputs(void *ud, size_t task_index)
{
	(void)task_index;
	return json_incref((json_t *)ud);
}

/* Properties of a parsed flow that the planner relies on. */
static void check_flow(const struct sl_flow *flow, const uint8_t *data, size_t size)
{
	FUZZ_CHECK(flow->name && flow->name[0], "flow without a name");
	FUZZ_CHECK(flow->source_len == size && !memcmp(flow->source, data, size) &&
			   flow->source[size] == '\0',
		   "source is not a NUL-terminated copy of the input");
	for (size_t i = 0; i < flow->ntasks; i++) {
		const struct sl_flow_task *t = &flow->tasks[i];

		FUZZ_CHECK(sl_flow_task_index(flow, t->name) == (ssize_t)i,
			   "task %zu '%s' not found by name", i, t->name);
		for (size_t k = 0; k < t->ndeps; k++)
			FUZZ_CHECK(t->deps[k] < i, "task %zu '%s' depends on later task %zu", i,
				   t->name, t->deps[k]);
		FUZZ_CHECK(t->kind == SL_TASK_BUILTIN ? t->builtin != NULL : t->argc > 0,
			   "task '%s' has nothing to run", t->name);
	}
}

/* Whether task i runs once its upstreams ended (trigger_rule, when:, route:), as the planner
 * asks: all upstreams succeeded, then one failed. */
static void gate_task(const struct sl_flow *flow, size_t i, const struct sl_expand_ctx *ctx)
{
	for (size_t failed = 0; failed < 2; failed++) {
		enum sl_gate gate = (enum sl_gate)-1;
		const char *queue = NULL;
		char err[512] = "";

		if (sl_flow_task_gate(flow, i, ctx, failed, 0, &gate, &queue, err, sizeof(err)) !=
		    SL_OK) {
			FUZZ_CHECK(err[0], "gate of '%s' failed without a message",
				   flow->tasks[i].name);
			continue;
		}
		FUZZ_CHECK(gate == SL_GATE_RUN || gate == SL_GATE_SKIP ||
				   gate == SL_GATE_UPSTREAM_FAILED,
			   "gate of '%s' is %d", flow->tasks[i].name, (int)gate);
		FUZZ_CHECK(gate != SL_GATE_RUN || (queue && queue[0]),
			   "task '%s' runs on no queue", flow->tasks[i].name);
	}
}

/* Binds the defaults (NULL given) and, when every param has one, expands each task. */
static void expand_all(const struct sl_flow *flow)
{
	static const char outputs_json[] = "[1, \"a b\", {\"k\": [2, 3]}, [4], null]";
	json_t *params = NULL, *outputs = json_loads(outputs_json, 0, NULL);
	char err[512] = "";

	FUZZ_CHECK(outputs != NULL, "bad fixed outputs");
	if (sl_flow_bind_params(flow, NULL, &params, err, sizeof(err)) != SL_OK) {
		FUZZ_CHECK(params == NULL && err[0], "bind failed without a message");
		goto out;
	}
	for (size_t i = 0; i < flow->ntasks; i++) {
		struct sl_expand_ctx ctx = {
			.run_id = "r-fuzz", .flow = flow->name, .intent = "normal",
			.params = params, .upstream_outputs = fixed_outputs, .ud = outputs,
		};
		struct sl_instance *inst = NULL;
		size_t n = 0;

		err[0] = '\0';
		if (sl_flow_expand(flow, i, &ctx, &inst, &n, err, sizeof(err)) != SL_OK) {
			FUZZ_CHECK(err[0], "expansion of '%s' failed without a message",
				   flow->tasks[i].name);
			continue;
		}
		for (size_t k = 0; k < n; k++) {
			FUZZ_CHECK(flow->tasks[i].nmap ? inst[k].map_index == (int)k
						       : inst[k].map_index == -1,
				   "task '%s' instance %zu has map_index %d", flow->tasks[i].name,
				   k, inst[k].map_index);
			FUZZ_CHECK(inst[k].argc == flow->tasks[i].argc, "argc changed");
			for (size_t a = 0; a < inst[k].argc; a++)
				FUZZ_CHECK(inst[k].argv[a] != NULL, "argv[%zu] is NULL", a);
			FUZZ_CHECK(inst[k].argv == NULL || inst[k].argv[inst[k].argc] == NULL,
				   "argv not NULL-terminated");
		}
		sl_instances_free(inst, n);
		gate_task(flow, i, &ctx);
	}
out:
	json_decref(params);
	json_decref(outputs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_flow *flow;
	char err[1024] = "";

	flow = sl_flow_parse((const char *)data, size, "fuzz.yaml", err, sizeof(err));
	if (!flow) {
		FUZZ_CHECK(!strncmp(err, "fuzz.yaml", 9), "error without the file name: '%s'", err);
		return 0;
	}
	check_flow(flow, data, size);
	expand_all(flow);
	sl_flow_destroy(flow);
	return 0;
}
