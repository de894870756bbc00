/* e2e_autoscaler.c - the process backend starts workers when the queue has lag, up to max,
 * and drains them back to zero once the queue is idle, never killing a busy worker; an empty
 * pool reacts to new work without waiting for its next decision. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/util.h"

static pid_t planner, autoscaler;

static void start_services(void)
{
	const char *dir;
	char pools[4200], logs[4200];
	FILE *f;

	e2e_require_env();
	dir = e2e_tmpdir("autoscaler");
	snprintf(pools, sizeof(pools), "%s/pools.yaml", dir);
	snprintf(logs, sizeof(logs), "%s/logs", getenv("SLUICE_TEST_TMP"));
	f = fopen(pools, "w");
	ck_assert_ptr_nonnull(f);
	fputs("pools:\n"
	      "  scale:\n"
	      "    queue: scale\n"
	      "    backend: process\n"
	      "    min: 0\n"
	      "    max: 3\n"
	      "    target_per_worker: 2\n"
	      "    slots: 2\n"
	      "    scale_up_step: 3\n"
	      "    scale_up_cooldown: 0s\n"
	      "    scale_down_window: 2s\n"
	      "    idle_to_zero: 3s\n",
	      f);
	fclose(f);
	const char *pargs[] = {"--flows-dir", SLUICE_SOURCE_DIR "/examples", NULL};
	const char *aargs[] = {"--pools", pools, "--worker-bin", SLUICE_BIN_DIR "/sluice-worker",
			       "--log-dir", logs, "--interval", "500ms", NULL};
	planner = e2e_spawn("scale-planner", "sluice-planner", pargs, NULL);
	autoscaler = e2e_spawn("scale-autoscaler", "sluice-autoscaler", aargs, NULL);
	ck_assert(planner > 0 && autoscaler > 0);
}

static void stop_services(void)
{
	e2e_stop(autoscaler, SIGTERM, 40000);
	e2e_stop(planner, SIGTERM, 15000);
}

static long pool_field(const char *field)
{
	redisReply *r = sl_state_command(e2e_state(), "HGET sluice:pool:scale %s", field);
	long v = r && r->type == REDIS_REPLY_STRING ? atol(r->str) : -1;

	if (r)
		freeReplyObject(r);
	return v;
}

/* Live workers of queue `scale` in the registry. */
static long registered_workers(void)
{
	redisReply *ids = sl_state_command(e2e_state(), "ZRANGE sluice:workers 0 -1");
	long n = 0;

	for (size_t i = 0; ids && i < ids->elements; i++) {
		redisReply *q = sl_state_command(e2e_state(), "HGET sluice:worker:%s queue",
						 ids->element[i]->str);
		if (q && q->type == REDIS_REPLY_STRING && !strcmp(q->str, "scale"))
			n++;
		if (q)
			freeReplyObject(q);
	}
	if (ids)
		freeReplyObject(ids);
	return n;
}

START_TEST(scales_from_zero_to_max_and_back_to_zero)
{
	char *run, *state = NULL;
	long peak = 0, peak_registered = 0;
	int64_t deadline;

	/* idle pool: nothing running */
	deadline = sl_mono_ms() + e2e_ms(15000);
	while (pool_field("workers") != 0 && sl_mono_ms() < deadline)
		usleep(200000);
	ck_assert_int_eq(pool_field("workers"), 0);
	ck_assert_int_eq(registered_workers(), 0);

	run = e2e_submit(SLUICE_SOURCE_DIR "/tests/e2e/flows/scale.yaml", NULL);
	ck_assert_ptr_nonnull(run);
	deadline = sl_mono_ms() + e2e_ms(120000);
	while (sl_mono_ms() < deadline) {
		long w = pool_field("workers"), r = registered_workers();
		if (w > peak)
			peak = w;
		if (r > peak_registered)
			peak_registered = r;
		free(state);
		state = e2e_run_field(run, "state");
		if (state && strcmp(state, "RUNNING"))
			break;
		usleep(200000);
	}
	ck_assert_str_eq(state, "SUCCEEDED");
	ck_assert_msg(peak >= 2 && peak <= 3, "peak pool size %ld (want 2..3)", peak);
	ck_assert_int_ge(peak_registered, 2);
	ck_assert_int_le(peak_registered, 3);
	/* no busy worker was killed: every instance ran once */
	for (int i = 0; i < 12; i++) {
		char *a = e2e_ti_field(run, "work", i, "attempt");
		ck_assert_msg(a && !strcmp(a, "1"), "work[%d] attempt %s", i, a ? a : "-");
		free(a);
	}
	/* back to zero once idle */
	deadline = sl_mono_ms() + e2e_ms(60000);
	while ((pool_field("workers") != 0 || registered_workers() != 0) &&
	       sl_mono_ms() < deadline)
		usleep(250000);
	ck_assert_int_eq(pool_field("workers"), 0);
	ck_assert_int_eq(registered_workers(), 0);
	free(state);
	free(run);
}
END_TEST

static long field_of(const char *key, const char *field)
{
	redisReply *r = sl_state_command(e2e_state(), "HGET %s %s", key, field);
	long v = r && r->type == REDIS_REPLY_STRING ? atol(r->str) : -1;

	if (r)
		freeReplyObject(r);
	return v;
}

/* An empty pool watches its queue between decisions (idle-poll): work queued just after a
 * decision starts a worker long before the next one. The interval is three times the wait
 * allowed, so a pool that waited for its next decision fails this. */
START_TEST(empty_pool_starts_a_worker_before_the_next_interval)
{
	char pools[4200], logs[4200], interval[32], *run, *state;
	const char *dir = e2e_tmpdir("autoscaler-wake");
	int64_t deadline, submitted;
	long workers = 0;
	pid_t as;
	FILE *f;

	snprintf(pools, sizeof(pools), "%s/pools.yaml", dir);
	snprintf(logs, sizeof(logs), "%s/logs", getenv("SLUICE_TEST_TMP"));
	snprintf(interval, sizeof(interval), "%lds", e2e_ms(60000) / 1000);
	f = fopen(pools, "w");
	ck_assert_ptr_nonnull(f);
	fputs("pools:\n"
	      "  wake:\n"
	      "    queue: wake\n"
	      "    min: 0\n"
	      "    max: 1\n"
	      "    slots: 1\n"
	      "    target_per_worker: 1\n"
	      "    scale_down_window: 2s\n"
	      "    idle_to_zero: 2s\n",
	      f);
	fclose(f);
	const char *args[] = {"--pools", pools, "--worker-bin", SLUICE_BIN_DIR "/sluice-worker",
			      "--log-dir", logs, "--interval", interval, "--idle-poll", "100ms",
			      NULL};
	redisReply *r = sl_state_command(e2e_state(), "DEL sluice:pool:wake");
	if (r)
		freeReplyObject(r);
	as = e2e_spawn("wake-autoscaler", "sluice-autoscaler", args, NULL);
	ck_assert(as > 0);
	/* its first decision (pool view written): empty, nothing queued */
	deadline = sl_mono_ms() + e2e_ms(30000);
	while (field_of("sluice:pool:wake", "updated_ms") < 0 && sl_mono_ms() < deadline)
		usleep(100000);
	ck_assert_int_eq(field_of("sluice:pool:wake", "workers"), 0);
	ck_assert_int_eq(field_of("sluice:pool:wake", "lag"), 0);

	run = e2e_submit(SLUICE_SOURCE_DIR "/tests/e2e/flows/wake.yaml", NULL);
	ck_assert_ptr_nonnull(run);
	submitted = sl_mono_ms();
	deadline = submitted + e2e_ms(20000);
	while ((workers = field_of("sluice:pool:wake", "workers")) < 1 && sl_mono_ms() < deadline)
		usleep(50000);
	ck_assert_msg(workers == 1, "no worker %lld ms after the submit (interval %s)",
		      (long long)(sl_mono_ms() - submitted), interval);
	state = e2e_wait_run_end(run, e2e_ms(60000));
	ck_assert_ptr_nonnull(state);
	ck_assert_str_eq(state, "SUCCEEDED");
	free(state);
	free(run);
	ck_assert_int_eq(WIFEXITED(e2e_stop(as, SIGTERM, e2e_ms(40000))), 1);
}
END_TEST

int main(void)
{
	const TTest *const tests[] = {
		scales_from_zero_to_max_and_back_to_zero,
		empty_pool_starts_a_worker_before_the_next_interval,
		NULL,
	};

	return e2e_run_suite("e2e_autoscaler", start_services, stop_services, 240, tests);
}
