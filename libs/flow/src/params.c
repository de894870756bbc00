/* params.c - parameter types and binding given values (with defaults) to a flow's params. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_internal.h"

static const char *const type_names[] = {
	[SL_PARAM_ANY] = "any",       [SL_PARAM_INT] = "int",   [SL_PARAM_FLOAT] = "float",
	[SL_PARAM_STRING] = "string", [SL_PARAM_BOOL] = "bool", [SL_PARAM_LIST] = "list",
};

const char *sl_param_type_name(enum sl_param_type type)
{
	if ((size_t)type < sizeof(type_names) / sizeof(type_names[0]))
		return type_names[type];
	return "?";
}

int sl_param_type_parse(const char *name, enum sl_param_type *t)
{
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
		if (!strcmp(type_names[i], name)) {
			*t = (enum sl_param_type)i;
			return 0;
		}
	}
	return -1;
}

enum sl_param_type sl_param_type_infer(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_INTEGER: return SL_PARAM_INT;
	case JSON_REAL: return SL_PARAM_FLOAT;
	case JSON_STRING: return SL_PARAM_STRING;
	case JSON_TRUE: case JSON_FALSE: return SL_PARAM_BOOL;
	case JSON_ARRAY: return SL_PARAM_LIST;
	default: return SL_PARAM_ANY;
	}
}

/* "got a string \"abc\"" style description of v for messages. */
static void describe(json_t *v, char *buf, size_t cap)
{
	char *text = sl_value_to_text(v);
	const char *kind;

	switch (json_typeof(v)) {
	case JSON_OBJECT: kind = "an object"; break;
	case JSON_ARRAY: kind = "a list"; break;
	case JSON_STRING: kind = "a string"; break;
	case JSON_INTEGER: kind = "an int"; break;
	case JSON_REAL: kind = "a float"; break;
	case JSON_NULL: kind = "null"; break;
	default: kind = "a bool"; break;
	}
	if (json_is_null(v) || !text)
		snprintf(buf, cap, "%s", kind);
	else if (json_is_string(v))
		snprintf(buf, cap, "%s \"%.40s%s\"", kind, text, strlen(text) > 40 ? "..." : "");
	else
		snprintf(buf, cap, "%s %.40s%s", kind, text, strlen(text) > 40 ? "..." : "");
	free(text);
}

/* An optional sign and digits only, in json_int_t range. */
static int parse_int_text(const char *s, json_int_t *out)
{
	const char *p = s;
	char *end;
	long long v;

	if (*p == '-' || *p == '+')
		p++;
	if (!*p)
		return -1;
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = (json_int_t)v;
	return 0;
}

static int parse_float_text(const char *s, double *out)
{
	char *end;
	double d;

	if (!*s || *s == ' ' || *s == '\t' || *s == '\n')
		return -1;
	errno = 0;
	d = strtod(s, &end);
	if (errno || *end || !isfinite(d))
		return -1;
	*out = d;
	return 0;
}

json_t *sl_param_coerce(enum sl_param_type t, json_t *v, char *err, size_t errlen)
{
	char what[128];
	json_t *r = NULL;

	switch (t) {
	case SL_PARAM_ANY:
		return json_incref(v);
	case SL_PARAM_INT:
		if (json_is_integer(v))
			return json_incref(v);
		if (json_is_real(v)) {
			double d = json_real_value(v);
			if (d == floor(d) && fabs(d) < 9.0e15)
				r = json_integer((json_int_t)d);
		} else if (json_is_string(v)) {
			json_int_t i;
			if (parse_int_text(json_string_value(v), &i) == 0)
				r = json_integer(i);
		}
		break;
	case SL_PARAM_FLOAT:
		if (json_is_real(v))
			return json_incref(v);
		if (json_is_integer(v)) {
			r = json_real((double)json_integer_value(v));
		} else if (json_is_string(v)) {
			double d;
			if (parse_float_text(json_string_value(v), &d) == 0)
				r = json_real(d);
		}
		break;
	case SL_PARAM_STRING:
		if (json_is_string(v))
			return json_incref(v);
		break;
	case SL_PARAM_BOOL:
		if (json_is_boolean(v))
			return json_incref(v);
		if (json_is_string(v) && !strcmp(json_string_value(v), "true"))
			r = json_true();
		else if (json_is_string(v) && !strcmp(json_string_value(v), "false"))
			r = json_false();
		break;
	case SL_PARAM_LIST:
		if (json_is_array(v))
			return json_incref(v);
		if (json_is_string(v)) {
			r = json_loadb(json_string_value(v), json_string_length(v), 0, NULL);
			if (r && !json_is_array(r)) {
				json_decref(r);
				r = NULL;
			}
		}
		break;
	}
	if (!r) {
		describe(v, what, sizeof(what));
		snprintf(err, errlen, "expected %s, got %s", sl_param_type_name(t), what);
	}
	return r;
}

static const struct sl_flow_param *find_param(const struct sl_flow *flow, const char *name)
{
	for (size_t i = 0; i < flow->nparams; i++)
		if (!strcmp(flow->params[i].name, name))
			return &flow->params[i];
	return NULL;
}

enum sl_err sl_flow_bind_params(const struct sl_flow *flow, json_t *given, json_t **out,
				char *errstr, size_t errlen)
{
	json_t *res = NULL;
	const char *key;
	json_t *val;
	char why[256];
	enum sl_err rc = SL_ERR_INVALID;

	*out = NULL;
	if (given && !json_is_object(given)) {
		snprintf(errstr, errlen, "params must be a JSON object");
		goto out;
	}
	if (!(res = json_object())) {
		rc = SL_ERR_NOMEM;
		snprintf(errstr, errlen, "out of memory");
		goto out;
	}
	json_object_foreach(given, key, val) {
		const struct sl_flow_param *p = find_param(flow, key);
		json_t *v;

		if (!p) {
			size_t off = 0;
			off += (size_t)snprintf(why, sizeof(why), "%s", flow->nparams ? "" : "none");
			for (size_t i = 0; i < flow->nparams && off < sizeof(why); i++)
				off += (size_t)snprintf(why + off, sizeof(why) - off, "%s%s",
							i ? ", " : "", flow->params[i].name);
			snprintf(errstr, errlen, "unknown param '%s' for flow '%s' (declared: %s)", key,
				 flow->name, why);
			goto out;
		}
		if (!(v = sl_param_coerce(p->type, val, why, sizeof(why)))) {
			snprintf(errstr, errlen, "param '%s': %s", key, why);
			goto out;
		}
		if (json_object_set_new(res, key, v) < 0) {
			rc = SL_ERR_NOMEM;
			snprintf(errstr, errlen, "out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < flow->nparams; i++) {
		const struct sl_flow_param *p = &flow->params[i];
		json_t *v;

		if (json_object_get(res, p->name))
			continue;
		if (!p->def) {
			snprintf(errstr, errlen, "missing required param '%s' (%s) for flow '%s'",
				 p->name, sl_param_type_name(p->type), flow->name);
			goto out;
		}
		/* A copy, so that callers may change the result without touching the flow. */
		if (!(v = json_deep_copy(p->def)) || json_object_set_new(res, p->name, v) < 0) {
			rc = SL_ERR_NOMEM;
			snprintf(errstr, errlen, "out of memory");
			goto out;
		}
	}
	*out = res;
	res = NULL;
	rc = SL_OK;
out:
	json_decref(res);
	return rc;
}
