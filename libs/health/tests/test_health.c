/* test_health.c - the health server on 127.0.0.1:0: /healthz, /readyz, /metrics over libcurl. */
#include <check.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/health.h"

struct body {
	char buf[65536];
	size_t len;
};

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	struct body *b = ud;
	size_t len = size * n;

	if (b->len + len >= sizeof(b->buf))
		return 0;
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	b->buf[b->len] = '\0';
	return len;
}

/* GETs path on the server; returns the HTTP status (or -1) and the body in b. */
static long get(int port, const char *path, struct body *b, char *ctype, size_t ctcap)
{
	CURL *c = curl_easy_init();
	char url[256];
	long status = -1;
	char *ct = NULL;

	b->len = 0;
	b->buf[0] = '\0';
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	if (curl_easy_perform(c) == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		if (ctype && curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
			snprintf(ctype, ctcap, "%s", ct);
	}
	curl_easy_cleanup(c);
	return status;
}

START_TEST(endpoints_answer)
{
	char err[256] = "", ctype[128] = "";
	struct sl_health *h = sl_health_new("127.0.0.1:0", "test", err, sizeof(err));
	struct sl_metric *started, *busy;
	static struct body b;
	int port;

	ck_assert_msg(h != NULL, "sl_health_new: %s", err);
	port = sl_health_port(h);
	ck_assert_int_gt(port, 0);
	started = sl_health_counter(h, "sluice_test_started_total", "Tasks started.\nSecond line");
	busy = sl_health_gauge(h, "sluice_test_busy", "Busy slots.");
	ck_assert_ptr_nonnull(started);
	ck_assert_ptr_nonnull(busy);

	ck_assert_int_eq(get(port, "/healthz", &b, NULL, 0), 200);
	ck_assert_str_eq(b.buf, "ok\n");
	ck_assert_int_eq(get(port, "/readyz", &b, NULL, 0), 503);
	sl_health_set_ready(h, 1);
	ck_assert_int_eq(get(port, "/readyz", &b, NULL, 0), 200);
	sl_health_set_ready(h, 0);
	ck_assert_int_eq(get(port, "/readyz", &b, NULL, 0), 503);
	ck_assert_int_eq(get(port, "/nope", &b, NULL, 0), 404);

	sl_metric_add(started, 41);
	sl_metric_inc(started);
	sl_metric_add(started, -5); /* counters never go down */
	sl_metric_set(busy, 3);
	sl_metric_add(busy, -1);
	ck_assert_int_eq(get(port, "/metrics", &b, ctype, sizeof(ctype)), 200);
	ck_assert_msg(strstr(ctype, "text/plain") && strstr(ctype, "version=0.0.4"),
		      "content type %s", ctype);
	ck_assert_msg(strstr(b.buf, "# HELP sluice_test_started_total Tasks started.\\nSecond "
				    "line\n# TYPE sluice_test_started_total counter\n"
				    "sluice_test_started_total 42\n"),
		      "metrics:\n%s", b.buf);
	ck_assert_msg(strstr(b.buf, "# TYPE sluice_test_busy gauge\nsluice_test_busy 2\n"),
		      "metrics:\n%s", b.buf);
	ck_assert_msg(strstr(b.buf, "sluice_up{service=\"test\"} 1\n"), "metrics:\n%s", b.buf);
	ck_assert_msg(strstr(b.buf, "sluice_ready{service=\"test\"} 0\n"), "metrics:\n%s",
		      b.buf);
	/* Every line is a comment or "name[{labels}] value". */
	for (char *line = b.buf, *nl; *line; line = nl + 1) {
		ck_assert_ptr_nonnull(nl = strchr(line, '\n'));
		if (line[0] == '#')
			ck_assert(!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7));
		else
			ck_assert_msg(memchr(line, ' ', (size_t)(nl - line)) != NULL, "line %.*s",
				      (int)(nl - line), line);
	}
	sl_health_destroy(h);
}
END_TEST

START_TEST(registration_rules)
{
	char err[256] = "";
	struct sl_health *h = sl_health_new("", "test", err, sizeof(err));
	struct sl_metric *a;
	char name[64];

	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(sl_health_port(h), 0); /* disabled: no server, metrics still work */
	ck_assert_ptr_null(sl_health_counter(h, "9bad", "x"));
	ck_assert_ptr_null(sl_health_counter(h, "bad-name", "x"));
	ck_assert_ptr_null(sl_health_counter(h, "", "x"));
	a = sl_health_counter(h, "dup_total", "x");
	ck_assert_ptr_eq(sl_health_counter(h, "dup_total", "y"), a);
	ck_assert_ptr_null(sl_health_gauge(h, "dup_total", "x"));
	for (int i = 1; i < SL_HEALTH_MAX_METRICS; i++) {
		snprintf(name, sizeof(name), "m%d", i);
		ck_assert_ptr_nonnull(sl_health_gauge(h, name, "x"));
	}
	ck_assert_ptr_null(sl_health_gauge(h, "one_too_many", "x"));
	sl_metric_inc(NULL); /* accepted, does nothing */
	ck_assert_int_eq(sl_metric_get(NULL), 0);
	sl_health_destroy(h);
	sl_health_destroy(NULL);
}
END_TEST

START_TEST(bad_address_is_an_error)
{
	char err[256] = "";

	ck_assert_ptr_null(sl_health_new("127.0.0.1", "t", err, sizeof(err)));
	ck_assert_msg(strstr(err, "host:port"), "%s", err);
	ck_assert_ptr_null(sl_health_new("127.0.0.1:99999", "t", err, sizeof(err)));
	ck_assert_ptr_null(sl_health_new("no.such.host.invalid:1", "t", err, sizeof(err)));
}
END_TEST

START_TEST(labelled_families_render_together)
{
	char err[256] = "", *buf = malloc(1 << 16);
	struct sl_health *h = sl_health_new(NULL, "t", err, sizeof(err));
	struct sl_metric *a = sl_health_gauge(h, "pool_lag{pool=\"a\"}", "Lag per pool.");
	struct sl_metric *x = sl_health_counter(h, "other_total", "Other.");
	struct sl_metric *b = sl_health_gauge(h, "pool_lag{pool=\"b\",band=\"high\"}", "ignored");

	ck_assert(a && x && b);
	ck_assert_ptr_eq(sl_health_gauge(h, "pool_lag{pool=\"a\"}", "x"), a);
	ck_assert_ptr_null(sl_health_counter(h, "pool_lag{pool=\"c\"}", "x")); /* kind clash */
	ck_assert_ptr_null(sl_health_gauge(h, "bad{pool=a}", "x"));
	ck_assert_ptr_null(sl_health_gauge(h, "bad{pool=\"a\"", "x"));
	ck_assert_ptr_null(sl_health_gauge(h, "bad{=\"a\"}", "x"));
	ck_assert_ptr_null(sl_health_gauge(h, "bad{p=\"a\"}x", "x"));
	sl_metric_set(a, 5);
	sl_metric_set(b, 7);
	ck_assert_uint_ne(sl_health_render(h, buf, 1 << 16), SIZE_MAX);
	ck_assert_msg(strstr(buf, "# HELP pool_lag Lag per pool.\n# TYPE pool_lag gauge\n"
				  "pool_lag{pool=\"a\"} 5\n"
				  "pool_lag{pool=\"b\",band=\"high\"} 7\n# HELP other_total"),
		      "%s", buf);
	ck_assert_uint_eq(sl_health_render(h, buf, 16), SIZE_MAX); /* too small: said so */
	free(buf);
	sl_health_destroy(h);
}
END_TEST

static void *hammer(void *arg)
{
	for (int i = 0; i < 100000; i++)
		sl_metric_inc(arg);
	return NULL;
}

START_TEST(counters_are_atomic)
{
	char err[256] = "";
	struct sl_health *h = sl_health_new(NULL, "t", err, sizeof(err));
	struct sl_metric *m = sl_health_counter(h, "hits_total", "x");
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, hammer, m);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(sl_metric_get(m), 400000);
	sl_health_destroy(h);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("health");
	TCase *tc = tcase_create("health");
	SRunner *sr;
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, endpoints_answer);
	tcase_add_test(tc, registration_rules);
	tcase_add_test(tc, bad_address_is_an_error);
	tcase_add_test(tc, counters_are_atomic);
	tcase_add_test(tc, labelled_families_render_together);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	curl_global_cleanup();
	return failed ? 1 : 0;
}
