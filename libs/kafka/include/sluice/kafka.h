/* kafka.h - the Kafka layer: idempotent producer, manual-commit consumer, topic admin, lag. */
#ifndef SLUICE_KAFKA_H
#define SLUICE_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

/* Topic names of the design. Task queues are SL_TOPIC_TASKS_PREFIX + queue name. */
#define SL_TOPIC_RUNS_REQUESTED "sluice.runs.requested"
#define SL_TOPIC_TASKS_PREFIX "sluice.tasks."
#define SL_TOPIC_RESULTS "sluice.tasks.results"
#define SL_TOPIC_RUN_EVENTS "sluice.runs.events"
#define SL_TOPIC_CONTROL "sluice.control"
#define SL_TOPIC_SCALER_EVENTS "sluice.autoscaler.events"
#define SL_TOPIC_DEADLETTER "sluice.deadletter"

/* Largest message any sluice consumer accepts; bigger ones are dead-lettered unread. */
#define SL_KAFKA_MAX_MESSAGE (1024 * 1024)

/* A batched TaskDispatch or TaskResult (ADR 20) carries at most this many elements and
 * this many bytes of them; a bigger batch is dead-lettered. */
#define SL_BATCH_MAX 64
#define SL_BATCH_BYTES (256 * 1024)

struct sl_kafka_producer;
struct sl_kafka_consumer;

/* Called from sl_kafka_producer_poll()/flush() on the polling thread once per produced
 * message: err is SL_OK when the broker stored it. opaque is what sl_kafka_produce() got. */
typedef void(sl_kafka_delivery_cb)(void *opaque, enum sl_err err, const char *reason, void *ctx);

/* Applies librdkafka properties from the environment: every SLUICE_KAFKA_<PROP> variable
 * except SLUICE_KAFKA_BROKERS sets <prop> with '_' turned into '.', lower-cased
 * (SLUICE_KAFKA_SECURITY_PROTOCOL=ssl -> security.protocol=ssl). Returns SL_ERR_CONFIG and
 * fills errstr when librdkafka rejects one. */
enum sl_err sl_kafka_conf_from_env(rd_kafka_conf_t *conf, char *errstr, size_t errlen);

/* Creates an idempotent producer (enable.idempotence=true, acks=all). linger_ms tunes
 * batching (0 for lowest latency). on_delivery may be NULL (then only failed deliveries make
 * a report, which is logged); ctx is passed to it (borrowed). Returns NULL and fills errstr
 * on error. */
struct sl_kafka_producer *sl_kafka_producer_new(const char *brokers, int linger_ms,
						sl_kafka_delivery_cb *on_delivery, void *ctx,
						char *errstr, size_t errlen);

/* As sl_kafka_producer_new without delivery callback, for messages whose relative order does
 * not matter (dispatches and results: both are fenced by attempt). A message produced while
 * nothing sent before is unacknowledged leaves at once (linger 0, for a chain's hop); those
 * produced while something is unacknowledged are held by sluice (up to 100,000 messages or
 * 64 MiB, beyond which they go to librdkafka directly) and handed to librdkafka together, to
 * linger linger_ms, once everything is acknowledged: at most one batch in flight, like
 * Nagle's algorithm. Two librdkafka handles underneath, whose delivery reports are served on
 * librdkafka's background thread; two messages may reach a partition out of order. */
struct sl_kafka_producer *sl_kafka_producer_new_unordered(const char *brokers, int linger_ms,
							  char *errstr, size_t errlen);

/* Queues one message (payload and key are copied). Blocks up to 5 s while the local queue
 * is full, serving delivery reports. Thread-safe. */
enum sl_err sl_kafka_produce(struct sl_kafka_producer *p, const char *topic, const void *key,
			     size_t keylen, const void *payload, size_t len, void *opaque);

/* Serves delivery reports for up to timeout_ms. Returns the number served. */
int sl_kafka_producer_poll(struct sl_kafka_producer *p, int timeout_ms);


/* Waits until every queued message is delivered or failed, up to timeout_ms.
 * Returns SL_ERR_TIMEOUT if some are still queued. */
enum sl_err sl_kafka_producer_flush(struct sl_kafka_producer *p, int timeout_ms);

/* The underlying handle, borrowed (for metadata queries). */
rd_kafka_t *sl_kafka_producer_handle(struct sl_kafka_producer *p);

/* Fetches the metadata of topics (borrowed) on the producer's handle now, waiting up to
 * timeout_ms for each. librdkafka (2.0.2) holds the first message to a topic its handle does
 * not know until its topic scan, which runs once a second: 0-1 s for the first dispatch to a
 * new queue, the first result of a new worker. Errors are ignored (the scan still works). */
void sl_kafka_producer_warm(struct sl_kafka_producer *p, const char *const *topics, size_t n,
			    int timeout_ms);

/* Flushes up to 10 s and destroys. Accepts NULL. */
void sl_kafka_producer_destroy(struct sl_kafka_producer *p);

/* Creates a consumer in group that subscribes to topics (borrowed, copied). Offsets are
 * stored only by sl_kafka_consumer_done() and committed in the background from those, so a
 * message is committed only once the caller says its work is durable.
 * auto.offset.reset=earliest. Returns NULL and fills errstr on error. */
struct sl_kafka_consumer *sl_kafka_consumer_new(const char *brokers, const char *group,
						const char *const *topics, size_t ntopics,
						char *errstr, size_t errlen);

/* As sl_kafka_consumer_new, with extra librdkafka properties set after sluice's defaults and
 * before the environment's: props is "name", "value", ..., NULL (borrowed; may be NULL). */
struct sl_kafka_consumer *sl_kafka_consumer_new_props(const char *brokers, const char *group,
						      const char *const *topics, size_t ntopics,
						      const char *const *props, char *errstr,
						      size_t errlen);

/* Returns the next message or NULL after timeout_ms. Errors (partition EOF, transport) are
 * logged and NULL is returned. Caller frees with rd_kafka_message_destroy(). */
rd_kafka_message_t *sl_kafka_consumer_poll(struct sl_kafka_consumer *c, int timeout_ms);

/* Marks msg (borrowed) as processed: its offset+1 will be committed. */
void sl_kafka_consumer_done(struct sl_kafka_consumer *c, const rd_kafka_message_t *msg);

/* Commits stored offsets now and waits for the broker's answer. */
enum sl_err sl_kafka_consumer_commit(struct sl_kafka_consumer *c);

/* Pauses (paused=1) or resumes (0) fetching on every assigned partition, including ones
 * assigned later, while the consumer keeps its group membership by being polled. */
void sl_kafka_consumer_set_paused(struct sl_kafka_consumer *c, int paused);

/* How many times the group took partitions back from this consumer (a rebalance: with the
 * range assignor, every partition, even those it hands back at once). Messages polled before a
 * revocation are fetched again, from the committed offset, by whoever holds their partition
 * now: a caller that buffers polled messages drops the unfinished ones when this changes.
 * @locality the polling thread. */
unsigned sl_kafka_consumer_revocations(const struct sl_kafka_consumer *c);

/* Number of partitions currently assigned to this consumer: of every topic (topic NULL), or of
 * topic only (sl_kafka_consumer_assigned_of). */
int sl_kafka_consumer_assigned(struct sl_kafka_consumer *c);
int sl_kafka_consumer_assigned_of(struct sl_kafka_consumer *c, const char *topic);

/* Commits stored offsets, leaves the group and destroys. Accepts NULL. */
void sl_kafka_consumer_destroy(struct sl_kafka_consumer *c);

/* Creates each missing topic with partitions partitions (replication 1 when the cluster has
 * one broker, else 3); existing topics are left alone. */
enum sl_err sl_kafka_topics_ensure(const char *brokers, const char *const *topics, size_t n,
				   int partitions, char *errstr, size_t errlen);

/* Demand numbers of a consumer group on one topic: lag = sum over partitions of
 * (high watermark - committed offset), a partition with no commit counting from its low
 * watermark. Returns SL_ERR_NOT_FOUND when the topic does not exist. */
struct sl_kafka_lag_probe;
struct sl_kafka_lag_probe *sl_kafka_lag_probe_new(const char *brokers, const char *group,
						  char *errstr, size_t errlen);
enum sl_err sl_kafka_lag(struct sl_kafka_lag_probe *probe, const char *topic, int64_t *lag,
			 int timeout_ms);
void sl_kafka_lag_probe_destroy(struct sl_kafka_lag_probe *probe);

/* sl_kafka_lag() summed over several topics (borrowed), in a few round trips whatever the
 * number of partitions: one metadata request per topic, then one OffsetFetch and at most two
 * ListOffsets (per broker) for all of them. Topics that do not exist count 0;
 * SL_ERR_NOT_FOUND when none exists. */
enum sl_err sl_kafka_lag_topics(struct sl_kafka_lag_probe *probe, const char *const *topics,
				size_t n, int64_t *lag, int timeout_ms);

/* Sum over every partition of topics (borrowed) of the end offset (the offset the next message
 * will get), in *sum. The sum only grows, and it grows with every message produced to one of
 * them, so a change means new messages; it says nothing about the group's commits. Topics that
 * do not exist count 0. Costs one ListOffsets per broker, plus one metadata round trip per
 * topic when the probe has not listed these topics' partitions in the last 5 s (or after an
 * error): cheap enough to poll several times a second. Not thread-safe (the probe caches). */
enum sl_err sl_kafka_end_offsets(struct sl_kafka_lag_probe *probe, const char *const *topics,
				 size_t n, int64_t *sum, int timeout_ms);

/* Publishes msg (borrowed) to sluice.deadletter as a DeadLetter with its original bytes and
 * the error text, so the consumer can commit it and go on. */
enum sl_err sl_kafka_deadletter(struct sl_kafka_producer *p, const char *service,
				const rd_kafka_message_t *msg, const char *error);

/* Returns SL_OK when msg->len is within SL_KAFKA_MAX_MESSAGE, else SL_ERR_TOO_BIG. */
enum sl_err sl_kafka_check_size(const rd_kafka_message_t *msg);

#endif
