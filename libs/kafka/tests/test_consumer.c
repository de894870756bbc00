/* test_consumer.c - the consumer against the session's real Kafka (SLUICE_KAFKA_BROKERS):
 * closing a member at any point of its first group join exits cleanly; the lag probes agree;
 * an unordered producer's burst reaches the broker without anyone polling it; a member joining
 * late gets its share of every topic. */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "sluice/kafka.h"
#include "sluice/util.h"

#define TOPIC "sluice.test.consumer-close"

static const char *brokers;

/* librdkafka 2.0.2 aborts when a cooperative-sticky member is destroyed between its JoinGroup
 * answer and its first assignment (librdkafka issue 4312); before the fix one close in ten
 * or so landed in that window and took the process down (CI saw it as a worker exiting on
 * SIGABRT after SIGTERM). Each round closes a fresh group's only member after a different
 * delay, sweeping the join; an abort ends this test process with a signal, which Check
 * reports as an error. */
START_TEST(close_during_first_join_does_not_abort)
{
	const char *topics[] = {TOPIC};
	char group[96], err[512];
	int rounds = 40;

	for (int i = 0; i < rounds; i++) {
		struct sl_kafka_consumer *c;
		int64_t t0 = sl_mono_ms();

		snprintf(group, sizeof(group), "sluice-test-close-%d-%d", (int)getpid(), i);
		c = sl_kafka_consumer_new(brokers, group, topics, 1, err, sizeof(err));
		ck_assert_msg(c != NULL, "consumer: %s", err);
		/* 0, 15, 30, ... 585 ms: a group's first join on this broker takes ~50-300 ms. */
		while (sl_mono_ms() - t0 < (int64_t)i * 15) {
			rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 5);

			if (m)
				rd_kafka_message_destroy(m);
		}
		sl_kafka_consumer_destroy(c);
	}
}
END_TEST

/* A member that joined and was assigned closes without waiting. */
START_TEST(close_after_assignment_is_quick)
{
	const char *topics[] = {TOPIC};
	char group[96], err[512];
	struct sl_kafka_consumer *c;
	int64_t until, t0;

	snprintf(group, sizeof(group), "sluice-test-assigned-%d", (int)getpid());
	c = sl_kafka_consumer_new(brokers, group, topics, 1, err, sizeof(err));
	ck_assert_msg(c != NULL, "consumer: %s", err);
	until = sl_mono_ms() + 30000;
	while (sl_kafka_consumer_assigned(c) == 0 && sl_mono_ms() < until) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 50);

		if (m)
			rd_kafka_message_destroy(m);
	}
	ck_assert_int_gt(sl_kafka_consumer_assigned(c), 0);
	t0 = sl_mono_ms();
	sl_kafka_consumer_destroy(c);
	ck_assert_int_lt(sl_mono_ms() - t0, 4000);
}
END_TEST

/* Polls c (and d, may be NULL) for ms, dropping messages: serves their rebalances. */
static void serve(struct sl_kafka_consumer *c, struct sl_kafka_consumer *d, int ms)
{
	int64_t until = sl_mono_ms() + ms;

	while (sl_mono_ms() < until) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 10);

		if (m)
			rd_kafka_message_destroy(m);
		if (d && (m = sl_kafka_consumer_poll(d, 10)))
			rd_kafka_message_destroy(m);
	}
}

/* A worker consumes its queue's three priority bands (three topics of 8 partitions) in one
 * group, and nearly all work is on the normal band: each member must hold its share of every
 * topic, not just of the total. With cooperative-sticky, a second member joining one that held
 * all 24 partitions was given the first 12 in topic order (all 8 of the normal band and 4 of
 * .high), and the first member idled with the empty bands (seen in the benchmark's diamond and
 * the way the autoscaler adds workers, one at a time). */
START_TEST(a_late_member_gets_a_share_of_every_topic)
{
	char t[3][96], group[96], err[512];
	const char *topics[3];
	struct sl_kafka_consumer *a, *b;
	int64_t until;

	for (int i = 0; i < 3; i++) {
		snprintf(t[i], sizeof(t[i]), "sluice.test.bands-%d%s", (int)getpid(),
			 i == 0 ? "" : i == 1 ? ".high" : ".low");
		topics[i] = t[i];
	}
	snprintf(group, sizeof(group), "sluice-test-bands-%d", (int)getpid());
	ck_assert_int_eq(sl_kafka_topics_ensure(brokers, topics, 3, 8, err, sizeof(err)), SL_OK);
	a = sl_kafka_consumer_new(brokers, group, topics, 3, err, sizeof(err));
	ck_assert_msg(a != NULL, "consumer: %s", err);
	until = sl_mono_ms() + 30000;
	while (sl_kafka_consumer_assigned(a) < 24 && sl_mono_ms() < until)
		serve(a, NULL, 50);
	ck_assert_int_eq(sl_kafka_consumer_assigned(a), 24);
	b = sl_kafka_consumer_new(brokers, group, topics, 3, err, sizeof(err));
	ck_assert_msg(b != NULL, "consumer: %s", err);
	until = sl_mono_ms() + 30000;
	while ((sl_kafka_consumer_assigned(a) != 12 || sl_kafka_consumer_assigned(b) != 12) &&
	       sl_mono_ms() < until)
		serve(a, b, 50);
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(sl_kafka_consumer_assigned_of(a, t[i]) == 4 &&
				      sl_kafka_consumer_assigned_of(b, t[i]) == 4,
			      "%s: first member holds %d partitions, second %d (want 4 and 4)", t[i],
			      sl_kafka_consumer_assigned_of(a, t[i]),
			      sl_kafka_consumer_assigned_of(b, t[i]));
	}
	sl_kafka_consumer_destroy(b);
	sl_kafka_consumer_destroy(a);
}
END_TEST

/* sl_kafka_lag_topics() (a few batched requests) counts what sl_kafka_lag() (two requests per
 * partition) counts, summed over topics, missing topics counting 0; sl_kafka_end_offsets() moves
 * with what is produced, not with what is committed. */
START_TEST(batched_lag_matches_lag)
{
	char topic[96], missing[96], group[96], err[512];
	const char *both[2], *none[1];
	struct sl_kafka_producer *p;
	struct sl_kafka_consumer *c;
	struct sl_kafka_lag_probe *probe;
	int64_t lag = -1, one = -1, end = -1, until;
	int done = 0;

	snprintf(topic, sizeof(topic), "sluice.test.lag-%d", (int)getpid());
	snprintf(missing, sizeof(missing), "sluice.test.missing-%d", (int)getpid());
	snprintf(group, sizeof(group), "sluice-test-lag-%d", (int)getpid());
	both[0] = topic;
	both[1] = none[0] = missing;
	ck_assert_int_eq(sl_kafka_topics_ensure(brokers, both, 1, 2, err, sizeof(err)), SL_OK);
	ck_assert_ptr_nonnull(probe = sl_kafka_lag_probe_new(brokers, group, err, sizeof(err)));
	ck_assert_int_eq(sl_kafka_lag_topics(probe, none, 1, &lag, 10000), SL_ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(p = sl_kafka_producer_new(brokers, 0, NULL, NULL, err, sizeof(err)));
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(sl_kafka_produce(p, topic, NULL, 0, "x", 1, NULL), SL_OK);
	ck_assert_int_eq(sl_kafka_producer_flush(p, 10000), SL_OK);
	sl_kafka_producer_destroy(p);

	ck_assert_int_eq(sl_kafka_lag_topics(probe, both, 2, &lag, 10000), SL_OK);
	ck_assert_int_eq(sl_kafka_lag(probe, topic, &one, 10000), SL_OK);
	ck_assert_int_eq(lag, 5);
	ck_assert_int_eq(one, 5);
	ck_assert_int_eq(sl_kafka_end_offsets(probe, both, 2, &end, 10000), SL_OK);
	ck_assert_int_eq(end, 5);

	/* Two messages done and committed: the lag drops by two, the end offsets stay. */
	ck_assert_ptr_nonnull(c = sl_kafka_consumer_new(brokers, group, both, 1, err, sizeof(err)));
	until = sl_mono_ms() + 30000;
	while (done < 2 && sl_mono_ms() < until) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 100);

		if (m) {
			sl_kafka_consumer_done(c, m);
			rd_kafka_message_destroy(m);
			done++;
		}
	}
	ck_assert_int_eq(done, 2);
	ck_assert_int_eq(sl_kafka_consumer_commit(c), SL_OK);
	ck_assert_int_eq(sl_kafka_lag_topics(probe, both, 2, &lag, 10000), SL_OK);
	ck_assert_int_eq(sl_kafka_lag(probe, topic, &one, 10000), SL_OK);
	ck_assert_int_eq(lag, 3);
	ck_assert_int_eq(one, 3);
	ck_assert_int_eq(sl_kafka_end_offsets(probe, both, 2, &end, 10000), SL_OK);
	ck_assert_int_eq(end, 5);
	sl_kafka_consumer_destroy(c);
	sl_kafka_lag_probe_destroy(probe);
}
END_TEST

/* An unordered producer (ADR 19) sends a burst over both of its handles without being polled:
 * 2,000 messages produced at once, the producer never polled nor flushed until they were
 * read back, all arrive, once. */
START_TEST(unordered_producer_delivers_a_burst_without_polling)
{
	enum { N = 2000 };
	static unsigned char seen[N];
	char topic[96], group[96], err[512];
	const char *topics[1] = {topic};
	struct sl_kafka_producer *p;
	struct sl_kafka_consumer *c;
	int64_t until;
	int got = 0, dups = 0;

	memset(seen, 0, sizeof(seen));
	snprintf(topic, sizeof(topic), "sluice.test.unordered-%d", (int)getpid());
	snprintf(group, sizeof(group), "sluice-test-unordered-%d", (int)getpid());
	ck_assert_int_eq(sl_kafka_topics_ensure(brokers, topics, 1, 2, err, sizeof(err)), SL_OK);
	ck_assert_ptr_nonnull(p = sl_kafka_producer_new_unordered(brokers, 5, err, sizeof(err)));
	for (int i = 0; i < N; i++) {
		char key[16], val[16];

		snprintf(key, sizeof(key), "k%d", i % 7);
		snprintf(val, sizeof(val), "%d", i);
		ck_assert_int_eq(sl_kafka_produce(p, topic, key, strlen(key), val, strlen(val), NULL),
				 SL_OK);
	}
	ck_assert_ptr_nonnull(c = sl_kafka_consumer_new(brokers, group, topics, 1, err, sizeof(err)));
	until = sl_mono_ms() + 60000;
	while (got < N && sl_mono_ms() < until) {
		rd_kafka_message_t *m = sl_kafka_consumer_poll(c, 100);
		char val[16];
		int i;

		if (!m)
			continue;
		snprintf(val, sizeof(val), "%.*s", (int)m->len, (const char *)m->payload);
		i = atoi(val);
		ck_assert_int_ge(i, 0);
		ck_assert_int_lt(i, N);
		if (seen[i]++)
			dups++;
		else
			got++;
		rd_kafka_message_destroy(m);
	}
	ck_assert_int_eq(got, N);
	ck_assert_int_eq(dups, 0);
	sl_kafka_consumer_destroy(c);
	sl_kafka_producer_destroy(p);
}
END_TEST

int main(void)
{
	const char *topics[] = {TOPIC};
	char err[512];
	Suite *s = suite_create("kafka_consumer");
	TCase *tc = tcase_create("kafka_consumer");
	SRunner *sr;
	int failed;

	if (!(brokers = getenv("SLUICE_KAFKA_BROKERS"))) {
		fprintf(stderr, "SLUICE_KAFKA_BROKERS is not set: run under scripts/testenv\n");
		return 2;
	}
	if (sl_kafka_topics_ensure(brokers, topics, 1, 2, err, sizeof(err)) != SL_OK) {
		fprintf(stderr, "creating %s: %s\n", TOPIC, err);
		return 2;
	}
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, close_during_first_join_does_not_abort);
	tcase_add_test(tc, close_after_assignment_is_quick);
	tcase_add_test(tc, a_late_member_gets_a_share_of_every_topic);
	tcase_add_test(tc, batched_lag_matches_lag);
	tcase_add_test(tc, unordered_producer_delivers_a_burst_without_polling);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
