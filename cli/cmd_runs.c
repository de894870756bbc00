/* cmd_runs.c - `sluice runs`: recent runs from the sluice:runs index, newest first. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "sluice/util.h"

#define PAGE 200 /* run ids read per ZREVRANGE; their hashes are fetched in one pipeline */
#define MAX_LIMIT 1000000

enum { OPT_LIMIT = 1, OPT_FLOW, OPT_STATE };

/* HMGET field order of a run. */
enum { F_FLOW, F_STATE, F_DONE, F_TOTAL, F_CREATED, F_ENDED, NFIELDS };
#define RUN_FIELDS "flow state tasks_done tasks_total created_ms ended_ms"

struct runs {
	long limit; /* 0: all */
	const char *flow;
	const char *state;
	size_t shown;
	struct out_table *table;
	json_t *array;
};

static const char *field(const redisReply *r, int i)
{
	return r && r->type == REDIS_REPLY_ARRAY && (size_t)i < r->elements &&
			       cli_reply_is_str(r->element[i])
		       ? r->element[i]->str
		       : NULL;
}

/* Adds one run to the output when it passes the filters. Returns -1 on allocation
 * failure. */
static int add_run(struct runs *rs, const char *id, const char *score, const redisReply *h,
		   int64_t now)
{
	const char *flow = field(h, F_FLOW), *state = field(h, F_STATE);
	int64_t created = out_int(field(h, F_CREATED), out_int(score, 0));
	int64_t ended = out_int(field(h, F_ENDED), 0);
	char tasks[64], ctime_[32], dur[40], ms[24];

	if (rs->flow && (!flow || strcmp(flow, rs->flow)))
		return 0;
	if (rs->state && (!state || strcasecmp(state, rs->state)))
		return 0;
	rs->shown++;
	if (rs->array) {
		json_t *o = json_object();
		if (!o)
			return -1;
		out_json_set_str(o, "id", id);
		out_json_set_str(o, "flow", flow);
		out_json_set_str(o, "state", state);
		out_json_set_int(o, "tasks_done", field(h, F_DONE));
		out_json_set_int(o, "tasks_total", field(h, F_TOTAL));
		snprintf(ms, sizeof(ms), "%lld", (long long)created);
		out_json_set_int(o, "created_ms", created > 0 ? ms : NULL);
		out_json_set_int(o, "ended_ms", field(h, F_ENDED));
		return json_array_append_new(rs->array, o) ? -1 : 0;
	} else {
		const char *cells[6];
		snprintf(tasks, sizeof(tasks), "%s/%s", field(h, F_DONE) ? field(h, F_DONE) : "0",
			 field(h, F_TOTAL) ? field(h, F_TOTAL) : "0");
		out_time(created, ctime_, sizeof(ctime_));
		if (created > 0 && ended > 0)
			out_duration(ended - created, dur, sizeof(dur));
		else if (created > 0 && state && strcmp(state, "DUPLICATE")) {
			out_duration(now - created, dur, sizeof(dur));
			strncat(dur, "+", sizeof(dur) - strlen(dur) - 1); /* still going */
		} else
			snprintf(dur, sizeof(dur), "-");
		cells[0] = id;
		cells[1] = flow;
		cells[2] = state ? state : "(expired)";
		cells[3] = tasks;
		cells[4] = ctime_;
		cells[5] = dur;
		return out_table_add(rs->table, cells);
	}
}

/* Reads the index page by page until limit runs passed the filters. */
static int collect(struct sl_state *st, struct runs *rs)
{
	int64_t now = sl_now_ms();
	long start = 0;
	redisReply *ids = NULL;
	int rc = CLI_UNREACHABLE;

	for (;;) {
		long page = PAGE;
		redisContext *c;
		size_t i, n;

		if (!rs->flow && !rs->state && rs->limit > 0)
			page = rs->limit - (long)rs->shown; /* no filter: read just what is shown */
		if (page > PAGE)
			page = PAGE;
		ids = cli_redis_check(sl_state_command(st, "ZREVRANGE sluice:runs %ld %ld WITHSCORES",
						       start, start + page - 1),
				      "ZREVRANGE");
		if (!ids)
			goto out;
		if (ids->type != REDIS_REPLY_ARRAY) {
			fprintf(stderr, "sluice: unexpected ZREVRANGE reply\n");
			goto out;
		}
		/* RESP2 gives id, score, id, score ...; RESP3 gives [id, score] pairs. */
		n = ids->elements && ids->element[0]->type == REDIS_REPLY_ARRAY ? ids->elements
									      : ids->elements / 2;
		if (n == 0)
			break;
		if (!(c = sl_state_redis(st)))
			goto conn_error;
		for (i = 0; i < n; i++) {
			const redisReply *idr = ids->element[0]->type == REDIS_REPLY_ARRAY
							? ids->element[i]->element[0]
							: ids->element[2 * i];
			char key[CLI_KEY_MAX];
			if (!cli_reply_is_str(idr) || strlen(idr->str) > CLI_NAME_MAX ||
			    cli_run_key(key, sizeof(key), idr->str, "run") < 0)
				snprintf(key, sizeof(key), "sluice:{}:run"); /* keeps replies in step */
			if (redisAppendCommand(c, "HMGET %s " RUN_FIELDS, key) != REDIS_OK)
				goto conn_error;
		}
		for (i = 0; i < n; i++) {
			const redisReply *idr, *scr;
			redisReply *h = NULL;
			if (ids->element[0]->type == REDIS_REPLY_ARRAY) {
				idr = ids->element[i]->element[0];
				scr = ids->element[i]->element[1];
			} else {
				idr = ids->element[2 * i];
				scr = ids->element[2 * i + 1];
			}
			if (redisGetReply(c, (void **)&h) != REDIS_OK || !h)
				goto conn_error;
			if (cli_reply_is_str(idr) &&
			    (rs->limit == 0 || (long)rs->shown < rs->limit) &&
			    add_run(rs, idr->str, cli_reply_is_str(scr) ? scr->str : NULL, h, now) < 0) {
				freeReplyObject(h);
				fprintf(stderr, "sluice: out of memory\n");
				rc = CLI_FAILED;
				goto out;
			}
			freeReplyObject(h);
		}
		freeReplyObject(ids);
		ids = NULL;
		if ((long)n < page || (rs->limit > 0 && (long)rs->shown >= rs->limit))
			break;
		start += page;
	}
	rc = CLI_OK;
	goto out;
conn_error:
	fprintf(stderr, "sluice: Redis HMGET failed: connection lost\n");
out:
	if (ids)
		freeReplyObject(ids);
	return rc;
}

int cmd_runs(struct cli *cli, int argc, char **argv)
{
	static const struct cli_opt opts[] = {
		{"limit", 'n', 1, OPT_LIMIT},
		{"flow", 0, 1, OPT_FLOW},
		{"state", 0, 1, OPT_STATE},
		{NULL, 0, 0, 0},
	};
	static const char *const headers[] = {"RUN", "FLOW", "STATE", "TASKS", "CREATED",
					      "DURATION"};
	struct runs rs = {.limit = 20};
	struct cli_args a;
	struct sl_state *st = NULL;
	int id, rc = CLI_USAGE;

	cli_args_init(&a, argc, argv, "runs");
	while ((id = cli_args_next(&a, opts, cli)) != CLI_ARG_END) {
		switch (id) {
		case CLI_ARG_ERROR:
			goto out;
		case CLI_ARG_HELP:
			help_command("runs", stdout);
			rc = CLI_OK;
			goto out;
		case CLI_ARG_WORD:
			rc = cli_usage_error("runs", "unexpected argument \"%s\"", a.arg);
			goto out;
		case OPT_LIMIT:
			if (cli_parse_int("runs", "limit", a.arg, 0, MAX_LIMIT, &rs.limit) < 0)
				goto out;
			break;
		case OPT_FLOW:
			rs.flow = a.arg;
			break;
		case OPT_STATE:
			rs.state = a.arg;
			break;
		}
	}
	if (cli->json)
		rs.array = json_array();
	else
		rs.table = out_table_new(6, headers);
	if (!rs.array && !rs.table) {
		rc = CLI_FAILED;
		goto out;
	}
	if (!(st = cli_redis_connect(cli))) {
		rc = CLI_UNREACHABLE;
		goto out;
	}
	if ((rc = collect(st, &rs)) != CLI_OK)
		goto out;
	if (rs.array)
		rc = out_json(rs.array);
	else if (rs.shown == 0)
		fprintf(stderr, "no runs%s\n", rs.flow || rs.state ? " match" : " yet");
	else
		out_table_print(rs.table, stdout);
out:
	out_table_destroy(rs.table);
	json_decref(rs.array);
	sl_state_destroy(st);
	return rc;
}
