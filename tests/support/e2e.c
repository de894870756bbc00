/* e2e.c - helpers for end-to-end suites: services as child processes, the CLI, Redis reads. */
#include "e2e.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sluice/exec.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

extern char **environ;

/* One connection per test process; created on first use. */
static struct sl_state *e2e_st;

long e2e_ms(long ms)
{
	const char *s = getenv("SLUICE_TEST_SLOWDOWN");
	long f = s ? atol(s) : 1;

	return ms * (f > 0 ? f : 1);
}

void e2e_require_env(void)
{
	if (!getenv("SLUICE_KAFKA_BROKERS") || !getenv("SLUICE_REDIS_URL") ||
	    !getenv("SLUICE_TEST_TMP")) {
		fprintf(stderr, "e2e: run under scripts/testenv (SLUICE_KAFKA_BROKERS, "
				"SLUICE_REDIS_URL, SLUICE_TEST_TMP unset)\n");
		exit(2);
	}
}

const char *e2e_tmpdir(const char *name)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", getenv("SLUICE_TEST_TMP"), name);
	mkdir(path, 0755);
	return strdup(path);
}

pid_t e2e_spawn(const char *label, const char *bin, const char *const *args,
		const char *const *env)
{
	char path[4096], logdir[4096], logpath[8400];
	const char *argv[64];
	char **envp = NULL;
	size_t nenv = 0, nextra = 0, i;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	pid_t pid = -1;
	int argc = 0;

	snprintf(path, sizeof(path), "%s/%s", SLUICE_BIN_DIR, bin);
	snprintf(logdir, sizeof(logdir), "%s/logs", getenv("SLUICE_TEST_TMP"));
	mkdir(logdir, 0755);
	snprintf(logpath, sizeof(logpath), "%s/%s.log", logdir, label);
	argv[argc++] = path;
	for (i = 0; args && args[i] && argc < 63; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	while (environ[nenv])
		nenv++;
	while (env && env[nextra])
		nextra++;
	envp = calloc(nenv + nextra + 1, sizeof(*envp));
	for (i = 0; i < nenv; i++)
		envp[i] = environ[i];
	for (i = 0; i < nextra; i++)
		envp[nenv + i] = (char *)env[i];
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
	posix_spawnattr_setpgroup(&attr, 0);
	if (posix_spawn(&pid, path, &fa, &attr, (char *const *)argv, envp) != 0)
		pid = -1;
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	free(envp);
	return pid;
}

int e2e_stop(pid_t pid, int sig, long timeout_ms)
{
	int status = 0;
	int64_t deadline = sl_mono_ms() + timeout_ms;

	if (pid <= 0)
		return -1;
	kill(pid, sig);
	while (sl_mono_ms() < deadline) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid || (r < 0 && errno == ECHILD))
			return status;
		usleep(20000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return status;
}

int e2e_alive(pid_t pid)
{
	int status;

	if (pid <= 0)
		return 0;
	return waitpid(pid, &status, WNOHANG) == 0;
}

int e2e_cli(char **out, char **err, const char *const *args)
{
	char path[4096];
	const char *argv[64];
	struct sl_exec_spec spec = {0};
	struct sl_exec_result res;
	int argc = 0, code;

	snprintf(path, sizeof(path), "%s/sluice", SLUICE_BIN_DIR);
	argv[argc++] = path;
	for (size_t i = 0; args && args[i] && argc < 63; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	spec.argv = (char *const *)argv;
	spec.timeout_ms = e2e_ms(300000);
	spec.max_stderr = 16384;
	if (sl_exec_run(&spec, &res) != SL_OK) {
		sl_exec_result_free(&res);
		return -1;
	}
	if (res.err_len)
		fprintf(stderr, "[sluice %s] %s", argc > 1 ? argv[1] : "", res.err);
	code = res.exit_code;
	if (out) {
		*out = res.out;
		res.out = NULL;
	}
	if (err) {
		*err = res.err;
		res.err = NULL;
	}
	sl_exec_result_free(&res);
	return code;
}

struct sl_state *e2e_state(void)
{
	char err[256];

	if (!e2e_st) {
		e2e_st = sl_state_new(getenv("SLUICE_REDIS_URL"), err, sizeof(err));
		ck_assert_msg(e2e_st != NULL, "redis: %s", err);
	}
	return e2e_st;
}

char *e2e_run_field(const char *run, const char *field)
{
	redisReply *r = sl_state_command(e2e_state(), "HGET sluice:{%s}:run %s", run, field);
	char *v = NULL;

	if (r && r->type == REDIS_REPLY_STRING)
		v = strdup(r->str);
	if (r)
		freeReplyObject(r);
	return v;
}

char *e2e_ti_field(const char *run, const char *task, int idx, const char *field)
{
	redisReply *r = sl_state_command(e2e_state(), "HGET sluice:{%s}:ti:%s:%d %s", run, task,
					 idx, field);
	char *v = NULL;

	if (r && r->type == REDIS_REPLY_STRING)
		v = strdup(r->str);
	if (r)
		freeReplyObject(r);
	return v;
}

char *e2e_wait_run_end(const char *run, long timeout_ms)
{
	int64_t deadline = sl_mono_ms() + e2e_ms(timeout_ms);

	while (sl_mono_ms() < deadline) {
		char *s = e2e_run_field(run, "state");
		if (s && strcmp(s, "RUNNING") && strcmp(s, "PENDING"))
			return s;
		free(s);
		usleep(100000);
	}
	return NULL;
}

json_t *e2e_task_output(const char *run, const char *task, int idx)
{
	char *s = e2e_ti_field(run, task, idx, "output");
	json_t *v = s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;

	free(s);
	return v;
}

char *e2e_submit(const char *flow, const char *const *params)
{
	const char *args[64] = {"submit", flow};
	int n = 2;
	char *out = NULL, *nl;

	for (size_t i = 0; params && params[i] && n < 60; i++) {
		args[n++] = "-p";
		args[n++] = params[i];
	}
	args[n] = NULL;
	if (e2e_cli(&out, NULL, args) != 0) {
		free(out);
		return NULL;
	}
	if (out && (nl = strchr(out, '\n')))
		*nl = '\0';
	return out;
}

void e2e_produce(const char *topic, const char *key, const void *data, size_t len)
{
	char err[256];
	struct sl_kafka_producer *p =
		sl_kafka_producer_new(getenv("SLUICE_KAFKA_BROKERS"), 0, NULL, NULL, err, sizeof(err));

	ck_assert_msg(p != NULL, "producer: %s", err);
	ck_assert_int_eq(sl_kafka_produce(p, topic, key, key ? strlen(key) : 0, data, len, NULL),
			 SL_OK);
	ck_assert_int_eq(sl_kafka_producer_flush(p, 10000), SL_OK);
	sl_kafka_producer_destroy(p);
}

struct sl_kafka_consumer *e2e_topic_reader(const char *topic)
{
	char err[256], group[64];
	const char *topics[] = {topic};
	struct sl_kafka_consumer *c;

	sl_id_new("e2e-read-", group, sizeof(group));
	c = sl_kafka_consumer_new(getenv("SLUICE_KAFKA_BROKERS"), group, topics, 1, err,
				  sizeof(err));
	ck_assert_msg(c != NULL, "consumer of %s: %s", topic, err);
	return c;
}

int e2e_run_results(const char *run, int want, long timeout_ms, struct e2e_result *out,
		    int cap)
{
	struct sl_kafka_consumer *c = e2e_topic_reader(SL_TOPIC_RESULTS);
	int64_t until = sl_mono_ms() + e2e_ms(timeout_ms);
	int n = 0, msgs = 0;

	while (sl_mono_ms() < until) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 200);
		Sluice__V1__TaskResult *r;

		if (!m)
			continue;
		r = sluice__v1__task_result__unpack(NULL, m->len, m->payload);
		msgs++;
		for (size_t i = 0; r && i < (r->n_batch ? r->n_batch : 1); i++) {
			Sluice__V1__TaskResult *e =
				r->n_batch ? sluice__v1__task_result__unpack(NULL, r->batch[i].len,
									     r->batch[i].data)
					   : r;
			if (e && e->run_id && !strcmp(e->run_id, run)) {
				if (n < cap) {
					snprintf(out[n].task, sizeof(out[n].task), "%s", e->task);
					snprintf(out[n].then_task, sizeof(out[n].then_task), "%s",
						 e->then_task);
					out[n].attempt = e->attempt;
					out[n].status = e->status;
					out[n].msg = msgs;
				}
				if (++n == want)
					until = sl_mono_ms() + e2e_ms(2000);
			}
			if (e && e != r)
				sluice__v1__task_result__free_unpacked(e, NULL);
		}
		if (r)
			sluice__v1__task_result__free_unpacked(r, NULL);
		rd_kafka_message_destroy(m);
	}
	sl_kafka_consumer_destroy(c);
	return n;
}

int e2e_find_deadletter(const char *needle, const void *payload, size_t len, long timeout_ms)
{
	struct sl_kafka_consumer *c = e2e_topic_reader(SL_TOPIC_DEADLETTER);
	int64_t deadline = sl_mono_ms() + e2e_ms(timeout_ms);
	int found = 0;

	while (!found && sl_mono_ms() < deadline) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 200);
		Sluice__V1__DeadLetter *dl;
		if (!m)
			continue;
		dl = sluice__v1__dead_letter__unpack(NULL, m->len, m->payload);
		if (dl && strstr(dl->error, needle) &&
		    (!payload || (dl->payload.len == len && !memcmp(dl->payload.data, payload, len))))
			found = 1;
		if (dl)
			sluice__v1__dead_letter__free_unpacked(dl, NULL);
		rd_kafka_message_destroy(m);
	}
	sl_kafka_consumer_destroy(c);
	return found;
}

int e2e_run_suite(const char *name, void (*setup)(void), void (*teardown)(void),
		  long timeout_s, const TTest *const *tests)
{
	Suite *s = suite_create(name);
	TCase *tc = tcase_create(name);
	SRunner *sr;
	int failed;

	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, (double)e2e_ms(timeout_s));
	for (size_t i = 0; tests[i]; i++)
		tcase_add_test(tc, tests[i]);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_VERBOSE);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

int e2e_free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* GET path from 127.0.0.1:port (HTTP/1.0); returns the status (-1 when nothing answers) and
 * the body in body (cap bytes, NUL-terminated). */
int e2e_http_get(int port, const char *path, char *body, size_t cap)
{
	struct sockaddr_in a;
	char req[256], *buf = malloc(65536), *sep;
	size_t n = 0;
	ssize_t r;
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = -1;

	body[0] = '\0';
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		goto out;
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		goto out;
	while (n < 65535 && (r = read(fd, buf + n, 65535 - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		status = -1;
	if ((sep = strstr(buf, "\r\n\r\n")))
		snprintf(body, cap, "%s", sep + 4);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return status;
}

/* The value of an unlabelled metric in Prometheus text, or -1. */
long e2e_metric(const char *text, const char *name)
{
	char key[256];
	const char *p;

	snprintf(key, sizeof(key), "\n%s ", name);
	if (!(p = strstr(text, key)))
		return -1;
	return atol(p + strlen(key));
}

long e2e_port_metric(int port, const char *name)
{
	char *body = malloc(65536);
	long v = -1;

	if (body && e2e_http_get(port, "/metrics", body, 65536) == 200)
		v = e2e_metric(body, name);
	free(body);
	return v;
}
