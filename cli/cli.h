/* cli.h - what the sluice command's files share: global options, exit codes, helpers. */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sluice/state.h"

/* Exit codes of the sluice command; documented in `sluice --help` and docs/cli.md.
 * Only ever appended, like enum sl_err. */
enum cli_exit {
	CLI_OK = 0,          /* done; with --wait: the run SUCCEEDED */
	CLI_FAILED = 1,      /* the run FAILED (or an unexpected internal error) */
	CLI_USAGE = 2,       /* bad command line, invalid flow file, unknown run */
	CLI_CANCELLED = 3,   /* the run was CANCELLED */
	CLI_REJECTED = 4,    /* the planner REJECTED the run request */
	CLI_TIMEOUT = 5,     /* gave up waiting (--timeout, or no planner accepted the run) */
	CLI_UNREACHABLE = 6, /* cannot reach Kafka or Redis */
};

/* Global options, valid before or after the subcommand. Strings are borrowed from the
 * environment or argv. */
struct cli {
	const char *brokers;
	const char *redis_url;
	int json;
};

/* Longest run id, task name, flow name ... the CLI accepts from a user or from Redis. */
#define CLI_NAME_MAX 200
/* Room for a Redis key built from names of at most CLI_NAME_MAX bytes. */
#define CLI_KEY_MAX 512

/* ---- argument parsing (args.c) ---- */

struct cli_opt {
	const char *name; /* long name without "--" */
	char shortname;   /* 0 for none */
	int has_arg;
	int id; /* > 0, returned by cli_args_next() */
};

struct cli_args {
	int argc;
	char **argv;
	int i;
	int no_more_opts; /* after "--" */
	const char *cmd;  /* for messages: "submit", "flows validate" */
	const char *arg;  /* the option's value, or the positional word */
};

enum {
	CLI_ARG_END = -1,   /* no more arguments */
	CLI_ARG_ERROR = -2, /* bad option: a message was printed */
	CLI_ARG_HELP = -3,  /* --help / -h */
	CLI_ARG_WORD = 0,   /* a positional argument, in a->arg */
};

/* Starts parsing argv[0..argc) (the words after the subcommand); cmd is borrowed. */
void cli_args_init(struct cli_args *a, int argc, char **argv, const char *cmd);

/* Returns the next option's id (value in a->arg), CLI_ARG_WORD, CLI_ARG_HELP, CLI_ARG_END or
 * CLI_ARG_ERROR. opts ends with a zeroed entry. The global options (--brokers, --redis,
 * --json) are accepted everywhere and stored into cli without being returned. */
int cli_args_next(struct cli_args *a, const struct cli_opt *opts, struct cli *cli);

/* Parses a whole number in [min, max] for option name; prints a message and returns -1 on
 * error. */
int cli_parse_int(const char *cmd, const char *name, const char *text, long min, long max,
		  long *out);

/* Prints "sluice CMD: message" and the hint to see `sluice help CMD` to stderr; returns
 * CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- connections (connect.c) ---- */

/* Connects to Redis at cli->redis_url. On error prints why and returns NULL (the caller
 * exits CLI_UNREACHABLE). Caller frees with sl_state_destroy(). */
struct sl_state *cli_redis_connect(const struct cli *cli);

/* Checks the reply of sl_state_command() (takes ownership of r): NULL (connection lost)
 * or a REDIS_REPLY_ERROR prints why, naming what (e.g. "HGETALL"), frees r and returns
 * NULL; otherwise returns r, which the caller frees with freeReplyObject(). */
redisReply *cli_redis_check(redisReply *r, const char *what);

/* Value of field in an HGETALL reply (array or RESP3 map), borrowed; NULL when absent. */
const char *cli_hash_get(const redisReply *r, const char *field);

/* Number of fields in an HGETALL reply (0 for an empty or missing hash). */
size_t cli_hash_len(const redisReply *r);

/* The exit code a run in state ends the CLI with (CLI_OK, CLI_FAILED, CLI_CANCELLED,
 * CLI_REJECTED), or -1 when the state is not final. */
int cli_exit_for_state(const char *state);

/* Sleeps ms milliseconds; a signal cuts it short (polling loops check their flag). */
void cli_sleep_ms(long ms);

/* Returns 1 when r is a string-like reply (string, status, verbatim). */
int cli_reply_is_str(const redisReply *r);

/* Produces one message to topic and waits until the broker confirmed it (up to the
 * producer's message timeout). On error prints why and returns CLI_UNREACHABLE, else
 * CLI_OK. */
int cli_kafka_send(const struct cli *cli, const char *topic, const char *key, const void *payload,
		   size_t len);

/* Escapes the glob characters of a Redis MATCH pattern (*?[]\) from src into dst.
 * Returns -1 when dst is too small. */
int cli_glob_escape(const char *src, char *dst, size_t cap);

/* Builds "sluice:{run}:<suffix>" into dst; returns -1 when it does not fit. */
int cli_run_key(char *dst, size_t cap, const char *run, const char *suffix);

/* Checks a run id given on the command line: non-empty, at most CLI_NAME_MAX bytes, no
 * whitespace, control characters or braces (they would break the key's hash tag).
 * Prints a message and returns -1 when it is not usable. */
int cli_check_run_id(const char *cmd, const char *run);

/* ---- output (output.c) ---- */

struct out_table;

/* A table with ncols columns named by headers (borrowed, must outlive the table).
 * Returns NULL on allocation failure. */
struct out_table *out_table_new(size_t ncols, const char *const *headers);

/* Appends one row (ncols cells, copied; NULL prints "-"). Control characters become spaces
 * and each cell is cut to OUT_CELL_MAX characters. Returns -1 on allocation failure. */
int out_table_add(struct out_table *t, const char *const *cells);

/* Appends a line printed as is between rows (a summary line), copied. */
int out_table_add_note(struct out_table *t, const char *text);

/* Prints the table with aligned columns. */
void out_table_print(const struct out_table *t, FILE *fp);

/* Frees the table. Accepts NULL. */
void out_table_destroy(struct out_table *t);

#define OUT_CELL_MAX 120

/* Prints v as indented JSON and a newline on stdout; v is borrowed. Returns CLI_OK, or
 * CLI_FAILED when v is NULL (an allocation failed while building it). */
int out_json(json_t *v);

/* "2024-05-01T12:00:00Z" (UTC) for ms > 0, else "-". */
void out_time(int64_t ms, char *buf, size_t cap);

/* A short human duration: "850ms", "12.3s", "4m05s", "2h03m", "3d04h"; "-" for ms < 0. */
void out_duration(int64_t ms, char *buf, size_t cap);

/* Copies at most maxchars UTF-8 characters of src into dst (cap bytes), replacing control
 * characters with spaces and marking a cut with "...". */
void out_clip(const char *src, size_t maxchars, char *dst, size_t cap);

/* Parses a decimal integer string; returns def for NULL, empty or bad text. */
int64_t out_int(const char *text, int64_t def);

/* Adds key: integer parsed from text (or JSON null when missing/invalid) to obj. */
void out_json_set_int(json_t *obj, const char *key, const char *text);

/* Adds key: text as a JSON string (or null when text is NULL) to obj. */
void out_json_set_str(json_t *obj, const char *key, const char *text);

/* Adds key: text parsed as JSON (any type; a string when it does not parse; null when
 * NULL or empty) to obj. */
void out_json_set_parsed(json_t *obj, const char *key, const char *text);

/* ---- subcommands: each gets the words after its name ---- */

int cmd_submit(struct cli *cli, int argc, char **argv);
int cmd_status(struct cli *cli, int argc, char **argv);
int cmd_watch(struct cli *cli, int argc, char **argv);
int cmd_runs(struct cli *cli, int argc, char **argv);
int cmd_cancel(struct cli *cli, int argc, char **argv);
int cmd_pools(struct cli *cli, int argc, char **argv);
int cmd_flows(struct cli *cli, int argc, char **argv);
int cmd_topics(struct cli *cli, int argc, char **argv);

/* ---- help (help.c) ---- */

/* Prints the overview (commands, global options, exit codes) to fp. */
void help_main(FILE *fp);

/* Prints the help of command name to fp; returns -1 when there is no such command. */
int help_command(const char *name, FILE *fp);

#endif
