/* events.h - publishes the autoscaler's decisions as ScaleDecision on sluice.autoscaler.events. */
#ifndef AUTOSCALER_EVENTS_H
#define AUTOSCALER_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "pools.h"
#include "sluice/err.h"
#include "sluice/kafka.h"

/* Queues one ScaleDecision of pool pc (key = pool name) with d's numbers and reason, the ids of
 * the workers started (started, nstarted) and asked to drain (draining, ndraining); every
 * argument is borrowed. Returns what sl_kafka_produce() returns, or SL_ERR_NOMEM. */
enum sl_err autoscaler_events_publish(struct sl_kafka_producer *p,
				      const struct autoscaler_pool_config *pc,
				      const struct autoscaler_decision *d, char **started,
				      size_t nstarted, char **draining, size_t ndraining,
				      int64_t at_ms);

#endif
