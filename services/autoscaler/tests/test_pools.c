/* test_pools.c - unit tests of the pools file parser: the shipped example, defaults, errors. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "pools.h"

#ifndef SLUICE_SOURCE_DIR
#error "SLUICE_SOURCE_DIR must be defined"
#endif

static struct autoscaler_pools pools; /* big: keep it off the stack */
static char err[512];

static enum sl_err parse(const char *text)
{
	err[0] = '\0';
	return autoscaler_pools_parse("pools.yaml", text, strlen(text), &pools, err, sizeof(err));
}

START_TEST(test_example_file)
{
	const struct autoscaler_pool_config *pc = &pools.pool[0];

	ck_assert_int_eq(autoscaler_pools_load(SLUICE_SOURCE_DIR "/examples/autoscaler/pools.yaml", &pools,
					       err, sizeof(err)),
			 SL_OK);
	ck_assert_uint_eq(pools.n, 1);
	ck_assert_str_eq(pc->name, "default");
	ck_assert_str_eq(pc->queue, "default");
	ck_assert_int_eq(pc->backend, AUTOSCALER_BACKEND_PROCESS);
	ck_assert_int_eq(pc->min, 0);
	ck_assert_int_eq(pc->max, 4);
	ck_assert_int_eq(pc->target_per_worker, 4);
	ck_assert_int_eq(pc->slots, 4);
	ck_assert_int_eq(pc->scale_up_step, 4);
	ck_assert_int_eq(pc->scale_up_cooldown_ms, 0);
	ck_assert_int_eq(pc->scale_down_window_ms, 10000);
	ck_assert_int_eq(pc->idle_to_zero_ms, 15000);
}
END_TEST

START_TEST(test_defaults)
{
	ck_assert_int_eq(parse("pools:\n  etl: {max: 8, target_per_worker: 2}\n  gpu: {}\n"), SL_OK);
	ck_assert_uint_eq(pools.n, 2);
	ck_assert_str_eq(pools.pool[0].queue, "etl"); /* queue defaults to the pool name */
	ck_assert_int_eq(pools.pool[0].slots, 2);     /* slots follow target_per_worker */
	ck_assert_int_eq(pools.pool[0].scale_up_step, 8); /* step follows max */
	ck_assert_int_eq(pools.pool[1].min, 0);
	ck_assert_int_eq(pools.pool[1].max, 4);
	ck_assert_int_eq(pools.pool[1].scale_down_window_ms, 30000);
	ck_assert_int_eq(pools.pool[1].idle_to_zero_ms, 60000);
}
END_TEST

START_TEST(test_unknown_key_has_its_line)
{
	ck_assert_int_eq(parse("pools:\n  default:\n    max: 4\n    maxx: 5\n"), SL_ERR_CONFIG);
	ck_assert_str_eq(err, "pools.yaml:4: unknown option \"maxx\" in pool default");
	ck_assert_int_eq(parse("pool:\n  default: {}\n"), SL_ERR_CONFIG);
	ck_assert_str_eq(err, "pools.yaml:1: unknown key \"pool\"");
}
END_TEST

START_TEST(test_bad_values)
{
	ck_assert_int_eq(parse("pools:\n  a:\n    max: lots\n"), SL_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "pools.yaml:3: max must be an integer"));
	ck_assert_int_eq(parse("pools:\n  a:\n    max: 0\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a:\n    min: -1\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a:\n    max: 100000\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a:\n    target_per_worker: 0\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a:\n    slots: 1000\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a:\n    idle_to_zero: soon\n"), SL_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "pools.yaml:3: idle_to_zero must be a duration"));
	ck_assert_int_eq(parse("pools:\n  a:\n    min: 5\n    max: 2\n"), SL_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "min 5 is above max 2"));
	ck_assert_int_eq(parse("pools:\n  a:\n    queue: 'x y'\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a:\n    backend: docker\n"), SL_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "not implemented yet"));
	ck_assert_int_eq(parse("pools:\n  a:\n    backend: vm\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a:\n    max: [1, 2]\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  'a b': {}\n"), SL_ERR_CONFIG);
}
END_TEST

START_TEST(test_structure_errors)
{
	ck_assert_int_eq(parse(""), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools: {}\n"), SL_ERR_CONFIG);
	ck_assert_str_eq(err, "pools.yaml:1: no pools defined");
	ck_assert_int_eq(parse("pools: [a, b]\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("- a\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a: {max: 2}\n  a: {max: 3}\n"), SL_ERR_CONFIG);
	ck_assert_str_eq(err, "pools.yaml:3: pool a given twice");
	ck_assert_int_eq(parse("pools:\n  a: {max: 2, max: 3}\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(parse("pools:\n  a: {queue: q}\n  b: {queue: q}\n"), SL_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "both use queue q"));
	ck_assert_int_eq(parse("pools:\n  a: &x {max: 2}\n  b: *x\n"), SL_ERR_PARSE);
	ck_assert_str_eq(err, "pools.yaml:3: aliases are not supported");
	ck_assert_int_eq(parse("pools:\n  a: {max: 2\n"), SL_ERR_PARSE);
	ck_assert_int_eq(parse("pools:\n  a: {}\n---\npools:\n  b: {}\n"), SL_ERR_CONFIG);
	ck_assert_int_eq(autoscaler_pools_load("/nonexistent/pools.yaml", &pools, err,
					       sizeof(err)),
			 SL_ERR_IO);
}
END_TEST

static Suite *pools_suite(void)
{
	Suite *s = suite_create("autoscaler_pools");
	TCase *tc = tcase_create("parse");

	tcase_add_test(tc, test_example_file);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_unknown_key_has_its_line);
	tcase_add_test(tc, test_bad_values);
	tcase_add_test(tc, test_structure_errors);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pools_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
