/* e2e.h - helpers for end-to-end suites against the real Kafka and Redis of the test session
 * (SLUICE_KAFKA_BROKERS, SLUICE_REDIS_URL and SLUICE_TEST_TMP come from scripts/testenv). */
#ifndef SLUICE_E2E_H
#define SLUICE_E2E_H

#include <check.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sluice/kafka.h"
#include "sluice/state.h"

/* Runs one suite of tests (NULL-terminated) in this process (no fork: the services the
 * fixture starts stay the children of this process), with setup before the first test and
 * teardown after the last, each test limited to timeout_s (scaled by e2e_ms).
 * Returns the exit status for main(). */
int e2e_run_suite(const char *name, void (*setup)(void), void (*teardown)(void),
		  long timeout_s, const TTest *const *tests);

/* Timeouts scale with SLUICE_TEST_SLOWDOWN (e.g. 3 under sanitizers). */
long e2e_ms(long ms);

/* Aborts the test run with a message when the session variables are missing. */
void e2e_require_env(void);

/* A directory of its own under SLUICE_TEST_TMP (created); returns its path: caller frees. */
const char *e2e_tmpdir(const char *name);

/* Starts build/bin/<bin> with args (NULL-terminated) and extra "NAME=value" env entries
 * (NULL-terminated, may be NULL); stdout+stderr go to <tmp>/logs/<label>.log.
 * Returns the pid (its own process group) or -1. */
pid_t e2e_spawn(const char *label, const char *bin, const char *const *args,
		const char *const *env);

/* Sends sig and waits up to timeout_ms for exit (then SIGKILL). Returns the wait status. */
int e2e_stop(pid_t pid, int sig, long timeout_ms);

/* Whether pid is still running (reaps it if it exited). */
int e2e_alive(pid_t pid);

/* Runs the sluice CLI with args (NULL-terminated); stdout in *out and stderr in *err
 * (caller frees; either may be NULL). Returns the exit code. */
int e2e_cli(char **out, char **err, const char *const *args);

/* A Redis connection for assertions (one per suite process). */
struct sl_state *e2e_state(void);

/* HGET of a run's field; caller frees; NULL if absent. */
char *e2e_run_field(const char *run, const char *field);

/* Polls until the run's state is one of the terminal ones or timeout_ms passes.
 * Returns the state (caller frees) or NULL. */
char *e2e_wait_run_end(const char *run, long timeout_ms);

/* The output JSON of instance (task, idx) as a new reference, or NULL. */
json_t *e2e_task_output(const char *run, const char *task, int idx);

/* HGET of an instance field; caller frees. */
char *e2e_ti_field(const char *run, const char *task, int idx, const char *field);

/* Submits a flow (name or path) through the CLI without --wait, params as "k=v" (NULL-
 * terminated, may be NULL); returns the run id (caller frees) or NULL. */
char *e2e_submit(const char *flow, const char *const *params);

/* Produces raw bytes to a topic. */
void e2e_produce(const char *topic, const char *key, const void *data, size_t len);

/* A consumer of topic in a fresh group, so reading from its beginning (asserts it was
 * made). Destroy with sl_kafka_consumer_destroy(). */
struct sl_kafka_consumer *e2e_topic_reader(const char *topic);

/* One result of a run read back: its task, attempt, status, then_task (ADR 31) and the
 * number of the message it came in (results of one message share it). */
struct e2e_result {
	char task[16], then_task[16];
	unsigned attempt;
	int status, msg;
};

/* Reads sluice.tasks.results from its start for run's results (the elements of batches too)
 * into out[0..cap), until want came and 2 s more (to see any extra one; want 0: until the
 * timeout), timeout_ms at most. Returns how many came (out keeps the first cap). */
int e2e_run_results(const char *run, int want, long timeout_ms, struct e2e_result *out,
		    int cap);

/* Reads sluice.deadletter from the beginning (fresh group) until a DeadLetter whose error
 * contains needle and whose payload equals payload (len bytes; NULL = any) arrives, or
 * timeout. Returns 1 if found. */
int e2e_find_deadletter(const char *needle, const void *payload, size_t len, long timeout_ms);

/* A loopback port nobody listens on right now (the kernel's pick for port 0), or -1. */
int e2e_free_port(void);

/* GET path from 127.0.0.1:port (HTTP/1.0); returns the status (-1 when nothing answers) and
 * the body in body (cap bytes, NUL-terminated). */
int e2e_http_get(int port, const char *path, char *body, size_t cap);
/* The value of an unlabelled metric in Prometheus text, or -1. */
long e2e_metric(const char *text, const char *name);
/* The value of unlabelled metric name on the /metrics of 127.0.0.1:port, or -1. */
long e2e_port_metric(int port, const char *name);

#endif
