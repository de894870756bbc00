/* args.c - option parsing shared by the subcommands; global options are accepted anywhere. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { GLOBAL_BROKERS = 1, GLOBAL_REDIS, GLOBAL_JSON };

static const struct cli_opt global_opts[] = {
	{"brokers", 0, 1, GLOBAL_BROKERS},
	{"redis", 0, 1, GLOBAL_REDIS},
	{"json", 0, 0, GLOBAL_JSON},
	{NULL, 0, 0, 0},
};

void cli_args_init(struct cli_args *a, int argc, char **argv, const char *cmd)
{
	memset(a, 0, sizeof(*a));
	a->argc = argc;
	a->argv = argv;
	a->cmd = cmd;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sluice%s%s: ", *cmd ? " " : "", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (*cmd)
		fprintf(stderr, "\n(see `sluice help %s`)\n", cmd);
	else
		fprintf(stderr, "\n(see `sluice --help`)\n");
	return CLI_USAGE;
}

static const struct cli_opt *find_long(const struct cli_opt *opts, const char *name, size_t len)
{
	for (; opts && opts->name; opts++)
		if (strlen(opts->name) == len && !strncmp(opts->name, name, len))
			return opts;
	return NULL;
}

static const struct cli_opt *find_short(const struct cli_opt *opts, char c)
{
	for (; opts && opts->name; opts++)
		if (opts->shortname && opts->shortname == c)
			return opts;
	return NULL;
}

static void apply_global(struct cli *cli, int id, const char *value)
{
	switch (id) {
	case GLOBAL_BROKERS:
		cli->brokers = value;
		break;
	case GLOBAL_REDIS:
		cli->redis_url = value;
		break;
	case GLOBAL_JSON:
		cli->json = 1;
		break;
	}
}

int cli_args_next(struct cli_args *a, const struct cli_opt *opts, struct cli *cli)
{
	for (;;) {
		const struct cli_opt *o;
		const char *w, *eq, *value = NULL;
		int global;

		if (a->i >= a->argc)
			return CLI_ARG_END;
		w = a->argv[a->i++];
		if (a->no_more_opts || w[0] != '-' || !w[1]) {
			a->arg = w; /* "-" alone is a word (stdin, by convention) */
			return CLI_ARG_WORD;
		}
		if (!strcmp(w, "--")) {
			a->no_more_opts = 1;
			continue;
		}
		if (!strcmp(w, "--help") || !strcmp(w, "-h"))
			return CLI_ARG_HELP;
		if (w[1] == '-') {
			const char *name = w + 2;
			size_t len;

			eq = strchr(name, '=');
			len = eq ? (size_t)(eq - name) : strlen(name);
			global = 0;
			if (!(o = find_long(opts, name, len))) {
				o = find_long(global_opts, name, len);
				global = 1;
			}
			if (!o) {
				cli_usage_error(a->cmd, "unknown option --%.*s", (int)len, name);
				return CLI_ARG_ERROR;
			}
			if (o->has_arg) {
				if (eq)
					value = eq + 1;
				else if (a->i < a->argc)
					value = a->argv[a->i++];
				else {
					cli_usage_error(a->cmd, "option --%s needs a value", o->name);
					return CLI_ARG_ERROR;
				}
			} else if (eq) {
				cli_usage_error(a->cmd, "option --%s takes no value", o->name);
				return CLI_ARG_ERROR;
			}
		} else {
			/* Short options: "-p k=v" or "-pk=v"; no bundling, none of ours need it. */
			global = 0;
			if (!(o = find_short(opts, w[1]))) {
				cli_usage_error(a->cmd, "unknown option %s", w);
				return CLI_ARG_ERROR;
			}
			if (o->has_arg) {
				if (w[2])
					value = w + 2;
				else if (a->i < a->argc)
					value = a->argv[a->i++];
				else {
					cli_usage_error(a->cmd, "option -%c needs a value", w[1]);
					return CLI_ARG_ERROR;
				}
			} else if (w[2]) {
				cli_usage_error(a->cmd, "unknown option %s", w);
				return CLI_ARG_ERROR;
			}
		}
		a->arg = value;
		if (!global)
			return o->id;
		apply_global(cli, o->id, value);
	}
}

int cli_parse_int(const char *cmd, const char *name, const char *text, long min, long max,
		  long *out)
{
	char *end = NULL;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < min || v > max) {
		cli_usage_error(cmd, "--%s must be a whole number from %ld to %ld, got \"%s\"", name,
				min, max, text);
		return -1;
	}
	*out = v;
	return 0;
}
