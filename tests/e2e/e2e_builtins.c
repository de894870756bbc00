/* e2e_builtins.c - http_get and sha256 end to end: a planner and a worker download files
 * from a local `python3 -m http.server` into the run's work dir and digest them. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "e2e.h"
#include "sluice/util.h"

#define BIG_BYTES 300000

static pid_t planner, worker, httpd;
static int http_port;
static char served[512], work_dir[512];

static int port_answers(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

extern char **environ;

/* Starts python3 -m http.server serving dir on 127.0.0.1:port in its own process group;
 * output in <tmp>/logs/builtins-httpd.log. Returns the pid or -1. */
static pid_t spawn_httpd(const char *dir, int port)
{
	char portstr[16], log[4096];
	const char *argv[] = {"python3", "-m", "http.server", portstr, "--bind", "127.0.0.1",
			      "--directory", dir, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	pid_t pid = -1;

	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(log, sizeof(log), "%s/builtins-httpd.log", e2e_tmpdir("logs"));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
	posix_spawnattr_setpgroup(&attr, 0);
	if (posix_spawnp(&pid, "python3", &fa, &attr, (char *const *)argv, environ) != 0)
		pid = -1;
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return pid;
}

static void write_file(const char *name, const char *data, size_t len)
{
	char path[700];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", served, name);
	ck_assert_ptr_nonnull(fp = fopen(path, "wb"));
	ck_assert_int_eq(fwrite(data, 1, len, fp), len);
	fclose(fp);
}

/* Reads a whole file (at most 1 MiB) into a new buffer; *len gets its size. */
static char *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = malloc(1 << 20);

	ck_assert_ptr_nonnull(fp);
	*len = fread(buf, 1, 1 << 20, fp);
	fclose(fp);
	return buf;
}

static void start_services(void)
{
	const char *pargs[] = {"--flows-dir", E2E_FLOWS, "--lease-ttl", "3s", NULL};
	char *big = malloc(BIG_BYTES), *bin = malloc(5000);
	const char *wargs[] = {"--slots", "3", "--id", "e2e-builtins-w", "--work-dir", NULL, NULL};
	int64_t until;

	e2e_require_env();
	snprintf(served, sizeof(served), "%s", e2e_tmpdir("builtins-served"));
	snprintf(work_dir, sizeof(work_dir), "%s", e2e_tmpdir("builtins-work"));
	wargs[5] = work_dir;
	for (int i = 0; i < BIG_BYTES; i++)
		big[i] = (char)('a' + i % 26);
	for (int i = 0; i < 5000; i++)
		bin[i] = (char)(i * 7 + 3);
	write_file("a.bin", bin, 5000);
	write_file("b.txt", "hello from the e2e server\n", 26);
	write_file("big.bin", big, BIG_BYTES);
	free(big);
	free(bin);

	ck_assert_int_gt(http_port = e2e_free_port(), 0);
	ck_assert_int_gt(httpd = spawn_httpd(served, http_port), 0);
	until = sl_mono_ms() + e2e_ms(20000);
	while (!port_answers(http_port) && sl_mono_ms() < until)
		usleep(100000);
	ck_assert_msg(port_answers(http_port), "python3 -m http.server did not come up");

	planner = e2e_spawn("builtins-planner", "sluice-planner", pargs, NULL);
	worker = e2e_spawn("builtins-worker", "sluice-worker", wargs, NULL);
	ck_assert_int_gt(planner, 0);
	ck_assert_int_gt(worker, 0);
}

static void stop_services(void)
{
	e2e_stop(worker, SIGTERM, 15000);
	e2e_stop(planner, SIGTERM, 15000);
	e2e_stop(httpd, SIGTERM, 5000);
}

/* Submits the http_get flow with reqs (a JSON array text) and waits for its end; returns the
 * run id (caller frees) and the final state in *state (caller frees). */
static char *run_http_get(const char *reqs, char **state)
{
	char param[4096];
	const char *params[] = {param, NULL};
	char *run;

	snprintf(param, sizeof(param), "reqs=%s", reqs);
	ck_assert_ptr_nonnull(run = e2e_submit(E2E_FLOWS "/http_get.yaml", params));
	*state = e2e_wait_run_end(run, e2e_ms(90000));
	ck_assert_msg(*state != NULL, "run %s did not end", run);
	return run;
}

/* Checks one fetch output against the served file name; returns its digest (static). */
static const char *check_fetch(const char *run, int idx, const char *name, const char *rel)
{
	static char hex[65];
	char served_path[700], want_path[700];
	json_t *o = e2e_task_output(run, "fetch", idx);
	size_t len, got_len;
	char *want, *got;

	ck_assert_msg(o && json_is_object(o), "fetch[%d] output is not an object", idx);
	snprintf(served_path, sizeof(served_path), "%s/%s", served, name);
	snprintf(want_path, sizeof(want_path), "%s/%s/%s", work_dir, run, rel);
	want = read_file(served_path, &len);
	sl_sha256_hex(want, len, hex, sizeof(hex));
	ck_assert_str_eq(json_string_value(json_object_get(o, "path")), want_path);
	ck_assert_int_eq(json_integer_value(json_object_get(o, "bytes")), (json_int_t)len);
	ck_assert_str_eq(json_string_value(json_object_get(o, "sha256")), hex);
	ck_assert_int_eq(json_integer_value(json_object_get(o, "status")), 200);
	/* the file in the run's work dir holds the body */
	got = read_file(want_path, &got_len);
	ck_assert_int_eq(got_len, len);
	ck_assert(memcmp(got, want, len) == 0);
	free(got);
	free(want);
	json_decref(o);
	return hex;
}

START_TEST(downloads_land_in_the_work_dir_with_digests)
{
	char reqs[2048], *state, *run;
	json_t *d;

	snprintf(reqs, sizeof(reqs),
		 "[{\"url\": \"http://127.0.0.1:%d/a.bin\", \"path\": \"img/a.bin\"},"
		 " {\"url\": \"http://127.0.0.1:%d/b.txt\", \"path\": \"b.txt\", \"timeout\": \"20s\"},"
		 " {\"url\": \"http://127.0.0.1:%d/big.bin\", \"path\": \"big.bin\", \"max_bytes\": %d}]",
		 http_port, http_port, http_port, BIG_BYTES);
	run = run_http_get(reqs, &state);
	ck_assert_msg(!strcmp(state, "SUCCEEDED"), "run %s ended %s", run, state);
	{
		const char *names[] = {"a.bin", "b.txt", "big.bin"};
		const char *rels[] = {"img/a.bin", "b.txt", "big.bin"};

		for (int i = 0; i < 3; i++) {
			const char *hex = check_fetch(run, i, names[i], rels[i]);

			/* sha256 of the downloaded file, computed by the other builtin */
			d = e2e_task_output(run, "digest", i);
			ck_assert_msg(d && json_is_string(d), "digest[%d] is not a string", i);
			ck_assert_str_eq(json_string_value(d), hex);
			json_decref(d);
		}
	}
	free(state);
	free(run);
}
END_TEST

/* Asserts that the run failed because fetch[idx] FAILED with needle in its error. */
static void assert_fetch_failed(const char *run, const char *state, int idx, const char *needle)
{
	char *ti_state = e2e_ti_field(run, "fetch", idx, "state");
	char *err = e2e_ti_field(run, "fetch", idx, "error");
	char *run_err = e2e_run_field(run, "error");

	ck_assert_msg(!strcmp(state, "FAILED"), "run %s ended %s", run, state);
	ck_assert_msg(ti_state && !strcmp(ti_state, "FAILED"), "fetch[%d] is %s", idx,
		      ti_state ? ti_state : "-");
	ck_assert_msg(err && strstr(err, needle), "fetch[%d] error: %s", idx, err ? err : "-");
	ck_assert_msg(run_err && strstr(run_err, needle), "run error: %s",
		      run_err ? run_err : "-");
	free(run_err);
	free(err);
	free(ti_state);
}

START_TEST(missing_file_fails_the_task)
{
	char reqs[1024], *state, *run, path[700];

	snprintf(reqs, sizeof(reqs),
		 "[{\"url\": \"http://127.0.0.1:%d/missing.png\", \"path\": \"missing.png\"}]",
		 http_port);
	run = run_http_get(reqs, &state);
	assert_fetch_failed(run, state, 0, "HTTP status 404");
	snprintf(path, sizeof(path), "%s/%s/missing.png", work_dir, run);
	ck_assert_msg(access(path, F_OK) != 0, "%s exists after a 404", path);
	free(state);
	free(run);
}
END_TEST

START_TEST(body_over_max_bytes_fails_the_task)
{
	char reqs[1024], *state, *run, path[700];

	snprintf(reqs, sizeof(reqs),
		 "[{\"url\": \"http://127.0.0.1:%d/big.bin\", \"path\": \"big.bin\", "
		 "\"max_bytes\": 100000}]",
		 http_port);
	run = run_http_get(reqs, &state);
	assert_fetch_failed(run, state, 0, "exceeds max_bytes (100000 bytes)");
	snprintf(path, sizeof(path), "%s/%s/big.bin", work_dir, run);
	ck_assert_msg(access(path, F_OK) != 0, "%s exists after an aborted transfer", path);
	free(state);
	free(run);
}
END_TEST

START_TEST(bad_path_is_refused)
{
	char reqs[1024], *state, *run;

	snprintf(reqs, sizeof(reqs),
		 "[{\"url\": \"http://127.0.0.1:%d/b.txt\", \"path\": \"../../escape.txt\"}]",
		 http_port);
	run = run_http_get(reqs, &state);
	assert_fetch_failed(run, state, 0, "must not contain '..'");
	free(state);
	free(run);
}
END_TEST

int main(void)
{
	const TTest *const tests[] = {
		downloads_land_in_the_work_dir_with_digests,
		missing_file_fails_the_task,
		body_over_max_bytes_fails_the_task,
		bad_path_is_refused,
		NULL,
	};

	return e2e_run_suite("e2e_builtins", start_services, stop_services, 300, tests);
}
