/* config.c - fills a service's config struct from its table, the environment and argv. */
#include "sluice/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/util.h"

static void env_name(const char *name, char *buf, size_t cap)
{
	size_t i = 0, j = 0;
	const char *prefix = "SLUICE_";

	for (; prefix[j] && i + 1 < cap; j++)
		buf[i++] = prefix[j];
	for (j = 0; name[j] && i + 1 < cap; j++)
		buf[i++] = name[j] == '-' ? '_' : (char)toupper((unsigned char)name[j]);
	buf[i] = '\0';
}

static enum sl_err set_value(const struct sl_config_entry *e, void *out, const char *value,
			     const char *origin, char *errstr, size_t errlen)
{
	char *field = (char *)out + e->offset;
	char *end = NULL;
	long n;

	switch (e->type) {
	case SL_CFG_STR: {
		char **slot = (char **)(void *)field;
		char *copy = value ? strdup(value) : NULL;
		if (value && !copy)
			return SL_ERR_NOMEM;
		free(*slot);
		*slot = copy;
		return SL_OK;
	}
	case SL_CFG_INT:
		if (!value)
			value = "0";
		errno = 0;
		n = strtol(value, &end, 10);
		if (errno || end == value || *end) {
			snprintf(errstr, errlen, "%s: %s must be an integer, got \"%s\"", origin,
				 e->name, value);
			return SL_ERR_CONFIG;
		}
		*(long *)(void *)field = n;
		return SL_OK;
	case SL_CFG_BOOL:
		if (!value || !strcasecmp(value, "1") || !strcasecmp(value, "true") ||
		    !strcasecmp(value, "yes") || !strcasecmp(value, "on")) {
			*(int *)(void *)field = value ? 1 : 0;
			return SL_OK;
		}
		if (!strcasecmp(value, "0") || !strcasecmp(value, "false") ||
		    !strcasecmp(value, "no") || !strcasecmp(value, "off")) {
			*(int *)(void *)field = 0;
			return SL_OK;
		}
		snprintf(errstr, errlen, "%s: %s must be true or false, got \"%s\"", origin, e->name,
			 value);
		return SL_ERR_CONFIG;
	case SL_CFG_DURATION:
		if (!value)
			value = "0";
		if (sl_parse_duration_ms(value, &n) != SL_OK) {
			snprintf(errstr, errlen,
				 "%s: %s must be a duration like 500ms, 5s, 2m, 1h, got \"%s\"",
				 origin, e->name, value);
			return SL_ERR_CONFIG;
		}
		*(long *)(void *)field = n;
		return SL_OK;
	}
	return SL_ERR_CONFIG;
}

static const struct sl_config_entry *find(const struct sl_config_entry *table, const char *name,
					  size_t len)
{
	for (; table->name; table++)
		if (strlen(table->name) == len && !strncmp(table->name, name, len))
			return table;
	return NULL;
}

enum sl_err sl_config_load(const struct sl_config_entry *table, void *out, int argc, char **argv,
			   const char **positional, size_t max_pos, size_t *npos, char *errstr,
			   size_t errlen)
{
	const struct sl_config_entry *e;
	enum sl_err err = SL_OK;
	char env[128];
	int i;

	if (npos)
		*npos = 0;
	for (e = table; e->name; e++) {
		if (e->type == SL_CFG_BOOL && !e->def)
			*(int *)(void *)((char *)out + e->offset) = 0;
		else if ((err = set_value(e, out, e->def, "default", errstr, errlen)) != SL_OK)
			goto out;
		env_name(e->name, env, sizeof(env));
		const char *v = getenv(env);
		if (v && (err = set_value(e, out, v, env, errstr, errlen)) != SL_OK)
			goto out;
	}
	for (i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *eq;
		const char *value = NULL;

		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			sl_config_print(table, argv[0], stdout);
			err = SL_ERR_CANCELLED;
			goto out;
		}
		if (strncmp(arg, "--", 2) != 0) {
			if (!positional || !npos || *npos >= max_pos) {
				snprintf(errstr, errlen, "unexpected argument \"%s\"", arg);
				err = SL_ERR_CONFIG;
				goto out;
			}
			positional[(*npos)++] = arg;
			continue;
		}
		arg += 2;
		eq = strchr(arg, '=');
		e = find(table, arg, eq ? (size_t)(eq - arg) : strlen(arg));
		if (!e) {
			snprintf(errstr, errlen, "unknown option --%.*s (see --help)",
				 eq ? (int)(eq - arg) : (int)strlen(arg), arg);
			err = SL_ERR_CONFIG;
			goto out;
		}
		if (eq)
			value = eq + 1;
		else if (e->type != SL_CFG_BOOL) {
			if (i + 1 >= argc) {
				snprintf(errstr, errlen, "option --%s needs a value", e->name);
				err = SL_ERR_CONFIG;
				goto out;
			}
			value = argv[++i];
		}
		if ((err = set_value(e, out, value, "flag", errstr, errlen)) != SL_OK)
			goto out;
	}
out:
	return err;
}

void sl_config_free(const struct sl_config_entry *table, void *out)
{
	if (!out)
		return;
	for (; table->name; table++) {
		if (table->type == SL_CFG_STR) {
			char **slot = (char **)(void *)((char *)out + table->offset);
			free(*slot);
			*slot = NULL;
		}
	}
}

void sl_config_print(const struct sl_config_entry *table, const char *program, FILE *fp)
{
	static const char *types[] = {"string", "int", "bool", "duration"};
	char env[128];

	fprintf(fp, "usage: %s [--option value ...]\n\noptions (flag, environment variable, type, default):\n",
		program);
	for (; table->name; table++) {
		env_name(table->name, env, sizeof(env));
		fprintf(fp, "  --%-22s %-28s %-8s %s\n      %s\n", table->name, env,
			types[table->type], table->def ? table->def : "-", table->desc);
	}
}
