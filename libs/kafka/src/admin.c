/* admin.c - topic creation and consumer-group lag. */
#include <stdlib.h>
#include <string.h>

#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/util.h"

static rd_kafka_t *client_new(rd_kafka_type_t type, const char *brokers, const char *group,
			      char *errstr, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;

	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, errlen) ||
	    (group && rd_kafka_conf_set(conf, "group.id", group, errstr, errlen)) ||
	    (group && rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errlen)) ||
	    sl_kafka_conf_from_env(conf, errstr, errlen) != SL_OK) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	if (!(rk = rd_kafka_new(type, conf, errstr, errlen)))
		rd_kafka_conf_destroy(conf);
	return rk;
}

enum sl_err sl_kafka_topics_ensure(const char *brokers, const char *const *topics, size_t n,
				   int partitions, char *errstr, size_t errlen)
{
	rd_kafka_t *rk = client_new(RD_KAFKA_PRODUCER, brokers, NULL, errstr, errlen);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_NewTopic_t **nt = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	enum sl_err err = SL_ERR_KAFKA;
	int replication = 1;
	size_t i, created = 0;

	if (!rk)
		return SL_ERR_CONFIG;
	if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errlen, "cannot reach kafka at %s", brokers);
		goto out;
	}
	if (md->broker_cnt >= 3)
		replication = 3;
	nt = calloc(n ? n : 1, sizeof(*nt));
	for (i = 0; i < n; i++) {
		int exists = 0;
		for (int t = 0; t < md->topic_cnt; t++)
			if (!strcmp(md->topics[t].topic, topics[i]) && !md->topics[t].err)
				exists = 1;
		if (exists)
			continue;
		nt[created] = rd_kafka_NewTopic_new(topics[i], partitions, replication, errstr,
						    errlen);
		if (!nt[created])
			goto out;
		created++;
	}
	if (!created) {
		err = SL_OK;
		goto out;
	}
	q = rd_kafka_queue_new(rk);
	rd_kafka_CreateTopics(rk, nt, created, NULL, q);
	ev = rd_kafka_queue_poll(q, 30000);
	if (!ev || rd_kafka_event_error(ev)) {
		snprintf(errstr, errlen, "create topics: %s",
			 ev ? rd_kafka_event_error_string(ev) : "timed out");
		goto out;
	}
	{
		const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
		size_t cnt = 0;
		const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
		for (i = 0; i < cnt; i++) {
			rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
			if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
				snprintf(errstr, errlen, "create topic %s: %s",
					 rd_kafka_topic_result_name(tr[i]),
					 rd_kafka_topic_result_error_string(tr[i]));
				goto out;
			}
			SL_INFO("created topic %s (%d partitions)", rd_kafka_topic_result_name(tr[i]),
				partitions);
		}
	}
	err = SL_OK;
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	if (q)
		rd_kafka_queue_destroy(q);
	if (nt) {
		for (i = 0; i < created; i++)
			rd_kafka_NewTopic_destroy(nt[i]);
		free(nt);
	}
	if (md)
		rd_kafka_metadata_destroy(md);
	rd_kafka_destroy(rk);
	return err;
}

/* sl_kafka_end_offsets() reuses the partitions it found this long before asking again. */
#define END_PARTS_MS 5000

struct sl_kafka_lag_probe {
	rd_kafka_t *rk; /* a consumer handle carrying group.id that never subscribes */
	/* The partitions of the topics sl_kafka_end_offsets() was last asked about (ends_key:
	 * a hash of their names), so that polling it costs one ListOffsets, not also a metadata
	 * request per topic. NULL: none yet, or dropped after an error. */
	rd_kafka_topic_partition_list_t *ends;
	uint64_t ends_key;
	int64_t ends_mono;
};

struct sl_kafka_lag_probe *sl_kafka_lag_probe_new(const char *brokers, const char *group,
						  char *errstr, size_t errlen)
{
	struct sl_kafka_lag_probe *probe = calloc(1, sizeof(*probe));

	if (!probe)
		return NULL;
	if (!(probe->rk = client_new(RD_KAFKA_CONSUMER, brokers, group, errstr, errlen))) {
		free(probe);
		return NULL;
	}
	return probe;
}

enum sl_err sl_kafka_lag(struct sl_kafka_lag_probe *probe, const char *topic, int64_t *lag,
			 int timeout_ms)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *parts = NULL;
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(probe->rk, topic, NULL);
	enum sl_err err = SL_ERR_KAFKA;
	int64_t total = 0;
	int i;

	if (rd_kafka_metadata(probe->rk, 0, rkt, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
		goto out;
	if (md->topic_cnt != 1 || md->topics[0].err) {
		err = SL_ERR_NOT_FOUND;
		goto out;
	}
	parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
	for (i = 0; i < md->topics[0].partition_cnt; i++)
		rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id);
	if (rd_kafka_committed(probe->rk, parts, timeout_ms))
		goto out;
	for (i = 0; i < parts->cnt; i++) {
		int64_t lo = 0, hi = 0;
		if (rd_kafka_query_watermark_offsets(probe->rk, topic, parts->elems[i].partition,
						     &lo, &hi, timeout_ms))
			goto out;
		int64_t from = parts->elems[i].offset >= 0 ? parts->elems[i].offset : lo;
		if (hi > from)
			total += hi - from;
	}
	*lag = total;
	err = SL_OK;
out:
	if (parts)
		rd_kafka_topic_partition_list_destroy(parts);
	if (md)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return err;
}

void sl_kafka_lag_probe_destroy(struct sl_kafka_lag_probe *probe)
{
	if (!probe)
		return;
	if (probe->ends)
		rd_kafka_topic_partition_list_destroy(probe->ends);
	rd_kafka_destroy(probe->rk);
	free(probe);
}

/* Adds every partition of the existing topics among topics to parts, with offset; *found counts
 * the topics that exist. */
static enum sl_err add_partitions(rd_kafka_t *rk, const char *const *topics, size_t n,
				  int64_t offset, rd_kafka_topic_partition_list_t *parts,
				  size_t *found, int timeout_ms)
{
	*found = 0;
	for (size_t t = 0; t < n; t++) {
		const struct rd_kafka_metadata *md = NULL;
		rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topics[t], NULL);
		rd_kafka_resp_err_t e =
			rkt ? rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms) : RD_KAFKA_RESP_ERR__FAIL;

		if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && !md->topics[0].err) {
			(*found)++;
			for (int i = 0; i < md->topics[0].partition_cnt; i++)
				rd_kafka_topic_partition_list_add(parts, topics[t],
								  md->topics[0].partitions[i].id)
					->offset = offset;
		}
		if (md)
			rd_kafka_metadata_destroy(md);
		if (rkt)
			rd_kafka_topic_destroy(rkt);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			return SL_ERR_KAFKA;
	}
	return SL_OK;
}

/* Asks the brokers for the offsets at the logical positions in parts (RD_KAFKA_OFFSET_END or
 * _BEGINNING: ListOffsets takes them as the special timestamps "latest" and "earliest"). */
static enum sl_err list_offsets(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
				int timeout_ms)
{
	if (parts->cnt && rd_kafka_offsets_for_times(rk, parts, timeout_ms))
		return SL_ERR_KAFKA;
	for (int i = 0; i < parts->cnt; i++)
		if (parts->elems[i].err || parts->elems[i].offset < 0)
			return SL_ERR_KAFKA;
	return SL_OK;
}

/* FNV-1a over the names, each with its terminating NUL. */
static uint64_t names_key(const char *const *names, size_t n)
{
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < n; i++) {
		const char *c = names[i];
		do {
			h = (h ^ (unsigned char)*c) * 1099511628211ULL;
		} while (*c++);
	}
	return h;
}

enum sl_err sl_kafka_end_offsets(struct sl_kafka_lag_probe *probe, const char *const *topics,
				 size_t n, int64_t *sum, int timeout_ms)
{
	rd_kafka_topic_partition_list_t *parts = NULL;
	uint64_t key = names_key(topics, n);
	int64_t now = sl_mono_ms();
	enum sl_err err;
	int64_t total = 0;
	size_t found;

	if (!probe->ends || probe->ends_key != key || now - probe->ends_mono >= END_PARTS_MS) {
		parts = rd_kafka_topic_partition_list_new(32);
		if ((err = add_partitions(probe->rk, topics, n, RD_KAFKA_OFFSET_END, parts, &found,
					  timeout_ms)) != SL_OK)
			goto out;
		if (probe->ends)
			rd_kafka_topic_partition_list_destroy(probe->ends);
		probe->ends = parts;
		probe->ends_key = key;
		probe->ends_mono = now;
	}
	parts = rd_kafka_topic_partition_list_copy(probe->ends); /* asking fills in offsets */
	if ((err = list_offsets(probe->rk, parts, timeout_ms)) != SL_OK) {
		/* a leader moved, a topic went: ask for the partitions again next time */
		rd_kafka_topic_partition_list_destroy(probe->ends);
		probe->ends = NULL;
		goto out;
	}
	for (int i = 0; i < parts->cnt; i++)
		total += parts->elems[i].offset;
	*sum = total;
out:
	if (parts && parts != probe->ends)
		rd_kafka_topic_partition_list_destroy(parts);
	return err;
}

enum sl_err sl_kafka_lag_topics(struct sl_kafka_lag_probe *probe, const char *const *topics,
				size_t n, int64_t *lag, int timeout_ms)
{
	rd_kafka_topic_partition_list_t *ends = rd_kafka_topic_partition_list_new(32);
	rd_kafka_topic_partition_list_t *committed = NULL, *starts = NULL;
	enum sl_err err;
	int64_t total = 0;
	size_t found;

	if ((err = add_partitions(probe->rk, topics, n, RD_KAFKA_OFFSET_END, ends, &found,
				  timeout_ms)) != SL_OK)
		goto out;
	if (!found) {
		err = SL_ERR_NOT_FOUND;
		goto out;
	}
	err = SL_ERR_KAFKA;
	committed = rd_kafka_topic_partition_list_copy(ends);
	if (rd_kafka_committed(probe->rk, committed, timeout_ms))
		goto out;
	/* A partition without a commit counts from its low watermark. */
	starts = rd_kafka_topic_partition_list_new(committed->cnt);
	for (int i = 0; i < committed->cnt; i++) {
		if (committed->elems[i].err)
			goto out;
		if (committed->elems[i].offset < 0)
			rd_kafka_topic_partition_list_add(starts, committed->elems[i].topic,
							  committed->elems[i].partition)
				->offset = RD_KAFKA_OFFSET_BEGINNING;
	}
	if ((err = list_offsets(probe->rk, ends, timeout_ms)) != SL_OK ||
	    (err = list_offsets(probe->rk, starts, timeout_ms)) != SL_OK)
		goto out;
	for (int i = 0; i < ends->cnt; i++) {
		const rd_kafka_topic_partition_t *e = &ends->elems[i];
		const rd_kafka_topic_partition_t *c =
			rd_kafka_topic_partition_list_find(committed, e->topic, e->partition);
		const rd_kafka_topic_partition_t *s =
			rd_kafka_topic_partition_list_find(starts, e->topic, e->partition);
		int64_t from = s ? s->offset : c ? c->offset : -1;

		if (from < 0) {
			err = SL_ERR_KAFKA;
			goto out;
		}
		if (e->offset > from)
			total += e->offset - from;
	}
	*lag = total;
out:
	rd_kafka_topic_partition_list_destroy(ends);
	if (committed)
		rd_kafka_topic_partition_list_destroy(committed);
	if (starts)
		rd_kafka_topic_partition_list_destroy(starts);
	return err;
}
