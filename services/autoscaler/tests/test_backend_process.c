/* test_backend_process.c - unit tests of the process backend with a shell script as the worker. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "pools.h"

/* Sanitizer and valgrind runs are slower: scale time limits by SLUICE_TEST_TIME_SCALE. */
static long scaled(long ms)
{
	const char *s = getenv("SLUICE_TEST_TIME_SCALE");
	long f = s ? atol(s) : 1;

	return ms * (f > 0 ? f : 1);
}

static char dir[256], bin[512], logs[512], pids[512];

/* Records its argv, environment, pid and process group, says hello on stderr, then exits with
 * $FAKE_EXIT at once, or waits for SIGTERM and exits 0 (gives up after 30 s, so a failed test
 * leaves nothing behind for long). */
static const char *script =
	"#!/bin/sh\n"
	"out=\"$FAKE_OUT/$6\"\n"
	"echo \"$@\" >\"$out.args\"\n"
	"env >\"$out.env\"\n"
	"echo \"$$ $(cut -d' ' -f5 /proc/$$/stat)\" >\"$out.proc\"\n"
	"echo \"hello from $6\" >&2\n"
	"echo \"stdout of $6\"\n"
	"[ -n \"$FAKE_EXIT\" ] && exit \"$FAKE_EXIT\"\n"
	"trap 'exit 0' TERM\n"
	"i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done\n"; /* 30 s at most */

static void setup(void)
{
	FILE *fp;

	snprintf(dir, sizeof(dir), "%s/sluice-test-backend.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(bin, sizeof(bin), "%s/fake-worker", dir);
	snprintf(logs, sizeof(logs), "%s/logs", dir);
	snprintf(pids, sizeof(pids), "%s/pids", dir);
	ck_assert_int_eq(mkdir(logs, 0755), 0);
	ck_assert_int_eq(mkdir(pids, 0755), 0);
	ck_assert_ptr_nonnull(fp = fopen(bin, "w"));
	fputs(script, fp);
	fclose(fp);
	ck_assert_int_eq(chmod(bin, 0755), 0);
	setenv("FAKE_OUT", dir, 1);
	setenv("SLUICE_KAFKA_BROKERS", "old:1", 1);
	setenv("SLUICE_POOLS", "/only/for/the/autoscaler.yaml", 1);
	setenv("SLUICE_KEEP_ME", "kept", 1);
	unsetenv("FAKE_EXIT");
}

static void teardown(void)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

static struct autoscaler_backend *backend(const char *worker_bin)
{
	static const char *const drop[] = {"SLUICE_POOLS", NULL};
	struct autoscaler_process_opts o = {
		.worker_bin = worker_bin,
		.log_dir = logs,
		.pid_dir = pids,
		.kafka_brokers = "127.0.0.1:9092",
		.redis_url = "redis://127.0.0.1:6379/0",
		.drop_env = drop,
	};
	char err[256];
	struct autoscaler_backend *b = autoscaler_backend_process_new(&o, err, sizeof(err));

	ck_assert_msg(b != NULL, "%s", err);
	return b;
}

static struct autoscaler_pool_config pool(void)
{
	struct autoscaler_pool_config pc;

	memset(&pc, 0, sizeof(pc));
	strcpy(pc.name, "etl");
	strcpy(pc.queue, "etl-q");
	pc.max = 4;
	pc.slots = 3;
	pc.target_per_worker = 3;
	return pc;
}

/* Reads a whole small file into buf; returns 1 once it exists and is non-empty. */
static int slurp(const char *path, char *buf, size_t cap)
{
	FILE *fp = fopen(path, "r");
	size_t n;

	if (!fp)
		return 0;
	n = fread(buf, 1, cap - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return n > 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int wait_file(const char *path, char *buf, size_t cap)
{
	for (long i = 0; i < scaled(5000) / 20; i++) {
		if (slurp(path, buf, cap) && strchr(buf, '\n'))
			return 1;
		sleep_ms(20);
	}
	return 0;
}

struct exits {
	char id[8][64];
	char how[8][64];
	int n;
};

static void on_exit_cb(void *ctx, const char *id, const char *how)
{
	struct exits *e = ctx;

	if (e->n < 8) {
		snprintf(e->id[e->n], sizeof(e->id[0]), "%s", id);
		snprintf(e->how[e->n], sizeof(e->how[0]), "%s", how);
		e->n++;
	}
}

static void reap_until(struct autoscaler_backend *b, struct exits *e, int n)
{
	for (long i = 0; i < scaled(5000) / 20 && e->n < n; i++) {
		b->ops->reap(b, on_exit_cb, e);
		if (e->n < n)
			sleep_ms(20);
	}
}

START_TEST(test_start_and_stop)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_backend *b = backend(bin);
	struct exits e = {0};
	char err[256], path[600], buf[8192], pidtext[32];
	long pid = 0, pgid = 0;

	ck_assert_int_eq(b->ops->start(b, &pc, "w-one", err, sizeof(err)), SL_OK);
	ck_assert_uint_eq(b->ops->running(b), 1);

	snprintf(path, sizeof(path), "%s/w-one.args", dir);
	ck_assert(wait_file(path, buf, sizeof(buf)));
	ck_assert_str_eq(buf, "--queue etl-q --slots 3 --id w-one\n");

	snprintf(path, sizeof(path), "%s/w-one.proc", dir);
	ck_assert(wait_file(path, buf, sizeof(buf)));
	ck_assert_int_eq(sscanf(buf, "%ld %ld", &pid, &pgid), 2);
	ck_assert_int_eq(pid, pgid); /* its own process group */

	snprintf(path, sizeof(path), "%s/w-one.pid", pids);
	ck_assert(slurp(path, pidtext, sizeof(pidtext)));
	ck_assert_int_eq(atol(pidtext), pid);

	snprintf(path, sizeof(path), "%s/w-one.env", dir);
	ck_assert(wait_file(path, buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "SLUICE_KAFKA_BROKERS=127.0.0.1:9092\n"));
	ck_assert_ptr_nonnull(strstr(buf, "SLUICE_REDIS_URL=redis://127.0.0.1:6379/0\n"));
	ck_assert_ptr_nonnull(strstr(buf, "SLUICE_KEEP_ME=kept\n"));
	ck_assert_ptr_null(strstr(buf, "old:1"));
	ck_assert_ptr_null(strstr(buf, "SLUICE_POOLS"));

	b->ops->reap(b, on_exit_cb, &e);
	ck_assert_int_eq(e.n, 0); /* still running */
	b->ops->stop(b, "w-one");
	reap_until(b, &e, 1);
	ck_assert_int_eq(e.n, 1);
	ck_assert_str_eq(e.id[0], "w-one");
	ck_assert_str_eq(e.how[0], "exited with status 0");
	ck_assert_uint_eq(b->ops->running(b), 0);
	snprintf(path, sizeof(path), "%s/w-one.pid", pids);
	ck_assert_int_eq(access(path, F_OK), -1);

	snprintf(path, sizeof(path), "%s/worker-w-one.log", logs);
	ck_assert(slurp(path, buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "hello from w-one\n"));
	ck_assert_ptr_nonnull(strstr(buf, "stdout of w-one\n"));
	b->ops->destroy(b);
}
END_TEST

START_TEST(test_crash_is_reported)
{
	struct autoscaler_pool_config pc = pool();
	struct autoscaler_backend *b;
	struct exits e = {0};
	char err[256];

	setenv("FAKE_EXIT", "3", 1); /* the environment is taken when the backend is made */
	b = backend(bin);
	ck_assert_int_eq(b->ops->start(b, &pc, "w-a", err, sizeof(err)), SL_OK);
	ck_assert_int_eq(b->ops->start(b, &pc, "w-b", err, sizeof(err)), SL_OK);
	reap_until(b, &e, 2);
	ck_assert_int_eq(e.n, 2);
	ck_assert_str_eq(e.how[0], "exited with status 3");
	ck_assert_str_eq(e.how[1], "exited with status 3");
	ck_assert_uint_eq(b->ops->running(b), 0);
	b->ops->destroy(b);
}
END_TEST

START_TEST(test_missing_binary)
{
	struct autoscaler_pool_config pc = pool();
	char path[600], err[256];
	struct autoscaler_backend *b;

	snprintf(path, sizeof(path), "%s/no-such-worker", dir);
	b = backend(path);
	ck_assert_int_eq(b->ops->start(b, &pc, "w-x", err, sizeof(err)), SL_ERR_EXEC);
	ck_assert_ptr_nonnull(strstr(err, "no-such-worker"));
	ck_assert_uint_eq(b->ops->running(b), 0);
	snprintf(path, sizeof(path), "%s/w-x.pid", pids);
	ck_assert_int_eq(access(path, F_OK), -1);
	b->ops->stop(b, "w-unknown"); /* ignored */
	b->ops->destroy(b);
}
END_TEST

START_TEST(test_prunes_stale_pidfiles)
{
	char gone[600], live[600], other[600];
	struct autoscaler_backend *b;
	FILE *fp;

	snprintf(gone, sizeof(gone), "%s/w-gone.pid", pids);
	snprintf(live, sizeof(live), "%s/w-live.pid", pids);
	snprintf(other, sizeof(other), "%s/notes.txt", pids);
	ck_assert_ptr_nonnull(fp = fopen(gone, "w"));
	fprintf(fp, "999999999\n"); /* above any pid_max */
	fclose(fp);
	ck_assert_ptr_nonnull(fp = fopen(live, "w"));
	fprintf(fp, "%ld\n", (long)getpid());
	fclose(fp);
	ck_assert_ptr_nonnull(fp = fopen(other, "w"));
	fclose(fp);
	b = backend(bin);
	ck_assert_int_eq(access(gone, F_OK), -1);
	ck_assert_int_eq(access(live, F_OK), 0);
	ck_assert_int_eq(access(other, F_OK), 0);
	b->ops->destroy(b);
}
END_TEST

static Suite *backend_suite(void)
{
	Suite *s = suite_create("autoscaler_backend_process");
	TCase *tc = tcase_create("process");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, (double)scaled(30000) / 1000);
	tcase_add_test(tc, test_start_and_stop);
	tcase_add_test(tc, test_crash_is_reported);
	tcase_add_test(tc, test_missing_binary);
	tcase_add_test(tc, test_prunes_stale_pidfiles);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(backend_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
