/* cmd_topics.c - `sluice topics create`: make the Kafka topics the services talk over. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sluice/kafka.h"
#include "sluice/util.h"

#define MAX_QUEUES 64
#define MAX_PARTITIONS 10000

enum { OPT_PARTITIONS = 1, OPT_QUEUE };

static const char *const base_topics[] = {
	SL_TOPIC_RUNS_REQUESTED,
	SL_TOPIC_TASKS_PREFIX "default",
	SL_TOPIC_TASKS_PREFIX "default.high",
	SL_TOPIC_TASKS_PREFIX "default.low",
	SL_TOPIC_RESULTS,
	SL_TOPIC_RUN_EVENTS,
	SL_TOPIC_CONTROL,
	SL_TOPIC_SCALER_EVENTS,
	SL_TOPIC_DEADLETTER,
};
/* A queue's topic and its two priority bands (docs/worker.md). */
static const char *const band_suffixes[] = {"", ".high", ".low"};
#define NBANDS (sizeof(band_suffixes) / sizeof(band_suffixes[0]))
#define NBASE (sizeof(base_topics) / sizeof(base_topics[0]))

/* A queue name becomes part of a topic name: Kafka allows [a-zA-Z0-9._-]; names ending in
 * .high or .low are the priority bands of another queue. */
static int valid_queue(const char *q)
{
	size_t n = strlen(q);

	if (n == 0 || n > 200)
		return 0;
	if (sl_queue_is_band(q))
		return 0;
	return strspn(q, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

int cmd_topics(struct cli *cli, int argc, char **argv)
{
	static const struct cli_opt opts[] = {
		{"partitions", 0, 1, OPT_PARTITIONS},
		{"queue", 'q', 1, OPT_QUEUE},
		{NULL, 0, 0, 0},
	};
	const char *topics[NBASE + MAX_QUEUES * NBANDS];
	char *owned[MAX_QUEUES * NBANDS];
	size_t ntopics = 0, nowned = 0, i;
	long partitions = 8;
	struct cli_args a;
	char errstr[512] = "";
	int id, have_verb = 0, rc = CLI_USAGE;

	for (i = 0; i < NBASE; i++)
		topics[ntopics++] = base_topics[i];
	cli_args_init(&a, argc, argv, "topics");
	while ((id = cli_args_next(&a, opts, cli)) != CLI_ARG_END) {
		switch (id) {
		case CLI_ARG_ERROR:
			goto out;
		case CLI_ARG_HELP:
			help_command("topics", stdout);
			rc = CLI_OK;
			goto out;
		case CLI_ARG_WORD:
			if (have_verb || strcmp(a.arg, "create")) {
				rc = cli_usage_error("topics", "unexpected argument \"%s\"", a.arg);
				goto out;
			}
			have_verb = 1;
			break;
		case OPT_PARTITIONS:
			if (cli_parse_int("topics", "partitions", a.arg, 1, MAX_PARTITIONS,
					  &partitions) < 0)
				goto out;
			break;
		case OPT_QUEUE:
			if (!valid_queue(a.arg)) {
				rc = cli_usage_error("topics",
						     "bad queue name \"%s\" ([a-zA-Z0-9._-], not "
						     "ending in .high or .low)",
						     a.arg);
				goto out;
			}
			for (i = 0; i < ntopics; i++)
				if (!strncmp(topics[i], SL_TOPIC_TASKS_PREFIX,
					     strlen(SL_TOPIC_TASKS_PREFIX)) &&
				    !strcmp(topics[i] + strlen(SL_TOPIC_TASKS_PREFIX), a.arg))
					break;
			if (i < ntopics)
				break; /* already listed */
			if (nowned == MAX_QUEUES * NBANDS) {
				rc = cli_usage_error("topics", "at most %d queues", MAX_QUEUES);
				goto out;
			}
			for (size_t b = 0; b < NBANDS; b++) {
				size_t len = strlen(SL_TOPIC_TASKS_PREFIX) + strlen(a.arg) +
					     strlen(band_suffixes[b]) + 1;

				if (!(owned[nowned] = malloc(len))) {
					rc = CLI_FAILED;
					goto out;
				}
				snprintf(owned[nowned], len, "%s%s%s", SL_TOPIC_TASKS_PREFIX, a.arg,
					 band_suffixes[b]);
				topics[ntopics++] = owned[nowned++];
			}
			break;
		}
	}
	if (!have_verb) {
		rc = cli_usage_error("topics", "what to do? (sluice topics create)");
		goto out;
	}
	if (sl_kafka_topics_ensure(cli->brokers, topics, ntopics, (int)partitions, errstr,
				   sizeof(errstr)) != SL_OK) {
		fprintf(stderr, "sluice: cannot create topics on %s: %s\n", cli->brokers,
			errstr[0] ? errstr : "failed");
		rc = CLI_UNREACHABLE;
		goto out;
	}
	if (cli->json) {
		json_t *o = json_object(), *arr = json_array();
		for (i = 0; arr && i < ntopics; i++)
			json_array_append_new(arr, json_string(topics[i]));
		if (o && arr) {
			json_object_set(o, "topics", arr);
			json_object_set_new(o, "partitions", json_integer(partitions));
		}
		rc = out_json(o && arr ? o : NULL);
		json_decref(arr);
		json_decref(o);
	} else {
		for (i = 0; i < ntopics; i++)
			printf("%s\n", topics[i]);
		fprintf(stderr, "%zu topics ready on %s (new ones with %ld partitions)\n", ntopics,
			cli->brokers, partitions);
		rc = CLI_OK;
	}
out:
	for (i = 0; i < nowned; i++)
		free(owned[i]);
	return rc;
}
