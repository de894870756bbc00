/* expand.c - one task into its runnable instances: map lists zipped, templates filled in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow_internal.h"

/* A task's templates compiled once for all of its instances. */
struct compiled {
	struct sl_tmpl **argv;
	struct sl_tmpl **env;
	struct sl_tmpl *input;
	size_t argc;
	size_t nenv;
};

static void compiled_free(struct compiled *c)
{
	for (size_t i = 0; c->argv && i < c->argc; i++)
		sl_tmpl_free(c->argv[i]);
	for (size_t i = 0; c->env && i < c->nenv; i++)
		sl_tmpl_free(c->env[i]);
	free(c->argv);
	free(c->env);
	sl_tmpl_free(c->input);
}

static enum sl_err compile_task(const struct sl_flow_task *t, struct compiled *c, char *errstr,
				size_t errlen)
{
	char why[512];

	memset(c, 0, sizeof(*c));
	if ((t->argc && !(c->argv = calloc(t->argc, sizeof(*c->argv)))) ||
	    (t->nenv && !(c->env = calloc(t->nenv, sizeof(*c->env))))) {
		snprintf(errstr, errlen, "out of memory");
		return SL_ERR_NOMEM;
	}
	c->argc = t->argc;
	c->nenv = t->nenv;
	for (size_t i = 0; i < t->argc; i++) {
		if (!(c->argv[i] = sl_tmpl_compile(t->argv[i], 0, why, sizeof(why)))) {
			snprintf(errstr, errlen, "task '%s' command[%zu]: %s", t->name, i, why);
			return SL_ERR_PARSE;
		}
	}
	for (size_t i = 0; i < t->nenv; i++) {
		if (!(c->env[i] = sl_tmpl_compile(t->env_values[i], 0, why, sizeof(why)))) {
			snprintf(errstr, errlen, "task '%s' env %s: %s", t->name, t->env_names[i], why);
			return SL_ERR_PARSE;
		}
	}
	if (t->input && !(c->input = sl_tmpl_compile(t->input, 0, why, sizeof(why)))) {
		snprintf(errstr, errlen, "task '%s' input: %s", t->name, why);
		return SL_ERR_PARSE;
	}
	return SL_OK;
}

/* Evaluates tm and renders it as argv/env text. */
static enum sl_err render(const struct sl_tmpl *tm, const struct sl_expand_ctx *ctx, json_t *vars,
			  char **out, char *why, size_t whylen)
{
	json_t *v = NULL;
	enum sl_err rc = sl_tmpl_eval(tm, ctx, vars, &v, why, whylen);

	*out = NULL;
	if (rc != SL_OK)
		return rc;
	/* argv and environ entries end at the first NUL; refuse rather than cut the value. */
	if (json_is_string(v) && memchr(json_string_value(v), '\0', json_string_length(v))) {
		snprintf(why, whylen, "value contains a NUL character");
		rc = SL_ERR_INVALID;
	} else if (!(*out = sl_value_to_text(v))) {
		snprintf(why, whylen, "value too big or out of memory");
		rc = SL_ERR_TOO_BIG;
	}
	json_decref(v);
	return rc;
}

static enum sl_err fill_instance(const struct sl_flow_task *t, const struct compiled *c,
				 const struct sl_expand_ctx *ctx, json_t *vars,
				 struct sl_instance *in, char *errstr, size_t errlen)
{
	char why[512];
	enum sl_err rc = SL_OK;
	char *text = NULL;

	if (t->kind == SL_TASK_COMMAND) {
		if (!(in->argv = calloc(t->argc + 1, sizeof(char *))))
			goto nomem;
		for (; in->argc < t->argc; in->argc++) {
			if ((rc = render(c->argv[in->argc], ctx, vars, &in->argv[in->argc], why,
					 sizeof(why))) != SL_OK) {
				snprintf(errstr, errlen, "task '%s' command[%zu]: %s", t->name,
					 in->argc, why);
				return rc;
			}
		}
	}
	if (t->nenv && !(in->env = calloc(t->nenv, sizeof(char *))))
		goto nomem;
	for (; in->nenv < t->nenv; in->nenv++) {
		size_t len;
		if ((rc = render(c->env[in->nenv], ctx, vars, &text, why, sizeof(why))) != SL_OK) {
			snprintf(errstr, errlen, "task '%s' env %s: %s", t->name,
				 t->env_names[in->nenv], why);
			return rc;
		}
		len = strlen(t->env_names[in->nenv]) + strlen(text) + 2;
		if (!(in->env[in->nenv] = malloc(len)))
			goto nomem;
		snprintf(in->env[in->nenv], len, "%s=%s", t->env_names[in->nenv], text);
		free(text);
		text = NULL;
	}
	if (c->input) {
		json_t *v = NULL;
		if ((rc = sl_tmpl_eval(c->input, ctx, vars, &v, why, sizeof(why))) != SL_OK) {
			snprintf(errstr, errlen, "task '%s' input: %s", t->name, why);
			return rc;
		}
		in->input = sl_json_dump_capped(v, SL_FLOW_MAX_TEXT, &rc);
		json_decref(v);
		if (!in->input) {
			snprintf(errstr, errlen, "task '%s' input: %s", t->name,
				 rc == SL_ERR_TOO_BIG ? "over the size limit" : "out of memory");
			return rc;
		}
	}
	return SL_OK;
nomem:
	free(text);
	snprintf(errstr, errlen, "out of memory");
	return SL_ERR_NOMEM;
}

void sl_instances_clear(struct sl_instance *inst, size_t n)
{
	for (size_t i = 0; inst && i < n; i++) {
		for (size_t a = 0; inst[i].argv && a < inst[i].argc; a++)
			free(inst[i].argv[a]);
		free(inst[i].argv);
		for (size_t e = 0; inst[i].env && e < inst[i].nenv; e++)
			free(inst[i].env[e]);
		free(inst[i].env);
		free(inst[i].input);
	}
	if (inst)
		memset(inst, 0, n * sizeof(*inst));
}

void sl_instances_free(struct sl_instance *inst, size_t n)
{
	sl_instances_clear(inst, n);
	free(inst);
}

/* Evaluates every map key of t into lists[]; checks that they have one length. */
static enum sl_err eval_map(const struct sl_flow_task *t, const struct sl_expand_ctx *ctx,
			    json_t **lists, size_t *count, char *errstr, size_t errlen)
{
	char why[512];
	enum sl_err rc;

	for (size_t k = 0; k < t->nmap; k++) {
		const struct sl_flow_map_key *mk = &t->map[k];
		struct sl_tmpl *tm;

		if (mk->literal) {
			lists[k] = json_incref(mk->literal);
		} else {
			if (!(tm = sl_tmpl_compile(mk->source, 1, why, sizeof(why)))) {
				snprintf(errstr, errlen, "task '%s' map '%s': %s", t->name, mk->name,
					 why);
				return SL_ERR_PARSE;
			}
			rc = sl_tmpl_eval_list(tm, ctx, &lists[k], why, sizeof(why));
			sl_tmpl_free(tm);
			if (rc != SL_OK) {
				snprintf(errstr, errlen, "task '%s' map '%s': %s", t->name, mk->name,
					 why);
				return rc;
			}
		}
		if (k > 0 && json_array_size(lists[k]) != json_array_size(lists[0])) {
			snprintf(errstr, errlen,
				 "task '%s': map lists differ in length: '%s' has %zu items, '%s' "
				 "has %zu",
				 t->name, t->map[0].name, json_array_size(lists[0]), mk->name,
				 json_array_size(lists[k]));
			return SL_ERR_INVALID;
		}
	}
	*count = json_array_size(lists[0]);
	return SL_OK;
}

/* A task being expanded: its templates compiled and its map lists evaluated once, so that
 * instances can be filled in any slice, in any order, as often as needed. */
struct sl_expander {
	const struct sl_flow_task *t;
	struct sl_expand_ctx ctx; /* ctx's pointers are borrowed */
	struct compiled comp;
	json_t *lists[SL_FLOW_MAX_MAP_KEYS];
	size_t count;
};

void sl_expander_free(struct sl_expander *x)
{
	if (!x)
		return;
	for (size_t k = 0; k < x->t->nmap && k < SL_FLOW_MAX_MAP_KEYS; k++)
		json_decref(x->lists[k]);
	compiled_free(&x->comp);
	free(x);
}

enum sl_err sl_expander_new(const struct sl_flow *flow, size_t task_index,
			    const struct sl_expand_ctx *ctx, struct sl_expander **out,
			    size_t *count, char *errstr, size_t errlen)
{
	struct sl_expander *x = NULL;
	enum sl_err rc;

	*out = NULL;
	*count = 0;
	if (!flow || !ctx || task_index >= flow->ntasks) {
		snprintf(errstr, errlen, "no such task index %zu", task_index);
		return SL_ERR_INVALID;
	}
	if (flow->tasks[task_index].nmap > SL_FLOW_MAX_MAP_KEYS) {
		snprintf(errstr, errlen, "task '%s': too many map keys",
			 flow->tasks[task_index].name);
		return SL_ERR_INVALID;
	}
	if (!(x = calloc(1, sizeof(*x)))) {
		snprintf(errstr, errlen, "out of memory");
		return SL_ERR_NOMEM;
	}
	x->t = &flow->tasks[task_index];
	x->ctx = *ctx;
	x->ctx.flowdef = flow;
	if (!x->ctx.flow)
		x->ctx.flow = flow->name;
	x->count = 1;
	if ((rc = compile_task(x->t, &x->comp, errstr, errlen)) != SL_OK)
		goto out;
	if (x->t->nmap && (rc = eval_map(x->t, &x->ctx, x->lists, &x->count, errstr, errlen)) !=
			      SL_OK)
		goto out;
	*out = x;
	*count = x->count;
	x = NULL;
out:
	sl_expander_free(x);
	return rc;
}

enum sl_err sl_expander_fill(struct sl_expander *x, size_t from, size_t n,
			     struct sl_instance *inst, char *errstr, size_t errlen)
{
	const struct sl_flow_task *t = x->t;
	json_t *vars = NULL;
	size_t done = 0;
	enum sl_err rc = SL_OK;

	memset(inst, 0, n * sizeof(*inst));
	if (from > x->count || n > x->count - from) {
		snprintf(errstr, errlen, "task '%s': instances %zu..%zu of %zu", t->name, from,
			 from + n, x->count);
		return SL_ERR_INVALID;
	}
	for (; done < n; done++) {
		size_t i = from + done;

		inst[done].map_index = t->nmap ? (int)i : -1;
		if (t->nmap) {
			if (!(vars = json_object())) {
				rc = SL_ERR_NOMEM;
				snprintf(errstr, errlen, "out of memory");
				goto out;
			}
			for (size_t k = 0; k < t->nmap; k++) {
				if (json_object_set(vars, t->map[k].name,
						    json_array_get(x->lists[k], i)) < 0) {
					rc = SL_ERR_NOMEM;
					snprintf(errstr, errlen, "out of memory");
					goto out;
				}
			}
		}
		rc = fill_instance(t, &x->comp, &x->ctx, vars, &inst[done], errstr, errlen);
		json_decref(vars);
		vars = NULL;
		if (rc != SL_OK) {
			done++; /* free the half-filled one too */
			goto out;
		}
	}
out:
	json_decref(vars);
	if (rc != SL_OK)
		sl_instances_clear(inst, done);
	return rc;
}

enum sl_err sl_flow_expand(const struct sl_flow *flow, size_t task_index,
			   const struct sl_expand_ctx *ctx, struct sl_instance **out, size_t *n,
			   char *errstr, size_t errlen)
{
	struct sl_expander *x = NULL;
	struct sl_instance *inst = NULL;
	size_t count = 0;
	enum sl_err rc;

	*out = NULL;
	*n = 0;
	if ((rc = sl_expander_new(flow, task_index, ctx, &x, &count, errstr, errlen)) != SL_OK)
		goto out;
	if (!(inst = calloc(count ? count : 1, sizeof(*inst)))) {
		rc = SL_ERR_NOMEM;
		snprintf(errstr, errlen, "out of memory");
		goto out;
	}
	if ((rc = sl_expander_fill(x, 0, count, inst, errstr, errlen)) != SL_OK)
		goto out;
	*out = inst;
	*n = count;
	inst = NULL;
out:
	free(inst); /* a failed fill left it empty */
	sl_expander_free(x);
	return rc;
}
