/* events.c - publishes RunEvents on sluice.runs.events for the CLI, dashboards and audits. */
#include <stdlib.h>
#include <string.h>

#include "planner.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

static void publish(struct planner *p, Sluice__V1__RunEvent *ev)
{
	size_t len = sluice__v1__run_event__get_packed_size(ev);
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf)
		return;
	sluice__v1__run_event__pack(ev, buf);
	sl_kafka_produce(p->events, SL_TOPIC_RUN_EVENTS, ev->run_id, strlen(ev->run_id), buf, len,
			 NULL);
	free(buf);
}

void planner_event_run(struct planner *p, const char *run, const char *flow, const char *state,
		       const char *message)
{
	Sluice__V1__RunEvent ev = SLUICE__V1__RUN_EVENT__INIT;

	ev.schema_version = 1;
	ev.run_id = (char *)run;
	ev.flow = (char *)(flow ? flow : "");
	ev.kind = SLUICE__V1__RUN_EVENT_KIND__RUN_EVENT_RUN_STATE;
	ev.state = (char *)state;
	ev.map_index = -1;
	ev.at_ms = sl_now_ms();
	ev.message = (char *)(message ? message : "");
	publish(p, &ev);
}

void planner_event_task(struct planner *p, const char *run, const char *flow, const char *task,
			int idx, unsigned attempt, const char *state, const char *message)
{
	Sluice__V1__RunEvent ev = SLUICE__V1__RUN_EVENT__INIT;

	ev.schema_version = 1;
	ev.run_id = (char *)run;
	ev.flow = (char *)(flow ? flow : "");
	ev.kind = SLUICE__V1__RUN_EVENT_KIND__RUN_EVENT_TASK_STATE;
	ev.state = (char *)state;
	ev.task = (char *)task;
	ev.map_index = idx;
	ev.attempt = attempt;
	ev.at_ms = sl_now_ms();
	ev.message = (char *)(message ? message : "");
	publish(p, &ev);
}
