/* test_builtins.c - unit tests of the worker's in-process builtins (noop, echo, sum, sleep,
 * http_get against a libmicrohttpd server started here, sha256). */
#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/util.h"
#include "worker.h"

static struct worker_outcome out;
static char run_dir[512]; /* the http tests' run work dir; empty elsewhere */

static void run(const char *name, const char *input)
{
	worker_outcome_clear(&out);
	memset(&out, 0, sizeof(out));
	worker_builtin_run(name, input, input ? strlen(input) : 0, run_dir[0] ? run_dir : NULL,
			   NULL, NULL, 0, &out);
}

static void teardown(void)
{
	worker_outcome_clear(&out);
}

#define SUCCEEDED SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED
#define FAILED SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED
#define TIMED_OUT SLUICE__V1__TASK_STATUS__TASK_STATUS_TIMED_OUT
#define CANCELLED SLUICE__V1__TASK_STATUS__TASK_STATUS_CANCELLED

START_TEST(test_noop_echo)
{
	run("noop", "[1]");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_str_eq(out.output, "null");

	run("echo", "{\"a\": [1, 2]}\n");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_str_eq(out.output, "{\"a\":[1,2]}");
	run("echo", NULL);
	ck_assert_str_eq(out.output, "null");
	run("echo", "plain text");
	ck_assert_str_eq(out.output, "\"plain text\"");
}
END_TEST

START_TEST(test_sum)
{
	run("sum", "[1, 2, 3, -4]");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_str_eq(out.output, "2");
	run("sum", "[]");
	ck_assert_str_eq(out.output, "0");
	run("sum", "[1, 2.5]");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_str_eq(out.output, "3.5");
	run("sum", "[9223372036854775807, 1]"); /* overflows int64: falls back to a float */
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_double_eq_tol(strtod(out.output, NULL), 9.223372036854775808e18, 1e4);
	run("sum", "[1, \"2\"]");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_str_eq(out.error, "sum: element 1 is not a number");
	run("sum", "{\"a\": 1}");
	ck_assert_int_eq(out.status, FAILED);
	run("sum", "[1,");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_ptr_nonnull(strstr(out.error, "not JSON"));
	run("sum", NULL);
	ck_assert_int_eq(out.status, FAILED);
}
END_TEST

static int stop_now(void *ud)
{
	return sl_mono_ms() >= *(int64_t *)ud;
}

START_TEST(test_sleep)
{
	int64_t t0 = sl_mono_ms(), stop_at;

	run("sleep", "0.1");
	ck_assert_int_eq(out.status, SUCCEEDED);
	ck_assert_int_ge(sl_mono_ms() - t0, 95);

	worker_outcome_clear(&out);
	memset(&out, 0, sizeof(out));
	t0 = sl_mono_ms();
	worker_builtin_run("sleep", "10", 2, NULL, NULL, NULL, t0 + 150, &out);
	ck_assert_int_eq(out.status, TIMED_OUT);
	ck_assert_int_lt(sl_mono_ms() - t0, 2000);

	worker_outcome_clear(&out);
	memset(&out, 0, sizeof(out));
	t0 = sl_mono_ms();
	stop_at = t0 + 100;
	worker_builtin_run("sleep", "10", 2, NULL, stop_now, &stop_at, 0, &out);
	ck_assert_int_eq(out.status, CANCELLED);
	ck_assert_int_eq(out.stopped, 1);
	ck_assert_int_lt(sl_mono_ms() - t0, 2000);

	run("sleep", "-1");
	ck_assert_int_eq(out.status, FAILED);
	run("sleep", "\"x\"");
	ck_assert_int_eq(out.status, FAILED);
}
END_TEST

START_TEST(test_unknown)
{
	run("http_nope", "1");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_str_eq(out.error, "unknown builtin: http_nope");
}
END_TEST


/* ---- http_get / sha256 ---- */

#define BIG_LEN 200000

static struct MHD_Daemon *httpd;
static int http_port;

static ssize_t big_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	if (pos >= BIG_LEN)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (max > BIG_LEN - pos)
		max = (size_t)(BIG_LEN - pos);
	memset(buf, 'b', max);
	return (ssize_t)max;
}

/* Dribbles a byte every 200 ms for ever (timeout and stop tests). */
static ssize_t slow_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	(void)max;
	if (pos > 1000)
		return MHD_CONTENT_READER_END_OF_STREAM;
	usleep(200000);
	buf[0] = 's';
	return 1;
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url,
			     const char *method, const char *version, const char *upload,
			     size_t *upload_size, void **con_cls)
{
	static char big[BIG_LEN];
	struct MHD_Response *r;
	unsigned status = MHD_HTTP_OK;
	enum MHD_Result rc;

	(void)cls, (void)method, (void)version, (void)upload, (void)upload_size, (void)con_cls;
	if (!strcmp(url, "/small")) {
		r = MHD_create_response_from_buffer(12, "hello world\n", MHD_RESPMEM_PERSISTENT);
		MHD_add_response_header(r, "Content-Type", "text/plain");
	} else if (!strcmp(url, "/big")) {
		memset(big, 'B', sizeof(big));
		r = MHD_create_response_from_buffer(sizeof(big), big, MHD_RESPMEM_PERSISTENT);
	} else if (!strcmp(url, "/stream")) {
		r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, big_stream, NULL,
						      NULL);
	} else if (!strcmp(url, "/slow")) {
		r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16, slow_stream, NULL,
						      NULL);
	} else if (!strcmp(url, "/redirect") || !strcmp(url, "/loop")) {
		r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
		MHD_add_response_header(r, "Location", url[1] == 'r' ? "/small" : "/loop");
		status = MHD_HTTP_FOUND;
	} else {
		r = MHD_create_response_from_buffer(10, "not found\n", MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_NOT_FOUND;
	}
	rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

static void http_setup(void)
{
	const union MHD_DaemonInfo *info;
	char tmpl[] = "/tmp/sluice-builtins-XXXXXX";

	ck_assert_ptr_nonnull(mkdtemp(tmpl));
	snprintf(run_dir, sizeof(run_dir), "%s/r-test", tmpl);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	httpd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD,
				 0, NULL, NULL, serve, NULL, MHD_OPTION_END);
	ck_assert_ptr_nonnull(httpd);
	info = MHD_get_daemon_info(httpd, MHD_DAEMON_INFO_BIND_PORT);
	http_port = info->port;
	ck_assert_int_gt(http_port, 0);
}

static void http_teardown(void)
{
	char cmd[600];

	worker_outcome_clear(&out);
	MHD_stop_daemon(httpd);
	*strrchr(run_dir, '/') = '\0';
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", run_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", run_dir);
	run_dir[0] = '\0';
}

static void get(const char *fmt_input, const char *path, long long max, int64_t deadline,
		int (*stop)(void *), void *ud)
{
	char input[1024];

	if (max)
		snprintf(input, sizeof(input),
			 "{\"url\": \"http://127.0.0.1:%d%s\", \"path\": \"%s\", \"max_bytes\": "
			 "%lld%s}",
			 http_port, fmt_input, path, max, "");
	else
		snprintf(input, sizeof(input),
			 "{\"url\": \"http://127.0.0.1:%d%s\", \"path\": \"%s\"}", http_port,
			 fmt_input, path);
	worker_outcome_clear(&out);
	memset(&out, 0, sizeof(out));
	worker_builtin_run("http_get", input, strlen(input), run_dir, stop, ud, deadline, &out);
}

static int no_part_files(void)
{
	char cmd[700];

	snprintf(cmd, sizeof(cmd), "test -z \"$(find '%s' -name '*.part' 2>/dev/null)\"",
		 run_dir);
	return system(cmd) == 0;
}

START_TEST(test_http_get_ok)
{
	json_t *o;
	json_error_t jerr;
	char hex[65], path[700];
	struct stat sb;

	get("/small", "sub/hello.txt", 0, 0, NULL, NULL);
	ck_assert_msg(out.status == SUCCEEDED, "error: %s", out.error);
	ck_assert_ptr_nonnull(o = json_loads(out.output, 0, &jerr));
	snprintf(path, sizeof(path), "%s/sub/hello.txt", run_dir);
	ck_assert_str_eq(json_string_value(json_object_get(o, "path")), path);
	ck_assert_int_eq(json_integer_value(json_object_get(o, "bytes")), 12);
	ck_assert_int_eq(json_integer_value(json_object_get(o, "status")), 200);
	ck_assert_str_eq(json_string_value(json_object_get(o, "content_type")), "text/plain");
	sl_sha256_hex("hello world\n", 12, hex, sizeof(hex));
	ck_assert_str_eq(json_string_value(json_object_get(o, "sha256")), hex);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_size, 12);
	json_decref(o);

	/* sha256 of the same file: relative, absolute, as an object; and of a text */
	run("sha256", "\"sub/hello.txt\"");
	ck_assert_msg(out.status == SUCCEEDED, "error: %s", out.error);
	ck_assert_int_eq(strlen(out.output), 66); /* the digest as a JSON string */
	ck_assert(!strncmp(out.output + 1, hex, 64));
	snprintf(path, sizeof(path), "{\"path\": \"%s/sub/hello.txt\"}", run_dir);
	run("sha256", path);
	ck_assert_msg(out.status == SUCCEEDED, "error: %s", out.error);
	ck_assert(!strncmp(out.output + 1, hex, 64));
	run("sha256", "{\"text\": \"hello world\\n\"}");
	ck_assert(!strncmp(out.output + 1, hex, 64));

	/* redirects are followed */
	get("/redirect", "r.txt", 0, 0, NULL, NULL);
	ck_assert_msg(out.status == SUCCEEDED, "error: %s", out.error);
	ck_assert(strstr(out.output, "\"bytes\":12"));
	/* a URL string names the file after its last segment */
	snprintf(path, sizeof(path), "\"http://127.0.0.1:%d/small?x=1\"", http_port);
	worker_outcome_clear(&out);
	memset(&out, 0, sizeof(out));
	worker_builtin_run("http_get", path, strlen(path), run_dir, NULL, NULL, 0, &out);
	ck_assert_msg(out.status == SUCCEEDED, "error: %s", out.error);
	ck_assert(strstr(out.output, "/r-test/small\""));
	ck_assert(no_part_files());
}
END_TEST

START_TEST(test_http_get_failures)
{
	int64_t t0;
	char input[256];

	get("/missing", "m.txt", 0, 0, NULL, NULL);
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "HTTP status 404"), "error: %s", out.error);

	get("/big", "big.bin", 1000, 0, NULL, NULL); /* Content-Length over the cap */
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "exceeds max_bytes"), "error: %s", out.error);
	get("/stream", "stream.bin", 1000, 0, NULL, NULL); /* no Content-Length */
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "exceeds max_bytes"), "error: %s", out.error);
	get("/stream", "stream.bin", BIG_LEN, 0, NULL, NULL); /* exactly the cap is fine */
	ck_assert_msg(out.status == SUCCEEDED, "error: %s", out.error);

	get("/loop", "loop.txt", 0, 0, NULL, NULL);
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "redirects"), "error: %s", out.error);

	get("/small", "../escape.txt", 0, 0, NULL, NULL);
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "'..'"), "error: %s", out.error);
	get("/small", "/etc/x", 0, 0, NULL, NULL);
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "absolute"), "error: %s", out.error);
	run("http_get", "{\"url\": \"file:///etc/passwd\", \"path\": \"p\"}");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "http:// or https://"), "error: %s", out.error);
	run("http_get", "{\"url\": \"http://x/\", \"path\": \"p\", \"bogus\": 1}");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "unknown input key 'bogus'"), "error: %s", out.error);
	run("http_get", "[1]");
	ck_assert_int_eq(out.status, FAILED);

	/* the input's timeout fails the transfer */
	snprintf(input, sizeof(input),
		 "{\"url\": \"http://127.0.0.1:%d/slow\", \"path\": \"slow\", \"timeout\": \"1s\"}",
		 http_port);
	t0 = sl_mono_ms();
	run("http_get", input);
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "timed out"), "error: %s", out.error);
	ck_assert_int_lt(sl_mono_ms() - t0, 10000);
	/* the task's deadline makes it TIMED_OUT */
	t0 = sl_mono_ms();
	get("/slow", "slow", 0, t0 + 500, NULL, NULL);
	ck_assert_int_eq(out.status, TIMED_OUT);
	/* a stop request (lease lost) aborts within about a second */
	{
		int64_t stop_at = sl_mono_ms() + 300;

		t0 = sl_mono_ms();
		get("/slow", "slow", 0, 0, stop_now, &stop_at);
		ck_assert_int_eq(out.status, CANCELLED);
		ck_assert_int_eq(out.stopped, 1);
		ck_assert_int_lt(sl_mono_ms() - t0, 5000);
	}
	ck_assert(no_part_files());

	run("sha256", "\"nope.txt\"");
	ck_assert_int_eq(out.status, FAILED);
	ck_assert_msg(strstr(out.error, "cannot open"), "error: %s", out.error);
	run("sha256", "{\"path\": \"a\", \"text\": \"b\"}");
	ck_assert_int_eq(out.status, FAILED);
	run("sha256", "\"../x\"");
	ck_assert_int_eq(out.status, FAILED);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker_builtins");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_noop_echo);
	tcase_add_test(tc, test_sum);
	tcase_add_test(tc, test_sleep);
	tcase_add_test(tc, test_unknown);
	suite_add_tcase(s, tc);
	tc = tcase_create("http");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, http_setup, http_teardown);
	tcase_add_test(tc, test_http_get_ok);
	tcase_add_test(tc, test_http_get_failures);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
