/* deadletter.c - hands an unusable message to sluice.deadletter with its bytes and the reason. */
#include <stdlib.h>
#include <string.h>

#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

enum sl_err sl_kafka_deadletter(struct sl_kafka_producer *p, const char *service,
				const rd_kafka_message_t *msg, const char *error)
{
	Sluice__V1__DeadLetter dl = SLUICE__V1__DEAD_LETTER__INIT;
	size_t len;
	uint8_t *buf;
	enum sl_err err;

	dl.schema_version = 1;
	dl.topic = (char *)rd_kafka_topic_name(msg->rkt);
	dl.partition = msg->partition;
	dl.offset = msg->offset;
	dl.key.data = msg->key;
	dl.key.len = msg->key_len;
	/* An oversized message is recorded without its bytes, so the dead letter fits. */
	if (msg->len <= SL_KAFKA_MAX_MESSAGE) {
		dl.payload.data = msg->payload;
		dl.payload.len = msg->len;
	}
	dl.error = (char *)error;
	dl.service = (char *)service;
	dl.at_ms = sl_now_ms();
	len = sluice__v1__dead_letter__get_packed_size(&dl);
	if (!(buf = malloc(len ? len : 1)))
		return SL_ERR_NOMEM;
	sluice__v1__dead_letter__pack(&dl, buf);
	SL_WARN("dead-lettering %s[%d]@%lld: %s", dl.topic, (int)msg->partition,
		(long long)msg->offset, error);
	err = sl_kafka_produce(p, SL_TOPIC_DEADLETTER, msg->key, msg->key_len, buf, len, NULL);
	free(buf);
	return err;
}
