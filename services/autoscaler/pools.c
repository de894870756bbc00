/* pools.c - reads and validates the pools YAML file with libyaml. */
#include "pools.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "sluice/util.h"

#define POOLS_FILE_MAX (1024 * 1024)

struct parse {
	yaml_parser_t parser;
	yaml_event_t ev; /* the current event; ev.type == YAML_NO_EVENT when none is held */
	const char *name;
	char *errstr;
	size_t errlen;
};

enum pool_key {
	KEY_QUEUE,
	KEY_BACKEND,
	KEY_MIN,
	KEY_MAX,
	KEY_TARGET,
	KEY_SLOTS,
	KEY_STEP,
	KEY_COOLDOWN,
	KEY_WINDOW,
	KEY_IDLE,
	KEY_COUNT,
};

static const char *const key_names[KEY_COUNT] = {
	[KEY_QUEUE] = "queue",
	[KEY_BACKEND] = "backend",
	[KEY_MIN] = "min",
	[KEY_MAX] = "max",
	[KEY_TARGET] = "target_per_worker",
	[KEY_SLOTS] = "slots",
	[KEY_STEP] = "scale_up_step",
	[KEY_COOLDOWN] = "scale_up_cooldown",
	[KEY_WINDOW] = "scale_down_window",
	[KEY_IDLE] = "idle_to_zero",
};

const char *autoscaler_backend_name(enum autoscaler_backend_kind kind)
{
	switch (kind) {
	case AUTOSCALER_BACKEND_PROCESS:
		return "process";
	}
	return "unknown";
}

static unsigned long line_of(const struct parse *ps)
{
	return (unsigned long)ps->ev.start_mark.line + 1;
}

static enum sl_err fail(struct parse *ps, enum sl_err err, unsigned long line, const char *fmt,
			...) __attribute__((format(printf, 4, 5)));

static enum sl_err fail(struct parse *ps, enum sl_err err, unsigned long line, const char *fmt,
			...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(ps->errstr, ps->errlen, "%s:%lu: %s", ps->name, line, msg);
	return err;
}

/* Replaces the held event with the next one. Aliases are refused: a pools file has no use for
 * them and they would let a small file expand into a big one. */
static enum sl_err next(struct parse *ps)
{
	if (ps->ev.type != YAML_NO_EVENT)
		yaml_event_delete(&ps->ev);
	memset(&ps->ev, 0, sizeof(ps->ev));
	if (!yaml_parser_parse(&ps->parser, &ps->ev)) {
		memset(&ps->ev, 0, sizeof(ps->ev));
		return fail(ps, SL_ERR_PARSE, (unsigned long)ps->parser.problem_mark.line + 1, "%s",
			    ps->parser.problem ? ps->parser.problem : "YAML syntax error");
	}
	if (ps->ev.type == YAML_ALIAS_EVENT)
		return fail(ps, SL_ERR_PARSE, line_of(ps), "aliases are not supported");
	return SL_OK;
}

static enum sl_err expect(struct parse *ps, yaml_event_type_t type, const char *what)
{
	enum sl_err err = next(ps);

	if (err != SL_OK)
		return err;
	if (ps->ev.type != type)
		return fail(ps, SL_ERR_CONFIG, line_of(ps), "expected %s", what);
	return SL_OK;
}

static const char *scalar(const struct parse *ps)
{
	return (const char *)ps->ev.data.scalar.value;
}

static int valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= AUTOSCALER_NAME_MAX)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return 0;
	return 1;
}

static enum sl_err parse_int(struct parse *ps, const char *key, const char *text, int lo, int hi,
			     int *out)
{
	char *end = NULL;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < lo || v > hi)
		return fail(ps, SL_ERR_CONFIG, line_of(ps),
			    "%s must be an integer from %d to %d, got \"%s\"", key, lo, hi, text);
	*out = (int)v;
	return SL_OK;
}

static enum sl_err parse_duration(struct parse *ps, const char *key, const char *text, long *out)
{
	if (sl_parse_duration_ms(text, out) != SL_OK)
		return fail(ps, SL_ERR_CONFIG, line_of(ps),
			    "%s must be a duration like 0s, 500ms, 10s, 2m, got \"%s\"", key, text);
	return SL_OK;
}

static enum sl_err set_key(struct parse *ps, struct autoscaler_pool_config *pc, enum pool_key k,
			   const char *v)
{
	const char *name = key_names[k];

	switch (k) {
	case KEY_QUEUE:
		if (!valid_name(v))
			return fail(ps, SL_ERR_CONFIG, line_of(ps),
				    "queue \"%s\" must be 1-100 characters of A-Z a-z 0-9 . _ -",
				    v);
		sl_strlcpy(pc->queue, v, sizeof(pc->queue));
		return SL_OK;
	case KEY_BACKEND:
		if (!strcmp(v, "process")) {
			pc->backend = AUTOSCALER_BACKEND_PROCESS;
			return SL_OK;
		}
		if (!strcmp(v, "docker") || !strcmp(v, "kubernetes"))
			return fail(ps, SL_ERR_CONFIG, line_of(ps),
				    "backend \"%s\" is not implemented yet (use process)", v);
		return fail(ps, SL_ERR_CONFIG, line_of(ps),
			    "backend must be process, docker or kubernetes, got \"%s\"", v);
	case KEY_MIN:
		return parse_int(ps, name, v, 0, AUTOSCALER_POOL_MAX_SIZE, &pc->min);
	case KEY_MAX:
		return parse_int(ps, name, v, 1, AUTOSCALER_POOL_MAX_SIZE, &pc->max);
	case KEY_TARGET:
		return parse_int(ps, name, v, 1, 1000000, &pc->target_per_worker);
	case KEY_SLOTS:
		return parse_int(ps, name, v, 1, 256, &pc->slots);
	case KEY_STEP:
		return parse_int(ps, name, v, 1, AUTOSCALER_POOL_MAX_SIZE, &pc->scale_up_step);
	case KEY_COOLDOWN:
		return parse_duration(ps, name, v, &pc->scale_up_cooldown_ms);
	case KEY_WINDOW:
		return parse_duration(ps, name, v, &pc->scale_down_window_ms);
	case KEY_IDLE:
		return parse_duration(ps, name, v, &pc->idle_to_zero_ms);
	case KEY_COUNT:
		break;
	}
	return SL_ERR_CONFIG;
}

/* Parses the mapping of one pool; the held event is its MAPPING_START. */
static enum sl_err parse_pool(struct parse *ps, struct autoscaler_pool_config *pc)
{
	unsigned long pool_line = line_of(ps);
	unsigned seen = 0;
	enum sl_err err;

	/* Defaults; slots and scale_up_step follow target_per_worker and max unless given. */
	pc->queue[0] = '\0';
	pc->backend = AUTOSCALER_BACKEND_PROCESS;
	pc->min = 0;
	pc->max = 4;
	pc->target_per_worker = 4;
	pc->scale_up_cooldown_ms = 0;
	pc->scale_down_window_ms = 30000;
	pc->idle_to_zero_ms = 60000;
	for (;;) {
		enum pool_key k;
		char key[64];

		if ((err = next(ps)) != SL_OK)
			return err;
		if (ps->ev.type == YAML_MAPPING_END_EVENT)
			break;
		if (ps->ev.type != YAML_SCALAR_EVENT)
			return fail(ps, SL_ERR_CONFIG, line_of(ps), "expected an option name");
		sl_strlcpy(key, scalar(ps), sizeof(key));
		for (k = 0; k < KEY_COUNT; k++)
			if (!strcmp(key, key_names[k]))
				break;
		if (k == KEY_COUNT)
			return fail(ps, SL_ERR_CONFIG, line_of(ps),
				    "unknown option \"%.60s\" in pool %s", scalar(ps), pc->name);
		if (seen & (1u << k))
			return fail(ps, SL_ERR_CONFIG, line_of(ps), "%s given twice in pool %s",
				    key, pc->name);
		seen |= 1u << k;
		if ((err = expect(ps, YAML_SCALAR_EVENT, "a single value")) != SL_OK)
			return err;
		if ((err = set_key(ps, pc, k, scalar(ps))) != SL_OK)
			return err;
	}
	if (!(seen & (1u << KEY_QUEUE))) {
		if (!valid_name(pc->name))
			return fail(ps, SL_ERR_CONFIG, pool_line,
				    "pool %s needs a queue (its name is not a valid queue name)",
				    pc->name);
		sl_strlcpy(pc->queue, pc->name, sizeof(pc->queue));
	}
	if (!(seen & (1u << KEY_SLOTS)))
		pc->slots = pc->target_per_worker <= 256 ? pc->target_per_worker : 256;
	if (!(seen & (1u << KEY_STEP)))
		pc->scale_up_step = pc->max;
	if (pc->min > pc->max)
		return fail(ps, SL_ERR_CONFIG, pool_line, "pool %s: min %d is above max %d",
			    pc->name, pc->min, pc->max);
	return SL_OK;
}

static enum sl_err parse_pools(struct parse *ps, struct autoscaler_pools *out)
{
	enum sl_err err;

	if ((err = expect(ps, YAML_MAPPING_START_EVENT, "a mapping of pool names")) != SL_OK)
		return err;
	for (;;) {
		struct autoscaler_pool_config *pc;

		if ((err = next(ps)) != SL_OK)
			return err;
		if (ps->ev.type == YAML_MAPPING_END_EVENT)
			return SL_OK;
		if (ps->ev.type != YAML_SCALAR_EVENT)
			return fail(ps, SL_ERR_CONFIG, line_of(ps), "expected a pool name");
		if (!valid_name(scalar(ps)))
			return fail(ps, SL_ERR_CONFIG, line_of(ps),
				    "pool name \"%.60s\" must be 1-100 characters of A-Z a-z 0-9 . _ -",
				    scalar(ps));
		for (size_t i = 0; i < out->n; i++)
			if (!strcmp(out->pool[i].name, scalar(ps)))
				return fail(ps, SL_ERR_CONFIG, line_of(ps), "pool %s given twice",
					    scalar(ps));
		if (out->n == AUTOSCALER_MAX_POOLS)
			return fail(ps, SL_ERR_TOO_BIG, line_of(ps), "more than %d pools",
				    AUTOSCALER_MAX_POOLS);
		pc = &out->pool[out->n];
		sl_strlcpy(pc->name, scalar(ps), sizeof(pc->name));
		if ((err = expect(ps, YAML_MAPPING_START_EVENT, "the pool's options")) != SL_OK)
			return err;
		unsigned long line = line_of(ps);
		if ((err = parse_pool(ps, pc)) != SL_OK)
			return err;
		for (size_t i = 0; i < out->n; i++)
			if (!strcmp(out->pool[i].queue, pc->queue))
				return fail(ps, SL_ERR_CONFIG, line,
					    "pools %s and %s both use queue %s: one pool per queue",
					    out->pool[i].name, pc->name, pc->queue);
		out->n++;
	}
}

enum sl_err autoscaler_pools_parse(const char *name, const char *text, size_t len,
				   struct autoscaler_pools *out, char *errstr, size_t errlen)
{
	struct parse ps;
	int seen_pools = 0;
	enum sl_err err;

	memset(out, 0, sizeof(*out));
	memset(&ps, 0, sizeof(ps));
	ps.name = name;
	ps.errstr = errstr;
	ps.errlen = errlen;
	if (!yaml_parser_initialize(&ps.parser)) {
		snprintf(errstr, errlen, "%s: cannot initialise the YAML parser", name);
		return SL_ERR_NOMEM;
	}
	yaml_parser_set_input_string(&ps.parser, (const unsigned char *)text, len);
	if ((err = expect(&ps, YAML_STREAM_START_EVENT, "a YAML stream")) != SL_OK)
		goto out;
	if ((err = next(&ps)) != SL_OK)
		goto out;
	if (ps.ev.type == YAML_STREAM_END_EVENT) {
		err = fail(&ps, SL_ERR_CONFIG, 1, "empty file: expected \"pools:\"");
		goto out;
	}
	if ((err = expect(&ps, YAML_MAPPING_START_EVENT, "a mapping with \"pools:\"")) != SL_OK)
		goto out;
	for (;;) {
		if ((err = next(&ps)) != SL_OK)
			goto out;
		if (ps.ev.type == YAML_MAPPING_END_EVENT)
			break;
		if (ps.ev.type != YAML_SCALAR_EVENT || strcmp(scalar(&ps), "pools") != 0) {
			err = fail(&ps, SL_ERR_CONFIG, line_of(&ps), "unknown key \"%.60s\"",
				   ps.ev.type == YAML_SCALAR_EVENT ? scalar(&ps) : "(not a name)");
			goto out;
		}
		if (seen_pools++) {
			err = fail(&ps, SL_ERR_CONFIG, line_of(&ps), "pools given twice");
			goto out;
		}
		if ((err = parse_pools(&ps, out)) != SL_OK)
			goto out;
	}
	if ((err = expect(&ps, YAML_DOCUMENT_END_EVENT, "the end of the document")) != SL_OK)
		goto out;
	if ((err = expect(&ps, YAML_STREAM_END_EVENT, "a single YAML document")) != SL_OK)
		goto out;
	if (out->n == 0) {
		err = fail(&ps, SL_ERR_CONFIG, 1, "no pools defined");
		goto out;
	}
	err = SL_OK;
out:
	if (ps.ev.type != YAML_NO_EVENT)
		yaml_event_delete(&ps.ev);
	yaml_parser_delete(&ps.parser);
	return err;
}

enum sl_err autoscaler_pools_load(const char *path, struct autoscaler_pools *out, char *errstr,
				  size_t errlen)
{
	enum sl_err err = SL_ERR_IO;
	char *text = NULL;
	FILE *fp = NULL;
	struct stat stt;
	size_t len;

	memset(out, 0, sizeof(*out));
	if (!(fp = fopen(path, "rb")) || fstat(fileno(fp), &stt) != 0) {
		snprintf(errstr, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(stt.st_mode) || stt.st_size > POOLS_FILE_MAX) {
		snprintf(errstr, errlen, "%s: not a regular file of at most %d bytes", path,
			 POOLS_FILE_MAX);
		err = SL_ERR_TOO_BIG;
		goto out;
	}
	if (!(text = malloc((size_t)stt.st_size + 1))) {
		err = SL_ERR_NOMEM;
		snprintf(errstr, errlen, "%s: out of memory", path);
		goto out;
	}
	len = fread(text, 1, (size_t)stt.st_size, fp);
	if (ferror(fp)) {
		snprintf(errstr, errlen, "%s: read error", path);
		goto out;
	}
	err = autoscaler_pools_parse(path, text, len, out, errstr, errlen);
out:
	free(text);
	if (fp)
		fclose(fp);
	return err;
}
