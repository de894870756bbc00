/* events.c - encodes a decision as a sluice.v1.ScaleDecision and hands it to the producer. */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

enum sl_err autoscaler_events_publish(struct sl_kafka_producer *p,
				      const struct autoscaler_pool_config *pc,
				      const struct autoscaler_decision *d, char **started,
				      size_t nstarted, char **draining, size_t ndraining,
				      int64_t at_ms)
{
	Sluice__V1__ScaleDecision sd = SLUICE__V1__SCALE_DECISION__INIT;
	char trace[48];
	uint8_t *buf = NULL;
	enum sl_err err;
	size_t len;

	sl_id_new("t-", trace, sizeof(trace));
	sd.schema_version = 1;
	sd.trace_id = trace;
	sd.pool = (char *)pc->name;
	sd.queue = (char *)pc->queue;
	sd.current_workers = d->current;
	sd.desired_workers = d->desired;
	sd.lag = d->lag;
	sd.running_leases = d->busy;
	sd.reason = (char *)d->reason;
	sd.at_ms = at_ms;
	sd.n_started = nstarted;
	sd.started = started;
	sd.n_draining = ndraining;
	sd.draining = draining;
	len = sluice__v1__scale_decision__get_packed_size(&sd);
	if (!(buf = malloc(len ? len : 1)))
		return SL_ERR_NOMEM;
	sluice__v1__scale_decision__pack(&sd, buf);
	err = sl_kafka_produce(p, SL_TOPIC_SCALER_EVENTS, pc->name, strlen(pc->name), buf, len,
			       NULL);
	free(buf);
	return err;
}
