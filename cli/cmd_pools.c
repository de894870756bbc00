/* cmd_pools.c - `sluice pools`: the autoscaler's pools as it last wrote them to Redis. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_POOLS 10000

/* HMGET field order of a pool. */
enum { F_QUEUE, F_WORKERS, F_DESIRED, F_LAG, F_BUSY, F_BACKEND, F_MIN, F_MAX, F_UPDATED,
       F_REASON, NFIELDS };
#define POOL_FIELDS "queue workers desired lag busy backend min max updated_ms reason"

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *field(const redisReply *r, int i)
{
	return r && r->type == REDIS_REPLY_ARRAY && (size_t)i < r->elements &&
			       cli_reply_is_str(r->element[i])
		       ? r->element[i]->str
		       : NULL;
}

static json_t *pool_json(const char *name, const redisReply *h)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	out_json_set_str(o, "pool", name);
	out_json_set_str(o, "queue", field(h, F_QUEUE));
	out_json_set_int(o, "workers", field(h, F_WORKERS));
	out_json_set_int(o, "desired", field(h, F_DESIRED));
	out_json_set_int(o, "lag", field(h, F_LAG));
	out_json_set_int(o, "busy", field(h, F_BUSY));
	out_json_set_str(o, "backend", field(h, F_BACKEND));
	out_json_set_int(o, "min", field(h, F_MIN));
	out_json_set_int(o, "max", field(h, F_MAX));
	out_json_set_int(o, "updated_ms", field(h, F_UPDATED));
	out_json_set_str(o, "reason", field(h, F_REASON));
	return o;
}

int cmd_pools(struct cli *cli, int argc, char **argv)
{
	static const struct cli_opt opts[] = {{NULL, 0, 0, 0}};
	static const char *const headers[] = {"POOL", "QUEUE", "WORKERS", "DESIRED",
					      "LAG",  "BUSY",  "REASON"};
	struct cli_args a;
	struct sl_state *st = NULL;
	struct out_table *table = NULL;
	json_t *array = NULL;
	redisReply *set = NULL;
	redisContext *c;
	char **names = NULL;
	size_t n = 0, i;
	int id, rc = CLI_USAGE;

	cli_args_init(&a, argc, argv, "pools");
	while ((id = cli_args_next(&a, opts, cli)) != CLI_ARG_END) {
		if (id == CLI_ARG_ERROR)
			goto out;
		if (id == CLI_ARG_HELP) {
			help_command("pools", stdout);
			rc = CLI_OK;
			goto out;
		}
		rc = cli_usage_error("pools", "unexpected argument \"%s\"", a.arg);
		goto out;
	}
	if (!(st = cli_redis_connect(cli))) {
		rc = CLI_UNREACHABLE;
		goto out;
	}
	rc = CLI_UNREACHABLE;
	if (!(set = cli_redis_check(sl_state_command(st, "SMEMBERS sluice:pools"), "SMEMBERS")))
		goto out;
	if (set->type != REDIS_REPLY_ARRAY) {
		fprintf(stderr, "sluice: unexpected SMEMBERS reply\n");
		goto out;
	}
	rc = CLI_FAILED;
	if (!(names = calloc(set->elements + 1, sizeof(char *))))
		goto out;
	for (i = 0; i < set->elements && n < MAX_POOLS; i++)
		if (cli_reply_is_str(set->element[i]) && strlen(set->element[i]->str) <= CLI_NAME_MAX)
			names[n++] = set->element[i]->str;
	qsort(names, n, sizeof(char *), cmp_str);

	if (cli->json ? !(array = json_array()) : !(table = out_table_new(7, headers)))
		goto out;
	rc = CLI_UNREACHABLE;
	if (!(c = sl_state_redis(st)))
		goto out;
	for (i = 0; i < n; i++)
		if (redisAppendCommand(c, "HMGET sluice:pool:%s " POOL_FIELDS, names[i]) != REDIS_OK)
			goto conn_error;
	for (i = 0; i < n; i++) {
		redisReply *h = NULL;
		int bad;
		if (redisGetReply(c, (void **)&h) != REDIS_OK || !h)
			goto conn_error;
		if (array) {
			bad = json_array_append_new(array, pool_json(names[i], h));
		} else {
			const char *cells[7] = {names[i],           field(h, F_QUEUE),
						field(h, F_WORKERS), field(h, F_DESIRED),
						field(h, F_LAG),     field(h, F_BUSY),
						field(h, F_REASON)};
			bad = out_table_add(table, cells);
		}
		freeReplyObject(h);
		if (bad) {
			fprintf(stderr, "sluice: out of memory\n");
			rc = CLI_FAILED;
			goto out;
		}
	}
	if (array)
		rc = out_json(array);
	else if (n == 0) {
		fprintf(stderr, "no pools (is sluice-autoscaler running?)\n");
		rc = CLI_OK;
	} else {
		out_table_print(table, stdout);
		rc = CLI_OK;
	}
	goto out;
conn_error:
	fprintf(stderr, "sluice: Redis HMGET failed: connection lost\n");
out:
	free(names);
	if (set)
		freeReplyObject(set);
	out_table_destroy(table);
	json_decref(array);
	sl_state_destroy(st);
	return rc;
}
