/* parse.c - flow YAML (libyaml document API) into struct sl_flow, with validation and a
 * stable topological order of the tasks. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "flow_internal.h"
#include "sluice/util.h"

#define MAX_NAME 128
#define MAX_RETRIES 100
#define MAX_JSON_NODES 100000 /* nodes converted to JSON per flow; stops alias bombs */
#define MAX_JSON_DEPTH 64

static const char *const root_keys[] = {"flow", "description", "params", "defaults",
					"trigger", "tasks", "concurrency", "schedule",
					"catchup", NULL};
static const char *const root_later[] = {NULL};
static const char *const param_keys[] = {"type", "default", "description", NULL};
static const char *const default_keys[] = {"retries", "retry_delay", "timeout", "queue",
					   "priority", "max_output", "retry_backoff", NULL};
static const char *const trigger_keys[] = {"files", NULL};
static const char *const trigger_later[] = {"schedule", NULL};
static const char *const files_keys[] = {"dir", "glob", NULL};
static const char *const task_keys[] = {"map", "command", "builtin", "input", "env", "after",
					"retries", "retry_delay", "timeout", "queue", "priority",
					"max_output", "cache", "cache_ttl", "tags", "when", "route",
					"trigger_rule", "retry_backoff", NULL};
static const char *const task_later[] = {"resources", NULL};
static const char *const backoff_keys[] = {"factor", "max", "jitter", NULL};
static const char *const route_keys[] = {"when", "queue", NULL};
static const char *const builtins[] = {"noop", "sleep", "echo", "sum", "http_get", "sha256", NULL};
static const char *const reserved_vars[] = {"params", "tasks", "run", NULL};

/* Task settings that `defaults:` provides and each task may override. */
struct settings {
	int retries;
	long retry_delay_ms;
	long timeout_ms;
	char *queue;
	int priority;
	long max_output;
	double backoff_factor; /* retry_backoff: */
	long backoff_max_ms;
	double backoff_jitter;
};

struct pctx {
	const char *file;
	yaml_document_t *doc;
	char *err;
	size_t errlen;
	struct sl_flow *flow;
	struct settings defaults;
	yaml_node_t **task_keys; /* key node of each task, YAML order */
	size_t cur;              /* task whose templates are being checked */
	long budget;             /* YAML nodes left to convert to JSON */
};

static int perr(struct pctx *pc, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Writes "<file>:<line>:<col>: <reason>" for node n; returns -1. */
static int perr(struct pctx *pc, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(pc->err, pc->errlen, "%s:%zu:%zu: %s", pc->file, n ? n->start_mark.line + 1 : 1,
		 n ? n->start_mark.column + 1 : 1, msg);
	return -1;
}

static yaml_node_t *node_at(struct pctx *pc, int index)
{
	return yaml_document_get_node(pc->doc, index);
}

static int in_list(const char *const *list, const char *s)
{
	for (; list && *list; list++)
		if (!strcmp(*list, s))
			return 1;
	return 0;
}

static void join(const char *const *list, char *buf, size_t cap)
{
	size_t off = 0;

	buf[0] = '\0';
	for (; *list && off < cap; list++)
		off += (size_t)snprintf(buf + off, cap - off, "%s%s", off ? ", " : "", *list);
}

static const char *kind_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE: return "a scalar";
	case YAML_SEQUENCE_NODE: return "a list";
	case YAML_MAPPING_NODE: return "a mapping";
	default: return "nothing";
	}
}

/* The text of a scalar node, or NULL after an error naming what. */
static const char *scalar(struct pctx *pc, yaml_node_t *n, const char *what)
{
	const char *s;

	if (n->type != YAML_SCALAR_NODE) {
		perr(pc, n, "%s must be a scalar, not %s", what, kind_name(n));
		return NULL;
	}
	s = (const char *)n->data.scalar.value;
	if (strlen(s) != n->data.scalar.length) {
		perr(pc, n, "%s contains a NUL character", what);
		return NULL;
	}
	return s;
}

static int is_plain(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int is_null(const yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;

	return is_plain(n) && (!*s || !strcmp(s, "~") || !strcmp(s, "null") ||
			       !strcmp(s, "Null") || !strcmp(s, "NULL"));
}

static int match_charset(const char *s, int ident)
{
	if (!*s || strlen(s) > MAX_NAME)
		return 0;
	if (ident && !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
		return 0;
	for (; *s; s++) {
		int ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			 (*s >= '0' && *s <= '9') || *s == '_' || (!ident && (*s == '.' || *s == '-'));
		if (!ok)
			return 0;
	}
	return 1;
}

static int all_in(const char *p, const char *set)
{
	return *p && strspn(p, set) == strlen(p);
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static int is_float_text(const char *p)
{
	int digits = 0;

	if (*p == '-' || *p == '+')
		p++;
	for (; is_digit(*p); p++)
		digits++;
	if (*p == '.')
		for (p++; is_digit(*p); p++)
			digits++;
	if (!digits)
		return 0;
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '-' || *p == '+')
			p++;
		if (!is_digit(*p))
			return 0;
		while (is_digit(*p))
			p++;
	}
	return *p == '\0';
}

/* Resolves a plain scalar like YAML 1.2's core schema: null, bools, ints (also 0x, 0o),
 * floats. Returns NULL for anything else (a string), including numbers JSON cannot hold. */
static json_t *resolve_plain(const char *s)
{
	const char *p = s;
	char *end;

	if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
		return json_null();
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
		return json_true();
	if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
		return json_false();
	if (*p == '-' || *p == '+')
		p++;
	errno = 0;
	if (p == s && !strncmp(s, "0x", 2) && all_in(s + 2, "0123456789abcdefABCDEF")) {
		long long v = strtoll(s + 2, &end, 16);
		return errno || *end ? NULL : json_integer((json_int_t)v);
	}
	if (p == s && !strncmp(s, "0o", 2) && all_in(s + 2, "01234567")) {
		long long v = strtoll(s + 2, &end, 8);
		return errno || *end ? NULL : json_integer((json_int_t)v);
	}
	if (all_in(p, "0123456789")) {
		long long v = strtoll(s, &end, 10);
		return errno || *end ? NULL : json_integer((json_int_t)v);
	}
	if (is_float_text(s)) {
		double d = strtod(s, &end);
		return errno || *end || !isfinite(d) ? NULL : json_real(d);
	}
	return NULL;
}

/* A scalar node as JSON: quoted ones are strings, plain ones are resolved. */
static json_t *scalar_json(const yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;
	json_t *v = is_plain(n) ? resolve_plain(s) : NULL;

	return v ? v : json_stringn(s, n->data.scalar.length);
}

static int check_keys(struct pctx *pc, yaml_node_t *map, const char *const *allowed,
		      const char *const *later, const char *where);

/* Converts a YAML node (any shape) to JSON. Returns NULL after an error. */
static json_t *node_json(struct pctx *pc, yaml_node_t *n, int depth)
{
	json_t *v = NULL;

	if (--pc->budget < 0) {
		perr(pc, n, "document too large (more than %d values)", MAX_JSON_NODES);
		return NULL;
	}
	if (depth > MAX_JSON_DEPTH) {
		perr(pc, n, "nested too deeply (max %d levels)", MAX_JSON_DEPTH);
		return NULL;
	}
	switch (n->type) {
	case YAML_SCALAR_NODE:
		if (!(v = scalar_json(n)))
			perr(pc, n, "value is not valid UTF-8 or out of memory");
		return v;
	case YAML_SEQUENCE_NODE:
		if (!(v = json_array()))
			break;
		for (yaml_node_item_t *it = n->data.sequence.items.start;
		     it < n->data.sequence.items.top; it++) {
			json_t *e = node_json(pc, node_at(pc, *it), depth + 1);
			if (!e || json_array_append_new(v, e) < 0) {
				json_decref(v);
				return e ? (perr(pc, n, "out of memory"), NULL) : NULL;
			}
		}
		return v;
	case YAML_MAPPING_NODE:
		if (check_keys(pc, n, NULL, NULL, "mapping") < 0 || !(v = json_object()))
			break;
		for (yaml_node_pair_t *pr = n->data.mapping.pairs.start;
		     pr < n->data.mapping.pairs.top; pr++) {
			yaml_node_t *k = node_at(pc, pr->key);
			json_t *e = node_json(pc, node_at(pc, pr->value), depth + 1);
			if (!e || json_object_set_new(v, (const char *)k->data.scalar.value, e) < 0) {
				json_decref(v);
				return e ? (perr(pc, n, "out of memory"), NULL) : NULL;
			}
		}
		return v;
	default:
		break;
	}
	if (!v && pc->err[0] == '\0')
		perr(pc, n, "out of memory");
	return NULL;
}

struct keyref {
	const char *key;
	yaml_node_t *node;
	size_t pos;
};

static int keyref_cmp(const void *a, const void *b)
{
	const struct keyref *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* Finds the first key (in document order) that repeats an earlier one: sorting keeps this
 * O(n log n) for the big mappings a hostile file could hold. */
static int check_duplicates(struct pctx *pc, yaml_node_t *map, const char *where)
{
	size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
	struct keyref *refs;
	struct keyref *dup = NULL, *first = NULL;

	if (n < 2)
		return 0;
	if (!(refs = calloc(n, sizeof(*refs))))
		return perr(pc, map, "out of memory");
	for (size_t i = 0; i < n; i++) {
		refs[i].node = node_at(pc, map->data.mapping.pairs.start[i].key);
		refs[i].key = (const char *)refs[i].node->data.scalar.value;
		refs[i].pos = i;
	}
	qsort(refs, n, sizeof(*refs), keyref_cmp);
	for (size_t i = 1; i < n; i++) {
		if (strcmp(refs[i - 1].key, refs[i].key))
			continue;
		if (!dup || refs[i].pos < dup->pos) {
			size_t f = i - 1;
			while (f > 0 && !strcmp(refs[f - 1].key, refs[i].key))
				f--;
			dup = &refs[i];
			first = &refs[f];
		}
	}
	if (dup)
		perr(pc, dup->node, "duplicate key '%s' in %s (first at line %zu)", dup->key, where,
		     first->node->start_mark.line + 1);
	free(refs);
	return dup ? -1 : 0;
}

/* Checks a mapping's keys: scalars, no duplicates, each in allowed (NULL = any) or else an
 * error; keys in later are "not supported yet". */
static int check_keys(struct pctx *pc, yaml_node_t *map, const char *const *allowed,
		      const char *const *later, const char *where)
{
	for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
	     pr++) {
		if (!scalar(pc, node_at(pc, pr->key), "a key"))
			return -1;
	}
	if (check_duplicates(pc, map, where) < 0)
		return -1;
	for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = node_at(pc, pr->key);
		const char *key = (const char *)k->data.scalar.value;

		if (in_list(later, key))
			return perr(pc, k, "'%s' in %s is not supported yet", key, where);
		if (allowed && !in_list(allowed, key)) {
			char list[512];
			join(allowed, list, sizeof(list));
			return perr(pc, k, "unknown key '%s' in %s (allowed: %s)", key, where, list);
		}
	}
	return 0;
}

static yaml_node_t *get(struct pctx *pc, yaml_node_t *map, const char *key)
{
	for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = node_at(pc, pr->key);
		if (k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
			return node_at(pc, pr->value);
	}
	return NULL;
}

static int want_mapping(struct pctx *pc, yaml_node_t *n, const char *what)
{
	if (n->type != YAML_MAPPING_NODE)
		return perr(pc, n, "%s must be a mapping, not %s", what, kind_name(n));
	return 0;
}

static char *dup_or_err(struct pctx *pc, yaml_node_t *n, const char *s)
{
	char *d = strdup(s);

	if (!d)
		perr(pc, n, "out of memory");
	return d;
}

/* ---- task settings ---- */

static int parse_int(struct pctx *pc, yaml_node_t *n, const char *what, long min, long max,
		     long *out)
{
	json_t *v = is_plain(n) ? resolve_plain((const char *)n->data.scalar.value) : NULL;
	int rc = 0;

	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		rc = perr(pc, n, "%s must be an int from %ld to %ld", what, min, max);
	else
		*out = (long)json_integer_value(v);
	json_decref(v);
	return rc;
}

static int parse_duration(struct pctx *pc, yaml_node_t *n, const char *what, long *out)
{
	const char *s = scalar(pc, n, what);

	if (!s)
		return -1;
	if (sl_parse_duration_ms(s, out) != SL_OK)
		return perr(pc, n, "bad duration '%s' for %s (use e.g. 250ms, 5s, 2m, 1h)", s, what);
	return 0;
}

/* A plain number from min to max. */
static int parse_number(struct pctx *pc, yaml_node_t *n, const char *what, double min,
			double max, double *out)
{
	json_t *v = is_plain(n) ? resolve_plain((const char *)n->data.scalar.value) : NULL;
	int rc = 0;

	if (!json_is_number(v) || json_number_value(v) < min || json_number_value(v) > max)
		rc = perr(pc, n, "%s must be a number from %g to %g", what, min, max);
	else
		*out = json_number_value(v);
	json_decref(v);
	return rc;
}

/* retry_backoff: {factor: 2, max: 30s, jitter: 0.2}; keys left out keep 1, none and 0. */
static int parse_backoff(struct pctx *pc, yaml_node_t *n, struct settings *s)
{
	yaml_node_t *v;

	if (want_mapping(pc, n, "retry_backoff") < 0 ||
	    check_keys(pc, n, backoff_keys, NULL, "retry_backoff") < 0)
		return -1;
	s->backoff_factor = 1.0;
	s->backoff_max_ms = 0;
	s->backoff_jitter = 0.0;
	if ((v = get(pc, n, "factor")) &&
	    parse_number(pc, v, "retry_backoff.factor", 1, 100, &s->backoff_factor) < 0)
		return -1;
	if ((v = get(pc, n, "max")) &&
	    parse_duration(pc, v, "retry_backoff.max", &s->backoff_max_ms) < 0)
		return -1;
	if ((v = get(pc, n, "jitter")) &&
	    parse_number(pc, v, "retry_backoff.jitter", 0, 1, &s->backoff_jitter) < 0)
		return -1;
	return 0;
}

/* Applies one settings key (retries, timeout, ...) to s. Returns 1 when key is not one. */
static int parse_setting(struct pctx *pc, const char *key, yaml_node_t *v, struct settings *s)
{
	long l;
	const char *str;

	if (!strcmp(key, "retries")) {
		if (parse_int(pc, v, "retries", 0, MAX_RETRIES, &l) < 0)
			return -1;
		s->retries = (int)l;
	} else if (!strcmp(key, "retry_delay")) {
		return parse_duration(pc, v, "retry_delay", &s->retry_delay_ms);
	} else if (!strcmp(key, "retry_backoff")) {
		return parse_backoff(pc, v, s);
	} else if (!strcmp(key, "timeout")) {
		return parse_duration(pc, v, "timeout", &s->timeout_ms);
	} else if (!strcmp(key, "max_output")) {
		if (parse_int(pc, v, "max_output", 1, SL_FLOW_MAX_OUTPUT, &l) < 0)
			return -1;
		s->max_output = l;
	} else if (!strcmp(key, "queue")) {
		char *q;
		if (!(str = scalar(pc, v, "queue")))
			return -1;
		if (!match_charset(str, 0))
			return perr(pc, v, "bad queue name '%s' (use [a-zA-Z0-9_.-], at most %d)",
				    str, MAX_NAME);
		if (sl_queue_is_band(str))
			return perr(pc, v, "queue name '%s' must not end in .high or .low (those "
				    "are priority bands of a queue)", str);
		if (!(q = dup_or_err(pc, v, str)))
			return -1;
		free(s->queue);
		s->queue = q;
	} else if (!strcmp(key, "priority")) {
		if (!(str = scalar(pc, v, "priority")))
			return -1;
		if (!strcmp(str, "high"))
			s->priority = 1;
		else if (!strcmp(str, "normal"))
			s->priority = 0;
		else if (!strcmp(str, "low"))
			s->priority = -1;
		else
			return perr(pc, v, "bad priority '%s' (allowed: high, normal, low)", str);
	} else {
		return 1;
	}
	return 0;
}

/* ---- templates ---- */

static int scope_has_param(void *ud, const char *name)
{
	struct pctx *pc = ud;

	for (size_t i = 0; i < pc->flow->nparams; i++)
		if (!strcmp(pc->flow->params[i].name, name))
			return 1;
	return 0;
}

static ssize_t yaml_task_index(struct pctx *pc, const char *name)
{
	for (size_t i = 0; i < pc->flow->ntasks; i++)
		if (!strcmp(pc->flow->tasks[i].name, name))
			return (ssize_t)i;
	return -1;
}

/* Adds task dep (YAML index) to the current task's deps, once. */
static int add_dep(struct pctx *pc, size_t dep)
{
	struct sl_flow_task *t = &pc->flow->tasks[pc->cur];
	size_t *nd;

	for (size_t i = 0; i < t->ndeps; i++)
		if (t->deps[i] == dep)
			return 0;
	if (!(nd = realloc(t->deps, (t->ndeps + 1) * sizeof(*nd))))
		return -1;
	t->deps = nd;
	t->deps[t->ndeps++] = dep;
	return 0;
}

static int scope_task_ref(void *ud, const char *name)
{
	struct pctx *pc = ud;
	ssize_t i = yaml_task_index(pc, name);

	if (i < 0)
		return -1;
	return add_dep(pc, (size_t)i) < 0 ? -1 : 0;
}

/* Compiles and checks the template in scalar n; *out gets a copy of its text. */
static int parse_template(struct pctx *pc, yaml_node_t *n, const char *what, int as_source,
			  char **out)
{
	struct sl_flow_task *t = &pc->flow->tasks[pc->cur];
	const char *vars[64];
	struct sl_expr_scope scope = {.vars = vars, .has_param = scope_has_param,
				      .task_ref = scope_task_ref, .ud = pc};
	struct sl_tmpl *tm;
	char why[512];
	const char *s;
	int rc = -1;

	if (!(s = scalar(pc, n, what)))
		return -1;
	if (!as_source)
		for (size_t i = 0; i < t->nmap && i < SL_FLOW_MAX_MAP_KEYS; i++)
			vars[scope.nvars++] = t->map[i].name;
	if (!(tm = sl_tmpl_compile(s, as_source, why, sizeof(why))))
		return perr(pc, n, "task '%s' %s: %s", t->name, what, why);
	if (sl_tmpl_check(tm, &scope, why, sizeof(why)) < 0) {
		perr(pc, n, "task '%s' %s: %s", t->name, what, why);
		goto out;
	}
	if (as_source && sl_tmpl_is_text(tm)) {
		perr(pc, n, "task '%s' %s: '%s' is not a list (write a YAML list, a JSON array, "
			    "range(...) or a ${...} reference)",
		     t->name, what, s);
		goto out;
	}
	if (!(*out = dup_or_err(pc, n, s)))
		goto out;
	rc = 0;
out:
	sl_tmpl_free(tm);
	return rc;
}

/* ---- sections ---- */

static int parse_params(struct pctx *pc, yaml_node_t *n)
{
	struct sl_flow *f = pc->flow;
	size_t count;

	if (n->type == YAML_SCALAR_NODE && is_null(n))
		return 0;
	if (want_mapping(pc, n, "params") < 0 || check_keys(pc, n, NULL, NULL, "params") < 0)
		return -1;
	count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	if (count && !(f->params = calloc(count, sizeof(*f->params))))
		return perr(pc, n, "out of memory");
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = node_at(pc, pr->key), *v = node_at(pc, pr->value);
		const char *name = (const char *)k->data.scalar.value;
		struct sl_flow_param *p = &f->params[f->nparams];
		char what[256], why[512];

		if (!match_charset(name, 1))
			return perr(pc, k, "bad param name '%s' (use [A-Za-z_][A-Za-z0-9_]*)", name);
		if (!(p->name = dup_or_err(pc, k, name)))
			return -1;
		f->nparams++;
		snprintf(what, sizeof(what), "param '%s'", name);
		if (v->type == YAML_MAPPING_NODE) {
			yaml_node_t *tn = NULL, *dn = NULL;
			if (check_keys(pc, v, param_keys, NULL, what) < 0)
				return -1;
			if ((dn = get(pc, v, "default")) && !(p->def = node_json(pc, dn, 0)))
				return -1;
			p->type = p->def ? sl_param_type_infer(p->def) : SL_PARAM_ANY;
			if ((tn = get(pc, v, "type"))) {
				const char *ts = scalar(pc, tn, "type");
				if (!ts)
					return -1;
				if (sl_param_type_parse(ts, &p->type) < 0)
					return perr(pc, tn,
						    "unknown type '%s' for %s (allowed: int, float, "
						    "string, bool, list, any)",
						    ts, what);
			}
			if ((tn = get(pc, v, "description")) && !scalar(pc, tn, "description"))
				return -1;
			if (p->def) {
				json_t *c = sl_param_coerce(p->type, p->def, why, sizeof(why));
				if (!c)
					return perr(pc, dn, "bad default for %s: %s", what, why);
				json_decref(p->def);
				p->def = c;
			}
		} else {
			if (!(p->def = node_json(pc, v, 0)))
				return -1;
			p->type = sl_param_type_infer(p->def);
		}
	}
	return 0;
}

static int parse_defaults(struct pctx *pc, yaml_node_t *n)
{
	if (want_mapping(pc, n, "defaults") < 0 ||
	    check_keys(pc, n, default_keys, task_later, "defaults") < 0)
		return -1;
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = node_at(pc, pr->key);
		if (parse_setting(pc, (const char *)k->data.scalar.value, node_at(pc, pr->value),
				  &pc->defaults) != 0)
			return -1;
	}
	return 0;
}

static int parse_trigger(struct pctx *pc, yaml_node_t *n)
{
	yaml_node_t *files, *v;
	const char *s;

	if (want_mapping(pc, n, "trigger") < 0 ||
	    check_keys(pc, n, trigger_keys, trigger_later, "trigger") < 0)
		return -1;
	if (!(files = get(pc, n, "files")))
		return 0;
	if (want_mapping(pc, files, "trigger.files") < 0 ||
	    check_keys(pc, files, files_keys, NULL, "trigger.files") < 0)
		return -1;
	if (!(v = get(pc, files, "dir")))
		return perr(pc, files, "trigger.files needs a 'dir'");
	if (!(s = scalar(pc, v, "trigger.files.dir")))
		return -1;
	if (!*s)
		return perr(pc, v, "trigger.files.dir must not be empty");
	if (!(pc->flow->trigger_dir = dup_or_err(pc, v, s)))
		return -1;
	s = "*";
	if ((v = get(pc, files, "glob"))) {
		if (!(s = scalar(pc, v, "trigger.files.glob")))
			return -1;
		if (!*s)
			return perr(pc, v, "trigger.files.glob must not be empty");
	}
	if (!(pc->flow->trigger_glob = dup_or_err(pc, v ? v : files, s)))
		return -1;
	return 0;
}

static int parse_map(struct pctx *pc, struct sl_flow_task *t, yaml_node_t *n)
{
	size_t count;
	char what[256];

	if (want_mapping(pc, n, "map") < 0 || check_keys(pc, n, NULL, NULL, "map") < 0)
		return -1;
	count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	if (!count)
		return perr(pc, n, "task '%s': map needs at least one key", t->name);
	if (count > SL_FLOW_MAX_MAP_KEYS)
		return perr(pc, n, "task '%s': map has more than %d keys", t->name,
			    SL_FLOW_MAX_MAP_KEYS);
	if (!(t->map = calloc(count, sizeof(*t->map))))
		return perr(pc, n, "out of memory");
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = node_at(pc, pr->key), *v = node_at(pc, pr->value);
		const char *name = (const char *)k->data.scalar.value;
		struct sl_flow_map_key *mk = &t->map[t->nmap];

		if (!match_charset(name, 1))
			return perr(pc, k, "bad map key '%s' (use [A-Za-z_][A-Za-z0-9_]*)", name);
		if (in_list(reserved_vars, name))
			return perr(pc, k, "map key '%s' would hide ${%s...}", name, name);
		if (!(mk->name = dup_or_err(pc, k, name)))
			return -1;
		t->nmap++;
		snprintf(what, sizeof(what), "map '%s'", name);
		if (v->type == YAML_SEQUENCE_NODE) {
			if (!(mk->literal = node_json(pc, v, 0)))
				return -1;
		} else if (v->type == YAML_SCALAR_NODE && !is_null(v)) {
			if (parse_template(pc, v, what, 1, &mk->source) < 0)
				return -1;
		} else {
			return perr(pc, v,
				    "task '%s' %s must be a list or an expression such as "
				    "\"range(10)\" or \"${params.items}\"",
				    t->name, what);
		}
	}
	return 0;
}

static int parse_command(struct pctx *pc, struct sl_flow_task *t, yaml_node_t *n)
{
	size_t count;
	char what[64];

	if (n->type != YAML_SEQUENCE_NODE)
		return perr(pc, n, "task '%s': command must be a list of strings (argv; no shell)",
			    t->name);
	count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (!count)
		return perr(pc, n, "task '%s': command must not be empty", t->name);
	if (!(t->argv = calloc(count + 1, sizeof(*t->argv))))
		return perr(pc, n, "out of memory");
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		snprintf(what, sizeof(what), "command[%zu]", t->argc);
		if (parse_template(pc, node_at(pc, *it), what, 0, &t->argv[t->argc]) < 0)
			return -1;
		t->argc++;
	}
	return 0;
}

static int parse_env(struct pctx *pc, struct sl_flow_task *t, yaml_node_t *n)
{
	size_t count;
	char what[MAX_NAME + 16];

	if (want_mapping(pc, n, "env") < 0 || check_keys(pc, n, NULL, NULL, "env") < 0)
		return -1;
	count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	if (!count)
		return 0;
	if (!(t->env_names = calloc(count, sizeof(char *))) ||
	    !(t->env_values = calloc(count, sizeof(char *))))
		return perr(pc, n, "out of memory");
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = node_at(pc, pr->key), *v = node_at(pc, pr->value);
		const char *name = (const char *)k->data.scalar.value;

		if (!match_charset(name, 1))
			return perr(pc, k, "bad env name '%s' (use [A-Za-z_][A-Za-z0-9_]*)", name);
		snprintf(what, sizeof(what), "env %s", name);
		if (!(t->env_names[t->nenv] = dup_or_err(pc, k, name)))
			return -1;
		if (parse_template(pc, v, what, 0, &t->env_values[t->nenv]) < 0) {
			free(t->env_names[t->nenv]);
			t->env_names[t->nenv] = NULL;
			return -1;
		}
		t->nenv++;
	}
	return 0;
}

/* input: a template; a plain number or bool stands for itself, not for its text. */
static int parse_input(struct pctx *pc, struct sl_flow_task *t, yaml_node_t *n)
{
	json_t *v;

	if (n->type == YAML_SCALAR_NODE && is_null(n))
		return 0;
	if (n->type != YAML_SCALAR_NODE)
		return perr(pc, n, "task '%s': input must be a string (a template such as "
				   "\"${tasks.a.outputs}\")",
			    t->name);
	if (is_plain(n) && (v = resolve_plain((const char *)n->data.scalar.value))) {
		char *text = sl_value_to_text(v);
		size_t len = text ? strlen(text) + 4 : 0;
		json_decref(v);
		if (!text || !(t->input = malloc(len)))
			return free(text), perr(pc, n, "out of memory");
		snprintf(t->input, len, "${%s}", text);
		free(text);
		return 0;
	}
	return parse_template(pc, n, "input", 0, &t->input);
}

static int parse_after(struct pctx *pc, struct sl_flow_task *t, yaml_node_t *n)
{
	yaml_node_item_t one;
	yaml_node_item_t *start = &one, *top = &one + 1;

	if (n->type == YAML_SEQUENCE_NODE) {
		start = n->data.sequence.items.start;
		top = n->data.sequence.items.top;
	} else if (n->type == YAML_SCALAR_NODE) {
		one = (yaml_node_item_t)(n - pc->doc->nodes.start + 1);
	} else {
		return perr(pc, n, "task '%s': after must be a list of task names", t->name);
	}
	for (yaml_node_item_t *it = start; it < top; it++) {
		yaml_node_t *e = node_at(pc, *it);
		const char *name = scalar(pc, e, "after");
		ssize_t i;

		if (!name)
			return -1;
		if ((i = yaml_task_index(pc, name)) < 0)
			return perr(pc, e, "task '%s' after: unknown task '%s'", t->name, name);
		if (add_dep(pc, (size_t)i) < 0)
			return perr(pc, e, "out of memory");
	}
	return 0;
}

/* A tag name: it becomes part of a Redis key. */
static int valid_tag(struct pctx *pc, yaml_node_t *n, const char *s)
{
	if (!match_charset(s, 0) || strlen(s) > 64)
		return perr(pc, n, "bad tag '%s' (use [a-zA-Z0-9_.-], at most 64)", s);
	return 0;
}

/* `cache: true|false|"<template>"`, `cache_ttl:` and `tags: [...]` of task t. The key
 * template sees params, run and tasks but not map variables: a mapped task's key always
 * includes the map index (see docs/flows.md). */
static int parse_cache_tags(struct pctx *pc, struct sl_flow_task *t, yaml_node_t *n)
{
	struct sl_expr_scope scope = {.has_param = scope_has_param, .task_ref = scope_task_ref,
				      .ud = pc};
	yaml_node_t *v;
	struct sl_tmpl *tm;
	char why[512];
	const char *s;

	t->cache_ttl_ms = SL_FLOW_CACHE_TTL_MS;
	if ((v = get(pc, n, "cache"))) {
		if (!(s = scalar(pc, v, "cache")))
			return -1;
		if (is_plain(v) && (!strcmp(s, "true") || !strcmp(s, "false"))) {
			t->cache = !strcmp(s, "true");
		} else {
			if (!*s)
				return perr(pc, v, "task '%s': cache key template is empty",
					    t->name);
			if (!(tm = sl_tmpl_compile(s, 0, why, sizeof(why))))
				return perr(pc, v, "task '%s' cache: %s", t->name, why);
			if (sl_tmpl_check(tm, &scope, why, sizeof(why)) < 0) {
				sl_tmpl_free(tm);
				return perr(pc, v, "task '%s' cache: %s (map variables are not "
					    "visible to a cache key)", t->name, why);
			}
			sl_tmpl_free(tm);
			if (!(t->cache_key = dup_or_err(pc, v, s)))
				return -1;
			t->cache = 1;
		}
	}
	if ((v = get(pc, n, "cache_ttl"))) {
		if (parse_duration(pc, v, "cache_ttl", &t->cache_ttl_ms) < 0)
			return -1;
		if (t->cache_ttl_ms < 1000)
			return perr(pc, v, "task '%s': cache_ttl must be at least 1s", t->name);
		if (!t->cache)
			return perr(pc, v, "task '%s': cache_ttl without cache", t->name);
	}
	if ((v = get(pc, n, "tags"))) {
		size_t count;

		if (v->type != YAML_SEQUENCE_NODE)
			return perr(pc, v, "task '%s': tags must be a list", t->name);
		count = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
		if (count > SL_FLOW_MAX_TAGS)
			return perr(pc, v, "task '%s': more than %d tags", t->name,
				    SL_FLOW_MAX_TAGS);
		if (count && !(t->tags = calloc(count, sizeof(*t->tags))))
			return perr(pc, v, "out of memory");
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top; it++) {
			yaml_node_t *e = node_at(pc, *it);
			if (!(s = scalar(pc, e, "tags")) || valid_tag(pc, e, s) < 0)
				return -1;
			for (size_t i = 0; i < t->ntags; i++)
				if (!strcmp(t->tags[i], s))
					return perr(pc, e, "task '%s': tag '%s' given twice",
						    t->name, s);
			if (!(t->tags[t->ntags] = dup_or_err(pc, e, s)))
				return -1;
			t->ntags++;
		}
	}
	return 0;
}

/* Flow-level `concurrency: {tag: limit, ...}`. */
static int parse_concurrency(struct pctx *pc, yaml_node_t *n)
{
	struct sl_flow *f = pc->flow;
	size_t count;

	if (want_mapping(pc, n, "concurrency") < 0 ||
	    check_keys(pc, n, NULL, NULL, "concurrency") < 0)
		return -1;
	count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	if (count > 64)
		return perr(pc, n, "concurrency has more than 64 tags");
	if (count && !(f->limits = calloc(count, sizeof(*f->limits))))
		return perr(pc, n, "out of memory");
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = node_at(pc, pr->key), *v = node_at(pc, pr->value);
		const char *tag = (const char *)k->data.scalar.value;
		long l;

		if (valid_tag(pc, k, tag) < 0 ||
		    parse_int(pc, v, "a concurrency limit", 1, 100000, &l) < 0)
			return -1;
		if (!(f->limits[f->nlimits].tag = dup_or_err(pc, k, tag)))
			return -1;
		f->limits[f->nlimits++].limit = (int)l;
	}
	return 0;
}

/* An expression evaluated once per task (when:, route rules): it sees params, run and
 * upstream outputs, and makes the tasks it names upstreams. *out gets a copy of its text. */
static int parse_condition(struct pctx *pc, yaml_node_t *n, const char *what, char **out)
{
	struct sl_flow_task *t = &pc->flow->tasks[pc->cur];
	struct sl_expr_scope scope = {.has_param = scope_has_param, .task_ref = scope_task_ref,
				      .ud = pc};
	struct sl_expr *e;
	char why[512];
	const char *s;
	int rc;

	if (!(s = scalar(pc, n, what)))
		return -1;
	if (is_null(n))
		return perr(pc, n, "task '%s': %s needs an expression (e.g. \"${params.n} > 10\")",
			    t->name, what);
	if (!(e = sl_expr_parse(s, strlen(s), why, sizeof(why))))
		return perr(pc, n, "task '%s' %s: %s", t->name, what, why);
	rc = sl_expr_check(e, &scope, why, sizeof(why));
	sl_expr_free(e);
	if (rc < 0)
		return perr(pc, n, "task '%s' %s: %s (map variables are not visible here)", t->name,
			    what, why);
	return (*out = dup_or_err(pc, n, s)) ? 0 : -1;
}

/* when:, trigger_rule: and route: of task t. */
static int parse_conditions(struct pctx *pc, struct sl_flow_task *t, yaml_node_t *n)
{
	yaml_node_t *v;
	const char *s;
	char what[64];

	if ((v = get(pc, n, "when")) && parse_condition(pc, v, "when", &t->when) < 0)
		return -1;
	if ((v = get(pc, n, "trigger_rule"))) {
		if (!(s = scalar(pc, v, "trigger_rule")))
			return -1;
		if (!strcmp(s, "all_success"))
			t->trigger_rule = SL_TRIGGER_ALL_SUCCESS;
		else if (!strcmp(s, "all_done"))
			t->trigger_rule = SL_TRIGGER_ALL_DONE;
		else
			return perr(pc, v, "bad trigger_rule '%s' (allowed: all_success, all_done)", s);
	}
	if (!(v = get(pc, n, "route")))
		return 0;
	if (v->type != YAML_SEQUENCE_NODE)
		return perr(pc, v, "task '%s': route must be a list of {when: EXPR, queue: NAME}",
			    t->name);
	t->nroute = 0;
	size_t count = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	if (count > 64)
		return perr(pc, v, "task '%s': route has more than 64 rules", t->name);
	if (count && !(t->route = calloc(count, sizeof(*t->route))))
		return perr(pc, v, "out of memory");
	for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
	     it++) {
		yaml_node_t *r = node_at(pc, *it), *w, *q;
		struct sl_flow_route *rt = &t->route[t->nroute];

		snprintf(what, sizeof(what), "route[%zu]", t->nroute);
		if (want_mapping(pc, r, what) < 0 || check_keys(pc, r, route_keys, NULL, what) < 0)
			return -1;
		if (!(w = get(pc, r, "when")) || !(q = get(pc, r, "queue")))
			return perr(pc, r, "task '%s' %s needs both 'when' and 'queue'", t->name,
				    what);
		if (!(s = scalar(pc, q, "queue")))
			return -1;
		if (!match_charset(s, 0))
			return perr(pc, q, "bad queue name '%s' (use [a-zA-Z0-9_.-], at most %d)", s,
				    MAX_NAME);
		if (sl_queue_is_band(s))
			return perr(pc, q, "queue name '%s' must not end in .high or .low (those "
				    "are priority bands of a queue)", s);
		if (!(rt->queue = dup_or_err(pc, q, s)))
			return -1;
		t->nroute++; /* counted now so that destroy frees the queue if when fails */
		snprintf(what, sizeof(what), "route[%zu] when", t->nroute - 1);
		if (parse_condition(pc, w, what, &rt->when) < 0)
			return -1;
	}
	return 0;
}

static int parse_task(struct pctx *pc, size_t idx, yaml_node_t *key, yaml_node_t *n)
{
	struct sl_flow_task *t = &pc->flow->tasks[idx];
	struct settings s = pc->defaults;
	yaml_node_t *v, *cmd, *bi;
	char where[MAX_NAME + 16];
	int rc = -1;

	s.queue = NULL;
	pc->cur = idx;
	snprintf(where, sizeof(where), "task '%s'", t->name);
	if (want_mapping(pc, n, where) < 0 || check_keys(pc, n, task_keys, task_later, where) < 0)
		return -1;
	cmd = get(pc, n, "command");
	bi = get(pc, n, "builtin");
	if (cmd && bi)
		return perr(pc, key, "task '%s' has both command and builtin (use one)", t->name);
	if (!cmd && !bi)
		return perr(pc, key, "task '%s' needs a command or a builtin", t->name);
	if ((v = get(pc, n, "map")) && parse_map(pc, t, v) < 0)
		return -1;
	if (cmd) {
		t->kind = SL_TASK_COMMAND;
		if (parse_command(pc, t, cmd) < 0)
			return -1;
	} else {
		const char *b = scalar(pc, bi, "builtin");
		char list[128];
		t->kind = SL_TASK_BUILTIN;
		if (!b)
			return -1;
		if (!in_list(builtins, b)) {
			join(builtins, list, sizeof(list));
			return perr(pc, bi, "task '%s': unknown builtin '%s' (known: %s)", t->name, b,
				    list);
		}
		if (!(t->builtin = dup_or_err(pc, bi, b)))
			return -1;
	}
	if ((v = get(pc, n, "env")) && parse_env(pc, t, v) < 0)
		return -1;
	if ((v = get(pc, n, "input")) && parse_input(pc, t, v) < 0)
		return -1;
	if ((v = get(pc, n, "after")) && parse_after(pc, t, v) < 0)
		return -1;
	if (parse_cache_tags(pc, t, n) < 0)
		return -1;
	if (parse_conditions(pc, t, n) < 0)
		return -1;
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		const char *k = (const char *)node_at(pc, pr->key)->data.scalar.value;
		if (parse_setting(pc, k, node_at(pc, pr->value), &s) < 0)
			goto out;
	}
	t->retries = s.retries;
	t->retry_delay_ms = s.retry_delay_ms;
	t->timeout_ms = s.timeout_ms;
	t->priority = s.priority;
	t->max_output_bytes = s.max_output;
	t->backoff_factor = s.backoff_factor;
	t->backoff_max_ms = s.backoff_max_ms;
	t->backoff_jitter = s.backoff_jitter;
	t->queue = s.queue ? s.queue : strdup(pc->defaults.queue);
	s.queue = NULL;
	if (!t->queue) {
		perr(pc, key, "out of memory");
		goto out;
	}
	rc = 0;
out:
	free(s.queue);
	return rc;
}

/* Names the cycle among the tasks not placed, starting from its first task in YAML order. */
static int report_cycle(struct pctx *pc, const char *placed)
{
	struct sl_flow *f = pc->flow;
	size_t n = f->ntasks, len = 0, start = 0, first, u;
	size_t *path = calloc(n + 1, sizeof(*path));
	ssize_t *seen = malloc(n * sizeof(*seen));
	char msg[512];
	size_t off = 0;

	if (!path || !seen) {
		free(path);
		free(seen);
		return perr(pc, NULL, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
		seen[i] = -1;
	for (u = 0; placed[u]; u++)
		;
	/* Every task left has a dep that is left too, so this walk must come back. */
	while (seen[u] < 0) {
		seen[u] = (ssize_t)len;
		path[len++] = u;
		for (size_t d = 0; d < f->tasks[u].ndeps; d++) {
			if (!placed[f->tasks[u].deps[d]]) {
				u = f->tasks[u].deps[d];
				break;
			}
		}
	}
	start = (size_t)seen[u];
	first = start;
	for (size_t i = start; i < len; i++)
		if (path[i] < path[first])
			first = i;
	for (size_t i = 0; i <= len - start && off < sizeof(msg); i++) {
		size_t at = start + (first - start + i) % (len - start);
		off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%s", i ? " -> " : "",
					f->tasks[path[at]].name);
	}
	perr(pc, pc->task_keys[path[first]], "dependency cycle: %s", msg);
	free(path);
	free(seen);
	return -1;
}

/* Reorders tasks so that each comes after its deps, keeping YAML order where it can. */
static int topo_sort(struct pctx *pc)
{
	struct sl_flow *f = pc->flow;
	size_t n = f->ntasks;
	char *placed = calloc(n ? n : 1, 1);
	size_t *order = calloc(n ? n : 1, sizeof(size_t));
	size_t *pos = calloc(n ? n : 1, sizeof(size_t));
	struct sl_flow_task *sorted = calloc(n ? n : 1, sizeof(*sorted));
	yaml_node_t **keys = calloc(n ? n : 1, sizeof(*keys));
	int rc = -1;

	if (!placed || !order || !pos || !sorted || !keys) {
		perr(pc, NULL, "out of memory");
		goto out;
	}
	for (size_t k = 0; k < n; k++) {
		size_t pick = n;
		for (size_t i = 0; i < n && pick == n; i++) {
			size_t d;
			if (placed[i])
				continue;
			for (d = 0; d < f->tasks[i].ndeps; d++)
				if (!placed[f->tasks[i].deps[d]])
					break;
			if (d == f->tasks[i].ndeps)
				pick = i;
		}
		if (pick == n) {
			report_cycle(pc, placed);
			goto out;
		}
		placed[pick] = 1;
		order[k] = pick;
		pos[pick] = k;
	}
	for (size_t k = 0; k < n; k++) {
		struct sl_flow_task *t = &sorted[k];
		*t = f->tasks[order[k]];
		keys[k] = pc->task_keys[order[k]];
		for (size_t d = 0; d < t->ndeps; d++)
			t->deps[d] = pos[t->deps[d]];
		/* Deps in ascending order, insertion sort: there are few. */
		for (size_t a = 1; a < t->ndeps; a++)
			for (size_t b = a; b > 0 && t->deps[b - 1] > t->deps[b]; b--) {
				size_t tmp = t->deps[b];
				t->deps[b] = t->deps[b - 1];
				t->deps[b - 1] = tmp;
			}
	}
	free(f->tasks);
	f->tasks = sorted;
	sorted = NULL;
	free(pc->task_keys);
	pc->task_keys = keys;
	keys = NULL;
	rc = 0;
out:
	free(placed);
	free(order);
	free(pos);
	free(sorted);
	free(keys);
	return rc;
}

static int parse_tasks(struct pctx *pc, yaml_node_t *n)
{
	struct sl_flow *f = pc->flow;
	size_t count;

	if (want_mapping(pc, n, "tasks") < 0 || check_keys(pc, n, NULL, NULL, "tasks") < 0)
		return -1;
	count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	if (!count)
		return perr(pc, n, "tasks must have at least one task");
	if (count > SL_FLOW_MAX_TASKS)
		return perr(pc, n, "too many tasks (%zu, max %d)", count, SL_FLOW_MAX_TASKS);
	if (!(f->tasks = calloc(count, sizeof(*f->tasks))) ||
	    !(pc->task_keys = calloc(count, sizeof(*pc->task_keys))))
		return perr(pc, n, "out of memory");
	/* Names first, so that templates may refer to tasks further down. */
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = node_at(pc, pr->key);
		const char *name = (const char *)k->data.scalar.value;
		struct sl_flow_task *t = &f->tasks[f->ntasks];

		if (!match_charset(name, 1))
			return perr(pc, k,
				    "bad task name '%s' (use [A-Za-z_][A-Za-z0-9_]*, at most %d)",
				    name, MAX_NAME);
		if (!(t->name = dup_or_err(pc, k, name)))
			return -1;
		t->line = (int)k->start_mark.line + 1;
		pc->task_keys[f->ntasks] = k;
		f->ntasks++;
	}
	for (size_t i = 0; i < count; i++) {
		yaml_node_pair_t *pr = n->data.mapping.pairs.start + i;
		if (parse_task(pc, i, node_at(pc, pr->key), node_at(pc, pr->value)) < 0)
			return -1;
	}
	return topo_sort(pc);
}

/* ---- schedule ---- */

static const char *const schedule_keys[] = {"cron", "every", "params", "catchup", NULL};

static int parse_catchup(struct pctx *pc, yaml_node_t *n, const char *what)
{
	const char *s = scalar(pc, n, what);

	if (!s)
		return -1;
	if (!strcmp(s, "latest"))
		pc->flow->catchup = SL_CATCHUP_LATEST;
	else if (!strcmp(s, "all"))
		pc->flow->catchup = SL_CATCHUP_ALL;
	else if (!strcmp(s, "none"))
		pc->flow->catchup = SL_CATCHUP_NONE;
	else
		return perr(pc, n, "bad %s '%s' (allowed: latest, all, none)", what, s);
	return 0;
}

/* Checks that scheduled runs bind: schedule.params plus the tick for SL_SCHEDULE_PARAM. */
static int check_schedule_params(struct pctx *pc, yaml_node_t *at)
{
	struct sl_flow *f = pc->flow;
	json_t *given = f->schedule_params ? json_deep_copy(f->schedule_params) : json_object();
	json_t *bound = NULL;
	char why[512];
	int rc = -1;

	if (!given)
		return perr(pc, at, "out of memory");
	for (size_t i = 0; i < f->nparams; i++) {
		if (strcmp(f->params[i].name, SL_SCHEDULE_PARAM))
			continue;
		if (json_object_get(given, SL_SCHEDULE_PARAM)) {
			perr(pc, at, "schedule.params must not set '%s': each run gets its tick",
			     SL_SCHEDULE_PARAM);
			goto out;
		}
		json_object_set_new(given, SL_SCHEDULE_PARAM,
				    f->params[i].type == SL_PARAM_INT
					    ? json_integer(0)
					    : json_string("1970-01-01T00:00:00Z"));
	}
	if (sl_flow_bind_params(f, given, &bound, why, sizeof(why)) != SL_OK) {
		perr(pc, at, "scheduled runs: %s (set it in schedule.params)", why);
		goto out;
	}
	rc = 0;
out:
	json_decref(given);
	json_decref(bound);
	return rc;
}

/* schedule: "<cron>" | {cron: "<cron>" | every: <duration>, params: {...}, catchup: ...};
 * a top-level `catchup:` is the same as schedule.catchup. */
static int parse_schedule(struct pctx *pc, yaml_node_t *root)
{
	struct sl_flow *f = pc->flow;
	yaml_node_t *n = get(pc, root, "schedule"), *top = get(pc, root, "catchup");
	yaml_node_t *cron = NULL, *every = NULL, *v;
	char why[256];
	const char *s;

	if (!n) {
		if (top)
			return perr(pc, top, "catchup without a schedule");
		return 0;
	}
	if (n->type == YAML_SCALAR_NODE) {
		cron = n;
	} else {
		if (want_mapping(pc, n, "schedule") < 0 ||
		    check_keys(pc, n, schedule_keys, NULL, "schedule") < 0)
			return -1;
		cron = get(pc, n, "cron");
		every = get(pc, n, "every");
		if (cron && every)
			return perr(pc, n, "schedule has both cron and every (use one)");
		if (!cron && !every)
			return perr(pc, n, "schedule needs 'cron' (e.g. \"*/5 * * * *\") or 'every' "
					   "(e.g. 10m)");
		if ((v = get(pc, n, "catchup"))) {
			if (top)
				return perr(pc, top, "catchup is given twice (here and in schedule)");
			top = v;
		}
	}
	if (top && parse_catchup(pc, top, "catchup") < 0)
		return -1;
	if (cron) {
		if (!(s = scalar(pc, cron, "schedule.cron")))
			return -1;
		if (sl_cron_parse(s, &f->schedule_cron, why, sizeof(why)) != SL_OK)
			return perr(pc, cron, "schedule.cron: %s", why);
		f->schedule_kind = SL_SCHEDULE_CRON;
	} else {
		if (parse_duration(pc, every, "schedule.every", &f->schedule_every_ms) < 0)
			return -1;
		if (f->schedule_every_ms < 1000)
			return perr(pc, every, "schedule.every must be at least 1s");
		s = (const char *)every->data.scalar.value;
		f->schedule_kind = SL_SCHEDULE_EVERY;
	}
	if (!(f->schedule_text = dup_or_err(pc, cron ? cron : every, s)))
		return -1;
	if (n->type == YAML_MAPPING_NODE && (v = get(pc, n, "params")) && !is_null(v)) {
		if (want_mapping(pc, v, "schedule.params") < 0 ||
		    !(f->schedule_params = node_json(pc, v, 0)))
			return -1;
	}
	return check_schedule_params(pc, n);
}

static int parse_root(struct pctx *pc, yaml_node_t *root)
{
	struct sl_flow *f = pc->flow;
	yaml_node_t *v;
	const char *s;

	if (want_mapping(pc, root, "a flow") < 0 ||
	    check_keys(pc, root, root_keys, root_later, "the flow") < 0)
		return -1;
	if (!(v = get(pc, root, "flow")))
		return perr(pc, root, "missing required key 'flow' (the flow's name)");
	if (!(s = scalar(pc, v, "flow")))
		return -1;
	if (!match_charset(s, 0))
		return perr(pc, v, "bad flow name '%s' (use [a-zA-Z0-9_.-], at most %d)", s,
			    MAX_NAME);
	if (!(f->name = dup_or_err(pc, v, s)))
		return -1;
	if ((v = get(pc, root, "description")) && !is_null(v)) {
		if (!(s = scalar(pc, v, "description")) || !(f->description = dup_or_err(pc, v, s)))
			return -1;
	}
	if ((v = get(pc, root, "params")) && parse_params(pc, v) < 0)
		return -1;
	if ((v = get(pc, root, "defaults")) && parse_defaults(pc, v) < 0)
		return -1;
	if ((v = get(pc, root, "trigger")) && parse_trigger(pc, v) < 0)
		return -1;
	if (parse_schedule(pc, root) < 0)
		return -1;
	if ((v = get(pc, root, "concurrency")) && parse_concurrency(pc, v) < 0)
		return -1;
	if (!(v = get(pc, root, "tasks")))
		return perr(pc, root, "missing required key 'tasks'");
	return parse_tasks(pc, v);
}

/* libyaml's own message, at its position. */
static void yaml_error(struct pctx *pc, yaml_parser_t *parser, const char *src, size_t len)
{
	size_t line = parser->problem_mark.line + 1, col = parser->problem_mark.column + 1;

	if (parser->error == YAML_READER_ERROR) {
		line = 1;
		col = 1;
		for (size_t i = 0; i < parser->problem_offset && i < len; i++) {
			if (src[i] == '\n') {
				line++;
				col = 1;
			} else {
				col++;
			}
		}
	}
	if (parser->context)
		snprintf(pc->err, pc->errlen, "%s:%zu:%zu: YAML syntax error: %s (%s started at line %zu)",
			 pc->file, line, col, parser->problem ? parser->problem : "error",
			 parser->context, parser->context_mark.line + 1);
	else
		snprintf(pc->err, pc->errlen, "%s:%zu:%zu: YAML syntax error: %s", pc->file, line,
			 col, parser->problem ? parser->problem : "error");
}

struct sl_flow *sl_flow_parse(const char *yaml, size_t len, const char *filename, char *errstr,
			      size_t errlen)
{
	char dummy[1];
	struct sl_flow *f = NULL;
	struct pctx pc = {0};
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	int parser_ok = 0, doc_ok = 0;

	if (!errstr || !errlen) {
		errstr = dummy;
		errlen = sizeof(dummy);
	}
	errstr[0] = '\0';
	pc.file = filename ? filename : "<memory>";
	pc.err = errstr;
	pc.errlen = errlen;
	pc.budget = MAX_JSON_NODES;
	pc.defaults.retry_delay_ms = 1000;
	pc.defaults.max_output = SL_FLOW_DEF_OUTPUT;
	pc.defaults.backoff_factor = 1.0;
	if (!yaml) {
		snprintf(errstr, errlen, "%s:1:1: no YAML text", pc.file);
		return NULL;
	}
	if (len > SL_FLOW_MAX_YAML) {
		snprintf(errstr, errlen, "%s:1:1: flow is %zu bytes, over the %u byte limit", pc.file,
			 len, SL_FLOW_MAX_YAML);
		return NULL;
	}
	if (!(f = calloc(1, sizeof(*f))) || !(f->path = strdup(pc.file)) ||
	    !(f->source = malloc(len + 1)) || !(pc.defaults.queue = strdup("default"))) {
		snprintf(errstr, errlen, "%s:1:1: out of memory", pc.file);
		goto fail;
	}
	memcpy(f->source, yaml, len);
	f->source[len] = '\0';
	f->source_len = len;
	pc.flow = f;
	if (!yaml_parser_initialize(&parser)) {
		snprintf(errstr, errlen, "%s:1:1: out of memory", pc.file);
		goto fail;
	}
	parser_ok = 1;
	yaml_parser_set_input_string(&parser, (const unsigned char *)f->source, len);
	if (!yaml_parser_load(&parser, &doc)) {
		yaml_error(&pc, &parser, f->source, len);
		goto fail;
	}
	doc_ok = 1;
	pc.doc = &doc;
	if (!yaml_document_get_root_node(&doc)) {
		snprintf(errstr, errlen, "%s:1:1: empty flow (expected 'flow:' and 'tasks:')",
			 pc.file);
		goto fail;
	}
	if (!yaml_parser_load(&parser, &extra)) {
		yaml_error(&pc, &parser, f->source, len);
		goto fail;
	}
	if (yaml_document_get_root_node(&extra)) {
		perr(&pc, yaml_document_get_root_node(&extra), "only one YAML document allowed");
		yaml_document_delete(&extra);
		goto fail;
	}
	yaml_document_delete(&extra);
	if (parse_root(&pc, yaml_document_get_root_node(&doc)) < 0)
		goto fail;
	goto out;
fail:
	sl_flow_destroy(f);
	f = NULL;
out:
	if (doc_ok)
		yaml_document_delete(&doc);
	if (parser_ok)
		yaml_parser_delete(&parser);
	free(pc.defaults.queue);
	free(pc.task_keys);
	return f;
}

struct sl_flow *sl_flow_load(const char *path, char *errstr, size_t errlen)
{
	struct sl_flow *f = NULL;
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(errstr, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(errstr, errlen, "%s: not a regular file", path);
		goto out;
	}
	if ((size_t)st.st_size > SL_FLOW_MAX_YAML) {
		snprintf(errstr, errlen, "%s: %lld bytes, over the %u byte limit", path,
			 (long long)st.st_size, SL_FLOW_MAX_YAML);
		goto out;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		snprintf(errstr, errlen, "%s: out of memory", path);
		goto out;
	}
	/* Read to EOF but never past the cap, in case the file grows meanwhile. */
	for (;;) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size + 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(errstr, errlen, "%s: read: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
		if (got > (size_t)st.st_size) {
			snprintf(errstr, errlen, "%s: changed while being read", path);
			goto out;
		}
	}
	f = sl_flow_parse(buf, got, path, errstr, errlen);
out:
	free(buf);
	close(fd);
	return f;
}

void sl_flow_destroy(struct sl_flow *flow)
{
	if (!flow)
		return;
	for (size_t i = 0; i < flow->nparams; i++) {
		free(flow->params[i].name);
		json_decref(flow->params[i].def);
	}
	free(flow->params);
	for (size_t i = 0; i < flow->ntasks; i++) {
		struct sl_flow_task *t = &flow->tasks[i];
		free(t->name);
		for (size_t a = 0; a < t->argc; a++)
			free(t->argv[a]);
		free(t->argv);
		free(t->builtin);
		free(t->input);
		for (size_t e = 0; e < t->nenv; e++) {
			free(t->env_names[e]);
			free(t->env_values[e]);
		}
		free(t->env_names);
		free(t->env_values);
		for (size_t m = 0; m < t->nmap; m++) {
			free(t->map[m].name);
			json_decref(t->map[m].literal);
			free(t->map[m].source);
		}
		free(t->map);
		free(t->deps);
		free(t->queue);
		free(t->cache_key);
		free(t->when);
		for (size_t r = 0; r < t->nroute; r++) {
			free(t->route[r].when);
			free(t->route[r].queue);
		}
		free(t->route);
		for (size_t g = 0; g < t->ntags; g++)
			free(t->tags[g]);
		free(t->tags);
	}
	for (size_t i = 0; i < flow->nlimits; i++)
		free(flow->limits[i].tag);
	free(flow->limits);
	free(flow->tasks);
	free(flow->name);
	free(flow->path);
	free(flow->source);
	free(flow->trigger_dir);
	free(flow->trigger_glob);
	free(flow->description);
	free(flow->schedule_text);
	json_decref(flow->schedule_params);
	free(flow);
}

int sl_flow_builtin_is_inline(const char *name)
{
	return name && (!strcmp(name, "noop") || !strcmp(name, "echo") || !strcmp(name, "sum"));
}

ssize_t sl_flow_task_index(const struct sl_flow *flow, const char *name)
{
	if (!flow || !name)
		return -1;
	for (size_t i = 0; i < flow->ntasks; i++)
		if (!strcmp(flow->tasks[i].name, name))
			return (ssize_t)i;
	return -1;
}
