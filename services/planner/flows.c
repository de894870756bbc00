/* flows.c - the flows found in the flows directory, looked up by name. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "planner.h"
#include "sluice/log.h"

struct planner_flows {
	struct sl_flow **flows;
	size_t n;
};

static int is_yaml(const char *name)
{
	size_t len = strlen(name);

	if (name[0] == '.')
		return 0;
	return (len > 5 && !strcmp(name + len - 5, ".yaml")) ||
	       (len > 4 && !strcmp(name + len - 4, ".yml"));
}

struct planner_flows *planner_flows_load(const char *dir)
{
	struct planner_flows *f = calloc(1, sizeof(*f));
	struct dirent **names = NULL;
	int count;

	if (!f)
		return NULL;
	count = scandir(dir, &names, NULL, alphasort);
	if (count < 0) {
		SL_WARN("cannot read flows dir %s", dir);
		return f;
	}
	f->flows = calloc((size_t)count + 1, sizeof(*f->flows));
	for (int i = 0; i < count; i++) {
		char path[4096], err[512];
		struct sl_flow *flow;

		if (f->flows && is_yaml(names[i]->d_name)) {
			snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
			flow = sl_flow_load(path, err, sizeof(err));
			if (!flow) {
				SL_ERROR("skipping bad flow file: %s", err);
			} else if (planner_flows_get(f, flow->name)) {
				SL_ERROR("skipping %s: flow %s is defined twice", path, flow->name);
				sl_flow_destroy(flow);
			} else {
				f->flows[f->n++] = flow;
			}
		}
		free(names[i]);
	}
	free(names);
	SL_INFO("loaded %zu flows from %s", f->n, dir);
	return f;
}

const struct sl_flow *planner_flows_get(struct planner_flows *f, const char *name)
{
	for (size_t i = 0; f && i < f->n; i++)
		if (!strcmp(f->flows[i]->name, name))
			return f->flows[i];
	return NULL;
}

size_t planner_flows_count(struct planner_flows *f)
{
	return f ? f->n : 0;
}

const struct sl_flow *planner_flows_at(struct planner_flows *f, size_t i)
{
	return f && i < f->n ? f->flows[i] : NULL;
}

void planner_flows_destroy(struct planner_flows *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++)
		sl_flow_destroy(f->flows[i]);
	free(f->flows);
	free(f);
}
