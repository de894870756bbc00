/* flow_internal.h - what the flow sources share: expressions, compiled templates, param types. */
#ifndef SLUICE_FLOW_INTERNAL_H
#define SLUICE_FLOW_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "sluice/err.h"
#include "sluice/flow.h"

#define SL_FLOW_MAX_YAML (1u << 20)     /* bytes of YAML accepted by sl_flow_parse() */
#define SL_FLOW_MAX_TASKS 4096          /* tasks per flow */
#define SL_FLOW_MAX_TEXT (16u << 20)    /* bytes of one rendered template or input */
#define SL_FLOW_MAX_OUTPUT (1L << 20)   /* largest max_output a task may ask for */
#define SL_FLOW_DEF_OUTPUT 65536L       /* max_output when neither the task nor defaults say */
#ifndef SL_RANGE_MAX /* the fuzz build lowers it: docs/fuzzing.md */
#define SL_RANGE_MAX 1000000LL          /* longest list range() may produce */
#endif
#define SL_EXPR_MAX_DEPTH 64            /* nesting of an expression */

/* ---- expressions (expr.c) ---- */

struct sl_expr;

/* Parses the expression s[0..len). "${e}" is accepted as a parenthesised e, so a map source
 * such as "range(${params.n})" is one expression. On error returns NULL and fills err. */
struct sl_expr *sl_expr_parse(const char *s, size_t len, char *err, size_t errlen);

void sl_expr_free(struct sl_expr *e);

/* Evaluates e. Names resolve to vars first (object, borrowed, may be NULL), then params,
 * tasks.NAME.outputs / .output, run.id / run.flow / run.intent. Returns a new reference, or
 * NULL with *rc and err set. */
json_t *sl_expr_eval(const struct sl_expr *e, const struct sl_expand_ctx *ctx, json_t *vars,
		     enum sl_err *rc, char *err, size_t errlen);

/* Python's truthiness: false, null, 0, 0.0, "", [] and {} are false, all else is true. */
int sl_json_truthy(json_t *v);

/* What a flow's template may refer to; used to check templates when a flow is parsed. */
struct sl_expr_scope {
	const char *const *vars; /* map keys of the task, borrowed */
	size_t nvars;
	/* Returns 1 when the flow declares param name. */
	int (*has_param)(void *ud, const char *name);
	/* Records a reference to task name; returns 0, or -1 when there is no such task. */
	int (*task_ref)(void *ud, const char *name);
	void *ud;
};

/* Checks names, functions and their argument counts against scope; collects task
 * references through scope->task_ref. Returns 0, or -1 with err filled. */
int sl_expr_check(const struct sl_expr *e, const struct sl_expr_scope *scope, char *err,
		  size_t errlen);

/* ---- templates (template.c) ---- */

struct sl_tmpl;

/* Compiles a template: text with ${expr} parts ("$${" writes a literal "${").
 * As a map source (as_source = 1), text that starts like a call or a list ("range(...)",
 * "[1, 2]") is one expression, and text without ${ that is a JSON array is that array.
 * On error returns NULL and fills err. */
struct sl_tmpl *sl_tmpl_compile(const char *s, int as_source, char *err, size_t errlen);

void sl_tmpl_free(struct sl_tmpl *t);

/* Same result as sl_template_eval() for the compiled text. */
enum sl_err sl_tmpl_eval(const struct sl_tmpl *t, const struct sl_expand_ctx *ctx, json_t *vars,
			 json_t **out, char *err, size_t errlen);

/* Evaluates a map source: the value must be an array, or a string holding a JSON array. */
enum sl_err sl_tmpl_eval_list(const struct sl_tmpl *t, const struct sl_expand_ctx *ctx,
			      json_t **out, char *err, size_t errlen);

/* Returns 1 when t is plain text without any ${...} (nor a list expression). */
int sl_tmpl_is_text(const struct sl_tmpl *t);

/* sl_expr_check() over every expression of t. */
int sl_tmpl_check(const struct sl_tmpl *t, const struct sl_expr_scope *scope, char *err,
		  size_t errlen);

/* Dumps v as compact JSON (JSON_ENCODE_ANY), at most max bytes. Returns NULL when it
 * would be longer (*rc = SL_ERR_TOO_BIG) or on allocation failure (*rc = SL_ERR_NOMEM). */
char *sl_json_dump_capped(json_t *v, size_t max, enum sl_err *rc);

/* ---- params (params.c) ---- */

/* Parses a type name ("int", ...). Returns 0, or -1 for an unknown name. */
int sl_param_type_parse(const char *name, enum sl_param_type *t);

/* The type a shorthand default implies (a list for arrays, any for null or objects). */
enum sl_param_type sl_param_type_infer(json_t *v);

/* Returns v converted to type t as a new reference ("10" -> 10 for int), or NULL with
 * "expected <type>, got <what>" in err. */
json_t *sl_param_coerce(enum sl_param_type t, json_t *v, char *err, size_t errlen);

#endif
