/* kafka_trip.c - the floor of one Kafka hop on this machine: a message produced (idempotent,
 * acks=all, linger 0, as sluice's producers) until a consumer waiting on the topic (a group
 * member, as sluice's) has it, one message at a time, after as many untimed trips (the broker's
 * JIT warms up on them: the first trips of a fresh broker take twice as long).
 * Usage: kafka_trip BROKERS TOPIC N   (TOPIC is created with one partition if missing)
 * Prints one JSON line: {"n":N,"p10_ms":..,"median_ms":..,"p90_ms":..,"mean_ms":..}. */
#define _POSIX_C_SOURCE 200809L
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *const *props)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[512];
	rd_kafka_t *rk;

	for (size_t i = 0; props[i]; i += 2)
		if (rd_kafka_conf_set(conf, props[i], props[i + 1], err, sizeof(err))) {
			fprintf(stderr, "kafka_trip: %s\n", err);
			exit(2);
		}
	if (!(rk = rd_kafka_new(type, conf, err, sizeof(err)))) {
		fprintf(stderr, "kafka_trip: %s\n", err);
		exit(2);
	}
	return rk;
}

/* Creates topic with one partition; an existing one is fine. */
static void create_topic(rd_kafka_t *rk, const char *topic)
{
	rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, 1, 1, NULL, 0);
	rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
	rd_kafka_event_t *ev;

	rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
	if ((ev = rd_kafka_queue_poll(q, 15000))) {
		const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
		size_t cnt = 0;
		const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &cnt)
							 : NULL;

		if (cnt && rd_kafka_topic_result_error(tr[0]) &&
		    rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
			fprintf(stderr, "kafka_trip: create %s: %s\n", topic,
				rd_kafka_topic_result_error_string(tr[0]));
		rd_kafka_event_destroy(ev);
	}
	rd_kafka_queue_destroy(q);
	rd_kafka_NewTopic_destroy(nt);
}

int main(int argc, char **argv)
{
	const char *prod_props[] = {"bootstrap.servers", NULL, "enable.idempotence", "true",
				    "linger.ms", "0", NULL};
	const char *cons_props[] = {"bootstrap.servers", NULL, "group.id", "kafka-trip",
				    "auto.offset.reset", "latest", "fetch.wait.max.ms", "100",
				    "enable.partition.eof", "false", NULL};
	rd_kafka_topic_partition_list_t *subs;
	rd_kafka_resp_err_t sub_err;
	rd_kafka_t *prod, *cons;
	double *lat, sum = 0;
	int n, got = 0, rc = 1;

	if (argc != 4 || (n = atoi(argv[3])) < 10) {
		fprintf(stderr, "usage: kafka_trip BROKERS TOPIC N (N >= 10)\n");
		return 2;
	}
	prod_props[1] = cons_props[1] = argv[1];
	prod = client(RD_KAFKA_PRODUCER, prod_props);
	create_topic(prod, argv[2]);
	cons = client(RD_KAFKA_CONSUMER, cons_props);
	rd_kafka_poll_set_consumer(cons);
	subs = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(subs, argv[2], RD_KAFKA_PARTITION_UA);
	sub_err = rd_kafka_subscribe(cons, subs);
	rd_kafka_topic_partition_list_destroy(subs);
	if (sub_err) {
		fprintf(stderr, "kafka_trip: subscribe: %s\n", rd_kafka_err2str(sub_err));
		lat = NULL;
		goto out;
	}
	if (!(lat = calloc((size_t)n, sizeof(*lat)))) {
		fprintf(stderr, "kafka_trip: out of memory\n");
		goto out;
	}

	/* Warm-up: produce until the consumer, once assigned, receives one. */
	for (double until = now_ms() + 30000; now_ms() < until;) {
		rd_kafka_message_t *m;

		rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_VALUE("w", 1),
				  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
		rd_kafka_poll(prod, 0);
		if ((m = rd_kafka_consumer_poll(cons, 500))) {
			int ok = !m->err;
			rd_kafka_message_destroy(m);
			if (ok)
				break;
		}
	}
	rd_kafka_flush(prod, 5000);
	while (1) { /* drain the warm-up's leftovers */
		rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 300);
		if (!m)
			break;
		rd_kafka_message_destroy(m);
	}
	for (int i = -n; i < n; i++) { /* i < 0: untimed */
		double t0 = now_ms();
		rd_kafka_message_t *m = NULL;

		rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_VALUE("p", 1),
				  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
		while (!m || m->err) {
			if (m)
				rd_kafka_message_destroy(m);
			m = rd_kafka_consumer_poll(cons, 1000);
			rd_kafka_poll(prod, 0);
			if (now_ms() - t0 > 10000) {
				fprintf(stderr, "kafka_trip: no message within 10 s\n");
				goto out;
			}
		}
		if (i >= 0)
			lat[got++] = now_ms() - t0;
		rd_kafka_message_destroy(m);
	}
	qsort(lat, (size_t)got, sizeof(*lat), cmp_double);
	for (int i = 0; i < got; i++)
		sum += lat[i];
	printf("{\"n\":%d,\"p10_ms\":%.3f,\"median_ms\":%.3f,\"p90_ms\":%.3f,\"mean_ms\":%.3f}\n", got,
	       lat[got / 10], lat[got / 2], lat[got * 9 / 10], sum / got);
	rc = 0;
out:
	rd_kafka_consumer_close(cons);
	rd_kafka_destroy(cons);
	rd_kafka_flush(prod, 2000);
	rd_kafka_destroy(prod);
	free(lat);
	return rc;
}
