/* test_consumer.c - the consumer against the session's real Kafka (SLUICE_KAFKA_BROKERS):
 * closing a member at any point of its first group join exits cleanly. */
#include <check.h>
#include <stdio.h>
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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
