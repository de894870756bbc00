/* flow_test.h - helpers shared by the flow unit tests: parsing from strings, fake upstreams. */
#ifndef SLUICE_FLOW_TEST_H
#define SLUICE_FLOW_TEST_H

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/flow.h"

static inline struct sl_flow *parse_ok(const char *yaml)
{
	char err[1024] = "";
	struct sl_flow *f = sl_flow_parse(yaml, strlen(yaml), "t.yaml", err, sizeof(err));

	ck_assert_msg(f != NULL, "parse failed: %s", err);
	return f;
}

/* Parses yaml expecting an error at "bad.yaml:<line>:" whose text contains want. */
static inline void parse_bad(const char *yaml, int line, const char *want)
{
	char err[1024] = "";
	char prefix[64];
	struct sl_flow *f = sl_flow_parse(yaml, strlen(yaml), "bad.yaml", err, sizeof(err));

	ck_assert_msg(f == NULL, "parsed, expected error '%s'", want);
	snprintf(prefix, sizeof(prefix), "bad.yaml:%d:", line);
	ck_assert_msg(!strncmp(err, prefix, strlen(prefix)), "want line %d, got: %s", line, err);
	ck_assert_msg(strstr(err, want) != NULL, "want '%s' in: %s", want, err);
}

/* Outputs of upstream tasks, by task name, for sl_expand_ctx.upstream_outputs. */
struct fake_up {
	const struct sl_flow *flow;
	json_t *by_name; /* object: task name -> array */
};

static inline json_t *fake_outputs(void *ud, size_t idx)
{
	struct fake_up *up = ud;
	json_t *v = json_object_get(up->by_name, up->flow->tasks[idx].name);

	return v ? json_incref(v) : NULL;
}

static inline json_t *jparse(const char *text)
{
	json_error_t je;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &je);

	ck_assert_msg(v != NULL, "bad JSON in test: %s: %s", text, je.text);
	return v;
}

/* 1 when a and b are equal JSON values. */
static inline int jeq(json_t *a, const char *b)
{
	json_t *v = jparse(b);
	int eq = json_equal(a, v);

	json_decref(v);
	return eq;
}

#define RUN_SUITE(make)                                                                    \
	int main(void)                                                                     \
	{                                                                                  \
		SRunner *sr = srunner_create(make());                                      \
		int failed;                                                                \
		srunner_run_all(sr, CK_NORMAL);                                            \
		failed = srunner_ntests_failed(sr);                                        \
		srunner_free(sr);                                                          \
		return failed ? EXIT_FAILURE : EXIT_SUCCESS;                               \
	}

#endif
