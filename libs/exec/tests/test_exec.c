/* test_exec.c - unit tests of sl_exec_run: exit codes, capture caps, stdin, deadlines, groups. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sluice/exec.h"
#include "sluice/util.h"

/* Sanitizer and valgrind runs are slower: scale time limits by SLUICE_TEST_TIME_SCALE. */
static long scaled(long ms)
{
	const char *s = getenv("SLUICE_TEST_TIME_SCALE");
	long f = s ? atol(s) : 1;

#if defined(__SANITIZE_ADDRESS__)
	if (f < 3)
		f = 3;
#endif
	return ms * (f > 0 ? f : 1);
}

/* A pid counts as alive unless it is gone or a zombie (reaping orphans is init's job). */
static int alive(pid_t pid)
{
	char path[64], buf[512];
	FILE *fp;
	char *p;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(fp = fopen(path, "r")))
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	if (!(p = strrchr(buf, ')')) || p[1] != ' ')
		return 0;
	return p[2] != 'Z' && p[2] != 'X';
}

static int gone_within(pid_t pid, long ms)
{
	int64_t until = sl_mono_ms() + ms;

	while (sl_mono_ms() < until) {
		if (!alive(pid))
			return 1;
		usleep(10000);
	}
	return !alive(pid);
}

static enum sl_err run_argv(char *const *argv, struct sl_exec_result *res)
{
	struct sl_exec_spec spec = {.argv = argv};

	return sl_exec_run(&spec, res);
}

START_TEST(test_exit_codes)
{
	struct sl_exec_result res;
	char *ok[] = {"true", NULL};
	char *three[] = {"sh", "-c", "exit 3", NULL};
	char *killed[] = {"sh", "-c", "kill -9 $$", NULL};

	ck_assert_int_eq(run_argv(ok, &res), SL_OK);
	ck_assert_int_eq(res.exit_code, 0);
	ck_assert_int_eq(res.timed_out, 0);
	ck_assert_ptr_nonnull(res.out);
	ck_assert_str_eq(res.out, "");
	sl_exec_result_free(&res);

	ck_assert_int_eq(run_argv(three, &res), SL_OK);
	ck_assert_int_eq(res.exit_code, 3);
	sl_exec_result_free(&res);

	ck_assert_int_eq(run_argv(killed, &res), SL_OK);
	ck_assert_int_eq(res.exit_code, -9);
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_stdout_capture)
{
	struct sl_exec_result res;
	char *argv[] = {"sh", "-c", "printf 'hello\\nworld\\n'; echo oops >&2", NULL};

	ck_assert_int_eq(run_argv(argv, &res), SL_OK);
	ck_assert_str_eq(res.out, "hello\nworld\n");
	ck_assert_uint_eq(res.out_len, 12);
	ck_assert_int_eq(res.out_truncated, 0);
	ck_assert_str_eq(res.err, "oops\n");
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_stdout_cap)
{
	struct sl_exec_result res;
	char *argv[] = {"sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a; echo done >&2", NULL};
	struct sl_exec_spec spec = {.argv = argv, .max_stdout = 1000};

	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	/* The rest was drained, not refused: the writer finished normally. */
	ck_assert_int_eq(res.exit_code, 0);
	ck_assert_uint_eq(res.out_len, 1000);
	ck_assert_uint_eq(strlen(res.out), 1000);
	ck_assert_int_eq(res.out_truncated, 1);
	ck_assert_int_eq(res.out[999], 'a');
	ck_assert_str_eq(res.err, "done\n");
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_stderr_tail)
{
	struct sl_exec_result res;
	char *argv[] = {"sh", "-c",
			"i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done", NULL};
	struct sl_exec_spec spec = {.argv = argv, .max_stderr = 20};

	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_uint_eq(res.err_len, 20);
	ck_assert_str_eq(res.err, "7\nline1998\nline1999\n");
	sl_exec_result_free(&res);

	/* Default tail is 8 KiB. */
	spec.max_stderr = 0;
	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_uint_eq(res.err_len, 8192);
	ck_assert_ptr_nonnull(strstr(res.err, "line1999\n"));
	ck_assert_ptr_null(strstr(res.err, "line0\n"));
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_stdin)
{
	struct sl_exec_result res;
	char *cat[] = {"cat", NULL};
	size_t len = 3 * 1024 * 1024 + 17;
	char *data = malloc(len);
	struct sl_exec_spec spec = {.argv = cat, .stdin_data = data, .stdin_len = len,
				    .max_stdout = len};

	ck_assert_ptr_nonnull(data);
	for (size_t i = 0; i < len; i++)
		data[i] = (char)('a' + i % 26);
	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_int_eq(res.exit_code, 0);
	ck_assert_uint_eq(res.out_len, len);
	ck_assert_int_eq(memcmp(res.out, data, len), 0);
	sl_exec_result_free(&res);

	/* A child that never reads its stdin: no hang, no SIGPIPE for us. */
	char *no_read[] = {"sh", "-c", "exit 0", NULL};
	spec.argv = no_read;
	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_int_eq(res.exit_code, 0);
	sl_exec_result_free(&res);

	/* No stdin: /dev/null. */
	spec.argv = cat;
	spec.stdin_data = NULL;
	spec.stdin_len = 0;
	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_uint_eq(res.out_len, 0);
	sl_exec_result_free(&res);
	free(data);
}
END_TEST

START_TEST(test_timeout_kills_group)
{
	struct sl_exec_result res;
	char *argv[] = {"sh", "-c", "sleep 100 & echo $!; exec sleep 30", NULL};
	struct sl_exec_spec spec = {.argv = argv, .timeout_ms = 300, .kill_grace_ms = 500};
	pid_t grandchild;

	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_int_eq(res.timed_out, 1);
	ck_assert_int_eq(res.stopped, 0);
	ck_assert_int_eq(res.exit_code, -15);
	ck_assert_int_ge(res.duration_ms, 290);
	ck_assert_int_lt(res.duration_ms, scaled(300 + 500 + 700));
	grandchild = (pid_t)atoi(res.out);
	ck_assert_int_gt(grandchild, 1);
	ck_assert(gone_within(grandchild, scaled(2000)));
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_timeout_sigkill_after_grace)
{
	struct sl_exec_result res;
	/* SIG_IGN is inherited across exec: neither sh nor sleep dies of SIGTERM. */
	char *argv[] = {"sh", "-c", "trap '' TERM; sleep 30 & echo $!; wait", NULL};
	struct sl_exec_spec spec = {.argv = argv, .timeout_ms = 200, .kill_grace_ms = 400};
	pid_t grandchild;

	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_int_eq(res.timed_out, 1);
	ck_assert_int_eq(res.exit_code, -9);
	ck_assert_int_ge(res.duration_ms, 590);
	ck_assert_int_lt(res.duration_ms, scaled(200 + 400 + 800));
	grandchild = (pid_t)atoi(res.out);
	ck_assert_int_gt(grandchild, 1);
	ck_assert(gone_within(grandchild, scaled(2000)));
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_background_job_does_not_survive)
{
	struct sl_exec_result res;
	char *argv[] = {"sh", "-c", "sleep 100 & echo $!", NULL};
	pid_t bg;

	ck_assert_int_eq(run_argv(argv, &res), SL_OK);
	ck_assert_int_eq(res.exit_code, 0);
	ck_assert_int_eq(res.timed_out, 0);
	/* The backgrounded sleep held stdout open: killing the group is what ended it. */
	ck_assert_int_lt(res.duration_ms, scaled(1000));
	bg = (pid_t)atoi(res.out);
	ck_assert_int_gt(bg, 1);
	ck_assert(gone_within(bg, scaled(2000)));
	sl_exec_result_free(&res);
}
END_TEST

struct stop_ud {
	int64_t stop_at;
	atomic_int calls;
	pid_t started;
};

static int stop_after(void *ud)
{
	struct stop_ud *s = ud;

	atomic_fetch_add(&s->calls, 1);
	return sl_mono_ms() >= s->stop_at;
}

static void on_start(pid_t pid, void *ud)
{
	((struct stop_ud *)ud)->started = pid;
}

START_TEST(test_should_stop)
{
	struct sl_exec_result res;
	char *argv[] = {"sh", "-c", "sleep 100 & echo $!; sleep 30", NULL};
	struct stop_ud ud = {.stop_at = sl_mono_ms() + 300};
	struct sl_exec_spec spec = {.argv = argv, .timeout_ms = 20000, .kill_grace_ms = 500,
				    .should_stop = stop_after, .on_start = on_start, .ud = &ud};

	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_int_eq(res.stopped, 1);
	ck_assert_int_eq(res.timed_out, 0);
	ck_assert_int_lt(res.duration_ms, scaled(300 + 500 + 700));
	ck_assert_int_gt(atomic_load(&ud.calls), 2);
	ck_assert_int_gt(ud.started, 1);
	ck_assert(gone_within((pid_t)atoi(res.out), scaled(2000)));
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_own_process_group)
{
	struct sl_exec_result res;
	char *argv[] = {"sh", "-c", "cut -d' ' -f5 /proc/$$/stat", NULL};
	struct stop_ud ud = {0};
	struct sl_exec_spec spec = {.argv = argv, .on_start = on_start, .ud = &ud};

	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_int_eq(atoi(res.out), ud.started);
	ck_assert_int_ne(atoi(res.out), getpgrp());
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_missing_command)
{
	struct sl_exec_result res;
	char *argv[] = {"sluice-no-such-command", "x", NULL};
	char *empty[] = {NULL};

	ck_assert_int_eq(run_argv(argv, &res), SL_ERR_EXEC);
	ck_assert_str_eq(res.err, "no such command: sluice-no-such-command");
	sl_exec_result_free(&res);

	ck_assert_int_eq(run_argv(empty, &res), SL_ERR_INVALID);
	sl_exec_result_free(&res);

	char *pwd[] = {"pwd", NULL};
	struct sl_exec_spec spec = {.argv = pwd, .cwd = "/nonexistent/sluice"};
	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_ERR_EXEC);
	ck_assert_ptr_nonnull(strstr(res.err, "cannot enter directory"));
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_env_and_cwd)
{
	struct sl_exec_result res;
	char *argv[] = {"sh", "-c", "printf '%s|%s|%s|%s|' \"$FOO\" \"$BAR\" \"$SLUICE_T_SECRET\" "
				    "\"$SLUICE_T_KEPT\"; pwd",
			NULL};
	char *env[] = {"FOO=1", "BAR=x y", "FOO=2", "SLUICE_T_KEPT=k", NULL};
	struct sl_exec_spec spec = {.argv = argv, .env_add = env, .cwd = "/tmp",
				    .env_drop_prefix = "SLUICE_"};

	setenv("FOO", "outer", 1);
	setenv("SLUICE_T_SECRET", "hunter2", 1);
	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_str_eq(res.out, "2|x y||k|/tmp\n");
	sl_exec_result_free(&res);

	/* Without a drop prefix the inherited variables pass. */
	spec.env_drop_prefix = NULL;
	spec.env_add = NULL;
	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_OK);
	ck_assert_str_eq(res.out, "outer||hunter2||/tmp\n");
	sl_exec_result_free(&res);

	char *bad[] = {"NOEQUALS", NULL};
	spec.env_add = bad;
	ck_assert_int_eq(sl_exec_run(&spec, &res), SL_ERR_INVALID);
	sl_exec_result_free(&res);
}
END_TEST

START_TEST(test_argv_verbatim)
{
	struct sl_exec_result res;
	char *argv[] = {"printf", "%s|%s|%s", "a; echo pwned", "$(id) `id` && rm -rf /x", "'\"\\ *",
			NULL};

	ck_assert_int_eq(run_argv(argv, &res), SL_OK);
	ck_assert_str_eq(res.out, "a; echo pwned|$(id) `id` && rm -rf /x|'\"\\ *");
	sl_exec_result_free(&res);
}
END_TEST

static void *worker_thread(void *arg)
{
	long id = (long)arg;
	long failures = 0;

	for (int i = 0; i < 25; i++) {
		char input[64], code[32];
		struct sl_exec_result res;
		char *cat[] = {"cat", NULL};
		char *ex[] = {"sh", "-c", code, NULL};
		struct sl_exec_spec spec = {.argv = cat, .stdin_data = input};

		snprintf(input, sizeof(input), "thread %ld run %d", id, i);
		spec.stdin_len = strlen(input);
		if (sl_exec_run(&spec, &res) != SL_OK || res.exit_code != 0 ||
		    strcmp(res.out, input) != 0)
			failures++;
		sl_exec_result_free(&res);

		snprintf(code, sizeof(code), "exit %d", (int)(id * 10 + i % 10));
		spec = (struct sl_exec_spec){.argv = ex};
		if (sl_exec_run(&spec, &res) != SL_OK || res.exit_code != (int)(id * 10 + i % 10))
			failures++;
		sl_exec_result_free(&res);
	}
	return (void *)failures;
}

START_TEST(test_concurrency)
{
	pthread_t t[4];
	void *failures;

	for (long i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, worker_thread, (void *)i), 0);
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(t[i], &failures), 0);
		ck_assert_int_eq((long)failures, 0);
	}
}
END_TEST

START_TEST(test_kill_group_guards)
{
	/* Must be no-ops: 0 and 1 would signal our own group or everyone. */
	sl_exec_kill_group(0, SIGKILL);
	sl_exec_kill_group(1, SIGKILL);
	sl_exec_kill_group(-5, SIGKILL);
	sl_exec_result_free(NULL);
}
END_TEST

static void on_usr1(int sig)
{
	(void)sig;
}

/* Whatever the caller ignores, handles or blocks, the task starts with every signal at its
 * default and none blocked (SigIgn and SigBlk of /proc/self/status are 0). */
START_TEST(test_task_signals_are_default)
{
	char *argv[] = {"grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status", NULL};
	struct sigaction sa, old_usr1, old_rt;
	void (*old_pipe)(int), (*old_hup)(int);
	sigset_t block, old_mask;
	struct sl_exec_result res;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, &old_usr1);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGRTMIN + 3, &sa, &old_rt);
	old_pipe = signal(SIGPIPE, SIG_IGN);
	old_hup = signal(SIGHUP, SIG_IGN);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	pthread_sigmask(SIG_BLOCK, &block, &old_mask);

	ck_assert_int_eq(run_argv(argv, &res), SL_OK);
	ck_assert_int_eq(res.exit_code, 0);
	ck_assert_msg(strstr(res.out, "SigBlk:\t0000000000000000") != NULL, "task mask: %s",
		      res.out);
	{
		const char *ign = strstr(res.out, "SigIgn:\t");
		unsigned long long mask = ign ? strtoull(ign + 8, NULL, 16) : ~0ULL;

		/* glibc's spawn helper sets its own internal signals (32 and 33, used for thread
		 * cancellation and setxid) to SIG_IGN, and exec keeps that; nothing else. */
		mask &= ~((1ULL << (32 - 1)) | (1ULL << (33 - 1)));
		ck_assert_msg(mask == 0, "task ignores: %s", res.out);
	}
	sl_exec_result_free(&res);

	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	signal(SIGHUP, old_hup);
	signal(SIGPIPE, old_pipe);
	sigaction(SIGRTMIN + 3, &old_rt, NULL);
	sigaction(SIGUSR1, &old_usr1, NULL);
}
END_TEST

/* The task gets none of the caller's descriptors beyond 0-2; a file that cannot be executed
 * is reported as such; the PATH search goes past a same-named file it may not execute, as
 * execvp does. */
START_TEST(test_descriptors_and_path_search)
{
	char dir[] = "/tmp/sluice-exec-XXXXXX", file[64], mark[16], *old_path;
	char *fds[] = {"sh", "-c", "for f in /proc/$$/fd/*; do echo \"${f##*/}\"; done", NULL};
	char *t[] = {"true", NULL}, *direct[2] = {file, NULL};
	struct sl_exec_result res;
	int fd = open("/dev/null", O_RDONLY), made;

	ck_assert_int_ge(fd, 3);
	ck_assert_int_eq(run_argv(fds, &res), SL_OK);
	ck_assert_msg(strstr(res.out, "0\n1\n2\n") == res.out, "task fds: %s", res.out);
	snprintf(mark, sizeof(mark), "\n%d\n", fd);
	ck_assert_msg(!strstr(res.out, mark), "descriptor %d leaked into the task: %s", fd,
		      res.out);
	sl_exec_result_free(&res);
	close(fd);

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/true", dir);
	made = open(file, O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(made, 0);
	ck_assert_int_eq(write(made, "#!/bin/sh\nexit 3\n", 17), 17);
	close(made);
	ck_assert_int_eq(run_argv(direct, &res), SL_ERR_EXEC);
	ck_assert_msg(strstr(res.err, "cannot execute") == res.err, "error: %s", res.err);
	sl_exec_result_free(&res);

	old_path = strdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
	{
		char path[256];

		snprintf(path, sizeof(path), "%s:/usr/bin:/bin", dir);
		setenv("PATH", path, 1);
	}
	ck_assert_int_eq(run_argv(t, &res), SL_OK);
	ck_assert_int_eq(res.exit_code, 0);
	sl_exec_result_free(&res);
	setenv("PATH", old_path, 1);
	free(old_path);
	unlink(file);
	rmdir(dir);
}
END_TEST

static void write_pid(pid_t pid, void *ud)
{
	int fd = *(int *)ud;

	if (write(fd, &pid, sizeof(pid)) != (ssize_t)sizeof(pid))
		_exit(3);
}

/* Starts `sleep 30` from a forked caller (die_with_caller as given), kills the caller with
 * SIGKILL, and returns the task's pid (the caller reaped). */
static pid_t task_of_killed_caller(int die_with_caller)
{
	char *argv[] = {"sleep", "30", NULL};
	int p[2];
	pid_t caller, task = -1;

	ck_assert_int_eq(pipe(p), 0);
	caller = fork();
	ck_assert_int_ge(caller, 0);
	if (caller == 0) {
		struct sl_exec_spec spec = {.argv = argv, .on_start = write_pid, .ud = &p[1],
					    .die_with_caller = die_with_caller};
		struct sl_exec_result res;

		close(p[0]);
		sl_exec_run(&spec, &res);
		_exit(0);
	}
	close(p[1]);
	ck_assert_int_eq(read(p[0], &task, sizeof(task)), (ssize_t)sizeof(task));
	close(p[0]);
	ck_assert_int_gt(task, 0);
	ck_assert_int_eq(kill(caller, SIGKILL), 0);
	ck_assert_int_eq(waitpid(caller, NULL, 0), caller);
	return task;
}

/* die_with_caller: a caller killed with SIGKILL takes its command with it (a worker killed
 * that way left its task running); without it the command outlives the caller. */
START_TEST(test_command_dies_with_its_caller)
{
	pid_t task = task_of_killed_caller(1);
	int gone = gone_within(task, scaled(2000)), ran;

	if (!gone)
		kill(task, SIGKILL); /* nothing left behind when the check fails */
	ck_assert_msg(gone, "task %d outlived its killed caller", (int)task);
	task = task_of_killed_caller(0);
	usleep(300000);
	ran = alive(task);
	kill(task, SIGKILL);
	ck_assert_msg(ran, "without die_with_caller the task %d should still run", (int)task);
}
END_TEST

static Suite *exec_suite(void)
{
	Suite *s = suite_create("exec");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, (double)scaled(30000) / 1000.0);
	tcase_add_test(tc, test_exit_codes);
	tcase_add_test(tc, test_stdout_capture);
	tcase_add_test(tc, test_stdout_cap);
	tcase_add_test(tc, test_stderr_tail);
	tcase_add_test(tc, test_stdin);
	tcase_add_test(tc, test_timeout_kills_group);
	tcase_add_test(tc, test_timeout_sigkill_after_grace);
	tcase_add_test(tc, test_background_job_does_not_survive);
	tcase_add_test(tc, test_should_stop);
	tcase_add_test(tc, test_own_process_group);
	tcase_add_test(tc, test_missing_command);
	tcase_add_test(tc, test_env_and_cwd);
	tcase_add_test(tc, test_argv_verbatim);
	tcase_add_test(tc, test_concurrency);
	tcase_add_test(tc, test_kill_group_guards);
	tcase_add_test(tc, test_task_signals_are_default);
	tcase_add_test(tc, test_descriptors_and_path_search);
	tcase_add_test(tc, test_command_dies_with_its_caller);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(exec_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
