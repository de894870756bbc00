/* test_parse.c - flow YAML parsing: the examples, settings, topological order, and errors
 * with their exact lines. */
#include <dirent.h>
#include <unistd.h>

#include "flow_test.h"

static char *example(const char *name)
{
	static char path[1024];

	snprintf(path, sizeof(path), "%s/%s", SLUICE_EXAMPLES_DIR, name);
	return path;
}

static struct sl_flow *load_example(const char *name)
{
	char err[1024] = "";
	struct sl_flow *f = sl_flow_load(example(name), err, sizeof(err));

	ck_assert_msg(f != NULL, "%s: %s", name, err);
	return f;
}

/* 1 when the file has a top-level "flow:" key; examples/ also holds other configs. */
static int is_flow_file(const char *name)
{
	FILE *fp = fopen(example(name), "r");
	char line[512];
	int found = 0;

	ck_assert_ptr_nonnull(fp);
	while (!found && fgets(line, sizeof(line), fp))
		found = !strncmp(line, "flow:", 5);
	fclose(fp);
	return found;
}

START_TEST(every_example_parses)
{
	DIR *d = opendir(SLUICE_EXAMPLES_DIR);
	struct dirent *de;
	int count = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n < 6 || (strcmp(de->d_name + n - 5, ".yaml") && strcmp(de->d_name + n - 4, ".yml")))
			continue;
		if (!is_flow_file(de->d_name))
			continue;
		sl_flow_destroy(load_example(de->d_name));
		count++;
	}
	closedir(d);
	ck_assert_int_ge(count, 4);
}
END_TEST

START_TEST(diamond_example)
{
	struct sl_flow *f = load_example("diamond.yaml");

	ck_assert_str_eq(f->name, "diamond");
	ck_assert_uint_eq(f->ntasks, 4);
	ck_assert_str_eq(f->tasks[0].name, "inc");
	ck_assert_str_eq(f->tasks[1].name, "dec");
	ck_assert_str_eq(f->tasks[2].name, "add");
	ck_assert_str_eq(f->tasks[3].name, "total");
	ck_assert_uint_eq(f->tasks[0].ndeps, 0);
	ck_assert_uint_eq(f->tasks[2].ndeps, 2);
	ck_assert_uint_eq(f->tasks[2].deps[0], 0);
	ck_assert_uint_eq(f->tasks[2].deps[1], 1);
	ck_assert_uint_eq(f->tasks[3].ndeps, 1);
	ck_assert_uint_eq(f->tasks[3].deps[0], 2);
	ck_assert_uint_eq(f->tasks[0].nmap, 1);
	ck_assert_str_eq(f->tasks[0].map[0].name, "x");
	ck_assert_str_eq(f->tasks[0].map[0].source, "range(${params.n})");
	ck_assert_int_eq(f->tasks[0].kind, SL_TASK_COMMAND);
	ck_assert_str_eq(f->tasks[0].argv[0], "sh");
	ck_assert_str_eq(f->tasks[0].argv[4], "${x}");
	ck_assert_int_eq(f->tasks[3].kind, SL_TASK_BUILTIN);
	ck_assert_str_eq(f->tasks[3].builtin, "sum");
	ck_assert_str_eq(f->tasks[3].input, "${tasks.add.outputs}");
	ck_assert_int_eq(f->tasks[0].retries, 2);
	ck_assert_int_eq(f->tasks[0].retry_delay_ms, 1000);
	ck_assert_int_eq(f->tasks[3].timeout_ms, 300000);
	ck_assert_str_eq(f->tasks[1].queue, "default");
	ck_assert_uint_eq(f->nparams, 2);
	ck_assert_str_eq(f->params[0].name, "n");
	ck_assert_int_eq(f->params[0].type, SL_PARAM_INT);
	ck_assert(jeq(f->params[0].def, "100"));
	ck_assert_int_eq(f->params[1].type, SL_PARAM_FLOAT);
	ck_assert_ptr_null(f->trigger_dir);
	ck_assert_ptr_nonnull(strstr(f->source, "flow: diamond"));
	ck_assert_str_eq(f->path, example("diamond.yaml"));
	ck_assert_int_eq(sl_flow_task_index(f, "add"), 2);
	ck_assert_int_eq(sl_flow_task_index(f, "nope"), -1);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(ingest_example)
{
	struct sl_flow *f = load_example("ingest.yaml");

	ck_assert_str_eq(f->trigger_dir, "inbox");
	ck_assert_str_eq(f->trigger_glob, "*");
	ck_assert_uint_eq(f->nparams, 4);
	ck_assert_str_eq(f->params[0].name, "path");
	ck_assert_int_eq(f->params[0].type, SL_PARAM_STRING);
	ck_assert_ptr_null(f->params[0].def);
	ck_assert_int_eq(f->params[1].type, SL_PARAM_INT);
	ck_assert(jeq(f->params[2].def, "\"\""));
	ck_assert_uint_eq(f->ntasks, 2);
	ck_assert_str_eq(f->tasks[1].name, "report");
	ck_assert_uint_eq(f->tasks[1].ndeps, 1);
	ck_assert_uint_eq(f->tasks[1].deps[0], 0);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(small_examples)
{
	struct sl_flow *f = load_example("fail_retry.yaml");

	ck_assert_int_eq(f->tasks[0].retries, 2);
	ck_assert_int_eq(f->tasks[0].retry_delay_ms, 200);
	ck_assert_str_eq(f->tasks[0].argv[2], "test \"$SLUICE_ATTEMPT\" -ge 2 && echo ok");
	sl_flow_destroy(f);
	f = load_example("hello.yaml");
	ck_assert_int_eq(f->params[0].type, SL_PARAM_STRING);
	ck_assert(jeq(f->params[0].def, "\"world\""));
	ck_assert_str_eq(f->tasks[0].builtin, "echo");
	sl_flow_destroy(f);
}
END_TEST

START_TEST(settings_and_defaults)
{
	struct sl_flow *f = parse_ok("flow: s\n"
				     "defaults: {retries: 3, timeout: 10s, queue: big, priority: low}\n"
				     "tasks:\n"
				     "  a: {builtin: noop}\n"
				     "  b:\n"
				     "    builtin: sleep\n"
				     "    input: 5\n"
				     "    retries: 0\n"
				     "    retry_delay: 250ms\n"
				     "    timeout: 2m\n"
				     "    queue: gpu.large\n"
				     "    priority: high\n"
				     "    max_output: 1024\n"
				     "  c: {builtin: noop}\n");

	ck_assert_int_eq(f->tasks[0].retries, 3);
	ck_assert_int_eq(f->tasks[0].retry_delay_ms, 1000);
	ck_assert_int_eq(f->tasks[0].timeout_ms, 10000);
	ck_assert_str_eq(f->tasks[0].queue, "big");
	ck_assert_int_eq(f->tasks[0].priority, -1);
	ck_assert_int_eq(f->tasks[0].max_output_bytes, 65536);
	ck_assert_int_eq(f->tasks[1].retries, 0);
	ck_assert_int_eq(f->tasks[1].retry_delay_ms, 250);
	ck_assert_int_eq(f->tasks[1].timeout_ms, 120000);
	ck_assert_str_eq(f->tasks[1].queue, "gpu.large");
	ck_assert_int_eq(f->tasks[1].priority, 1);
	ck_assert_int_eq(f->tasks[1].max_output_bytes, 1024);
	ck_assert_str_eq(f->tasks[1].input, "${5}");
	ck_assert_int_eq(f->tasks[1].line, 5);
	ck_assert_int_eq(f->tasks[2].priority, -1);
	sl_flow_destroy(f);

	f = parse_ok("flow: s\ntasks:\n  a: {builtin: noop}\n");
	ck_assert_int_eq(f->tasks[0].retries, 0);
	ck_assert_int_eq(f->tasks[0].timeout_ms, 0);
	ck_assert_int_eq(f->tasks[0].priority, 0);
	ck_assert_str_eq(f->tasks[0].queue, "default");
	ck_assert_ptr_null(f->tasks[0].input);
	ck_assert_uint_eq(f->nparams, 0);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(topological_order)
{
	/* Declared downstream first; independent tasks keep their YAML order. */
	struct sl_flow *f = parse_ok("flow: topo\n"
				     "tasks:\n"
				     "  total: {builtin: sum, input: \"${tasks.add.outputs}\"}\n"
				     "  z: {builtin: noop}\n"
				     "  add:\n"
				     "    command: [echo, \"${tasks.b.output}\"]\n"
				     "    env: {A: \"${tasks.a.output}\"}\n"
				     "  b: {builtin: noop, after: [a]}\n"
				     "  a: {builtin: noop}\n"
				     "  late: {builtin: noop, after: z}\n");
	const char *want[] = {"z", "a", "b", "add", "total", "late"};

	ck_assert_uint_eq(f->ntasks, 6);
	for (size_t i = 0; i < 6; i++)
		ck_assert_str_eq(f->tasks[i].name, want[i]);
	ck_assert_uint_eq(f->tasks[3].ndeps, 2); /* add: a and b, by position */
	ck_assert_uint_eq(f->tasks[3].deps[0], 1);
	ck_assert_uint_eq(f->tasks[3].deps[1], 2);
	ck_assert_uint_eq(f->tasks[4].deps[0], 3);
	ck_assert_uint_eq(f->tasks[5].deps[0], 0);
	for (size_t i = 0; i < f->ntasks; i++)
		for (size_t d = 0; d < f->tasks[i].ndeps; d++)
			ck_assert_uint_lt(f->tasks[i].deps[d], i);
	ck_assert_int_eq(f->tasks[4].line, 3);
	sl_flow_destroy(f);
}
END_TEST

START_TEST(templates_and_maps)
{
	struct sl_flow *f = parse_ok("flow: m\n"
				     "params:\n"
				     "  items: [a, b]\n"
				     "  n: 3\n"
				     "  ratio: 0.5\n"
				     "  on: true\n"
				     "  anything: ~\n"
				     "tasks:\n"
				     "  a:\n"
				     "    map: {x: [1, two, {k: v}], y: \"${params.items}\", z: 'range(1, 4)'}\n"
				     "    command: [sh, -c, 'echo $${HOME} \"$1\"', _, \"${x}-${y}\"]\n"
				     "  b:\n"
				     "    map: {s: '[\"p\", \"q\"]'}\n"
				     "    command: [echo, \"${s}\", \"${len(tasks.a.outputs)}\"]\n");

	ck_assert_int_eq(f->params[0].type, SL_PARAM_LIST);
	ck_assert_int_eq(f->params[1].type, SL_PARAM_INT);
	ck_assert_int_eq(f->params[2].type, SL_PARAM_FLOAT);
	ck_assert_int_eq(f->params[3].type, SL_PARAM_BOOL);
	ck_assert_int_eq(f->params[4].type, SL_PARAM_ANY);
	ck_assert(jeq(f->params[4].def, "null"));
	ck_assert_uint_eq(f->tasks[0].nmap, 3);
	ck_assert(jeq(f->tasks[0].map[0].literal, "[1, \"two\", {\"k\": \"v\"}]"));
	ck_assert_ptr_null(f->tasks[0].map[0].source);
	ck_assert_str_eq(f->tasks[0].map[1].source, "${params.items}");
	ck_assert_ptr_null(f->tasks[0].map[1].literal);
	ck_assert_str_eq(f->tasks[1].map[0].source, "[\"p\", \"q\"]");
	ck_assert_uint_eq(f->tasks[1].ndeps, 1);
	sl_flow_destroy(f);
}
END_TEST

struct bad {
	const char *yaml;
	int line;
	const char *want;
};

static const struct bad bad_flows[] = {
	/* unknown keys, listing the allowed ones */
	{"flow: x\ntasks:\n  a: {builtin: noop}\nextra: 1\n", 4,
	 "unknown key 'extra' in the flow (allowed: flow, description, params, defaults, trigger, "
	 "tasks"},
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n    retires: 3\n", 5,
	 "unknown key 'retires' in task 'a' (allowed: map, command, builtin"},
	{"flow: x\ndefaults: {timeout: 1s, nope: 2}\ntasks:\n  a: {builtin: noop}\n", 2,
	 "unknown key 'nope' in defaults"},
	{"flow: x\nparams:\n  n: {type: int, dflt: 3}\ntasks:\n  a: {builtin: noop}\n", 3,
	 "unknown key 'dflt' in param 'n'"},
	{"flow: x\ntrigger:\n  files: {dir: in, pattern: '*'}\ntasks:\n  a: {builtin: noop}\n", 3,
	 "unknown key 'pattern' in trigger.files"},
	/* reserved for later */
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n    resources: {gpu: 1}\n", 5,
	 "'resources' in task 'a' is not supported yet"},
	{"flow: x\nschedule: '* * * *'\ntasks:\n  a: {builtin: noop}\n", 2,
	 "schedule.cron: expected 5 fields"},
	/* missing pieces */
	/* a queue named like a priority band of another queue */
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n    queue: gpu.high\n", 5,
	 "queue name 'gpu.high' must not end in .high or .low"},
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n    route:\n      - {when: 'true', queue: big.low}\n",
	 6, "queue name 'big.low' must not end in .high or .low"},
	{"tasks:\n  a: {builtin: noop}\n", 1, "missing required key 'flow'"},
	{"flow: x\ndescription: hi\n", 1, "missing required key 'tasks'"},
	{"flow: x\ntasks: {}\n", 2, "at least one task"},
	{"", 1, "empty flow"},
	{"- a\n- b\n", 1, "must be a mapping"},
	{"flow: x\ntasks:\n  a: {builtin: noop}\n---\nflow: y\n", 5, "only one YAML document"},
	/* cycles, named */
	{"flow: x\ntasks:\n  a:\n    command: [echo, \"${tasks.b.output}\"]\n"
	 "  b:\n    command: [echo, \"${tasks.a.output}\"]\n",
	 3, "dependency cycle: a -> b -> a"},
	{"flow: x\ntasks:\n  z: {builtin: noop}\n  c: {builtin: noop, after: [b]}\n"
	 "  b: {builtin: noop, after: [a]}\n  a: {builtin: noop, input: '${tasks.c.output}'}\n"
	 "  d: {builtin: noop, after: [c]}\n",
	 4, "dependency cycle: c -> b -> a -> c"},
	{"flow: x\ntasks:\n  a: {builtin: noop}\n  self: {builtin: noop, after: self}\n", 4,
	 "dependency cycle: self -> self"},
	/* references */
	{"flow: x\ntasks:\n  a: {builtin: noop}\n  total:\n    builtin: sum\n"
	 "    input: \"${tasks.nope.outputs}\"\n",
	 6, "unknown task 'nope'"},
	{"flow: x\nparams: {n: 1}\ntasks:\n  a:\n    command: [echo, \"n=${params.m}\"]\n", 5,
	 "unknown param 'm'"},
	{"flow: x\ntasks:\n  a:\n    builtin: echo\n    env: {X: \"${y}\"}\n", 5,
	 "unknown name 'y'"},
	{"flow: x\ntasks:\n  a: {builtin: noop}\n  b: {builtin: noop, after: [a, c]}\n", 4,
	 "task 'b' after: unknown task 'c'"},
	{"flow: x\ntasks:\n  a: {builtin: noop}\n  b: {builtin: echo, input: '${tasks.a}'}\n", 4,
	 "tasks.a must be followed by .outputs or .output"},
	{"flow: x\ntasks:\n  a: {builtin: echo, input: '${run.user}'}\n", 3, "unknown field run.user"},
	{"flow: x\ntasks:\n  b:\n    map: {x: \"range(${params.n})\"}\n    builtin: noop\n", 4,
	 "unknown param 'n'"},
	/* durations, numbers, names */
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n    timeout: 5 minutes\n", 5,
	 "bad duration '5 minutes' for timeout"},
	{"flow: x\ndefaults:\n  retry_delay: -1s\ntasks:\n  a: {builtin: noop}\n", 3,
	 "bad duration '-1s' for retry_delay"},
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n    retries: many\n", 5,
	 "retries must be an int from 0 to 100"},
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n    max_output: 0\n", 5, "max_output must be"},
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n    priority: urgent\n", 5,
	 "bad priority 'urgent'"},
	{"flow: bad name\ntasks:\n  a: {builtin: noop}\n", 1, "bad flow name 'bad name'"},
	{"flow: x\ntasks:\n  my-task: {builtin: noop}\n", 3, "bad task name 'my-task'"},
	/* command / builtin */
	{"flow: x\ntasks:\n  a: {builtin: noop}\n  b:\n    command: [echo, hi]\n    builtin: echo\n",
	 4, "task 'b' has both command and builtin"},
	{"flow: x\ntasks:\n  a:\n    retries: 1\n", 3, "task 'a' needs a command or a builtin"},
	{"flow: x\ntasks:\n  a:\n    builtin: http_post\n", 4,
	 "unknown builtin 'http_post' (known: noop, sleep, echo, sum, http_get, sha256)"},
	{"flow: x\ntasks:\n  a:\n    command: []\n", 4, "command must not be empty"},
	{"flow: x\ntasks:\n  a:\n    command: echo hi\n", 4, "command must be a list"},
	{"flow: x\ntasks:\n  a:\n    command: [echo, [nested]]\n", 4, "must be a scalar"},
	/* types */
	{"flow: x\nparams:\n  n: {type: integer, default: 1}\ntasks:\n  a: {builtin: noop}\n", 3,
	 "unknown type 'integer' for param 'n' (allowed: int, float, string, bool, list, any)"},
	{"flow: x\nparams:\n  n:\n    type: int\n    default: lots\ntasks:\n  a: {builtin: noop}\n",
	 5, "bad default for param 'n': expected int, got a string \"lots\""},
	{"flow: x\nparams:\n  n: {type: list, default: 3}\ntasks:\n  a: {builtin: noop}\n", 3,
	 "expected list"},
	{"flow: x\nparams:\n  9lives: 1\ntasks:\n  a: {builtin: noop}\n", 3, "bad param name"},
	/* templates and maps */
	{"flow: x\ntasks:\n  a:\n    builtin: echo\n    input: \"${params.n\"\n", 5,
	 "unterminated '${'"},
	{"flow: x\ntasks:\n  a:\n    builtin: echo\n    input: \"${}\"\n", 5, "empty expression"},
	{"flow: x\ntasks:\n  a:\n    builtin: echo\n    input: \"${shell(1)}\"\n", 5,
	 "unknown function 'shell'"},
	{"flow: x\ntasks:\n  a:\n    builtin: echo\n    input: \"${range(1, 2, 3, 4)}\"\n", 5,
	 "range() takes 1 to 3 arguments"},
	{"flow: x\ntasks:\n  a:\n    map: {params: [1]}\n    builtin: noop\n", 4,
	 "map key 'params' would hide"},
	{"flow: x\ntasks:\n  a:\n    map: {x: hello}\n    builtin: noop\n", 4,
	 "map 'x': 'hello' is not a list"},
	{"flow: x\ntasks:\n  a:\n    map: {}\n    builtin: noop\n", 4, "map needs at least one key"},
	{"flow: x\ntasks:\n  a:\n    builtin: echo\n    input: {a: 1}\n", 5,
	 "input must be a string"},
	/* duplicate keys */
	{"flow: x\ntasks:\n  a: {builtin: noop}\n  a: {builtin: echo}\n", 4,
	 "duplicate key 'a' in tasks (first at line 3)"},
	{"flow: x\nflow: y\ntasks:\n  a: {builtin: noop}\n", 2, "duplicate key 'flow'"},
	/* YAML syntax */
	{"flow: x\ntasks:\n  a: {builtin: noop\n  b: 1\n", 4,
	 "YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping "
	 "started at line 3)"},
	{"flow: x\ntasks:\n  a:\n    builtin: noop\n   bad: indent\n", 5, "YAML syntax error"},
	{"flow: x\ntasks:\n  a: {builtin: *nope}\n", 3, "YAML syntax error"},
};

START_TEST(bad_flow)
{
	parse_bad(bad_flows[_i].yaml, bad_flows[_i].line, bad_flows[_i].want);
}
END_TEST

START_TEST(load_errors)
{
	char err[256] = "";
	char path[] = "/tmp/sluice-flow-test-XXXXXX";
	int fd;
	char *big;

	ck_assert_ptr_null(sl_flow_load("/nonexistent/flow.yaml", err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/flow.yaml: cannot open"));

	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	big = malloc((1 << 20) + 2);
	memset(big, '#', (1 << 20) + 1);
	ck_assert_int_eq(write(fd, big, (1 << 20) + 1), (1 << 20) + 1);
	close(fd);
	ck_assert_ptr_null(sl_flow_load(path, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "over the 1048576 byte limit"));
	ck_assert_ptr_null(sl_flow_parse(big, (1 << 20) + 1, "big.yaml", err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "big.yaml:1:1:"));
	unlink(path);
	free(big);
}
END_TEST

START_TEST(alias_bomb_is_capped)
{
	/* Each level doubles the size: 2^20 scalars once aliases are expanded. */
	char yaml[4096];
	char err[512] = "";
	struct sl_flow *f;
	size_t off;

	off = (size_t)snprintf(yaml, sizeof(yaml), "flow: x\nparams:\n  a0: &a0 [x, x]\n");
	for (int i = 1; i <= 20; i++)
		off += (size_t)snprintf(yaml + off, sizeof(yaml) - off, "  a%d: &a%d [*a%d, *a%d]\n",
					i, i, i - 1, i - 1);
	snprintf(yaml + off, sizeof(yaml) - off, "tasks:\n  a: {builtin: noop}\n");
	f = sl_flow_parse(yaml, strlen(yaml), "bomb.yaml", err, sizeof(err));
	ck_assert_ptr_null(f);
	ck_assert_ptr_nonnull(strstr(err, "document too large"));
}
END_TEST

START_TEST(duplicates_in_big_mapping)
{
	size_t cap = 64 * 20000, off;
	char *yaml = malloc(cap);
	char err[512] = "";

	off = (size_t)snprintf(yaml, cap, "flow: x\nparams:\n");
	for (int i = 0; i < 20000; i++)
		off += (size_t)snprintf(yaml + off, cap - off, "  p%d: %d\n", i, i);
	/* p7 again at line 20003, then p5: the first repeat in document order is reported. */
	off += (size_t)snprintf(yaml + off, cap - off, "  p7: 0\n  p5: 0\ntasks:\n  a: {builtin: noop}\n");
	ck_assert_ptr_null(sl_flow_parse(yaml, off, "dup.yaml", err, sizeof(err)));
	ck_assert_str_eq(err, "dup.yaml:20003:3: duplicate key 'p7' in params (first at line 10)");
	free(yaml);
}
END_TEST

static Suite *parse_suite(void)
{
	Suite *s = suite_create("flow_parse");
	TCase *tc = tcase_create("parse");

	tcase_add_test(tc, every_example_parses);
	tcase_add_test(tc, diamond_example);
	tcase_add_test(tc, ingest_example);
	tcase_add_test(tc, small_examples);
	tcase_add_test(tc, settings_and_defaults);
	tcase_add_test(tc, topological_order);
	tcase_add_test(tc, templates_and_maps);
	tcase_add_loop_test(tc, bad_flow, 0, (int)(sizeof(bad_flows) / sizeof(bad_flows[0])));
	tcase_add_test(tc, load_errors);
	tcase_add_test(tc, alias_bomb_is_capped);
	tcase_add_test(tc, duplicates_in_big_mapping);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(parse_suite)
