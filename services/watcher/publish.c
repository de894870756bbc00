/* publish.c - RunRequests for new files, and their delivery tracking until the cursor is set. */
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"
#include "watcher.h"

enum pending_state {
	PENDING_FREE = 0,
	PENDING_IN_FLIGHT, /* produced, no delivery report yet */
	PENDING_DELIVERED, /* stored by the broker, cursor not written yet */
	PENDING_FAILED,    /* not stored: the slot is freed and the file retried by a rescan */
};

/* One request between produce and cursor record. The delivery report points at it, so a
 * slot is reused only after its report was served. */
struct watcher_pending {
	enum pending_state state;
	char flow[WATCHER_FLOW_NAME_MAX];
	char sha[WATCHER_SHA_HEX];
	char run_id[WATCHER_ID_MAX];
	char name[NAME_MAX + 1];
	char reason[160];
};

struct watcher_publisher {
	struct sl_kafka_producer *producer;
	struct watcher_cursor *cursor; /* borrowed */
	struct watcher_pending *slots; /* WATCHER_MAX_PENDING */
	size_t used;
};

/* @locality: the main thread, from sl_kafka_producer_poll()/flush(). */
static void on_delivery(void *opaque, enum sl_err err, const char *reason, void *ctx)
{
	struct watcher_pending *slot = opaque;

	if (!slot || slot->state != PENDING_IN_FLIGHT)
		return;
	slot->state = err == SL_OK ? PENDING_DELIVERED : PENDING_FAILED;
	if (err != SL_OK)
		sl_strlcpy(slot->reason, reason ? reason : sl_strerror(err), sizeof(slot->reason));
}

struct watcher_publisher *watcher_publisher_new(const char *brokers,
						struct watcher_cursor *cursor, char *errstr,
						size_t errlen)
{
	struct watcher_publisher *p = calloc(1, sizeof(*p));

	if (!p || !(p->slots = calloc(WATCHER_MAX_PENDING, sizeof(*p->slots)))) {
		snprintf(errstr, errlen, "out of memory");
		goto out;
	}
	p->cursor = cursor;
	/* A few ms of linger batches the requests of a directory scan. */
	p->producer = sl_kafka_producer_new(brokers, 5, on_delivery, p, errstr, errlen);
out:
	if (p && !p->producer) {
		free(p->slots);
		free(p);
		p = NULL;
	}
	return p;
}

static struct watcher_pending *find_pending(struct watcher_publisher *p, const char *flow,
					    const char *sha)
{
	if (!p->used)
		return NULL;
	for (size_t i = 0; i < WATCHER_MAX_PENDING; i++) {
		struct watcher_pending *s = &p->slots[i];
		if (s->state != PENDING_FREE && !strcmp(s->sha, sha) && !strcmp(s->flow, flow))
			return s;
	}
	return NULL;
}

static struct watcher_pending *free_slot(struct watcher_publisher *p)
{
	if (p->used >= WATCHER_MAX_PENDING)
		return NULL;
	for (size_t i = 0; i < WATCHER_MAX_PENDING; i++)
		if (p->slots[i].state == PENDING_FREE)
			return &p->slots[i];
	return NULL;
}

/* JSON text of a string value ("\"/x/y\""). Caller frees. NULL when s is not UTF-8. */
static char *json_text_string(const char *s)
{
	json_t *v = json_string(s);
	char *text = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;

	json_decref(v);
	return text;
}

/* Packs the RunRequest of file for flow into *buf (caller frees) and *len. */
static enum sl_err build_request(const char *flow, const struct watcher_file *file,
				 const char *run_id, uint8_t **buf, size_t *len)
{
	Sluice__V1__RunRequest req = SLUICE__V1__RUN_REQUEST__INIT;
	Sluice__V1__Param params[4];
	Sluice__V1__Param *pp[4];
	char trace_id[WATCHER_ID_MAX];
	char idem[WATCHER_FLOW_NAME_MAX + WATCHER_SHA_HEX + 16];
	char size_text[32];
	char *path_json = json_text_string(file->path);
	char *name_json = json_text_string(file->name);
	char *sha_json = json_text_string(file->sha);
	enum sl_err err = SL_ERR_INVALID;

	*buf = NULL;
	if (!path_json || !name_json || !sha_json)
		goto out;
	sl_id_new("t-", trace_id, sizeof(trace_id));
	snprintf(idem, sizeof(idem), "%s:sha256:%s", flow, file->sha);
	snprintf(size_text, sizeof(size_text), "%lld", (long long)file->size);
	const char *names[4] = {"path", "size", "sha256", "name"};
	char *values[4] = {path_json, size_text, sha_json, name_json};
	for (int i = 0; i < 4; i++) {
		sluice__v1__param__init(&params[i]);
		params[i].name = (char *)names[i];
		params[i].json_value = values[i];
		pp[i] = &params[i];
	}
	req.schema_version = 1;
	req.trace_id = trace_id;
	req.run_id = (char *)run_id;
	req.flow = (char *)flow;
	req.n_params = 4;
	req.params = pp;
	req.idempotency_key = idem;
	req.intent = SLUICE__V1__INTENT__INTENT_NORMAL;
	req.requested_by = "watcher";
	req.requested_at_ms = sl_now_ms();
	*len = sluice__v1__run_request__get_packed_size(&req);
	if (*len > SL_KAFKA_MAX_MESSAGE) {
		err = SL_ERR_TOO_BIG;
		goto out;
	}
	if (!(*buf = malloc(*len ? *len : 1))) {
		err = SL_ERR_NOMEM;
		goto out;
	}
	sluice__v1__run_request__pack(&req, *buf);
	err = SL_OK;
out:
	free(path_json);
	free(name_json);
	free(sha_json);
	return err;
}

enum sl_err watcher_publish(struct watcher_publisher *p, const char *flow,
			    const struct watcher_file *file, enum watcher_outcome *outcome,
			    char *run, size_t cap)
{
	struct watcher_pending *slot;
	char run_id[WATCHER_ID_MAX];
	uint8_t *buf = NULL;
	size_t len = 0;
	enum sl_err err;

	if ((slot = find_pending(p, flow, file->sha))) {
		*outcome = WATCHER_IN_FLIGHT;
		sl_strlcpy(run, slot->run_id, cap);
		return SL_OK;
	}
	err = watcher_cursor_lookup(p->cursor, flow, file->sha, run, cap);
	if (err == SL_OK) {
		*outcome = WATCHER_RECORDED;
		return SL_OK;
	}
	if (err != SL_ERR_NOT_FOUND)
		return err;
	if (!(slot = free_slot(p))) {
		SL_DEBUG("%d run requests in flight: %s waits", WATCHER_MAX_PENDING, file->path);
		return SL_ERR_BUSY;
	}
	sl_id_new("r-", run_id, sizeof(run_id));
	if ((err = build_request(flow, file, run_id, &buf, &len)) != SL_OK) {
		SL_ERROR("cannot build the run request of %s for flow %s: %s", file->path, flow,
			 sl_strerror(err));
		goto out;
	}
	memset(slot, 0, sizeof(*slot));
	sl_strlcpy(slot->flow, flow, sizeof(slot->flow));
	sl_strlcpy(slot->sha, file->sha, sizeof(slot->sha));
	sl_strlcpy(slot->run_id, run_id, sizeof(slot->run_id));
	sl_strlcpy(slot->name, file->name, sizeof(slot->name));
	slot->state = PENDING_IN_FLIGHT;
	err = sl_kafka_produce(p->producer, SL_TOPIC_RUNS_REQUESTED, run_id, strlen(run_id), buf,
			       len, slot);
	if (err != SL_OK) {
		slot->state = PENDING_FREE;
		goto out;
	}
	p->used++;
	*outcome = WATCHER_PUBLISHED;
	sl_strlcpy(run, run_id, cap);
	SL_INFO("run requested: flow %s run %s file %s (%lld bytes, sha256 %s)", flow, run_id,
		file->path, (long long)file->size, file->sha);
out:
	free(buf);
	/* A request that cannot be built never will be: report it as handled. */
	if (err == SL_ERR_INVALID || err == SL_ERR_TOO_BIG) {
		*outcome = WATCHER_DROPPED;
		return SL_OK;
	}
	return err;
}

int watcher_publisher_service(struct watcher_publisher *p, int timeout_ms)
{
	int retry = 0, recorded = 0;

	sl_kafka_producer_poll(p->producer, timeout_ms);
	if (!p->used)
		return 0;
	for (size_t i = 0; i < WATCHER_MAX_PENDING; i++) {
		struct watcher_pending *s = &p->slots[i];

		if (s->state == PENDING_FAILED) {
			SL_WARN("run request %s (flow %s, %s) not delivered: %s; retried by the "
				"next scan",
				s->run_id, s->flow, s->name, s->reason);
			s->state = PENDING_FREE;
			p->used--;
			retry = 1;
		} else if (s->state == PENDING_DELIVERED) {
			/* fault suite (tests/faults): die after delivery, before the cursor */
			if (getenv("SLUICE_FAULT_CRASH_BEFORE_CURSOR"))
				_exit(137);
			if (watcher_cursor_record(p->cursor, s->flow, s->sha, s->run_id) !=
			    SL_OK) {
				retry = 1; /* kept: recorded on a later call */
				continue;
			}
			SL_DEBUG("cursor set: flow %s sha256 %s -> run %s", s->flow, s->sha,
				 s->run_id);
			s->state = PENDING_FREE;
			p->used--;
			recorded++;
		}
	}
	return retry ? -1 : recorded;
}

size_t watcher_publisher_pending(const struct watcher_publisher *p)
{
	return p->used;
}

void watcher_publisher_destroy(struct watcher_publisher *p, int timeout_ms)
{
	if (!p)
		return;
	if (p->producer) {
		if (sl_kafka_producer_flush(p->producer, timeout_ms) != SL_OK)
			SL_WARN("some run requests were not delivered before shutdown");
		watcher_publisher_service(p, 0);
		if (p->used)
			SL_WARN("%zu run request(s) not recorded in the cursors; a restart "
				"rescans them and the planner dedupes on the idempotency key",
				p->used);
	}
	sl_kafka_producer_destroy(p->producer);
	free(p->slots);
	free(p);
}
