/* main.c - the sluice command: global options, then hands the rest to one subcommand. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sluice/log.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "unknown"
#endif

struct command {
	const char *name;
	int (*run)(struct cli *cli, int argc, char **argv);
};

static const struct command commands[] = {
	{"submit", cmd_submit}, {"status", cmd_status}, {"watch", cmd_watch},
	{"runs", cmd_runs},
	{"cancel", cmd_cancel}, {"pools", cmd_pools},   {"flows", cmd_flows},
	{"topics", cmd_topics}, {NULL, NULL},
};

enum { OPT_VERSION = 1 };

static const struct cli_opt main_opts[] = {
	{"version", 'V', 0, OPT_VERSION},
	{NULL, 0, 0, 0},
};

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && *v ? v : def;
}

static int run_help(int argc, char **argv)
{
	if (argc == 0) {
		help_main(stdout);
		return CLI_OK;
	}
	if (help_command(argv[0], stdout) < 0)
		return cli_usage_error("", "no command \"%s\"", argv[0]);
	return CLI_OK;
}

int main(int argc, char **argv)
{
	struct cli cli = {0};
	struct cli_args a;
	const struct command *c;
	const char *level = getenv("SLUICE_LOG_LEVEL");
	int id;

	sl_log_init("cli", level && *level ? sl_log_level_parse(level) : SL_LOG_WARN);
	cli.brokers = env_or("SLUICE_KAFKA_BROKERS", "127.0.0.1:9092");
	cli.redis_url = env_or("SLUICE_REDIS_URL", "redis://127.0.0.1:6379/0");

	cli_args_init(&a, argc - 1, argv + 1, "");
	for (;;) {
		id = cli_args_next(&a, main_opts, &cli);
		if (id == CLI_ARG_ERROR)
			return CLI_USAGE;
		if (id == CLI_ARG_HELP) {
			help_main(stdout);
			return CLI_OK;
		}
		if (id == OPT_VERSION) {
			printf("sluice %s\n", SLUICE_VERSION);
			return CLI_OK;
		}
		if (id == CLI_ARG_END) {
			help_main(stderr);
			return CLI_USAGE;
		}
		if (id == CLI_ARG_WORD)
			break;
	}
	/* a.i is just past the command word. */
	if (!strcmp(a.arg, "help"))
		return run_help(a.argc - a.i, a.argv + a.i);
	if (!strcmp(a.arg, "version")) {
		printf("sluice %s\n", SLUICE_VERSION);
		return CLI_OK;
	}
	for (c = commands; c->name; c++)
		if (!strcmp(c->name, a.arg))
			return c->run(&cli, a.argc - a.i, a.argv + a.i);
	return cli_usage_error("", "no command \"%s\"", a.arg);
}
