/* kafka.c - producer and manual-commit consumer over librdkafka, logging through sl_log. */
#include "sluice/kafka.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/log.h"
#include "sluice/util.h"

extern char **environ;

/* What an unordered producer holds while a produce request of its is unacknowledged. */
#define HOLD_MAX_MSGS 100000
#define HOLD_MAX_BYTES (64u << 20)

/* A held message: topic, key and payload copied into data, in that order. */
struct held_msg {
	struct held_msg *next;
	size_t topic_len, key_len, len;
	char data[];
};

struct sl_kafka_producer {
	rd_kafka_t *rk;
	rd_kafka_t *rk_now; /* unordered producers only: linger 0, used while nothing is unacked */
	sl_kafka_delivery_cb *on_delivery;
	void *ctx;
	/* Unordered producers only: messages produced while something is unacknowledged wait
	 * here, not in librdkafka, and go to rk together once everything is acknowledged
	 * (release_held, from the handles' delivery reports). */
	pthread_mutex_t lock;
	int lock_ready;
	struct held_msg *held, **held_tail;
	size_t nheld, held_bytes;
};

/* How long a closing consumer waits for its first assignment (see settle_first_join). */
#define SETTLE_FIRST_JOIN_MS 5000

struct sl_kafka_consumer {
	rd_kafka_t *rk;
	int paused;	    /* written and read on the polling thread only */
	int ever_assigned; /* the group has handed this member an assignment (maybe empty) */
	unsigned revocations; /* partitions taken back so far (polling thread only) */
};

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	/* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug. */
	if (level <= 3)
		SL_ERROR("librdkafka %s: %s", fac, buf);
	else if (level == 4)
		SL_WARN("librdkafka %s: %s", fac, buf);
	else if (level <= 6)
		SL_INFO("librdkafka %s: %s", fac, buf);
	else
		SL_DEBUG("librdkafka %s: %s", fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		char buf[512];
		rd_kafka_fatal_error(rk, buf, sizeof(buf));
		SL_ERROR("kafka fatal error: %s", buf);
		return;
	}
	/* Transport errors are retried by librdkafka itself; they are worth a warning only. */
	SL_WARN("kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

enum sl_err sl_kafka_conf_from_env(rd_kafka_conf_t *conf, char *errstr, size_t errlen)
{
	static const char prefix[] = "SLUICE_KAFKA_";
	char **env;

	for (env = environ; *env; env++) {
		char name[256];
		const char *eq = strchr(*env, '=');
		size_t i, n;

		if (strncmp(*env, prefix, sizeof(prefix) - 1) || !eq)
			continue;
		n = (size_t)(eq - *env) - (sizeof(prefix) - 1);
		if (n == 0 || n >= sizeof(name))
			continue;
		for (i = 0; i < n; i++) {
			char ch = (*env)[sizeof(prefix) - 1 + i];
			name[i] = ch == '_' ? '.' : (char)tolower((unsigned char)ch);
		}
		name[n] = '\0';
		if (!strcmp(name, "brokers") || !strcmp(name, "data"))
			continue;
		if (rd_kafka_conf_set(conf, name, eq + 1, errstr, errlen) != RD_KAFKA_CONF_OK)
			return SL_ERR_CONFIG;
	}
	return SL_OK;
}

/* Builds the common part of a client configuration; each constructor applies the
 * environment's overrides last. Returns NULL and fills errstr. */
static rd_kafka_conf_t *base_conf(const char *brokers, char *errstr, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, errlen) ||
	    rd_kafka_conf_set(conf, "client.id", "sluice", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "log.connection.close", "false", errstr, errlen)) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_log_cb(conf, log_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	return conf;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	struct sl_kafka_producer *p = opaque;

	if (msg->err)
		SL_WARN("kafka delivery to %s failed: %s", rd_kafka_topic_name(msg->rkt),
			rd_kafka_err2str(msg->err));
	if (p && p->on_delivery)
		p->on_delivery(msg->_private, msg->err ? SL_ERR_KAFKA : SL_OK,
			       msg->err ? rd_kafka_err2str(msg->err) : NULL, p->ctx);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Unordered producers' handles serve their delivery reports on librdkafka's background
 * thread: polling them would drop those reports (librdkafka logs DRDROP), so they are never
 * polled; outq_len says what the broker has not acknowledged. */
static int unacked(struct sl_kafka_producer *p)
{
	return rd_kafka_outq_len(p->rk) + rd_kafka_outq_len(p->rk_now);
}

/* One copy-produce to rk. */
static rd_kafka_resp_err_t producev(rd_kafka_t *rk, const char *topic, const void *key,
				    size_t keylen, const void *payload, size_t len, void *opaque)
{
	return rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
				 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
				 RD_KAFKA_V_KEY((void *)key, keylen),
				 RD_KAFKA_V_VALUE((void *)payload, len), RD_KAFKA_V_OPAQUE(opaque),
				 RD_KAFKA_V_END);
}

/* Hands every message p holds to rk, in order (p->lock held). */
static void hand_over(struct sl_kafka_producer *p, rd_kafka_t *rk)
{
	struct held_msg *h = p->held;

	p->held = NULL;
	p->held_tail = &p->held;
	p->nheld = p->held_bytes = 0;
	while (h) {
		struct held_msg *next = h->next;

		rd_kafka_resp_err_t err = producev(rk, h->data, h->data + h->topic_len + 1,
						   h->key_len, h->data + h->topic_len + 1 + h->key_len,
						   h->len, NULL);

		if (err) /* nobody to report it to: the reaper re-sends what is lost */
			SL_ERROR("kafka produce to %s failed: %s", h->data, rd_kafka_err2str(err));
		free(h);
		h = next;
	}
}

/* Unordered producers: once neither handle has anything unacknowledged, hands every held
 * message to librdkafka at once. A lone one leaves at once; several linger together so that
 * none waits behind the request of the first. Call with p->lock held. */
static void release_held(struct sl_kafka_producer *p)
{
	if (!p->held || unacked(p))
		return;
	hand_over(p, p->nheld == 1 ? p->rk_now : p->rk);
}

/* Delivery reports of an unordered producer's handles, on librdkafka's background thread:
 * failures are logged; any report may mean that nothing is unacknowledged any more. */
static void unordered_event_cb(rd_kafka_t *rk, rd_kafka_event_t *ev, void *opaque)
{
	struct sl_kafka_producer *p = opaque;

	(void)rk;
	if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DR) {
		const rd_kafka_message_t *m;

		while ((m = rd_kafka_event_message_next(ev)))
			if (m->err)
				SL_WARN("kafka delivery to %s failed: %s",
					rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
	} else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ERROR) {
		SL_WARN("kafka: %s", rd_kafka_event_error_string(ev));
	}
	rd_kafka_event_destroy(ev); /* the reported messages stop counting in the out queue */
	pthread_mutex_lock(&p->lock);
	release_held(p);
	pthread_mutex_unlock(&p->lock);
}

/* One idempotent librdkafka producer handle whose reports go to p. */
static rd_kafka_t *producer_handle_new(struct sl_kafka_producer *p, const char *brokers,
				       int linger_ms, char *errstr, size_t errlen)
{
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk = NULL;
	char linger[32];

	snprintf(linger, sizeof(linger), "%d", linger_ms);
	if (!(conf = base_conf(brokers, errstr, errlen)))
		return NULL;
	if (rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "linger.ms", linger, errstr, errlen) ||
	    rd_kafka_conf_set(conf, "message.max.bytes", "2097152", errstr, errlen))
		goto out;
	/* Nobody waits for successes: only failures (logged) make a delivery report, so the
	 * out queue counts just what the broker has not acknowledged yet. An unordered
	 * producer's handles report everything, on librdkafka's background thread: each report
	 * may release what it holds. */
	if (!p->on_delivery && !p->lock_ready &&
	    rd_kafka_conf_set(conf, "delivery.report.only.error", "true", errstr, errlen))
		goto out;
	if (sl_kafka_conf_from_env(conf, errstr, errlen) != SL_OK)
		goto out;
	if (p->lock_ready) {
		rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR);
		rd_kafka_conf_set_background_event_cb(conf, unordered_event_cb);
	}
	else
		rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
	rd_kafka_conf_set_opaque(conf, p);
	if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errlen)))
		conf = NULL; /* owned by rk now */
	if (rk && p->lock_ready) {
		/* Reports go to the main queue; the background thread serves it from now on. */
		rd_kafka_queue_t *main_q = rd_kafka_queue_get_main(rk);
		rd_kafka_queue_t *bg_q = rd_kafka_queue_get_background(rk);

		if (main_q && bg_q)
			rd_kafka_queue_forward(main_q, bg_q);
		if (main_q)
			rd_kafka_queue_destroy(main_q);
		if (bg_q)
			rd_kafka_queue_destroy(bg_q);
		if (!main_q || !bg_q) {
			snprintf(errstr, errlen, "kafka: no background queue");
			rd_kafka_destroy(rk);
			rk = NULL;
		}
	}
out:
	if (conf)
		rd_kafka_conf_destroy(conf);
	return rk;
}

struct sl_kafka_producer *sl_kafka_producer_new(const char *brokers, int linger_ms,
						sl_kafka_delivery_cb *on_delivery, void *ctx,
						char *errstr, size_t errlen)
{
	struct sl_kafka_producer *p = calloc(1, sizeof(*p));

	if (!p) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	p->on_delivery = on_delivery;
	p->ctx = ctx;
	if (!(p->rk = producer_handle_new(p, brokers, linger_ms, errstr, errlen))) {
		free(p);
		return NULL;
	}
	return p;
}

struct sl_kafka_producer *sl_kafka_producer_new_unordered(const char *brokers, int linger_ms,
							  char *errstr, size_t errlen)
{
	struct sl_kafka_producer *p = calloc(1, sizeof(*p));

	if (!p) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	p->lock_ready = 1;
	p->held_tail = &p->held;
	if (!(p->rk = producer_handle_new(p, brokers, linger_ms, errstr, errlen)) ||
	    !(p->rk_now = producer_handle_new(p, brokers, 0, errstr, errlen))) {
		sl_kafka_producer_destroy(p);
		return NULL;
	}
	return p;
}

/* Holds a copy of the message in p (p->lock held). Returns 0, or -1 when p holds its limit
 * or memory is short. */
static int hold(struct sl_kafka_producer *p, const char *topic, const void *key, size_t keylen,
		const void *payload, size_t len)
{
	size_t tl = strlen(topic), size = sizeof(struct held_msg) + tl + 1 + keylen + len;
	struct held_msg *h;

	if (p->nheld >= HOLD_MAX_MSGS || p->held_bytes + size > HOLD_MAX_BYTES ||
	    !(h = malloc(size)))
		return -1;
	h->next = NULL;
	h->topic_len = tl;
	h->key_len = keylen;
	h->len = len;
	memcpy(h->data, topic, tl + 1);
	if (keylen)
		memcpy(h->data + tl + 1, key, keylen);
	if (len)
		memcpy(h->data + tl + 1 + keylen, payload, len);
	*p->held_tail = h;
	p->held_tail = &h->next;
	p->nheld++;
	p->held_bytes += size;
	return 0;
}

/* An unordered producer sends a message at once when nothing it sent before is still
 * unacknowledged (a chain's next hop waits for it); otherwise it holds it until everything
 * is acknowledged and then sends all it holds together (release_held). Why not leave the
 * waiting to librdkafka: measured with librdkafka 2.0.2 (docs/performance.md), an idempotent
 * handle with a message waiting behind an unacknowledged request polls its socket without
 * sleeping (~25% of a core per worker at 400 results/s with linger 0 or 1 ms, 10-20% with 5
 * ms). Beyond its limits (HOLD_MAX_*) a message goes to the lingering handle directly.
 * Returns the handle to produce to now, or NULL when the message is held. */
static rd_kafka_t *route(struct sl_kafka_producer *p, const char *topic, const void *key,
			 size_t keylen, const void *payload, size_t len)
{
	rd_kafka_t *rk = p->rk;

	if (!p->lock_ready)
		return rk;
	pthread_mutex_lock(&p->lock);
	if (!p->held && !unacked(p))
		rk = p->rk_now;
	else if (hold(p, topic, key, keylen, payload, len) == 0)
		rk = NULL;
	pthread_mutex_unlock(&p->lock);
	return rk;
}

enum sl_err sl_kafka_produce(struct sl_kafka_producer *p, const char *topic, const void *key,
			     size_t keylen, const void *payload, size_t len, void *opaque)
{
	rd_kafka_t *rk = route(p, topic, key, keylen, payload, len);
	int64_t tries = 0;

	if (!rk)
		return SL_OK;
	for (;;) {
		rd_kafka_resp_err_t err = producev(rk, topic, key, keylen, payload, len, opaque);

		if (!err)
			return SL_OK;
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || ++tries > 50) {
			SL_ERROR("kafka produce to %s failed: %s", topic, rd_kafka_err2str(err));
			return SL_ERR_KAFKA;
		}
		if (p->lock_ready) /* reports served in the background: never poll (unacked) */
			sleep_ms(100);
		else
			rd_kafka_poll(rk, 100);
	}
}

int sl_kafka_producer_poll(struct sl_kafka_producer *p, int timeout_ms)
{
	if (p->lock_ready) {
		/* The reports release what is held; this only covers a report missed. */
		pthread_mutex_lock(&p->lock);
		release_held(p);
		pthread_mutex_unlock(&p->lock);
		if (timeout_ms > 0)
			sleep_ms(timeout_ms);
		return 0;
	}
	return rd_kafka_poll(p->rk, timeout_ms);
}

/* Hands everything held to rk whether or not something is unacknowledged. */
static void release_all(struct sl_kafka_producer *p)
{
	if (!p->lock_ready)
		return;
	pthread_mutex_lock(&p->lock);
	hand_over(p, p->rk);
	pthread_mutex_unlock(&p->lock);
}

enum sl_err sl_kafka_producer_flush(struct sl_kafka_producer *p, int timeout_ms)
{
	int64_t until = sl_mono_ms() + timeout_ms;

	if (!p->lock_ready)
		return rd_kafka_flush(p->rk, timeout_ms) ? SL_ERR_TIMEOUT : SL_OK;
	release_all(p);
	while (unacked(p) > 0) {
		if (sl_mono_ms() >= until)
			return SL_ERR_TIMEOUT;
		sleep_ms(1);
	}
	return SL_OK;
}

rd_kafka_t *sl_kafka_producer_handle(struct sl_kafka_producer *p)
{
	return p->rk;
}

/* Fetches topics' metadata on one handle, so that its first message does not wait. */
static void handle_warm(rd_kafka_t *rk, const char *const *topics, size_t n, int timeout_ms)
{
	for (size_t i = 0; i < n; i++) {
		rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topics[i], NULL);
		const struct rd_kafka_metadata *md = NULL;

		if (!t)
			continue;
		if (rd_kafka_metadata(rk, 0, t, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR)
			rd_kafka_metadata_destroy(md);
		rd_kafka_topic_destroy(t);
	}
}

void sl_kafka_producer_warm(struct sl_kafka_producer *p, const char *const *topics, size_t n,
			    int timeout_ms)
{
	handle_warm(p->rk, topics, n, timeout_ms);
	if (p->rk_now)
		handle_warm(p->rk_now, topics, n, timeout_ms);
}

/* Flushes up to 10 s and destroys one handle. Accepts NULL. */
static void handle_destroy(rd_kafka_t *rk)
{
	if (!rk)
		return;
	if (rd_kafka_flush(rk, 10000))
		SL_WARN("kafka producer closed with %d undelivered messages", rd_kafka_outq_len(rk));
	rd_kafka_destroy(rk);
}

void sl_kafka_producer_destroy(struct sl_kafka_producer *p)
{
	if (!p)
		return;
	if (p->lock_ready) {
		/* Not rd_kafka_flush: these handles are never polled (see unacked). */
		if (p->rk && p->rk_now && sl_kafka_producer_flush(p, 10000) != SL_OK)
			SL_WARN("kafka producer closed with %d undelivered messages", unacked(p));
		if (p->rk_now)
			rd_kafka_destroy(p->rk_now);
		if (p->rk)
			rd_kafka_destroy(p->rk);
		p->rk_now = p->rk = NULL;
	} else {
		handle_destroy(p->rk);
	}
	for (struct held_msg *h = p->held, *next; h; h = next) {
		next = h->next;
		free(h);
	}
	if (p->lock_ready)
		pthread_mutex_destroy(&p->lock);
	free(p);
}

/* Writes parts as "topic[0,1,2] topic2[3]" (entries of one topic next to each other, as librdkafka
 * hands them over) into buf, truncated to len. */
static void format_parts(const rd_kafka_topic_partition_list_t *parts, char *buf, size_t len)
{
	size_t at = 0;

	buf[0] = '\0';
	for (int i = 0; i < parts->cnt && at + 1 < len; i++) {
		const rd_kafka_topic_partition_t *tp = &parts->elems[i];
		int first = i == 0 || strcmp(parts->elems[i - 1].topic, tp->topic);
		int last = i + 1 == parts->cnt || strcmp(parts->elems[i + 1].topic, tp->topic);
		int n = snprintf(buf + at, len - at, "%s%s%s%d%s", first && i ? " " : "",
				 first ? tp->topic : "", first ? "[" : ",", (int)tp->partition,
				 last ? "]" : "");

		if (n < 0)
			break;
		at += (size_t)n;
	}
	if (at >= len && len > 4)
		memcpy(buf + len - 4, "...", 4);
}

/* Logs what a rebalance changed and what this member holds now: which partitions of which
 * band each worker reads decides how the work spreads. */
static void log_rebalance(rd_kafka_t *rk, const char *what,
			  const rd_kafka_topic_partition_list_t *parts)
{
	rd_kafka_topic_partition_list_t *held = NULL;
	char changed[512], now[512];

	format_parts(parts, changed, sizeof(changed));
	if (rd_kafka_assignment(rk, &held) || !held) {
		SL_INFO("kafka: %s %d partitions: %s", what, parts->cnt, changed);
	} else {
		rd_kafka_topic_partition_list_sort(held, NULL, NULL);
		format_parts(held, now, sizeof(now));
		SL_INFO("kafka: %s %d partitions: %s; now held: %s", what, parts->cnt, changed,
			held->cnt ? now : "none");
	}
	if (held)
		rd_kafka_topic_partition_list_destroy(held);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct sl_kafka_consumer *c = opaque;
	int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
	rd_kafka_error_t *error = NULL;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		c->ever_assigned = 1;
		if (coop)
			error = rd_kafka_incremental_assign(rk, parts);
		else
			rd_kafka_assign(rk, parts);
		if (c->paused)
			rd_kafka_pause_partitions(rk, parts);
		log_rebalance(rk, "assigned", parts);
	} else {
		c->revocations++;
		/* Commit what is done before another member takes these partitions. */
		rd_kafka_commit(rk, NULL, 0);
		if (coop)
			error = rd_kafka_incremental_unassign(rk, parts);
		else
			rd_kafka_assign(rk, NULL);
		log_rebalance(rk, "revoked", parts);
	}
	if (error) {
		SL_WARN("kafka rebalance: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
	}
}

struct sl_kafka_consumer *sl_kafka_consumer_new(const char *brokers, const char *group,
						const char *const *topics, size_t ntopics,
						char *errstr, size_t errlen)
{
	return sl_kafka_consumer_new_props(brokers, group, topics, ntopics, NULL, errstr, errlen);
}

struct sl_kafka_consumer *sl_kafka_consumer_new_props(const char *brokers, const char *group,
						      const char *const *topics, size_t ntopics,
						      const char *const *props, char *errstr,
						      size_t errlen)
{
	struct sl_kafka_consumer *c = calloc(1, sizeof(*c));
	rd_kafka_conf_t *conf = NULL;
	rd_kafka_topic_partition_list_t *subs = NULL;
	rd_kafka_resp_err_t err;
	size_t i;

	if (!c) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	if (!(conf = base_conf(brokers, errstr, errlen)))
		goto fail;
	if (rd_kafka_conf_set(conf, "group.id", group, errstr, errlen) ||
	    rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "enable.auto.commit", "true", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "auto.commit.interval.ms", "200", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "partition.assignment.strategy", "range", errstr,
			      errlen) ||
	    rd_kafka_conf_set(conf, "session.timeout.ms", "10000", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "heartbeat.interval.ms", "1000", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "topic.metadata.refresh.interval.ms", "5000", errstr, errlen) ||
	    rd_kafka_conf_set(conf, "fetch.message.max.bytes", "2097152", errstr, errlen))
		goto fail;
	for (size_t p = 0; props && props[p] && props[p + 1]; p += 2)
		if (rd_kafka_conf_set(conf, props[p], props[p + 1], errstr, errlen))
			goto fail;
	if (sl_kafka_conf_from_env(conf, errstr, errlen) != SL_OK)
		goto fail;
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_opaque(conf, c);
	if (!(c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errlen)))
		goto fail;
	conf = NULL;
	rd_kafka_poll_set_consumer(c->rk);
	subs = rd_kafka_topic_partition_list_new((int)ntopics);
	for (i = 0; i < ntopics; i++)
		rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(c->rk, subs);
	rd_kafka_topic_partition_list_destroy(subs);
	if (err) {
		snprintf(errstr, errlen, "subscribe: %s", rd_kafka_err2str(err));
		goto fail;
	}
	return c;
fail:
	if (conf)
		rd_kafka_conf_destroy(conf);
	if (c->rk)
		rd_kafka_destroy(c->rk);
	free(c);
	return NULL;
}

rd_kafka_message_t *sl_kafka_consumer_poll(struct sl_kafka_consumer *c, int timeout_ms)
{
	rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);

	if (!m)
		return NULL;
	if (m->err) {
		if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
			SL_WARN("kafka consume: %s", rd_kafka_message_errstr(m));
		rd_kafka_message_destroy(m);
		return NULL;
	}
	return m;
}

void sl_kafka_consumer_done(struct sl_kafka_consumer *c, const rd_kafka_message_t *msg)
{
	rd_kafka_resp_err_t err = rd_kafka_offset_store(msg->rkt, msg->partition, msg->offset);

	/* A partition revoked meanwhile cannot be stored; its next owner reprocesses it. */
	if (err)
		SL_DEBUG("kafka offset store: %s", rd_kafka_err2str(err));
}

enum sl_err sl_kafka_consumer_commit(struct sl_kafka_consumer *c)
{
	rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, NULL, 0);

	if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
		SL_WARN("kafka commit: %s", rd_kafka_err2str(err));
		return SL_ERR_KAFKA;
	}
	return SL_OK;
}

void sl_kafka_consumer_set_paused(struct sl_kafka_consumer *c, int paused)
{
	rd_kafka_topic_partition_list_t *parts = NULL;

	if (c->paused == paused)
		return;
	c->paused = paused;
	if (rd_kafka_assignment(c->rk, &parts) || !parts)
		return;
	if (paused)
		rd_kafka_pause_partitions(c->rk, parts);
	else
		rd_kafka_resume_partitions(c->rk, parts);
	rd_kafka_topic_partition_list_destroy(parts);
}

unsigned sl_kafka_consumer_revocations(const struct sl_kafka_consumer *c)
{
	return c->revocations;
}

int sl_kafka_consumer_assigned_of(struct sl_kafka_consumer *c, const char *topic)
{
	rd_kafka_topic_partition_list_t *parts = NULL;
	int n = 0;

	if (rd_kafka_assignment(c->rk, &parts) || !parts)
		return 0;
	for (int i = 0; i < parts->cnt; i++)
		n += !topic || !strcmp(parts->elems[i].topic, topic);
	rd_kafka_topic_partition_list_destroy(parts);
	return n;
}

int sl_kafka_consumer_assigned(struct sl_kafka_consumer *c)
{
	return sl_kafka_consumer_assigned_of(c, NULL);
}

/* librdkafka before 2.3 (Debian 12 ships 2.0.2) aborts in rd_kafka_destroy when a
 * cooperative-sticky member is closed between its JoinGroup response and its first
 * assignment (librdkafka issue 4312). A consumer that never saw an assignment therefore
 * waits, paused so that nothing is fetched, for that first assignment before closing. A
 * member without a member id has had no JoinGroup answer and closes at once. */
static void settle_first_join(struct sl_kafka_consumer *c)
{
	int64_t until = sl_mono_ms() + SETTLE_FIRST_JOIN_MS;
	char *member = rd_kafka_memberid(c->rk);
	int joined = member && *member;

	if (member)
		rd_kafka_mem_free(c->rk, member);
	if (!joined)
		return;
	c->paused = 1;
	while (!c->ever_assigned && sl_mono_ms() < until) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 50);

		if (m) /* an error event: nothing is fetched while paused */
			rd_kafka_message_destroy(m);
	}
}

void sl_kafka_consumer_destroy(struct sl_kafka_consumer *c)
{
	if (!c)
		return;
	if (c->rk) {
		settle_first_join(c);
		rd_kafka_commit(c->rk, NULL, 0);
		rd_kafka_consumer_close(c->rk);
		rd_kafka_destroy(c->rk);
	}
	free(c);
}

enum sl_err sl_kafka_check_size(const rd_kafka_message_t *msg)
{
	return msg->len > SL_KAFKA_MAX_MESSAGE ? SL_ERR_TOO_BIG : SL_OK;
}
