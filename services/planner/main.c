/* main.c - sluice-planner: consumes run requests, results and control; dispatches tasks. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "planner.h"
#include "sluice/config.h"
#include "sluice/health.h"
#include "sluice/log.h"
#include "sluice/util.h"

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

/* /metrics of the planner (owned by the health object in main; NULL-safe). */
static struct {
	struct sl_metric *requests, *results, *control, *retries, *flows, *reloads, *with_result,
		*carried;
} m;

static void register_metrics(struct sl_health *h)
{
	m.requests = sl_health_counter(h, "sluice_planner_run_requests_total",
				       "Run requests processed (accepted, deduplicated or rejected).");
	m.results = sl_health_counter(h, "sluice_planner_task_results_total",
				      "Task results processed (applied or fenced off as stale).");
	m.control = sl_health_counter(h, "sluice_planner_control_messages_total",
				      "Control messages processed (cancel, ...).");
	m.retries = sl_health_counter(h, "sluice_planner_transient_errors_total",
				      "Messages retried in place after a Redis or Kafka error.");
	m.flows = sl_health_gauge(h, "sluice_planner_flows", "Flows loaded from flows-dir.");
	m.reloads = sl_health_counter(h, "sluice_planner_reloads_total", "SIGHUP reloads.");
	m.with_result = sl_health_counter(
		h, "sluice_planner_nodes_started_with_result_total",
		"Nodes started in the round trip of their upstream's result (ADR 30).");
	m.carried = sl_health_counter(
		h, "sluice_planner_nodes_carried_total",
		"Nodes started with their upstream's result that a worker ran carried, without a "
		"dispatch (ADR 31).");
}

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void on_hup(int sig)
{
	(void)sig;
	reload_requested = 1;
}

static enum sl_err handle(struct planner *p, const rd_kafka_message_t *msg)
{
	const char *topic = rd_kafka_topic_name(msg->rkt);

	if (!strcmp(topic, SL_TOPIC_RUNS_REQUESTED))
		return planner_on_run_request(p, msg);
	if (!strcmp(topic, SL_TOPIC_RESULTS))
		return planner_on_result(p, msg);
	if (!strcmp(topic, SL_TOPIC_CONTROL))
		return planner_on_control(p, msg);
	return sl_kafka_deadletter(p->producer, "planner", msg, "unexpected topic");
}

/* Processes msg until it is durable; transient failures (Redis, Kafka) are retried in
 * place, because storing a later offset would commit past this one. Returns 1 when msg's
 * offset is stored, 0 when a stop was requested first (nothing after it may be stored). */
static int process(struct planner *p, const rd_kafka_message_t *msg)
{
	long backoff = 100;

	for (;;) {
		enum sl_err err = handle(p, msg);
		if (err == SL_OK || !sl_err_is_retriable(err))
			break;
		if (stop_requested)
			return 0; /* not stored: the next planner gets it again */
		sl_metric_inc(m.retries);
		SL_WARN("%s[%d]@%lld: %s; retrying in %ld ms", rd_kafka_topic_name(msg->rkt),
			(int)msg->partition, (long long)msg->offset, sl_strerror(err), backoff);
		usleep((useconds_t)backoff * 1000);
		if (backoff < 5000)
			backoff *= 2;
	}
	sl_kafka_consumer_done(p->consumer, msg);
	{
		const char *topic = rd_kafka_topic_name(msg->rkt);

		sl_metric_inc(!strcmp(topic, SL_TOPIC_RESULTS)        ? m.results
			      : !strcmp(topic, SL_TOPIC_RUNS_REQUESTED) ? m.requests
									: m.control);
	}
	return 1;
}

/* Settles r[0] of a batch whose results were applied together: retries in place what failed
 * (its apply, along with the rest of the batch r[1..n) not applied yet, or the start of the
 * nodes it made ready), then follows it up. Returns 1 when done, 0 when a stop was requested
 * first. The start of ready nodes is retried for a few seconds only: the result is applied,
 * and the reaper starts nodes left ready (ADR 12), which is all a redelivered result did
 * before batching (its apply answers "stale"). */
static int settle(struct planner *p, struct planner_result *r, size_t n)
{
	long backoff = 100;
	int follow_ups = 0;

	for (;;) {
		enum sl_err err = r->applied ? planner_result_follow_up(p, r) : r->err;
		if (err == SL_OK)
			return 1;
		if (!sl_err_is_retriable(err) || (r->applied && ++follow_ups > 6)) {
			SL_WARN("%s[%d]@%lld: %s; %s", SL_TOPIC_RESULTS, (int)r->msg->partition,
				(long long)r->msg->offset, sl_strerror(err),
				r->applied ? "ready nodes left to the reaper" : "result skipped");
			return 1;
		}
		if (stop_requested)
			return 0;
		if (r->applied && follow_ups == 1)
			backoff = 100; /* the apply's own retries are over */
		sl_metric_inc(m.retries);
		SL_WARN("%s[%d]@%lld: %s; retrying in %ld ms", SL_TOPIC_RESULTS,
			(int)r->msg->partition, (long long)r->msg->offset, sl_strerror(err), backoff);
		usleep((useconds_t)backoff * 1000);
		if (backoff < 5000)
			backoff *= 2;
		if (!r->applied)
			planner_results_apply(p, r, n);
	}
}

/* Applies results r[0..n) with one pipelined Redis call, then follows each up and stores its
 * offset in message order (ADR 5: an offset is stored once its result is applied). Clears
 * r[0..n). Returns 0 when a stop was requested before all were stored. */
static int flush_results(struct planner *p, struct planner_result *r, size_t n)
{
	static int faults = -1; /* getenv costs ~1,000 instructions: once per process */
	int done = 1;

	planner_results_apply(p, r, n);
	if (faults < 0)
		faults = getenv("SLUICE_FAULT_CRASH_AT") != NULL;
	for (size_t i = 0; faults && i < n; i++) /* applied, nodes not started; a hit per result */
		if (r[i].applied)
			planner_fault_point("after_result_apply");
	for (size_t i = 0; i < n && done; i++) {
		if ((done = settle(p, &r[i], n - i))) {
			if (r[i].last) /* every result of its message is settled */
				sl_kafka_consumer_done(p->consumer, r[i].msg);
			sl_metric_inc(m.results);
		}
	}
	for (size_t i = 0; i < n; i++)
		planner_result_clear(&r[i]);
	return done;
}

/* Processes the messages of one drain in order. Consecutive task results are applied as one
 * batch; anything else (a run request, a control message, a result that needs the slow path)
 * first flushes the results before it, so that a run's request is handled before its results
 * and offsets are stored in order. */
static void process_batch(struct planner *p, rd_kafka_message_t **msgs, size_t n)
{
	/* a message is one result or a batch of SL_BATCH_MAX (ADR 20) */
	static struct planner_result pend[PLANNER_BATCH_MAX + SL_BATCH_MAX];
	size_t np = 0, k;
	int go = 1;

	for (size_t i = 0; i < n && go; i++) {
		int result = !strcmp(rd_kafka_topic_name(msgs[i]->rkt), SL_TOPIC_RESULTS);

		if (result && np >= PLANNER_BATCH_MAX) {
			go = flush_results(p, pend, np);
			np = 0;
			if (!go)
				break;
		}
		if (result && (k = planner_result_prepare(p, msgs[i], &pend[np]))) {
			np += k;
			continue;
		}
		if (np)
			go = flush_results(p, pend, np);
		np = 0;
		if (go)
			go = process(p, msgs[i]);
	}
	if (np && go)
		flush_results(p, pend, np);
	else
		for (size_t i = 0; i < np; i++)
			planner_result_clear(&pend[i]);
}

int main(int argc, char **argv)
{
	static struct planner p; /* owned here; parts get a pointer */
	struct sl_health *health = NULL;
	const char *topics[] = {SL_TOPIC_RUNS_REQUESTED, SL_TOPIC_RESULTS, SL_TOPIC_CONTROL};
	const char *all[] = {SL_TOPIC_RUNS_REQUESTED, SL_TOPIC_RESULTS,	 SL_TOPIC_CONTROL,
			     SL_TOPIC_RUN_EVENTS,     SL_TOPIC_DEADLETTER, "sluice.tasks.default"};
	char err[512];
	int64_t next_timer = 0, next_reap = 0;
	int rc = 1;
	enum sl_err e;

	e = sl_config_load(planner_config_table, &p.cfg, argc, argv, NULL, 0, NULL, err,
			   sizeof(err));
	if (e == SL_ERR_CANCELLED) {
		rc = 0;
		goto out;
	}
	if (e != SL_OK) {
		fprintf(stderr, "sluice-planner: %s\n", err);
		rc = 2;
		goto out;
	}
	sl_log_init("planner", sl_log_level_parse(p.cfg.log_level));
	signal(SIGTERM, on_stop);
	signal(SIGINT, on_stop);
	signal(SIGHUP, on_hup);
	signal(SIGPIPE, SIG_IGN);
	/* Before Redis and Kafka answer: /healthz says alive, /readyz 503 until the loop runs. */
	if (!(health = sl_health_new(p.cfg.http, "planner", err, sizeof(err)))) {
		SL_ERROR("%s", err);
		rc = 2;
		goto out;
	}
	register_metrics(health);
	p.started_with_result = m.with_result;
	p.carried = m.carried;

	p.flows = planner_flows_load(p.cfg.flows_dir);
	sl_metric_set(m.flows, (int64_t)planner_flows_count(p.flows));
	for (int tries = 0; !p.state && !stop_requested; tries++) {
		if (!(p.state = sl_state_new(p.cfg.redis_url, err, sizeof(err)))) {
			SL_WARN("%s; retrying", err);
			sleep(1);
		}
	}
	while (!stop_requested && sl_kafka_topics_ensure(p.cfg.kafka_brokers, all, 6,
							 (int)p.cfg.partitions, err,
							 sizeof(err)) != SL_OK) {
		SL_WARN("%s; retrying", err);
		sleep(1);
	}
	if (stop_requested)
		goto out;
	p.producer = sl_kafka_producer_new(p.cfg.kafka_brokers, 1, NULL, NULL, err, sizeof(err));
	if (p.producer)
		p.dispatcher = sl_kafka_producer_new_unordered(
			p.cfg.kafka_brokers, PLANNER_DISPATCH_LINGER_MS, err, sizeof(err));
	if (p.dispatcher)
		p.events = sl_kafka_producer_new(p.cfg.kafka_brokers, PLANNER_EVENTS_LINGER_MS, NULL,
						 NULL, err, sizeof(err));
	if (!p.producer || !p.dispatcher || !p.events) {
		SL_ERROR("kafka producer: %s", err);
		goto out;
	}
	p.consumer = sl_kafka_consumer_new(p.cfg.kafka_brokers, p.cfg.group, topics, 3, err,
					   sizeof(err));
	if (!p.consumer) {
		SL_ERROR("kafka consumer: %s", err);
		goto out;
	}
	SL_INFO("planner started: kafka %s, redis %s, %zu flows", p.cfg.kafka_brokers,
		p.cfg.redis_url, planner_flows_count(p.flows));
	sl_health_set_ready(health, 1);

	while (!stop_requested) {
		static rd_kafka_message_t *batch[PLANNER_BATCH_MAX];
		rd_kafka_message_t *msg = sl_kafka_consumer_poll(p.consumer, 20);
		size_t n = 0;

		/* Whatever is already fetched goes in one batch: one Redis round trip for its
		 * results when there is a backlog, no wait when a result comes alone. */
		while (msg) {
			batch[n++] = msg;
			msg = n < PLANNER_BATCH_MAX ? sl_kafka_consumer_poll(p.consumer, 0) : NULL;
		}
		if (n)
			process_batch(&p, batch, n);
		for (size_t i = 0; i < n; i++)
			rd_kafka_message_destroy(batch[i]);
		if (sl_mono_ms() >= next_timer) {
			planner_on_timers(&p);
			next_timer = sl_mono_ms() + p.cfg.timer_interval_ms;
		}
		if (sl_mono_ms() >= next_reap) {
			planner_reap(&p);
			next_reap = sl_mono_ms() + p.cfg.reap_interval_ms;
		}
		planner_on_schedules(&p);
		sl_kafka_producer_poll(p.producer, 0);
		sl_kafka_producer_poll(p.dispatcher, 0);
		sl_kafka_producer_poll(p.events, 0);
		if (reload_requested) {
			reload_requested = 0;
			planner_flows_destroy(p.flows);
			p.flows = planner_flows_load(p.cfg.flows_dir);
			sl_metric_set(m.flows, (int64_t)planner_flows_count(p.flows));
			sl_metric_inc(m.reloads);
		}
	}
	SL_INFO("planner stopping");
	sl_health_set_ready(health, 0);
	rc = 0;
out:
	sl_kafka_consumer_destroy(p.consumer);
	sl_kafka_producer_destroy(p.events);
	sl_kafka_producer_destroy(p.dispatcher);
	sl_kafka_producer_destroy(p.producer);
	sl_state_destroy(p.state);
	planner_flows_destroy(p.flows);
	planner_runs_clear(&p);
	for (size_t i = 0; i < p.nqueues; i++)
		free(p.queues[i]);
	sl_health_destroy(health);
	sl_config_free(planner_config_table, &p.cfg);
	return rc;
}
