/* config.h - one config table per service: env vars and flags fill a struct, unknown keys are errors. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "sluice/err.h"

enum sl_config_type {
	SL_CFG_STR,      /* char *, caller frees with sl_config_free() */
	SL_CFG_INT,      /* long */
	SL_CFG_BOOL,     /* int: 1/0, true/false, yes/no */
	SL_CFG_DURATION, /* long milliseconds: "250ms", "5s", "2m", "1h", bare number = ms */
};

/* One setting. name is the flag without "--" (kebab-case); its env var is SLUICE_ + the name
 * upper-cased with '-' turned into '_'. def may be NULL (no default: string NULL, number 0). */
struct sl_config_entry {
	const char *name;
	enum sl_config_type type;
	const char *def;
	size_t offset;
	const char *desc;
};

/* Fills out from defaults, then the environment, then argv (--name value or --name=value;
 * a bare --name sets a bool). Stops at the table end marked by name == NULL.
 * argv[0] is skipped; "--help" prints the table to stdout and returns SL_ERR_CANCELLED.
 * Non-flag arguments are collected in positional (borrowed from argv), at most max_pos
 * of them; pass NULL/0 to reject any. On error fills errstr, returns the error, and out
 * may be half-filled: release it with sl_config_free(). */
enum sl_err sl_config_load(const struct sl_config_entry *table, void *out, int argc, char **argv,
			   const char **positional, size_t max_pos, size_t *npos, char *errstr,
			   size_t errlen);

/* Frees the strings sl_config_load() allocated in out. Accepts a zeroed struct. */
void sl_config_free(const struct sl_config_entry *table, void *out);

/* Prints the table (flag, env var, default, description) for --help and for docs. */
void sl_config_print(const struct sl_config_entry *table, const char *program, FILE *fp);

#endif
