/* e2e_watcher.c - files dropped into a watched directory become runs: one per new content,
 * none for copies, hidden, temporary or non-regular files, none again after a restart. */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/util.h"

static pid_t planner, worker, watcher;
static const char *base;
static char inbox[4096];

static pid_t start_watcher(void)
{
	const char *args[] = {"--flows-dir", SLUICE_SOURCE_DIR "/examples", "--base-dir", base,
			      NULL};
	return e2e_spawn("watcher-watcher", "sluice-watcher", args, NULL);
}

static void start_services(void)
{
	const char *pargs[] = {"--flows-dir", SLUICE_SOURCE_DIR "/examples", NULL};
	const char *wargs[] = {"--slots", "4", "--id", "e2e-watch-w1", NULL};

	e2e_require_env();
	base = e2e_tmpdir("watcher");
	snprintf(inbox, sizeof(inbox), "%s/inbox", base);
	mkdir(inbox, 0755);
	planner = e2e_spawn("watcher-planner", "sluice-planner", pargs, NULL);
	worker = e2e_spawn("watcher-worker", "sluice-worker", wargs, NULL);
	watcher = start_watcher();
	ck_assert(planner > 0 && worker > 0 && watcher > 0);
	sleep(2); /* the watcher's first scan and inotify set-up */
}

static void stop_services(void)
{
	e2e_stop(watcher, SIGTERM, 15000);
	e2e_stop(worker, SIGTERM, 15000);
	e2e_stop(planner, SIGTERM, 15000);
}

/* Writes content under a temporary hidden name, then renames it into place, as an uploader
 * that wants the watcher to see only complete files does. */
static void drop(const char *name, const char *content)
{
	char tmp[4200], dst[4200];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s/.%s.part", inbox, name);
	snprintf(dst, sizeof(dst), "%s/%s", inbox, name);
	f = fopen(tmp, "w");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	fclose(f);
	ck_assert_int_eq(rename(tmp, dst), 0);
}

/* The run the watcher made for this content (cursor lookup), waiting up to timeout_ms. */
static char *run_for_content(const char *content, long timeout_ms)
{
	char sha[65];
	int64_t deadline = sl_mono_ms() + e2e_ms(timeout_ms);

	sl_sha256_hex(content, strlen(content), sha, sizeof(sha));
	while (sl_mono_ms() < deadline) {
		redisReply *r = sl_state_command(e2e_state(), "HGET sluice:watch:ingest %s", sha);
		if (r && r->type == REDIS_REPLY_STRING) {
			char *run = strdup(r->str);
			freeReplyObject(r);
			return run;
		}
		if (r)
			freeReplyObject(r);
		usleep(100000);
	}
	return NULL;
}

static long ingest_runs(void)
{
	redisReply *r = sl_state_command(e2e_state(), "HLEN sluice:watch:ingest");
	long n = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : -1;

	if (r)
		freeReplyObject(r);
	return n;
}

static long runs_total(void)
{
	redisReply *r = sl_state_command(e2e_state(), "ZCARD sluice:runs");
	long n = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : -1;

	if (r)
		freeReplyObject(r);
	return n;
}

START_TEST(each_new_file_makes_one_run_with_path_size_and_hash)
{
	char content[3][128], name[3][64];
	long stamp = (long)sl_now_ms();

	for (int i = 0; i < 3; i++) {
		snprintf(name[i], sizeof(name[i]), "data-%d.csv", i);
		snprintf(content[i], sizeof(content[i]), "id,value\n%ld,%d\n%d,x\n", stamp, i, i);
		drop(name[i], content[i]);
	}
	for (int i = 0; i < 3; i++) {
		char *run = run_for_content(content[i], 30000), *state, *params;
		char sha[65], want_path[4200];
		json_t *p, *out;

		ck_assert_msg(run != NULL, "no run for %s", name[i]);
		state = e2e_wait_run_end(run, 60000);
		ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "run %s: %s", run,
			      state ? state : "timeout");
		params = e2e_run_field(run, "params");
		p = json_loads(params, 0, NULL);
		snprintf(want_path, sizeof(want_path), "%s/%s", inbox, name[i]);
		sl_sha256_hex(content[i], strlen(content[i]), sha, sizeof(sha));
		ck_assert_str_eq(json_string_value(json_object_get(p, "path")), want_path);
		ck_assert_int_eq(json_integer_value(json_object_get(p, "size")),
				 (long)strlen(content[i]));
		ck_assert_str_eq(json_string_value(json_object_get(p, "sha256")), sha);
		out = e2e_task_output(run, "count", -1);
		ck_assert_int_eq(json_integer_value(json_object_get(out, "lines")), 3);
		ck_assert_int_eq(json_integer_value(json_object_get(out, "bytes")),
				 (long)strlen(content[i]));
		json_decref(out);
		json_decref(p);
		free(params);
		free(state);
		free(run);
	}
}
END_TEST

START_TEST(identical_copy_hidden_temp_and_symlink_make_no_run)
{
	char content[128], path[4200], target[4200];
	char *run;
	long before_cursor, before_runs;
	FILE *f;

	snprintf(content, sizeof(content), "unique %lld\n", (long long)sl_now_ms());
	drop("original.txt", content);
	run = run_for_content(content, 30000);
	ck_assert_ptr_nonnull(run);
	free(e2e_wait_run_end(run, 60000));
	before_cursor = ingest_runs();
	before_runs = runs_total();

	drop("copy-of-original.txt", content); /* byte-identical */
	snprintf(path, sizeof(path), "%s/.hidden", inbox);
	f = fopen(path, "w");
	fputs("hidden\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/upload.tmp", inbox);
	f = fopen(path, "w");
	fputs("temporary\n", f);
	fclose(f);
	snprintf(target, sizeof(target), "%s/outside.txt", base);
	f = fopen(target, "w");
	fputs("outside the inbox\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/link.txt", inbox);
	ck_assert_int_eq(symlink(target, path), 0);
	sleep(4);
	ck_assert_int_eq(ingest_runs(), before_cursor);
	ck_assert_int_eq(runs_total(), before_runs);
	ck_assert(e2e_alive(watcher));
	free(run);
}
END_TEST

START_TEST(restart_does_not_rerun_processed_files)
{
	long before_runs, before_cursor;
	char content[128], *run;

	before_runs = runs_total();
	before_cursor = ingest_runs();
	e2e_stop(watcher, SIGTERM, 15000);
	watcher = start_watcher();
	ck_assert_int_gt(watcher, 0);
	sleep(4); /* the start-up scan sees every file already in the inbox */
	ck_assert_int_eq(runs_total(), before_runs);
	ck_assert_int_eq(ingest_runs(), before_cursor);
	/* and it still watches */
	snprintf(content, sizeof(content), "after restart %lld\n", (long long)sl_now_ms());
	drop("after-restart.txt", content);
	run = run_for_content(content, 30000);
	ck_assert_ptr_nonnull(run);
	free(run);
}
END_TEST

int main(void)
{
	const TTest *const tests[] = {
		each_new_file_makes_one_run_with_path_size_and_hash,
		identical_copy_hidden_temp_and_symlink_make_no_run,
		restart_does_not_rerun_processed_files,
		NULL,
	};

	return e2e_run_suite("e2e_watcher", start_services, stop_services, 180, tests);
}
